//! The generic resource store: `apply / get / list / delete / watch` for any kind, over the
//! same per-field last-writer-wins merge as everything else.
//!
//! Layout: an object of kind `K` named `n` is the resource `k/n` (`K` in lower case:
//! `vm/web-1`, `clusterupdate/release-1`) with the fields
//!
//! | field | holds |
//! |---|---|
//! | `kind` | the kind; present exactly while the object exists |
//! | `metadata.generation` | 1 at creation, +1 on every apply that changed the spec |
//! | `metadata.labels.<key>` | one label (the key verbatim, dots and all) |
//! | `spec.<key>` | one top-level key of the spec, whole |
//! | `status.<key>` | one top-level key of the status (written by controllers) |
//!
//! So an apply becomes one operation per changed top-level spec key and per changed
//! label, and two controllers that change different spec keys (or labels) of one object
//! at the same time both keep their change after replication. Two changes of the same
//! top-level key (say `strategy.batchSize` on one controller, `strategy.maxUnavailable`
//! on the other) are one field: the later one wins whole. Both controllers bump the
//! generation from the same value, so it ends one higher, not two: still above
//! `status.observedGeneration`, which is what a controller loop checks. Delete writes a
//! tombstone for every field; an apply after it creates the object anew (generation 1).
//!
//! The diff reported to the client ([`kcore_api::resource::diff`]) is finer than the
//! operations: one change per leaf, so `kctl apply --dry-run=server` shows
//! `spec.strategy.batchSize: 1 -> 2`.

use kcore_api::resource::{FieldChange, Kind, LabelSelector, diff};
use serde_json::{Map, Value};

use super::{Fields, Store, StoreError, encode};

/// The resource key of object `name` of `kind`.
pub fn resource_key(kind: Kind, name: &str) -> String {
    format!("{}/{name}", kind.as_str().to_ascii_lowercase())
}

fn object_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(inner) => inner,
        _ => unreachable!("made an object just above"),
    }
}

/// A resource's fields as one JSON object: `a` is `{a}`, `a.b` is `{a: {b}}` and
/// `a.b.rest` is `{a: {b: {"rest"}}}` with `rest` taken verbatim (a label key such as
/// `kcore.io/tier` keeps its dots). Nodes and every kind are read through this.
pub fn assemble(fields: &Fields) -> Value {
    let mut root = Map::new();
    for (field, value) in fields {
        let mut parts = field.splitn(3, '.');
        let first = parts.next().unwrap_or_default();
        match (parts.next(), parts.next()) {
            (None, _) => {
                root.insert(first.to_string(), value.clone());
            }
            (Some(second), None) => {
                object_entry(&mut root, first).insert(second.to_string(), value.clone());
            }
            (Some(second), Some(rest)) => {
                let inner = object_entry(object_entry(&mut root, first), second);
                inner.insert(rest.to_string(), value.clone());
            }
        }
    }
    Value::Object(root)
}

/// The object as the API shows it: `{kind, metadata{name, labels, generation}, spec, status?}`.
fn object_view(name: &str, fields: &Fields) -> Value {
    let mut object = assemble(fields);
    if let Value::Object(map) = &mut object {
        object_entry(map, "metadata").insert("name".into(), Value::String(name.to_string()));
        object_entry(map, "spec");
    }
    object
}

/// The fields an apply owns, from the object sent: `kind`, every label, every top-level
/// spec key. `status` and `metadata.generation` are the server's and never taken from it.
fn applied_fields(kind: Kind, object: &Value) -> Result<Fields, StoreError> {
    let malformed = |what: &str| StoreError::Malformed {
        what: format!("{kind} {what}"),
    };
    let mut fields = Fields::new();
    fields.insert("kind".into(), Value::String(kind.as_str().to_string()));
    if let Some(labels) = object.pointer("/metadata/labels") {
        let labels = labels
            .as_object()
            .ok_or_else(|| malformed("metadata.labels is not a map"))?;
        for (key, value) in labels {
            fields.insert(format!("metadata.labels.{key}"), value.clone());
        }
    }
    let spec = object
        .get("spec")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("spec is not an object"))?;
    for (key, value) in spec {
        fields.insert(format!("spec.{key}"), value.clone());
    }
    Ok(fields)
}

