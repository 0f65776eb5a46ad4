//! A VM's volume on each backend: where it goes (names from the node's configuration, never
//! hard-coded), whether it exists, and creating, growing and removing exactly that one.
//!
//! - filesystem: `<dir>/<vm>.raw` in the volume directory with the most free space among
//!   `storage.filesystemVolumeDir` and its numbered siblings (`volumes`, `volumes1`, ...),
//!   created with `O_EXCL` and allocated with `fallocate(2)` mode 0, so every block exists
//!   when the VM is created (a sparse file could hit ENOSPC inside the guest later).
//! - lvm: `<lvPrefix><vm>` in `storage.lvm.vgName`, thin in `storage.lvm.thinPool` (or the
//!   VG's only thin pool), linear when the VG has none.
//! - zfs: the zvol `<poolName>/<datasetPrefix>/<vm>` (the prefix is a dataset, as the disk
//!   layout renders it), `volsize` = the requested size.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kcore_api::cluster::StorageBackend;
use kcore_nix::commands::{LvmChange, ZfsVolume};
use kcore_nix::programs::{LVS, ZFS};
use kcore_nix::queries::LvmReport;

use super::record::VolumeRef;
use super::{VmError, VmHost};

/// One LVM/ZFS command may take this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// udev makes `/dev/zvol/...` (and `/dev/<vg>/<lv>`) shortly after the command returns.
const DEVICE_WAIT: Duration = Duration::from_secs(30);

/// The volume `vm` would have on `backend`, its names validated before any command runs.
/// For the filesystem backend the directory is chosen here (most free space), and a
/// directory without room for `size_bytes` is refused with the largest free space.
pub fn plan(
    host: &VmHost,
    vm: &str,
    backend: StorageBackend,
    size_bytes: u64,
) -> Result<VolumeRef, VmError> {
    kcore_api::validate::resource_name("metadata.name", vm).map_err(VmError::invalid)?;
    match backend {
        StorageBackend::Filesystem => {
            let dirs = volume_dirs(&host.storage.filesystem_volume_dir);
            let best = dirs
                .iter()
                .filter_map(|d| free_bytes(d).map(|free| (free, d)))
                .max_by_key(|(free, _)| *free);
            match best {
                None => Err(VmError::Refused(format!(
                    "no volume directory exists ({} or a numbered sibling): create it or mount a \
                     data disk there (storage.filesystemVolumeDir)",
                    host.storage.filesystem_volume_dir.display()
                ))),
                Some((free, _)) if free < size_bytes => Err(VmError::Refused(format!(
                    "not enough space for {size_bytes} bytes: the largest free space among the \
                     volume directories is {free} bytes"
                ))),
                Some((_, dir)) => Ok(VolumeRef::Filesystem {
                    path: dir.join(format!("{vm}.raw")),
                }),
            }
        }
        StorageBackend::Lvm => {
            let lvm = &host.storage.lvm;
            let lv = format!("{}{vm}", lvm.lv_prefix);
            kcore_api::validate::lvm_vg_name("storage.lvm.vgName", &lvm.vg_name)
                .map_err(VmError::invalid)?;
            kcore_api::validate::lvm_lv_name("logical volume", &lv).map_err(VmError::invalid)?;
            Ok(VolumeRef::Lvm {
                vg: lvm.vg_name.clone(),
                lv,
                thin_pool: lvm.thin_pool.clone(),
            })
        }
        StorageBackend::Zfs => {
            let zfs = &host.storage.zfs;
            let dataset = format!("{}/{}/{vm}", zfs.pool_name, zfs.dataset_prefix);
            kcore_api::validate::zfs_dataset_name("zvol", &dataset).map_err(VmError::invalid)?;
            Ok(VolumeRef::Zfs { dataset })
        }
    }
}

/// The configured volume directory and its numbered siblings that exist (`volumes`,
/// `volumes1`, `volumes2`, ...: the names the disk layout mounts data disks at).
pub fn volume_dirs(first: &Path) -> Vec<PathBuf> {
    let (Some(parent), Some(base)) = (first.parent(), first.file_name()) else {
        return vec![first.to_path_buf()];
    };
    let base = base.to_string_lossy();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(base.as_ref())
                .is_some_and(|n| n.is_empty() || n.chars().all(|c| c.is_ascii_digit()))
        })
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Bytes an unprivileged writer could still allocate there (`statvfs` `f_bavail`).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Whether the volume exists (whoever made it).
pub async fn exists(host: &VmHost, volume: &VolumeRef) -> Result<bool, VmError> {
    match volume {
        VolumeRef::Filesystem { path } => Ok(path.symlink_metadata().is_ok()),
        VolumeRef::Lvm { vg, lv, .. } => Ok(lvs(host, vg).await?.iter().any(|l| l.name == *lv)),
        VolumeRef::Zfs { dataset } => zvol_size(host, dataset).await.map(|s| s.is_some()),
    }
}

