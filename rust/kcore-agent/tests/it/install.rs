//! Install mode's routes on a real install-mode agent (in-process, 127.0.0.1, real
//! self-signed TLS, pinned like kctl pins it): plan against a block snapshot fixture
//! (by-id resolution, defaults, wipes and refusals, the hash), CSRs whose keys stay on
//! the node. This machine has no spare disk, so the disks are a fixture snapshot; the
//! real block devices are the storage bed's (H3).

use super::support::*;
use kcore_api::install::{InstallCsr, InstallCsrRequest, InstallPlan, InstallSpec};

/// The disks of the node under test: the live system's disk, blank disks, a disk with
/// an old filesystem, a mounted one, an active swap, a LUKS-held one.
pub fn install_snapshot() -> BlockSnapshot {
    let disk = |name: &str, size: u64, serial: &str| {
        json!({"name": name, "kname": name, "path": format!("/dev/{name}"), "type": "disk",
               "size": size, "serial": serial, "model": "QEMU HARDDISK"})
    };
    let part = |name: &str, size: u64, extra: serde_json::Value| {
        let mut p = json!({"name": name, "kname": name, "path": format!("/dev/{name}"),
                           "type": "part", "size": size});
        merge(&mut p, extra);
        p
    };
    let mut sda = disk("sda", 20 << 30, "OS1");
    sda["pttype"] = json!("gpt");
    sda["children"] = json!([
        part(
            "sda1",
            512 << 20,
            json!({"fstype": "vfat", "mountpoints": ["/boot"]})
        ),
        part(
            "sda2",
            19 << 30,
            json!({"fstype": "ext4", "mountpoints": ["/"]})
        ),
    ]);
    let sdb = disk("sdb", 10 << 30, "BLANK1");
    let mut sdc = disk("sdc", 10 << 30, "OLD1");
    sdc["pttype"] = json!("gpt");
    sdc["children"] = json!([part("sdc1", 9 << 30, json!({"fstype": "ext4"}))]);
    let mut sdd = disk("sdd", 10 << 30, "MNT1");
    sdd["children"] = json!([part(
        "sdd1",
        9 << 30,
        json!({"fstype": "xfs", "mountpoints": ["/srv"]})
    )]);
    let sde = disk("sde", 64 << 20, "KEY1");
    let sdf = disk("sdf", 10 << 30, "BLANK2");
    let mut sdg = disk("sdg", 10 << 30, "ZFS1");
    sdg["pttype"] = json!("gpt");
    sdg["children"] = json!([part("sdg1", 9 << 30, json!({"fstype": "zfs_member"}))]);
    let mut links = std::collections::BTreeMap::new();
    for (name, serial) in [
        ("sda", "OS1"),
        ("sdb", "BLANK1"),
        ("sdc", "OLD1"),
        ("sdd", "MNT1"),
        ("sde", "KEY1"),
        ("sdf", "BLANK2"),
        ("sdg", "ZFS1"),
    ] {
        links.insert(
            format!("/dev/disk/by-id/ata-QEMU_HARDDISK_{serial}"),
            format!("/dev/{name}"),
        );
        // Sorted first, but never the chosen name.
        links.insert(
            format!("/dev/disk/by-id/wwn-0x5000c500{serial}"),
            format!("/dev/{name}"),
        );
        links.insert(
            format!("/dev/disk/by-path/pci-0000:00:1f.2-ata-{name}"),
            format!("/dev/{name}"),
        );
    }
    serde_json::from_value(json!({
        "lsblk": {"blockdevices": [sda, sdb, sdc, sdd, sde, sdf, sdg]},
        "links": links,
    }))
    .unwrap()
}

pub fn by_id(serial: &str) -> String {
    format!("/dev/disk/by-id/ata-QEMU_HARDDISK_{serial}")
}

