//! The `write-config` step: `/etc/kcore` on the installed system, under `install.root`.
//! Only node-specific values go here (the prebuilt closure cannot contain them); what
//! every node of a system shares is the NixOS module's `--defaults` file. Each file is
//! written to a temporary file and renamed; files are 0644 and directories 0755 unless
//! listed otherwise:
//!
//! - `node-agent.yaml`: node id, DC, hostname, `mode: managed`, the controllers, the TLS
//!   file paths, the storage section, the management mode file.
//! - `tls/ca.crt`, `tls/node.crt` (the chain), `tls/node.key` (0600).
//! - `disko-management-mode`: `installer-only`.
//! - backend zfs: `zfs-pools`, the pool name (one per line): the prebuilt zfs closures are
//!   shared by every node, so their `kcore-zfs-import.service` imports the pools this file
//!   names instead of a name fixed at build time (modules/storage.nix).
//! - `recovery/luks-recovery-key.txt` (0400, in a 0700 directory).
//! - `install.json`: node id, when, plan hash, system, LUKS mode, PCRs, LUKS device,
//!   whether the node wants a VXLAN overlay (no secrets).
//! - with `runController`: `controller.yaml` (the controller's own keys: id, cluster, DC,
//!   listen, advertise address, peers, TLS files) and `controller/ca.crt`,
//!   `controller.crt`, `controller.key` (0600), `sub-ca.crt`; the sub-CA key is not here,
//!   the controller fetches it from a peer at its first start.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::steps::Ctx;

/// The installed system's `/etc/kcore`.
pub const ETC_KCORE: &str = "/etc/kcore";
/// Where the installed agent reads its configuration.
pub const NODE_CONFIG: &str = "/etc/kcore/node-agent.yaml";
/// The controller's configuration; the controller unit runs when it exists.
pub const CONTROLLER_CONFIG: &str = "/etc/kcore/controller.yaml";
/// The installed system's disko management mode file.
pub const MANAGEMENT_MODE_FILE: &str = "/etc/kcore/disko-management-mode";
/// The pools the installed zfs system imports at boot (modules/storage.nix).
pub const ZFS_POOLS_FILE: &str = "/etc/kcore/zfs-pools";
/// Where a controller keeps the sub-CA key it fetched.
pub const SUB_CA_KEY_FILE: &str = "/var/lib/kcore-controller/sub-ca.key";
/// The controller's port on every node.
pub const CONTROLLER_LISTEN: &str = "0.0.0.0:9090";

type WriteError = (&'static str, PathBuf, std::io::Error);

/// Writes under one root, remembering what it wrote (as the installed system names it).
struct Writer {
    root: PathBuf,
    written: Vec<String>,
}

impl Writer {
    fn host(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    fn dir(&self, abs: &str, mode: u32) -> Result<(), WriteError> {
        let path = self.host(abs);
        std::fs::create_dir_all(&path)
            .and_then(|_| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)))
            .map_err(|e| ("the directory", path, e))
    }

    fn file(&mut self, abs: &str, contents: &[u8], mode: u32) -> Result<(), WriteError> {
        let path = self.host(abs);
        if let Some(parent) = Path::new(abs).parent() {
            if !self.host(&parent.display().to_string()).is_dir() {
                self.dir(&parent.display().to_string(), 0o755)?;
            }
        }
        kcore_pki::write_atomically(&path, contents, mode).map_err(|e| ("the file", path, e))?;
        self.written.push(abs.to_string());
        Ok(())
    }
}

fn yaml(value: &serde_json::Value) -> Vec<u8> {
    let mut text = String::from(
        "# Written by kcore-agent at install; node-specific values only\n# (the system's own settings come from --defaults).\n",
    );
    text.push_str(&serde_yaml_ng::to_string(value).unwrap_or_default());
    text.into_bytes()
}

