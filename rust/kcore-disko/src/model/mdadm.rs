//! `disko.devices.mdadm.<name>`: an md array built from `mdraid` members (disko's
//! `lib/types/mdadm.nix`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Content;
use super::walk::{Slot, Walker};

/// An md array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mdadm {
    /// RAID level (default 1).
    pub level: Option<i64>,
    /// What the array holds.
    pub content: Option<Content>,
}

/// Check one array at option path `p`; `None` when it is not an attribute set.
pub(super) fn parse(w: &mut Walker, v: &Value, p: &str) -> Option<Mdadm> {
    let d = w.obj(v, p, "mdadm")?;
    w.keys(
        d,
        p,
        "mdadm",
        &["name", "type", "level", "metadata", "extraArgs", "content"],
        &[],
    );
    w.top_type(d, p, "mdadm");
    let level = d.get("level").and_then(Value::as_i64);
    let content = w.content(d.get("content"), &format!("{p}.content"), Slot::Device);
    Some(Mdadm { level, content })
}
