//! The LVM changes provision-disk makes (the thin pool for VM volumes on a data disk), one
//! variant per command, with the program it runs and its `argv()`. The reads go through
//! [`crate::queries::LvmReport`].
//!
//! Flags as lvm2's man pages give them: `vgchange -a y|n VG` (`-ay`/`-an`), `lvremove -y VG`
//! (every LV of the VG), `vgremove -y`, `pvremove -y`, `pvcreate -y`, `vgcreate VG PV`,
//! `lvcreate --type thin-pool -l 100%FREE -n NAME VG`, `lvcreate -V SIZE --thinpool VG/POOL
//! -n NAME` (a thin volume), `lvextend -l +100%FREE VG/LV`, `pvresize PV`; for VM volumes
//! `lvcreate -y -L SIZE -n NAME VG` (linear), `lvremove -y VG/LV` (exactly one LV),
//! `lvextend -L SIZE VG/LV`; sizes in bytes with lvm's `b` unit (`lvm(8)`, "UNITS").

use std::ffi::OsString;

use crate::Tool;
use crate::programs::{
    LVCREATE, LVEXTEND, LVREMOVE, PVCREATE, PVREMOVE, PVRESIZE, VGCHANGE, VGCREATE, VGREMOVE,
};

/// One LVM change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LvmChange {
    /// `vgchange -ay VG` (`active`) or `vgchange -an VG`.
    Activate { vg: String, active: bool },
    /// `lvremove -y VG`: every logical volume of the group.
    RemoveVolumes { vg: String },
    /// `vgremove -y VG`.
    RemoveGroup { vg: String },
    /// `pvremove -y PV`.
    RemovePhysical { device: String },
    /// `pvcreate -y PV`.
    CreatePhysical { device: String },
    /// `pvresize PV`: take a grown disk's new size.
    ResizePhysical { device: String },
    /// `vgcreate VG PV`.
    CreateGroup { vg: String, device: String },
    /// `lvcreate -y --type thin-pool -l 100%FREE -n NAME VG`.
    CreateThinPool { vg: String, name: String },
    /// `lvcreate -y -V SIZE --thinpool VG/POOL -n NAME`.
    CreateThinVolume {
        pool: String,
        name: String,
        size: String,
    },
    /// `lvextend -l +100%FREE VG/LV`.
    ExtendToFree { lv: String },
    /// `lvcreate -y -V BYTESb --thinpool VG/POOL -n NAME`: a VM's thin volume.
    CreateThinVolumeBytes {
        pool: String,
        name: String,
        size_bytes: u64,
    },
    /// `lvcreate -y -L BYTESb -n NAME VG`: a VM's linear volume (a VG without a thin pool).
    CreateLinearVolume {
        vg: String,
        name: String,
        size_bytes: u64,
    },
    /// `lvremove -y VG/LV`: exactly this one logical volume.
    RemoveVolume { lv: String },
    /// `lvextend -L BYTESb VG/LV`: grow to this size.
    ExtendTo { lv: String, size_bytes: u64 },
}

impl LvmChange {
    /// The program this change runs.
    pub fn tool(&self) -> Tool {
        match self {
            LvmChange::Activate { .. } => VGCHANGE,
            LvmChange::RemoveVolumes { .. } => LVREMOVE,
            LvmChange::RemoveGroup { .. } => VGREMOVE,
            LvmChange::RemovePhysical { .. } => PVREMOVE,
            LvmChange::CreatePhysical { .. } => PVCREATE,
            LvmChange::ResizePhysical { .. } => PVRESIZE,
            LvmChange::CreateGroup { .. } => VGCREATE,
            LvmChange::CreateThinPool { .. }
            | LvmChange::CreateThinVolume { .. }
            | LvmChange::CreateThinVolumeBytes { .. }
            | LvmChange::CreateLinearVolume { .. } => LVCREATE,
            LvmChange::RemoveVolume { .. } => LVREMOVE,
            LvmChange::ExtendToFree { .. } | LvmChange::ExtendTo { .. } => LVEXTEND,
        }
    }