/// An install-mode agent over [`install_snapshot`], with or without a TPM, and TPM2 and
/// key-file systems for the filesystem and lvm backends (none for zfs).
pub struct InstallBed {
    pub node: Node,
    pub agent: Running,
    pub client: Client,
    /// Held so the TPM (or its absence) stays for the agent's lifetime.
    pub _sysfs: tempfile::TempDir,
}

pub async fn install_bed(tpm: bool, extra: serde_json::Value) -> InstallBed {
    let node = Node::new();
    let sysfs = tempfile::tempdir().unwrap();
    if tpm {
        std::fs::create_dir_all(sysfs.path().join("class/tpm/tpm0")).unwrap();
    }
    let mut doc = json!({
        "install": {
            "root": node.path("root"),
            "stateDir": node.path("install-state"),
            "systems": {
                "filesystem": "/nix/store/00000000000000000000000000000000-kcore-node-filesystem",
                "lvm": "/nix/store/00000000000000000000000000000000-kcore-node-lvm",
            },
            "keyfileSystems": {
                "filesystem": "/nix/store/00000000000000000000000000000000-kcore-node-filesystem-keyfile",
                "lvm": "/nix/store/00000000000000000000000000000000-kcore-node-lvm-keyfile",
            },
        },
    });
    merge(
        &mut doc,
        json!({"binaries": {"zpool": support("install/zpool")}}),
    );
    if let Some(deep) = deep_inputs() {
        merge(
            &mut doc,
            json!({"disko": {"diskoSource": deep.disko, "nixpkgsLib": deep.nixpkgs_lib}}),
        );
    }
    merge(&mut doc, extra);
    let config = node.config("install", None, doc);
    let env = vec![(
        "KCORE_TEST_ZPOOL_STATUS".to_string(),
        node.path("zpool-status").display().to_string(),
    )];
    start_install_agent(node, sysfs, config, None, env).await
}

/// Starts `node`'s install-mode agent with `config` over [`install_snapshot`] and `sysfs`,
/// the stand-ins recording into `install.log` (plus `env`), and a client pinned to its
/// self-signed certificate.
pub async fn start_install_agent(
    node: Node,
    sysfs: tempfile::TempDir,
    config: kcore_agent::config::AgentConfig,
    dev_root: Option<std::path::PathBuf>,
    env: Vec<(String, String)>,
) -> InstallBed {
    let mut extra_env = vec![(
        "KCORE_TEST_INSTALL_LOG".to_string(),
        node.path("install.log").display().to_string(),
    )];
    extra_env.extend(env);
    let defaults = RuntimeOptions::default();
    let options = RuntimeOptions {
        block_snapshot: Some(install_snapshot()),
        sysfs_root: sysfs.path().to_path_buf(),
        dev_root: dev_root.unwrap_or(defaults.dev_root.clone()),
        rebuild_log_dir: node.path("logs"),
        extra_env,
        ..defaults
    };
    let agent = start(config, options).await;
    let fingerprint = agent.fingerprint.clone().unwrap();
    let client = agent.client(kcore_pki::client_config_pinned(&fingerprint).unwrap());
    InstallBed {
        node,
        agent,
        client,
        _sysfs: sysfs,
    }
}

