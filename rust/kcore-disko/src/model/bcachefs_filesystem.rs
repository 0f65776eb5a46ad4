//! `disko.devices.bcachefs_filesystems.<name>`: a multi-device bcachefs filesystem (disko's
//! `lib/types/bcachefs_filesystem.nix`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::walk::Walker;

/// A multi-device bcachefs filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BcachefsFilesystem {
    /// Where it is mounted.
    pub mountpoint: Option<String>,
}

/// Check one filesystem at option path `p`; `None` when it is not an attribute set.
pub(super) fn parse(w: &mut Walker, v: &Value, p: &str) -> Option<BcachefsFilesystem> {
    let d = w.obj(v, p, "bcachefs_filesystem")?;
    w.keys(
        d,
        p,
        "bcachefs_filesystem",
        &[
            "name",
            "type",
            "extraFormatArgs",
            "mountOptions",
            "mountpoint",
            "uuid",
            "passwordFile",
            "subvolumes",
        ],
        &[],
    );
    w.top_type(d, p, "bcachefs_filesystem");
    Some(BcachefsFilesystem {
        mountpoint: w.string(d, "mountpoint", p),
    })
}
