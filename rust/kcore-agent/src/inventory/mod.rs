//! Node inventory: what the agent reports about its disks (`disks`), network interfaces
//! (`nics`) and storage backend (`storage`). Each collector runs its tools through the
//! kcore-nix runner and parses their JSON in a pure function, so the parsing is tested
//! against fixtures and the collection against the real tools where this host has them.

pub mod disks;
pub mod nics;
pub mod report;
pub mod storage;

/// A collector failed: which tool, and why.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("running {program}: {message}")]
    Run { program: String, message: String },
    #[error("parsing the output of {program}: {message}")]
    Parse { program: String, message: String },
}

use std::time::Duration;

use kcore_api::inventory::{DiskInventory, LvmView, NicInventory, StorageView, ZfsView};
use kcore_disko::BlockSnapshot;
use kcore_nix::programs::{LVS, VGS, ZFS, ZPOOL};
use kcore_nix::queries::{IpAddrShow, LvmReport, ZfsList, ZpoolList, ZpoolStatus};
use kcore_nix::runner::Invocation;

use crate::config::{AgentConfig, Backend};
use crate::tools::{IP, Tools};

/// Inventory commands are quick reads; anything slower than this is stuck.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Capture this machine's block devices (kcore-disko's live snapshot).
pub async fn live_snapshot(tools: &Tools) -> Result<BlockSnapshot, InventoryError> {
    BlockSnapshot::capture_live(tools.binaries().get("lsblk"))
        .await
        .map_err(|err| InventoryError::Run {
            program: "lsblk".into(),
            message: err.to_string(),
        })
}

/// `GET /v1/inventory/disks`, with whether the node has a TPM (under `sysfs`, `/sys` in
/// production).
pub async fn collect_disks(
    tools: &Tools,
    fixed: Option<&BlockSnapshot>,
    sysfs: &std::path::Path,
) -> Result<DiskInventory, InventoryError> {
    let snapshot = match fixed {
        Some(s) => s.clone(),
        None => live_snapshot(tools).await?,
    };
    Ok(DiskInventory {
        disks: disks::from_snapshot(&snapshot),
        tpm: Some(has_tpm(sysfs)),
    })
}

/// Whether `sysfs` (`/sys`) shows a TPM: the test kcore-disko's LUKS mode `auto` is
/// decided by ([`kcore_disko::spec::LuksChoice::resolve`]).
pub fn has_tpm(sysfs: &std::path::Path) -> bool {
    sysfs.join(kcore_disko::spec::TPM_SYSFS_PATH).exists()
}

async fn run_text(
    tools: &Tools,
    tool: kcore_nix::Tool,
    args: Vec<std::ffi::OsString>,
) -> Result<String, InventoryError> {
    let program = tools.resolve(tool).map_err(|err| InventoryError::Run {
        program: tool.name.into(),
        message: err.to_string(),
    })?;
    let out = Invocation::new(&program)
        .args(args)
        .timeout(READ_TIMEOUT)
        .output()
        .await
        .map_err(|err| InventoryError::Run {
            program: tool.name.into(),
            message: err.to_string(),
        })?;
    Ok(out.stdout_lossy())
}

/// `GET /v1/inventory/nics`.
pub async fn collect_nics(
    tools: &Tools,
    sysfs: &std::path::Path,
) -> Result<NicInventory, InventoryError> {
    let json = run_text(tools, IP, IpAddrShow.argv()).await?;
    let speeds = nics::read_speeds(&sysfs.join("class/net"));
    Ok(NicInventory {
        nics: nics::parse_ip_addr(&json, &speeds)?,
    })
}

/// `GET /v1/inventory/storage`. Parts that cannot be collected become warnings, so the
/// operator still sees the rest.
pub async fn collect_storage(config: &AgentConfig, tools: &Tools) -> StorageView {
    let mut warnings = Vec::new();
    let mut lvm = None;
    let mut zfs = None;
    match config.storage.backend {
        Backend::Filesystem => {}
        Backend::Lvm => {
            let mut view = LvmView {
                vg_name: config.storage.lvm.vg_name.clone(),
                ..Default::default()
            };
            match run_text(tools, VGS, LvmReport::volume_groups().argv()).await {
                Ok(json) => match storage::parse_vgs(&json) {
                    Ok(v) => view.volume_groups = v,
                    Err(e) => warnings.push(e.to_string()),
                },
                Err(e) => warnings.push(e.to_string()),
            }
            match run_text(tools, LVS, LvmReport::logical_volumes().argv()).await {
                Ok(json) => match storage::parse_lvs(&json) {
                    Ok(v) => view.logical_volumes = v,
                    Err(e) => warnings.push(e.to_string()),
                },
                Err(e) => warnings.push(e.to_string()),
            }
            if !view.volume_groups.iter().any(|vg| vg.name == view.vg_name) && warnings.is_empty() {
                warnings.push(format!(
                    "the configured volume group {} does not exist",
                    view.vg_name
                ));
            }
            lvm = Some(view);
        }
        Backend::Zfs => {
            let pool = config.storage.zfs.pool_name.clone();
            let mut view = ZfsView {
                pool_name: pool.clone(),
                ..Default::default()
            };
            match run_text(tools, ZPOOL, ZpoolList.argv()).await {
                Ok(text) => match storage::parse_zpool_list(&text) {
                    Ok(p) => view.pools = p,
                    Err(e) => warnings.push(e.to_string()),
                },
                Err(e) => warnings.push(e.to_string()),
            }
            match run_text(tools, ZPOOL, ZpoolStatus { pool: pool.clone() }.argv()).await {
                Ok(text) => view.status = Some(text),
                Err(e) => warnings.push(e.to_string()),
            }
            match run_text(tools, ZFS, ZfsList { pool: pool.clone() }.argv()).await {
                Ok(text) => match storage::parse_zfs_list(&text) {
                    Ok(d) => view.datasets = d,
                    Err(e) => warnings.push(e.to_string()),
                },
                Err(e) => warnings.push(e.to_string()),
            }
            zfs = Some(view);
        }
    }
    let mounts = match std::fs::read_to_string("/proc/self/mounts") {
        Ok(text) => storage::parse_mounts(&text, storage::KCORE_STATE_ROOT),
        Err(e) => {
            warnings.push(format!("cannot read /proc/self/mounts: {e}"));
            Vec::new()
        }
    };
    StorageView {
        backend: config.storage.backend.as_str().to_string(),
        lvm,
        zfs,
        mounts,
        warnings,
    }
}
