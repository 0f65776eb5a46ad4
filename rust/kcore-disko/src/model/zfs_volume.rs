//! `type = "zfs_volume"`: a zvol and what it holds (disko's `lib/types/zfs_volume.nix`).

use serde_json::{Map, Value};

use super::Dataset;
use super::walk::{Slot, Walker};

pub(super) fn parse(w: &mut Walker, ds: &Map<String, Value>, dp: &str) -> Dataset {
    w.keys(
        ds,
        dp,
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
    w.zfs_properties(ds, "options", dp);
    // A zvol holds content like a partition does: no partition table inside it.
    let content = w
        .content(ds.get("content"), &format!("{dp}.content"), Slot::Partition)
        .map(Box::new);
    Dataset::ZfsVolume {
        size: w.string(ds, "size", dp),
        content,
    }
}
