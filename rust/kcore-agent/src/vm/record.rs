//! What the agent knows of each VM it holds, durable across restarts:
//! `<vm.stateDir>/<name>.json`, written atomically (temp file, fsync, rename).
//!
//! The record is the agent's proof of ownership. A volume is deleted only when a record
//! names it, and a record is written (state `creating`) *after* the agent checked that the
//! volume does not exist and *before* the command that makes it runs: an agent that dies
//! in between finds the record at its next pass and removes the partial volume, and a
//! volume that was there before kcore looked (someone else's) never gets a record.

use std::path::{Path, PathBuf};

use kcore_api::cluster::StorageBackend;
use kcore_api::vm::VmVolume;
use serde::{Deserialize, Serialize};

use super::VmError;

/// Where a VM's volume is, by backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "camelCase")]
pub enum VolumeRef {
    /// A preallocated raw file.
    Filesystem { path: PathBuf },
    /// A logical volume; `thin_pool` when it is a thin volume.
    #[serde(rename_all = "camelCase")]
    Lvm {
        vg: String,
        lv: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thin_pool: Option<String>,
    },
    /// A zvol.
    Zfs { dataset: String },
}

impl VolumeRef {
    pub fn backend(&self) -> StorageBackend {
        match self {
            VolumeRef::Filesystem { .. } => StorageBackend::Filesystem,
            VolumeRef::Lvm { .. } => StorageBackend::Lvm,
            VolumeRef::Zfs { .. } => StorageBackend::Zfs,
        }
    }

    /// What the guest opens: the file, `/dev/<vg>/<lv>` or `/dev/zvol/<dataset>`.
    pub fn device_path(&self) -> PathBuf {
        match self {
            VolumeRef::Filesystem { path } => path.clone(),
            VolumeRef::Lvm { vg, lv, .. } => Path::new("/dev").join(vg).join(lv),
            VolumeRef::Zfs { dataset } => Path::new("/dev/zvol").join(dataset),
        }
    }

    pub fn is_block_device(&self) -> bool {
        !matches!(self, VolumeRef::Filesystem { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeState {
    /// The create command may have run; the volume may be partial.
    Creating,
    /// Created at `size_bytes` and the image (if any) written.
    Ready,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    pub volume: VolumeRef,
    pub size_bytes: u64,
    pub state: VolumeState,
    /// The image written into it and its SHA-256, when the spec named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_sha256: Option<String>,
}

impl VolumeRecord {
    pub fn report(&self) -> VmVolume {
        VmVolume {
            backend: self.volume.backend(),
            path: self.volume.device_path().display().to_string(),
            size_bytes: self.size_bytes,
        }
    }
}

/// A create that failed for this generation: not tried again until the generation changes
/// (an image download is not repeated every poll).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub generation: u64,
    pub message: String,
}

/// The guest was started for this generation during this boot: if its unit is gone and
/// both still match, the guest ended by itself (powered off or crashed) and is not started
/// again until the generation changes or the node boots again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    pub generation: u64,
    /// `/proc/sys/kernel/random/boot_id` when it was started.
    pub boot_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmRecord {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Started>,
}

impl VmRecord {
    pub fn new(name: &str) -> VmRecord {
        VmRecord {
            name: name.to_string(),
            volume: None,
            failure: None,
            started: None,
        }
    }
}

/// `<dir>/<name>.json`; `name` was validated as a resource name (no '/', no '.').
pub fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

pub fn load(dir: &Path, name: &str) -> Result<Option<VmRecord>, VmError> {
    let path = file(dir, name);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            VmError::Refused(format!(
                "the record {} is unreadable ({e}); nothing is done to this VM until it is \
                 repaired or removed by hand",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(VmError::io(&path, e)),
    }
}

pub fn save(dir: &Path, record: &VmRecord) -> Result<(), VmError> {
    let path = file(dir, &record.name);
    let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other);
    json.and_then(|json| crate::fsutil::write_atomic(&path, &json))
        .map_err(|e| VmError::io(&path, e))
}

pub fn remove(dir: &Path, name: &str) -> Result<(), VmError> {
    let path = file(dir, name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VmError::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_names_its_backend() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = VmRecord::new("a");
        r.volume = Some(VolumeRecord {
            volume: VolumeRef::Lvm {
                vg: "vg_kcore".into(),
                lv: "kcore-a".into(),
                thin_pool: Some("thinpool".into()),
            },
            size_bytes: 1 << 20,
            state: VolumeState::Ready,
            image: None,
            image_sha256: None,
        });
        save(dir.path(), &r).unwrap();
        assert_eq!(load(dir.path(), "a").unwrap(), Some(r.clone()));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file(dir.path(), "a")).unwrap()).unwrap();
        assert_eq!(json["volume"]["volume"]["backend"], "lvm");
        assert_eq!(json["volume"]["volume"]["thinPool"], "thinpool");
        let v = r.volume.unwrap();
        assert_eq!(v.report().path, "/dev/vg_kcore/kcore-a");
        remove(dir.path(), "a").unwrap();
        assert_eq!(load(dir.path(), "a").unwrap(), None);
        std::fs::write(file(dir.path(), "b"), "{").unwrap();
        assert!(
            load(dir.path(), "b").is_err(),
            "an unreadable record is not ignored"
        );
    }
}
