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
//!
//! Clock bound: a replicated operation or heartbeat stamped more than
//! [`StoreOptions::max_clock_skew`] ahead of this controller's clock is refused, not merged
//! ([`Store::merge_remote`], [`Store::observe_heartbeat`]). The bound is uhlc's own max
//! delta (`HLCBuilder::with_max_delta`). Operations stored before this check existed and
//! stamped beyond the bound when the store opens are moved to `refused_ops` (kept for
//! inspection, no longer merged) and reported ([`Store::refused_at_start`]), so such a
//! controller does not lose every local write until the far-future time. Local writes are
//! stamped under the same lock that merges remote operations, after the clock has moved
//! past every merged one, so they normally win; when one does not, the caller is told
//! ([`WriteOutcome::Superseded`]).
//!
//! Growth: for the soft `report.*` fields and `certificate` only the newest operation per
//! `(resource, field, origin)` is kept (also at open, for older databases): last-writer-wins makes older ones irrelevant and a
//! peer pulling after them receives the newer one, so compaction never changes what any
//! controller converges to, and a node's repeated reports cost one row per field and
//! controller. A change of free space alone is written at most every
//! [`STORAGE_FREE_INTERVAL`] unless it moved by more than 1% of the size.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use kcore_api::cluster::{Approval, CertificateInfo, NodeReport, StorageReport};
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

/// The default of `maxClockSkewSeconds`.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A node's storage report whose only change is free space is written durably at most
/// this often (unless free space moved by more than 1% of the size).
pub const STORAGE_FREE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// How a store treats times from elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Replicated operations and heartbeats stamped further ahead of the local clock than
    /// this are refused.
    pub max_clock_skew: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
        }
    }
}

/// A time from elsewhere too far ahead of this controller's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "stamped {} s ahead of this controller's clock, more than the {} s allowed (maxClockSkewSeconds)",
    ahead.as_secs(),
    bound.as_secs()
)]
pub struct ClockSkew {
    pub ahead: Duration,
    pub bound: Duration,
}

/// A replicated operation that was not merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedOp {
    pub op: Op,
    /// `None`: the HLC could not be parsed at all.
    pub skew: Option<ClockSkew>,
}

/// What [`Store::merge_remote`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteMerge {
    pub merged: usize,
    pub refused: Vec<RefusedOp>,
}

/// Operations of one origin moved to `refused_ops` when the store opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartupRefusal {
    pub origin: String,
    pub operations: usize,
    /// How far ahead of the clock at start the furthest one was.
    pub max_ahead_seconds: u64,
}

/// Whether a local write took effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Won,
    /// An operation with a later clock already holds the field: the write is recorded
    /// but the merged value is the newer one.
    Superseded(Winner),
}

/// The operation that holds a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Winner {
    pub field: String,
    pub hlc: String,
    /// RFC 3339 of the HLC's physical part.
    pub time: String,
    pub origin: String,
    pub value: Option<String>,
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
    refused_at_start: Vec<StartupRefusal>,
    /// Node id -> when its `report.storage` was last written durably (monotonic).
    storage_written: Mutex<HashMap<String, std::time::Instant>>,
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
CREATE INDEX IF NOT EXISTS ops_by_key ON ops (resource, field, origin, hlc);
CREATE TABLE IF NOT EXISTS refused_ops (
    hlc TEXT NOT NULL,
    origin TEXT NOT NULL,
    resource TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT,
    refused_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (origin, hlc, resource, field)
);
";

/// Fields compacted to the newest operation per origin: what nodes report, and the
/// record of a node's certificate (rewritten at every renewal).
fn compacted(field: &str) -> bool {
    field.starts_with("report.") || field == "certificate"
}

/// The same compaction over the whole table, for operations stored before it existed.
const COMPACT_ALL: &str = "DELETE FROM ops WHERE (field LIKE 'report.%' OR field = 'certificate')
    AND hlc < (SELECT MAX(o.hlc) FROM ops o
               WHERE o.resource = ops.resource AND o.field = ops.field AND o.origin = ops.origin)";

/// Parses `{time:016x}-{id}`.
fn parse_hlc(hlc: &str) -> Option<uhlc::Timestamp> {
    let (time_hex, id) = hlc.split_once('-')?;
    if time_hex.len() != 16 {
        return None;
    }
    let time = u64::from_str_radix(time_hex, 16).ok()?;
    let id = id.parse::<uhlc::ID>().ok()?;
    Some(uhlc::Timestamp::new(uhlc::NTP64(time), id))
}

