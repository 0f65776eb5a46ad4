//! `type = "zfs_fs"`: a ZFS filesystem dataset (disko's `lib/types/zfs_fs.nix`).

use serde_json::{Map, Value};

use super::Dataset;
use super::walk::Walker;

pub(super) fn parse(w: &mut Walker, ds: &Map<String, Value>, dp: &str) -> Dataset {
    w.keys(
        ds,
        dp,
        "zfs_fs",
        &["name", "type", "options", "mountOptions", "mountpoint"],
        &[],
    );
    w.zfs_properties(ds, "options", dp);
    Dataset::ZfsFs {
        mountpoint: w.string(ds, "mountpoint", dp),
    }
}
