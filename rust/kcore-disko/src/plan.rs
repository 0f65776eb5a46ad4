//! What applying a fragment would do to the block devices that are really there.
//!
//! Given the new device tree, optionally the current one (what the node was installed or last
//! applied with), and a [`BlockSnapshot`], the plan lists per target disk its canonical
//! identity and its actions, classifies each action as additive or destructive, and refuses
//! targets that are in use with a stable [`RefusalCode`]. The plan is serde-serializable and
//! carries a SHA-256 over its canonical JSON ([`Plan::hash`]): the node agent returns it from a
//! dry run and an apply must present the same hash.
//!
//! Rules:
//! - a disk unchanged from the current tree is `keep` (nothing is checked but its presence);
//! - a disk new to the tree is `new-disk` (partition table and formats): additive only on a
//!   blank device, every in-use or data-carrying condition is a refusal;
//! - a changed disk is compared partition by partition: a partition added after the existing
//!   ones is `new-partition` (additive, if the existing ones leave free space), a changed
//!   size is `resize`, a changed content is `format`, a dropped partition is `remove`
//!   (all destructive);
//! - a disk dropped from the tree is `remove` (destructive).

use std::collections::BTreeSet;

use crate::model::{Content, DeviceTree, Disk, Partition};
use crate::snapshot::{BlockDevice, BlockSnapshot};

/// The plan types live in kcore-api so the plan is typed on the wire (the agent sends it,
/// kctl decodes it); these paths keep working for the planner's callers.
pub use kcore_api::plan::{
    Action, ActionKind, ChangeClass, Identity, Plan, Refusal, RefusalCode, Target,
};

/// Building a [`Plan`] needs the device tree and the snapshot, which kcore-api (no I/O,
/// no disko model) does not know; a trait keeps the `Plan::build(..)` spelling. Bring it
/// into scope with `use kcore_disko::plan::BuildPlan` (or `kcore_disko::BuildPlan`).
pub trait BuildPlan {
    /// Build the plan for applying `new` over `current` on the devices in `snapshot`.
    fn build(new: &DeviceTree, current: Option<&DeviceTree>, snapshot: &BlockSnapshot) -> Plan;
}

impl BuildPlan for Plan {
    fn build(new: &DeviceTree, current: Option<&DeviceTree>, snapshot: &BlockSnapshot) -> Plan {
        let mut names: BTreeSet<&String> = new.disk.keys().collect();
        if let Some(cur) = current {
            names.extend(cur.disk.keys());
        }
        let mut targets: Vec<Target> = names
            .into_iter()
            .map(|name| {
                let new_disk = new.disk.get(name);
                let cur_disk = current.and_then(|c| c.disk.get(name));
                plan_disk(name, new_disk, cur_disk, snapshot)
            })
            .collect();
        mark_ambiguous(&mut targets, snapshot);
        Plan::from_targets(targets)
    }
}

fn identity(dev: &BlockDevice, snapshot: &BlockSnapshot) -> Identity {
    Identity {
        kname: dev.kname.clone(),
        path: dev.path.clone(),
        by_id: snapshot
            .links_to(&dev.path)
            .into_iter()
            .filter(|l| l.starts_with("/dev/disk/by-id/"))
            .collect(),
        serial: dev.serial.clone(),
        size: dev.size,
    }
}

fn action(kind: ActionKind, class: ChangeClass, detail: impl Into<String>) -> Action {
    Action {
        kind,
        class,
        detail: detail.into(),
    }
}

