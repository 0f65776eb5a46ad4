//! The typed disko device tree that validation level 2 checks an evaluated fragment against.
//!
//! `nix-instantiate --eval --strict --json` turns a fragment into plain JSON; [`DeviceTree::
//! from_json`] walks it like disko's option types do: a tagged union on `type` (disk, gpt,
//! table, filesystem, luks, lvm_pv, lvm_vg, zpool, zfs, zfs_fs, zfs_volume, swap, mdadm,
//! mdraid, btrfs, bcachefs, nodev), each with its known options and required ones. Every
//! problem carries the option path, e.g.
//! `disko.devices.disk.data0.content.partitions.ESP.content.format`.
//!
//! The walk is hand-written rather than serde-derived because serde's internally tagged
//! enums lose the path below the tag, and the path is what tells an operator where to look.
//! The typed result keeps what the planner needs (devices, tables, partitions, what each
//! holds); options that only tune commands are checked for being known and then dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Problem;

/// All devices of a fragment (`disko.devices`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceTree {
    /// `disko.devices.disk`: whole block devices.
    pub disk: BTreeMap<String, Disk>,
    /// `disko.devices.mdadm`: md arrays.
    pub mdadm: BTreeMap<String, Mdadm>,
    /// `disko.devices.zpool`: ZFS pools.
    pub zpool: BTreeMap<String, Zpool>,
    /// `disko.devices.lvm_vg`: LVM volume groups.
    pub lvm_vg: BTreeMap<String, LvmVg>,
    /// `disko.devices.nodev`: tmpfs and other device-less mounts.
    pub nodev: BTreeMap<String, Nodev>,
    /// `disko.devices.bcachefs_filesystems`: multi-device bcachefs filesystems.
    pub bcachefs_filesystems: BTreeMap<String, BcachefsFilesystem>,
}

/// A whole disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// Its device path as written (by-id paths stay by-id).
    pub device: String,
    /// What the disk holds; `None` leaves it untouched.
    pub content: Option<Content>,
}

/// An md array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mdadm {
    /// RAID level (default 1).
    pub level: Option<i64>,
    /// What the array holds.
    pub content: Option<Content>,
}

/// A ZFS pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zpool {
    /// `""` (stripe), `mirror`, `raidz*`, or a topology (kept as JSON).
    pub mode: Value,
    /// Datasets and zvols by name.
    pub datasets: BTreeMap<String, Dataset>,
}

/// A ZFS dataset or zvol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Dataset {
    /// `zfs_fs`.
    ZfsFs {
        /// Where it is mounted by disko, if anywhere.
        mountpoint: Option<String>,
    },
    /// `zfs_volume`.
    ZfsVolume {
        /// Its size.
        size: Option<String>,
        /// What it holds.
        content: Option<Box<Content>>,
    },
}

/// An LVM volume group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LvmVg {
    /// Logical volumes by name.
    pub lvs: BTreeMap<String, LogicalVolume>,
}

/// An LVM logical volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogicalVolume {
    /// LVM size (`10G`, `100%`, ...).
    pub size: String,
    /// `thin-pool`, `thinlv`, `mirror`, `raid0`, ... if set.
    pub lvm_type: Option<String>,
    /// What the LV holds.
    pub content: Option<Content>,
}

/// A device-less filesystem (tmpfs, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nodev {
    /// `tmpfs`, `ramfs`, ...
    pub fs_type: String,
    /// Where it is mounted.
    pub mountpoint: Option<String>,
}

/// A multi-device bcachefs filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BcachefsFilesystem {
    /// Where it is mounted.
    pub mountpoint: Option<String>,
}

/// One GPT or msdos partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    /// Its name in the fragment (GPT attribute name or table `name`).
    pub name: String,
    /// GPT size (`512M`, `100%`); `None` for msdos tables that use start/end.
    pub size: Option<String>,
    /// Start as written, if any.
    pub start: Option<String>,
    /// End as written, if any.
    pub end: Option<String>,
    /// GPT type code (`EF00`, `8300`, ...) or msdos part-type.
    pub part_type: Option<String>,
    /// What the partition holds.
    pub content: Option<Content>,
}

