//! Controller-to-controller replication: pull-based, per-origin cursors.
//!
//! Each controller serves its version vector (`GET /v1/replication/vector`: the newest
//! operation it holds from every origin) and the operations of one origin after a cursor
//! (`GET /v1/replication/ops?origin=O&after=HLC`). Every peer of the peer set (the
//! `peers` seeds plus discovered controllers) is followed by its own task: it long-polls
//! the peer's vector (`?since=VERSION&waitMs=`, answered at the peer's next change or
//! after [`PULL_INTERVAL`]), and for each origin where the peer holds something newer, the operations after our own newest one are pulled in pages
//! and merged last-writer-wins. Because a controller
//! serves every origin it holds, not only its own, operations relay through the graph
//! and no full mesh is needed. The cursor is our own version vector's entry for that
//! origin (the store's durable `vector` table), so it survives restarts and compaction.
//!
//! Both routes are for the `controller` role only. Per-peer timeouts follow the measured
//! round-trip time ([`adaptive_timeout`]); peers are pulled independently and one that
//! keeps failing backs off within a bound ([`backoff_ticks`]). The peer set is
//! reconciled every [`PULL_INTERVAL`] from the `Controller` records ([`crate::membership`]), and the
//! ops route records how far each pulling controller got ([`PullCursor`]).
//!
//! Clock bound: operations and heartbeats a peer serves stamped more than
//! `maxClockSkewSeconds` ahead of this controller's clock are refused (see
//! [`crate::store`]); the peer is then `ClockAhead` with the measured skew, logged at warn
//! once per change of its state, and listed by `GET /v1/replication/peers` (admin and
//! controller roles) beside the operations refused at start.
//!
//! Compaction ([`crate::store::Store::compact`], every `compaction.intervalSeconds`)
//! removes operations every known controller holds (what each holds is recorded from its
//! pull cursor and from its own version vector) and those older than the retention. A
//! pull whose cursor is older than what was compacted is answered `snapshotNeeded`; the
//! puller then installs `GET /v1/replication/snapshot` (the merged state and its version
//! vector) and continues with operations. A controller that holds nothing from other
//! origins yet (a new one) starts from a snapshot too.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};

use kcore_pki::Role;
use serde::{Deserialize, Serialize};

use crate::api::{AppState, Caller, internal};
use crate::store::{Op, Snapshot, StartupRefusal};
use kcore_net::ApiFailure;

mod pull;
pub use pull::{
    MAX_BACKOFF_TICKS, Peer, PeerFactory, PullReport, adaptive_timeout, backoff_ticks, compact,
    pull_once, run,
};

/// How often a peer is polled when it does not long-poll (an older controller), and the
/// longest a long poll of its version vector waits for a change ([`VectorQuery`]): soft
/// state (heartbeats) travels in the vector, so it is fetched at least this often.
pub const PULL_INTERVAL: Duration = Duration::from_secs(1);
/// Operations per page.
pub const PAGE: usize = 500;
/// The least time between two pulls from one peer: a peer whose store changes all the
/// time (reports from many nodes) is pulled at most this often, each pull taking what
/// accumulated, instead of once per change.
pub const MIN_PULL_SPACING: Duration = Duration::from_millis(50);

/// `GET /v1/replication/vector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionVector {
    pub controller_id: String,
    /// Origin -> newest HLC held.
    pub origins: BTreeMap<String, String>,
    /// Node id -> last heartbeat (unix seconds) known to the peer. Soft state travels
    /// here, beside the operations, never as operations: any controller then shows a
    /// node as `Ready` while it heartbeats to any other.
    #[serde(default)]
    pub heartbeats: BTreeMap<String, i64>,
    /// The serving controller's change counter ([`crate::store::Store::watch`]) when it
    /// answered: a puller sends it back as `since` to wait for the next change. `None`
    /// from a controller that does not long-poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// How long the answer waited for a change, so the puller can take it out of the
    /// round-trip time it measures.
    #[serde(default)]
    pub waited_ms: u64,
}

/// Query of `GET /v1/replication/vector`: with both, the answer waits until the store
/// changed since `since` or `waitMs` (at most [`PULL_INTERVAL`]) passed, so a peer's
/// writes are pulled as soon as they are made instead of at the next poll.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VectorQuery {
    #[serde(default)]
    pub since: Option<u64>,
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// Query of `GET /v1/replication/ops`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpsQuery {
    pub origin: String,
    #[serde(default)]
    pub after: String,
}

