//! `type = "swap"`: swap space (disko's `lib/types/swap.nix`).

use serde_json::{Map, Value};

use super::Content;
use super::walk::{Walker, content_options};

pub(super) fn parse(w: &mut Walker, obj: &Map<String, Value>, path: &str) -> Content {
    w.keys(
        obj,
        path,
        "swap",
        &content_options(&[
            "discardPolicy",
            "extraArgs",
            "mountOptions",
            "priority",
            "randomEncryption",
            "resumeDevice",
        ]),
        &[],
    );
    Content::Swap
}