fn owned_by_apply(field: &str) -> bool {
    field == "kind" || field.starts_with("metadata.labels.") || field.starts_with("spec.")
}

fn labels_of(fields: &Fields) -> std::collections::BTreeMap<String, String> {
    fields
        .iter()
        .filter_map(|(field, value)| {
            let key = field.strip_prefix("metadata.labels.")?;
            Some((
                key.to_string(),
                value.as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// What [`Store::apply`] did (or, on a dry run, would do).
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The object after the apply, as [`Store::get`] shows it.
    pub object: Value,
    pub created: bool,
    /// Field-level diff, leaf by leaf; empty when nothing changed.
    pub changes: Vec<FieldChange>,
}

type Write = (String, String, Option<String>);

impl Store {
    /// Creates or updates the object `object` (`{kind, metadata{name, labels}, spec}`,
    /// already validated by its kind) of `kind`. Only the fields that differ become
    /// operations; the generation is 1 at creation and +1 when the spec changed. With
    /// `dry_run` nothing is written and the answer says what would have been.
    pub fn apply(&self, kind: Kind, object: &Value, dry_run: bool) -> Result<Applied, StoreError> {
        self.apply_creating_with(kind, object, dry_run, &[])
    }

    /// [`Store::apply`], and when the object is created, also the fields `on_create`
    /// (`status.owner` of a new `ClusterUpdate`) in the same write: a peer that replicates
    /// the new object gets them with it, never the object without them.
    pub fn apply_creating_with(
        &self,
        kind: Kind,
        object: &Value,
        dry_run: bool,
        on_create: &[(String, Value)],
    ) -> Result<Applied, StoreError> {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::Malformed {
                what: format!("{kind} without metadata.name"),
            })?;
        let _cycle = self.write_cycle.lock().map_err(|_| StoreError::Poisoned)?;
        let resource = resource_key(kind, name);
        let stored = self.fields(&resource).unwrap_or_default();
        let created = !stored.contains_key("kind");
        let mut wanted = applied_fields(kind, object)?;
        if created {
            wanted.extend(on_create.iter().cloned());
        }

        let mut writes: Vec<Write> = Vec::new();
        let mut after = stored.clone();
        let mut write = |field: &str, value: Option<&Value>| -> Result<(), StoreError> {
            let text = value.map(|v| encode(field, v)).transpose()?;
            writes.push((resource.clone(), field.to_string(), text));
            match value {
                Some(v) => after.insert(field.to_string(), v.clone()),
                None => after.remove(field),
            };
            Ok(())
        };
        for (field, value) in &wanted {
            if stored.get(field) != Some(value) {
                write(field, Some(value))?;
            }
        }
        for field in stored.keys() {
            // On creation anything left from before (a status written after a delete)
            // goes too, so a new object starts clean.
            if !wanted.contains_key(field) && (created || owned_by_apply(field)) {
                write(field, None)?;
            }
        }
        let spec_changed = wanted
            .iter()
            .filter(|(f, _)| f.starts_with("spec."))
            .any(|(f, v)| stored.get(f) != Some(v))
            || stored
                .keys()
                .any(|f| f.starts_with("spec.") && !wanted.contains_key(f));
        let generation = match stored.get("metadata.generation").and_then(Value::as_u64) {
            _ if created => Some(1),
            Some(n) if spec_changed => Some(n + 1),
            None => Some(1),
            Some(_) => None,
        };
        if let Some(generation) = generation {
            write("metadata.generation", Some(&Value::from(generation)))?;
        }

        let before = (!created).then(|| object_view(name, &stored));
        let object = object_view(name, &after);
        let changes = diff(before.as_ref(), &object);
        if !dry_run && !writes.is_empty() {
            self.write_local(&writes)?;
        }
        let object = if dry_run {
            object
        } else {
            // What the merge kept (a newer remote write may hold a field).
            self.get(kind, name).unwrap_or(object)
        };
        Ok(Applied {
            object,
            created,
            changes,
        })
    }

    /// The object `name` of `kind`, or `None` when it does not exist (or was deleted).
    pub fn get(&self, kind: Kind, name: &str) -> Option<Value> {
        self.read_fields(&resource_key(kind, name), |fields| {
            fields
                .contains_key("kind")
                .then(|| object_view(name, fields))
        })
        .flatten()
    }

    /// Every object of `kind` whose labels match `selector`, sorted by name.
    pub fn list(&self, kind: Kind, selector: &LabelSelector) -> Vec<Value> {
        let prefix = resource_key(kind, "");
        self.read_under(&prefix, |key, fields| {
            (fields.contains_key("kind") && selector.matches(&labels_of(fields)))
                .then(|| object_view(&key[prefix.len()..], fields))
        })
    }

    /// The names of the objects of `kind` whose merged `field` (`status.node`) is `value`,
    /// sorted, found without assembling the others: a node's VMs among thousands, on every
    /// long-poll answer.
    pub fn names_where(&self, kind: Kind, field: &str, value: &Value) -> Vec<String> {
        let prefix = resource_key(kind, "");
        self.read_under(&prefix, |key, fields| {
            (fields.contains_key("kind") && fields.get(field) == Some(value))
                .then(|| key[prefix.len()..].to_string())
        })
    }

    /// Deletes the object: a tombstone for every field it has, replicated like any write.
    /// False when it did not exist.
    pub fn delete(&self, kind: Kind, name: &str) -> Result<bool, StoreError> {
        let _cycle = self.write_cycle.lock().map_err(|_| StoreError::Poisoned)?;
        if self.get(kind, name).is_none() {
            return Ok(false);
        }
        self.tombstone_all(&resource_key(kind, name))?;
        Ok(true)
    }

    /// Replaces the object's `status` (one field per top-level key, like the spec). The
    /// status belongs to controllers: apply never writes it. False when the object does
    /// not exist.
    pub fn set_status(&self, kind: Kind, name: &str, status: &Value) -> Result<bool, StoreError> {
        let _cycle = self.write_cycle.lock().map_err(|_| StoreError::Poisoned)?;
        let resource = resource_key(kind, name);
        let Some(stored) = self.fields(&resource).filter(|f| f.contains_key("kind")) else {
            return Ok(false);
        };
        let status = status.as_object().ok_or_else(|| StoreError::Malformed {
            what: format!("{kind} {name}: status is not an object"),
        })?;
        let mut writes: Vec<Write> = Vec::new();
        for (key, value) in status {
            let field = format!("status.{key}");
            if stored.get(&field) != Some(value) {
                writes.push((
                    resource.clone(),
                    field.clone(),
                    Some(encode(&field, value)?),
                ));
            }
        }
        for field in stored.keys() {
            if let Some(key) = field.strip_prefix("status.")
                && !status.contains_key(key)
            {
                writes.push((resource.clone(), field.clone(), None));
            }
        }
        self.write_local(&writes)?;
        Ok(true)
    }

    /// A receiver whose value changes after every merge that stored something, local or
    /// replicated: `changed().await` wakes a controller loop, which then reads what it
    /// cares about (the signal says only that something changed).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A tombstone for every live field of `resource`.
    pub(super) fn tombstone_all(&self, resource: &str) -> Result<(), StoreError> {
        let writes: Vec<Write> = self
            .fields(resource)
            .unwrap_or_default()
            .into_keys()
            .map(|field| (resource.to_string(), field, None))
            .collect();
        self.write_local(&writes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite"), "ctl1").unwrap();
        (dir, store)
    }

    fn vm(name: &str, cpus: u64, labels: Value) -> Value {
        json!({"kind": "VM", "metadata": {"name": name, "labels": labels},
               "spec": {"cpus": cpus, "storageBackend": "lvm"}})
    }

    #[test]
    fn apply_creates_then_updates_with_a_diff_and_generations() {
        let (_dir, store) = store();
        let mut watch = store.watch();
        let first = store
            .apply(Kind::Vm, &vm("a", 1, json!({"tier": "web"})), false)
            .unwrap();
        assert!(first.created);
        assert_eq!(first.object["metadata"]["generation"], 1);
        assert_eq!(first.object["metadata"]["name"], "a");
        assert!(watch.has_changed().unwrap(), "a local apply signals");
        watch.mark_unchanged();

        let same = store
            .apply(Kind::Vm, &vm("a", 1, json!({"tier": "web"})), false)
            .unwrap();
        assert!(!same.created && same.changes.is_empty());
        assert_eq!(same.object["metadata"]["generation"], 1);
        assert!(
            !watch.has_changed().unwrap(),
            "nothing written, nothing signalled"
        );

        // A label change is not a spec change: the generation stays.
        let relabel = store
            .apply(Kind::Vm, &vm("a", 1, json!({"tier": "db"})), false)
            .unwrap();
        assert_eq!(relabel.object["metadata"]["generation"], 1);
        assert_eq!(relabel.changes.len(), 1);
        assert_eq!(relabel.changes[0].path, "metadata.labels.tier");

        let dry = store
            .apply(Kind::Vm, &vm("a", 4, json!({"tier": "db"})), true)
            .unwrap();
        assert_eq!(dry.object["metadata"]["generation"], 2);
        assert_eq!(
            store.get(Kind::Vm, "a").unwrap()["spec"]["cpus"],
            1,
            "dry run wrote nothing"
        );
        let real = store
            .apply(Kind::Vm, &vm("a", 4, json!({"tier": "db"})), false)
            .unwrap();
        assert_eq!(real.changes, dry.changes);
        assert_eq!(
            (
                real.changes[0].path.as_str(),
                real.changes[0].old.clone(),
                real.changes[0].new.clone()
            ),
            ("spec.cpus", Some(json!(1)), Some(json!(4)))
        );
        assert_eq!(
            store.get(Kind::Vm, "a").unwrap()["metadata"]["generation"],
            2
        );
        // A spec key that goes away is a change too, and is tombstoned.
        let mut fewer = vm("a", 4, json!({"tier": "db"}));
        fewer["spec"]
            .as_object_mut()
            .unwrap()
            .remove("storageBackend");
        let removed = store.apply(Kind::Vm, &fewer, false).unwrap();
        assert_eq!(removed.changes[0].path, "spec.storageBackend");
        assert_eq!(removed.object["metadata"]["generation"], 3);
        assert!(
            store.get(Kind::Vm, "a").unwrap()["spec"]
                .get("storageBackend")
                .is_none()
        );
    }

    #[test]
    fn list_selects_by_label_and_kind_and_delete_tombstones() {
        let (_dir, store) = store();
        store
            .apply(
                Kind::Vm,
                &vm("a", 1, json!({"kcore.io/tier": "web"})),
                false,
            )
            .unwrap();
        store
            .apply(Kind::Vm, &vm("b", 1, json!({})), false)
            .unwrap();
        let cu =
            json!({"kind": "ClusterUpdate", "metadata": {"name": "a"}, "spec": {"maxFailures": 0}});
        store.apply(Kind::ClusterUpdate, &cu, false).unwrap();
        let names = |sel: &str| -> Vec<String> {
            store
                .list(Kind::Vm, &sel.parse().unwrap())
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(""), ["a", "b"]);
        assert_eq!(
            names("kcore.io/tier=web"),
            ["a"],
            "a label key keeps its dots"
        );
        assert_eq!(names("!kcore.io/tier"), ["b"]);
        assert_eq!(
            store
                .list(Kind::ClusterUpdate, &LabelSelector::default())
                .len(),
            1
        );

        store
            .set_status(Kind::Vm, "a", &json!({"phase": "Running"}))
            .unwrap();
        assert_eq!(
            store.get(Kind::Vm, "a").unwrap()["status"]["phase"],
            "Running"
        );
        assert!(store.delete(Kind::Vm, "a").unwrap());
        assert!(!store.delete(Kind::Vm, "a").unwrap(), "already gone");
        assert_eq!(store.get(Kind::Vm, "a"), None);
        assert_eq!(names(""), ["b"]);
        assert!(
            store.get(Kind::ClusterUpdate, "a").is_some(),
            "same name, other kind"
        );
        let tombstones: i64 = store
            .conn
            .lock()
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM fields WHERE resource = 'vm/a' AND value IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            tombstones, 6,
            "kind, generation, label, two spec keys, status"
        );
        // Applied again, it is new: generation 1 and no status from before.
        let again = store
            .apply(Kind::Vm, &vm("a", 1, json!({})), false)
            .unwrap();
        assert!(again.created);
        assert_eq!(again.object["metadata"]["generation"], 1);
        assert!(again.object.get("status").is_none());
    }

    #[test]
    fn concurrent_edits_of_different_spec_keys_both_survive_the_merge() {
        let (_d1, one) = store();
        let dir = tempfile::tempdir().unwrap();
        let two = Store::open(&dir.path().join("s.sqlite"), "ctl2").unwrap();
        one.apply(Kind::Vm, &vm("a", 1, json!({})), false).unwrap();
        two.merge_remote(&one.ops_since("ctl1", "", 1000).unwrap())
            .unwrap();
        // ctl1 changes cpus, ctl2 the backend, neither having seen the other's change.
        one.apply(Kind::Vm, &vm("a", 2, json!({})), false).unwrap();
        let mut other = vm("a", 1, json!({}));
        other["spec"]["storageBackend"] = json!("zfs");
        let mut watch = one.watch();
        watch.mark_unchanged();
        two.apply(Kind::Vm, &other, false).unwrap();
        one.merge_remote(&two.ops_since("ctl2", "", 1000).unwrap())
            .unwrap();
        two.merge_remote(&one.ops_since("ctl1", "", 1000).unwrap())
            .unwrap();
        assert!(
            watch.has_changed().unwrap(),
            "a replicated merge signals too"
        );
        for store in [&one, &two] {
            let object = store.get(Kind::Vm, "a").unwrap();
            assert_eq!(object["spec"]["cpus"], 2);
            assert_eq!(object["spec"]["storageBackend"], "zfs");
            assert_eq!(object["metadata"]["generation"], 2);
        }
    }

    #[test]
    fn a_delete_concurrent_with_an_update_stays_deleted_and_a_create_starts_clean() {
        let (_d1, one) = store();
        let dir = tempfile::tempdir().unwrap();
        let two = Store::open(&dir.path().join("s.sqlite"), "ctl2").unwrap();
        one.apply(Kind::Vm, &vm("a", 1, json!({})), false).unwrap();
        two.merge_remote(&one.ops_since("ctl1", "", 1000).unwrap())
            .unwrap();
        one.delete(Kind::Vm, "a").unwrap();
        // ctl2 has not seen the delete and changes cpus after it: its cpus write is the
        // later one for that field, but it does not touch `kind`.
        two.apply(Kind::Vm, &vm("a", 8, json!({})), false).unwrap();
        one.merge_remote(&two.ops_since("ctl2", "", 1000).unwrap())
            .unwrap();
        two.merge_remote(&one.ops_since("ctl1", "", 1000).unwrap())
            .unwrap();
        for store in [&one, &two] {
            assert_eq!(store.get(Kind::Vm, "a"), None, "the kind tombstone stands");
        }
        let again = one.apply(Kind::Vm, &vm("a", 2, json!({})), false).unwrap();
        assert!(again.created);
        assert_eq!(again.object["spec"]["cpus"], 2);
        assert_eq!(again.object["metadata"]["generation"], 1);
    }

    #[test]
    fn assembly_nests_two_levels_and_keeps_the_rest_verbatim() {
        let fields: Fields = [
            ("approval".to_string(), json!("Approved")),
            ("report.hostname".to_string(), json!("hv1")),
            ("metadata.labels.a.b/c".to_string(), json!("x")),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            assemble(&fields),
            json!({"approval": "Approved", "report": {"hostname": "hv1"},
                   "metadata": {"labels": {"a.b/c": "x"}}})
        );
    }
}
