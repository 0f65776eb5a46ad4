//! A snapshot of a machine's block devices: what `lsblk` sees, active swap, holders under
//! `/sys/block`, and the `/dev/disk/by-*` link table. It is plain serde JSON so that
//! fixtures and `kctl disko plan --devices FILE` work offline; [`BlockSnapshot::capture_live`]
//! builds one from the running machine.
//!
//! The `lsblk` part is exactly `lsblk --json --bytes --output <LSBLK_COLUMNS>` output, so a
//! fixture can be made on any machine with `lsblk --json --bytes -o NAME,KNAME,...`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kcore_nix::programs::LSBLK;
use kcore_nix::queries;
use kcore_nix::runner::RunError;
use serde::{Deserialize, Deserializer, Serialize};

/// The lsblk columns the snapshot needs.
pub const LSBLK_COLUMNS: &str =
    "NAME,KNAME,PATH,TYPE,SIZE,SERIAL,WWN,MODEL,FSTYPE,MOUNTPOINTS,PTTYPE,PKNAME";

/// The block devices of one machine at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockSnapshot {
    /// `lsblk --json --bytes --output LSBLK_COLUMNS`, as printed.
    pub lsblk: Lsblk,
    /// Device paths of active swap (first column of `/proc/swaps`).
    #[serde(default)]
    pub swaps: Vec<String>,
    /// Kernel name to the kernel names under `/sys/block/<name>/holders` (and
    /// `/sys/block/<disk>/<part>/holders` for partitions).
    #[serde(default)]
    pub holders: BTreeMap<String, Vec<String>>,
    /// `/dev/disk/by-*/...` symlink to the device path it points to (`/dev/sdb`).
    #[serde(default)]
    pub links: BTreeMap<String, String>,
    /// Taken from this machine: paths missing from the tables are resolved through the
    /// filesystem too. Never set by fixtures.
    #[serde(skip)]
    pub live: bool,
}

/// lsblk's JSON document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lsblk {
    /// The top-level devices with their children.
    pub blockdevices: Vec<BlockDevice>,
}

/// One lsblk device (disk, part, crypt, lvm, raid*, rom, loop, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockDevice {
    /// Name as lsblk shows it (`sda1`, `crypted`).
    #[serde(default)]
    pub name: String,
    /// Kernel name (`sda1`, `dm-0`).
    #[serde(default)]
    pub kname: String,
    /// Device path (`/dev/sda1`, `/dev/mapper/crypted`).
    #[serde(default)]
    pub path: String,
    /// `disk`, `part`, `crypt`, `lvm`, `raid1`, `rom`, `loop`, ...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Size in bytes (lsblk prints a number with `--bytes`; older versions a string).
    #[serde(default, deserialize_with = "de_size")]
    pub size: u64,
    /// Serial number, if the device reports one.
    #[serde(default)]
    pub serial: Option<String>,
    /// World wide name, if any.
    #[serde(default)]
    pub wwn: Option<String>,
    /// Model string, if any.
    #[serde(default)]
    pub model: Option<String>,
    /// Filesystem or signature type (`ext4`, `crypto_LUKS`, `LVM2_member`, `zfs_member`, `swap`).
    #[serde(default)]
    pub fstype: Option<String>,
    /// Where it is mounted (lsblk prints `[null]` when nowhere).
    #[serde(default, deserialize_with = "de_mountpoints")]
    pub mountpoints: Vec<String>,
    /// Partition table type (`gpt`, `dos`), if any.
    #[serde(default)]
    pub pttype: Option<String>,
    /// Parent kernel name, if any.
    #[serde(default)]
    pub pkname: Option<String>,
    /// Partitions and holders (dm, md) below it.
    #[serde(default)]
    pub children: Vec<BlockDevice>,
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        N(u64),
        S(String),
        Null(()),
    }
    match Size::deserialize(d)? {
        Size::N(n) => Ok(n),
        Size::S(s) => s.trim().parse().map_err(serde::de::Error::custom),
        Size::Null(()) => Ok(0),
    }
}

fn de_mountpoints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v: Option<Vec<Option<String>>> = Option::deserialize(d)?;
    Ok(v.unwrap_or_default().into_iter().flatten().collect())
}

/// Why a live snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// lsblk could not be found or failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// lsblk printed something that is not the expected JSON.
    #[error("lsblk printed unexpected JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Reading /proc, /sys or /dev failed.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BlockDevice {
    /// This device and everything below it, depth first.
    pub fn walk(&self) -> Vec<&BlockDevice> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.walk());
        }
        out
    }
}

