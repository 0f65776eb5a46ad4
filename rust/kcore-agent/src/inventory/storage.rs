//! The storage view behind `kctl describe node`: the configured backend, LVM volume groups
//! and logical volumes (`vgs`/`lvs --reportformat json`), ZFS pools and datasets
//! (`zpool list`, `zpool status`, `zfs list`), and what is mounted under `/var/lib/kcore`.

use kcore_api::inventory::{LogicalVolume, Mount, VolumeGroup, ZfsDataset, ZfsPool};
use serde::Deserialize;

use super::InventoryError;

/// Where kcore keeps volumes and images; mounts below it are reported.
pub const KCORE_STATE_ROOT: &str = "/var/lib/kcore";

#[derive(Debug, Deserialize)]
struct Report<T> {
    report: Vec<T>,
}

#[derive(Debug, Deserialize)]
struct VgSection {
    #[serde(default)]
    vg: Vec<VgRow>,
}

#[derive(Debug, Deserialize)]
struct LvSection {
    #[serde(default)]
    lv: Vec<LvRow>,
}

#[derive(Debug, Deserialize)]
struct VgRow {
    vg_name: String,
    vg_size: String,
    vg_free: String,
    pv_count: String,
    lv_count: String,
}

#[derive(Debug, Deserialize)]
struct LvRow {
    lv_name: String,
    vg_name: String,
    lv_size: String,
    lv_attr: String,
    #[serde(default)]
    pool_lv: String,
    #[serde(default)]
    data_percent: String,
}

fn parse_err(program: &str, message: impl Into<String>) -> InventoryError {
    InventoryError::Parse {
        program: program.into(),
        message: message.into(),
    }
}

/// LVM prints JSON numbers as strings, with a `B` suffix unless `--nosuffix`.
fn bytes(program: &str, field: &str, value: &str) -> Result<u64, InventoryError> {
    value
        .trim()
        .trim_end_matches(['B', 'b'])
        .parse()
        .map_err(|_| parse_err(program, format!("{field} {value:?} is not a byte count")))
}

fn count(program: &str, field: &str, value: &str) -> Result<u32, InventoryError> {
    value
        .trim()
        .parse()
        .map_err(|_| parse_err(program, format!("{field} {value:?} is not a count")))
}

pub fn parse_vgs(json: &str) -> Result<Vec<VolumeGroup>, InventoryError> {
    let report: Report<VgSection> =
        serde_json::from_str(json).map_err(|e| parse_err("vgs", e.to_string()))?;
    report
        .report
        .into_iter()
        .flat_map(|s| s.vg)
        .map(|row| {
            Ok(VolumeGroup {
                size_bytes: bytes("vgs", "vg_size", &row.vg_size)?,
                free_bytes: bytes("vgs", "vg_free", &row.vg_free)?,
                pv_count: count("vgs", "pv_count", &row.pv_count)?,
                lv_count: count("vgs", "lv_count", &row.lv_count)?,
                name: row.vg_name,
            })
        })
        .collect()
}

pub fn parse_lvs(json: &str) -> Result<Vec<LogicalVolume>, InventoryError> {
    let report: Report<LvSection> =
        serde_json::from_str(json).map_err(|e| parse_err("lvs", e.to_string()))?;
    report
        .report
        .into_iter()
        .flat_map(|s| s.lv)
        .map(|row| {
            let non_empty = |s: String| Some(s).filter(|v| !v.trim().is_empty());
            Ok(LogicalVolume {
                size_bytes: bytes("lvs", "lv_size", &row.lv_size)?,
                name: row.lv_name,
                vg_name: row.vg_name,
                attr: row.lv_attr,
                pool: non_empty(row.pool_lv),
                data_percent: non_empty(row.data_percent),
            })
        })
        .collect()
}

