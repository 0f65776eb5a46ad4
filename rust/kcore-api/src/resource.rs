//! The envelope every API object shares: `kind` / `metadata` (name, labels, generation) /
//! `spec` / `status` (observedGeneration, phase, conditions), camelCase in YAML and JSON.
//! Kinds add their spec and status types; this module holds what is common to all of
//! them: the kind names (singular, plural, the spellings kctl accepts), metadata and its
//! validation, status conditions, and label selectors.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::validate::{self, FieldError};

/// Every kind of resource the controller stores (DESIGN.md, Resources).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Node,
    Controller,
    ClusterUpdate,
    #[serde(rename = "VM")]
    Vm,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Node, Kind::Controller, Kind::ClusterUpdate, Kind::Vm];

    /// As written in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Controller => "Controller",
            Kind::ClusterUpdate => "ClusterUpdate",
            Kind::Vm => "VM",
        }
    }

    /// The path segment of its routes: `/v1/<plural>/<name>`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::Controller => "controllers",
            Kind::ClusterUpdate => "clusterupdates",
            Kind::Vm => "vms",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `kctl get vm`, `vms`, `VM`, `clusterupdate`, `cluster-updates`: case and `-` do not
/// matter, singular and plural both work. Anything else names the kinds there are.
impl FromStr for Kind {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Kind, FieldError> {
        let wanted: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        Kind::ALL
            .into_iter()
            .find(|k| wanted == k.as_str().to_ascii_lowercase() || wanted == k.plural())
            .ok_or_else(|| FieldError {
                field: "kind".into(),
                value: s.to_string(),
                problem: "is not a kind of resource".into(),
                fix: format!(
                    "use one of {}",
                    Kind::ALL
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }
}

/// `metadata`: who the object is. `generation` is the server's count of spec changes;
/// a client never sets it (what it sends is ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ObjectMeta {
    pub fn named(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: name.to_string(),
            ..ObjectMeta::default()
        }
    }

    /// `metadata.name` is a DNS label; label keys and values follow the Kubernetes rules
    /// (an optional `prefix/`, then up to 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends).
    pub fn validate(&self) -> Result<(), FieldError> {
        validate::resource_name("metadata.name", &self.name)?;
        for (key, value) in &self.labels {
            label_key(&format!("metadata.labels.{key}"), key)?;
            label_value(&format!("metadata.labels.{key}"), value)?;
        }
        Ok(())
    }
}

fn bad(field: &str, value: &str, problem: impl Into<String>, fix: &str) -> FieldError {
    FieldError {
        field: field.to_string(),
        value: value.to_string(),
        problem: problem.into(),
        fix: fix.to_string(),
    }
}

fn label_segment(field: &str, value: &str, what: &str) -> Result<(), FieldError> {
    const FIX: &str = "use at most 63 letters, digits, '.', '_' or '-', beginning and ending with a letter or digit";
    if value.len() > 63 {
        return Err(bad(
            field,
            value,
            format!("{what} is {} bytes long", value.len()),
            FIX,
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(field, value, format!("{what} contains {c:?}"), FIX));
    }
    let edge_ok = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    if !edge_ok(value.chars().next()) || !edge_ok(value.chars().last()) {
        return Err(bad(
            field,
            value,
            format!("{what} begins or ends with a symbol"),
            FIX,
        ));
    }
    Ok(())
}

/// A label key: `[prefix/]name`, the prefix a DNS name.
pub fn label_key(field: &str, key: &str) -> Result<(), FieldError> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err(bad(
                    field,
                    key,
                    "has an empty or over-long prefix",
                    "write the key as name or dns.prefix/name",
                ));
            }
            for part in prefix.split('.') {
                validate::dns_label(field, part)?;
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err(bad(field, key, "has an empty name", "give the key a name"));
    }
    label_segment(field, name, "the key")
}

/// A label value: empty, or a label segment.
pub fn label_value(field: &str, value: &str) -> Result<(), FieldError> {
    label_segment(field, value, "the value")
}