/// Write every file; the list of what was written.
pub fn write_all(ctx: &Ctx<'_>) -> Result<Vec<String>, WriteError> {
    let state = ctx.state;
    let job = ctx.job;
    let spec = &job.request.spec;
    let creds = &job.request.credentials;
    let storage = &job.prepared.storage;
    let mut w = Writer {
        root: state.config.install.root.clone(),
        written: Vec::new(),
    };
    w.dir(ETC_KCORE, 0o755)?;
    w.dir("/etc/kcore/tls", 0o755)?;
    let read_key = |role: &str| {
        let path = super::csr::key_path(state, role);
        std::fs::read(&path).map_err(|e| ("(reading) the key", path, e))
    };
    w.file("/etc/kcore/tls/ca.crt", creds.ca_pem.as_bytes(), 0o644)?;
    w.file(
        "/etc/kcore/tls/node.crt",
        creds.node_chain_pem.as_bytes(),
        0o644,
    )?;
    w.file("/etc/kcore/tls/node.key", &read_key("node")?, 0o600)?;
    let node = json!({
        "nodeId": spec.node_id,
        "dcId": spec.dc_id,
        "hostname": spec.hostname,
        "mode": "managed",
        "controllers": spec.controllers,
        "labels": {},
        "tls": {
            "caFile": "/etc/kcore/tls/ca.crt",
            "certFile": "/etc/kcore/tls/node.crt",
            "keyFile": "/etc/kcore/tls/node.key",
        },
        "storage": {
            "backend": spec.storage_backend,
            "lvm": { "vgName": storage.lvm.vg_name, "lvPrefix": storage.lvm.lv_prefix },
            "zfs": {
                "poolName": storage.zfs.pool_name,
                "datasetPrefix": storage.zfs.dataset_prefix,
            },
        },
        "disko": { "managementModeFile": MANAGEMENT_MODE_FILE },
    });
    w.file(NODE_CONFIG, &yaml(&node), 0o644)?;
    w.file(MANAGEMENT_MODE_FILE, b"installer-only\n", 0o644)?;
    if spec.storage_backend == kcore_api::cluster::StorageBackend::Zfs {
        let pools = format!("{}\n", storage.zfs.pool_name);
        w.file(ZFS_POOLS_FILE, pools.as_bytes(), 0o644)?;
    }
    w.dir("/etc/kcore/recovery", 0o700)?;
    let recovery = ctx.recovery_key.clone().unwrap_or_default();
    w.file(
        super::run::RECOVERY_KEY_PATH,
        format!("{recovery}\n").as_bytes(),
        0o400,
    )?;
    let record = json!({
        "nodeId": spec.node_id,
        "installedAt": crate::ops::now_rfc3339(),
        "planHash": job.prepared.plan.plan_hash,
        "system": job.prepared.plan.system,
        "luksMode": job.prepared.luks_mode.as_str(),
        "tpm2Pcrs": match job.prepared.luks_mode {
            kcore_api::install::LuksMode::Tpm2 => json!(state.config.install.tpm2_pcrs),
            kcore_api::install::LuksMode::Keyfile => json!(null),
        },
        "luksDevice": job.prepared.luks_device,
        // kcore has no VXLAN overlay yet: `--disable-vxlan` is recorded here for the one
        // that comes, so a node installed without it is known to want none.
        "vxlan": !spec.disable_vxlan,
    });
    let mut text = serde_json::to_vec_pretty(&record).unwrap_or_default();
    text.push(b'\n');
    w.file("/etc/kcore/install.json", &text, 0o644)?;
    if let Some(c) = creds.controller.as_ref().filter(|_| spec.run_controller) {
        w.dir("/etc/kcore/controller", 0o755)?;
        w.file(
            "/etc/kcore/controller/ca.crt",
            creds.ca_pem.as_bytes(),
            0o644,
        )?;
        w.file(
            "/etc/kcore/controller/controller.crt",
            c.chain_pem.as_bytes(),
            0o644,
        )?;
        w.file(
            "/etc/kcore/controller/controller.key",
            &read_key("controller")?,
            0o600,
        )?;
        w.file(
            "/etc/kcore/controller/sub-ca.crt",
            c.sub_ca_pem.as_bytes(),
            0o644,
        )?;
        let controller = json!({
            "controllerId": spec.node_id,
            "clusterName": spec.cluster,
            "dcId": spec.dc_id,
            "listen": CONTROLLER_LISTEN,
            "advertiseAddress": c.advertise_address,
            "peers": c.peers,
            "tls": {
                "caFile": "/etc/kcore/controller/ca.crt",
                "certFile": "/etc/kcore/controller/controller.crt",
                "keyFile": "/etc/kcore/controller/controller.key",
                "subCaCertFile": "/etc/kcore/controller/sub-ca.crt",
                "subCaKeyFile": SUB_CA_KEY_FILE,
            },
        });
        w.file(CONTROLLER_CONFIG, &yaml(&controller), 0o644)?;
    }
    Ok(w.written)
}