/// What a disk, partition, LUKS container, md array or LV holds: disko's tagged union.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// A GPT partition table.
    Gpt {
        /// Partitions in fragment order.
        partitions: Vec<Partition>,
    },
    /// A legacy msdos/gpt `table`.
    Table {
        /// `gpt` or `msdos`.
        format: String,
        /// Partitions in order.
        partitions: Vec<Partition>,
    },
    /// A filesystem made with `mkfs.<format>`.
    Filesystem {
        /// `ext4`, `vfat`, `xfs`, ...
        format: String,
        /// Where it is mounted, if anywhere.
        mountpoint: Option<String>,
    },
    /// A LUKS container.
    Luks {
        /// The mapping name (`/dev/mapper/<name>`).
        name: String,
        /// What the opened container holds.
        content: Option<Box<Content>>,
    },
    /// An LVM physical volume of `vg`.
    LvmPv {
        /// The volume group it joins.
        vg: String,
    },
    /// A member of ZFS pool `pool`.
    Zfs {
        /// The pool it joins.
        pool: String,
    },
    /// A member of md array `name`.
    Mdraid {
        /// The array it joins.
        name: String,
    },
    /// Swap space.
    Swap,
    /// A btrfs filesystem.
    Btrfs {
        /// Where the top-level volume is mounted, if anywhere.
        mountpoint: Option<String>,
    },
    /// A member of a bcachefs filesystem.
    Bcachefs {
        /// The filesystem it joins.
        filesystem: Option<String>,
    },
}

impl Content {
    /// The disko `type` of this content.
    pub fn type_name(&self) -> &'static str {
        match self {
            Content::Gpt { .. } => "gpt",
            Content::Table { .. } => "table",
            Content::Filesystem { .. } => "filesystem",
            Content::Luks { .. } => "luks",
            Content::LvmPv { .. } => "lvm_pv",
            Content::Zfs { .. } => "zfs",
            Content::Mdraid { .. } => "mdraid",
            Content::Swap => "swap",
            Content::Btrfs { .. } => "btrfs",
            Content::Bcachefs { .. } => "bcachefs",
        }
    }

    /// A short human description (`ext4 on /boot`, `LUKS crypted > ext4 on /`, `PV of vg_kcore`).
    pub fn describe(&self) -> String {
        match self {
            Content::Gpt { partitions } => format!("GPT: {}", describe_parts(partitions)),
            Content::Table { format, partitions } => {
                format!("{format} table: {}", describe_parts(partitions))
            }
            Content::Filesystem { format, mountpoint } => match mountpoint {
                Some(m) => format!("{format} on {m}"),
                None => format!("{format} (not mounted)"),
            },
            Content::Luks { name, content } => match content {
                Some(c) => format!("LUKS {name} > {}", c.describe()),
                None => format!("LUKS {name}"),
            },
            Content::LvmPv { vg } => format!("PV of {vg}"),
            Content::Zfs { pool } => format!("member of zpool {pool}"),
            Content::Mdraid { name } => format!("member of md {name}"),
            Content::Swap => "swap".into(),
            Content::Btrfs { mountpoint } => match mountpoint {
                Some(m) => format!("btrfs on {m}"),
                None => "btrfs".into(),
            },
            Content::Bcachefs { filesystem } => {
                format!(
                    "bcachefs member of {}",
                    filesystem.as_deref().unwrap_or("?")
                )
            }
        }
    }
}

/// Shell hooks every disko sub-type accepts (`diskoLib.mkSubType`).
const HOOKS: [&str; 6] = [
    "preCreateHook",
    "postCreateHook",
    "preMountHook",
    "postMountHook",
    "preUnmountHook",
    "postUnmountHook",
];

