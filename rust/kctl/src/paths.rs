//! What kctl puts into URL paths. Ids the operator types are checked before any request
//! (a node id is a DNS label, a storage class one of the known names), so a typo or a
//! pasted `ghost/../node-3` is refused with the rule instead of reaching another route.
//! Every path built from input then goes through [`path`], which percent-encodes each
//! segment, so even an unchecked value (an operation id) stays one segment.

use kcore_api::ErrorCode;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::exit::Refused;

/// Encoded in a segment: everything except RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `/seg/seg/...` with every segment percent-encoded. Empty, `.` and `..` segments are
/// refused: URL parsers resolve dot segments (also written `%2e`) before sending, so no
/// encoding keeps them in place.
pub fn path(segments: &[&str]) -> Result<String, Refused> {
    let mut out = String::new();
    for segment in segments {
        if matches!(*segment, "" | "." | "..") {
            return Err(Refused::new(
                ErrorCode::InvalidPathSegment,
                format!("{segment:?} cannot be sent as part of a request path: give a real id"),
            ));
        }
        out.push('/');
        out.extend(utf8_percent_encode(segment, SEGMENT));
    }
    Ok(out)
}

/// `path?key=value` with `value` percent-encoded like a segment (so `=`, `,`, `!` and
/// `&` in a label selector stay inside the one parameter).
pub fn with_query(path: &str, key: &str, value: &str) -> String {
    format!("{path}?{key}={}", utf8_percent_encode(value, SEGMENT))
}

/// A node id given as `arg` (`<ID>`, `--node-id`): a DNS label, as everywhere in kcore.
pub fn node_id(arg: &str, value: &str) -> Result<(), Refused> {
    kcore_api::validate::node_id(arg, value).map_err(|e| {
        Refused::new(
            ErrorCode::InvalidNodeId,
            format!(
                "{e}; node ids are DNS labels (1 to 63 lower-case letters, digits and '-', \
                 beginning and ending with a letter or digit)"
            ),
        )
    })
}

/// A storage class name: one of [`kcore_api::cluster::storage_class_names`].
pub fn storage_class(value: &str) -> Result<(), Refused> {
    let names = kcore_api::cluster::storage_class_names();
    if names.contains(&value) {
        Ok(())
    } else {
        Err(Refused::new(
            ErrorCode::NoSuchStorageClass,
            format!(
                "no storage class {value:?}; the classes are {}",
                names.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_and_dot_segments_refused() {
        assert_eq!(
            path(&["v1", "nodes", "node-1", "approve"])
                .unwrap()
                .as_str(),
            "/v1/nodes/node-1/approve"
        );
        assert_eq!(
            path(&["v1", "operations", "a/b?c#d%6e e\u{1b}ü"])
                .unwrap()
                .as_str(),
            "/v1/operations/a%2Fb%3Fc%23d%256e%20e%1B%C3%BC"
        );
        for bad in ["", ".", ".."] {
            assert_eq!(path(&["v1", bad]).unwrap_err().code, "INVALID_PATH_SEGMENT");
        }
        // Encoded dots stay text: `%2e%2e` becomes `%252e%252e`, not a dot segment.
        assert_eq!(path(&["%2e%2e"]).unwrap().as_str(), "/%252e%252e");
        assert_eq!(
            with_query("/v1/vms", "labelSelector", "tier=web,!spare&x"),
            "/v1/vms?labelSelector=tier%3Dweb%2C%21spare%26x"
        );
    }

    #[test]
    fn node_ids_are_dns_labels_and_the_error_names_the_argument_and_rule() {
        node_id("<ID>", "node-3").unwrap();
        for bad in [
            "ghost/../node-3",
            "node-1?x=1",
            "%6eode-1",
            "",
            "NODE-1",
            "-a",
        ] {
            let err = node_id("<ID>", bad).unwrap_err();
            assert_eq!(err.code, "INVALID_NODE_ID");
            assert!(
                err.message.starts_with("<ID>: ") && err.message.contains("DNS labels"),
                "{}",
                err.message
            );
        }
        storage_class("lvm").unwrap();
        assert_eq!(
            storage_class("lvm/../zfs").unwrap_err().code,
            "NO_SUCH_STORAGE_CLASS"
        );
    }
}
