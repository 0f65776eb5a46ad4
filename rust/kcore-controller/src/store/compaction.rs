//! What replication needs beyond the operation log: the durable version vector, how far
//! every peer holds each origin, compaction of operations every known peer holds, and
//! snapshots for a peer whose cursor is older than what was compacted.
//!
//! - **Version vector** (`vector` table): the newest operation merged per origin. It is
//!   kept apart from `ops` because compaction deletes operations: the cursor a controller
//!   pulls with must not move back when its own rows go.
//! - **Held** (`peer_held` table): per peer controller and origin, the newest operation it
//!   is known to hold, from two sources: the cursor it pulls from this controller with
//!   (`GET /v1/replication/ops`) and its own version vector when this controller pulls
//!   from it. Durable, so a restart does not forget what peers hold (and does not stall
//!   compaction until every peer has pulled again).
//! - **Compaction** ([`Store::compact`]): per origin, every operation at or before the
//!   oldest point every known peer holds goes, and so does every operation older than
//!   the retention (a peer away longer catches up by snapshot). The merged `fields` table
//!   is the state, so nothing merged changes. The highest operation removed is recorded
//!   per origin (`compacted` table): a pull whose cursor is before it is answered
//!   "snapshot needed". A tombstone in `fields` goes once its operation is compacted and
//!   it is older than the tombstone lifetime.
//! - **Snapshot** ([`Store::snapshot`], [`Store::install_snapshot`]): the merged `fields`
//!   rows (tombstones included) with the version vector they correspond to, read under
//!   one lock. Installing one merges the rows last-writer-wins and drops local rows the
//!   snapshot's vector covers but the snapshot lacks (a tombstone its sender already
//!   dropped), so a deleted object does not come back on a peer that was away.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{ClockSkew, Op, RefusedOp, RemoteMerge, Store, StoreError, parse_hlc};

/// Tables of this module (created with the store's schema).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vector (
    origin TEXT PRIMARY KEY,
    hlc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS compacted (
    origin TEXT PRIMARY KEY,
    hlc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS peer_held (
    peer TEXT NOT NULL,
    origin TEXT NOT NULL,
    hlc TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (peer, origin)
);
";

/// Raises `vector[origin]` to `hlc` (never lowers it).
pub(super) const RAISE_VECTOR: &str = "INSERT INTO vector (origin, hlc) VALUES (?1, ?2)
    ON CONFLICT (origin) DO UPDATE SET hlc = excluded.hlc WHERE excluded.hlc > vector.hlc";

/// At open: the vector of a database written before the `vector` table existed.
pub(super) const VECTOR_FROM_OPS: &str = "INSERT INTO vector (origin, hlc)
    SELECT origin, MAX(hlc) FROM ops WHERE 1 GROUP BY origin
    ON CONFLICT (origin) DO UPDATE SET hlc = excluded.hlc WHERE excluded.hlc > vector.hlc";

/// How much compaction keeps (`compaction:` in `controller.yaml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// The ids of the controllers whose holdings decide what may go (every live
    /// `Controller` record but this one).
    pub known_peers: Vec<String>,
    /// Operations older than this go even when a known peer does not hold them yet.
    pub retention: Duration,
    /// A compacted tombstone stays in `fields` at least this long after it was written.
    pub tombstone_lifetime: Duration,
}

/// What one compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Compaction {
    pub operations_removed: usize,
    pub tombstones_removed: usize,
    /// Rows of `ops` after it.
    pub operations_left: usize,
}

/// How far one peer holds each origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    /// Origin -> newest HLC held.
    pub origins: BTreeMap<String, String>,
    /// RFC 3339: when it last moved forward.
    pub at: String,
}

/// The merged state and the version vector it corresponds to
/// (`GET /v1/replication/snapshot`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub controller_id: String,
    /// Origin -> newest HLC covered.
    pub vector: BTreeMap<String, String>,
    /// Every `fields` row as the operation that holds it (`value: null`: a tombstone),
    /// ordered by resource and field; one page of them when paged.
    pub fields: Vec<Op>,
    /// Paged: more rows follow the last one of `fields` (ask again after it).
    #[serde(default)]
    pub more: bool,
}

