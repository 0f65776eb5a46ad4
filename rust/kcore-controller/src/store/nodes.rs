//! The node record on the generic store: a node is the resource `node/<id>` with the
//! fields `report.<key>` (one per top-level key of its report), `approval`,
//! `registeredAt`, `certificate` and `cordon.<holder>` (the layout every existing database
//! has; `cordon` came later and is absent in older ones). It is read
//! through the same cache and assembly as every kind ([`super::resources::assemble`]);
//! this module only knows which fields a registration, a report or an approval writes.

use kcore_api::cluster::{
    Approval, CertificateInfo, CordonEntry, CordonHolder, Cordons, NodeReport, StorageReport,
};
use serde::Deserialize;

use super::resources::assemble;
use super::{Fields, STORAGE_FREE_INTERVAL, Store, StoreError, WriteOutcome, encode};

/// The resource key of node `node_id`.
pub fn node_resource(node_id: &str) -> String {
    format!("node/{node_id}")
}

/// A node's durable record (everything but heartbeats).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub report: NodeReport,
    pub approval: Approval,
    pub registered_at: Option<String>,
    pub certificate: Option<CertificateInfo>,
    pub cordons: Cordons,
}

/// What the assembled `node/<id>` object holds; fields from newer controllers are kept in
/// SQLite and ignored here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredNode {
    #[serde(default)]
    report: Option<serde_json::Value>,
    approval: Option<Approval>,
    registered_at: Option<String>,
    certificate: Option<CertificateInfo>,
    #[serde(default)]
    cordon: Cordons,
}

impl NodeRecord {
    /// The record in a node's merged fields. A node exists once it registered (approval
    /// set); a certificate issued for a node that never registered is kept but not listed.
    pub fn from_fields(resource: &str, fields: &Fields) -> Result<Option<NodeRecord>, StoreError> {
        let err = |field: &str| {
            let field = field.to_string();
            move |source| StoreError::Decode {
                resource: resource.to_string(),
                field,
                source,
            }
        };
        let stored: StoredNode = serde_json::from_value(assemble(fields)).map_err(err("node"))?;
        let Some(approval) = stored.approval else {
            return Ok(None);
        };
        let report = stored
            .report
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        Ok(Some(NodeRecord {
            report: serde_json::from_value(report).map_err(err("report"))?,
            approval,
            registered_at: stored.registered_at,
            certificate: stored.certificate,
            cordons: stored.cordon,
        }))
    }
}

fn decoded(resource: &str, fields: &Fields) -> Option<NodeRecord> {
    NodeRecord::from_fields(resource, fields).unwrap_or_else(|err| {
        tracing::error!("{err}");
        None
    })
}

impl Store {
    /// The merged record of one node.
    pub fn node(&self, node_id: &str) -> Option<NodeRecord> {
        let resource = node_resource(node_id);
        self.read_fields(&resource, |fields| decoded(&resource, fields))
            .flatten()
    }

    /// Every node, sorted by id, with its last heartbeat (unix seconds).
    pub fn nodes(&self) -> Vec<(String, NodeRecord, Option<i64>)> {
        // Copied under the cache's lock, decoded after it: a list of thousands of nodes
        // does not hold up the writes of their heartbeats while it decodes.
        let all = self.read_under("node/", |resource, fields| {
            Some((resource.to_string(), fields.clone()))
        });
        let records: Vec<(String, NodeRecord)> = all
            .into_iter()
            .filter_map(|(resource, fields)| {
                let record = decoded(&resource, &fields)?;
                Some((resource.strip_prefix("node/")?.to_string(), record))
            })
            .collect();
        let beats = self.heartbeats.read().ok();
        records
            .into_iter()
            .map(|(id, record)| {
                let beat = beats.as_ref().and_then(|b| b.get(&id).copied());
                (id, record, beat)
            })
            .collect()
    }

    /// Removes node `node_id`: every field it has gets a tombstone (replicated like any
    /// write) and its heartbeat is forgotten. A node that registers again afterwards is
    /// new (and waits for approval again when approval is manual). False when there was
    /// no such node.
    pub fn delete_node(&self, node_id: &str) -> Result<bool, StoreError> {
        let _cycle = self.write_cycle.lock().map_err(|_| StoreError::Poisoned)?;
        if self.node(node_id).is_none() {
            return Ok(false);
        }
        self.tombstone_all(&node_resource(node_id))?;
        if let Ok(mut beats) = self.heartbeats.write() {
            beats.remove(node_id);
        }
        Ok(true)
    }

    /// Records a node's (first or repeated) registration. Only the fields that changed
    /// become operations, so re-registration after an agent restart costs little.
    pub fn put_node(
        &self,
        node_id: &str,
        report: &NodeReport,
        approval_if_new: Approval,
        now_rfc3339: &str,
    ) -> Result<NodeRecord, StoreError> {
        let _cycle = self.write_cycle.lock().map_err(|_| StoreError::Poisoned)?;
        let resource = node_resource(node_id);
        let existing = self.node(node_id);
        let mut writes = report_writes(&resource, existing.as_ref().map(|r| &r.report), report)?;
        if existing.is_none() {
            writes.push((
                resource.clone(),
                "approval".into(),
                Some(encode("approval", &approval_if_new)?),
            ));
            writes.push((
                resource.clone(),
                "registeredAt".into(),
                Some(encode("registeredAt", &now_rfc3339)?),
            ));
        }
        self.note_storage_written(node_id, &writes);
        self.write_local(&writes)?;
        self.node(node_id).ok_or_else(|| StoreError::Vanished {
            resource: resource.clone(),
        })
    }