/// `GET /v1/replication/ops`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsPage {
    pub ops: Vec<Op>,
    /// True when more operations follow this page.
    pub more: bool,
    /// The cursor is older than what this controller compacted: fetch
    /// `GET /v1/replication/snapshot` first (`ops` is then empty).
    #[serde(default)]
    pub snapshot_needed: bool,
}

/// How a peer looked at its last poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerState {
    /// Not polled yet.
    Unknown,
    Healthy,
    /// The last poll failed (connection, TLS, HTTP).
    Unreachable,
    /// The peer served operations or heartbeats beyond the clock bound; they were refused.
    ClockAhead,
}

/// One configured peer in `GET /v1/replication/peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// The `peers` entry.
    pub peer: String,
    /// The id the peer gave in its version vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_id: Option<String>,
    pub state: PeerState,
    pub healthy: bool,
    /// Why it is not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `ClockAhead`: how far ahead of this controller's clock the furthest refused time was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_ahead_seconds: Option<u64>,
    /// Refused at the last poll.
    #[serde(default)]
    pub refused_operations: usize,
    #[serde(default)]
    pub refused_heartbeats: usize,
    /// RFC 3339: when the peer entered this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Operations this controller holds that the peer does not (from what the peer is
    /// known to hold: its pull cursor here and its own version vector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_operations: Option<u64>,
    /// Age in seconds of the oldest of those operations (0 when the peer lacks none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<u64>,
    /// RFC 3339: the last poll of the peer that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pull: Option<String>,
    /// The last failure, kept after the peer recovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// RFC 3339: when `lastError` happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<String>,
    /// Snapshots installed from this peer since this controller started.
    #[serde(default)]
    pub snapshots: u64,
}

impl PeerStatus {
    fn unknown(peer: &str) -> Self {
        PeerStatus {
            peer: peer.to_string(),
            controller_id: None,
            state: PeerState::Unknown,
            healthy: false,
            reason: None,
            clock_ahead_seconds: None,
            refused_operations: 0,
            refused_heartbeats: 0,
            since: None,
            lag_operations: None,
            lag_seconds: None,
            last_pull: None,
            last_error: None,
            last_error_at: None,
            snapshots: 0,
        }
    }
}

/// Every peer's status, by `peers` entry (kept in [`AppState`]).
pub type PeerStatuses = RwLock<BTreeMap<String, PeerStatus>>;

/// How far one controller holds each origin, as this controller knows it: the cursor it
/// pulls from here with, and its own version vector when this controller pulls from it.
/// Durable (the store's `peer_held` table); compaction waits for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullCursor {
    pub controller_id: String,
    /// Origin -> HLC.
    pub origins: BTreeMap<String, String>,
    /// RFC 3339: when it last moved forward.
    pub at: String,
}

/// `GET /v1/replication/peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerList {
    pub controller_id: String,
    pub max_clock_skew_seconds: u64,
    pub peers: Vec<PeerStatus>,
    /// Operations this controller moved to `refused_ops` when it started (stamped beyond
    /// the bound, stored before the bound existed), per origin.
    #[serde(default)]
    pub refused_at_start: Vec<StartupRefusal>,
    /// How far each other controller holds each origin, by controller id.
    #[serde(default)]
    pub pulled_by: Vec<PullCursor>,
    /// Rows of this controller's `ops` table.
    #[serde(default)]
    pub operations: u64,
}

