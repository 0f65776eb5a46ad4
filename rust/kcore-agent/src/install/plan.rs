//! `POST /v1/install/plan`: what an install would do to this machine, with nothing
//! written. `install/run` calls the same [`prepare`] again and compares the hash, so the
//! operator's confirmation covers exactly what runs.
//!
//! Rules (docs/agent.md, "Install mode"):
//! - Every disk the operator names (`/dev/sda`, `/dev/disk/by-id/...`,
//!   `/dev/disk/by-path/...`) is resolved on the node to a `/dev/disk/by-id/` name
//!   ([`by_id_name`]: the first by-id link, sorted, that is not a `wwn-` one, else the
//!   first by-id link): serial-based names survive controller and port changes, `wwn-`
//!   names are not there on every bus. A disk without a by-id name is refused.
//! - Defaults: hostname `kcore-<nodeId[0..8]>`, VG `vg_kcore`, pool `tank0`, prefixes
//!   `kcore-` / `kcore`, `--luks auto` tpm2 when `<sysfs>/class/tpm/tpm0` exists, else
//!   keyfile, which needs `luksKeyDevice` (the key never goes on the unencrypted ESP).
//! - The layout is kcore-disko's install render of the spec, validated at levels 1-3
//!   (3 when `disko.diskoSource` and `disko.nixpkgsLib` are configured) and planned with
//!   the install policy ([`kcore_disko::plan::build_install`]): data becomes a wipe listed
//!   with its content, a disk in use is refused.
//! - `planHash` = `sha256:` over the JSON of `{plan, spec}` (field order fixed by the
//!   types), so a changed disk or a changed flag is a different hash.

use std::path::PathBuf;

use axum::http::StatusCode;
use kcore_api::install::{InstallPlan, InstallRefusal, InstallSpec, LuksMode, WipedDisk};
use kcore_api::{ApiError, ErrorCode};
use kcore_disko::plan::{build_install, disk_content, in_use_refusals, install_refusals};
use kcore_disko::snapshot::BlockDevice;
use kcore_disko::spec::TPM_SYSFS_PATH;
use kcore_disko::{BlockSnapshot, Plan, StorageSpec};
use kcore_net::ApiFailure;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::server::AgentState;

/// The GPT partition label of the key device's one partition (key-file mode); the
/// installed system's initrd reads `/dev/disk/by-partlabel/kcore-luks-key`.
pub const KEY_PARTLABEL: &str = "kcore-luks-key";

/// A disk the operator named, as found on this machine.
#[derive(Debug, Clone)]
pub struct ResolvedDisk {
    /// `os`, `data` or `luks-key`.
    pub role: &'static str,
    pub given: String,
    pub by_id: String,
    pub device: BlockDevice,
}

/// A plan and what `install/run` needs to carry it out.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub plan: InstallPlan,
    /// The storage spec the layout was rendered from.
    pub storage: StorageSpec,
    /// The resolved LUKS mode.
    pub luks_mode: LuksMode,
    /// Key-file mode: the device that gets the key partition.
    pub key_device: Option<ResolvedDisk>,
    /// `<by-id of the OS disk>-part2`.
    pub luks_device: String,
}

/// The by-id name the layout uses for `device`: the first `/dev/disk/by-id/` link,
/// sorted, that is not `wwn-...`, else the first by-id link; `None` when it has none.
pub fn by_id_name(snapshot: &BlockSnapshot, device: &BlockDevice) -> Option<String> {
    const PREFIX: &str = "/dev/disk/by-id/";
    let ids: Vec<String> = snapshot
        .links_to(&device.path)
        .into_iter()
        .filter(|l| l.starts_with(PREFIX))
        .collect();
    ids.iter()
        .find(|l| !l[PREFIX.len()..].starts_with("wwn-"))
        .or(ids.first())
        .cloned()
}

/// The path of the random install key (the layout's `passwordFile`).
pub fn install_key_path(state: &AgentState) -> PathBuf {
    state.config.install.state_dir.join("install.key")
}

fn field_error(err: impl std::fmt::Display, field: &str) -> ApiFailure {
    ApiFailure::invalid_field(field, err)
}

