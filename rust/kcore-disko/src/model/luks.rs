//! `type = "luks"`: a LUKS container and what it holds once opened (disko's
//! `lib/types/luks.nix`).

use serde_json::{Map, Value};

use super::Content;
use super::walk::{Slot, Walker, content_options};

pub(super) fn parse(w: &mut Walker, obj: &Map<String, Value>, path: &str) -> Content {
    w.keys(
        obj,
        path,
        "luks",
        &content_options(&[
            "name",
            "keyFile",
            "passwordFile",
            "askPassword",
            "settings",
            "additionalKeyFiles",
            "initrdUnlock",
            "extraFormatArgs",
            "extraOpenArgs",
            "content",
        ]),
        &["name"],
    );
    w.absolute_file(obj, "passwordFile", path);
    w.absolute_file(obj, "keyFile", path);
    if let Some(Value::Object(settings)) = obj.get("settings") {
        w.absolute_file(settings, "keyFile", &format!("{path}.settings"));
    }
    Content::Luks {
        name: w.string(obj, "name", path).unwrap_or_default(),
        // An opened container is a whole block device, so it may hold a partition table.
        content: w
            .content(obj.get("content"), &format!("{path}.content"), Slot::Device)
            .map(Box::new),
    }
}