fn plan_disk(
    name: &str,
    new: Option<&Disk>,
    cur: Option<&Disk>,
    snapshot: &BlockSnapshot,
) -> Target {
    let device = new.or(cur).map(|d| d.device.clone()).unwrap_or_default();
    let dev = snapshot.resolve(&device);
    let mut target = Target {
        name: name.to_string(),
        device: device.clone(),
        identity: dev.map(|d| identity(d, snapshot)),
        actions: Vec::new(),
        refusals: Vec::new(),
    };
    let not_found = || Refusal {
        code: RefusalCode::TargetNotFound,
        message: format!(
            "{device} is not in the device snapshot: check the path (by-id names are listed by `ls -l /dev/disk/by-id`)"
        ),
    };
    match (new, cur) {
        (Some(n), Some(c)) if n == c => {
            target
                .actions
                .push(action(ActionKind::Keep, ChangeClass::Additive, "unchanged"));
            if dev.is_none() {
                target.refusals.push(not_found());
            }
        }
        (Some(n), None) => {
            let what = n
                .content
                .as_ref()
                .map_or("left untouched".to_string(), Content::describe);
            target
                .actions
                .push(action(ActionKind::NewDisk, ChangeClass::Additive, what));
            match dev {
                None => target.refusals.push(not_found()),
                Some(d) => target.refusals = in_use_refusals(d, snapshot, true),
            }
        }
        (None, Some(_)) => {
            target.actions.push(action(
                ActionKind::Remove,
                ChangeClass::Destructive,
                "the disk leaves the layout; its data is no longer managed",
            ));
        }
        (Some(n), Some(c)) => {
            target.actions = diff_disk(n, c);
            match dev {
                None => target.refusals.push(not_found()),
                Some(d) => {
                    if n.device != c.device {
                        // A different device under the same name is a whole new disk.
                        target.refusals = in_use_refusals(d, snapshot, true);
                    }
                }
            }
        }
        (None, None) => {}
    }
    target
}

/// Compare a changed disk partition by partition.
fn diff_disk(new: &Disk, cur: &Disk) -> Vec<Action> {
    use ActionKind::*;
    use ChangeClass::*;
    if new.device != cur.device {
        return vec![action(
            Format,
            Destructive,
            format!(
                "device changes from {} to {}: the new device is formatted",
                cur.device, new.device
            ),
        )];
    }
    let (np, cp) = match (&new.content, &cur.content) {
        (Some(Content::Gpt { partitions: np }), Some(Content::Gpt { partitions: cp })) => (np, cp),
        (n, _) => {
            let what = n.as_ref().map_or("nothing".to_string(), Content::describe);
            return vec![action(
                Format,
                Destructive,
                format!("the whole disk is rewritten as {what}"),
            )];
        }
    };
    let mut actions = Vec::new();
    let fills = |p: &Partition| p.size.as_deref() == Some("100%");
    let cur_full = cp.iter().any(fills);
    for c in cp {
        match np.iter().find(|p| p.name == c.name) {
            None => actions.push(action(
                Remove,
                Destructive,
                format!("partition {} is removed", c.name),
            )),
            Some(n) => {
                if n.size != c.size || n.start != c.start || n.end != c.end {
                    actions.push(action(
                        Resize,
                        Destructive,
                        format!(
                            "partition {} changes size from {} to {}",
                            c.name,
                            c.size.as_deref().unwrap_or("?"),
                            n.size.as_deref().unwrap_or("?")
                        ),
                    ));
                }
                if n.content != c.content || n.part_type != c.part_type {
                    let what = n
                        .content
                        .as_ref()
                        .map_or("nothing".to_string(), Content::describe);
                    actions.push(action(
                        Format,
                        Destructive,
                        format!("partition {} is reformatted as {what}", c.name),
                    ));
                }
            }
        }
    }
    // Space for new partitions must really be free, not freed by removing or shrinking others.
    let destroyed = actions.iter().any(|a| matches!(a.kind, Remove | Resize));
    for n in np.iter().filter(|n| !cp.iter().any(|c| c.name == n.name)) {
        let what = n
            .content
            .as_ref()
            .map_or("unformatted".to_string(), Content::describe);
        if destroyed {
            actions.push(action(
                NewPartition,
                Destructive,
                format!(
                    "partition {} ({what}) takes space freed by removing or resizing partitions",
                    n.name
                ),
            ));
        } else if cur_full {
            actions.push(action(
                NewPartition,
                Destructive,
                format!("partition {} ({what}) needs space an existing 100% partition holds: it would have to shrink", n.name),
            ));
        } else {
            actions.push(action(
                NewPartition,
                Additive,
                format!("partition {} ({what}) in free space", n.name),
            ));
        }
    }
    if actions.is_empty() {
        actions.push(action(Keep, Additive, "partitions unchanged"));
    }
    actions
}