fn hlc_time_rfc3339(hlc: &str) -> String {
    parse_hlc(hlc)
        .map(|ts| ts.get_time().to_string_rfc3339_lossy())
        .unwrap_or_else(|| "an unreadable time".to_string())
}

/// Appends `ops` and merges them last-writer-wins inside `tx`. Returns, per op, whether it
/// holds its field afterwards.
fn merge_in(tx: &rusqlite::Transaction<'_>, ops: &[Op]) -> Result<Vec<bool>, StoreError> {
    let mut insert_op = tx.prepare_cached(
        "INSERT OR IGNORE INTO ops (hlc, origin, resource, field, value) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut upsert = tx.prepare_cached(
        "INSERT INTO fields (resource, field, hlc, origin, value) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (resource, field) DO UPDATE SET
            hlc = excluded.hlc, origin = excluded.origin, value = excluded.value
         WHERE excluded.hlc > fields.hlc",
    )?;
    let mut compact = tx.prepare_cached(
        "DELETE FROM ops WHERE resource = ?1 AND field = ?2 AND origin = ?3 AND hlc <
            (SELECT MAX(hlc) FROM ops WHERE resource = ?1 AND field = ?2 AND origin = ?3)",
    )?;
    let mut won = Vec::with_capacity(ops.len());
    for op in ops {
        insert_op.execute(params![op.hlc, op.origin, op.resource, op.field, op.value])?;
        let changed =
            upsert.execute(params![op.resource, op.field, op.hlc, op.origin, op.value])?;
        won.push(changed > 0);
        if compacted(&op.field) {
            compact.execute(params![op.resource, op.field, op.origin])?;
        }
    }
    Ok(won)
}

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
    /// Opens (creating if needed) the database at `path` and loads the merged state, with
    /// the default [`StoreOptions`]. `origin` is this controller's id, recorded on every
    /// local operation.
    pub fn open(path: &Path, origin: &str) -> Result<Store, StoreError> {
        Store::open_with(path, origin, &StoreOptions::default())
    }

    /// [`Store::open`] with explicit options.
    pub fn open_with(
        path: &Path,
        origin: &str,
        options: &StoreOptions,
    ) -> Result<Store, StoreError> {
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
        let clock = uhlc::HLCBuilder::new()
            .with_id(id)
            .with_max_delta(options.max_clock_skew)
            .build();
        let mut store = Store {
            conn: Mutex::new(conn),
            clock,
            origin: origin.to_string(),
            nodes: RwLock::new(BTreeMap::new()),
            heartbeats: RwLock::new(HashMap::new()),
            dirty_heartbeats: Mutex::new(HashSet::new()),
            refused_at_start: Vec::new(),
            storage_written: Mutex::new(HashMap::new()),
        };
        store.refused_at_start = store.refuse_future_at_start()?;
        {
            let conn = store.conn.lock().map_err(|_| StoreError::Poisoned)?;
            let removed = conn.execute(COMPACT_ALL, [])?;
            if removed > 0 {
                tracing::info!(
                    operations = removed,
                    "compacted superseded report operations"
                );
            }
        }
        store.seed_clock()?;
        store.reload_all()?;
        Ok(store)
    }

    /// Refuses `time` when it is further ahead of the local clock than uhlc's max delta
    /// (the one bound for operations and heartbeats). Checked before
    /// `update_with_timestamp` because uhlc logs every refusal itself, and a refused peer
    /// is polled every second.
    fn check_ahead(&self, time: uhlc::NTP64) -> Result<(), ClockSkew> {
        let now = uhlc::system_time_clock();
        let bound = *self.clock.get_delta();
        if time > now && time - now > bound {
            return Err(ClockSkew {
                ahead: (time - now).to_duration(),
                bound: bound.to_duration(),
            });
        }
        Ok(())
    }

    /// The bound on how far ahead a replicated time may be.
    pub fn max_clock_skew(&self) -> Duration {
        self.clock.get_delta().to_duration()
    }

    /// Moves operations stamped beyond the bound (stored before the bound existed) to
    /// `refused_ops`, re-merges the fields they held from what is left, and forgets
    /// heartbeats beyond the bound.
    fn refuse_future_at_start(&self) -> Result<Vec<StartupRefusal>, StoreError> {
        let now = uhlc::system_time_clock();
        let limit = now + *self.clock.get_delta();
        let limit_hex = format!("{:016x}", limit.as_u64());
        let limit_unix = i64::try_from(limit.to_duration().as_secs()).unwrap_or(i64::MAX);
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let tx = conn.transaction()?;
        let future: Vec<(String, String, String, String)> = {
            let mut stmt = tx.prepare(
                "SELECT hlc, origin, resource, field FROM ops WHERE substr(hlc, 1, 16) > ?1
                 UNION SELECT hlc, origin, resource, field FROM fields WHERE substr(hlc, 1, 16) > ?1",
            )?;
            let rows = stmt.query_map(params![limit_hex], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let dropped_beats = tx.execute(
            "DELETE FROM soft_state WHERE last_heartbeat > ?1",
            params![limit_unix],
        )?;
        if future.is_empty() {
            tx.commit()?;
            if dropped_beats > 0 {
                tracing::warn!(
                    heartbeats = dropped_beats,
                    "heartbeats stamped beyond maxClockSkewSeconds were forgotten at start"
                );
            }
            return Ok(Vec::new());
        }
        let refused_at = now.to_string_rfc3339_lossy();
        tx.execute(
            "INSERT OR IGNORE INTO refused_ops (hlc, origin, resource, field, value, refused_at, reason)
             SELECT hlc, origin, resource, field, value, ?2, 'stamped beyond maxClockSkewSeconds at start'
             FROM ops WHERE substr(hlc, 1, 16) > ?1",
            params![limit_hex, refused_at],
        )?;
        tx.execute(
            "DELETE FROM ops WHERE substr(hlc, 1, 16) > ?1",
            params![limit_hex],
        )?;
        let mut summary: BTreeMap<String, StartupRefusal> = BTreeMap::new();
        let mut keys = HashSet::new();
        for (hlc, origin, resource, field) in &future {
            let ahead = parse_hlc(hlc)
                .map(|ts| (*ts.get_time() - now).to_duration().as_secs())
                .unwrap_or(0);
            let entry = summary.entry(origin.clone()).or_insert(StartupRefusal {
                origin: origin.clone(),
                operations: 0,
                max_ahead_seconds: 0,
            });
            entry.operations += 1;
            entry.max_ahead_seconds = entry.max_ahead_seconds.max(ahead);
            keys.insert((resource.clone(), field.clone()));
        }
        for (resource, field) in &keys {
            tx.execute(
                "DELETE FROM fields WHERE resource = ?1 AND field = ?2",
                params![resource, field],
            )?;
            tx.execute(
                "INSERT INTO fields (resource, field, hlc, origin, value)
                 SELECT resource, field, hlc, origin, value FROM ops
                 WHERE resource = ?1 AND field = ?2 ORDER BY hlc DESC LIMIT 1",
                params![resource, field],
            )?;
        }
        tx.commit()?;
        let summary: Vec<StartupRefusal> = summary.into_values().collect();
        for s in &summary {
            tracing::warn!(
                origin = %s.origin,
                operations = s.operations,
                max_ahead_seconds = s.max_ahead_seconds,
                heartbeats = dropped_beats,
                "operations stamped beyond maxClockSkewSeconds were moved to refused_ops at start; the fields they held went back to their previous values"
            );
        }
        Ok(summary)
    }

    /// Moves the clock past every stored operation, so after a restart local writes still
    /// win over everything merged before it.
    fn seed_clock(&self) -> Result<(), StoreError> {
        let newest: Option<String> = {
            let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
            conn.query_row("SELECT MAX(hlc) FROM ops", [], |row| row.get(0))?
        };
        if let Some(ts) = newest.as_deref().and_then(parse_hlc)
            && self.check_ahead(*ts.get_time()).is_ok()
        {
            let _ = self.clock.update_with_timestamp(&ts);
        }
        Ok(())
    }

    /// What [`Store::open`] moved to `refused_ops`, per origin.
    pub fn refused_at_start(&self) -> &[StartupRefusal] {
        &self.refused_at_start
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

    /// Appends `ops` as they are (no clock check) and merges them last-writer-wins, then
    /// refreshes the in-memory records they touch. Operations already present are ignored
    /// (idempotent). Replication goes through [`Store::merge_remote`], local writes through
    /// [`Store::write_local`].
    pub fn merge(&self, ops: &[Op]) -> Result<(), StoreError> {
        {
            let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
            let tx = conn.transaction()?;
            merge_in(&tx, ops)?;
            tx.commit()?;
        }
        self.reload_touched(ops)
    }

    fn reload_touched(&self, ops: &[Op]) -> Result<(), StoreError> {
        let touched: HashSet<&str> = ops.iter().map(|op| op.resource.as_str()).collect();
        for resource in touched {
            self.reload_resource(resource)?;
        }
        Ok(())
    }

    /// Stamps and merges local writes `(resource, field, value)`. The stamps are taken
    /// under the lock that [`Store::merge_remote`] holds while it moves the clock, so every
    /// operation merged before has a lower stamp. Returns, per write, whether it took effect.
    pub fn write_local(
        &self,
        writes: &[(String, String, Option<String>)],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let (ops, outcomes) = {
            let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
            let ops: Vec<Op> = writes
                .iter()
                .map(|(resource, field, value)| self.op(resource, field, value.clone()))
                .collect();
            let tx = conn.transaction()?;
            let won = merge_in(&tx, &ops)?;
            let mut outcomes = Vec::with_capacity(ops.len());
            for (op, won) in ops.iter().zip(won) {
                if won {
                    outcomes.push(WriteOutcome::Won);
                    continue;
                }
                let (hlc, origin, value): (String, String, Option<String>) = tx.query_row(
                    "SELECT hlc, origin, value FROM fields WHERE resource = ?1 AND field = ?2",
                    params![op.resource, op.field],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )?;
                tracing::warn!(
                    resource = %op.resource, field = %op.field, newer_hlc = %hlc, newer_origin = %origin,
                    "a local write lost to a newer operation"
                );
                outcomes.push(WriteOutcome::Superseded(Winner {
                    field: op.field.clone(),
                    time: hlc_time_rfc3339(&hlc),
                    hlc,
                    origin,
                    value,
                }));
            }
            tx.commit()?;
            (ops, outcomes)
        };
        self.reload_touched(&ops)?;
        Ok(outcomes)
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

    /// Records a replicated, non-node fact (for example the installed sub-CA certificate).
    pub fn put_field(&self, resource: &str, field: &str, value: &str) -> Result<(), StoreError> {
        let write = (
            resource.to_string(),
            field.to_string(),
            Some(encode(field, &value)?),
        );
        self.write_local(&[write])?;
        Ok(())
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
    /// them so its next local write wins over everything it has seen. An operation
    /// stamped beyond the clock bound (or with an unreadable stamp) is refused: not
    /// stored, not merged, and returned so the caller can report the peer.
    pub fn merge_remote(&self, ops: &[Op]) -> Result<RemoteMerge, StoreError> {
        let mut result = RemoteMerge::default();
        let mut accepted = Vec::with_capacity(ops.len());
        {
            let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
            for op in ops {
                let Some(ts) = parse_hlc(&op.hlc) else {
                    result.refused.push(RefusedOp {
                        op: op.clone(),
                        skew: None,
                    });
                    continue;
                };
                let admitted = self.check_ahead(*ts.get_time()).and_then(|()| {
                    // uhlc's own check, with the same bound: a refusal here is a race at
                    // the edge of the bound.
                    self.clock
                        .update_with_timestamp(&ts)
                        .map_err(|_| ClockSkew {
                            ahead: self.max_clock_skew(),
                            bound: self.max_clock_skew(),
                        })
                });
                match admitted {
                    Ok(()) => accepted.push(op.clone()),
                    Err(skew) => result.refused.push(RefusedOp {
                        op: op.clone(),
                        skew: Some(skew),
                    }),
                }
            }
            let tx = conn.transaction()?;
            merge_in(&tx, &accepted)?;
            tx.commit()?;
        }
        self.reload_touched(&accepted)?;
        result.merged = accepted.len();
        Ok(result)
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

    /// Takes a heartbeat time learnt from a peer when it is newer than ours, unless it is
    /// beyond the clock bound (a heartbeat in 2100 would keep a node `Ready` for good).
    pub fn observe_heartbeat(&self, node_id: &str, unix_seconds: i64) -> Result<(), ClockSkew> {
        let Ok(secs) = u64::try_from(unix_seconds) else {
            return Ok(());
        };
        self.check_ahead(uhlc::NTP64::from(Duration::from_secs(secs)))?;
        let newer = self
            .heartbeats
            .read()
            .map(|b| b.get(node_id).is_none_or(|t| *t < unix_seconds))
            .unwrap_or(false);
        if newer {
            self.heartbeat(node_id, unix_seconds);
        }
        Ok(())
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
        // A later local write has a lower clock than the forged remote one (merged raw,
        // past the clock check): remote wins.
        store.update_report("n1", &report("local")).unwrap();
        assert_eq!(store.node("n1").unwrap().report.hostname, "remote");
        // report.* keeps only the newest operation per origin: the older one is gone.
        assert_eq!(store.ops_since("ctl2", "", 100).unwrap().len(), 1);
    }

    fn op_at(time: u64, field: &str, value: &str) -> Op {
        Op {
            hlc: format!("{time:016x}-1"),
            origin: "ctl2".into(),
            resource: "node/n1".into(),
            field: field.into(),
            value: Some(value.into()),
        }
    }

    fn ntp_in(secs_from_now: i64) -> u64 {
        let now = uhlc::system_time_clock().to_duration().as_secs();
        let at = now.saturating_add_signed(secs_from_now);
        uhlc::NTP64::from(Duration::from_secs(at)).as_u64()
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store
            .conn
            .lock()
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn far_future_operations_and_heartbeats_are_refused_within_bound_ones_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite"), "ctl1").unwrap();
        store
            .put_node("n1", &report("a"), Approval::Approved, "t")
            .unwrap();
        let far = op_at(0xffff_ffff_ffff_fff0, "approval", "\"Rejected\"");
        let near = op_at(ntp_in(30), "report.hostname", "\"near\"");
        let merge = store.merge_remote(&[far.clone(), near]).unwrap();
        assert_eq!(merge.merged, 1);
        assert_eq!(merge.refused.len(), 1);
        let skew = merge.refused[0].skew.unwrap();
        assert!(
            skew.ahead > Duration::from_secs(70 * 365 * 24 * 3600),
            "{skew}"
        );
        assert_eq!(skew.bound, DEFAULT_MAX_CLOCK_SKEW);
        assert_eq!(store.node("n1").unwrap().approval, Approval::Approved);
        assert_eq!(store.node("n1").unwrap().report.hostname, "near");
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM ops WHERE field = 'approval' AND origin = 'ctl2'"
            ),
            0
        );
        // The op 30 s ahead moved the clock: a local write right after it still wins.
        store.update_report("n1", &report("local")).unwrap();
        assert_eq!(store.node("n1").unwrap().report.hostname, "local");
        // Unreadable stamps are refused too.
        let bad = Op {
            hlc: "zz".into(),
            ..far
        };
        assert_eq!(store.merge_remote(&[bad]).unwrap().refused[0].skew, None);

        assert!(store.observe_heartbeat("n1", 4_102_444_800).is_err());
        assert_eq!(store.last_heartbeat("n1"), None);
        let soon = api_now() + 10;
        store.observe_heartbeat("n1", soon).unwrap();
        assert_eq!(store.last_heartbeat("n1"), Some(soon));
    }

    fn api_now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn a_write_that_loses_says_so_and_a_reopen_refuses_what_is_beyond_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        {
            let store = Store::open(&path, "ctl1").unwrap();
            store
                .put_node("n1", &report("a"), Approval::Approved, "t")
                .unwrap();
            // As a controller before the bound existed would have stored it.
            store
                .merge(&[op_at(0xffff_ffff_ffff_fff0, "approval", "\"Approved\"")])
                .unwrap();
            store.heartbeat("n1", 4_102_444_800);
            store.flush_heartbeats().unwrap();
            let outcome = store.set_approval("n1", Approval::Rejected).unwrap();
            let WriteOutcome::Superseded(newer) = outcome else {
                panic!("the write should have lost: {outcome:?}");
            };
            assert_eq!(newer.origin, "ctl2");
            assert_eq!(newer.value.as_deref(), Some("\"Approved\""));
            assert!(newer.time.starts_with("2106-"), "{}", newer.time);
            assert_eq!(store.node("n1").unwrap().approval, Approval::Approved);
        }
        let store = Store::open(&path, "ctl1").unwrap();
        assert_eq!(
            store.refused_at_start(),
            &[StartupRefusal {
                origin: "ctl2".into(),
                operations: 1,
                max_ahead_seconds: store.refused_at_start()[0].max_ahead_seconds,
            }]
        );
        assert!(store.refused_at_start()[0].max_ahead_seconds > 70 * 365 * 24 * 3600);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM refused_ops"), 1);
        // The field went back to the newest remaining value (the local reject), the
        // far-future heartbeat is forgotten, and the next write wins.
        assert_eq!(store.node("n1").unwrap().approval, Approval::Rejected);
        assert_eq!(store.last_heartbeat("n1"), None);
        assert_eq!(
            store.set_approval("n1", Approval::Pending).unwrap(),
            WriteOutcome::Won
        );
    }

    #[test]
    fn a_restart_keeps_local_writes_ahead_of_merged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        {
            let store = Store::open(&path, "ctl1").unwrap();
            store
                .put_node("n1", &report("a"), Approval::Approved, "t")
                .unwrap();
            let near = op_at(ntp_in(40), "approval", "\"Pending\"");
            assert_eq!(store.merge_remote(&[near]).unwrap().merged, 1);
        }
        let store = Store::open(&path, "ctl1").unwrap();
        assert!(store.refused_at_start().is_empty());
        assert_eq!(
            store.set_approval("n1", Approval::Rejected).unwrap(),
            WriteOutcome::Won
        );
    }

    #[test]
    fn repeated_reports_keep_one_operation_per_field_and_free_space_is_rate_limited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite"), "ctl1").unwrap();
        store
            .put_node("n1", &report("a"), Approval::Approved, "t")
            .unwrap();
        let rows = |s: &Store| count(s, "SELECT COUNT(*) FROM ops");
        let mut r = report("a");
        r.labels.insert("x".into(), "0".into());
        store.update_report("n1", &r).unwrap();
        let after_one = rows(&store);
        for i in 1..50 {
            r.labels.insert("x".into(), format!("v{i}"));
            store.update_report("n1", &r).unwrap();
        }
        assert_eq!(store.node("n1").unwrap().report.labels["x"], "v49");
        assert_eq!(rows(&store), after_one);

        use kcore_api::cluster::VolumeMount;
        let mount = |free| VolumeMount {
            path: "/var/lib/kcore".into(),
            size_bytes: Some(1000),
            free_bytes: Some(free),
        };
        r.storage.mounts = vec![mount(500)];
        store.update_report("n1", &r).unwrap();
        // 5 bytes of 1000 moved: not written (the stored report keeps 500).
        r.storage.mounts = vec![mount(505)];
        store.update_report("n1", &r).unwrap();
        let free = |s: &Store| s.node("n1").unwrap().report.storage.mounts[0].free_bytes;
        assert_eq!(free(&store), Some(500));
        // 100 bytes (10%) moved: written at once.
        r.storage.mounts = vec![mount(400)];
        store.update_report("n1", &r).unwrap();
        assert_eq!(free(&store), Some(400));
        // Anything else changing in storage is written at once too.
        r.storage.mounts[0].path = "/srv".into();
        store.update_report("n1", &r).unwrap();
        assert_eq!(
            store.node("n1").unwrap().report.storage.mounts[0].path,
            "/srv"
        );
    }

    #[test]
    fn older_databases_are_compacted_at_open_and_certificates_keep_one_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        {
            let store = Store::open(&path, "ctl1").unwrap();
            store
                .put_node("n1", &report("a"), Approval::Approved, "t")
                .unwrap();
            let info = |serial: &str| CertificateInfo {
                serial: serial.into(),
                not_before: "a".into(),
                not_after: "b".into(),
                issuer: "c".into(),
            };
            store.set_certificate("n1", &info("01")).unwrap();
            store.set_certificate("n1", &info("02")).unwrap();
            assert_eq!(
                count(
                    &store,
                    "SELECT COUNT(*) FROM ops WHERE field = 'certificate'"
                ),
                1
            );
            // As an uncompacted database holds them: ten old hostnames from ctl2.
            let conn = store.conn.lock().unwrap();
            for i in 1..=10u64 {
                conn.execute(
                    "INSERT INTO ops (hlc, origin, resource, field, value) VALUES (?1, 'ctl2', 'node/n1', 'report.hostname', '\"old\"')",
                    params![format!("{i:016x}-1")],
                )
                .unwrap();
            }
        }
        let store = Store::open(&path, "ctl1").unwrap();
        // One from ctl1 (the registration), one (the newest) from ctl2.
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM ops WHERE field = 'report.hostname'"
            ),
            2
        );
        assert_eq!(store.node("n1").unwrap().certificate.unwrap().serial, "02");
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
