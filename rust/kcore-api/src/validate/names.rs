//! Names of kcore resources: DNS labels, node and resource ids, data-centre ids, flake revisions.

use super::{FieldError, max_len, not_empty, only};

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
