//! `disko.devices.disk.<name>`: a whole block device (disko's `lib/types/disk.nix`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Content;
use super::walk::{Slot, Walker};

/// A whole disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// Its device path as written (by-id paths stay by-id).
    pub device: String,
    /// What the disk holds (required: a disk without content is refused at level 2).
    pub content: Option<Content>,
}

/// Check one disk at option path `p`; `None` when it is not an attribute set.
pub(super) fn parse(w: &mut Walker, v: &Value, p: &str) -> Option<Disk> {
    let d = w.obj(v, p, "disk")?;
    w.keys(
        d,
        p,
        "disk",
        &[
            "name",
            "type",
            "device",
            "destroy",
            "imageName",
            "imageSize",
            "content",
        ],
        &["device"],
    );
    w.top_type(d, p, "disk");
    let device = w.string(d, "device", p).unwrap_or_default();
    if !device.is_empty() && !device.starts_with('/') {
        w.err(
            &format!("{p}.device"),
            format!("{device:?} is not an absolute path: use /dev/..."),
        );
    }
    // disko's disk type builds its scripts from `content._create` (lib/types/disk.nix), so a
    // disk without content fails inside disko's files; say so at the disk instead.
    if d.get("content").is_none_or(Value::is_null) {
        w.err(
            &format!("{p}.content"),
            "a disk needs content: disko builds its create script from it; add content = { type = \"gpt\"; partitions = { ... }; } or remove the disk",
        );
    }
    let content = w.content(d.get("content"), &format!("{p}.content"), Slot::Device);
    Some(Disk { device, content })
}