pub fn spec(os: &str, data: &[&str]) -> InstallSpec {
    serde_json::from_value(json!({
        "cluster": "lab",
        "nodeId": "3f2a9c1e-7b4d-4e8a-9f00-123456789abc",
        "dcId": "DC1",
        "controllers": ["10.0.0.1:9090"],
        "osDisk": os,
        "dataDisks": data,
        "storageBackend": "lvm",
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_plan_resolves_by_id_fills_defaults_and_lists_wipes() {
    let bed = install_bed(true, json!({})).await;
    let plan: InstallPlan = bed
        .client
        .post_json(
            "/v1/install/plan",
            &spec("/dev/sdb", &["/dev/disk/by-path/pci-0000:00:1f.2-ata-sdc"]),
        )
        .await
        .unwrap();
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    // The kernel name and the by-path name both become the serial's by-id name, never
    // the wwn- one that sorts first.
    assert_eq!(plan.spec.os_disk, by_id("BLANK1"));
    assert_eq!(plan.spec.data_disks, [by_id("OLD1")]);
    assert!(
        plan.layout
            .contains(&format!("device = \"{}\";", by_id("BLANK1")))
    );
    assert!(!plan.layout.contains("/dev/sdb\""), "{}", plan.layout);
    // Defaults.
    assert_eq!(plan.spec.hostname.as_deref(), Some("kcore-3f2a9c1e"));
    assert_eq!(plan.spec.lvm_vg_name.as_deref(), Some("vg_kcore"));
    assert_eq!(plan.spec.zfs_pool_name.as_deref(), Some("tank0"));
    assert!(plan.tpm);
    assert_eq!(plan.spec.luks, kcore_api::install::LuksChoice::Tpm2);
    assert!(plan.system.ends_with("-kcore-node-lvm"), "{}", plan.system);
    // The install key formats the disk; it lives in the install state dir.
    let key = bed.node.path("install-state/install.key");
    assert!(
        plan.layout
            .contains(&format!("passwordFile = \"{}\";", key.display())),
        "{}",
        plan.layout
    );
    // Validated on the node, deeply when the inputs are there.
    let deep = deep_inputs().is_some();
    assert_eq!(
        plan.validated,
        if deep {
            vec!["parse", "eval", "deep"]
        } else {
            vec!["parse", "eval"]
        }
    );
    // Wipes: both disks, the old one with its content.
    let wipes: Vec<(&str, &str, Vec<String>)> = plan
        .wipes
        .iter()
        .map(|w| (w.role.as_str(), w.path.as_str(), w.content.clone()))
        .collect();
    assert_eq!(
        wipes,
        [
            ("os", "/dev/sdb", vec![]),
            (
                "data",
                "/dev/sdc",
                vec![
                    "gpt partition table".to_string(),
                    "ext4 filesystem on /dev/sdc1".to_string()
                ]
            ),
        ]
    );
    assert_eq!(plan.wipes[0].serial.as_deref(), Some("BLANK1"));
    assert_eq!(plan.wipes[0].size_bytes, 10 << 30);
    assert_eq!(plan.plan.class, kcore_api::plan::ChangeClass::Destructive);
    assert!(plan.plan_hash.starts_with("sha256:") && plan.plan_hash.len() == 71);
    // Same request, same hash; a changed flag, a different one.
    let again: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", &spec(&by_id("BLANK1"), &["/dev/sdc"]))
        .await
        .unwrap();
    assert_eq!(again.plan_hash, plan.plan_hash);
    let mut other = spec("/dev/sdb", &["/dev/sdc"]);
    other.lvm_vg_name = Some("vg_other".into());
    let other: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", &other)
        .await
        .unwrap();
    assert_ne!(other.plan_hash, plan.plan_hash);
    assert!(other.layout.contains("vg_other"));
    // Nothing was written: no key, no root.
    assert!(!key.exists());
    assert!(!bed.node.path("root").exists());
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_plan_refuses_disks_in_use_and_explains_the_key_device() {
    let bed = install_bed(false, json!({})).await;
    let refused = |plan: &InstallPlan| -> Vec<(String, String)> {
        plan.refusals
            .iter()
            .map(|r| (r.device.clone(), r.code.as_str().to_string()))
            .collect()
    };
    // No TPM: auto is keyfile, and keyfile without a key device is refused with the flag.
    let plan: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", &spec("/dev/sdb", &["/dev/sdf"]))
        .await
        .unwrap();
    assert!(!plan.tpm);
    assert_eq!(plan.spec.luks, kcore_api::install::LuksChoice::Keyfile);
    assert_eq!(
        refused(&plan),
        [("luksKeyDevice".to_string(), "INSTALL_REFUSED".to_string())]
    );
    assert!(
        plan.refusals[0].message.contains("--luks-key-device")
            && plan.refusals[0].message.contains("ESP"),
        "{}",
        plan.refusals[0].message
    );
    // With a key device: resolved, wiped, and the layout still formats with the install key.
    let mut with_key = spec("/dev/sdb", &["/dev/sdf"]);
    with_key.luks_key_device = Some("/dev/sde".into());
    let plan: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", &with_key)
        .await
        .unwrap();
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    assert_eq!(plan.spec.luks_key_device, Some(by_id("KEY1")));
    assert_eq!(plan.wipes[2].role, "luks-key");
    assert!(plan.layout.contains("passwordFile"));
    assert!(!plan.layout.contains("keyFile ="));
    // Key-file mode installs the key-file system, whose initrd reads the key partition.
    assert!(
        plan.system.ends_with("-kcore-node-lvm-keyfile"),
        "{}",
        plan.system
    );

    // The live system's disk, a mounted disk, a missing one, one named twice.
    let mut bad = spec(
        "/dev/sda",
        &[
            "/dev/sdd",
            "/dev/disk/by-id/ata-NOPE",
            "/dev/sdf",
            "/dev/sdf",
        ],
    );
    bad.luks = kcore_api::install::LuksChoice::Tpm2;
    let plan: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", &bad)
        .await
        .unwrap();
    let codes = refused(&plan);
    for (device, code) in [
        ("/dev/sda", "TARGET_IS_OS_DISK"),
        ("/dev/sdd", "TARGET_MOUNTED"),
        ("/dev/disk/by-id/ata-NOPE", "TARGET_NOT_FOUND"),
        ("/dev/sdf", "TARGET_AMBIGUOUS"),
    ] {
        assert!(
            codes.contains(&(device.to_string(), code.to_string())),
            "{device} {code} in {codes:?}"
        );
    }
    // A ZFS member: refused while its pool is imported, wiped once it is exported.
    // (`zpool status -P` names the member by the path it was imported with; the fixture
    // has no by-id link for the partition, so the kernel name.)
    std::fs::write(
        bed.node.path("zpool-status"),
        "  pool: old\nconfig:\n\told ONLINE 0 0 0\n\t  /dev/sdg1 ONLINE 0 0 0\n",
    )
    .unwrap();
    let mut zfs_disk = spec("/dev/sdb", &["/dev/sdg"]);
    zfs_disk.luks = kcore_api::install::LuksChoice::Tpm2;
    let plan: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", &zfs_disk)
        .await
        .unwrap();
    assert_eq!(
        refused(&plan),
        [("/dev/sdg".to_string(), "TARGET_ZFS_MEMBER".to_string())]
    );
    std::fs::remove_file(bed.node.path("zpool-status")).unwrap();
    let plan: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", &zfs_disk)
        .await
        .unwrap();
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    assert!(
        plan.wipes[1]
            .content
            .contains(&"ZFS pool member on /dev/sdg1".to_string()),
        "{:?}",
        plan.wipes[1]
    );

    // A backend this ISO carries no system for.
    let mut zfs = spec("/dev/sdb", &["/dev/sdf"]);
    zfs.luks = kcore_api::install::LuksChoice::Tpm2;
    zfs.storage_backend = kcore_api::cluster::StorageBackend::Zfs;
    let plan: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", &zfs)
        .await
        .unwrap();
    assert_eq!(
        refused(&plan),
        [("storageBackend".to_string(), "INSTALL_REFUSED".to_string())]
    );
    assert!(plan.refusals[0].message.contains("install.systems.zfs"));
    assert!(plan.system.is_empty(), "{}", plan.system);

    // Bad fields are 400s naming the field.
    for (patch, field) in [
        (json!({"nodeId": "Bad_Id"}), "nodeId"),
        (json!({"dcId": "dc 1"}), "dcId"),
        (json!({"controllers": []}), "controllers"),
        (json!({"controllers": ["nowhere"]}), "controllers[0]"),
        (json!({"hostname": "-x"}), "hostname"),
        (json!({"lvmVgName": "vg/0"}), "lvm.vgName"),
    ] {
        let mut body = serde_json::to_value(spec("/dev/sdb", &["/dev/sdf"])).unwrap();
        merge(&mut body, patch);
        let err = bed
            .client
            .post_json::<_, InstallPlan>("/v1/install/plan", &body)
            .await
            .unwrap_err();
        assert_eq!(code(&err), "INVALID_FIELD", "{field}: {err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    bed.agent.stop().await;
}

/// TPM2 mode and key-file mode pick their own system; an ISO with a TPM2 system but no
/// key-file system for a backend refuses a key-file install of it, naming the config key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_plan_picks_the_system_of_its_luks_mode_and_refuses_a_missing_keyfile_system() {
    let bed = install_bed(
        true,
        json!({"install": {"keyfileSystems": {"filesystem": null}}}),
    )
    .await;
    let mut wanted = spec("/dev/sdb", &[]);
    wanted.storage_backend = kcore_api::cluster::StorageBackend::Filesystem;
    wanted.luks = kcore_api::install::LuksChoice::Tpm2;
    let plan: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", &wanted)
        .await
        .unwrap();
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    assert!(
        plan.system.ends_with("-kcore-node-filesystem"),
        "{}",
        plan.system
    );

    // The same node, key-file mode: its TPM2 system would wait for a token it never gets.
    wanted.luks = kcore_api::install::LuksChoice::Keyfile;
    wanted.luks_key_device = Some("/dev/sde".into());
    let plan: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", &wanted)
        .await
        .unwrap();
    assert_eq!(plan.refusals.len(), 1, "{:?}", plan.refusals);
    let refusal = &plan.refusals[0];
    assert_eq!(
        (refusal.device.as_str(), refusal.code.as_str()),
        ("storageBackend", "INSTALL_REFUSED")
    );
    assert!(
        refusal
            .message
            .contains("install.keyfileSystems.filesystem")
            && refusal.message.contains("key-file"),
        "{}",
        refusal.message
    );
    assert!(plan.system.is_empty(), "{}", plan.system);

    // lvm has a key-file system: the same key-file spec (with a data disk) plans, and
    // shows it.
    wanted.storage_backend = kcore_api::cluster::StorageBackend::Lvm;
    wanted.data_disks = vec!["/dev/sdf".into()];
    let plan: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", &wanted)
        .await
        .unwrap();
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    assert!(
        plan.system.ends_with("-kcore-node-lvm-keyfile"),
        "{}",
        plan.system
    );
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_csr_keys_stay_on_the_node_0600_and_a_second_call_replaces_the_key() {
    let bed = install_bed(true, json!({})).await;
    let req = |role: &str| InstallCsrRequest {
        cluster: "lab".into(),
        role: role.into(),
        id: "node-7".into(),
        dns_names: vec!["kcore-node-7".into()],
    };
    // The last plan's hostname is always among the CSR's names.
    let _: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", &spec("/dev/sdb", &["/dev/sdf"]))
        .await
        .unwrap();
    let csr: InstallCsr = bed
        .client
        .post_json("/v1/install/csr", &req("node"))
        .await
        .unwrap();
    assert_eq!(csr.identity, "kcore://lab/node/node-7");
    let names = kcore_pki::csr_names(&csr.csr_pem).unwrap();
    assert!(
        names.iter().any(|n| n.contains("kcore-3f2a9c1e"))
            && names.iter().any(|n| n.contains("kcore-node-7")),
        "{names:?}"
    );
    assert!(csr.csr_pem.contains("BEGIN CERTIFICATE REQUEST"));
    assert!(!csr.csr_pem.contains("PRIVATE KEY"));
    let key = bed.node.path("install-state/node.key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(bed.node.path("install-state"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let first_key = std::fs::read_to_string(&key).unwrap();
    // A controller signs it (what kctl has the controller do).
    let pki = Pki::new();
    let identity = Identity::new("lab", Role::Node, "node-7").unwrap();
    let chain = pki.root.sign_csr(&csr.csr_pem, &identity, DAY).unwrap();
    let creds = kcore_pki::Credentials {
        ca_pem: pki.root.cert_pem().to_string(),
        cert_pem: chain,
        key_pem: first_key.clone(),
    };
    assert!(creds.key_matches().unwrap());
    // A second call makes a new key.
    let again: InstallCsr = bed
        .client
        .post_json("/v1/install/csr", &req("node"))
        .await
        .unwrap();
    assert_ne!(again.csr_pem, csr.csr_pem);
    assert_ne!(std::fs::read_to_string(&key).unwrap(), first_key);
    let ctl: InstallCsr = bed
        .client
        .post_json("/v1/install/csr", &req("controller"))
        .await
        .unwrap();
    assert_eq!(ctl.identity, "kcore://lab/controller/node-7");
    assert!(bed.node.path("install-state/controller.key").exists());
    for (patch, field) in [
        (json!({"role": "admin"}), "role"),
        (json!({"id": "Node_7"}), "id"),
        (json!({"dnsNames": ["bad name"]}), "dnsNames[0]"),
    ] {
        let mut body = serde_json::to_value(req("node")).unwrap();
        merge(&mut body, patch);
        let err = bed
            .client
            .post_json::<_, InstallCsr>("/v1/install/csr", &body)
            .await
            .unwrap_err();
        assert_eq!(code(&err), "INVALID_FIELD", "{field}: {err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    bed.agent.stop().await;
}

/// Kills the agent process when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_agent_process_reads_its_config_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = |rel: &str| dir.path().join(rel);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // What an installer's module would share: the mode, the address, where state goes.
    let defaults = path("defaults.yaml");
    std::fs::write(
        &defaults,
        format!(
            "mode: install\nlisten: 127.0.0.1:{port}\ndcId: DC9\n\
             disko: {{ stateDir: {0}/disko, managementModeFile: {0}/mode }}\n\
             install: {{ root: {0}/root, stateDir: {0}/state }}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let config = path("node-agent.yaml");
    let agent = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kcore-agent"));
        cmd.arg("--defaults")
            .arg(&defaults)
            .arg("--config")
            .arg(&config);
        cmd
    };
    // A bad value in the merged document names both files and the field.
    std::fs::write(&config, "nodeId: proc-1\nheartbeatIntervalSeconds: 0\n").unwrap();
    let out = agent().output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("node-agent.yaml (over --defaults")
            && stderr.contains("defaults.yaml")
            && stderr.contains("heartbeatIntervalSeconds"),
        "{stderr}"
    );
    // The node's own file over the defaults: serves install mode on the defaults' address.
    std::fs::write(&config, "nodeId: proc-1\ndcId: DC1\n").unwrap();
    let _child = Killed(
        agent()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = Client::new(
        vec![format!("https://127.0.0.1:{port}")],
        kcore_pki::client_config_insecure().unwrap(),
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(5),
            stream_idle_timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    let waited = std::time::Instant::now();
    let health: serde_json::Value = loop {
        match client.get_json("/v1/health").await {
            Ok(h) => break h,
            Err(e) => {
                assert!(waited.elapsed() < Duration::from_secs(30), "{e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(health["nodeId"], "proc-1");
    assert_eq!(health["mode"], "install");
    // The install routes are there (a plan with no disks is a field error, not a 404).
    let err = client
        .post_json::<_, InstallPlan>("/v1/install/plan", &json!({}))
        .await
        .unwrap_err();
    assert_ne!(code(&err), "NOT_FOUND", "{err}");
}
