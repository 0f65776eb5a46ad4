//! The controller's state in SQLite (WAL).
//!
//! Every durable write is an operation `{hlc, origin, resource, field, value}` appended to
//! `ops` and merged into `fields` last-writer-wins per `(resource, field)` by hybrid
//! logical clock (`uhlc`). Local writes go through the same [`Store::merge`] that remote
//! operations will use once peers replicate, so replication only has to ship rows of
//! `ops`. A `NULL` value is a tombstone.
//!
//! Heartbeats are soft state: kept in memory, flushed to the local-only `soft_state`
//! table every few seconds so a restart still knows when each node was last seen, and
//! never turned into operations.
//!
//! Reads come from an in-memory copy of the merged node records, so `GET /v1/nodes` never
//! touches SQLite.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, RwLock};

use kcore_api::cluster::{Approval, CertificateInfo, NodeReport};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored value of {resource}.{field} is not valid: {source}")]
    Decode {
        resource: String,
        field: String,
        source: serde_json::Error,
    },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: String,
        source: serde_json::Error,
    },
    #[error("store lock poisoned (a previous write panicked)")]
    Poisoned,
    #[error("{resource} is missing right after it was written (a tombstone won the merge)")]
    Vanished { resource: String },
}

/// One replicated write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Hybrid logical clock time as 16 hex digits, then `-`, then the clock id, so
    /// operations compare correctly as plain strings.
    pub hlc: String,
    /// The controller that made the write.
    pub origin: String,
    /// For example `node/node-1` or `pki/sub-ca`.
    pub resource: String,
    pub field: String,
    /// JSON text; `None` is a tombstone.
    pub value: Option<String>,
}

/// A node's durable record (everything but heartbeats).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub report: NodeReport,
    pub approval: Approval,
    pub registered_at: Option<String>,
    pub certificate: Option<CertificateInfo>,
}

/// The controller's store.
pub struct Store {
    conn: Mutex<Connection>,
    clock: uhlc::HLC,
    origin: String,
    nodes: RwLock<BTreeMap<String, NodeRecord>>,
    /// Node id -> unix seconds of the last heartbeat.
    heartbeats: RwLock<HashMap<String, i64>>,
    dirty_heartbeats: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ops (
    hlc TEXT NOT NULL,
    origin TEXT NOT NULL,
    resource TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT,
    PRIMARY KEY (origin, hlc, resource, field)
);
CREATE TABLE IF NOT EXISTS fields (
    resource TEXT NOT NULL,
    field TEXT NOT NULL,
    hlc TEXT NOT NULL,
    origin TEXT NOT NULL,
    value TEXT,
    PRIMARY KEY (resource, field)
);
CREATE TABLE IF NOT EXISTS soft_state (
    node_id TEXT PRIMARY KEY,
    last_heartbeat INTEGER NOT NULL
);
";

fn node_resource(node_id: &str) -> String {
    format!("node/{node_id}")
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode {
        what: what.to_string(),
        source,
    })
}

