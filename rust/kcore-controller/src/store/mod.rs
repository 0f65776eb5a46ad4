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
//! Reads come from an in-memory copy of every resource's merged fields (resource key ->
//! field -> JSON value), so `GET /v1/nodes` or `GET /v1/vms` never touches SQLite. One
//! cache and one layout serve every kind: nodes ([`nodes`]) and the generic `kind` /
//! `metadata` / `spec` / `status` objects ([`resources`]) are both views of it. Every
//! merge, local or replicated, bumps one [`Store::watch`] signal afterwards, so a loop
//! waiting on it wakes on a write that arrived from a peer.
//!
//! The pieces: [`startup`] (what happens once at open), [`heartbeats`] (soft state),
//! [`nodes`] (the node record), [`resources`] (apply / get / list / delete / watch),
//! [`compaction`] (the durable version vector, what each peer holds, compaction of what
//! every known peer holds, snapshots for a peer behind the compaction point).
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

mod compaction;
mod heartbeats;
mod nodes;
mod resources;
mod startup;
#[cfg(test)]
mod tests;

pub use compaction::{Compaction, CompactionPolicy, Held, Lag, Snapshot};
pub use nodes::{NodeRecord, node_resource};
pub use resources::{Applied, assemble, resource_key};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

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
    #[error("cannot store {what}")]
    Malformed { what: String },
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

impl Op {
    /// A row selected as `hlc, origin, resource, field, value` (from `ops` or `fields`).
    pub(crate) fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Op> {
        Ok(Op {
            hlc: row.get(0)?,
            origin: row.get(1)?,
            resource: row.get(2)?,
            field: row.get(3)?,
            value: row.get(4)?,
        })
    }
}

/// The controller's store.
pub struct Store {
    conn: Mutex<Connection>,
    clock: uhlc::HLC,
    origin: String,
    /// Resource key (`node/n1`, `vm/web-1`) -> field -> merged JSON value; tombstoned
    /// fields are absent, and so is a resource without any live field.
    objects: RwLock<BTreeMap<String, Fields>>,
    /// Bumped after every merge that stored something (local or replicated).
    changes: tokio::sync::watch::Sender<u64>,
    /// Serialises read-diff-write cycles ([`Store::apply`], node writes), so two local
    /// writers never compute their operations from the same stale record.
    write_cycle: Mutex<()>,
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

/// Fields compacted to the newest operation per origin: what nodes report, the record of
/// a node's certificate (rewritten at every renewal), and a controller's `lastSeen`
/// (refreshed every `membership::REFRESH_INTERVAL`).
fn compacted(resource: &str, field: &str) -> bool {
    field.starts_with("report.")
        || field == "certificate"
        || (resource.starts_with("controller/") && field == "status.lastSeen")
}

/// The same compaction over the whole table, for operations stored before it existed.
const COMPACT_ALL: &str = "DELETE FROM ops WHERE (field LIKE 'report.%' OR field = 'certificate'
        OR (resource LIKE 'controller/%' AND field = 'status.lastSeen'))
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

/// The physical time of an HLC string (`{time:016x}-{id}`) as seconds since the Unix
/// epoch, or `None` when it does not parse (replication lag in `/metrics`).
pub fn hlc_unix_seconds(hlc: &str) -> Option<f64> {
    parse_hlc(hlc).map(|ts| ts.get_time().to_duration().as_secs_f64())
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
    let mut raise_vector = tx.prepare_cached(compaction::RAISE_VECTOR)?;
    let mut compact = tx.prepare_cached(
        "DELETE FROM ops WHERE resource = ?1 AND field = ?2 AND origin = ?3 AND hlc <
            (SELECT MAX(hlc) FROM ops WHERE resource = ?1 AND field = ?2 AND origin = ?3)",
    )?;
    let mut won = Vec::with_capacity(ops.len());
    for op in ops {
        insert_op.execute(params![op.hlc, op.origin, op.resource, op.field, op.value])?;
        raise_vector.execute(params![op.origin, op.hlc])?;
        let changed =
            upsert.execute(params![op.resource, op.field, op.hlc, op.origin, op.value])?;
        won.push(changed > 0);
        if compacted(&op.resource, &op.field) {
            compact.execute(params![op.resource, op.field, op.origin])?;
        }
    }
    Ok(won)
}

/// A resource's merged live fields: field name -> JSON value.
pub type Fields = BTreeMap<String, serde_json::Value>;

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
        conn.execute_batch(compaction::SCHEMA).map_err(open_err)?;
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
            objects: RwLock::new(BTreeMap::new()),
            changes: tokio::sync::watch::Sender::new(0),
            write_cycle: Mutex::new(()),
            heartbeats: RwLock::new(HashMap::new()),
            dirty_heartbeats: Mutex::new(HashSet::new()),
            refused_at_start: Vec::new(),
            storage_written: Mutex::new(HashMap::new()),
        };
        store.refused_at_start = store.refuse_future_at_start()?;
        {
            let conn = store.conn.lock().map_err(|_| StoreError::Poisoned)?;
            conn.execute(compaction::VECTOR_FROM_OPS, [])?;
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
        for resource in &touched {
            self.reload_resource(resource)?;
        }
        if !touched.is_empty() {
            self.signal_change();
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
        let mut fields = Fields::new();
        for (field, text) in self.load_fields(resource)? {
            let Some(text) = text else { continue };
            let value = serde_json::from_str(&text).map_err(|source| StoreError::Decode {
                resource: resource.to_string(),
                field: field.clone(),
                source,
            })?;
            fields.insert(field, value);
        }
        let mut objects = self.objects.write().map_err(|_| StoreError::Poisoned)?;
        if fields.is_empty() {
            objects.remove(resource);
        } else {
            objects.insert(resource.to_string(), fields);
        }
        Ok(())
    }

    /// The merged live fields of one resource (a copy from the cache).
    pub fn fields(&self, resource: &str) -> Option<Fields> {
        self.objects.read().ok()?.get(resource).cloned()
    }

    /// `read` over one resource's merged fields, without copying them out of the cache.
    fn read_fields<R>(&self, resource: &str, read: impl FnOnce(&Fields) -> R) -> Option<R> {
        self.objects.read().ok()?.get(resource).map(read)
    }

    /// `read` over every resource under `prefix` (`vm/`), in key order, keeping what it
    /// returns; the cache is read in place (a list of 2,000 nodes copies nothing twice).
    fn read_under<R>(
        &self,
        prefix: &str,
        mut read: impl FnMut(&str, &Fields) -> Option<R>,
    ) -> Vec<R> {
        let Ok(objects) = self.objects.read() else {
            return Vec::new();
        };
        objects
            .range(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter_map(|(key, fields)| read(key, fields))
            .collect()
    }

    /// Every resource under `prefix` with its merged fields, in key order (copies; for
    /// append-only records such as a rollout's step records).
    pub fn fields_under(&self, prefix: &str) -> Vec<(String, Fields)> {
        self.read_under(prefix, |key, fields| {
            Some((key.to_string(), fields.clone()))
        })
    }

    /// Tells every [`Store::watch`] receiver that something was merged.
    fn signal_change(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
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
        let rows = stmt.query_map(params![origin, after, limit], Op::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest operation held from each origin: this store's version vector. A peer
    /// that holds something newer for an origin has operations to send.
    pub fn version_vector(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        // The `vector` table, not `MAX(hlc)` of `ops`: compaction removes operations.
        let mut stmt = conn.prepare_cached("SELECT origin, hlc FROM vector")?;
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
}
