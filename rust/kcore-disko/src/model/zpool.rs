//! `disko.devices.zpool.<name>`: a ZFS pool and its datasets (disko's `lib/types/zpool.nix`,
//! whose `datasets` are the tagged union of `zfs_fs` and `zfs_volume`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::walk::Walker;
use super::{Content, zfs_fs, zfs_volume};

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

/// Check one pool at option path `p`; `None` when it is not an attribute set.
pub(super) fn parse(w: &mut Walker, v: &Value, p: &str) -> Option<Zpool> {
    let d = w.obj(v, p, "zpool")?;
    w.keys(
        d,
        p,
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
    w.top_type(d, p, "zpool");
    w.zfs_properties(d, "options", p);
    w.zfs_properties(d, "rootFsOptions", p);
    let mut datasets = BTreeMap::new();
    for (dname, dv, dp) in w.map(d, "datasets", p) {
        let Some(ds) = w.obj(dv, &dp, "dataset") else {
            continue;
        };
        match ds.get("type").and_then(Value::as_str) {
            Some("zfs_fs") => {
                datasets.insert(dname, zfs_fs::parse(w, ds, &dp));
            }
            Some("zfs_volume") => {
                datasets.insert(dname, zfs_volume::parse(w, ds, &dp));
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
    Some(Zpool { mode, datasets })
}
