//! Validation of operator input: names, sizes, device paths, mount points. Every error names
//! the field, the bad value and how to fix it.
//!
//! Every validator takes the field's name as the operator wrote it (`storage.lvm.vgName`) so
//! the error can point there, and the value exactly as given: nothing is trimmed, lower-cased
//! or otherwise normalised behind the operator's back. Values that pass are safe to hand to
//! the tools they are meant for (LVM, ZFS, mount, disko) and are still escaped wherever they
//! reach Nix or a command line; validation is about clear early errors, not about quoting.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A field value that is not acceptable, with what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub struct FieldError {
    /// Where the value came from, as the operator spells it (`storage.lvm.vgName`).
    pub field: String,
    /// The rejected value, unmodified.
    pub value: String,
    /// What is wrong, phrased to follow the value (`contains a space`).
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl FieldError {
    pub fn new(
        field: &str,
        value: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.to_owned(),
            value: value.to_owned(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// The message without the field's name (`"a b" contains a space; use ...`), for callers
    /// that already say which field they mean.
    pub fn detail(&self) -> String {
        format!("{} {}; {}", shown(&self.value), self.problem, self.fix)
    }
}

/// `field: "value" problem; fix`.
impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.detail())
    }
}

/// The value quoted for an error message, shortened when long (a 300-character value would
/// bury the problem), with its real length said.
pub(super) fn shown(value: &str) -> String {
    const MAX: usize = 48;
    let count = value.chars().count();
    if count <= MAX {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(MAX).collect();
        format!("{head:?}… ({count} characters)")
    }
}

/// A character, described for people.
pub(super) fn describe(c: char) -> String {
    match c {
        ' ' => "a space".to_owned(),
        '\n' => "a newline".to_owned(),
        '\r' => "a carriage return".to_owned(),
        '\t' => "a tab".to_owned(),
        '\0' => "a NUL byte".to_owned(),
        '"' => "a double quote".to_owned(),
        '\'' => "a single quote".to_owned(),
        '`' => "a backquote".to_owned(),
        c if c.is_control() => format!("the control character U+{:04X}", c as u32),
        c if c.is_whitespace() => format!("the whitespace character U+{:04X}", c as u32),
        c if !c.is_ascii() => format!("the non-ASCII character '{c}'"),
        c => format!("'{c}'"),
    }
}

pub(super) fn not_empty(field: &str, value: &str, example: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        Err(FieldError::new(
            field,
            value,
            "is empty",
            format!("give a value, for example {example}"),
        ))
    } else {
        Ok(())
    }
}

pub(super) fn max_len(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    let len = value.len();
    if len > max {
        Err(FieldError::new(
            field,
            value,
            format!("is {len} bytes long, more than the {max} allowed"),
            format!("shorten it to at most {max}"),
        ))
    } else {
        Ok(())
    }
}

/// Refuse the first character outside `allowed`, naming it and listing what is allowed.
pub(super) fn only(
    field: &str,
    value: &str,
    allowed: impl Fn(char) -> bool,
    allowed_text: &str,
) -> Result<(), FieldError> {
    match value.chars().find(|c| !allowed(*c)) {
        Some(c) => Err(FieldError::new(
            field,
            value,
            format!("contains {}", describe(c)),
            format!("use {allowed_text} only"),
        )),
        None => Ok(()),
    }
}

mod lvm;
mod names;
mod paths;
mod sizes;
mod zfs;