/// How far a peer lags behind this controller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    /// Operations held here that the peer does not hold.
    pub operations: u64,
    /// Age of the oldest of them (0 when there are none).
    pub seconds: u64,
}

/// `{time:016x}` of `now - age`: every HLC string of an older time sorts before it.
fn hlc_prefix_before(age: Duration) -> String {
    let now = uhlc::system_time_clock().to_duration();
    let then = now.saturating_sub(age);
    format!("{:016x}", uhlc::NTP64::from(then).as_u64())
}

fn now_rfc3339() -> String {
    uhlc::system_time_clock().to_string_rfc3339_lossy()
}

impl Store {
    /// Records that `peer` holds `origin` up to `hlc`; only ever moves forward.
    pub fn record_held(&self, peer: &str, origin: &str, hlc: &str) -> Result<(), StoreError> {
        if hlc.is_empty() {
            return Ok(());
        }
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        conn.prepare_cached(
            "INSERT INTO peer_held (peer, origin, hlc, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (peer, origin) DO UPDATE SET hlc = excluded.hlc, at = excluded.at
             WHERE excluded.hlc > peer_held.hlc",
        )?
        .execute(params![peer, origin, hlc, now_rfc3339()])?;
        Ok(())
    }

    /// What every peer is known to hold, by peer id.
    pub fn held(&self) -> Result<BTreeMap<String, Held>, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let mut stmt = conn.prepare_cached("SELECT peer, origin, hlc, at FROM peer_held")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?;
        let mut out: BTreeMap<String, Held> = BTreeMap::new();
        for row in rows {
            let (peer, origin, hlc, at) = row?;
            let held = out.entry(peer).or_default();
            held.origins.insert(origin, hlc);
            if at > held.at {
                held.at = at;
            }
        }
        Ok(out)
    }

    /// Operations of `origin` at or before this HLC may have been compacted away: a pull
    /// after an older cursor needs a snapshot.
    pub fn compacted_through(&self, origin: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(conn
            .prepare_cached("SELECT hlc FROM compacted WHERE origin = ?1")?
            .query_row(params![origin], |row| row.get(0))
            .optional()?)
    }

    /// Rows of `ops`.
    pub fn operation_count(&self) -> Result<u64, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM ops", [], |row| row.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// How far `peer` lags behind this controller: the operations held here (still in
    /// `ops`) after what it is known to hold, per origin, and the age of the oldest
    /// operation it lacks. When those were compacted already (the peer will need a
    /// snapshot), the age is that of the newest operation it does hold, an upper bound.
    pub fn lag_of(&self, peer: &str) -> Result<Lag, StoreError> {
        let held = self.held()?.remove(peer).unwrap_or_default();
        let vector = self.version_vector()?;
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let mut count = conn
            .prepare_cached("SELECT COUNT(*), MIN(hlc) FROM ops WHERE origin = ?1 AND hlc > ?2")?;
        let mut compacted = conn.prepare_cached("SELECT hlc FROM compacted WHERE origin = ?1")?;
        let mut lag = Lag::default();
        let mut oldest: Option<uhlc::NTP64> = None;
        for (origin, newest) in &vector {
            let after = held.origins.get(origin).cloned().unwrap_or_default();
            // The peer is its own origin's authority, and one holding our newest lacks
            // nothing of this origin.
            if origin == peer || after >= *newest {
                continue;
            }
            let (n, min): (i64, Option<String>) =
                count.query_row(params![origin, after], |row| Ok((row.get(0)?, row.get(1)?)))?;
            lag.operations += u64::try_from(n).unwrap_or(0);
            let gone: Option<String> = compacted
                .query_row(params![origin], |row| row.get(0))
                .optional()?;
            let lacked_since = if gone.is_some_and(|g| g > after) {
                // What it lacks first was compacted: the newest it holds bounds the age
                // (or, holding nothing, the oldest compacted operation is unknown: the
                // first one still here stands in).
                parse_hlc(&after).or_else(|| min.as_deref().and_then(parse_hlc))
            } else {
                min.as_deref().and_then(parse_hlc)
            };
            if let Some(ts) = lacked_since {
                let t = *ts.get_time();
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        if let Some(at) = oldest {
            let now = uhlc::system_time_clock();
            if now > at {
                lag.seconds = (now - at).to_duration().as_secs();
            }
        }
        Ok(lag)
    }

    /// Removes operations every known peer holds (and those older than the retention),
    /// then tombstones whose operations are gone and which are older than the tombstone
    /// lifetime. The merged state does not change.
    pub fn compact(&self, policy: &CompactionPolicy) -> Result<Compaction, StoreError> {
        let held = self.held()?;
        let retention_cut = hlc_prefix_before(policy.retention);
        let tombstone_cut = hlc_prefix_before(policy.tombstone_lifetime);
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let tx = conn.transaction()?;
        let vector: Vec<(String, String)> = {
            let mut stmt = tx.prepare("SELECT origin, hlc FROM vector")?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut result = Compaction::default();
        for (origin, newest) in &vector {
            // The oldest point every known peer holds; with no peer, everything merged
            // here is the state (a new controller starts from a snapshot).
            let every_peer_holds = policy
                .known_peers
                .iter()
                .map(|peer| {
                    held.get(peer)
                        .and_then(|h| h.origins.get(origin))
                        .cloned()
                        .unwrap_or_default()
                })
                .min()
                .unwrap_or_else(|| newest.clone());
            let highest: Option<String> = tx.query_row(
                "SELECT MAX(hlc) FROM ops WHERE origin = ?1 AND (hlc <= ?2 OR hlc < ?3)",
                params![origin, every_peer_holds, retention_cut],
                |row| row.get(0),
            )?;
            let Some(highest) = highest else { continue };
            result.operations_removed += tx.execute(
                "DELETE FROM ops WHERE origin = ?1 AND hlc <= ?2",
                params![origin, highest],
            )?;
            tx.execute(
                "INSERT INTO compacted (origin, hlc) VALUES (?1, ?2)
                 ON CONFLICT (origin) DO UPDATE SET hlc = excluded.hlc WHERE excluded.hlc > compacted.hlc",
                params![origin, highest],
            )?;
        }
        result.tombstones_removed = tx.execute(
            "DELETE FROM fields WHERE value IS NULL AND hlc < ?1
               AND hlc <= (SELECT c.hlc FROM compacted c WHERE c.origin = fields.origin)",
            params![tombstone_cut],
        )?;
        let left: i64 = tx.query_row("SELECT COUNT(*) FROM ops", [], |row| row.get(0))?;
        result.operations_left = usize::try_from(left).unwrap_or(0);
        tx.commit()?;
        Ok(result)
    }

    /// The merged state and its version vector, read under one lock so they agree.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.snapshot_page(None, usize::MAX)
    }

    /// At most `limit` rows of the merged state after `(resource, field)` in key order,
    /// with the version vector as it is now. The pages of one snapshot are read apart, so
    /// a later page may hold rows newer than the first page's vector: installing state
    /// newer than a vector claims is safe (the merge is last-writer-wins and the newer
    /// operations are pulled again), so the puller keeps the first page's vector.
    pub fn snapshot_page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Snapshot, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let vector = {
            let mut stmt = conn.prepare_cached("SELECT origin, hlc FROM vector")?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<Result<BTreeMap<String, String>, _>>()?
        };
        let (resource, field) = after.unwrap_or(("", ""));
        // One more than asked, to know whether more follow.
        let wanted = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare_cached(
            "SELECT hlc, origin, resource, field, value FROM fields
             WHERE ?1 = 0 OR resource > ?2 OR (resource = ?2 AND field > ?3)
             ORDER BY resource, field LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![i64::from(after.is_some()), resource, field, wanted],
            Op::from_row,
        )?;
        let mut fields: Vec<Op> = rows.collect::<Result<_, _>>()?;
        let more = fields.len() > limit;
        fields.truncate(limit);
        Ok(Snapshot {
            controller_id: self.origin.clone(),
            vector,
            fields,
            more,
        })
    }

    /// Installs a peer's snapshot: its rows merge last-writer-wins, local rows it covers
    /// but lacks go, the vector rises to the snapshot's, and operations this store never
    /// held as operations are marked compacted (a pull from here before them needs a
    /// snapshot too). A snapshot with any time beyond the clock bound is refused whole:
    /// installing the rest would claim, through its vector, operations that were refused.
    pub fn install_snapshot(&self, snapshot: &Snapshot) -> Result<RemoteMerge, StoreError> {
        let mut refused = Vec::new();
        let mut stamps = Vec::with_capacity(snapshot.fields.len());
        for op in &snapshot.fields {
            match parse_hlc(&op.hlc) {
                None => refused.push(RefusedOp {
                    op: op.clone(),
                    skew: None,
                }),
                Some(ts) => match self.check_ahead(*ts.get_time()) {
                    Ok(()) => stamps.push(ts),
                    Err(skew) => refused.push(RefusedOp {
                        op: op.clone(),
                        skew: Some(skew),
                    }),
                },
            }
        }
        for (origin, hlc) in &snapshot.vector {
            match parse_hlc(hlc) {
                Some(ts) if self.check_ahead(*ts.get_time()).is_ok() => stamps.push(ts),
                bad => refused.push(RefusedOp {
                    op: Op {
                        hlc: hlc.clone(),
                        origin: origin.clone(),
                        resource: "(snapshot vector)".to_string(),
                        field: String::new(),
                        value: None,
                    },
                    skew: bad.map(|ts| ClockSkew {
                        ahead: (*ts.get_time() - uhlc::system_time_clock()).to_duration(),
                        bound: self.max_clock_skew(),
                    }),
                }),
            }
        }
        if !refused.is_empty() {
            return Ok(RemoteMerge { merged: 0, refused });
        }
        let in_snapshot: HashSet<(&str, &str)> = snapshot
            .fields
            .iter()
            .map(|op| (op.resource.as_str(), op.field.as_str()))
            .collect();
        let mut merged = 0;
        {
            let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
            for ts in &stamps {
                // Checked above against the same bound.
                let _ = self.clock.update_with_timestamp(ts);
            }
            let tx = conn.transaction()?;
            let ours: BTreeMap<String, String> = {
                let mut stmt = tx.prepare("SELECT origin, hlc FROM vector")?;
                let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let local: Vec<(String, String, String, String)> = {
                let mut stmt = tx.prepare("SELECT resource, field, hlc, origin FROM fields")?;
                let rows = stmt.query_map([], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            for (resource, field, hlc, origin) in &local {
                let covered = snapshot.vector.get(origin).is_some_and(|v| hlc <= v);
                if covered && !in_snapshot.contains(&(resource.as_str(), field.as_str())) {
                    merged += tx.execute(
                        "DELETE FROM fields WHERE resource = ?1 AND field = ?2",
                        params![resource, field],
                    )?;
                }
            }
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO fields (resource, field, hlc, origin, value) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (resource, field) DO UPDATE SET
                        hlc = excluded.hlc, origin = excluded.origin, value = excluded.value
                     WHERE excluded.hlc > fields.hlc",
                )?;
                for op in &snapshot.fields {
                    merged += upsert.execute(params![
                        op.resource,
                        op.field,
                        op.hlc,
                        op.origin,
                        op.value
                    ])?;
                }
            }
            for (origin, hlc) in &snapshot.vector {
                if ours.get(origin).is_none_or(|o| o < hlc) {
                    tx.execute(
                        "INSERT INTO compacted (origin, hlc) VALUES (?1, ?2)
                         ON CONFLICT (origin) DO UPDATE SET hlc = excluded.hlc WHERE excluded.hlc > compacted.hlc",
                        params![origin, hlc],
                    )?;
                }
                tx.execute(RAISE_VECTOR, params![origin, hlc])?;
            }
            tx.commit()?;
        }
        self.reload_objects()?;
        self.signal_change();
        Ok(RemoteMerge {
            merged,
            refused: Vec::new(),
        })
    }

    /// Rebuilds the whole cache from `fields` (resources that lost every row included).
    fn reload_objects(&self) -> Result<(), StoreError> {
        let mut keys: HashSet<String> = self
            .objects
            .read()
            .map_err(|_| StoreError::Poisoned)?
            .keys()
            .cloned()
            .collect();
        {
            let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
            let mut stmt = conn.prepare("SELECT DISTINCT resource FROM fields")?;
            let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
            for row in rows {
                keys.insert(row?);
            }
        }
        for key in keys {
            self.reload_resource(&key)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

    fn writes(n: usize, tag: &str) -> Vec<(String, String, Option<String>)> {
        (0..n)
            .map(|i| {
                (
                    format!("vm/w-{}", i % 100),
                    format!("spec.k{i}"),
                    Some(format!("\"{tag}-{i}\"")),
                )
            })
            .collect()
    }

    fn fields_table(store: &Store) -> Vec<Op> {
        let mut rows = store.snapshot().unwrap().fields;
        rows.sort_by(|a, b| (&a.resource, &a.field).cmp(&(&b.resource, &b.field)));
        rows
    }

    fn policy(peers: &[&str], retention: Duration, tombstones: Duration) -> CompactionPolicy {
        CompactionPolicy {
            known_peers: peers.iter().map(|p| p.to_string()).collect(),
            retention,
            tombstone_lifetime: tombstones,
        }
    }

    #[test]
    fn compaction_keeps_what_a_known_peer_still_needs_and_not_more() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite"), "ctl1").unwrap();
        store.write_local(&writes(3000, "v")).unwrap();
        assert_eq!(store.operation_count().unwrap(), 3000);
        let state = fields_table(&store);
        let vector = store.version_vector().unwrap();
        // ctl2 has pulled nothing yet: nothing it needs may go.
        let none = store.compact(&policy(&["ctl2"], FOREVER, FOREVER)).unwrap();
        assert_eq!(none.operations_removed, 0);
        // ctl2 holds the first 2,000: exactly those go.
        let held = store.ops_since("ctl1", "", 2000).unwrap();
        let point = held.last().unwrap().hlc.clone();
        store.record_held("ctl2", "ctl1", &point).unwrap();
        let done = store.compact(&policy(&["ctl2"], FOREVER, FOREVER)).unwrap();
        assert_eq!(done.operations_removed, 2000);
        assert_eq!(done.operations_left, 1000);
        assert_eq!(store.operation_count().unwrap(), 1000);
        assert_eq!(
            store.compacted_through("ctl1").unwrap(),
            Some(point.clone())
        );
        // The merged state and the vector (the pull cursor) are untouched.
        assert_eq!(fields_table(&store), state);
        assert_eq!(store.version_vector().unwrap(), vector);
        // What ctl2 still needs is all there, in order, after its cursor.
        let rest = store.ops_since("ctl1", &point, 5000).unwrap();
        assert_eq!(rest.len(), 1000);
        // Reopening keeps the vector although most operations are gone.
        drop(store);
        let store = Store::open(&dir.path().join("s.sqlite"), "ctl1").unwrap();
        assert_eq!(store.version_vector().unwrap(), vector);
        assert_eq!(store.held().unwrap()["ctl2"].origins["ctl1"], point);
    }

    #[test]
    fn past_the_retention_operations_go_even_if_a_peer_lacks_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite"), "ctl1").unwrap();
        store.write_local(&writes(500, "v")).unwrap();
        let lag = store.lag_of("ctl2").unwrap();
        assert_eq!(lag.operations, 500);
        let done = store
            .compact(&policy(&["ctl2"], Duration::ZERO, FOREVER))
            .unwrap();
        assert_eq!(done.operations_removed, 500);
        assert_eq!(done.operations_left, 0);
        assert!(store.compacted_through("ctl1").unwrap().is_some());
    }

    #[test]
    fn a_peer_away_past_compaction_converges_from_a_snapshot_and_deletes_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(&dir.path().join("a.sqlite"), "ctl1").unwrap();
        let b = Store::open(&dir.path().join("b.sqlite"), "ctl2").unwrap();
        a.write_local(&writes(200, "old")).unwrap();
        // b starts from a's snapshot, then goes away.
        let merged = b.install_snapshot(&a.snapshot().unwrap()).unwrap();
        assert!(merged.refused.is_empty());
        assert_eq!(fields_table(&a), fields_table(&b));
        // While b is away: new values, a deleted field, then compaction of everything
        // (retention and tombstone lifetime zero), so ops cannot bring b up to date.
        a.write_local(&writes(300, "new")).unwrap();
        a.write_local(&[("vm/w-1".into(), "spec.k1".into(), None)])
            .unwrap();
        let done = a
            .compact(&policy(&["ctl2"], Duration::ZERO, Duration::ZERO))
            .unwrap();
        assert_eq!(done.operations_left, 0);
        assert!(done.tombstones_removed >= 1);
        // b's cursor is before the compaction point: a pull would need a snapshot.
        let cursor = b.version_vector().unwrap()["ctl1"].clone();
        assert!(cursor < a.compacted_through("ctl1").unwrap().unwrap());
        assert!(b.fields("vm/w-1").unwrap().contains_key("spec.k1"));
        b.install_snapshot(&a.snapshot().unwrap()).unwrap();
        assert_eq!(fields_table(&a), fields_table(&b));
        assert!(!b.fields("vm/w-1").unwrap().contains_key("spec.k1"));
        assert_eq!(
            b.version_vector().unwrap()["ctl1"],
            a.version_vector().unwrap()["ctl1"]
        );
        // b did not receive those operations, so it must not serve them as if it had.
        assert_eq!(
            b.compacted_through("ctl1").unwrap(),
            a.version_vector().unwrap().get("ctl1").cloned()
        );
    }

    #[test]
    fn a_local_write_newer_than_the_snapshot_survives_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(&dir.path().join("a.sqlite"), "ctl1").unwrap();
        let b = Store::open(&dir.path().join("b.sqlite"), "ctl2").unwrap();
        a.write_local(&writes(10, "a")).unwrap();
        let snapshot = a.snapshot().unwrap();
        b.write_local(&[("vm/w-3".into(), "spec.k3".into(), Some("\"b\"".into()))])
            .unwrap();
        b.install_snapshot(&snapshot).unwrap();
        assert_eq!(b.fields("vm/w-3").unwrap()["spec.k3"], "b");
        assert_eq!(b.fields("vm/w-4").unwrap()["spec.k4"], "a-4");
    }

    #[test]
    fn a_snapshot_stamped_beyond_the_clock_bound_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let b = Store::open(&dir.path().join("b.sqlite"), "ctl2").unwrap();
        let snapshot = Snapshot {
            controller_id: "ctl1".into(),
            vector: BTreeMap::from([("ctl1".into(), "fffffffffffffff0-1".into())]),
            fields: vec![Op {
                hlc: "fffffffffffffff0-1".into(),
                origin: "ctl1".into(),
                resource: "vm/x".into(),
                field: "kind".into(),
                value: Some("\"VM\"".into()),
            }],
            more: false,
        };
        let merge = b.install_snapshot(&snapshot).unwrap();
        assert_eq!(merge.merged, 0);
        assert_eq!(merge.refused.len(), 2);
        assert!(b.fields("vm/x").is_none());
        assert!(!b.version_vector().unwrap().contains_key("ctl1"));
    }

    #[test]
    fn snapshot_pages_cover_every_row_once_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(&dir.path().join("a.sqlite"), "ctl1").unwrap();
        for i in 0..23 {
            a.write_local(&[(
                format!("vm/p-{}", i % 5),
                format!("spec.k{i:02}"),
                Some(format!("\"{i}\"")),
            )])
            .unwrap();
        }
        let whole = a.snapshot().unwrap();
        assert!(!whole.more);
        let mut paged = Vec::new();
        let mut after: Option<(String, String)> = None;
        let mut pages = 0;
        loop {
            let page = a
                .snapshot_page(after.as_ref().map(|(r, f)| (r.as_str(), f.as_str())), 7)
                .unwrap();
            pages += 1;
            assert!(page.fields.len() <= 7);
            assert_eq!(page.vector, whole.vector);
            let last = page
                .fields
                .last()
                .map(|op| (op.resource.clone(), op.field.clone()));
            paged.extend(page.fields);
            if !page.more {
                break;
            }
            after = last;
            assert!(pages < 10, "paging does not end");
        }
        assert_eq!(pages, whole.fields.len().div_ceil(7));
        assert_eq!(paged, whole.fields);
    }
}