impl BlockSnapshot {
    /// Parse a snapshot file (the JSON this type serializes to).
    pub fn from_json(text: &str) -> Result<BlockSnapshot, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Every device, depth first (partitions and holders appear under their parents, and a
    /// holder of two parents, like an md array, appears twice).
    pub fn all(&self) -> Vec<&BlockDevice> {
        self.lsblk
            .blockdevices
            .iter()
            .flat_map(BlockDevice::walk)
            .collect()
    }

    /// The top-level device (disk) with this kernel name or path.
    fn top(&self, path: &str) -> Option<&BlockDevice> {
        self.lsblk
            .blockdevices
            .iter()
            .find(|d| d.path == path || format!("/dev/{}", d.kname) == path)
    }

    /// Follow a device path through the link table (by-id, by-path, by-partlabel, ...) to
    /// the kernel device path, repeatedly for links to links. Live snapshots also ask the
    /// filesystem.
    pub fn canonical_path(&self, path: &str) -> String {
        let mut current = path.to_string();
        for _ in 0..8 {
            match self.links.get(&current) {
                Some(target) => current = target.clone(),
                None => break,
            }
        }
        if self.live && !self.all().iter().any(|d| d.path == current) {
            if let Ok(real) = std::fs::canonicalize(&current) {
                return real.display().to_string();
            }
        }
        current
    }

    /// The device a path names, if it is in the snapshot.
    pub fn resolve(&self, path: &str) -> Option<&BlockDevice> {
        let canonical = self.canonical_path(path);
        self.top(&canonical).or_else(|| {
            self.all()
                .into_iter()
                .find(|d| d.path == canonical || format!("/dev/{}", d.kname) == canonical)
        })
    }

    /// Every link that points at `device_path` (sorted), e.g. its by-id names.
    pub fn links_to(&self, device_path: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .links
            .keys()
            .filter(|l| self.canonical_path(l) == device_path)
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// Take a snapshot of this machine: lsblk through kcore-nix, `/proc/swaps`,
    /// `/sys/block/*/holders` and the `/dev/disk/by-*` links.
    pub async fn capture_live(lsblk: Option<&Path>) -> Result<BlockSnapshot, CaptureError> {
        let program = LSBLK.resolve(lsblk)?;
        let out = queries::Lsblk::columns(LSBLK_COLUMNS)
            .invocation(&program)
            .timeout(std::time::Duration::from_secs(30))
            .output()
            .await?;
        let lsblk: Lsblk = serde_json::from_slice(&out.stdout)?;
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| CaptureError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let swaps = read(Path::new("/proc/swaps"))?
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        let mut snap = BlockSnapshot {
            lsblk,
            swaps,
            holders: BTreeMap::new(),
            links: BTreeMap::new(),
            live: true,
        };
        let mut holders = BTreeMap::new();
        for dev in snap.all() {
            let disk = dev.pkname.as_deref().filter(|_| dev.kind == "part");
            let dir = match disk {
                Some(parent) => PathBuf::from("/sys/block").join(parent).join(&dev.kname),
                None => PathBuf::from("/sys/block").join(&dev.kname),
            };
            if let Ok(entries) = std::fs::read_dir(dir.join("holders")) {
                let mut names: Vec<String> = entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                if !names.is_empty() {
                    holders.insert(dev.kname.clone(), names);
                }
            }
        }
        snap.holders = holders;
        let mut links = BTreeMap::new();
        if let Ok(kinds) = std::fs::read_dir("/dev/disk") {
            for kind in kinds.flatten() {
                let Ok(entries) = std::fs::read_dir(kind.path()) else {
                    continue;
                };
                for e in entries.flatten() {
                    if let Ok(real) = std::fs::canonicalize(e.path()) {
                        links.insert(e.path().display().to_string(), real.display().to_string());
                    }
                }
            }
        }
        snap.links = links;
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LSBLK: &str = r#"{"blockdevices":[{"name":"sda","kname":"sda","path":"/dev/sda","type":"disk","size":"1000","serial":"S1","wwn":null,"model":"M","fstype":null,"mountpoints":[null],"pttype":"gpt","pkname":null,
      "children":[{"name":"sda1","kname":"sda1","path":"/dev/sda1","type":"part","size":500,"fstype":"vfat","mountpoints":["/boot"],"pkname":"sda"}]}]}"#;

    #[test]
    fn lsblk_shapes_parse() {
        let snap = BlockSnapshot {
            lsblk: serde_json::from_str(LSBLK).unwrap(),
            links: [
                ("/dev/disk/by-id/ata-S1".to_string(), "/dev/sda".to_string()),
                (
                    "/dev/disk/by-path/pci-0".to_string(),
                    "/dev/disk/by-id/ata-S1".to_string(),
                ),
            ]
            .into(),
            ..Default::default()
        };
        let sda = snap.resolve("/dev/disk/by-path/pci-0").unwrap();
        assert_eq!((sda.size, sda.mountpoints.len()), (1000, 0));
        assert_eq!(snap.resolve("/dev/sda1").unwrap().mountpoints, ["/boot"]);
        assert_eq!(
            snap.links_to("/dev/sda"),
            ["/dev/disk/by-id/ata-S1", "/dev/disk/by-path/pci-0"]
        );
        assert!(snap.resolve("/dev/sdz").is_none());
    }
}