/// The request's own fields, before any disk is looked at.
fn check_fields(spec: &InstallSpec) -> Result<(), ApiFailure> {
    if spec.cluster.trim().is_empty() || spec.cluster.contains(['/', ' ']) {
        return Err(ApiFailure::invalid_field(
            "cluster",
            format!(
                "{:?} is not a cluster name: kctl sends its context's cluster",
                spec.cluster
            ),
        ));
    }
    kcore_api::validate::node_id("nodeId", &spec.node_id).map_err(|e| field_error(e, "nodeId"))?;
    kcore_api::validate::dc_id("dcId", &spec.dc_id).map_err(|e| field_error(e, "dcId"))?;
    if let Some(h) = &spec.hostname {
        kcore_api::report_limits::hostname("hostname", h)
            .map_err(|e| field_error(e, "hostname"))?;
    }
    if spec.controllers.is_empty() {
        return Err(ApiFailure::invalid_field(
            "controllers",
            "empty: the installed node registers with these; pass --join-controller HOST:PORT",
        ));
    }
    for (i, c) in spec.controllers.iter().enumerate() {
        let field = format!("controllers[{i}]");
        kcore_api::controller::address(&field, c).map_err(|e| field_error(e, &field))?;
    }
    Ok(())
}

/// Resolve one disk; a refusal when it is missing, not a whole disk or has no by-id name.
fn resolve(
    snapshot: &BlockSnapshot,
    role: &'static str,
    given: &str,
) -> Result<ResolvedDisk, InstallRefusal> {
    let refuse = |code: ErrorCode, message: String| InstallRefusal {
        device: given.to_string(),
        code,
        message,
    };
    let Some(dev) = snapshot.resolve(given) else {
        return Err(refuse(
            ErrorCode::TargetNotFound,
            format!("{given} is not a block device on this node: `kctl node disks` lists them"),
        ));
    };
    if dev.kind != "disk" {
        return Err(refuse(
            ErrorCode::InstallRefused,
            format!(
                "{given} is {} ({}), not a whole disk: name the disk itself",
                dev.path, dev.kind
            ),
        ));
    }
    let Some(by_id) = by_id_name(snapshot, dev) else {
        return Err(refuse(
            ErrorCode::InstallRefused,
            format!(
                "{given} ({}) has no /dev/disk/by-id name, so the installed layout could not \
                 find it again reliably",
                dev.path
            ),
        ));
    };
    Ok(ResolvedDisk {
        role,
        given: given.to_string(),
        by_id,
        device: dev.clone(),
    })
}

fn wiped(disk: &ResolvedDisk) -> WipedDisk {
    WipedDisk {
        role: disk.role.to_string(),
        given: disk.given.clone(),
        by_id: disk.by_id.clone(),
        path: disk.device.path.clone(),
        serial: disk.device.serial.clone(),
        model: disk.device.model.clone(),
        size_bytes: disk.device.size,
        content: disk_content(&disk.device),
    }
}

#[derive(Serialize)]
struct Hashed<'a> {
    plan: &'a Plan,
    spec: &'a InstallSpec,
}