/// The LVs of a VG, as the inventory reads them.
async fn lvs(host: &VmHost, vg: &str) -> Result<Vec<kcore_api::inventory::LogicalVolume>, VmError> {
    let program = host.tools.resolve(LVS)?;
    let out = kcore_nix::Invocation::new(&program)
        .args(LvmReport::logical_volumes().of(vg).argv())
        .timeout(COMMAND_TIMEOUT)
        .output()
        .await?;
    crate::inventory::storage::parse_lvs(&out.stdout_lossy())
        .map_err(|e| VmError::Refused(format!("cannot read the LVs of {vg}: {e}")))
}

/// A zvol's `volsize`, `None` when there is no such dataset.
async fn zvol_size(host: &VmHost, dataset: &str) -> Result<Option<u64>, VmError> {
    let zfs = host.tools.resolve(ZFS)?;
    let out = ZfsVolume::List {
        dataset: dataset.to_string(),
    }
    .invocation(&zfs)
    .timeout(COMMAND_TIMEOUT)
    .output_unchecked()
    .await?;
    if out.status.success() {
        let line = out.stdout_lossy();
        let size = line
            .split('\t')
            .nth(1)
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| VmError::Refused(format!("zfs list of {dataset} printed {line:?}")))?;
        return Ok(Some(size));
    }
    let stderr = out.stderr_lossy();
    if stderr.contains("does not exist") {
        return Ok(None);
    }
    Err(VmError::Refused(format!(
        "zfs list {dataset} failed: {}",
        stderr.trim()
    )))
}

/// The thin pool a new LV goes into: the configured one, else the VG's only thin pool,
/// else none (a linear LV).
async fn thin_pool_for(
    host: &VmHost,
    vg: &str,
    configured: Option<&str>,
) -> Result<Option<String>, VmError> {
    let lvs = lvs(host, vg).await?;
    crate::inventory::storage::thin_pool_of(&lvs, vg, configured)
        .map(|pool| pool.map(|l| l.name.clone()))
        .map_err(VmError::Refused)
}

/// Create the volume at `size_bytes`; the caller has checked it does not exist and recorded
/// the intent. Returns the volume as made (an LV with the pool it went into).
pub async fn create(
    host: &VmHost,
    volume: &VolumeRef,
    size_bytes: u64,
) -> Result<VolumeRef, VmError> {
    match volume {
        VolumeRef::Filesystem { path } => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || preallocate_new(&path, size_bytes))
                .await
                .map_err(|e| VmError::Refused(format!("the allocation task failed: {e}")))??;
            Ok(volume.clone())
        }
        VolumeRef::Lvm { vg, lv, thin_pool } => {
            let pool = thin_pool_for(host, vg, thin_pool.as_deref()).await?;
            let change = match &pool {
                Some(pool) => LvmChange::CreateThinVolumeBytes {
                    pool: format!("{vg}/{pool}"),
                    name: lv.clone(),
                    size_bytes,
                },
                None => LvmChange::CreateLinearVolume {
                    vg: vg.clone(),
                    name: lv.clone(),
                    size_bytes,
                },
            };
            lvm(host, &change).await?;
            let made = VolumeRef::Lvm {
                vg: vg.clone(),
                lv: lv.clone(),
                thin_pool: pool,
            };
            wait_for_device(&made.device_path()).await?;
            Ok(made)
        }
        VolumeRef::Zfs { dataset } => {
            zfs(
                host,
                &ZfsVolume::Create {
                    dataset: dataset.clone(),
                    size_bytes,
                },
            )
            .await?;
            wait_for_device(&volume.device_path()).await?;
            Ok(volume.clone())
        }
    }
}