    /// Updates only the report fields that differ from the stored report. A storage
    /// report that differs only in free space by at most 1% of the size is written at
    /// most every [`STORAGE_FREE_INTERVAL`]; in between the stored one stands.
    pub fn update_report(&self, node_id: &str, report: &NodeReport) -> Result<(), StoreError> {
        let _cycle = self.write_cycle.lock().map_err(|_| StoreError::Poisoned)?;
        let resource = node_resource(node_id);
        let existing = self.node(node_id);
        let mut writes = report_writes(&resource, existing.as_ref().map(|r| &r.report), report)?;
        if let Some(old) = existing.as_ref().map(|r| &r.report.storage)
            && only_free_space_moved(old, &report.storage)
        {
            let recent = self
                .storage_written
                .lock()
                .ok()
                .and_then(|m| m.get(node_id).copied())
                .is_some_and(|t| t.elapsed() < STORAGE_FREE_INTERVAL);
            if recent {
                writes.retain(|(_, field, _)| field != "report.storage");
            }
        }
        self.note_storage_written(node_id, &writes);
        self.write_local(&writes)?;
        Ok(())
    }

    fn note_storage_written(&self, node_id: &str, writes: &[(String, String, Option<String>)]) {
        if writes.iter().any(|(_, field, _)| field == "report.storage")
            && let Ok(mut m) = self.storage_written.lock()
        {
            m.insert(node_id.to_string(), std::time::Instant::now());
        }
    }

    /// Sets a node's approval; says whether it took effect.
    pub fn set_approval(
        &self,
        node_id: &str,
        approval: Approval,
    ) -> Result<WriteOutcome, StoreError> {
        let write = (
            node_resource(node_id),
            "approval".to_string(),
            Some(encode("approval", &approval)?),
        );
        Ok(self
            .write_local(&[write])?
            .pop()
            .unwrap_or(WriteOutcome::Won))
    }

    /// Sets (`Some`) or lifts (`None`) one holder's cordon; says whether it took effect.
    pub fn set_cordon(
        &self,
        node_id: &str,
        holder: CordonHolder,
        entry: Option<&CordonEntry>,
    ) -> Result<WriteOutcome, StoreError> {
        let field = format!("cordon.{}", holder.as_str());
        let value = entry.map(|e| encode(&field, e)).transpose()?;
        Ok(self
            .write_local(&[(node_resource(node_id), field, value)])?
            .pop()
            .unwrap_or(WriteOutcome::Won))
    }

    pub fn set_certificate(&self, node_id: &str, info: &CertificateInfo) -> Result<(), StoreError> {
        let write = (
            node_resource(node_id),
            "certificate".to_string(),
            Some(encode("certificate", info)?),
        );
        // A lost write is logged by write_local; the issued certificate is valid anyway.
        self.write_local(&[write])?;
        Ok(())
    }
}

/// The `(resource, field, value)` writes that turn report `old` into `new`: one per
/// top-level key that changed, a tombstone per key that went away.
fn report_writes(
    resource: &str,
    old: Option<&NodeReport>,
    new: &NodeReport,
) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
    let to_value = |r: &NodeReport| {
        serde_json::to_value(r).map_err(|source| StoreError::Encode {
            what: "node report".into(),
            source,
        })
    };
    let new_value = to_value(new)?;
    let old_value = match old {
        Some(old) => to_value(old)?,
        None => serde_json::Value::Null,
    };
    let mut writes = Vec::new();
    if let serde_json::Value::Object(map) = &new_value {
        for (key, value) in map {
            if old_value.get(key) != Some(value) {
                writes.push((
                    resource.to_string(),
                    format!("report.{key}"),
                    Some(value.to_string()),
                ));
            }
        }
    }
    if let serde_json::Value::Object(old_map) = &old_value {
        for key in old_map.keys() {
            if new_value.get(key).is_none() {
                writes.push((resource.to_string(), format!("report.{key}"), None));
            }
        }
    }
    Ok(writes)
}

/// True when `new` differs from `old` only in free-space figures, each by at most 1% of
/// its size (or by nothing when the size is unknown).
fn only_free_space_moved(old: &StorageReport, new: &StorageReport) -> bool {
    fn small(old: Option<u64>, new: Option<u64>, size: Option<u64>) -> bool {
        match (old, new, size) {
            (Some(a), Some(b), Some(size)) => a.abs_diff(b) <= size / 100,
            (a, b, _) => a == b,
        }
    }
    let mut a = old.clone();
    let mut b = new.clone();
    let mut moved_little = true;
    if let (Some(va), Some(vb)) = (a.volume_group.as_mut(), b.volume_group.as_mut()) {
        moved_little &= small(va.free_bytes, vb.free_bytes, vb.size_bytes);
        (va.free_bytes, vb.free_bytes) = (None, None);
    }
    if let (Some(pa), Some(pb)) = (a.pool.as_mut(), b.pool.as_mut()) {
        moved_little &= small(pa.free_bytes, pb.free_bytes, pb.size_bytes);
        (pa.free_bytes, pb.free_bytes) = (None, None);
    }
    if a.mounts.len() == b.mounts.len() {
        for (ma, mb) in a.mounts.iter_mut().zip(b.mounts.iter_mut()) {
            moved_little &= small(ma.free_bytes, mb.free_bytes, mb.size_bytes);
            (ma.free_bytes, mb.free_bytes) = (None, None);
        }
    }
    moved_little && a == b
}
