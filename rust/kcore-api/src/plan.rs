//! The disko plan as it travels on the wire: what applying a fragment would do to each
//! target disk, why a target is refused, and the hash an apply must present.
//!
//! kcore-disko builds a [`Plan`] against a block-device snapshot (`kcore_disko::plan`, which
//! re-exports these types); the agent returns it from a dry run inside
//! [`crate::inventory::DiskoPlanResponse`], and kctl decodes the same type to show it. The
//! JSON is camelCase-free on purpose: field names are the Rust names (`targets`, `by_id`),
//! kinds are kebab-case (`new-disk`), classes lowercase, refusal codes SCREAMING_SNAKE_CASE,
//! as they were before the types moved here, so plans and hashes stay the same.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why a target is refused. The names are stable: scripts and the agent match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefusalCode {
    /// The device path does not resolve to any device in the snapshot.
    TargetNotFound,
    /// Two targets resolve to the same device, or the device's serial/WWN is shared by
    /// another disk (multipath), so which disk is meant is unclear.
    TargetAmbiguous,
    /// The device holds the running system (`/`, `/boot`, `/nix` mounted on it or below it).
    TargetIsOsDisk,
    /// The device or something on it is mounted.
    TargetMounted,
    /// The device or a partition of it is active swap.
    TargetSwap,
    /// Something holds the device or a partition (dm, md, LUKS, LVM).
    TargetHasHolders,
    /// The device or a partition is a ZFS pool member.
    TargetZfsMember,
    /// The device has a partition table or a filesystem signature.
    TargetHasData,
}

impl RefusalCode {
    /// The stable code as printed (`TARGET_MOUNTED`).
    pub fn as_str(self) -> &'static str {
        crate::ErrorCode::from(self).as_str()
    }
}

/// A target refusal is one of the stable wire codes: the list stays in one place.
impl From<RefusalCode> for crate::ErrorCode {
    fn from(code: RefusalCode) -> crate::ErrorCode {
        use crate::ErrorCode;
        match code {
            RefusalCode::TargetNotFound => ErrorCode::TargetNotFound,
            RefusalCode::TargetAmbiguous => ErrorCode::TargetAmbiguous,
            RefusalCode::TargetIsOsDisk => ErrorCode::TargetIsOsDisk,
            RefusalCode::TargetMounted => ErrorCode::TargetMounted,
            RefusalCode::TargetSwap => ErrorCode::TargetSwap,
            RefusalCode::TargetHasHolders => ErrorCode::TargetHasHolders,
            RefusalCode::TargetZfsMember => ErrorCode::TargetZfsMember,
            RefusalCode::TargetHasData => ErrorCode::TargetHasData,
        }
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a change can lose data.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ChangeClass {
    /// Only adds (a new blank disk, a new partition in free space) or changes nothing.
    Additive,
    /// Rewrites, resizes or removes something that exists.
    Destructive,
}

/// The kinds of action.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::EnumIter,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum ActionKind {
    /// Nothing changes on this disk.
    Keep,
    /// A new disk: partition table and everything on it.
    NewDisk,
    /// A new partition in free space on a disk that stays.
    NewPartition,
    /// A partition (or the disk) gets new content: mkfs/luksFormat/pvcreate/zpool create.
    Format,
    /// A partition changes size.
    Resize,
    /// A partition or disk leaves the layout.
    Remove,
}

impl ChangeClass {
    /// The class as the wire spells it (`additive`, `destructive`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl std::fmt::Display for ChangeClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ActionKind {
    /// The kind as the wire spells it (`new-disk`, `keep`, ...).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One action on a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// What happens.
    pub kind: ActionKind,
    /// Additive or destructive.
    pub class: ChangeClass,
    /// Which partition or what content, in words.
    pub detail: String,
}

/// A refusal of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The stable code.
    pub code: RefusalCode,
    /// Why, naming the device.
    pub message: String,
}

/// Who a target really is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Kernel name (`sdb`, `nvme0n1`).
    pub kname: String,
    /// Device path (`/dev/sdb`).
    pub path: String,
    /// Its `/dev/disk/by-id/` names, sorted.
    pub by_id: Vec<String>,
    /// Serial number, if reported.
    pub serial: Option<String>,
    /// Size in bytes.
    pub size: u64,
}

/// One disk of the layout and what would happen to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Its disko attribute name (`data0`).
    pub name: String,
    /// Its device path as written in the fragment.
    pub device: String,
    /// The device it resolves to, if found.
    pub identity: Option<Identity>,
    /// What would happen to it.
    pub actions: Vec<Action>,
    /// Why it is refused (empty: allowed).
    pub refusals: Vec<Refusal>,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// One entry per disk of the new and current trees, by attribute name.
    pub targets: Vec<Target>,
    /// Destructive if any action is.
    pub class: ChangeClass,
    /// `sha256:<hex>` over the canonical JSON of `targets` and `class`.
    pub hash: String,
}

#[derive(Serialize)]
struct HashedContent<'a> {
    targets: &'a [Target],
    class: ChangeClass,
}

