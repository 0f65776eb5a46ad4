//! Device paths, mount points and file paths.

use super::{FieldError, max_len, not_empty, only};

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