    pub fn argv(&self) -> Vec<OsString> {
        let v = |items: &[&str]| items.iter().map(OsString::from).collect::<Vec<_>>();
        match self {
            LvmChange::Activate { vg, active } => v(&[if *active { "-ay" } else { "-an" }, vg]),
            LvmChange::RemoveVolumes { vg } | LvmChange::RemoveGroup { vg } => v(&["-y", vg]),
            LvmChange::RemovePhysical { device } | LvmChange::CreatePhysical { device } => {
                v(&["-y", device])
            }
            LvmChange::ResizePhysical { device } => v(&[device]),
            LvmChange::CreateGroup { vg, device } => v(&[vg, device]),
            LvmChange::CreateThinPool { vg, name } => v(&[
                "-y",
                "--type",
                "thin-pool",
                "-l",
                "100%FREE",
                "-n",
                name,
                vg,
            ]),
            LvmChange::CreateThinVolume { pool, name, size } => {
                v(&["-y", "-V", size, "--thinpool", pool, "-n", name])
            }
            LvmChange::ExtendToFree { lv } => v(&["-l", "+100%FREE", lv]),
            LvmChange::CreateThinVolumeBytes {
                pool,
                name,
                size_bytes,
            } => v(&[
                "-y",
                "-V",
                &format!("{size_bytes}b"),
                "--thinpool",
                pool,
                "-n",
                name,
            ]),
            LvmChange::CreateLinearVolume {
                vg,
                name,
                size_bytes,
            } => v(&["-y", "-L", &format!("{size_bytes}b"), "-n", name, vg]),
            LvmChange::RemoveVolume { lv } => v(&["-y", lv]),
            LvmChange::ExtendTo { lv, size_bytes } => v(&["-L", &format!("{size_bytes}b"), lv]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(change: LvmChange) -> String {
        let argv: Vec<String> = change
            .argv()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        format!("{} {}", change.tool().name, argv.join(" "))
    }

    #[test]
    fn each_change_runs_its_program_with_its_flags() {
        let s = String::from;
        for (change, expected) in [
            (
                LvmChange::Activate {
                    vg: s("vg0"),
                    active: true,
                },
                "vgchange -ay vg0",
            ),
            (
                LvmChange::Activate {
                    vg: s("vg0"),
                    active: false,
                },
                "vgchange -an vg0",
            ),
            (LvmChange::RemoveVolumes { vg: s("vg0") }, "lvremove -y vg0"),
            (LvmChange::RemoveGroup { vg: s("vg0") }, "vgremove -y vg0"),
            (
                LvmChange::RemovePhysical {
                    device: s("/dev/sdb1"),
                },
                "pvremove -y /dev/sdb1",
            ),
            (
                LvmChange::CreatePhysical {
                    device: s("/dev/sdb1"),
                },
                "pvcreate -y /dev/sdb1",
            ),
            (
                LvmChange::ResizePhysical {
                    device: s("/dev/sdb1"),
                },
                "pvresize /dev/sdb1",
            ),
            (
                LvmChange::CreateGroup {
                    vg: s("vg0"),
                    device: s("/dev/sdb1"),
                },
                "vgcreate vg0 /dev/sdb1",
            ),
            (
                LvmChange::CreateThinPool {
                    vg: s("vg0"),
                    name: s("pool"),
                },
                "lvcreate -y --type thin-pool -l 100%FREE -n pool vg0",
            ),
            (
                LvmChange::CreateThinVolume {
                    pool: s("vg0/pool"),
                    name: s("kcore-meta"),
                    size: s("4m"),
                },
                "lvcreate -y -V 4m --thinpool vg0/pool -n kcore-meta",
            ),
            (
                LvmChange::ExtendToFree { lv: s("vg0/pool") },
                "lvextend -l +100%FREE vg0/pool",
            ),
            (
                LvmChange::CreateThinVolumeBytes {
                    pool: s("vg0/pool"),
                    name: s("kcore-vm1"),
                    size_bytes: 1 << 30,
                },
                "lvcreate -y -V 1073741824b --thinpool vg0/pool -n kcore-vm1",
            ),
            (
                LvmChange::CreateLinearVolume {
                    vg: s("vg0"),
                    name: s("kcore-vm1"),
                    size_bytes: 1 << 30,
                },
                "lvcreate -y -L 1073741824b -n kcore-vm1 vg0",
            ),
            (
                LvmChange::RemoveVolume {
                    lv: s("vg0/kcore-vm1"),
                },
                "lvremove -y vg0/kcore-vm1",
            ),
            (
                LvmChange::ExtendTo {
                    lv: s("vg0/kcore-vm1"),
                    size_bytes: 2 << 30,
                },
                "lvextend -L 2147483648b vg0/kcore-vm1",
            ),
        ] {
            assert_eq!(line(change), expected);
        }
    }
}
