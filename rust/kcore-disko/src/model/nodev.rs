//! `disko.devices.nodev.<name>`: a device-less mount such as tmpfs (disko's
//! `lib/types/nodev.nix`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::walk::Walker;

/// A device-less filesystem (tmpfs, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nodev {
    /// `tmpfs`, `ramfs`, ...
    pub fs_type: String,
    /// Where it is mounted.
    pub mountpoint: Option<String>,
}

/// Check one nodev mount at option path `p`; `None` when it is not an attribute set.
pub(super) fn parse(w: &mut Walker, v: &Value, p: &str) -> Option<Nodev> {
    let d = w.obj(v, p, "nodev")?;
    w.keys(
        d,
        p,
        "nodev",
        &["type", "fsType", "device", "mountpoint", "mountOptions"],
        &["fsType"],
    );
    w.top_type(d, p, "nodev");
    let fs_type = w.string(d, "fsType", p).unwrap_or_default();
    Some(Nodev {
        fs_type,
        mountpoint: w.string(d, "mountpoint", p),
    })
}
