//! What kctl knows about each kind of resource: how the operator names it on the command
//! line, its routes, and how a document of it is checked before it is sent.
//!
//! The check is kcore-api's own ([`kcore_api::resource::decode_object`]), the function the
//! controller runs on what it receives, so kctl and the controller name the same field path
//! for the same mistake and kctl keeps no second copy of any rule. Storage classes are
//! not a kind (the controller derives them from nodes) but `get` and `describe` take them
//! in the same position, as they always have.

use std::str::FromStr;

use kcore_api::ErrorCode;
use kcore_api::clusterupdate::ClusterUpdateSpec;
use kcore_api::resource::{Kind, ObjectError, decode_object};
use kcore_api::vm::VmSpec;

use crate::exit::Refused;
use crate::paths;

/// What `kctl get|describe|delete <KIND>` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A stored kind.
    Kind(Kind),
    /// The derived storage classes (`storage-class`, `storage-classes`, `sc`).
    StorageClass,
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
            _ => {}
        }
        Kind::from_str(s).map(Target::Kind).map_err(|e| {
            Refused::new(
                ErrorCode::InvalidField,
                format!("{e}, or storage-class (derived from nodes)"),
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

/// Checks a document of `kind` exactly as the controller will, returning its name, or
/// the problem as `path: message` (`spec.strategy.batchSzie: unknown field ...`). Nodes
/// are not applied (they register themselves) and `Controller` has no type yet.
pub fn check(kind: Kind, document: &serde_json::Value) -> Result<String, String> {
    let text = |e: ObjectError| e.to_string();
    match kind {
        Kind::ClusterUpdate => decode_object::<ClusterUpdateSpec>(document.clone())
            .map(|o| o.metadata.name)
            .map_err(text),
        Kind::Vm => decode_object::<VmSpec>(document.clone())
            .map(|o| o.metadata.name)
            .map_err(text),
        Kind::Node => Err(format!(
            "kind: {kind} cannot be applied: nodes register themselves with their \
             certificate; admit one with `kctl node approve ID`, remove one with \
             `kctl delete node ID`"
        )),
        Kind::Controller => Err(format!(
            "kind: {kind} cannot be applied: controllers have no resource type yet; \
             they are configured with controller.yaml (`kctl create cluster`)"
        )),
    }
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

    #[test]
    fn documents_are_checked_with_kcore_apis_rules() {
        let vm = serde_json::json!({
            "kind": "VM",
            "metadata": {"name": "web-1"},
            "spec": {"storageBackend": "lvm", "storageSizeBytes": "10G"},
        });
        assert_eq!(check(Kind::Vm, &vm).unwrap(), "web-1");
        let mut typo = vm.clone();
        typo["spec"]["cpuz"] = serde_json::json!(2);
        let err = check(Kind::Vm, &typo).unwrap_err();
        assert!(err.starts_with("spec.cpuz: unknown field"), "{err}");
        let node = serde_json::json!({"kind": "Node", "metadata": {"name": "n1"}, "spec": {}});
        let err = check(Kind::Node, &node).unwrap_err();
        assert!(err.starts_with("kind: Node cannot be applied"), "{err}");
    }
}