pub use lvm::{lvm_lv_name, lvm_lv_prefix, lvm_vg_name};
pub use names::{dc_id, dns_label, flake_rev, node_id, resource_name};
pub use paths::{block_device_path, mount_point};
pub use sizes::{Size, human_bytes, parse_size};
pub use zfs::{zfs_dataset_component, zfs_dataset_name, zfs_dataset_prefix, zfs_pool_name};

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs every name and path validator must refuse.
    fn adversarial() -> Vec<String> {
        vec![
            String::new(),
            "a b".into(),
            "a\"b".into(),
            "a'b".into(),
            "a`b".into(),
            "${x}".into(),
            "a${x}".into(),
            "a\nb".into(),
            "a\tb".into(),
            "a\0b".into(),
            "a\\\"b".into(),
            "a;b".into(),
            "a$(b)".into(),
            "ä".into(),
            "x".repeat(300),
        ]
    }

    type Validator = fn(&str, &str) -> Result<(), FieldError>;

    const VALIDATORS: &[(&str, Validator)] = &[
        ("dns_label", dns_label),
        ("node_id", node_id),
        ("resource_name", resource_name),
        ("dc_id", dc_id),
        ("flake_rev", flake_rev),
        ("lvm_vg_name", lvm_vg_name),
        ("lvm_lv_name", lvm_lv_name),
        ("zfs_pool_name", zfs_pool_name),
        ("zfs_dataset_component", zfs_dataset_component),
        ("zfs_dataset_name", zfs_dataset_name),
        ("block_device_path", block_device_path),
        ("mount_point", mount_point),
    ];

    fn assert_refused(validator: Validator, name: &str, value: &str, words: &str) {
        let err = validator("spec.field", value)
            .err()
            .unwrap_or_else(|| panic!("{name} accepted {value:?}"));
        let msg = err.to_string();
        assert!(msg.starts_with("spec.field: "), "{msg}");
        assert!(
            msg.contains(words),
            "{name}({value:?}): {msg:?} lacks {words:?}"
        );
        assert_eq!(err.value, value, "the value is kept unmodified");
        assert!(!err.fix.is_empty());
    }

    #[test]
    fn every_validator_refuses_adversarial_input_with_a_clear_error() {
        for (name, validator) in VALIDATORS {
            for value in adversarial() {
                let Err(err) = validator("spec.field", &value) else {
                    panic!("{name} accepted {value:?}");
                };
                let msg = err.to_string();
                assert!(msg.starts_with("spec.field: "), "{name}: {msg}");
                // The message is one line, whatever the value held.
                assert!(
                    !msg.contains('\n') && !msg.contains('\0'),
                    "{name}: {msg:?}"
                );
                assert!(msg.len() < 400, "{name}: message too long: {msg}");
            }
            assert_refused(*validator, name, "", "is empty");
            let long = "a".repeat(300);
            let err = validator("f", &long).unwrap_err();
            assert!(
                err.to_string().contains("(300 characters)"),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn display_matches_the_documented_shape() {
        let err = lvm_vg_name("storage.lvm.vgName", "a b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "storage.lvm.vgName: \"a b\" contains a space; use letters, digits, '_', '.', '-' \
             and '+' only"
        );
        let err = dns_label("nodeId", "a\nb").unwrap_err();
        assert_eq!(
            err.to_string(),
            "nodeId: \"a\\nb\" contains a newline; use lower-case letters, digits and '-' only"
        );
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "node-1", "0", "dc1", &"a".repeat(63), "a-b-c", "1node"] {
            dns_label("f", ok).unwrap();
        }
        assert_refused(
            dns_label,
            "dns",
            &"a".repeat(64),
            "more than the 63 allowed",
        );
        assert_refused(dns_label, "dns", "Node1", "upper-case 'N'");
        assert_refused(dns_label, "dns", "-a", "starts or ends with '-'");
        assert_refused(dns_label, "dns", "a-", "starts or ends with '-'");
        assert_refused(dns_label, "dns", "a_b", "contains '_'");
        assert_refused(dns_label, "dns", "a.b", "contains '.'");
    }

    #[test]
    fn dc_ids_allow_upper_case() {
        for ok in ["DC1", "dc2", "Fra-2", "0", &"D".repeat(63)] {
            dc_id("dcId", ok).unwrap();
        }
        // Node ids keep the stricter rule.
        assert!(node_id("nodeId", "DC1").is_err());
        assert_refused(dc_id, "dc", &"D".repeat(64), "more than the 63 allowed");
        assert_refused(dc_id, "dc", "-DC", "starts or ends with '-'");
        assert_refused(dc_id, "dc", "DC-", "starts or ends with '-'");
        assert_refused(dc_id, "dc", "DC_1", "contains '_'");
        assert_refused(dc_id, "dc", "DC 1", "contains a space");
        assert_refused(dc_id, "dc", "DC.1", "use letters, digits and '-' only");
    }

    #[test]
    fn flake_revs() {
        flake_rev("f", &"0123456789abcdef".repeat(3)[..40]).unwrap();
        assert_refused(flake_rev, "rev", "abc", "3 characters long, not 40");
        assert_refused(flake_rev, "rev", &"A".repeat(40), "contains 'A'");
        assert_refused(flake_rev, "rev", &"g".repeat(40), "contains 'g'");
    }

    #[test]
    fn lvm_names() {
        for ok in ["vg_kcore", "VG+1", "a.b-c_d", "x", &"v".repeat(127), "..."] {
            lvm_vg_name("f", ok).unwrap();
            lvm_lv_name("f", ok).unwrap();
        }
        for validator in [lvm_vg_name as Validator, lvm_lv_name] {
            assert_refused(validator, "lvm", "-vg", "starts with '-'");
            assert_refused(validator, "lvm", ".", "reserved name");
            assert_refused(validator, "lvm", "..", "reserved name");
            assert_refused(validator, "lvm", &"v".repeat(128), "more than the 127");
            assert_refused(validator, "lvm", "vg/lv", "contains '/'");
            assert_refused(validator, "lvm", "vg:1", "contains ':'");
        }
        assert_refused(
            lvm_lv_name,
            "lv",
            "snapshot1",
            "reserved prefix \"snapshot\"",
        );
        assert_refused(lvm_lv_name, "lv", "pvmove", "reserved prefix \"pvmove\"");
        assert_refused(lvm_lv_name, "lv", "disk_mlog", "reserved string \"_mlog\"");
        assert_refused(lvm_lv_name, "lv", "a_tdata_b", "reserved string \"_tdata\"");
        // Only LV names carry those reservations.
        lvm_vg_name("f", "snapshot").unwrap();
        lvm_lv_name("f", "my-snapshot").unwrap();
        lvm_lv_prefix("f", "").unwrap();
        lvm_lv_prefix("f", "kcore-").unwrap();
        assert_refused(lvm_lv_prefix, "prefix", "-x", "starts with '-'");
    }

    #[test]
    fn zfs_names() {
        for ok in [
            "tank0", "t", "rpool", "data:1", "a.b_c-d", "logs", "spar", "cx1",
        ] {
            zfs_pool_name("f", ok).unwrap();
        }
        assert_refused(
            zfs_pool_name,
            "pool",
            "0tank",
            "does not start with a letter",
        );
        assert_refused(
            zfs_pool_name,
            "pool",
            "_tank",
            "does not start with a letter",
        );
        for reserved in [
            "mirror", "mirror1", "raidz", "raidz2", "draid", "draid3", "spare", "spares", "log",
        ] {
            assert_refused(zfs_pool_name, "pool", reserved, "reserved vdev keyword");
        }
        assert_refused(zfs_pool_name, "pool", "c0t0d0", "'c' and a digit");
        assert_refused(zfs_pool_name, "pool", "tank 0", "ZFS allows spaces");
        assert_refused(zfs_pool_name, "pool", "tank/x", "contains '/'");

        for ok in ["tank0", "tank0/volumes", "tank0/a/b.c/d:e", "tank0/mirror"] {
            zfs_dataset_name("f", ok).unwrap();
        }
        assert_refused(zfs_dataset_name, "ds", "tank0/", "empty component");
        assert_refused(zfs_dataset_name, "ds", "/tank0", "empty component");
        assert_refused(zfs_dataset_name, "ds", "tank0//a", "empty component");
        assert_refused(zfs_dataset_name, "ds", "tank0/a@snap", "names a snapshot");
        assert_refused(zfs_dataset_name, "ds", "tank0/a#mark", "names a bookmark");
        assert_refused(zfs_dataset_name, "ds", "tank0/..", "component \"..\"");
        assert_refused(zfs_dataset_name, "ds", "raidz/a", "pool part \"raidz\"");
        let deep = format!("t{}", "/a".repeat(51));
        assert_refused(zfs_dataset_name, "ds", &deep, "51 levels deep");
        let long = format!("t/{}", "a".repeat(254));
        assert_refused(zfs_dataset_name, "ds", &long, "more than the 255 allowed");
        zfs_dataset_component("f", "volumes").unwrap();
        assert_refused(zfs_dataset_component, "c", "a/b", "contains '/'");
    }

    #[test]
    fn zfs_dataset_prefix_takes_the_guides_trailing_slash() {
        // The operator guide writes `--zfs-dataset-prefix kcore/`: datasets under kcore.
        for (given, normal) in [
            ("kcore", "kcore"),
            ("kcore/", "kcore"),
            ("kcore/volumes", "kcore/volumes"),
            ("kcore/volumes/", "kcore/volumes"),
        ] {
            assert_eq!(zfs_dataset_prefix("f", given).unwrap(), normal, "{given}");
        }
        for (bad, words) in [
            ("", "empty component"),
            ("/", "empty component"),
            ("/kcore", "empty component"),
            ("kcore//", "empty component"),
            ("a//b", "empty component"),
            ("kcore/a@s", "names a snapshot"),
            ("kcore/../", "component \"..\""),
        ] {
            let err = zfs_dataset_prefix("zfs.datasetPrefix", bad).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("zfs.datasetPrefix: "), "{msg}");
            assert!(msg.contains(words), "{bad:?}: {msg}");
            assert_eq!(err.value, bad);
        }
        let deep = format!("a{}", "/a".repeat(49));
        assert!(
            zfs_dataset_prefix("f", &deep)
                .unwrap_err()
                .to_string()
                .contains("levels deep")
        );
        zfs_dataset_prefix("f", &format!("a{}", "/a".repeat(48))).unwrap();
    }

    #[test]
    fn block_device_paths() {
        for ok in [
            "/dev/sda",
            "/dev/nvme0n1p2",
            "/dev/disk/by-id/nvme-Samsung_SSD_980_S64DNX0R123456",
            "/dev/disk/by-path/pci-0000:00:1f.2-ata-1",
            "/dev/disk/by-label/my\\x20disk",
            "/dev/mapper/vg_kcore-lv+1",
        ] {
            block_device_path("f", ok).unwrap();
        }
        assert_refused(block_device_path, "dev", "sda", "not an absolute path");
        assert_refused(block_device_path, "dev", "/dev/", "ends with '/'");
        assert_refused(block_device_path, "dev", "/dev", "not a device under /dev/");
        assert_refused(
            block_device_path,
            "dev",
            "/tmp/disk.img",
            "not a device under /dev/",
        );
        assert_refused(
            block_device_path,
            "dev",
            "/dev/../etc/passwd",
            "'..' component",
        );
        assert_refused(block_device_path, "dev", "/dev/./sda", "'.' component");
        assert_refused(block_device_path, "dev", "/dev//sda", "contains '//'");
        assert_refused(block_device_path, "dev", "/dev/sda/", "ends with '/'");
        assert_refused(block_device_path, "dev", "/dev/sd a", "contains a space");
        assert_refused(block_device_path, "dev", "/dev/sda\"", "a double quote");
        assert_refused(block_device_path, "dev", "/dev/${x}", "contains '$'");
        assert_refused(block_device_path, "dev", "/dev/sda\n", "a newline");
        let long = format!("/dev/{}", "a".repeat(251));
        assert_refused(block_device_path, "dev", &long, "more than the 255 allowed");
        block_device_path("f", &format!("/dev/{}", "a".repeat(250))).unwrap();
    }

    #[test]
    fn mount_points() {
        for ok in [
            "/",
            "/var/lib/kcore/volumes",
            "/var/lib/kcore/volumes1",
            "/mnt/a.b_c-d",
        ] {
            mount_point("f", ok).unwrap();
        }
        assert_refused(mount_point, "mp", "var/lib", "not an absolute path");
        assert_refused(mount_point, "mp", "/var/../etc", "'..' component");
        assert_refused(mount_point, "mp", "/var/", "ends with '/'");
        assert_refused(mount_point, "mp", "//var", "contains '//'");
        assert_refused(mount_point, "mp", "/my volumes", "contains a space");
        assert_refused(mount_point, "mp", "/a\\b", "contains '\\'");
    }

    #[test]
    fn sizes_parse_to_typed_values() {
        let cases = [
            ("1", Size::Bytes(1)),
            ("512B", Size::Bytes(512)),
            ("4096", Size::Bytes(4096)),
            ("1K", Size::Bytes(1024)),
            ("512M", Size::Bytes(512 << 20)),
            ("512m", Size::Bytes(512 << 20)),
            ("10G", Size::Bytes(10 << 30)),
            ("10GiB", Size::Bytes(10 << 30)),
            ("1T", Size::Bytes(1 << 40)),
            ("2P", Size::Bytes(2 << 50)),
            ("100%", Size::Percent(100)),
            ("1%", Size::Percent(1)),
            ("100%FREE", Size::PercentFree(100)),
            ("50%FREE", Size::PercentFree(50)),
        ];
        for (text, size) in cases {
            assert_eq!(parse_size("f", text).unwrap(), size, "{text}");
            // Display is the disko spelling and reads back to the same value.
            assert_eq!(parse_size("f", &size.to_string()).unwrap(), size);
        }
        assert_eq!(Size::Bytes(1536 << 20).to_string(), "1536M");
        assert_eq!(Size::Bytes(10 << 30).to_string(), "10G");
        assert_eq!(Size::Bytes(1000).to_string(), "1000");
        assert_eq!(
            parse_size("f", "16383P").unwrap().bytes(),
            Some(16383u64 << 50)
        );
    }

    #[test]
    fn display_and_parse_agree_on_many_sizes() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..10_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Vary the magnitude so every unit gets exercised, including exact multiples.
            let shift = state % 64;
            let n = ((state >> 8) >> (shift % 56)) << (shift % 50);
            if n == 0 {
                continue;
            }
            let size = Size::Bytes(n);
            assert_eq!(parse_size("f", &size.to_string()).unwrap(), size, "{n}");
        }
    }

    #[test]
    fn bad_sizes_say_how_to_write_them() {
        type Parse = fn(&str, &str) -> Result<(), FieldError>;
        let parse: Parse = |f, v| parse_size(f, v).map(|_| ());
        assert_refused(parse, "size", "", "is empty");
        assert_refused(parse, "size", "0", "is zero");
        assert_refused(parse, "size", "0G", "is zero");
        assert_refused(parse, "size", "1.5G", "1536M");
        assert_refused(parse, "size", "10GB", "can mean 10^n or 2^n");
        assert_refused(parse, "size", "10 G", "contains a space");
        assert_refused(parse, "size", " 10G", "contains a space");
        assert_refused(parse, "size", "-1G", "does not start with a number");
        assert_refused(parse, "size", "+1G", "does not start with a number");
        assert_refused(parse, "size", "G", "does not start with a number");
        assert_refused(parse, "size", "10X", "unknown unit \"X\"");
        assert_refused(parse, "size", "10Gi B", "contains a space");
        assert_refused(parse, "size", "101%", "more than 100%");
        assert_refused(parse, "size", "0%", "is zero");
        assert_refused(parse, "size", "300%FREE", "more than 100%");
        assert_refused(parse, "size", "16384P", "too large");
        assert_refused(parse, "size", "99999999999999999999", "too large");
        assert_refused(parse, "size", "${x}", "does not start with a number");
        assert_refused(parse, "size", "1G\n", "a newline");
        assert_refused(parse, "size", &"9".repeat(300), "more than the 32 allowed");
    }

    #[test]
    fn sizes_serialise_as_strings() {
        let size: Size = serde_json::from_str("\"10G\"").unwrap();
        assert_eq!(size, Size::Bytes(10 << 30));
        assert_eq!(serde_json::to_string(&size).unwrap(), "\"10G\"");
        let err = serde_json::from_str::<Size>("\"10GB\"").unwrap_err();
        assert!(err.to_string().contains("10GiB"), "{err}");
    }
}
