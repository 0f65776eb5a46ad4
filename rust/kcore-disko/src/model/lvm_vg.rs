//! `disko.devices.lvm_vg.<name>`: an LVM volume group and its logical volumes (disko's
//! `lib/types/lvm_vg.nix`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Content;
use super::walk::{Slot, Walker};

/// An LVM volume group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LvmVg {
    /// Logical volumes by name.
    pub lvs: BTreeMap<String, LogicalVolume>,
}

/// An LVM logical volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogicalVolume {
    /// LVM size (`10G`, `100%`, ...).
    pub size: String,
    /// `thin-pool`, `thinlv`, `mirror`, `raid0`, ... if set.
    pub lvm_type: Option<String>,
    /// What the LV holds.
    pub content: Option<Content>,
}

/// Check one volume group at option path `p`; `None` when it is not an attribute set.
pub(super) fn parse(w: &mut Walker, v: &Value, p: &str) -> Option<LvmVg> {
    let d = w.obj(v, p, "lvm_vg")?;
    w.keys(d, p, "lvm_vg", &["name", "type", "lvs"], &[]);
    w.top_type(d, p, "lvm_vg");
    let mut lvs = BTreeMap::new();
    for (lname, lv, lp) in w.map(d, "lvs", p) {
        let Some(l) = w.obj(lv, &lp, "logical volume") else {
            continue;
        };
        w.keys(
            l,
            &lp,
            "logical volume",
            &[
                "name",
                "priority",
                "size",
                "lvm_type",
                "extraArgs",
                "pool",
                "content",
            ],
            &["size"],
        );
        let content = w.content(l.get("content"), &format!("{lp}.content"), Slot::Partition);
        lvs.insert(
            lname,
            LogicalVolume {
                size: w.string(l, "size", &lp).unwrap_or_default(),
                lvm_type: w.string(l, "lvm_type", &lp),
                content,
            },
        );
    }
    Some(LvmVg { lvs })
}