/// The thin pool new VM volumes of `vg` go into, from the LVs `lvs` reports (any VGs):
/// the `configured` one (`storage.lvm.thinPool`), else the VG's only thin pool, else none
/// (linear LVs). The error says what is wrong with the setting or the VG. One rule for the
/// volume code (where an LV is made) and the report (which free space the scheduler counts).
pub fn thin_pool_of<'a>(
    lvs: &'a [LogicalVolume],
    vg: &str,
    configured: Option<&str>,
) -> Result<Option<&'a LogicalVolume>, String> {
    // lvs(8) `lv_attr`: the first character is the volume type, `t` for a thin pool.
    let in_vg = || lvs.iter().filter(move |l| l.vg_name == vg);
    if let Some(pool) = configured {
        return match in_vg().find(|l| l.name == pool) {
            Some(l) if l.attr.starts_with('t') => Ok(Some(l)),
            Some(_) => Err(format!(
                "storage.lvm.thinPool: {vg}/{pool} is not a thin pool"
            )),
            None => Err(format!(
                "storage.lvm.thinPool: {vg} has no LV {pool}; create it or fix the setting"
            )),
        };
    }
    let pools: Vec<&LogicalVolume> = in_vg().filter(|l| l.attr.starts_with('t')).collect();
    match pools[..] {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(format!(
            "{vg} has several thin pools ({}): name one in storage.lvm.thinPool",
            pools
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A thin pool's free data space: its `lv_size` times `100 - data_percent` (lvs prints the
/// pool's data usage as a percent with two decimals, e.g. `"12.50"`). `None` when lvs gave
/// no usable percent.
pub fn thin_pool_free_bytes(pool: &LogicalVolume) -> Option<u64> {
    let used: f64 = pool.data_percent.as_deref()?.trim().parse().ok()?;
    if !(0.0..=100.0).contains(&used) {
        return None;
    }
    // Rounded down: never more than the pool has.
    Some((pool.size_bytes as f64 * (100.0 - used) / 100.0).floor() as u64)
}

/// `zpool list -H -p -o name,size,alloc,free,health`.
pub fn parse_zpool_list(text: &str) -> Result<Vec<ZfsPool>, InventoryError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let [name, size, alloc, free, health] = cols[..] else {
                return Err(parse_err(
                    "zpool",
                    format!("expected 5 tab-separated columns, got {line:?}"),
                ));
            };
            Ok(ZfsPool {
                name: name.into(),
                size_bytes: bytes("zpool", "size", size)?,
                allocated_bytes: bytes("zpool", "alloc", alloc)?,
                free_bytes: bytes("zpool", "free", free)?,
                health: health.into(),
            })
        })
        .collect()
}

/// `zfs list -H -p -o name,used,avail,mountpoint`.
pub fn parse_zfs_list(text: &str) -> Result<Vec<ZfsDataset>, InventoryError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let [name, used, avail, mountpoint] = cols[..] else {
                return Err(parse_err(
                    "zfs",
                    format!("expected 4 tab-separated columns, got {line:?}"),
                ));
            };
            Ok(ZfsDataset {
                name: name.into(),
                used_bytes: bytes("zfs", "used", used)?,
                available_bytes: bytes("zfs", "avail", avail)?,
                mountpoint: Some(mountpoint.to_string()).filter(|m| m != "-" && m != "none"),
            })
        })
        .collect()
}

/// Mounts at or below `root` from `/proc/self/mounts` text (octal escapes decoded).
pub fn parse_mounts(text: &str, root: &str) -> Vec<Mount> {
    let root = root.trim_end_matches('/');
    text.lines()
        .filter_map(|line| {
            let mut cols = line.split(' ');
            let source = unescape(cols.next()?);
            let target = unescape(cols.next()?);
            let fstype = cols.next()?.to_string();
            let below = target == root || target.starts_with(&format!("{root}/"));
            below.then_some(Mount {
                source,
                target,
                fstype,
            })
        })
        .collect()
}

