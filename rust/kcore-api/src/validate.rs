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
fn shown(value: &str) -> String {
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
fn describe(c: char) -> String {
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

fn not_empty(field: &str, value: &str, example: &str) -> Result<(), FieldError> {
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

fn max_len(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
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
fn only(
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

// ---------------------------------------------------------------------------------------
// Names of kcore resources
// ---------------------------------------------------------------------------------------

/// A DNS label (RFC 1123): `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`. Used for node ids,
/// controller ids, cluster names and resource names, which appear in host names,
/// certificate SAN URIs, systemd unit names and file names.
pub fn dns_label(field: &str, value: &str) -> Result<(), FieldError> {
    label(field, value, false)
}

/// The shape of a DNS label, with upper-case letters allowed or refused.
fn label(field: &str, value: &str, upper_ok: bool) -> Result<(), FieldError> {
    not_empty(field, value, if upper_ok { "DC1" } else { "node-1" })?;
    max_len(field, value, 63)?;
    if !upper_ok {
        if let Some(c) = value.chars().find(char::is_ascii_uppercase) {
            return Err(FieldError::new(
                field,
                value,
                format!("contains upper-case '{c}'"),
                "use lower case: names are compared case-sensitively in certificates and paths",
            ));
        }
    }
    only(
        field,
        value,
        |c| {
            (c.is_ascii_alphabetic() && (upper_ok || c.is_ascii_lowercase()))
                || c.is_ascii_digit()
                || c == '-'
        },
        if upper_ok {
            "letters, digits and '-'"
        } else {
            "lower-case letters, digits and '-'"
        },
    )?;
    if value.starts_with('-') || value.ends_with('-') {
        return Err(FieldError::new(
            field,
            value,
            "starts or ends with '-'",
            "begin and end with a letter or digit",
        ));
    }
    Ok(())
}

/// A node id (see [`dns_label`]).
pub fn node_id(field: &str, value: &str) -> Result<(), FieldError> {
    dns_label(field, value)
}

/// A resource name in `metadata.name` (see [`dns_label`]).
pub fn resource_name(field: &str, value: &str) -> Result<(), FieldError> {
    dns_label(field, value)
}

/// A data-centre id: a DNS label in which upper case is allowed,
/// `[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?` (`DC1`, `fra-2`). It only labels nodes in
/// reports and listings; it never becomes a host name, path or certificate name, so the case
/// operators already use for their sites is kept.
pub fn dc_id(field: &str, value: &str) -> Result<(), FieldError> {
    label(field, value, true)
}

/// A flake revision: a full commit id, 40 lowercase hex digits (short ids and branch names
/// are not pinned; upper case is refused because Nix compares revisions as strings).
pub fn flake_rev(field: &str, value: &str) -> Result<(), FieldError> {
    let fix = "give the full 40-character lowercase hex commit id (`git rev-parse HEAD`)";
    not_empty(field, value, "the output of `git rev-parse HEAD`")?;
    if value.len() != 40 {
        return Err(FieldError::new(
            field,
            value,
            format!("is {} characters long, not 40", value.chars().count()),
            fix,
        ));
    }
    only(
        field,
        value,
        |c| matches!(c, '0'..='9' | 'a'..='f'),
        "the lowercase hex digits 0-9 and a-f",
    )
}

// ---------------------------------------------------------------------------------------
// LVM
// ---------------------------------------------------------------------------------------

/// LVM's NAME_LEN is 128 bytes including the terminating NUL.
const LVM_NAME_MAX: usize = 127;

/// lvm2 (lib/misc/lvm-string.c) refuses LV names containing these: they name the hidden
/// sub-volumes of cache, thin, raid, mirror, integrity, VDO and writecache LVs.
const LVM_RESERVED_LV_PARTS: &[&str] = &[
    "_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_imeta", "_iorig", "_mimage", "_mlog",
    "_pmspare", "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig",
];

fn lvm_common(field: &str, value: &str, example: &str) -> Result<(), FieldError> {
    not_empty(field, value, example)?;
    max_len(field, value, LVM_NAME_MAX)?;
    only(
        field,
        value,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+'),
        "letters, digits, '_', '.', '-' and '+'",
    )?;
    if value.starts_with('-') {
        return Err(FieldError::new(
            field,
            value,
            "starts with '-'",
            "LVM would read it as an option; begin with a letter or digit",
        ));
    }
    if value == "." || value == ".." {
        return Err(FieldError::new(
            field,
            value,
            "is a reserved name",
            "LVM refuses '.' and '..'; choose a name such as vg_kcore",
        ));
    }
    Ok(())
}

/// An LVM volume group name: `[A-Za-z0-9+_.-]`, not starting with '-', not `.`/`..`,
/// at most 127 bytes. (LVM also refuses names that clash with an entry in `/dev`; that needs
/// the machine and is checked there.)
pub fn lvm_vg_name(field: &str, value: &str) -> Result<(), FieldError> {
    lvm_common(field, value, "vg_kcore")
}

/// An LVM logical volume name: the VG rules plus lvm2's reservations: no `snapshot` or
/// `pvmove` prefix, none of the `_tdata`/`_mlog`/... sub-volume markers anywhere.
pub fn lvm_lv_name(field: &str, value: &str) -> Result<(), FieldError> {
    lvm_common(field, value, "vm-disk-1")?;
    for prefix in ["snapshot", "pvmove"] {
        if value.starts_with(prefix) {
            return Err(FieldError::new(
                field,
                value,
                format!("starts with the reserved prefix \"{prefix}\""),
                "LVM keeps that prefix for itself; choose another name",
            ));
        }
    }
    if let Some(part) = LVM_RESERVED_LV_PARTS.iter().find(|p| value.contains(*p)) {
        return Err(FieldError::new(
            field,
            value,
            format!("contains the reserved string \"{part}\""),
            "LVM uses it for hidden sub-volumes; choose another name",
        ));
    }
    Ok(())
}

/// A prefix prepended to LV names (`kcore.storage.lvm.lvPrefix`): may be empty, otherwise
/// the characters and leading-character rules of [`lvm_lv_name`]. Check the full names too.
pub fn lvm_lv_prefix(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Ok(());
    }
    lvm_lv_name(field, value)
}

// ---------------------------------------------------------------------------------------
// ZFS
// ---------------------------------------------------------------------------------------

/// ZFS_MAX_DATASET_NAME_LEN is 256 including the NUL.
const ZFS_NAME_MAX: usize = 255;
/// OpenZFS's default `zfs_max_dataset_nesting`.
const ZFS_MAX_NESTING: usize = 50;

fn zfs_chars(field: &str, value: &str) -> Result<(), FieldError> {
    if value.contains(' ') {
        return Err(FieldError::new(
            field,
            value,
            "contains a space",
            "ZFS allows spaces but they break tools and scripts, so kcore does not; use \
             letters, digits, '_', '.', ':' and '-' only",
        ));
    }
    only(
        field,
        value,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'),
        "letters, digits, '_', '.', ':' and '-'",
    )
}

/// A ZFS pool name: starts with a letter; `[A-Za-z0-9_.:-]`; not `mirror`, `raidz*`,
/// `draid*`, `spare*` or `log`; not starting with `c` + digit (a Solaris disk name).
pub fn zfs_pool_name(field: &str, value: &str) -> Result<(), FieldError> {
    not_empty(field, value, "tank0")?;
    max_len(field, value, ZFS_NAME_MAX)?;
    zfs_chars(field, value)?;
    if !value.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(FieldError::new(
            field,
            value,
            "does not start with a letter",
            "ZFS pool names must begin with a letter, e.g. tank0",
        ));
    }
    let reserved = value == "log"
        || ["mirror", "raidz", "draid", "spare"]
            .iter()
            .any(|p| value.starts_with(p));
    if reserved {
        return Err(FieldError::new(
            field,
            value,
            "is or starts with a reserved vdev keyword (mirror, raidz, draid, spare, log)",
            "choose another pool name, e.g. tank0",
        ));
    }
    let mut chars = value.chars();
    if chars.next() == Some('c') && chars.next().is_some_and(|c| c.is_ascii_digit()) {
        return Err(FieldError::new(
            field,
            value,
            "starts with 'c' and a digit, which ZFS reserves for disk names",
            "choose another pool name, e.g. tank0",
        ));
    }
    Ok(())
}

/// One component of a ZFS dataset name (between '/'): `[A-Za-z0-9_.:-]`, not `.`/`..`;
/// `@` (snapshots) and `#` (bookmarks) are refused.
pub fn zfs_dataset_component(field: &str, value: &str) -> Result<(), FieldError> {
    not_empty(field, value, "volumes")?;
    max_len(field, value, ZFS_NAME_MAX)?;
    if let Some(c) = value.chars().find(|c| matches!(c, '@' | '#')) {
        return Err(FieldError::new(
            field,
            value,
            format!(
                "contains '{c}', which names a {}",
                if c == '@' { "snapshot" } else { "bookmark" }
            ),
            "give a dataset (filesystem or volume) name without '@' or '#'",
        ));
    }
    zfs_chars(field, value)?;
    if value == "." || value == ".." {
        return Err(FieldError::new(
            field,
            value,
            "is a reserved name",
            "ZFS refuses '.' and '..' as dataset names",
        ));
    }
    Ok(())
}

/// A full ZFS dataset name: `pool/child/...`, the pool checked as [`zfs_pool_name`] and each
/// further component as [`zfs_dataset_component`]; at most 255 bytes and 50 levels deep.
pub fn zfs_dataset_name(field: &str, value: &str) -> Result<(), FieldError> {
    not_empty(field, value, "tank0/volumes")?;
    max_len(field, value, ZFS_NAME_MAX)?;
    if value.starts_with('/') || value.ends_with('/') || value.contains("//") {
        return Err(FieldError::new(
            field,
            value,
            "has an empty component (a leading, trailing or doubled '/')",
            "write pool/dataset/child with single '/' separators, e.g. tank0/volumes",
        ));
    }
    let mut components = value.split('/');
    let pool = components.next().unwrap_or_default();
    zfs_pool_name(field, pool).map_err(|e| FieldError {
        problem: format!("has the pool part {pool:?}, which {}", e.problem),
        value: value.to_owned(),
        ..e
    })?;
    let mut depth = 0;
    for component in components {
        depth += 1;
        zfs_dataset_component(field, component).map_err(|e| FieldError {
            problem: format!("has the component {component:?}, which {}", e.problem),
            value: value.to_owned(),
            ..e
        })?;
    }
    if depth > ZFS_MAX_NESTING {
        return Err(FieldError::new(
            field,
            value,
            format!("is nested {depth} levels deep, more than ZFS's {ZFS_MAX_NESTING}"),
            "use a flatter dataset layout",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------

const PATH_MAX_LEN: usize = 255;

/// Absolute, single '/' separators, no trailing '/', no `.`/`..` components. Nothing is
/// normalised: `/dev//sda` or `/dev/./sda` are refused, not quietly rewritten, so the path
/// in a plan is the path the operator wrote.
fn canonical_absolute(field: &str, value: &str, example: &str) -> Result<(), FieldError> {
    if !value.starts_with('/') {
        return Err(FieldError::new(
            field,
            value,
            "is not an absolute path",
            format!("start it with '/', e.g. {example}"),
        ));
    }
    if value == "/" {
        return Ok(());
    }
    if value.ends_with('/') {
        return Err(FieldError::new(
            field,
            value,
            "ends with '/'",
            "remove the trailing '/'",
        ));
    }
    for component in value[1..].split('/') {
        let problem = match component {
            "" => "contains '//'",
            "." => "contains a '.' component",
            ".." => "contains a '..' component",
            _ => continue,
        };
        return Err(FieldError::new(
            field,
            value,
            problem,
            format!("write the path without it (kcore does not rewrite paths), e.g. {example}"),
        ));
    }
    Ok(())
}

/// A block device path: absolute, under `/dev/`, at most 255 bytes, no `.`/`..`/empty
/// components, and only `[A-Za-z0-9/._:+@=,-]` plus `\` (udev writes spaces in
/// `/dev/disk/by-label` names as `\x20`). Prefer `/dev/disk/by-id/...`: it survives reboots.
pub fn block_device_path(field: &str, value: &str) -> Result<(), FieldError> {
    let example = "/dev/disk/by-id/nvme-Samsung_SSD_980_S64DNX0R123456";
    not_empty(field, value, example)?;
    max_len(field, value, PATH_MAX_LEN)?;
    only(
        field,
        value,
        |c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '/' | '.' | '_' | ':' | '+' | '@' | '=' | ',' | '-' | '\\'
                )
        },
        "letters, digits and / . _ : + @ = , - \\",
    )?;
    canonical_absolute(field, value, example)?;
    if !value.starts_with("/dev/") || value.len() == "/dev/".len() {
        return Err(FieldError::new(
            field,
            value,
            "is not a device under /dev/",
            format!("name the block device, e.g. {example}"),
        ));
    }
    Ok(())
}

/// A mount point: absolute, at most 255 bytes, no `.`/`..`/empty components, no trailing
/// '/', and only `[A-Za-z0-9/._:+@=,-]` (systemd mount unit names and fstab need no
/// escaping then).
pub fn mount_point(field: &str, value: &str) -> Result<(), FieldError> {
    let example = "/var/lib/kcore/volumes";
    not_empty(field, value, example)?;
    max_len(field, value, PATH_MAX_LEN)?;
    only(
        field,
        value,
        |c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '/' | '.' | '_' | ':' | '+' | '@' | '=' | ',' | '-')
        },
        "letters, digits and / . _ : + @ = , -",
    )?;
    canonical_absolute(field, value, example)
}

// ---------------------------------------------------------------------------------------
// Sizes
// ---------------------------------------------------------------------------------------

/// A size as disko, sgdisk and LVM take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    /// An exact number of bytes.
    Bytes(u64),
    /// A percentage (1-100) of the space that remains, written `N%` (disko's `"100%"`).
    Percent(u8),
    /// A percentage (1-100) of the free space in an LVM volume group, written `N%FREE`.
    PercentFree(u8),
}

impl Size {
    /// The exact byte count, when the size is one.
    pub fn bytes(&self) -> Option<u64> {
        match self {
            Size::Bytes(b) => Some(*b),
            _ => None,
        }
    }
}

const UNITS: &[(char, u64)] = &[
    ('P', 1 << 50),
    ('T', 1 << 40),
    ('G', 1 << 30),
    ('M', 1 << 20),
    ('K', 1 << 10),
];

/// The disko spelling: the largest binary unit that divides the byte count exactly
/// (`10G`, `1536M`), else plain bytes; `N%` and `N%FREE` as parsed. [`parse_size`] reads it
/// back to the same value.
impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Bytes(b) => {
                for (unit, factor) in UNITS {
                    if *b >= *factor && b % factor == 0 {
                        return write!(f, "{}{unit}", b / factor);
                    }
                }
                write!(f, "{b}")
            }
            Size::Percent(p) => write!(f, "{p}%"),
            Size::PercentFree(p) => write!(f, "{p}%FREE"),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_size("size", &text).map_err(serde::de::Error::custom)
    }
}