/// Everything that makes `dev` unsafe to overwrite, one refusal per code, sorted by code:
/// it or anything below it holds the running system, is mounted, is active swap, is held
/// (dm, md, LUKS, LVM) or is a ZFS pool member. With `whole_disk` (the device itself would be
/// repartitioned) any partition table, partition or signature on it or below counts too.
///
/// The plan refuses a target with these; the agent's `node disks` shows the same verdict,
/// so the two never disagree about a device.
pub fn in_use_refusals(
    dev: &BlockDevice,
    snapshot: &BlockSnapshot,
    whole_disk: bool,
) -> Vec<Refusal> {
    let mut out = Vec::new();
    let all = dev.walk();
    let mut push = |code: RefusalCode, message: String| {
        if !out.iter().any(|r: &Refusal| r.code == code) {
            out.push(Refusal { code, message });
        }
    };
    for d in &all {
        for m in &d.mountpoints {
            if ["/", "/boot", "/nix", "/boot/efi"].contains(&m.as_str()) {
                push(
                    RefusalCode::TargetIsOsDisk,
                    format!("{} holds the running system ({} on {m})", dev.path, d.path),
                );
            }
        }
    }
    for d in &all {
        // Swap is listed as a mount point by lsblk; it gets its own refusal below.
        if let Some(m) = d.mountpoints.iter().find(|m| *m != "[SWAP]") {
            push(
                RefusalCode::TargetMounted,
                format!("{} is mounted on {m}: unmount it first", d.path),
            );
        }
    }
    let swap_paths: Vec<String> = snapshot
        .swaps
        .iter()
        .map(|s| snapshot.canonical_path(s))
        .collect();
    for d in &all {
        if swap_paths.contains(&d.path) || d.mountpoints.iter().any(|m| m == "[SWAP]") {
            push(
                RefusalCode::TargetSwap,
                format!("{} is active swap: swapoff it first", d.path),
            );
        }
    }
    for d in &all {
        let holders = snapshot.holders.get(&d.kname).filter(|h| !h.is_empty());
        let child_holders: Vec<&str> = d
            .children
            .iter()
            .filter(|c| c.kind != "part")
            .map(|c| c.kname.as_str())
            .collect();
        if let Some(h) = holders {
            push(
                RefusalCode::TargetHasHolders,
                format!(
                    "{} is held by {} (dm, md, LUKS or LVM): deactivate them first",
                    d.path,
                    h.join(", ")
                ),
            );
        } else if !child_holders.is_empty() {
            push(
                RefusalCode::TargetHasHolders,
                format!(
                    "{} is held by {}: deactivate them first",
                    d.path,
                    child_holders.join(", ")
                ),
            );
        }
    }
    for d in &all {
        if d.fstype.as_deref() == Some("zfs_member") {
            push(
                RefusalCode::TargetZfsMember,
                format!(
                    "{} is a ZFS pool member: destroy or export the pool first",
                    d.path
                ),
            );
        }
    }
    if whole_disk {
        if let Some(pt) = &dev.pttype {
            push(
                RefusalCode::TargetHasData,
                format!(
                    "{} has a {pt} partition table: wipe it deliberately (wipefs) if its data is not needed",
                    dev.path
                ),
            );
        }
        for d in &all {
            if let Some(fs) = &d.fstype {
                push(
                    RefusalCode::TargetHasData,
                    format!(
                        "{} carries a {fs} signature: wipe it deliberately (wipefs) if its data is not needed",
                        d.path
                    ),
                );
            }
        }
        if dev.pttype.is_none() && all.iter().any(|d| d.kind == "part") {
            push(
                RefusalCode::TargetHasData,
                format!(
                    "{} has partitions: wipe it deliberately if its data is not needed",
                    dev.path
                ),
            );
        }
    }
    out.sort_by_key(|r| r.code);
    out
}