impl Plan {
    /// A plan of these targets: destructive if any action is, hashed over its content.
    pub fn from_targets(targets: Vec<Target>) -> Plan {
        let class = if targets
            .iter()
            .flat_map(|t| &t.actions)
            .any(|a| a.class == ChangeClass::Destructive)
        {
            ChangeClass::Destructive
        } else {
            ChangeClass::Additive
        };
        let mut plan = Plan {
            targets,
            class,
            hash: String::new(),
        };
        plan.hash = plan.hash();
        plan
    }

    /// `sha256:<hex>` over the canonical JSON of the plan's content (targets and class, not
    /// the stored hash). Field order is fixed by the types, targets are sorted by name, so
    /// the same plan always hashes the same.
    pub fn hash(&self) -> String {
        let content = HashedContent {
            targets: &self.targets,
            class: self.class,
        };
        let bytes = serde_json::to_vec(&content).unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
    }

    /// The stored hash matches the content (the plan was not edited after it was made).
    pub fn verify(&self) -> bool {
        self.hash == self.hash()
    }

    /// Every refusal, with the target it belongs to.
    pub fn refusals(&self) -> Vec<(&Target, &Refusal)> {
        self.targets
            .iter()
            .flat_map(|t| t.refusals.iter().map(move |r| (t, r)))
            .collect()
    }

    /// Refused if any target is.
    pub fn is_refused(&self) -> bool {
        self.targets.iter().any(|t| !t.refusals.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan as the agent sends it, spelled out: the spelling of every field and enum
    /// value is the wire contract kctl and scripts read, and the hash depends on it.
    const WIRE: &str = r#"{"targets":[{"name":"data0","device":"/dev/disk/by-id/ata-X","identity":{"kname":"sdb","path":"/dev/sdb","by_id":["/dev/disk/by-id/ata-X"],"serial":"X","size":1073741824},"actions":[{"kind":"new-disk","class":"additive","detail":"GPT: data ext4 on /data"}],"refusals":[]},{"name":"data1","device":"/dev/sdc","identity":null,"actions":[{"kind":"remove","class":"destructive","detail":"gone"}],"refusals":[{"code":"TARGET_NOT_FOUND","message":"/dev/sdc is not in the device snapshot"}]}],"class":"destructive","hash":"HASH"}"#;

    fn sample() -> Plan {
        Plan::from_targets(vec![
            Target {
                name: "data0".into(),
                device: "/dev/disk/by-id/ata-X".into(),
                identity: Some(Identity {
                    kname: "sdb".into(),
                    path: "/dev/sdb".into(),
                    by_id: vec!["/dev/disk/by-id/ata-X".into()],
                    serial: Some("X".into()),
                    size: 1 << 30,
                }),
                actions: vec![Action {
                    kind: ActionKind::NewDisk,
                    class: ChangeClass::Additive,
                    detail: "GPT: data ext4 on /data".into(),
                }],
                refusals: vec![],
            },
            Target {
                name: "data1".into(),
                device: "/dev/sdc".into(),
                identity: None,
                actions: vec![Action {
                    kind: ActionKind::Remove,
                    class: ChangeClass::Destructive,
                    detail: "gone".into(),
                }],
                refusals: vec![Refusal {
                    code: RefusalCode::TargetNotFound,
                    message: "/dev/sdc is not in the device snapshot".into(),
                }],
            },
        ])
    }

    #[test]
    fn the_plan_round_trips_through_its_wire_json() {
        let plan = sample();
        assert_eq!(plan.class, ChangeClass::Destructive);
        assert!(plan.is_refused());
        let wire = WIRE.replace("HASH", &plan.hash);
        assert_eq!(serde_json::to_string(&plan).unwrap(), wire);
        let back: Plan = serde_json::from_str(&wire).unwrap();
        assert_eq!(back, plan);
        assert!(back.verify(), "the hash survives the trip");
        // The hash is over the content: an edited plan no longer verifies.
        let edited: Plan = serde_json::from_str(&wire.replace("\"gone\"", "\"kept\"")).unwrap();
        assert!(!edited.verify());
    }

    #[test]
    fn a_plan_with_only_additive_actions_is_additive() {
        let mut plan = sample();
        plan.targets.truncate(1);
        let plan = Plan::from_targets(plan.targets);
        assert_eq!(plan.class, ChangeClass::Additive);
        assert!(!plan.is_refused());
    }

    /// `as_str` (what tables print) and serde (the wire) spell every value the same way.
    #[test]
    fn kinds_and_classes_print_as_the_wire_spells_them() {
        use strum::IntoEnumIterator;
        for kind in ActionKind::iter() {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        for class in ChangeClass::iter() {
            assert_eq!(serde_json::to_value(class).unwrap(), class.to_string());
        }
        assert_eq!(ActionKind::NewPartition.as_str(), "new-partition");
    }

    #[test]
    fn refusal_codes_are_the_stable_error_codes() {
        assert_eq!(RefusalCode::TargetHasHolders.as_str(), "TARGET_HAS_HOLDERS");
        assert_eq!(
            serde_json::to_value(RefusalCode::TargetIsOsDisk).unwrap(),
            "TARGET_IS_OS_DISK"
        );
    }
}