/// `sha256:<hex>` over `{plan, spec}`.
pub fn plan_hash(plan: &Plan, spec: &InstallSpec) -> String {
    let bytes = serde_json::to_vec(&Hashed { plan, spec }).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

async fn snapshot(state: &AgentState) -> Result<BlockSnapshot, ApiFailure> {
    match &state.options.block_snapshot {
        Some(s) => Ok(s.clone()),
        None => crate::inventory::live_snapshot(&state.tools)
            .await
            .map_err(|e| ApiFailure::new(ErrorCode::InventoryFailed, e.to_string())),
    }
}

/// Fill in the defaults and resolve the disks; plan; nothing is written but the layout's
/// temporary copy for the evaluation.
pub async fn prepare(state: &AgentState, mut spec: InstallSpec) -> Result<Prepared, ApiFailure> {
    check_fields(&spec)?;
    let snapshot = snapshot(state).await?;
    let mut refusals: Vec<InstallRefusal> = Vec::new();
    let mut disks: Vec<ResolvedDisk> = Vec::new();
    let mut resolve_into = |role, given: &str, refusals: &mut Vec<InstallRefusal>| match resolve(
        &snapshot, role, given,
    ) {
        Ok(d) => {
            if let Some(first) = disks.iter().find(|o| o.device.kname == d.device.kname) {
                refusals.push(InstallRefusal {
                    device: given.to_string(),
                    code: ErrorCode::TargetAmbiguous,
                    message: format!(
                        "{given} is the same disk as {} ({}): name each disk once",
                        first.given, d.device.path
                    ),
                });
                return given.to_string();
            }
            let by_id = d.by_id.clone();
            disks.push(d);
            by_id
        }
        Err(r) => {
            refusals.push(r);
            given.to_string()
        }
    };
    let os_disk = resolve_into("os", &spec.os_disk.clone(), &mut refusals);
    let data_disks: Vec<String> = spec
        .data_disks
        .clone()
        .iter()
        .map(|d| resolve_into("data", d, &mut refusals))
        .collect();

    // LUKS: auto is decided by the TPM this node has.
    let tpm = state.options.sysfs_root.join(TPM_SYSFS_PATH).exists();
    let luks_mode = spec
        .luks
        .resolve(Some(tpm))
        .map_err(|e| ApiFailure::invalid_field("luks", e))?;
    spec.luks = match luks_mode {
        LuksMode::Tpm2 => kcore_api::install::LuksChoice::Tpm2,
        LuksMode::Keyfile => kcore_api::install::LuksChoice::Keyfile,
    };
    let key_device = match (luks_mode, spec.luks_key_device.clone()) {
        (LuksMode::Keyfile, Some(given)) => {
            let by_id = resolve_into("luks-key", &given, &mut refusals);
            spec.luks_key_device = Some(by_id.clone());
            disks.iter().find(|d| d.role == "luks-key").cloned()
        }
        (LuksMode::Keyfile, None) => {
            refusals.push(InstallRefusal {
                device: "luksKeyDevice".into(),
                code: ErrorCode::InstallRefused,
                message: format!(
                    "key-file mode{} needs a separate device for the LUKS key: pass \
                     --luks-key-device DEV (a small disk or USB stick, wiped; the initrd \
                     reads the key from its partition {KEY_PARTLABEL}), because the key \
                     never goes on the unencrypted ESP; or --luks tpm2 on a node with a TPM",
                    if tpm { "" } else { " (this node has no TPM)" }
                ),
            });
            None
        }
        (LuksMode::Tpm2, Some(given)) => {
            refusals.push(InstallRefusal {
                device: given,
                code: ErrorCode::InstallRefused,
                message: "--luks-key-device is only used in key-file mode: drop it, or pass \
                          --luks keyfile"
                    .into(),
            });
            None
        }
        (LuksMode::Tpm2, None) => None,
    };
    spec.os_disk = os_disk.clone();
    spec.data_disks = data_disks.clone();

    // Defaults, written into the spec so the plan shows them and the hash covers them.
    let short: String = spec.node_id.chars().take(8).collect();
    spec.hostname
        .get_or_insert_with(|| format!("kcore-{short}"));
    let mut storage = StorageSpec::new(os_disk.clone(), data_disks, spec.storage_backend);
    storage.data_disk_mode = spec.data_disk_mode;
    if let Some(v) = &spec.lvm_vg_name {
        storage.lvm.vg_name = v.clone();
    }
    if let Some(v) = &spec.lvm_lv_prefix {
        storage.lvm.lv_prefix = v.clone();
    }
    if let Some(v) = &spec.zfs_pool_name {
        storage.zfs.pool_name = v.clone();
    }
    if let Some(v) = &spec.zfs_dataset_prefix {
        storage.zfs.dataset_prefix = v.clone();
    }
    spec.lvm_vg_name = Some(storage.lvm.vg_name.clone());
    spec.lvm_lv_prefix = Some(storage.lvm.lv_prefix.clone());
    spec.zfs_pool_name = Some(storage.zfs.pool_name.clone());
    spec.zfs_dataset_prefix = Some(storage.zfs.dataset_prefix.clone());
    storage.luks.set_mode(luks_mode);
    storage.luks.install_key_file = install_key_path(state).display().to_string();

    // TPM2 mode installs `install.systems.<backend>`, key-file mode
    // `install.keyfileSystems.<backend>`: the two differ in how their initrd unlocks the root.
    let (systems, key) = match luks_mode {
        LuksMode::Tpm2 => (&state.config.install.systems, "systems"),
        LuksMode::Keyfile => (&state.config.install.keyfile_systems, "keyfileSystems"),
    };
    let system = match systems.get(spec.storage_backend) {
        Some(p) => p.display().to_string(),
        None => {
            let backend = spec.storage_backend.as_str();
            let mode = match luks_mode {
                LuksMode::Tpm2 => "TPM2",
                LuksMode::Keyfile => "key-file",
            };
            refusals.push(InstallRefusal {
                device: "storageBackend".into(),
                code: ErrorCode::InstallRefused,
                message: format!(
                    "this installer carries no {mode} system for the {backend} backend \
                     (install.{key}.{backend} in the agent's configuration is not set): add it \
                     to the installer's agent configuration, or pick another --storage-backend \
                     or --luks mode"
                ),
            });
            String::new()
        }
    };

    let layout = kcore_disko::render_install_fragment(&storage).map_err(|e| match e {
        kcore_disko::render::RenderError::Invalid(problems) => ApiFailure::with_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidField,
            format!(
                "the storage flags do not make a valid layout:\n{}",
                kcore_disko::join_problems(&problems)
            ),
        )
        .with_details(serde_json::json!({ "problems": problems })),
        other => ApiFailure::internal(other.to_string()),
    })?;
    let (tree, validated) = {
        let _slot = state.evaluation_slot()?;
        validate_layout(state, &layout).await?
    };
    let imported = imported_zfs_members(state, &snapshot).await;
    let disko_plan = build_install(&tree, &snapshot, imported.as_ref());
    for (target, r) in disko_plan.refusals() {
        let given = disks
            .iter()
            .find(|d| d.by_id == target.device)
            .map_or(target.device.clone(), |d| d.given.clone());
        // The layout's own missing-disk refusal repeats the resolution's.
        if refusals.iter().any(|o| o.device == given) {
            continue;
        }
        refusals.push(InstallRefusal {
            device: given,
            code: r.code.into(),
            message: r.message.clone(),
        });
    }
    if let Some(key) = &key_device {
        let all = in_use_refusals(&key.device, &snapshot, true);
        for r in install_refusals(all, &key.device, imported.as_ref()).0 {
            refusals.push(InstallRefusal {
                device: key.given.clone(),
                code: r.code.into(),
                message: r.message,
            });
        }
    }
    let wipes = disks.iter().map(wiped).collect();
    let hash = plan_hash(&disko_plan, &spec);
    Ok(Prepared {
        plan: InstallPlan {
            spec,
            tpm,
            layout,
            validated,
            plan: disko_plan,
            wipes,
            refusals,
            plan_hash: hash,
            system,
        },
        storage,
        luks_mode,
        key_device,
        luks_device: kcore_disko::render::os_luks_partition(&os_disk),
    })
}

