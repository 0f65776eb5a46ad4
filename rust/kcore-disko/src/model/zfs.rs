//! `type = "zfs"`: a member of a ZFS pool (disko's `lib/types/zfs.nix`).

use serde_json::{Map, Value};

use super::Content;
use super::walk::{Walker, content_options};

pub(super) fn parse(w: &mut Walker, obj: &Map<String, Value>, path: &str) -> Content {
    w.keys(obj, path, "zfs", &content_options(&["pool"]), &["pool"]);
    Content::Zfs {
        pool: w.string(obj, "pool", path).unwrap_or_default(),
    }
}