/// One condition in `status.conditions`, as Kubernetes has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Approved`, `HealthGatePassed`, ...
    #[serde(rename = "type")]
    pub condition_type: String,
    pub status: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// The common part of `status`; kinds add their phase type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status<Phase> {
    /// The `metadata.generation` the controller last acted on: when it is lower than
    /// the object's generation, the latest spec change is not reflected yet.
    #[serde(default)]
    pub observed_generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// An object of any kind: the envelope around its spec and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resource<Spec, St> {
    pub kind: Kind,
    pub metadata: ObjectMeta,
    pub spec: Spec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<St>,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// `kctl get nodes -l rack=a,tier!=db,gpu,!spare`: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

impl FromStr for LabelSelector {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<LabelSelector, FieldError> {
        let mut requirements = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let field = "selector";
            let requirement = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else {
                Requirement::Exists(part.into())
            };
            let (key, value) = match &requirement {
                Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, Some(v)),
                Requirement::Exists(k) | Requirement::NotExists(k) => (k, None),
            };
            label_key(field, key).map_err(|e| FieldError {
                value: part.to_string(),
                ..e
            })?;
            if let Some(value) = value {
                label_value(field, value).map_err(|e| FieldError {
                    value: part.to_string(),
                    ..e
                })?;
            }
            requirements.push(requirement);
        }
        Ok(LabelSelector { requirements })
    }
}

/// A kind's spec type: what the generic store, routes and kctl need to know about it.
/// Adding a kind is this impl (the type and its validation) plus a route file.
pub trait KindSpec: Serialize + serde::de::DeserializeOwned + Clone + PartialEq {
    /// The kind whose `spec` this is.
    const KIND: Kind;

    /// Checks every field; the error names the field's full path (`spec.target.flakeRev`).
    fn validate(&self) -> Result<(), FieldError>;
}

/// A document that did not decode into its type: `path` is where (`spec.strategy.batchSzie`,
/// empty for the document itself), `message` what serde said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", if path.is_empty() { "(document)" } else { path.as_str() })]
pub struct DecodeError {
    pub path: String,
    pub message: String,
}

/// Decodes any value with the path of the field that failed, so kctl (which reads YAML)
/// and the controller (which reads JSON) report the same path for the same mistake.
pub fn decode<'de, D, T>(deserializer: D) -> Result<T, DecodeError>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        DecodeError {
            // serde_path_to_error writes the document itself as ".".
            path: if path == "." { String::new() } else { path },
            message: err.into_inner().to_string(),
        }
    })
}

/// [`decode`] of an already-parsed JSON value (kctl converts YAML documents to one).
pub fn decode_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, DecodeError> {
    decode(value)
}

/// Why a document is not a valid object of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// Unknown field, wrong type, unparsable value: `path: message`.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A value that decoded but is not acceptable: `path: "value" problem; fix`.
    #[error(transparent)]
    Invalid(#[from] FieldError),
}

impl ObjectError {
    /// The path of the offending field.
    pub fn path(&self) -> &str {
        match self {
            ObjectError::Decode(e) => &e.path,
            ObjectError::Invalid(e) => &e.field,
        }
    }
}

/// A typed object of kind `S::KIND` whose status is kept as it came (clients ignore it
/// when applying, the controller owns it).
pub type Object<S> = Resource<S, serde_json::Value>;

/// Decodes and validates one object of kind `S::KIND`: unknown fields and bad types with
/// their path, `kind` must be `S::KIND`, `metadata` and `spec` validated field by field.
/// kctl runs this before it sends a document and the controller again when it receives it.
pub fn decode_object<S: KindSpec>(value: serde_json::Value) -> Result<Object<S>, ObjectError> {
    // The kind first, so a VM sent to the ClusterUpdate route is refused for its kind,
    // not for the first VM field the ClusterUpdate type does not know.
    if let Some(kind) = value.get("kind") {
        let kind: Kind = decode(kind.clone()).map_err(|e| DecodeError {
            path: "kind".into(),
            message: e.message,
        })?;
        check_kind::<S>(kind)?;
    }
    let object: Object<S> = decode(value)?;
    check_kind::<S>(object.kind)?;
    object.metadata.validate()?;
    object.spec.validate()?;
    Ok(object)
}