impl Store {
    /// Opens (creating if needed) the database at `path` and loads the merged state.
    /// `origin` is this controller's id, recorded on every local operation.
    pub fn open(path: &Path, origin: &str) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // A missing state directory is created; anything else surfaces from open().
            let _ = std::fs::create_dir_all(dir);
        }
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        // NORMAL is durable across application crashes in WAL mode; only a power loss can
        // drop the last transactions, which replication and re-heartbeats repair.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        // A stable clock id per controller (FNV-1a of its id) keeps HLC ties between
        // controllers deterministic across restarts.
        let mut digest: u128 = 0x6c62272e07bb014262b821756295c58d;
        for b in origin.bytes() {
            digest ^= u128::from(b);
            digest = digest.wrapping_mul(0x0000000001000000000000000000013B);
        }
        let id = uhlc::ID::from(
            std::num::NonZeroU128::new(digest).unwrap_or(std::num::NonZeroU128::MIN),
        );
        let clock = uhlc::HLCBuilder::new().with_id(id).build();
        let store = Store {
            conn: Mutex::new(conn),
            clock,
            origin: origin.to_string(),
            nodes: RwLock::new(BTreeMap::new()),
            heartbeats: RwLock::new(HashMap::new()),
            dirty_heartbeats: Mutex::new(HashSet::new()),
        };
        store.reload_all()?;
        Ok(store)
    }

    fn new_hlc(&self) -> String {
        let ts = self.clock.new_timestamp();
        format!("{:016x}-{}", ts.get_time().as_u64(), ts.get_id())
    }

    fn op(&self, resource: &str, field: &str, value: Option<String>) -> Op {
        Op {
            hlc: self.new_hlc(),
            origin: self.origin.clone(),
            resource: resource.to_string(),
            field: field.to_string(),
            value,
        }
    }

    /// Appends `ops` and merges them last-writer-wins, then refreshes the in-memory
    /// records they touch. Operations already present are ignored (idempotent).
    pub fn merge(&self, ops: &[Op]) -> Result<(), StoreError> {
        let mut touched = HashSet::new();
        {
            let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
            let tx = conn.transaction()?;
            {
                let mut insert_op = tx.prepare_cached(
                    "INSERT OR IGNORE INTO ops (hlc, origin, resource, field, value) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO fields (resource, field, hlc, origin, value) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (resource, field) DO UPDATE SET
                        hlc = excluded.hlc, origin = excluded.origin, value = excluded.value
                     WHERE excluded.hlc > fields.hlc",
                )?;
                for op in ops {
                    insert_op.execute(params![
                        op.hlc,
                        op.origin,
                        op.resource,
                        op.field,
                        op.value
                    ])?;
                    upsert.execute(params![op.resource, op.field, op.hlc, op.origin, op.value])?;
                    touched.insert(op.resource.clone());
                }
            }
            tx.commit()?;
        }
        for resource in touched {
            self.reload_resource(&resource)?;
        }
        Ok(())
    }

    fn load_fields(&self, resource: &str) -> Result<BTreeMap<String, Option<String>>, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let mut stmt =
            conn.prepare_cached("SELECT field, value FROM fields WHERE resource = ?1")?;
        let rows = stmt.query_map(params![resource], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (field, value) = row?;
            out.insert(field, value);
        }
        Ok(out)
    }

    fn reload_resource(&self, resource: &str) -> Result<(), StoreError> {
        let Some(node_id) = resource.strip_prefix("node/") else {
            return Ok(());
        };
        let fields = self.load_fields(resource)?;
        let record = decode_node(resource, &fields)?;
        let mut nodes = self.nodes.write().map_err(|_| StoreError::Poisoned)?;
        match record {
            Some(record) => {
                nodes.insert(node_id.to_string(), record);
            }
            None => {
                nodes.remove(node_id);
            }
        }
        Ok(())
    }

    fn reload_all(&self) -> Result<(), StoreError> {
        let resources: Vec<String> = {
            let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
            let mut stmt = conn.prepare("SELECT DISTINCT resource FROM fields")?;
            let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for resource in resources {
            self.reload_resource(&resource)?;
        }
        let beats: Vec<(String, i64)> = {
            let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
            let mut stmt = conn.prepare("SELECT node_id, last_heartbeat FROM soft_state")?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut heartbeats = self.heartbeats.write().map_err(|_| StoreError::Poisoned)?;
        heartbeats.extend(beats);
        Ok(())
    }

    /// The merged record of one node.
    pub fn node(&self, node_id: &str) -> Option<NodeRecord> {
        self.nodes.read().ok()?.get(node_id).cloned()
    }

    /// Every node, sorted by id, with its last heartbeat (unix seconds).
    pub fn nodes(&self) -> Vec<(String, NodeRecord, Option<i64>)> {
        let Ok(nodes) = self.nodes.read() else {
            return Vec::new();
        };
        let beats = self.heartbeats.read().ok();
        nodes
            .iter()
            .map(|(id, rec)| {
                let beat = beats.as_ref().and_then(|b| b.get(id).copied());
                (id.clone(), rec.clone(), beat)
            })
            .collect()
    }

    /// Unix seconds of the node's last heartbeat.
    pub fn last_heartbeat(&self, node_id: &str) -> Option<i64> {
        self.heartbeats.read().ok()?.get(node_id).copied()
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
        let resource = node_resource(node_id);
        let existing = self.node(node_id);
        let mut ops = self.report_ops(&resource, existing.as_ref().map(|r| &r.report), report)?;
        if existing.is_none() {
            ops.push(self.op(
                &resource,
                "approval",
                Some(encode("approval", &approval_if_new)?),
            ));
            ops.push(self.op(
                &resource,
                "registeredAt",
                Some(encode("registeredAt", &now_rfc3339)?),
            ));
        }
        if !ops.is_empty() {
            self.merge(&ops)?;
        }
        self.node(node_id).ok_or_else(|| StoreError::Vanished {
            resource: resource.clone(),
        })
    }

    /// Updates only the report fields that differ from the stored report.
    pub fn update_report(&self, node_id: &str, report: &NodeReport) -> Result<(), StoreError> {
        let resource = node_resource(node_id);
        let existing = self.node(node_id);
        let ops = self.report_ops(&resource, existing.as_ref().map(|r| &r.report), report)?;
        if !ops.is_empty() {
            self.merge(&ops)?;
        }
        Ok(())
    }

    fn report_ops(
        &self,
        resource: &str,
        old: Option<&NodeReport>,
        new: &NodeReport,
    ) -> Result<Vec<Op>, StoreError> {
        let new_value = serde_json::to_value(new).map_err(|source| StoreError::Encode {
            what: "node report".into(),
            source,
        })?;
        let old_value = match old {
            Some(old) => serde_json::to_value(old).map_err(|source| StoreError::Encode {
                what: "node report".into(),
                source,
            })?,
            None => serde_json::Value::Null,
        };
        let mut ops = Vec::new();
        if let serde_json::Value::Object(map) = &new_value {
            for (key, value) in map {
                if old_value.get(key) != Some(value) {
                    ops.push(self.op(resource, &format!("report.{key}"), Some(value.to_string())));
                }
            }
        }
        if let serde_json::Value::Object(old_map) = &old_value {
            for key in old_map.keys() {
                if new_value.get(key).is_none() {
                    ops.push(self.op(resource, &format!("report.{key}"), None));
                }
            }
        }
        Ok(ops)
    }

    pub fn set_approval(&self, node_id: &str, approval: Approval) -> Result<(), StoreError> {
        let op = self.op(
            &node_resource(node_id),
            "approval",
            Some(encode("approval", &approval)?),
        );
        self.merge(&[op])
    }

    pub fn set_certificate(&self, node_id: &str, info: &CertificateInfo) -> Result<(), StoreError> {
        let op = self.op(
            &node_resource(node_id),
            "certificate",
            Some(encode("certificate", info)?),
        );
        self.merge(&[op])
    }

    /// Records a replicated, non-node fact (for example the installed sub-CA certificate).
    pub fn put_field(&self, resource: &str, field: &str, value: &str) -> Result<(), StoreError> {
        let op = self.op(resource, field, Some(encode(field, &value)?));
        self.merge(&[op])
    }

    /// The merged value of a non-node field.
    pub fn get_field(&self, resource: &str, field: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let value: Option<Option<String>> = conn
            .query_row(
                "SELECT value FROM fields WHERE resource = ?1 AND field = ?2",
                params![resource, field],
                |row| row.get(0),
            )
            .optional()?;
        Ok(match value.flatten() {
            Some(text) => {
                Some(
                    serde_json::from_str(&text).map_err(|source| StoreError::Decode {
                        resource: resource.to_string(),
                        field: field.to_string(),
                        source,
                    })?,
                )
            }
            None => None,
        })
    }

    /// Every operation after `after` (exclusive) made by `origin`, in clock order: what a
    /// peer pulls with its per-origin cursor.
    pub fn ops_since(
        &self,
        origin: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Op>, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let mut stmt = conn.prepare_cached(
            "SELECT hlc, origin, resource, field, value FROM ops WHERE origin = ?1 AND hlc > ?2 ORDER BY hlc LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![origin, after, limit], |row| {
            Ok(Op {
                hlc: row.get(0)?,
                origin: row.get(1)?,
                resource: row.get(2)?,
                field: row.get(3)?,
                value: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest operation held from each origin: this store's version vector. A peer
    /// that holds something newer for an origin has operations to send.
    pub fn version_vector(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let mut stmt = conn.prepare_cached("SELECT origin, MAX(hlc) FROM ops GROUP BY origin")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Merges operations pulled from a peer, first moving this controller's clock past
    /// them so its next local write wins over everything it has seen.
    pub fn merge_remote(&self, ops: &[Op]) -> Result<(), StoreError> {
        for op in ops {
            let Some((time_hex, id)) = op.hlc.split_once('-') else {
                continue;
            };
            let (Ok(time), Ok(id)) = (u64::from_str_radix(time_hex, 16), id.parse::<uhlc::ID>())
            else {
                continue;
            };
            let ts = uhlc::Timestamp::new(uhlc::NTP64(time), id);
            if let Err(err) = self.clock.update_with_timestamp(&ts) {
                // A peer clock far ahead: keep the operation (LWW still orders it), but
                // say so, since local writes may lose to it until the clocks meet.
                tracing::warn!(origin = %op.origin, "peer clock ahead of ours: {err}");
            }
        }
        self.merge(ops)
    }

    /// Soft state: remember a heartbeat (flushed by [`Store::flush_heartbeats`]).
    pub fn heartbeat(&self, node_id: &str, unix_seconds: i64) {
        if let Ok(mut beats) = self.heartbeats.write() {
            beats.insert(node_id.to_string(), unix_seconds);
        }
        if let Ok(mut dirty) = self.dirty_heartbeats.lock() {
            dirty.insert(node_id.to_string());
        }
    }

    /// Every known last heartbeat (node id -> unix seconds), for peers.
    pub fn heartbeats(&self) -> BTreeMap<String, i64> {
        self.heartbeats
            .read()
            .map(|b| b.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// Takes a heartbeat time learnt from a peer when it is newer than ours.
    pub fn observe_heartbeat(&self, node_id: &str, unix_seconds: i64) {
        let newer = self
            .heartbeats
            .read()
            .map(|b| b.get(node_id).is_none_or(|t| *t < unix_seconds))
            .unwrap_or(false);
        if newer {
            self.heartbeat(node_id, unix_seconds);
        }
    }

    /// Writes heartbeats received since the last flush to the local `soft_state` table.
    pub fn flush_heartbeats(&self) -> Result<usize, StoreError> {
        let dirty: Vec<String> = {
            let mut dirty = self
                .dirty_heartbeats
                .lock()
                .map_err(|_| StoreError::Poisoned)?;
            dirty.drain().collect()
        };
        if dirty.is_empty() {
            return Ok(0);
        }
        let beats: Vec<(String, i64)> = {
            let beats = self.heartbeats.read().map_err(|_| StoreError::Poisoned)?;
            dirty
                .into_iter()
                .filter_map(|id| beats.get(&id).map(|t| (id, *t)))
                .collect()
        };
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO soft_state (node_id, last_heartbeat) VALUES (?1, ?2)
                 ON CONFLICT (node_id) DO UPDATE SET last_heartbeat = excluded.last_heartbeat",
            )?;
            for (id, t) in &beats {
                stmt.execute(params![id, t])?;
            }
        }
        tx.commit()?;
        Ok(beats.len())
    }
}

fn decode_node(
    resource: &str,
    fields: &BTreeMap<String, Option<String>>,
) -> Result<Option<NodeRecord>, StoreError> {
    let decode = |field: &str, text: &str| -> Result<serde_json::Value, StoreError> {
        serde_json::from_str(text).map_err(|source| StoreError::Decode {
            resource: resource.to_string(),
            field: field.to_string(),
            source,
        })
    };
    let mut report = serde_json::Map::new();
    let mut approval = None;
    let mut registered_at = None;
    let mut certificate = None;
    for (field, value) in fields {
        let Some(text) = value else { continue };
        let value = decode(field, text)?;
        if let Some(key) = field.strip_prefix("report.") {
            report.insert(key.to_string(), value);
        } else {
            let err = |source| StoreError::Decode {
                resource: resource.to_string(),
                field: field.clone(),
                source,
            };
            match field.as_str() {
                "approval" => approval = Some(serde_json::from_value(value).map_err(err)?),
                "registeredAt" => registered_at = Some(serde_json::from_value(value).map_err(err)?),
                "certificate" => certificate = Some(serde_json::from_value(value).map_err(err)?),
                // Fields from newer controllers are kept in SQLite and ignored here.
                _ => {}
            }
        }
    }
    // A node exists once it registered (approval set); a certificate issued for a node
    // that never registered is kept but not listed.
    let Some(approval) = approval else {
        return Ok(None);
    };
    let report: NodeReport =
        serde_json::from_value(serde_json::Value::Object(report)).map_err(|source| {
            StoreError::Decode {
                resource: resource.to_string(),
                field: "report".into(),
                source,
            }
        })?;
    Ok(Some(NodeRecord {
        report,
        approval,
        registered_at,
        certificate,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(host: &str) -> NodeReport {
        NodeReport {
            hostname: host.into(),
            dc_id: "DC1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn state_survives_reopen_and_heartbeats_are_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        {
            let store = Store::open(&path, "ctl1").unwrap();
            store
                .put_node(
                    "n1",
                    &report("hv1"),
                    Approval::Pending,
                    "2026-01-01T00:00:00Z",
                )
                .unwrap();
            store.set_approval("n1", Approval::Approved).unwrap();
            store.heartbeat("n1", 1234);
            assert_eq!(store.flush_heartbeats().unwrap(), 1);
        }
        let store = Store::open(&path, "ctl1").unwrap();
        let rec = store.node("n1").unwrap();
        assert_eq!(rec.approval, Approval::Approved);
        assert_eq!(rec.report.hostname, "hv1");
        assert_eq!(store.last_heartbeat("n1"), Some(1234));
        let mode: String = store
            .conn
            .lock()
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn merge_is_last_writer_wins_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite"), "ctl1").unwrap();
        store
            .put_node("n1", &report("a"), Approval::Approved, "t")
            .unwrap();
        let newer = Op {
            hlc: "ffffffffffffffff-1".into(),
            origin: "ctl2".into(),
            resource: "node/n1".into(),
            field: "report.hostname".into(),
            value: Some("\"remote\"".into()),
        };
        let older = Op {
            hlc: "0000000000000001-1".into(),
            value: Some("\"stale\"".into()),
            ..newer.clone()
        };
        store.merge(&[newer.clone(), older]).unwrap();
        store.merge(&[newer]).unwrap();
        assert_eq!(store.node("n1").unwrap().report.hostname, "remote");
        // A later local write has a lower clock than the forged remote one: remote wins.
        store.update_report("n1", &report("local")).unwrap();
        assert_eq!(store.node("n1").unwrap().report.hostname, "remote");
        assert_eq!(store.ops_since("ctl2", "", 100).unwrap().len(), 2);
    }

    #[test]
    fn unchanged_re_registration_writes_no_operations() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite"), "ctl1").unwrap();
        store
            .put_node("n1", &report("a"), Approval::Approved, "t")
            .unwrap();
        let before = store.ops_since("ctl1", "", 1000).unwrap().len();
        store
            .put_node("n1", &report("a"), Approval::Pending, "t2")
            .unwrap();
        assert_eq!(store.ops_since("ctl1", "", 1000).unwrap().len(), before);
        assert_eq!(store.node("n1").unwrap().approval, Approval::Approved);
    }
}