fn describe_parts(partitions: &[Partition]) -> String {
    if partitions.is_empty() {
        return "no partitions".into();
    }
    partitions
        .iter()
        .map(|p| {
            let what = p
                .content
                .as_ref()
                .map_or("unformatted".into(), Content::describe);
            format!("{} {what}", p.name)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where content may appear: partitions cannot hold partition tables.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Device,
    Partition,
}

struct Walker {
    problems: Vec<Problem>,
}

impl Walker {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Check that `obj` has only `known` keys and all `required` ones.
    fn keys(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        what: &str,
        known: &[&str],
        required: &[&str],
    ) {
        for key in obj.keys() {
            if !known.contains(&key.as_str()) && !HOOKS.contains(&key.as_str()) {
                let hint = closest(key, known)
                    .map(|k| format!(" (did you mean {k:?}?)"))
                    .unwrap_or_default();
                self.err(
                    &format!("{path}.{key}"),
                    format!(
                        "{what} has no option {key:?}{hint}: known options are {}",
                        known.join(", ")
                    ),
                );
            }
        }
        for key in required {
            if obj.get(*key).is_none_or(Value::is_null) {
                self.err(
                    &format!("{path}.{key}"),
                    format!("{what} needs option {key:?}: set it"),
                );
            }
        }
    }

    fn obj<'a>(&mut self, v: &'a Value, path: &str, what: &str) -> Option<&'a Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.err(
                    path,
                    format!("{what} must be an attribute set, got {}", kind(other)),
                );
                None
            }
        }
    }

    fn string(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.err(
                    &format!("{path}.{key}"),
                    format!("must be a string, got {}", kind(other)),
                );
                None
            }
        }
    }

    fn map<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Vec<(String, &'a Value, String)> {
        match obj.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| (k.clone(), v, format!("{path}.{key}.{}", attr_path(k))))
                .collect(),
            Some(other) => {
                self.err(
                    &format!("{path}.{key}"),
                    format!("must be an attribute set, got {}", kind(other)),
                );
                Vec::new()
            }
        }
    }

    fn content(&mut self, v: Option<&Value>, path: &str, slot: Slot) -> Option<Content> {
        let v = match v {
            None | Some(Value::Null) => return None,
            Some(v) => v,
        };
        let obj = self.obj(v, path, "content")?;
        let ty = match obj.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(other) => {
                self.err(
                    &format!("{path}.type"),
                    format!("must be a string, got {}", kind(other)),
                );
                return None;
            }
            None => {
                self.err(&format!("{path}.type"), "content needs option \"type\": set it to one of gpt, table, filesystem, luks, lvm_pv, zfs, mdraid, swap, btrfs, bcachefs");
                return None;
            }
        };
        const COMMON: [&str; 2] = ["type", "device"];
        let known = |extra: &[&'static str]| -> Vec<&'static str> {
            COMMON.iter().chain(extra).copied().collect()
        };
        match (ty, slot) {
            ("gpt", Slot::Device) => {
                self.keys(
                    obj,
                    path,
                    "gpt",
                    &known(&["partitions", "efiGptPartitionFirst"]),
                    &[],
                );
                let mut partitions = Vec::new();
                for (name, pv, ppath) in self.map(obj, "partitions", path) {
                    let Some(p) = self.obj(pv, &ppath, "partition") else {
                        continue;
                    };
                    self.keys(
                        p,
                        &ppath,
                        "gpt partition",
                        &[
                            "type",
                            "attributes",
                            "device",
                            "priority",
                            "name",
                            "uuid",
                            "label",
                            "size",
                            "alignment",
                            "start",
                            "end",
                            "content",
                            "hybrid",
                        ],
                        &[],
                    );
                    if let Some(size) = self.string(p, "size", &ppath) {
                        if !valid_gpt_size(&size) {
                            self.err(&format!("{ppath}.size"), format!("{size:?} is not a GPT size: use 100% or a number with an optional K, M, G, T or P suffix"));
                        }
                    }
                    partitions.push(Partition {
                        name,
                        size: self.string(p, "size", &ppath),
                        start: self.string(p, "start", &ppath),
                        end: self.string(p, "end", &ppath),
                        part_type: self.string(p, "type", &ppath),
                        content: self.content(
                            p.get("content"),
                            &format!("{ppath}.content"),
                            Slot::Partition,
                        ),
                    });
                }
                Some(Content::Gpt { partitions })
            }
            ("table", Slot::Device) => {
                self.keys(obj, path, "table", &known(&["format", "partitions"]), &[]);
                let format = self
                    .string(obj, "format", path)
                    .unwrap_or_else(|| "gpt".into());
                let mut partitions = Vec::new();
                match obj.get("partitions") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(items)) => {
                        for (i, pv) in items.iter().enumerate() {
                            let ppath = format!("{path}.partitions.[{i}]");
                            let Some(p) = self.obj(pv, &ppath, "partition") else {
                                continue;
                            };
                            self.keys(
                                p,
                                &ppath,
                                "table partition",
                                &[
                                    "part-type",
                                    "fs-type",
                                    "name",
                                    "start",
                                    "end",
                                    "flags",
                                    "bootable",
                                    "content",
                                ],
                                &[],
                            );
                            partitions.push(Partition {
                                name: self
                                    .string(p, "name", &ppath)
                                    .unwrap_or_else(|| format!("{}", i + 1)),
                                size: None,
                                start: self.string(p, "start", &ppath),
                                end: self.string(p, "end", &ppath),
                                part_type: self.string(p, "part-type", &ppath),
                                content: self.content(
                                    p.get("content"),
                                    &format!("{ppath}.content"),
                                    Slot::Partition,
                                ),
                            });
                        }
                    }
                    Some(other) => self.err(
                        &format!("{path}.partitions"),
                        format!("must be a list, got {}", kind(other)),
                    ),
                }
                Some(Content::Table { format, partitions })
            }
            ("gpt" | "table", Slot::Partition) => {
                self.err(
                    &format!("{path}.type"),
                    format!(
                        "a partition cannot hold a {ty} partition table: put the table on a disk"
                    ),
                );
                None
            }
            ("filesystem", _) => {
                self.keys(
                    obj,
                    path,
                    "filesystem",
                    &known(&["extraArgs", "mountOptions", "mountpoint", "format"]),
                    &["format"],
                );
                Some(Content::Filesystem {
                    format: self.string(obj, "format", path).unwrap_or_default(),
                    mountpoint: self.string(obj, "mountpoint", path),
                })
            }
            ("luks", _) => {
                self.keys(
                    obj,
                    path,
                    "luks",
                    &known(&[
                        "name",
                        "keyFile",
                        "passwordFile",
                        "askPassword",
                        "settings",
                        "additionalKeyFiles",
                        "initrdUnlock",
                        "extraFormatArgs",
                        "extraOpenArgs",
                        "content",
                    ]),
                    &["name"],
                );
                Some(Content::Luks {
                    name: self.string(obj, "name", path).unwrap_or_default(),
                    content: self
                        .content(obj.get("content"), &format!("{path}.content"), Slot::Device)
                        .map(Box::new),
                })
            }
            ("lvm_pv", _) => {
                self.keys(obj, path, "lvm_pv", &known(&["vg"]), &["vg"]);
                Some(Content::LvmPv {
                    vg: self.string(obj, "vg", path).unwrap_or_default(),
                })
            }
            ("zfs", _) => {
                self.keys(obj, path, "zfs", &known(&["pool"]), &["pool"]);
                Some(Content::Zfs {
                    pool: self.string(obj, "pool", path).unwrap_or_default(),
                })
            }
            ("mdraid", _) => {
                self.keys(obj, path, "mdraid", &known(&["name"]), &["name"]);
                Some(Content::Mdraid {
                    name: self.string(obj, "name", path).unwrap_or_default(),
                })
            }
            ("swap", _) => {
                self.keys(
                    obj,
                    path,
                    "swap",
                    &known(&[
                        "discardPolicy",
                        "extraArgs",
                        "mountOptions",
                        "priority",
                        "randomEncryption",
                        "resumeDevice",
                    ]),
                    &[],
                );
                Some(Content::Swap)
            }
            ("btrfs", _) => {
                self.keys(
                    obj,
                    path,
                    "btrfs",
                    &known(&[
                        "extraArgs",
                        "mountOptions",
                        "subvolumes",
                        "mountpoint",
                        "swap",
                    ]),
                    &[],
                );
                for (_, sv, spath) in self.map(obj, "subvolumes", path) {
                    if let Some(s) = self.obj(sv, &spath, "subvolume") {
                        self.keys(
                            s,
                            &spath,
                            "btrfs subvolume",
                            &[
                                "name",
                                "type",
                                "extraArgs",
                                "mountOptions",
                                "mountpoint",
                                "swap",
                            ],
                            &[],
                        );
                    }
                }
                Some(Content::Btrfs {
                    mountpoint: self.string(obj, "mountpoint", path),
                })
            }
            ("bcachefs", _) => {
                self.keys(
                    obj,
                    path,
                    "bcachefs",
                    &known(&["filesystem", "extraFormatArgs", "label"]),
                    &["filesystem"],
                );
                Some(Content::Bcachefs {
                    filesystem: self.string(obj, "filesystem", path),
                })
            }
            (other, _) => {
                let types = [
                    "gpt",
                    "table",
                    "filesystem",
                    "luks",
                    "lvm_pv",
                    "zfs",
                    "mdraid",
                    "swap",
                    "btrfs",
                    "bcachefs",
                ];
                let hint = closest(other, &types)
                    .map(|k| format!(" (did you mean {k:?}?)"))
                    .unwrap_or_default();
                self.err(
                    &format!("{path}.type"),
                    format!(
                        "unknown content type {other:?}{hint}: use one of {}",
                        types.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// The `type` of a top-level device, which defaults to the collection's own type.
    fn top_type(&mut self, obj: &Map<String, Value>, path: &str, expected: &str) {
        match obj.get("type") {
            None => {}
            Some(Value::String(t)) if t == expected => {}
            Some(other) => self.err(
                &format!("{path}.type"),
                format!("must be {expected:?} here, got {other}"),
            ),
        }
    }
}

impl DeviceTree {
    /// Check an evaluated fragment (the JSON of `{ disko.devices = ...; }`) and build the tree.
    /// All problems are returned, each with its option path.
    pub fn from_json(value: &Value) -> Result<DeviceTree, Vec<Problem>> {
        let mut w = Walker {
            problems: Vec::new(),
        };
        let mut tree = DeviceTree::default();
        let Some(root) = w.obj(value, "(top level)", "a disko fragment") else {
            return Err(w.problems);
        };
        w.keys(root, "", "a disko fragment", &["disko"], &["disko"]);
        let devices = root
            .get("disko")
            .and_then(|d| w.obj(d, "disko", "disko"))
            .and_then(|d| {
                w.keys(d, "disko", "disko", &["devices"], &["devices"]);
                d.get("devices")
            })
            .and_then(|d| w.obj(d, "disko.devices", "disko.devices"));
        let Some(devices) = devices else {
            fix_top_paths(&mut w.problems);
            return Err(w.problems);
        };
        let path = "disko.devices";
        w.keys(
            devices,
            path,
            "disko.devices",
            &[
                "disk",
                "mdadm",
                "zpool",
                "lvm_vg",
                "nodev",
                "bcachefs_filesystems",
            ],
            &[],
        );
        for (name, v, p) in w.map(devices, "disk", path) {
            let Some(d) = w.obj(v, &p, "disk") else {
                continue;
            };
            w.keys(
                d,
                &p,
                "disk",
                &[
                    "name",
                    "type",
                    "device",
                    "destroy",
                    "imageName",
                    "imageSize",
                    "content",
                ],
                &["device"],
            );
            w.top_type(d, &p, "disk");
            let device = w.string(d, "device", &p).unwrap_or_default();
            if !device.is_empty() && !device.starts_with('/') {
                w.err(
                    &format!("{p}.device"),
                    format!("{device:?} is not an absolute path: use /dev/..."),
                );
            }
            let content = w.content(d.get("content"), &format!("{p}.content"), Slot::Device);
            tree.disk.insert(name, Disk { device, content });
        }
        for (name, v, p) in w.map(devices, "mdadm", path) {
            let Some(d) = w.obj(v, &p, "mdadm") else {
                continue;
            };
            w.keys(
                d,
                &p,
                "mdadm",
                &["name", "type", "level", "metadata", "extraArgs", "content"],
                &[],
            );
            w.top_type(d, &p, "mdadm");
            let level = d.get("level").and_then(Value::as_i64);
            let content = w.content(d.get("content"), &format!("{p}.content"), Slot::Device);
            tree.mdadm.insert(name, Mdadm { level, content });
        }
        for (name, v, p) in w.map(devices, "zpool", path) {
            let Some(d) = w.obj(v, &p, "zpool") else {
                continue;
            };
            w.keys(
                d,
                &p,
                "zpool",
                &[
                    "name",
                    "type",
                    "mode",
                    "options",
                    "rootFsOptions",
                    "mountpoint",
                    "mountOptions",
                    "datasets",
                ],
                &[],
            );
            w.top_type(d, &p, "zpool");
            let mut datasets = BTreeMap::new();
            for (dname, dv, dp) in w.map(d, "datasets", &p) {
                let Some(ds) = w.obj(dv, &dp, "dataset") else {
                    continue;
                };
                match ds.get("type").and_then(Value::as_str) {
                    Some("zfs_fs") => {
                        w.keys(
                            ds,
                            &dp,
                            "zfs_fs",
                            &["name", "type", "options", "mountOptions", "mountpoint"],
                            &[],
                        );
                        datasets.insert(
                            dname,
                            Dataset::ZfsFs {
                                mountpoint: w.string(ds, "mountpoint", &dp),
                            },
                        );
                    }
                    Some("zfs_volume") => {
                        w.keys(
                            ds,
                            &dp,
                            "zfs_volume",
                            &[
                                "name",
                                "type",
                                "options",
                                "extraArgs",
                                "mountOptions",
                                "size",
                                "content",
                            ],
                            &[],
                        );
                        let content = w
                            .content(ds.get("content"), &format!("{dp}.content"), Slot::Partition)
                            .map(Box::new);
                        datasets.insert(
                            dname,
                            Dataset::ZfsVolume {
                                size: w.string(ds, "size", &dp),
                                content,
                            },
                        );
                    }
                    Some(other) => w.err(
                        &format!("{dp}.type"),
                        format!("unknown dataset type {other:?}: use zfs_fs or zfs_volume"),
                    ),
                    None => w.err(
                        &format!("{dp}.type"),
                        "dataset needs option \"type\": set it to zfs_fs or zfs_volume",
                    ),
                }
            }
            let mode = d
                .get("mode")
                .cloned()
                .unwrap_or(Value::String(String::new()));
            tree.zpool.insert(name, Zpool { mode, datasets });
        }
        for (name, v, p) in w.map(devices, "lvm_vg", path) {
            let Some(d) = w.obj(v, &p, "lvm_vg") else {
                continue;
            };
            w.keys(d, &p, "lvm_vg", &["name", "type", "lvs"], &[]);
            w.top_type(d, &p, "lvm_vg");
            let mut lvs = BTreeMap::new();
            for (lname, lv, lp) in w.map(d, "lvs", &p) {
                let Some(l) = w.obj(lv, &lp, "logical volume") else {
                    continue;
                };
                w.keys(
                    l,
                    &lp,
                    "logical volume",
                    &[
                        "name",
                        "priority",
                        "size",
                        "lvm_type",
                        "extraArgs",
                        "pool",
                        "content",
                    ],
                    &["size"],
                );
                let content =
                    w.content(l.get("content"), &format!("{lp}.content"), Slot::Partition);
                lvs.insert(
                    lname,
                    LogicalVolume {
                        size: w.string(l, "size", &lp).unwrap_or_default(),
                        lvm_type: w.string(l, "lvm_type", &lp),
                        content,
                    },
                );
            }
            tree.lvm_vg.insert(name, LvmVg { lvs });
        }
        for (name, v, p) in w.map(devices, "nodev", path) {
            let Some(d) = w.obj(v, &p, "nodev") else {
                continue;
            };
            w.keys(
                d,
                &p,
                "nodev",
                &["type", "fsType", "device", "mountpoint", "mountOptions"],
                &["fsType"],
            );
            w.top_type(d, &p, "nodev");
            let fs_type = w.string(d, "fsType", &p).unwrap_or_default();
            tree.nodev.insert(
                name,
                Nodev {
                    fs_type,
                    mountpoint: w.string(d, "mountpoint", &p),
                },
            );
        }
        for (name, v, p) in w.map(devices, "bcachefs_filesystems", path) {
            let Some(d) = w.obj(v, &p, "bcachefs_filesystem") else {
                continue;
            };
            w.keys(
                d,
                &p,
                "bcachefs_filesystem",
                &[
                    "name",
                    "type",
                    "extraFormatArgs",
                    "mountOptions",
                    "mountpoint",
                    "uuid",
                    "passwordFile",
                    "subvolumes",
                ],
                &[],
            );
            w.top_type(d, &p, "bcachefs_filesystem");
            tree.bcachefs_filesystems.insert(
                name,
                BcachefsFilesystem {
                    mountpoint: w.string(d, "mountpoint", &p),
                },
            );
        }
        tree.cross_check(&mut w);
        fix_top_paths(&mut w.problems);
        if w.problems.is_empty() {
            Ok(tree)
        } else {
            Err(w.problems)
        }
    }

    /// References between devices: every PV's VG and every zfs member's pool must exist.
    fn cross_check(&self, w: &mut Walker) {
        let mut refs = Vec::new();
        for (name, disk) in &self.disk {
            if let Some(c) = &disk.content {
                collect_refs(
                    c,
                    &format!("disko.devices.disk.{}.content", attr_path(name)),
                    &mut refs,
                );
            }
        }
        for (name, md) in &self.mdadm {
            if let Some(c) = &md.content {
                collect_refs(
                    c,
                    &format!("disko.devices.mdadm.{}.content", attr_path(name)),
                    &mut refs,
                );
            }
        }
        for (path, kind, target) in refs {
            let (exists, collection) = match kind {
                "lvm_pv" => (self.lvm_vg.contains_key(&target), "lvm_vg"),
                "zfs" => (self.zpool.contains_key(&target), "zpool"),
                "mdraid" => (self.mdadm.contains_key(&target), "mdadm"),
                _ => continue,
            };
            if !exists {
                w.err(&path, format!("refers to {collection} {target:?}, which this fragment does not define: add disko.devices.{collection}.{} or fix the name", attr_path(&target)));
            }
        }
    }

    /// Every disk as (attribute name, device path), in name order.
    pub fn disks(&self) -> impl Iterator<Item = (&String, &Disk)> {
        self.disk.iter()
    }
}

fn collect_refs(c: &Content, path: &str, out: &mut Vec<(String, &'static str, String)>) {
    match c {
        Content::Gpt { partitions } | Content::Table { partitions, .. } => {
            for p in partitions {
                if let Some(pc) = &p.content {
                    collect_refs(
                        pc,
                        &format!("{path}.partitions.{}.content", attr_path(&p.name)),
                        out,
                    );
                }
            }
        }
        Content::Luks {
            content: Some(inner),
            ..
        } => collect_refs(inner, &format!("{path}.content"), out),
        Content::LvmPv { vg } => out.push((format!("{path}.vg"), "lvm_pv", vg.clone())),
        Content::Zfs { pool } => out.push((format!("{path}.pool"), "zfs", pool.clone())),
        Content::Mdraid { name } => out.push((format!("{path}.name"), "mdraid", name.clone())),
        _ => {}
    }
}

fn fix_top_paths(problems: &mut [Problem]) {
    for p in problems {
        if let Some(rest) = p.path.strip_prefix('.') {
            p.path = rest.to_string();
        }
    }
}

/// An attribute name as it appears in an option path: bare when it is a plain identifier,
/// quoted otherwise (`partitions."my part"`).
pub fn attr_path(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_'-".contains(c));
    if plain {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

fn valid_gpt_size(size: &str) -> bool {
    if size == "100%" {
        return true;
    }
    let digits = size.strip_suffix(['K', 'M', 'G', 'T', 'P']).unwrap_or(size);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an attribute set",
    }
}

/// The known name closest to a misspelt one (edit distance at most 2).
fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn esp(content: Value) -> Value {
        json!({"disko": {"devices": {"disk": {"data0": {"type": "disk", "device": "/dev/sda", "content": {
            "type": "gpt", "partitions": {"ESP": {"size": "512M", "type": "EF00", "content": content}}}}}}}})
    }

    #[test]
    fn a_good_tree_is_typed() {
        let tree = DeviceTree::from_json(&esp(
            json!({"type": "filesystem", "format": "vfat", "mountpoint": "/boot"}),
        ))
        .unwrap();
        let Some(Content::Gpt { partitions }) = &tree.disk["data0"].content else {
            panic!()
        };
        assert_eq!(
            partitions[0].content.as_ref().unwrap().describe(),
            "vfat on /boot"
        );
    }

    #[test]
    fn missing_required_field_has_its_option_path() {
        let err = DeviceTree::from_json(&esp(json!({"type": "filesystem", "mountpoint": "/boot"})))
            .unwrap_err();
        assert_eq!(
            err[0].path,
            "disko.devices.disk.data0.content.partitions.ESP.content.format"
        );
    }

    #[test]
    fn unknown_type_and_option_are_errors_with_hints() {
        let err = DeviceTree::from_json(&esp(json!({"type": "filesytem", "format": "vfat"})))
            .unwrap_err();
        assert_eq!(
            err[0].path,
            "disko.devices.disk.data0.content.partitions.ESP.content.type"
        );
        assert!(
            err[0].message.contains("did you mean \"filesystem\""),
            "{}",
            err[0].message
        );
        let err = DeviceTree::from_json(&esp(
            json!({"type": "filesystem", "format": "vfat", "mountpiont": "/"}),
        ))
        .unwrap_err();
        assert_eq!(
            err[0].path,
            "disko.devices.disk.data0.content.partitions.ESP.content.mountpiont"
        );
    }

    #[test]
    fn dangling_vg_reference_is_an_error() {
        let err = DeviceTree::from_json(&esp(json!({"type": "lvm_pv", "vg": "nope"}))).unwrap_err();
        assert_eq!(
            err[0].path,
            "disko.devices.disk.data0.content.partitions.ESP.content.vg"
        );
    }

    #[test]
    fn tables_are_not_allowed_inside_partitions() {
        let err = DeviceTree::from_json(&esp(json!({"type": "gpt"}))).unwrap_err();
        assert!(err[0].message.contains("cannot hold"), "{err:?}");
    }

    #[test]
    fn quoted_attr_names_in_paths() {
        assert_eq!(attr_path("ESP"), "ESP");
        assert_eq!(attr_path("my part"), "\"my part\"");
    }
}
