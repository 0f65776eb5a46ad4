//! `node disks`: block devices with their stable by-id path and an in-use verdict with the
//! reason.
//!
//! The device facts come from kcore-disko's [`BlockSnapshot`] (lsblk, `/proc/swaps`,
//! holders, `/dev/disk/by-*` links), the same snapshot a disk plan is made against, and the
//! verdict is the plan's own ([`in_use_refusals`]), so `node disks` and `apply-disko` never
//! disagree about what a device is or whether it is in use.

use kcore_api::inventory::Disk;
use kcore_disko::BlockSnapshot;
use kcore_disko::plan::in_use_refusals;
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
    // A partition table is only the device's own on a whole disk: lsblk repeats it on every
    // partition.
    let reasons: Vec<String> = in_use_refusals(dev, snapshot, dev.kind == "disk")
        .into_iter()
        .map(|r| r.message)
        .collect();
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
        // What is in use below the disk is named, as the disk plan names it.
        for below in [
            "holds the running system",
            "/dev/sda1 is mounted on /boot",
            "/dev/sda2 is held by dm-0",
            "/dev/sda3 is active swap",
        ] {
            assert!(reason.contains(below), "{reason}");
        }
        let sda1 = &sda.children[0];
        assert_eq!(sda1.mountpoints, vec!["/boot".to_string()]);
        let r1 = sda1.in_use_reason.as_deref().unwrap();
        assert!(r1.contains("mounted on /boot"), "{r1}");
        // lsblk repeats the disk's partition table on each partition; it is not theirs.
        assert!(!r1.contains("partition table"), "{r1}");
        assert_eq!(sda1.partlabel.as_deref(), Some("disk-os-ESP"));
        let sda2 = &sda.children[1];
        let r2 = sda2.in_use_reason.as_deref().unwrap();
        assert!(r2.contains("held by dm-0"), "{r2}");
        assert_eq!(sda2.children[0].kind, "crypt");
        assert!(
            sda2.children[0]
                .in_use_reason
                .as_deref()
                .unwrap()
                .contains("mounted on /")
        );
        let sda3 = &sda.children[2];
        assert_eq!(
            sda3.in_use_reason.as_deref(),
            Some("/dev/sda3 is active swap: swapoff it first")
        );

        let sdb = disks.iter().find(|d| d.name == "sdb").unwrap();
        assert!(!sdb.in_use, "{:?}", sdb.in_use_reason);
        assert_eq!(
            sdb.by_id.as_deref(),
            Some("/dev/disk/by-id/ata-QEMU_HARDDISK_QM00002"),
            "the descriptive name wins over wwn-"
        );
        let sdc = disks.iter().find(|d| d.name == "sdc").unwrap();
        let rc = sdc.in_use_reason.as_deref().unwrap();
        assert!(rc.contains("ZFS pool member"), "{rc}");
    }

    #[test]
    fn swap_listed_only_in_proc_swaps_counts() {
        let mut snap = fixture_snapshot();
        snap.swaps = vec!["/dev/sdb".into()];
        let disks = from_snapshot(&snap);
        let sdb = disks.iter().find(|d| d.name == "sdb").unwrap();
        assert_eq!(
            sdb.in_use_reason.as_deref(),
            Some("/dev/sdb is active swap: swapoff it first")
        );
    }
}