/// The plan of a fresh install (kcore-agent's `POST /v1/install/plan`): every disk of the
/// layout is new and disko's `destroy,format,mount` wipes it whole, so data on a disk is
/// no refusal but a destructive `new-disk` action whose detail lists that content (the
/// operator confirms it); a disk in use (the running system, mounted, swap, held, a member
/// of an imported pool) stays refused, as does one that is missing or named twice.
pub fn build_install(new: &DeviceTree, snapshot: &BlockSnapshot) -> Plan {
    let mut plan = Plan::build(new, None, snapshot);
    for target in &mut plan.targets {
        let had_data = target
            .refusals
            .iter()
            .any(|r| r.code == RefusalCode::TargetHasData);
        target
            .refusals
            .retain(|r| r.code != RefusalCode::TargetHasData);
        if !had_data {
            continue;
        }
        let content = snapshot
            .resolve(&target.device)
            .map(disk_content)
            .unwrap_or_default();
        for a in &mut target.actions {
            if a.kind == ActionKind::NewDisk {
                a.class = ChangeClass::Destructive;
                a.detail = format!("{} (wipes: {})", a.detail, content.join(", "));
            }
        }
    }
    Plan::from_targets(plan.targets)
}

/// What a disk holds, in words, for the operator deciding whether it may be wiped: its
/// partition table, every partition, and every signature on it or below (`ext4
/// filesystem on /dev/sdb1`). Empty for a blank disk.
pub fn disk_content(dev: &BlockDevice) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(pt) = &dev.pttype {
        out.push(format!("{pt} partition table"));
    }
    for d in dev.walk() {
        if d.kind == "part" && d.fstype.is_none() {
            out.push(format!(
                "partition {} ({} bytes, no signature)",
                d.path, d.size
            ));
        }
        if let Some(fs) = &d.fstype {
            let what = match fs.as_str() {
                "LVM2_member" => "LVM physical volume".to_string(),
                "zfs_member" => "ZFS pool member".to_string(),
                "crypto_LUKS" => "LUKS container".to_string(),
                "swap" => "swap signature".to_string(),
                other => format!("{other} filesystem"),
            };
            out.push(format!("{what} on {}", d.path));
        }
    }
    out
}

/// Two targets on one device, or a device whose serial/WWN another disk shares.
fn mark_ambiguous(targets: &mut [Target], snapshot: &BlockSnapshot) {
    let knames: Vec<Option<String>> = targets
        .iter()
        .map(|t| t.identity.as_ref().map(|i| i.kname.clone()))
        .collect();
    let disks: Vec<&BlockDevice> = snapshot
        .lsblk
        .blockdevices
        .iter()
        .filter(|d| d.kind == "disk")
        .collect();
    for (i, t) in targets.iter_mut().enumerate() {
        let Some(id) = t.identity.clone() else {
            continue;
        };
        let others: Vec<&str> = targets_sharing(&knames, i);
        if !others.is_empty() {
            t.refusals.push(Refusal {
                code: RefusalCode::TargetAmbiguous,
                message: format!(
                    "{} resolves to {} like another target: name each disk once",
                    t.device, id.path
                ),
            });
        }
        let me = disks.iter().find(|d| d.kname == id.kname);
        if let Some(me) = me {
            let twin = disks.iter().find(|d| {
                d.kname != me.kname
                    && ((me.serial.is_some() && d.serial == me.serial)
                        || (me.wwn.is_some() && d.wwn == me.wwn))
            });
            if let Some(twin) = twin {
                t.refusals.push(Refusal {
                    code: RefusalCode::TargetAmbiguous,
                    message: format!(
                        "{} shares its serial/WWN with {} (multipath?): use a unique by-id path",
                        id.path, twin.path
                    ),
                });
            }
        }
        t.refusals.sort_by_key(|r| r.code);
        t.refusals.dedup_by_key(|r| r.code);
    }
}