/// Parse a size: a whole number of bytes (`1048576`, `512B`), a whole number with a binary
/// unit (`512M`, `10G`, `1T`; `K M G T P`, either case, optionally `KiB`..`PiB`: all
/// 1024-based, as disko, sgdisk and LVM read them), `N%` or `N%FREE` with N in 1-100.
///
/// Refused with a fix: `GB`-style units (ambiguous between 10^9 and 2^30), fractions
/// (`1.5G`: write `1536M`), signs, spaces, zero, and values that overflow 64 bits.
pub fn parse_size(field: &str, value: &str) -> Result<Size, FieldError> {
    let err = |problem: String, fix: &str| Err(FieldError::new(field, value, problem, fix));
    not_empty(field, value, "10G")?;
    max_len(field, value, 32)?;
    if let Some(c) = value.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return err(
            format!("contains {}", describe(c)),
            "write the number and unit together, e.g. 10G",
        );
    }
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(digits_end);
    if number.is_empty() {
        return err(
            "does not start with a number".to_owned(),
            "write a whole number with an optional unit, e.g. 512M, 10G or 100%",
        );
    }
    if suffix.starts_with(['.', ',']) {
        return err(
            "is not a whole number".to_owned(),
            "use a smaller unit instead of a fraction, e.g. 1536M rather than 1.5G",
        );
    }
    let Ok(n) = number.parse::<u64>() else {
        return err(
            "is too large".to_owned(),
            "sizes must fit in 64 bits of bytes",
        );
    };
    if n == 0 {
        return err("is zero".to_owned(), "give a size greater than zero");
    }
    let percent = |n: u64, make: fn(u8) -> Size| match u8::try_from(n) {
        Ok(p @ 1..=100) => Ok(make(p)),
        _ => Err(FieldError::new(
            field,
            value,
            format!("is {n}%, more than 100%"),
            "give a percentage from 1 to 100",
        )),
    };
    let factor: u64 = match suffix {
        "" | "B" | "b" => 1,
        "%" => return percent(n, Size::Percent),
        "%FREE" => return percent(n, Size::PercentFree),
        s => {
            let mut chars = s.chars();
            let unit = chars.next().map(|c| c.to_ascii_uppercase());
            let rest = chars.as_str();
            match (UNITS.iter().find(|(u, _)| Some(*u) == unit), rest) {
                (Some((_, factor)), "" | "iB" | "i") => *factor,
                (Some((u, _)), "B" | "b") => {
                    return err(
                        format!("uses the unit \"{u}B\", which can mean 10^n or 2^n bytes"),
                        &format!("write {n}{u} or {n}{u}iB (1024-based, as disko and LVM read it)"),
                    );
                }
                _ => {
                    return err(
                        format!("has the unknown unit {s:?}"),
                        "use B, K, M, G, T or P (1024-based), N% or N%FREE, e.g. 10G",
                    );
                }
            }
        }
    };
    match n.checked_mul(factor) {
        Some(bytes) => Ok(Size::Bytes(bytes)),
        None => err(
            "is too large".to_owned(),
            "sizes must fit in 64 bits of bytes",
        ),
    }
}

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
