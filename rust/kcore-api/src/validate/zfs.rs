//! ZFS pool, dataset-component and dataset names, with OpenZFS's own rules.

use super::{FieldError, max_len, not_empty, only};

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

/// The dataset prefix under a pool that holds kcore's datasets (`<pool>/<prefix>`), as
/// the operator guide writes it: `kcore`, `kcore/volumes`, or with one trailing `/`
/// (`kcore/`), which means the same thing, "datasets under `kcore`". Returns the prefix
/// without the trailing `/`, the form every consumer (renderer, agent) uses. Each
/// component is checked as [`zfs_dataset_component`]; an empty, leading-`/` or doubled
/// `/` component is refused.
pub fn zfs_dataset_prefix(field: &str, value: &str) -> Result<String, FieldError> {
    let trimmed = value.strip_suffix('/').unwrap_or(value);
    if trimmed.is_empty()
        || trimmed.starts_with('/')
        || trimmed.ends_with('/')
        || trimmed.contains("//")
    {
        return Err(FieldError::new(
            field,
            value,
            "has an empty component (a leading or doubled '/', or nothing before the '/')",
            "write it like kcore, kcore/ or kcore/volumes (a trailing '/' is allowed)",
        ));
    }
    max_len(field, trimmed, ZFS_NAME_MAX)?;
    let mut depth = 0;
    for component in trimmed.split('/') {
        depth += 1;
        zfs_dataset_component(field, component).map_err(|e| FieldError {
            problem: format!("has the component {component:?}, which {}", e.problem),
            value: value.to_owned(),
            ..e
        })?;
    }
    if depth >= ZFS_MAX_NESTING {
        return Err(FieldError::new(
            field,
            value,
            format!(
                "is nested {depth} levels deep; with the pool that is more than ZFS's {ZFS_MAX_NESTING}"
            ),
            "use a flatter dataset layout",
        ));
    }
    Ok(trimmed.to_owned())
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
