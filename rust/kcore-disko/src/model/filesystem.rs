//! `type = "filesystem"`: a filesystem made with `mkfs.<format>` (disko's
//! `lib/types/filesystem.nix`).

use serde_json::{Map, Value};

use super::Content;
use super::walk::{Walker, content_options};

pub(super) fn parse(w: &mut Walker, obj: &Map<String, Value>, path: &str) -> Content {
    w.keys(
        obj,
        path,
        "filesystem",
        &content_options(&["extraArgs", "mountOptions", "mountpoint", "format"]),
        &["format"],
    );
    Content::Filesystem {
        format: w.string(obj, "format", path).unwrap_or_default(),
        mountpoint: w.string(obj, "mountpoint", path),
    }
}
