//! `type = "lvm_pv"`: an LVM physical volume joining a volume group (disko's
//! `lib/types/lvm_pv.nix`).

use serde_json::{Map, Value};

use super::Content;
use super::walk::{Walker, content_options};

pub(super) fn parse(w: &mut Walker, obj: &Map<String, Value>, path: &str) -> Content {
    w.keys(obj, path, "lvm_pv", &content_options(&["vg"]), &["vg"]);
    Content::LvmPv {
        vg: w.string(obj, "vg", path).unwrap_or_default(),
    }
}