pub async fn peers(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<PeerList>, ApiFailure> {
    caller.require(&[Role::Admin, Role::Controller])?;
    Ok(Json(peer_list(&state)?))
}

/// What `GET /v1/replication/peers` answers (also the source of `/metrics`' replication
/// figures, so both always say the same).
pub fn peer_list(state: &AppState) -> Result<PeerList, ApiFailure> {
    let known = state
        .peers
        .read()
        .map_err(|_| internal("peer status lock poisoned"))?
        .clone();
    // The current peer set, seeds first (Unknown until polled).
    let set = state
        .peer_set
        .read()
        .map_err(|_| internal("peer set lock poisoned"))?
        .clone()
        .unwrap_or_else(|| state.config.peers.clone());
    let mut peers: Vec<PeerStatus> = set
        .iter()
        .map(|p| {
            known
                .get(p)
                .cloned()
                .unwrap_or_else(|| PeerStatus::unknown(p))
        })
        .collect();
    for peer in &mut peers {
        if let Some(id) = &peer.controller_id {
            let lag = state.store.lag_of(id)?;
            peer.lag_operations = Some(lag.operations);
            peer.lag_seconds = Some(lag.seconds);
        }
    }
    Ok(PeerList {
        controller_id: state.config.controller_id.clone(),
        max_clock_skew_seconds: state.store.max_clock_skew().as_secs(),
        peers,
        refused_at_start: state.store.refused_at_start().to_vec(),
        pulled_by: state
            .store
            .held()?
            .into_iter()
            .map(|(controller_id, held)| PullCursor {
                controller_id,
                origins: held.origins,
                at: held.at,
            })
            .collect(),
        operations: state.store.operation_count()?,
    })
}

pub async fn vector(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<VectorQuery>,
) -> Result<Json<VersionVector>, ApiFailure> {
    caller.require(&[Role::Controller])?;
    let mut changes = state.store.watch();
    let started = std::time::Instant::now();
    if let (Some(since), Some(wait)) = (query.since, query.wait_ms)
        && *changes.borrow_and_update() == since
    {
        // Woken by the next merge that stores something; the receiver has seen `since`,
        // so a change between the comparison and the wait is not missed.
        let wait = Duration::from_millis(wait).min(PULL_INTERVAL);
        let _ = tokio::time::timeout(wait, changes.changed()).await;
    }
    let waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let version = *changes.borrow();
    Ok(Json(VersionVector {
        controller_id: state.config.controller_id.clone(),
        origins: state.store.version_vector()?,
        heartbeats: state.store.heartbeats(),
        version: Some(version),
        waited_ms,
    }))
}

pub async fn ops(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<OpsQuery>,
) -> Result<Json<OpsPage>, ApiFailure> {
    let puller = caller.require(&[Role::Controller])?.id.clone();
    // The puller holds everything up to its cursor (it asks after its newest one).
    state
        .store
        .record_held(&puller, &query.origin, &query.after)?;
    if let Some(compacted) = state.store.compacted_through(&query.origin)?
        && query.after < compacted
    {
        return Ok(Json(OpsPage {
            ops: Vec::new(),
            more: false,
            snapshot_needed: true,
        }));
    }
    let mut ops = state
        .store
        .ops_since(&query.origin, &query.after, PAGE + 1)?;
    let more = ops.len() > PAGE;
    ops.truncate(PAGE);
    Ok(Json(OpsPage {
        ops,
        more,
        snapshot_needed: false,
    }))
}

/// Query of `GET /v1/replication/snapshot`. With `pageRows`, one page of at most that
/// many rows after `(afterResource, afterField)`; without it, the whole snapshot (what a
/// controller from before paging asks for).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotQuery {
    #[serde(default)]
    pub page_rows: Option<usize>,
    #[serde(default)]
    pub after_resource: Option<String>,
    #[serde(default)]
    pub after_field: Option<String>,
}

/// `GET /v1/replication/snapshot`: the merged state and the version vector it
/// corresponds to, for a controller whose cursor is older than what was compacted.
pub async fn snapshot(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<SnapshotQuery>,
) -> Result<Json<Snapshot>, ApiFailure> {
    caller.require(&[Role::Controller])?;
    let Some(rows) = query.page_rows else {
        return Ok(Json(state.store.snapshot()?));
    };
    let after = match (&query.after_resource, &query.after_field) {
        (Some(resource), Some(field)) => Some((resource.as_str(), field.as_str())),
        (None, None) => None,
        _ => {
            return Err(ApiFailure::with_status(
                axum::http::StatusCode::BAD_REQUEST,
                kcore_api::ErrorCode::BadRequest,
                "afterResource and afterField: give both (the last row of the previous page) or neither",
            ));
        }
    };
    Ok(Json(state.store.snapshot_page(after, rows.max(1))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_peer_backs_off_within_a_bound() {
        let ticks: Vec<u32> = (1..=6).map(backoff_ticks).collect();
        assert_eq!(ticks, vec![0, 1, 3, 3, 3, 3]);
        assert_eq!(backoff_ticks(u32::MAX), MAX_BACKOFF_TICKS);
        assert_eq!(backoff_ticks(0), 0);
    }

    #[test]
    fn timeouts_follow_round_trip_time_within_bounds() {
        assert_eq!(
            adaptive_timeout(Duration::from_micros(300)),
            Duration::from_secs(2)
        );
        assert_eq!(
            adaptive_timeout(Duration::from_millis(150)),
            Duration::from_secs(3)
        );
        assert_eq!(
            adaptive_timeout(Duration::from_secs(5)),
            Duration::from_secs(30)
        );
    }
}