fn check_kind<S: KindSpec>(kind: Kind) -> Result<(), FieldError> {
    if kind == S::KIND {
        return Ok(());
    }
    Err(FieldError::new(
        "kind",
        kind.as_str(),
        format!("is not {}", S::KIND),
        format!("send {} objects to /v1/{}", kind, kind.plural()),
    ))
}

/// The object as it is sent and stored: `{kind, metadata{name, labels?}, spec}` with the
/// spec in its canonical form (camelCase keys, `"40G"` as bytes, defaults filled in), after
/// [`decode_object`] accepted it. `status` and `metadata.generation` are left out: the
/// server owns them.
pub fn canonical<S: KindSpec>(value: serde_json::Value) -> Result<serde_json::Value, ObjectError> {
    let object = decode_object::<S>(value)?;
    let mut metadata = serde_json::Map::new();
    metadata.insert(
        "name".into(),
        serde_json::Value::String(object.metadata.name),
    );
    if !object.metadata.labels.is_empty() {
        metadata.insert(
            "labels".into(),
            serde_json::Value::Object(
                object
                    .metadata
                    .labels
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect(),
            ),
        );
    }
    let spec = serde_json::to_value(&object.spec).map_err(|e| DecodeError {
        path: "spec".into(),
        message: e.to_string(),
    })?;
    Ok(serde_json::json!({"kind": object.kind, "metadata": metadata, "spec": spec}))
}

/// [`canonical`] for a document of any kind, dispatched on its `kind` (what `kctl apply -f`
/// does with each document): an unknown or missing kind is refused naming `kind`, and so
/// are the kinds that are not applied (`Node` and `Controller` register themselves).
pub fn canonical_any(value: serde_json::Value) -> Result<(Kind, serde_json::Value), ObjectError> {
    let kind_fix = "use kind: ClusterUpdate or kind: VM";
    let kind = match value.get("kind") {
        None => {
            return Err(FieldError::new("kind", "", "is missing", kind_fix).into());
        }
        Some(serde_json::Value::String(text)) => match text.as_str() {
            "ClusterUpdate" => Kind::ClusterUpdate,
            "VM" => Kind::Vm,
            "Node" => {
                return Err(FieldError::new(
                    "kind",
                    text,
                    "is not applied from a file",
                    "nodes register themselves; use kctl node approve, reject or delete",
                )
                .into());
            }
            "Controller" => {
                return Err(FieldError::new(
                    "kind",
                    text,
                    "is not applied from a file",
                    "controllers register themselves; use kctl get controllers or kctl delete controller",
                )
                .into());
            }
            _ => {
                return Err(
                    FieldError::new("kind", text, "is not a kind of resource", kind_fix).into(),
                );
            }
        },
        Some(other) => {
            return Err(
                FieldError::new("kind", &other.to_string(), "is not a string", kind_fix).into(),
            );
        }
    };
    let object = match kind {
        Kind::ClusterUpdate => canonical::<crate::clusterupdate::ClusterUpdateSpec>(value)?,
        Kind::Vm => canonical::<crate::vm::VmSpec>(value)?,
        Kind::Node | Kind::Controller => unreachable!("refused above"),
    };
    Ok((kind, object))
}

/// `GET /v1/<plural>`: every object, each the full `{kind, metadata, spec, status?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceList {
    pub items: Vec<serde_json::Value>,
}

/// One changed field of an apply: `path` as the operator writes it (`spec.strategy.batchSize`,
/// `metadata.labels.tier`); `old` absent when the field is new, `new` absent when removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<serde_json::Value>,
}

/// `PUT /v1/<plural>/<name>`: the object as stored (or as it would be, on a dry run), whether
/// it was created, and the field-level diff (empty when nothing changed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    pub object: serde_json::Value,
    pub created: bool,
    pub changes: Vec<FieldChange>,
    pub dry_run: bool,
}

/// `DELETE /v1/<plural>/<name>`: what was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub kind: Kind,
    pub name: String,
    /// Set when the object is not gone yet: what it waits for (a placed VM stays, phase
    /// `Deleting`, until its node confirms the volume is removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

