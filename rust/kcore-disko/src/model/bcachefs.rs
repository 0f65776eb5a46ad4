//! `type = "bcachefs"`: a member device of a bcachefs filesystem (disko's
//! `lib/types/bcachefs.nix`).

use serde_json::{Map, Value};

use super::Content;
use super::walk::{Walker, content_options};

pub(super) fn parse(w: &mut Walker, obj: &Map<String, Value>, path: &str) -> Content {
    w.keys(
        obj,
        path,
        "bcachefs",
        &content_options(&["filesystem", "extraFormatArgs", "label"]),
        &["filesystem"],
    );
    Content::Bcachefs {
        filesystem: w.string(obj, "filesystem", path),
    }
}