/// Grow the volume to `size_bytes` (never shrinks: the caller refuses that).
pub async fn grow(host: &VmHost, volume: &VolumeRef, size_bytes: u64) -> Result<(), VmError> {
    match volume {
        VolumeRef::Filesystem { path } => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| VmError::io(&path, e))?;
                allocate(&file, &path, size_bytes)
            })
            .await
            .map_err(|e| VmError::Refused(format!("the allocation task failed: {e}")))?
        }
        VolumeRef::Lvm { vg, lv, .. } => {
            lvm(
                host,
                &LvmChange::ExtendTo {
                    lv: format!("{vg}/{lv}"),
                    size_bytes,
                },
            )
            .await
        }
        VolumeRef::Zfs { dataset } => {
            zfs(
                host,
                &ZfsVolume::Resize {
                    dataset: dataset.clone(),
                    size_bytes,
                },
            )
            .await
        }
    }
}

/// Remove exactly this volume if it exists; only ever called with a volume a record names.
pub async fn remove(host: &VmHost, volume: &VolumeRef) -> Result<(), VmError> {
    if !exists(host, volume).await? {
        return Ok(());
    }
    match volume {
        VolumeRef::Filesystem { path } => {
            std::fs::remove_file(path).map_err(|e| VmError::io(path, e))
        }
        VolumeRef::Lvm { vg, lv, .. } => {
            lvm(
                host,
                &LvmChange::RemoveVolume {
                    lv: format!("{vg}/{lv}"),
                },
            )
            .await
        }
        VolumeRef::Zfs { dataset } => {
            zfs(
                host,
                &ZfsVolume::Destroy {
                    dataset: dataset.clone(),
                },
            )
            .await
        }
    }
}

async fn lvm(host: &VmHost, change: &LvmChange) -> Result<(), VmError> {
    let program = host.tools.resolve(change.tool())?;
    kcore_nix::Invocation::new(&program)
        .args(change.argv())
        .timeout(COMMAND_TIMEOUT)
        .output()
        .await?;
    Ok(())
}

async fn zfs(host: &VmHost, change: &ZfsVolume) -> Result<(), VmError> {
    let program = host.tools.resolve(ZFS)?;
    change
        .invocation(&program)
        .timeout(COMMAND_TIMEOUT)
        .output()
        .await?;
    Ok(())
}

async fn wait_for_device(path: &Path) -> Result<(), VmError> {
    let deadline = tokio::time::Instant::now() + DEVICE_WAIT;
    while tokio::time::Instant::now() < deadline {
        if path.exists() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(VmError::Refused(format!(
        "{} did not appear within {DEVICE_WAIT:?} of its creation (is udev running?)",
        path.display()
    )))
}

/// A new file (never an existing one: `O_EXCL`), mode 0600, every block allocated.
fn preallocate_new(path: &Path, size_bytes: u64) -> Result<(), VmError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| VmError::io(path, e))?;
    allocate(&file, path, size_bytes)
}

/// `fallocate(2)` mode 0 over `[0, size)`: allocates every block (and extends the file to
/// `size`), also filling holes another writer left (`qemu-img` may punch them for zeroes).
pub fn allocate(file: &std::fs::File, path: &Path, size_bytes: u64) -> Result<(), VmError> {
    let len = i64::try_from(size_bytes)
        .map_err(|_| VmError::Refused(format!("{size_bytes} bytes is too large a file")))?;
    nix::fcntl::fallocate(
        std::os::fd::AsRawFd::as_raw_fd(file),
        nix::fcntl::FallocateFlags::empty(),
        0,
        len,
    )
    .map_err(|e| VmError::io(path, std::io::Error::from(e)))?;
    file.sync_all().map_err(|e| VmError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_numbered_volume_directories_are_found_and_others_ignored() {
        let root = tempfile::tempdir().unwrap();
        for d in ["volumes", "volumes1", "volumes12", "volumes-old", "images"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        std::fs::write(root.path().join("volumes2"), "a file").unwrap();
        let found: Vec<String> = volume_dirs(&root.path().join("volumes"))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(found, ["volumes", "volumes1", "volumes12"]);
    }

    #[test]
    fn a_preallocated_file_has_every_block_and_is_never_reused() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.raw");
        preallocate_new(&path, 3 << 20).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 3 << 20);
        assert!(
            meta.blocks() * 512 >= 3 << 20,
            "allocated, not sparse: {} blocks",
            meta.blocks()
        );
        assert!(
            preallocate_new(&path, 1 << 20).is_err(),
            "O_EXCL: an existing file is refused"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 << 20);
    }
}
