//! `node disks`: block devices with their stable by-id path and an in-use verdict (mounted,
//! swap, held by dm/md/LUKS/LVM, a ZFS/LVM/RAID member, or carrying a partition table or
//! filesystem) with the reason.
//!
//! The device facts come from kcore-disko's [`BlockSnapshot`] (lsblk, `/proc/swaps`,
//! holders, `/dev/disk/by-*` links), the same snapshot a disk plan is made against, so
//! `node disks` and `apply-disko` never disagree about what a device is.

use kcore_api::inventory::Disk;
use kcore_disko::BlockSnapshot;
use kcore_disko::snapshot::BlockDevice;

/// Turn a snapshot into the inventory tree.
pub fn from_snapshot(snapshot: &BlockSnapshot) -> Vec<Disk> {
    snapshot
        .lsblk
        .blockdevices
        .iter()
        .map(|dev| convert(dev, snapshot))
        .collect()
}

fn convert(dev: &BlockDevice, snapshot: &BlockSnapshot) -> Disk {
    let children: Vec<Disk> = dev.children.iter().map(|c| convert(c, snapshot)).collect();
    let trim = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let by_id = snapshot
        .links_to(&dev.path)
        .into_iter()
        .filter(|l| l.starts_with("/dev/disk/by-id/"))
        .min_by_key(|l| (by_id_rank(l), l.len(), l.clone()));
    let partlabel = snapshot.links_to(&dev.path).into_iter().find_map(|l| {
        l.strip_prefix("/dev/disk/by-partlabel/")
            .map(str::to_string)
    });
    let reasons = in_use_reasons(dev, &children, snapshot);
    Disk {
        name: dev.name.clone(),
        path: dev.path.clone(),
        by_id,
        model: trim(&dev.model),
        serial: trim(&dev.serial),
        size_bytes: dev.size,
        kind: dev.kind.clone(),
        fstype: trim(&dev.fstype),
        partlabel,
        mountpoints: dev.mountpoints.clone(),
        in_use: !reasons.is_empty(),
        in_use_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        children,
    }
}

/// Prefer the descriptive by-id name (`ata-…`, `nvme-…`, `virtio-…`) over `wwn-`/`eui.`.
fn by_id_rank(link: &str) -> u8 {
    let name = link.rsplit('/').next().unwrap_or(link);
    u8::from(name.starts_with("wwn-") || name.starts_with("nvme-eui."))
}

/// Why a device must not be the target of a destructive apply; a device is in use when
/// it or anything below it is.
fn in_use_reasons(dev: &BlockDevice, children: &[Disk], snapshot: &BlockSnapshot) -> Vec<String> {
    let mut reasons = Vec::new();
    for mp in &dev.mountpoints {
        if mp == "[SWAP]" {
            reasons.push("active swap".to_string());
        } else {
            reasons.push(format!("mounted at {mp}"));
        }
    }
    let swap = snapshot
        .swaps
        .iter()
        .any(|s| snapshot.canonical_path(s) == dev.path);
    if swap && !dev.mountpoints.iter().any(|m| m == "[SWAP]") {
        reasons.push("active swap".to_string());
    }
    if let Some(holders) = snapshot.holders.get(&dev.kname).filter(|h| !h.is_empty()) {
        reasons.push(format!("held by {}", holders.join(", ")));
    }
    match dev.fstype.as_deref() {
        Some("zfs_member") => reasons.push("ZFS pool member".into()),
        Some("LVM2_member") => reasons.push("LVM physical volume".into()),
        Some("crypto_LUKS") => reasons.push("LUKS container".into()),
        Some("linux_raid_member") => reasons.push("md RAID member".into()),
        Some(fs) if reasons.is_empty() => reasons.push(format!("{fs} filesystem")),
        _ => {}
    }
    if let Some(pt) = &dev.pttype {
        if dev.kind == "disk" {
            reasons.push(format!("{pt} partition table"));
        }
    }
    let busy: Vec<&str> = children
        .iter()
        .filter(|c| c.in_use)
        .map(|c| c.name.as_str())
        .collect();
    if !busy.is_empty() {
        reasons.push(format!("in use below: {}", busy.join(", ")));
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn fixture_snapshot() -> BlockSnapshot {
        BlockSnapshot {
            lsblk: serde_json::from_str(include_str!("../../tests/fixtures/lsblk.json")).unwrap(),
            swaps: vec!["/dev/disk/by-partlabel/disk-os-swap".into()],
            holders: [("sda2".to_string(), vec!["dm-0".to_string()])].into(),
            links: [
                ("/dev/disk/by-id/ata-QEMU_HARDDISK_QM00002", "/dev/sdb"),
                ("/dev/disk/by-id/wwn-0x5000c500a0b1c2d3", "/dev/sdb"),
                ("/dev/disk/by-partlabel/disk-os-swap", "/dev/sda3"),
                ("/dev/disk/by-partlabel/disk-os-ESP", "/dev/sda1"),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
            live: false,
        }
    }

    #[test]
    fn fixture_devices_with_reasons() {
        let disks = from_snapshot(&fixture_snapshot());
        let sda = disks.iter().find(|d| d.name == "sda").unwrap();
        assert_eq!(sda.size_bytes, 21474836480);
        assert_eq!(sda.serial.as_deref(), Some("QM00001"));
        assert_eq!(sda.model.as_deref(), Some("QEMU HARDDISK"));
        let reason = sda.in_use_reason.as_deref().unwrap();
        assert!(reason.contains("gpt partition table"), "{reason}");
        assert!(
            reason.contains("in use below: sda1, sda2, sda3"),
            "{reason}"
        );
        let sda1 = &sda.children[0];
        assert_eq!(sda1.mountpoints, vec!["/boot".to_string()]);
        assert_eq!(sda1.in_use_reason.as_deref(), Some("mounted at /boot"));
        assert_eq!(sda1.partlabel.as_deref(), Some("disk-os-ESP"));
        let sda2 = &sda.children[1];
        let r2 = sda2.in_use_reason.as_deref().unwrap();
        assert!(r2.contains("held by dm-0") && r2.contains("LUKS"), "{r2}");
        assert_eq!(sda2.children[0].kind, "crypt");
        assert!(
            sda2.children[0]
                .in_use_reason
                .as_deref()
                .unwrap()
                .contains("mounted at /")
        );
        let sda3 = &sda.children[2];
        assert_eq!(sda3.in_use_reason.as_deref(), Some("active swap"));

        let sdb = disks.iter().find(|d| d.name == "sdb").unwrap();
        assert!(!sdb.in_use, "{:?}", sdb.in_use_reason);
        assert_eq!(
            sdb.by_id.as_deref(),
            Some("/dev/disk/by-id/ata-QEMU_HARDDISK_QM00002"),
            "the descriptive name wins over wwn-"
        );
        let sdc = disks.iter().find(|d| d.name == "sdc").unwrap();
        assert_eq!(sdc.in_use_reason.as_deref(), Some("ZFS pool member"));
    }

    #[test]
    fn swap_listed_only_in_proc_swaps_counts() {
        let mut snap = fixture_snapshot();
        snap.swaps = vec!["/dev/sdb".into()];
        let disks = from_snapshot(&snap);
        let sdb = disks.iter().find(|d| d.name == "sdb").unwrap();
        assert_eq!(sdb.in_use_reason.as_deref(), Some("active swap"));
    }
}
