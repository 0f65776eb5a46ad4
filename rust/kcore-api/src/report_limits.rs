//! Size and shape limits on what a node reports about itself (`POST
//! /v1/nodes/{id}/register` and `.../heartbeat`).
//!
//! A report becomes durable, replicated controller state and is printed by kctl, so a node
//! must not be able to make it arbitrarily large or fill it with bytes that are not text.
//! [`check_report`] refuses, in this order:
//!
//! 1. a report whose JSON encoding is larger than [`MAX_REPORT_BYTES`] (HTTP 413,
//!    [`ErrorCode::ReportTooLarge`]);
//! 2. a hostname that is not a DNS name (RFC 1123 labels joined by `.`, at most
//!    [`MAX_HOSTNAME_BYTES`] bytes), a `dcId` that is not a data-centre id;
//! 3. labels beyond [`MAX_LABELS`], or whose key or value breaks the Kubernetes label
//!    rules (optional DNS-subdomain prefix of at most 253 bytes and `/`, then a name of at
//!    most 63 characters `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`; values the same shape,
//!    empty allowed);
//! 4. lists longer than their limit (`disks`, `nics`, `storage.mounts`, `roles`);
//! 5. any string anywhere in the report (including the pass-through `disks`/`nics`
//!    records) longer than [`MAX_STRING_BYTES`] or containing a control character: a NUL
//!    or a terminal escape in a stored report would reach every `kctl get nodes`.
//!
//! Everything but the first is HTTP 422 with the existing `INVALID_FIELD` envelope
//! (`details`: `field`, `value` shortened, `problem`, `fix`, and `limit` when one was
//! exceeded). The limits are generous for real machines: a 100-disk JBOD with partitions
//! and by-id names encodes to about 60 KB.

use serde_json::Value;

use crate::cluster::NodeReport;
use crate::error::{ApiError, ErrorCode};
use crate::validate::FieldError;

/// The largest accepted report, as compact JSON.
pub const MAX_REPORT_BYTES: usize = 128 * 1024;
/// RFC 1035's limit on a domain name in text form.
pub const MAX_HOSTNAME_BYTES: usize = 253;
/// Labels per node.
pub const MAX_LABELS: usize = 64;
/// A label key's name part, and a label value (Kubernetes).
pub const MAX_LABEL_NAME: usize = 63;
/// A label key's prefix (a DNS subdomain).
pub const MAX_LABEL_PREFIX: usize = 253;
/// Entries of `disks` (top-level devices; partitions are their children).
pub const MAX_DISKS: usize = 512;
/// Entries of `nics`.
pub const MAX_NICS: usize = 256;
/// Entries of `storage.mounts`.
pub const MAX_MOUNTS: usize = 64;
/// Entries of `roles` (there are two roles).
pub const MAX_ROLES: usize = 2;
/// Any other string in the report (paths, models, serials, addresses).
pub const MAX_STRING_BYTES: usize = 4096;

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error(
        "report: the report is {actual} bytes as JSON, more than the {limit} allowed; send fewer or shorter labels, disks or NICs"
    )]
    TooLarge { actual: usize, limit: usize },
    #[error("{error}")]
    Field {
        error: FieldError,
        /// The limit that was exceeded, when the problem is a limit.
        limit: Option<usize>,
    },
}

impl ReportError {
    /// The HTTP status the controller answers with: 413 for the whole report, 422 for a field.
    pub fn http_status(&self) -> u16 {
        match self {
            ReportError::TooLarge { .. } => 413,
            ReportError::Field { .. } => 422,
        }
    }

    /// The field the problem is in (`report` for the whole report).
    pub fn field(&self) -> &str {
        match self {
            ReportError::TooLarge { .. } => "report",
            ReportError::Field { error, .. } => &error.field,
        }
    }
}

