//! `type = "mdraid"`: a member of an md array (disko's `lib/types/mdraid.nix`).

use serde_json::{Map, Value};

use super::Content;
use super::walk::{Walker, content_options};

pub(super) fn parse(w: &mut Walker, obj: &Map<String, Value>, path: &str) -> Content {
    w.keys(obj, path, "mdraid", &content_options(&["name"]), &["name"]);
    Content::Mdraid {
        name: w.string(obj, "name", path).unwrap_or_default(),
    }
}