/// The kernel paths of the members of the pools imported now (`zpool status -P`), so a
/// `zfs_member` signature elsewhere (an exported pool, an earlier install) is data to wipe
/// rather than a refusal. No `zpool` program: no pool can be imported, the set is empty.
/// `zpool` failing: unknown (`None`), and every ZFS member stays refused.
async fn imported_zfs_members(
    state: &AgentState,
    snapshot: &BlockSnapshot,
) -> Option<std::collections::BTreeSet<String>> {
    use kcore_nix::queries::ZpoolStatusAll;
    let Ok(program) = state.tools.resolve(kcore_nix::programs::ZPOOL) else {
        return Some(Default::default());
    };
    let mut inv = kcore_nix::runner::Invocation::new(&program)
        .args(ZpoolStatusAll.argv())
        .timeout(std::time::Duration::from_secs(30));
    for (k, v) in &state.options.extra_env {
        inv = inv.env(k, v);
    }
    match inv.output().await {
        Ok(out) => Some(
            ZpoolStatusAll::device_paths(&out.stdout_lossy())
                .iter()
                .map(|p| snapshot.canonical_path(p))
                .collect(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "install plan: cannot tell imported ZFS pools; refusing every ZFS member");
            None
        }
    }
}

/// Levels 1-3 of the rendered layout (3 with the configured disko source and nixpkgs lib),
/// as a disk apply validates its fragment.
async fn validate_layout(
    state: &AgentState,
    layout: &str,
) -> Result<(kcore_disko::DeviceTree, Vec<String>), ApiFailure> {
    let validated =
        crate::disko_apply::validate_layout(state, layout, "kcore-install-plan-").await?;
    Ok((validated.tree, validated.levels))
}

/// A refused plan as the `409 INSTALL_REFUSED` of `install/run`.
pub fn refused(plan: &InstallPlan) -> ApiFailure {
    let lines: Vec<String> = plan
        .refusals
        .iter()
        .map(|r| format!("{} ({}): {}", r.device, r.code.as_str(), r.message))
        .collect();
    ApiFailure {
        status: StatusCode::CONFLICT,
        error: ApiError::new(
            ErrorCode::InstallRefused,
            format!("the install is refused:\n{}", lines.join("\n")),
        )
        .with_details(serde_json::json!({ "refusals": plan.refusals })),
    }
}