impl From<ReportError> for ApiError {
    fn from(err: ReportError) -> Self {
        let message = err.to_string();
        match err {
            ReportError::TooLarge { actual, limit } => {
                ApiError::new(ErrorCode::ReportTooLarge, message).with_details(serde_json::json!({
                    "field": "report", "limit": limit, "actual": actual,
                }))
            }
            ReportError::Field { error, limit } => {
                let mut details = serde_json::json!({
                    "field": error.field,
                    // The value may be kilobytes of a hostile report: an excerpt is enough.
                    "value": excerpt(&error.value),
                    "problem": error.problem,
                    "fix": error.fix,
                });
                if let Some(limit) = limit {
                    details["limit"] = limit.into();
                }
                ApiError::new(ErrorCode::InvalidField, message).with_details(details)
            }
        }
    }
}

fn excerpt(value: &str) -> String {
    const MAX: usize = 64;
    if value.chars().count() <= MAX {
        value.to_string()
    } else {
        let mut head: String = value.chars().take(MAX).collect();
        head.push('…');
        head
    }
}

fn field_err(
    field: &str,
    value: &str,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ReportError {
    ReportError::Field {
        error: FieldError::new(field, value, problem, fix),
        limit: None,
    }
}

fn too_long(field: &str, value: &str, limit: usize) -> ReportError {
    ReportError::Field {
        error: FieldError::new(
            field,
            value,
            format!(
                "is {} bytes long, more than the {limit} allowed",
                value.len()
            ),
            format!("shorten it to at most {limit} bytes"),
        ),
        limit: Some(limit),
    }
}

fn too_many(field: &str, count: usize, limit: usize, what: &str) -> ReportError {
    ReportError::Field {
        error: FieldError::new(
            field,
            &format!("{count} {what}"),
            format!("has {count} entries, more than the {limit} allowed"),
            format!("report at most {limit} {what}"),
        ),
        limit: Some(limit),
    }
}

/// Checks a node report against every limit above; the first problem found is returned.
pub fn check_report(report: &NodeReport) -> Result<(), ReportError> {
    let encoded = serde_json::to_vec(report).map(|v| v.len()).unwrap_or(0);
    if encoded > MAX_REPORT_BYTES {
        return Err(ReportError::TooLarge {
            actual: encoded,
            limit: MAX_REPORT_BYTES,
        });
    }
    hostname("report.hostname", &report.hostname)?;
    crate::validate::dc_id("report.dcId", &report.dc_id)
        .map_err(|error| ReportError::Field { error, limit: None })?;
    if report.labels.len() > MAX_LABELS {
        return Err(too_many(
            "report.labels",
            report.labels.len(),
            MAX_LABELS,
            "labels",
        ));
    }
    for (key, value) in &report.labels {
        label_key(&format!("report.labels[{key:?}] (key)"), key)?;
        label_value(&format!("report.labels[{key:?}]"), value)?;
    }
    for (field, count, limit, what) in [
        ("report.disks", report.disks.len(), MAX_DISKS, "disks"),
        ("report.nics", report.nics.len(), MAX_NICS, "NICs"),
        (
            "report.storage.mounts",
            report.storage.mounts.len(),
            MAX_MOUNTS,
            "mounts",
        ),
        ("report.roles", report.roles.len(), MAX_ROLES, "roles"),
    ] {
        if count > limit {
            return Err(too_many(field, count, limit, what));
        }
    }
    let value = serde_json::to_value(report).unwrap_or(Value::Null);
    strings("report", &value)
}

/// Every string in `value` (keys included): no control characters, at most
/// [`MAX_STRING_BYTES`].
fn strings(path: &str, value: &Value) -> Result<(), ReportError> {
    let text = |field: &str, s: &str| -> Result<(), ReportError> {
        if s.len() > MAX_STRING_BYTES {
            return Err(too_long(field, s, MAX_STRING_BYTES));
        }
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(field_err(
                field,
                s,
                format!("contains the control character U+{:04X}", c as u32),
                "report printable text only",
            ));
        }
        Ok(())
    };
    match value {
        Value::String(s) => text(path, s),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| strings(&format!("{path}[{i}]"), item)),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            let field = format!("{path}.{key}");
            text(&format!("{path} (key {key:?})"), key)?;
            strings(&field, item)
        }),
        _ => Ok(()),
    }
}

