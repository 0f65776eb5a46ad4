//! Tables of what one node's agent reports: block devices (`kctl node disks`), network
//! interfaces (`nics`) and the storage backend (`storage`).

use kcore_api::inventory::{Disk, DiskInventory, NicInventory, StorageView};
use serde::Serialize;

use super::{human_bytes, or_dash};
use crate::output::Tabular;

#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct DisksOut(pub DiskInventory);

fn disk_rows(disk: &Disk, depth: usize, wide: bool, rows: &mut Vec<Vec<String>>) {
    let indent = if depth == 0 {
        String::new()
    } else {
        format!("{}└─", "  ".repeat(depth - 1))
    };
    let mut row = vec![
        format!("{indent}{}", disk.name),
        disk.kind.clone(),
        human_bytes(disk.size_bytes),
        or_dash(disk.fstype.as_deref()),
        if disk.mountpoints.is_empty() {
            "-".into()
        } else {
            disk.mountpoints.join(",")
        },
        if disk.in_use {
            format!("yes: {}", disk.in_use_reason.as_deref().unwrap_or(""))
        } else {
            "no".into()
        },
    ];
    if wide {
        row.extend([
            disk.path.clone(),
            or_dash(disk.by_id.as_deref()),
            or_dash(disk.model.as_deref()),
            or_dash(disk.serial.as_deref()),
        ]);
    }
    rows.push(row);
    for child in &disk.children {
        disk_rows(child, depth + 1, wide, rows);
    }
}

impl Tabular for DisksOut {
    fn headers(&self, wide: bool) -> Vec<String> {
        let mut h: Vec<String> = ["NAME", "TYPE", "SIZE", "FSTYPE", "MOUNTPOINTS", "IN USE"]
            .map(String::from)
            .to_vec();
        if wide {
            h.extend(["PATH", "BY-ID", "MODEL", "SERIAL"].map(String::from));
        }
        h
    }

    fn rows(&self, wide: bool) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        for disk in &self.0.disks {
            disk_rows(disk, 0, wide, &mut rows);
        }
        rows
    }
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct NicsOut(pub NicInventory);

impl Tabular for NicsOut {
    fn headers(&self, wide: bool) -> Vec<String> {
        let mut h: Vec<String> = ["NAME", "STATE", "MAC", "SPEED", "ADDRESSES"]
            .map(String::from)
            .to_vec();
        if wide {
            h.push("MTU".into());
        }
        h
    }

    fn rows(&self, wide: bool) -> Vec<Vec<String>> {
        self.0
            .nics
            .iter()
            .map(|n| {
                let mut row = vec![
                    n.name.clone(),
                    n.state.clone(),
                    or_dash(n.mac.as_deref()),
                    n.speed_mbps
                        .map_or_else(|| "-".to_string(), |s| format!("{s} Mb/s")),
                    if n.addresses.is_empty() {
                        "-".into()
                    } else {
                        n.addresses.join(",")
                    },
                ];
                if wide {
                    row.push(n.mtu.map_or_else(|| "-".into(), |m| m.to_string()));
                }
                row
            })
            .collect()
    }
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct StorageOut(pub StorageView);

impl Tabular for StorageOut {
    fn headers(&self, _wide: bool) -> Vec<String> {
        ["KIND", "NAME", "SIZE", "DETAIL"]
            .map(String::from)
            .to_vec()
    }

    fn rows(&self, _wide: bool) -> Vec<Vec<String>> {
        let v = &self.0;
        let mut rows = vec![vec![
            "backend".into(),
            v.backend.clone(),
            "-".into(),
            "-".into(),
        ]];
        if let Some(lvm) = &v.lvm {
            for vg in &lvm.volume_groups {
                let mark = if vg.name == lvm.vg_name {
                    " (kcore)"
                } else {
                    ""
                };
                rows.push(vec![
                    "vg".into(),
                    format!("{}{mark}", vg.name),
                    human_bytes(vg.size_bytes),
                    format!(
                        "free {}, {} PV, {} LV",
                        human_bytes(vg.free_bytes),
                        vg.pv_count,
                        vg.lv_count
                    ),
                ]);
            }
            for lv in &lvm.logical_volumes {
                let mut detail = format!("attr {}", lv.attr);
                if let Some(pool) = &lv.pool {
                    detail.push_str(&format!(", pool {pool}"));
                }
                if let Some(p) = &lv.data_percent {
                    detail.push_str(&format!(", data {p}%"));
                }
                rows.push(vec![
                    "lv".into(),
                    format!("{}/{}", lv.vg_name, lv.name),
                    human_bytes(lv.size_bytes),
                    detail,
                ]);
            }
        }
        if let Some(zfs) = &v.zfs {
            for pool in &zfs.pools {
                rows.push(vec![
                    "zpool".into(),
                    pool.name.clone(),
                    human_bytes(pool.size_bytes),
                    format!("{}, free {}", pool.health, human_bytes(pool.free_bytes)),
                ]);
            }
            for ds in &zfs.datasets {
                rows.push(vec![
                    "dataset".into(),
                    ds.name.clone(),
                    human_bytes(ds.used_bytes),
                    format!(
                        "avail {}, mounted {}",
                        human_bytes(ds.available_bytes),
                        ds.mountpoint.as_deref().unwrap_or("-")
                    ),
                ]);
            }
        }
        for m in &v.mounts {
            rows.push(vec![
                "mount".into(),
                m.target.clone(),
                "-".into(),
                format!("{} ({})", m.source, m.fstype),
            ]);
        }
        rows
    }
}