fn targets_sharing(knames: &[Option<String>], i: usize) -> Vec<&str> {
    let Some(Some(me)) = knames.get(i) else {
        return Vec::new();
    };
    knames
        .iter()
        .enumerate()
        .filter(|(j, k)| *j != i && k.as_deref() == Some(me.as_str()))
        .map(|_| me.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(device: &str, parts: &[(&str, &str)]) -> Disk {
        Disk {
            device: device.into(),
            content: Some(Content::Gpt {
                partitions: parts
                    .iter()
                    .map(|(n, s)| Partition {
                        name: (*n).into(),
                        size: Some((*s).into()),
                        start: None,
                        end: None,
                        part_type: None,
                        content: Some(Content::Filesystem {
                            format: "ext4".into(),
                            mountpoint: None,
                        }),
                    })
                    .collect(),
            }),
        }
    }

    #[test]
    fn partition_diffs_are_classified() {
        let cur = disk("/dev/sda", &[("a", "1G")]);
        let add = diff_disk(&disk("/dev/sda", &[("a", "1G"), ("b", "1G")]), &cur);
        assert_eq!(
            (add.len(), add[0].kind, add[0].class),
            (1, ActionKind::NewPartition, ChangeClass::Additive)
        );
        let resize = diff_disk(&disk("/dev/sda", &[("a", "2G")]), &cur);
        assert_eq!(
            (resize[0].kind, resize[0].class),
            (ActionKind::Resize, ChangeClass::Destructive)
        );
        let remove = diff_disk(&disk("/dev/sda", &[]), &cur);
        assert_eq!(remove[0].kind, ActionKind::Remove);
        let full = diff_disk(
            &disk("/dev/sda", &[("a", "100%"), ("b", "1G")]),
            &disk("/dev/sda", &[("a", "100%")]),
        );
        assert_eq!(full[0].class, ChangeClass::Destructive);
    }

    fn snapshot_with(dev: serde_json::Value) -> BlockSnapshot {
        serde_json::from_value(serde_json::json!({
            "lsblk": { "blockdevices": [dev] },
            "links": { "/dev/disk/by-id/ata-A": "/dev/sdb" },
        }))
        .unwrap()
    }

    #[test]
    fn install_plans_wipe_data_and_refuse_what_is_in_use() {
        let tree = DeviceTree {
            disk: [(
                "os".to_string(),
                disk("/dev/disk/by-id/ata-A", &[("root", "100%")]),
            )]
            .into(),
            ..Default::default()
        };
        let data = snapshot_with(serde_json::json!({
            "name": "sdb", "kname": "sdb", "path": "/dev/sdb", "type": "disk", "size": 1000,
            "pttype": "gpt",
            "children": [{ "name": "sdb1", "kname": "sdb1", "path": "/dev/sdb1", "type": "part",
                           "size": 900, "fstype": "ext4" }],
        }));
        let plan = build_install(&tree, &data);
        assert!(!plan.is_refused(), "{plan:?}");
        assert_eq!(plan.class, ChangeClass::Destructive);
        let detail = &plan.targets[0].actions[0].detail;
        assert!(
            detail.contains("gpt partition table")
                && detail.contains("ext4 filesystem on /dev/sdb1"),
            "{detail}"
        );
        assert!(plan.verify());
        let mounted = snapshot_with(serde_json::json!({
            "name": "sdb", "kname": "sdb", "path": "/dev/sdb", "type": "disk", "size": 1000,
            "children": [{ "name": "sdb1", "kname": "sdb1", "path": "/dev/sdb1", "type": "part",
                           "size": 900, "fstype": "ext4", "mountpoints": ["/srv"] }],
        }));
        let plan = build_install(&tree, &mounted);
        let codes: Vec<RefusalCode> = plan.refusals().iter().map(|(_, r)| r.code).collect();
        assert_eq!(codes, [RefusalCode::TargetMounted]);
        let blank = snapshot_with(serde_json::json!({
            "name": "sdb", "kname": "sdb", "path": "/dev/sdb", "type": "disk", "size": 1000,
        }));
        let plan = build_install(&tree, &blank);
        assert_eq!(plan.class, ChangeClass::Additive);
        assert!(disk_content(blank.resolve("/dev/sdb").unwrap()).is_empty());
    }

    #[test]
    fn hash_covers_content() {
        let tree = DeviceTree::default();
        let mut plan = Plan::build(&tree, None, &BlockSnapshot::default());
        assert!(plan.verify());
        assert!(plan.hash.starts_with("sha256:") && plan.hash.len() == 71);
        plan.class = ChangeClass::Destructive;
        assert!(!plan.verify());
    }
}