/// A DNS name: labels of 1-63 letters, digits and `-` (not first or last), joined by `.`,
/// at most 253 bytes. Upper case is allowed (DNS is case-insensitive).
pub fn hostname(field: &str, value: &str) -> Result<(), ReportError> {
    let fix =
        "use a DNS name: letters, digits and '-' in dot-separated labels (node-1.example.org)";
    if value.is_empty() {
        return Err(field_err(field, value, "is empty", fix));
    }
    if value.len() > MAX_HOSTNAME_BYTES {
        return Err(too_long(field, value, MAX_HOSTNAME_BYTES));
    }
    for part in value.split('.') {
        dns_label_part(field, value, part, true, fix)?;
    }
    Ok(())
}

fn dns_label_part(
    field: &str,
    whole: &str,
    part: &str,
    upper_ok: bool,
    fix: &str,
) -> Result<(), ReportError> {
    if part.is_empty() {
        return Err(field_err(
            field,
            whole,
            "has an empty label (two dots, or a dot at either end)",
            fix,
        ));
    }
    if part.len() > 63 {
        return Err(ReportError::Field {
            error: FieldError::new(
                field,
                whole,
                format!(
                    "has the label {part:?} of {} bytes, more than the 63 allowed",
                    part.len()
                ),
                fix,
            ),
            limit: Some(63),
        });
    }
    if let Some(c) = part.chars().find(|c| {
        !(c.is_ascii_digit()
            || c.is_ascii_lowercase()
            || *c == '-'
            || (upper_ok && c.is_ascii_uppercase()))
    }) {
        return Err(field_err(
            field,
            whole,
            format!("contains {}", describe(c)),
            fix,
        ));
    }
    if part.starts_with('-') || part.ends_with('-') {
        return Err(field_err(
            field,
            whole,
            format!("has the label {part:?}, which starts or ends with '-'"),
            fix,
        ));
    }
    Ok(())
}

fn describe(c: char) -> String {
    match c {
        ' ' => "a space".to_string(),
        '\0' => "a NUL byte".to_string(),
        c if c.is_control() => format!("the control character U+{:04X}", c as u32),
        c if !c.is_ascii() => format!("the non-ASCII character {c:?}"),
        c => format!("{c:?}"),
    }
}