/// The kernel escapes space, tab, newline and backslash in mount paths as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thin_pool_rule_and_free_data_space_on_the_lvs_fixture() {
        let lvs = parse_lvs(include_str!("../../tests/fixtures/lvs.json")).unwrap();
        // The VG's only thin pool, found with and without the setting.
        let pool = thin_pool_of(&lvs, "vg_kcore", None).unwrap().unwrap();
        assert_eq!(pool.name, "pool");
        assert_eq!(
            thin_pool_of(&lvs, "vg_kcore", Some("pool"))
                .unwrap()
                .unwrap()
                .name,
            "pool"
        );
        // 10716446720 B at 0.01% used: 1071644.672 B used, rounded down what is left.
        assert_eq!(thin_pool_free_bytes(pool), Some(10715375075));
        // vg_other has only a linear LV: no pool, linear volumes.
        assert_eq!(thin_pool_of(&lvs, "vg_other", None).unwrap(), None);
        // A setting naming a thin volume or nothing is refused, naming the setting.
        let err = thin_pool_of(&lvs, "vg_kcore", Some("kcore-meta")).unwrap_err();
        assert!(
            err.starts_with("storage.lvm.thinPool: vg_kcore/kcore-meta is not a thin pool"),
            "{err}"
        );
        let err = thin_pool_of(&lvs, "vg_kcore", Some("absent")).unwrap_err();
        assert!(err.contains("has no LV absent"), "{err}");
        // Two pools and no setting: which one is ambiguous.
        let mut two = lvs.clone();
        two.push(LogicalVolume {
            name: "pool2".into(),
            ..pool.clone()
        });
        let err = thin_pool_of(&two, "vg_kcore", None).unwrap_err();
        assert!(err.contains("several thin pools (pool, pool2)"), "{err}");
        // A percent lvs did not give (inactive pool) or out of range: unknown, not 0.
        for bad in ["", "n/a", "101.00"] {
            let p = LogicalVolume {
                data_percent: Some(bad.into()),
                ..pool.clone()
            };
            assert_eq!(thin_pool_free_bytes(&p), None, "{bad:?}");
        }
    }

    #[test]
    fn lvm_fixtures() {
        let vgs = parse_vgs(include_str!("../../tests/fixtures/vgs.json")).unwrap();
        assert_eq!(vgs.len(), 2);
        assert_eq!(vgs[0].name, "vg_kcore");
        assert_eq!(vgs[0].size_bytes, 10733223936);
        assert_eq!(vgs[0].free_bytes, 4194304);
        assert_eq!(vgs[1].pv_count, 2);
        let lvs = parse_lvs(include_str!("../../tests/fixtures/lvs.json")).unwrap();
        assert_eq!(lvs.len(), 4);
        let pool = lvs.iter().find(|l| l.name == "pool").unwrap();
        assert!(pool.attr.starts_with('t'));
        assert_eq!(pool.pool, None);
        let vm = lvs.iter().find(|l| l.name == "kcore-vm1-root").unwrap();
        assert_eq!(vm.pool.as_deref(), Some("pool"));
        assert_eq!(vm.size_bytes, 5368709120);
        let other = lvs.iter().find(|l| l.name == "data").unwrap();
        assert_eq!(other.data_percent, None);
    }

    #[test]
    fn lvm_bad_numbers_name_the_field() {
        let json = r#"{"report":[{"vg":[{"vg_name":"v","vg_size":"x","vg_free":"0","pv_count":"1","lv_count":"0"}]}]}"#;
        let err = parse_vgs(json).unwrap_err().to_string();
        assert!(err.contains("vg_size"), "{err}");
    }

    #[test]
    fn zfs_fixtures() {
        let pools = parse_zpool_list(include_str!("../../tests/fixtures/zpool-list.txt")).unwrap();
        assert_eq!(pools[0].name, "tank0");
        assert_eq!(pools[0].health, "ONLINE");
        assert_eq!(pools[0].allocated_bytes, 1048576000);
        let ds = parse_zfs_list(include_str!("../../tests/fixtures/zfs-list.txt")).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds[0].mountpoint.as_deref(), Some("/tank0"));
        assert_eq!(ds[1].mountpoint, None);
        assert!(parse_zfs_list("a\tb\n").is_err());
    }

    #[test]
    fn mounts_below_the_kcore_root_only() {
        let text = "/dev/vda / ext4 rw 0 0\n/dev/mapper/vg-vol /var/lib/kcore/volumes ext4 rw 0 0\n/dev/sdb1 /var/lib/kcore/volumes\\0401 xfs rw 0 0\n/dev/x /var/lib/kcorex ext4 rw 0 0\n";
        let mounts = parse_mounts(text, KCORE_STATE_ROOT);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].target, "/var/lib/kcore/volumes");
        assert_eq!(mounts[1].target, "/var/lib/kcore/volumes 1");
        assert_eq!(mounts[1].fstype, "xfs");
    }
}
