//! What kctl knows about each kind of resource: how the operator names it on the command
//! line and its routes. (How a document of it is checked is kcore-api's
//! `canonical_any`, see [`crate::documents`].) Storage classes are not a kind (the
//! controller derives them from nodes) but `get` and `describe` take them in the same
//! position, as they always have.

use std::str::FromStr;

use kcore_api::ErrorCode;
use kcore_api::resource::Kind;

use crate::exit::Refused;
use crate::paths;

/// What `kctl get|describe|delete <KIND>` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A stored kind.
    Kind(Kind),
    /// The derived storage classes (`storage-class`, `storage-classes`, `sc`).
    StorageClass,
    /// The sub-CAs controllers sign with or retired (`sub-ca`, `sub-cas`), listed only.
    SubCa,
}

impl FromStr for Target {
    type Err = Refused;

    /// Everything [`Kind::from_str`] accepts (singular, plural, any case, `-` ignored),
    /// `no` for nodes and `sc` for storage classes (the aliases `get` has always had).
    fn from_str(s: &str) -> Result<Target, Refused> {
        let folded: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        match folded.as_str() {
            "no" => return Ok(Target::Kind(Kind::Node)),
            "sc" | "storageclass" | "storageclasses" => return Ok(Target::StorageClass),
            "subca" | "subcas" => return Ok(Target::SubCa),
            _ => {}
        }
        Kind::from_str(s).map(Target::Kind).map_err(|e| {
            Refused::new(
                ErrorCode::InvalidField,
                format!("{e}, or storage-class (derived from nodes), or sub-cas"),
            )
        })
    }
}

/// `/v1/<plural>`, the list route of `kind`.
pub fn list_path(kind: Kind) -> String {
    format!("/v1/{}", kind.plural())
}

/// `/v1/<plural>/<name>`, with `name` checked first: a node id for nodes, a resource
/// name (`metadata.name`'s rule) for the others. `arg` names where it came from.
pub fn object_path(kind: Kind, arg: &str, name: &str) -> Result<String, Refused> {
    if kind == Kind::Node {
        paths::node_id(arg, name)?;
    } else {
        kcore_api::validate::resource_name(arg, name).map_err(|e| {
            Refused::new(
                ErrorCode::InvalidField,
                format!("{e} (the object's metadata.name)"),
            )
        })?;
    }
    paths::path(&["v1", kind.plural(), name])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_named_as_before_and_as_kinds() {
        for (typed, want) in [
            ("nodes", Target::Kind(Kind::Node)),
            ("no", Target::Kind(Kind::Node)),
            ("node", Target::Kind(Kind::Node)),
            ("sc", Target::StorageClass),
            ("storage-class", Target::StorageClass),
            ("storage-classes", Target::StorageClass),
            ("sub-cas", Target::SubCa),
            ("vm", Target::Kind(Kind::Vm)),
            ("clusterupdates", Target::Kind(Kind::ClusterUpdate)),
        ] {
            assert_eq!(typed.parse::<Target>().unwrap(), want, "{typed}");
        }
        let err = "pods".parse::<Target>().unwrap_err();
        assert_eq!(err.code, "INVALID_FIELD");
        assert!(
            err.message.starts_with("kind: \"pods\"") && err.message.contains("ClusterUpdate"),
            "{}",
            err.message
        );
    }

    #[test]
    fn names_are_checked_before_they_reach_a_path() {
        assert_eq!(
            object_path(Kind::Vm, "NAME", "web-1").unwrap(),
            "/v1/vms/web-1"
        );
        assert_eq!(
            object_path(Kind::Node, "NAME", "node-1").unwrap(),
            "/v1/nodes/node-1"
        );
        for bad in ["../nodes", "Web_1", ""] {
            let err = object_path(Kind::Vm, "NAME", bad).unwrap_err();
            assert!(err.message.starts_with("NAME: "), "{}", err.message);
        }
        assert_eq!(
            object_path(Kind::Node, "NAME", "a/b").unwrap_err().code,
            "INVALID_NODE_ID"
        );
    }
}