/// A Kubernetes label name (the part after the prefix) or a non-empty label value.
fn label_name(field: &str, whole: &str, name: &str, fix: &str) -> Result<(), ReportError> {
    if name.len() > MAX_LABEL_NAME {
        return Err(ReportError::Field {
            error: FieldError::new(
                field,
                whole,
                format!(
                    "is {} bytes long, more than the {MAX_LABEL_NAME} allowed",
                    name.len()
                ),
                fix,
            ),
            limit: Some(MAX_LABEL_NAME),
        });
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(field_err(
            field,
            whole,
            format!("contains {}", describe(c)),
            fix,
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err(field_err(
            field,
            whole,
            "does not begin and end with a letter or digit",
            fix,
        ));
    }
    Ok(())
}

/// A label key: `[prefix/]name`, the prefix a lower-case DNS subdomain (Kubernetes rules).
pub fn label_key(field: &str, key: &str) -> Result<(), ReportError> {
    let fix = "use [prefix/]name: name up to 63 of letters, digits, '-', '_', '.' (letter or digit at both ends), prefix a lower-case DNS subdomain (example.org/rack)";
    if key.is_empty() {
        return Err(field_err(field, key, "is empty", fix));
    }
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if prefix.len() > MAX_LABEL_PREFIX {
                return Err(ReportError::Field {
                    error: FieldError::new(
                        field,
                        key,
                        format!(
                            "has a prefix of {} bytes, more than the {MAX_LABEL_PREFIX} allowed",
                            prefix.len()
                        ),
                        fix,
                    ),
                    limit: Some(MAX_LABEL_PREFIX),
                });
            }
            for part in prefix.split('.') {
                dns_label_part(field, key, part, false, fix)?;
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err(field_err(
            field,
            key,
            "has an empty name after the prefix",
            fix,
        ));
    }
    label_name(field, key, name, fix)
}

/// A label value: empty, or a label name (Kubernetes rules).
pub fn label_value(field: &str, value: &str) -> Result<(), ReportError> {
    if value.is_empty() {
        return Ok(());
    }
    label_name(
        field,
        value,
        value,
        "use at most 63 of letters, digits, '-', '_', '.' with a letter or digit at both ends",
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn ok_report() -> NodeReport {
        NodeReport {
            hostname: "node-1.lab.example".into(),
            dc_id: "DC1".into(),
            labels: BTreeMap::from([
                ("rack".into(), "r1".into()),
                ("kcore.example.org/zone".into(), "".into()),
            ]),
            disks: vec![serde_json::json!({"name": "sda", "model": "Samsung SSD 870"})],
            ..Default::default()
        }
    }

    fn field_of(report: &NodeReport) -> (String, u16, ApiError) {
        let err = check_report(report).unwrap_err();
        (err.field().to_string(), err.http_status(), err.into())
    }

    #[test]
    fn a_normal_report_passes() {
        check_report(&ok_report()).unwrap();
    }

    #[test]
    fn every_limit_names_its_field() {
        let mut r = ok_report();
        r.hostname = "a\0b".into();
        let (field, status, api) = field_of(&r);
        assert_eq!((field.as_str(), status), ("report.hostname", 422));
        assert!(api.is(ErrorCode::InvalidField));
        assert!(api.message.contains("NUL"), "{}", api.message);

        let mut r = ok_report();
        r.hostname = format!("{}.example", "a".repeat(60)).repeat(5);
        let (field, _, api) = field_of(&r);
        assert_eq!(field, "report.hostname");
        assert_eq!(api.details["limit"], 253);

        let mut r = ok_report();
        r.labels = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        let (field, _, api) = field_of(&r);
        assert_eq!(field, "report.labels");
        assert_eq!(api.details["limit"], MAX_LABELS);

        let mut r = ok_report();
        r.labels.insert("big".into(), "v".repeat(64));
        let (field, _, api) = field_of(&r);
        assert_eq!(field, "report.labels[\"big\"]");
        assert_eq!(api.details["limit"], 63);
        assert!(api.details["value"].as_str().unwrap().len() < 80);

        let mut r = ok_report();
        r.labels.insert("\u{1b}[2J".into(), "v".into());
        assert_eq!(field_of(&r).0, "report.labels[\"\\u{1b}[2J\"] (key)");

        let mut r = ok_report();
        r.nics = vec![serde_json::json!({}); MAX_NICS + 1];
        assert_eq!(field_of(&r).0, "report.nics");

        let mut r = ok_report();
        r.disks = vec![serde_json::json!({"model": "x\u{7}"})];
        assert_eq!(field_of(&r).0, "report.disks[0].model");

        let mut r = ok_report();
        r.labels.insert("big".into(), "v".repeat(MAX_REPORT_BYTES));
        let (field, status, api) = field_of(&r);
        assert_eq!((field.as_str(), status), ("report", 413));
        assert!(api.is(ErrorCode::ReportTooLarge));
        assert_eq!(api.details["limit"], MAX_REPORT_BYTES);
    }

    #[test]
    fn kubernetes_label_rules() {
        for good in ["a", "rack", "kcore.example.org/rack-1", "A_b.c"] {
            label_key("k", good).unwrap();
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a b",
            "Upper.Example/x",
            "a/",
            "/a",
            "a/b/c",
        ] {
            assert!(label_key("k", bad).is_err(), "{bad:?}");
        }
        label_value("v", "").unwrap();
        assert!(label_value("v", "a b").is_err());
    }
}
