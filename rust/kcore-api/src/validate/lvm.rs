//! LVM volume group, logical volume and prefix names, with lvm2's own rules.

use super::{FieldError, max_len, not_empty, only};

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
