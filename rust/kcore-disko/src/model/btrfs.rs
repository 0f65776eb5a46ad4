//! `type = "btrfs"`: a btrfs filesystem and its subvolumes (disko's `lib/types/btrfs.nix`).
//! Subvolumes are checked for known options only; the planner needs the top-level mount.

use serde_json::{Map, Value};

use super::Content;
use super::walk::{Walker, content_options};

pub(super) fn parse(w: &mut Walker, obj: &Map<String, Value>, path: &str) -> Content {
    w.keys(
        obj,
        path,
        "btrfs",
        &content_options(&[
            "extraArgs",
            "mountOptions",
            "subvolumes",
            "mountpoint",
            "swap",
        ]),
        &[],
    );
    for (_, sv, spath) in w.map(obj, "subvolumes", path) {
        if let Some(s) = w.obj(sv, &spath, "subvolume") {
            w.keys(
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
    Content::Btrfs {
        mountpoint: w.string(obj, "mountpoint", path),
    }
}
