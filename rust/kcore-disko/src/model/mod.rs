//! The typed disko device tree that validation level 2 checks an evaluated fragment against.
//!
//! `nix-instantiate --eval --strict --json` turns a fragment into plain JSON; [`DeviceTree::
//! from_json`] walks it like disko's option types do: a tagged union on `type` (disk, gpt,
//! table, filesystem, luks, lvm_pv, lvm_vg, zpool, zfs, zfs_fs, zfs_volume, swap, mdadm,
//! mdraid, btrfs, bcachefs, nodev), each with its known options and required ones. Every
//! problem carries the option path, e.g.
//! `disko.devices.disk.data0.content.partitions.ESP.content.format`.
//!
//! As disko has one file per type under `lib/types/`, this module has one submodule per
//! type with the same name (`gpt`, `luks`, `lvm_vg`, ...), each holding that type's known
//! options and typed result; this file holds the tree, the `Content` union and the dispatch
//! on `type`, and `walk` the shared checking helpers.
//!
//! The walk is hand-written rather than serde-derived because serde's internally tagged
//! enums lose the path below the tag, and the path is what tells an operator where to look.
//! The typed result keeps what the planner needs (devices, tables, partitions, what each
//! holds); options that only tune commands are checked for being known and then dropped.

mod bcachefs;
mod bcachefs_filesystem;
mod btrfs;
mod disk;
mod filesystem;
mod gpt;
mod luks;
mod lvm_pv;
mod lvm_vg;
mod mdadm;
mod mdraid;
mod nodev;
mod swap;
mod table;
mod walk;
mod zfs;
mod zfs_fs;
mod zfs_volume;
mod zpool;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Problem;

pub use bcachefs_filesystem::BcachefsFilesystem;
pub use disk::Disk;
pub use lvm_vg::{LogicalVolume, LvmVg};
pub use mdadm::Mdadm;
pub use nodev::Nodev;
pub use walk::attr_path;
pub use zpool::{Dataset, Zpool};

use walk::{Slot, Walker, closest, kind};

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

/// The content types, in the order an "unknown type" message lists them.
const CONTENT_TYPES: [&str; 10] = [
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

impl Walker {
    /// Check the content at `path` and dispatch on its `type` to that type's module.
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
                self.err(
                    &format!("{path}.type"),
                    format!(
                        "content needs option \"type\": set it to one of {}",
                        CONTENT_TYPES.join(", ")
                    ),
                );
                return None;
            }
        };
        match (ty, slot) {
            ("gpt", Slot::Device) => Some(gpt::parse(self, obj, path)),
            ("table", Slot::Device) => Some(table::parse(self, obj, path)),
            ("gpt" | "table", Slot::Partition) => {
                self.err(
                    &format!("{path}.type"),
                    format!(
                        "a partition cannot hold a {ty} partition table: put the table on a disk"
                    ),
                );
                None
            }
            ("filesystem", _) => Some(filesystem::parse(self, obj, path)),
            ("luks", _) => Some(luks::parse(self, obj, path)),
            ("lvm_pv", _) => Some(lvm_pv::parse(self, obj, path)),
            ("zfs", _) => Some(zfs::parse(self, obj, path)),
            ("mdraid", _) => Some(mdraid::parse(self, obj, path)),
            ("swap", _) => Some(swap::parse(self, obj, path)),
            ("btrfs", _) => Some(btrfs::parse(self, obj, path)),
            ("bcachefs", _) => Some(bcachefs::parse(self, obj, path)),
            (other, _) => {
                let hint = closest(other, &CONTENT_TYPES)
                    .map(|k| format!(" (did you mean {k:?}?)"))
                    .unwrap_or_default();
                self.err(
                    &format!("{path}.type"),
                    format!(
                        "unknown content type {other:?}{hint}: use one of {}",
                        CONTENT_TYPES.join(", ")
                    ),
                );
                None
            }
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
            if let Some(d) = disk::parse(&mut w, v, &p) {
                tree.disk.insert(name, d);
            }
        }
        for (name, v, p) in w.map(devices, "mdadm", path) {
            if let Some(md) = mdadm::parse(&mut w, v, &p) {
                tree.mdadm.insert(name, md);
            }
        }
        for (name, v, p) in w.map(devices, "zpool", path) {
            if let Some(pool) = zpool::parse(&mut w, v, &p) {
                tree.zpool.insert(name, pool);
            }
        }
        for (name, v, p) in w.map(devices, "lvm_vg", path) {
            if let Some(vg) = lvm_vg::parse(&mut w, v, &p) {
                tree.lvm_vg.insert(name, vg);
            }
        }
        for (name, v, p) in w.map(devices, "nodev", path) {
            if let Some(n) = nodev::parse(&mut w, v, &p) {
                tree.nodev.insert(name, n);
            }
        }
        for (name, v, p) in w.map(devices, "bcachefs_filesystems", path) {
            if let Some(fs) = bcachefs_filesystem::parse(&mut w, v, &p) {
                tree.bcachefs_filesystems.insert(name, fs);
            }
        }
        tree.cross_check(&mut w);
        fix_top_paths(&mut w.problems);
        if w.problems.is_empty() {
            Ok(tree)
        } else {
            Err(w.problems)
        }
    }

    /// References between devices: every PV's VG and every zfs member's pool must exist, and
    /// every pool must have a member.
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
        // LVs and zvols hold content too (disko's own complex example puts zfs members on
        // raid LVs).
        for (vg, v) in &self.lvm_vg {
            for (lv, l) in &v.lvs {
                if let Some(c) = &l.content {
                    collect_refs(
                        c,
                        &format!(
                            "disko.devices.lvm_vg.{}.lvs.{}.content",
                            attr_path(vg),
                            attr_path(lv)
                        ),
                        &mut refs,
                    );
                }
            }
        }
        for (pool, p) in &self.zpool {
            for (ds, d) in &p.datasets {
                if let zpool::Dataset::ZfsVolume {
                    content: Some(c), ..
                } = d
                {
                    collect_refs(
                        c,
                        &format!(
                            "disko.devices.zpool.{}.datasets.{}.content",
                            attr_path(pool),
                            attr_path(ds)
                        ),
                        &mut refs,
                    );
                }
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
        // A pool no disk, partition, LUKS container or md array joins: disko's script would
        // run `zpool create` with no vdevs, which zpool refuses at format time.
        for name in self.zpool.keys() {
            if !refs
                .iter()
                .any(|(_, kind, target)| *kind == "zfs" && target == name)
            {
                w.err(
                    &format!("disko.devices.zpool.{}", attr_path(name)),
                    format!("zpool {name:?} has no member: no content names it, so `zpool create` would get no devices; give a disk or partition content = {{ type = \"zfs\"; pool = \"{name}\"; }}"),
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