/// The field-level diff between two objects' JSON: one [`FieldChange`] per changed leaf
/// (objects are walked, arrays and scalars compared whole), `metadata.generation` and
/// `status` left out (the server owns them). Paths join keys with `.`.
pub fn diff(old: Option<&serde_json::Value>, new: &serde_json::Value) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let old = old.unwrap_or(&empty);
    for key in ["metadata", "spec"] {
        diff_into(&mut changes, key, old.get(key), new.get(key));
    }
    changes.retain(|c| c.path != "metadata.generation");
    changes
}

fn diff_into(
    out: &mut Vec<FieldChange>,
    path: &str,
    old: Option<&serde_json::Value>,
    new: Option<&serde_json::Value>,
) {
    use serde_json::Value;
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                diff_into(out, &format!("{path}.{key}"), a.get(key), b.get(key));
            }
        }
        (Some(Value::Object(a)), None) => {
            for (key, value) in a {
                diff_into(out, &format!("{path}.{key}"), Some(value), None);
            }
        }
        (None, Some(Value::Object(b))) => {
            for (key, value) in b {
                diff_into(out, &format!("{path}.{key}"), None, Some(value));
            }
        }
        (a, b) if a != b => out.push(FieldChange {
            path: path.to_string(),
            old: a.cloned(),
            new: b.cloned(),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_as_people_type_them() {
        for (typed, kind) in [
            ("vm", Kind::Vm),
            ("VMs", Kind::Vm),
            ("cluster-updates", Kind::ClusterUpdate),
            ("ClusterUpdate", Kind::ClusterUpdate),
            ("nodes", Kind::Node),
            ("controller", Kind::Controller),
        ] {
            assert_eq!(typed.parse::<Kind>().unwrap(), kind, "{typed}");
        }
        let err = "pods".parse::<Kind>().unwrap_err().to_string();
        assert!(
            err.contains("kind") && err.contains("Node, Controller, ClusterUpdate, VM"),
            "{err}"
        );
        assert_eq!(serde_json::to_value(Kind::Vm).unwrap(), "VM");
        assert_eq!(Kind::ClusterUpdate.plural(), "clusterupdates");
    }

    #[test]
    fn an_envelope_round_trips_in_camel_case_and_refuses_unknown_fields() {
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Spec {
            storage_size_bytes: u64,
        }
        type Vm = Resource<Spec, Status<String>>;
        let json = serde_json::json!({
            "kind": "VM",
            "metadata": {"name": "web-1", "labels": {"tier": "web"}},
            "spec": {"storageSizeBytes": 42},
        });
        let vm: Vm = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(vm.metadata.name, "web-1");
        assert_eq!(serde_json::to_value(&vm).unwrap(), json);
        let unknown = serde_json::json!({
            "kind": "VM", "metadata": {"name": "x", "owner": "me"}, "spec": {"storageSizeBytes": 1}
        });
        let err = serde_json::from_value::<Vm>(unknown)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `owner`"), "{err}");
    }

    #[test]
    fn metadata_is_validated_with_the_field_named() {
        let mut meta = ObjectMeta::named("web-1");
        meta.validate().unwrap();
        meta.labels.insert("kcore.io/tier".into(), "web".into());
        meta.validate().unwrap();
        let err = ObjectMeta::named("Web_1").validate().unwrap_err();
        assert_eq!(err.field, "metadata.name");
        meta.labels.insert("bad key".into(), "x".into());
        let err = meta.validate().unwrap_err();
        assert_eq!(err.field, "metadata.labels.bad key");
        assert!(err.problem.contains("' '"), "{err}");
    }

    #[test]
    fn selectors_parse_and_match() {
        let sel: LabelSelector = "rack=a, tier!=db,gpu,!spare".parse().unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(sel.matches(&labels(&[("rack", "a"), ("gpu", "1")])));
        assert!(!sel.matches(&labels(&[("rack", "a"), ("gpu", "1"), ("tier", "db")])));
        assert!(!sel.matches(&labels(&[("rack", "a")])), "gpu must exist");
        assert!(!sel.matches(&labels(&[("rack", "a"), ("gpu", "1"), ("spare", "")])));
        assert!(LabelSelector::default().matches(&labels(&[])));
        let err = "rack=a b".parse::<LabelSelector>().unwrap_err();
        assert_eq!(err.value, "rack=a b");
    }

    #[test]
    fn the_diff_names_each_changed_leaf_and_skips_what_the_server_owns() {
        let old = serde_json::json!({
            "kind": "VM",
            "metadata": {"name": "a", "generation": 3, "labels": {"tier": "web"}},
            "spec": {"cpus": 1, "strategy": {"batchSize": 1, "kept": true}, "list": [1]},
            "status": {"phase": "Running"},
        });
        let new = serde_json::json!({
            "kind": "VM",
            "metadata": {"name": "a", "labels": {"rack": "b"}},
            "spec": {"cpus": 1, "strategy": {"batchSize": 2, "kept": true}, "list": [1, 2]},
        });
        let paths: Vec<(String, Option<serde_json::Value>, Option<serde_json::Value>)> =
            diff(Some(&old), &new)
                .into_iter()
                .map(|c| (c.path, c.old, c.new))
                .collect();
        use serde_json::json;
        assert_eq!(
            paths,
            vec![
                ("metadata.labels.rack".into(), None, Some(json!("b"))),
                ("metadata.labels.tier".into(), Some(json!("web")), None),
                ("spec.list".into(), Some(json!([1])), Some(json!([1, 2]))),
                (
                    "spec.strategy.batchSize".into(),
                    Some(json!(1)),
                    Some(json!(2))
                ),
            ]
        );
        assert!(diff(Some(&new), &new).is_empty());
        assert_eq!(diff(None, &new).len(), 6, "a new object lists every leaf");
    }

    #[test]
    fn decoding_reports_the_path_of_the_failing_field() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            size: u32,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            spec: Inner,
        }
        let err = decode_value::<Outer>(serde_json::json!({"spec": {"size": "x"}})).unwrap_err();
        assert_eq!(err.path, "spec.size");
        assert!(
            err.to_string().starts_with("spec.size: invalid type"),
            "{err}"
        );
        let err =
            decode_value::<Outer>(serde_json::json!({"spec": {"size": 1, "sise": 2}})).unwrap_err();
        assert_eq!(err.path, "spec.sise", "{err}");
        // Straight from YAML (as kctl reads a file), the same path.
        let yaml = "spec:\n  size: 1\n  sise: 2\n";
        let err = decode::<_, Outer>(serde_yaml_ng::Deserializer::from_str(yaml)).unwrap_err();
        assert_eq!(err.path, "spec.sise", "{err}");
        let err = decode_value::<Outer>(serde_json::json!([])).unwrap_err();
        assert!(err.to_string().starts_with("(document): "), "{err}");
    }

    #[test]
    fn any_document_is_dispatched_on_its_kind_and_made_canonical() {
        let vm = serde_json::json!({
            "kind": "VM", "metadata": {"name": "a", "labels": {"t": "x"}},
            "spec": {"storageBackend": "lvm", "storageSizeBytes": "1G"},
            "status": {"phase": "Running"},
        });
        let (kind, object) = canonical_any(vm).unwrap();
        assert_eq!(kind, Kind::Vm);
        assert_eq!(object["spec"]["storageSizeBytes"], 1u64 << 30);
        assert_eq!(object["spec"]["cpus"], 1, "defaults filled in");
        assert_eq!(object["metadata"]["labels"]["t"], "x");
        assert!(object.get("status").is_none());
        for (doc, value) in [
            (serde_json::json!({"metadata": {"name": "a"}}), ""),
            (serde_json::json!({"kind": "Pod"}), "Pod"),
            (serde_json::json!({"kind": "Node"}), "Node"),
            (serde_json::json!({"kind": "Controller"}), "Controller"),
            (serde_json::json!({"kind": 3}), "3"),
        ] {
            let err = canonical_any(doc).unwrap_err();
            assert_eq!(err.path(), "kind", "{err}");
            let ObjectError::Invalid(field) = err else {
                panic!("{err}")
            };
            assert_eq!(field.value, value);
        }
    }
}
