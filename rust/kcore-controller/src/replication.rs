//! Controller-to-controller replication: pull-based, per-origin cursors.
//!
//! Each controller serves its version vector (`GET /v1/replication/vector`: the newest
//! operation it holds from every origin) and the operations of one origin after a cursor
//! (`GET /v1/replication/ops?origin=O&after=HLC`). Every peer of the peer set (the
//! `peers` seeds plus discovered controllers) is polled: for each origin where the peer
//! holds something newer, the operations after our own newest one are pulled in pages
//! and merged last-writer-wins. Because a controller
//! serves every origin it holds, not only its own, operations relay through the graph
//! and no full mesh is needed. The cursor is simply `MAX(hlc)` of that origin in our
//! `ops` table, so it survives restarts without extra state.
//!
//! Both routes are for the `controller` role only. Per-peer timeouts follow the measured
//! round-trip time ([`adaptive_timeout`]); peers are pulled concurrently and one that
//! keeps failing backs off within a bound ([`backoff_ticks`]). The peer set is
//! reconciled every tick from the `Controller` records ([`crate::membership`]), and the
//! ops route records how far each pulling controller got ([`PullCursor`]).
//!
//! Clock bound: operations and heartbeats a peer serves stamped more than
//! `maxClockSkewSeconds` ahead of this controller's clock are refused (see
//! [`crate::store`]); the peer is then `ClockAhead` with the measured skew, logged at warn
//! once per change of its state, and listed by `GET /v1/replication/peers` (admin and
//! controller roles) beside the operations refused at start.
//!
//! Compaction keeps the newest operation per `(resource, field, origin)` of the soft
//! `report.*` fields, so a cursor never needs an operation that is gone: the newer one it
//! gets instead wins over it anyway. Not built yet: snapshot catch-up.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use kcore_net::{Client, ClientOptions};
use kcore_pki::Role;
use serde::{Deserialize, Serialize};

use crate::api::{AppState, Caller, internal};
use crate::store::{Op, StartupRefusal};
use kcore_net::ApiFailure;

/// How often each peer is polled.
pub const PULL_INTERVAL: Duration = Duration::from_secs(1);
/// Operations per page.
pub const PAGE: usize = 500;

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
        }
    }
}

/// Every peer's status, by `peers` entry (kept in [`AppState`]).
pub type PeerStatuses = RwLock<BTreeMap<String, PeerStatus>>;

/// How far one controller has pulled from this one: per origin, the newest operation
/// this controller served it (soft state, since this controller started).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullCursor {
    pub controller_id: String,
    /// Origin -> HLC.
    pub origins: BTreeMap<String, String>,
    /// RFC 3339: its last ops request.
    pub at: String,
}

/// Every puller's cursor, by controller id (kept in [`AppState`]).
pub type PullCursors = RwLock<BTreeMap<String, PullCursor>>;

/// Records that `puller` now holds `origin`'s operations up to `reached`; cursors only
/// move forward (a page re-asked after a restart does not move one back).
fn record_cursor(state: &AppState, puller: &str, origin: &str, reached: String) {
    let Ok(mut cursors) = state.cursors.write() else {
        return;
    };
    let cursor = cursors
        .entry(puller.to_string())
        .or_insert_with(|| PullCursor {
            controller_id: puller.to_string(),
            ..PullCursor::default()
        });
    let held = cursor.origins.entry(origin.to_string()).or_default();
    if reached > *held {
        *held = reached;
    }
    cursor.at = crate::api::rfc3339(time::OffsetDateTime::now_utc());
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
    /// How far each controller that pulls from this one has pulled, by controller id.
    #[serde(default)]
    pub pulled_by: Vec<PullCursor>,
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
    let peers: Vec<PeerStatus> = set
        .iter()
        .map(|p| {
            known
                .get(p)
                .cloned()
                .unwrap_or_else(|| PeerStatus::unknown(p))
        })
        .collect();
    Ok(PeerList {
        controller_id: state.config.controller_id.clone(),
        max_clock_skew_seconds: state.store.max_clock_skew().as_secs(),
        peers,
        refused_at_start: state.store.refused_at_start().to_vec(),
        pulled_by: state
            .cursors
            .read()
            .map_err(|_| internal("cursor lock poisoned"))?
            .values()
            .cloned()
            .collect(),
    })
}

pub async fn vector(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<VersionVector>, ApiFailure> {
    caller.require(&[Role::Controller])?;
    Ok(Json(VersionVector {
        controller_id: state.config.controller_id.clone(),
        origins: state.store.version_vector()?,
        heartbeats: state.store.heartbeats(),
    }))
}

pub async fn ops(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<OpsQuery>,
) -> Result<Json<OpsPage>, ApiFailure> {
    let puller = caller.require(&[Role::Controller])?.id.clone();
    let mut ops = state
        .store
        .ops_since(&query.origin, &query.after, PAGE + 1)?;
    let more = ops.len() > PAGE;
    ops.truncate(PAGE);
    let reached = ops.last().map_or(query.after.clone(), |op| op.hlc.clone());
    record_cursor(&state, &puller, &query.origin, reached);
    Ok(Json(OpsPage { ops, more }))
}

/// What one poll of a peer did.
#[derive(Debug, Clone, Default)]
pub struct PullReport {
    /// Operations merged.
    pub merged: usize,
    /// Round-trip time of the version-vector call.
    pub rtt: Duration,
    /// The id the peer gave.
    pub controller_id: String,
    pub refused_operations: usize,
    pub refused_heartbeats: usize,
    /// The furthest-ahead refused time.
    pub max_ahead: Option<Duration>,
    /// The first refusal, for people.
    pub first_refusal: Option<String>,
}

/// Pulls everything `peer` has that this store lacks, refusing what is stamped beyond the
/// clock bound.
pub async fn pull_once(
    state: &AppState,
    peer: &Client,
) -> Result<PullReport, kcore_net::ClientError> {
    let started = std::time::Instant::now();
    let theirs: VersionVector = peer.get_json("/v1/replication/vector").await?;
    let mut report = PullReport {
        rtt: started.elapsed(),
        controller_id: theirs.controller_id.clone(),
        ..PullReport::default()
    };
    let note = |report: &mut PullReport, ahead: Option<Duration>, what: String| {
        if let Some(ahead) = ahead {
            report.max_ahead = Some(report.max_ahead.map_or(ahead, |m| m.max(ahead)));
        }
        report.first_refusal.get_or_insert(what);
    };
    for (node, t) in &theirs.heartbeats {
        if let Err(skew) = state.store.observe_heartbeat(node, *t) {
            report.refused_heartbeats += 1;
            note(
                &mut report,
                Some(skew.ahead),
                format!("heartbeat of node {node} {skew}"),
            );
        }
    }
    let ours = state.store.version_vector().unwrap_or_default();
    for (origin, newest) in theirs.origins {
        let mut cursor = ours.get(&origin).cloned().unwrap_or_default();
        while cursor < newest {
            let page: OpsPage = peer
                .get_json(&format!(
                    "/v1/replication/ops?origin={}&after={}",
                    encode(&origin),
                    encode(&cursor)
                ))
                .await?;
            let Some(last) = page.ops.last().map(|op| op.hlc.clone()) else {
                break;
            };
            // A peer must only answer with the origin asked for; anything else is dropped.
            let ops: Vec<Op> = page
                .ops
                .into_iter()
                .filter(|op| op.origin == origin)
                .collect();
            match state.store.merge_remote(&ops) {
                Ok(merge) => {
                    report.merged += merge.merged;
                    report.refused_operations += merge.refused.len();
                    for refused in merge.refused {
                        let op = &refused.op;
                        let what = match &refused.skew {
                            Some(skew) => format!(
                                "operation {} {}.{} from origin {} {skew}",
                                op.hlc, op.resource, op.field, op.origin
                            ),
                            None => format!(
                                "operation {:?} {}.{} from origin {} has an unreadable clock stamp",
                                op.hlc, op.resource, op.field, op.origin
                            ),
                        };
                        note(&mut report, refused.skew.map(|s| s.ahead), what);
                    }
                }
                Err(err) => {
                    tracing::error!(%origin, "cannot merge replicated operations: {err}");
                    break;
                }
            }
            cursor = last;
            if !page.more {
                break;
            }
        }
    }
    Ok(report)
}

/// Percent-encodes a query value (HLCs and ids are `[0-9a-z-]`, but never trust that).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Per-attempt timeout for a peer whose smoothed round-trip time is `rtt`: twenty round
/// trips (a pull is a handful of requests and a page can be large), never below 2 s nor
/// above 30 s. Cross-DC peers get longer timeouts than peers on the same LAN.
pub fn adaptive_timeout(rtt: Duration) -> Duration {
    (rtt * 20).clamp(Duration::from_secs(2), Duration::from_secs(30))
}

/// One peer: its client, rebuilt when the round-trip time moves the timeout a lot.
pub struct Peer {
    pub name: String,
    url: String,
    tls: Arc<dyn Fn() -> Result<rustls::ClientConfig, String> + Send + Sync>,
    client: Client,
    /// Smoothed round-trip time of the vector call (EWMA, weight 1/5 for new samples).
    rtt: Option<Duration>,
    timeout: Duration,
    /// Consecutive failed pulls.
    failures: u32,
    /// Ticks left to skip (bounded backoff).
    skip: u32,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .field("rtt", &self.rtt)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn peer_options(timeout: Duration) -> ClientOptions {
    ClientOptions {
        connect_timeout: timeout.min(Duration::from_secs(3)),
        attempt_timeout: timeout,
        total_timeout: timeout,
        ..ClientOptions::default()
    }
}

impl Peer {
    /// Folds in one round-trip sample; rebuilds the client when the timeout it implies
    /// differs from the current one by more than half.
    fn observe(&mut self, sample: Duration) {
        let rtt = match self.rtt {
            Some(old) => old.mul_f64(0.8) + sample.mul_f64(0.2),
            None => sample,
        };
        self.rtt = Some(rtt);
        let wanted = adaptive_timeout(rtt);
        let (a, b) = (wanted.as_secs_f64(), self.timeout.as_secs_f64());
        if (a - b).abs() > b / 2.0 {
            match (self.tls)().and_then(|tls| {
                Client::new(vec![self.url.clone()], tls, peer_options(wanted))
                    .map_err(|e| e.to_string())
            }) {
                Ok(client) => {
                    tracing::info!(peer = %self.name, ?rtt, timeout = ?wanted, "peer timeout adapted to its round-trip time");
                    self.client = client;
                    self.timeout = wanted;
                }
                Err(err) => {
                    tracing::warn!(peer = %self.name, "cannot rebuild the peer client: {err}")
                }
            }
        }
    }
}

/// Makes peer clients authenticated with this controller's own certificate. A peer must
/// present a controller certificate of this cluster: the chain alone would also accept
/// a node's certificate (security review D1), and a peer's operations are merged.
#[derive(Clone)]
pub struct PeerFactory {
    tls: Arc<dyn Fn() -> Result<rustls::ClientConfig, String> + Send + Sync>,
}

impl std::fmt::Debug for PeerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerFactory")
    }
}

impl PeerFactory {
    /// Loads this controller's credentials (`tls.*`) once.
    pub fn new(state: &AppState) -> Result<PeerFactory, String> {
        let tls = &state.config.tls;
        let creds = kcore_pki::Credentials::load(&kcore_pki::CredentialFiles::new(
            &tls.ca_file,
            &tls.cert_file,
            &tls.key_file,
        ))
        .map_err(|e| e.to_string())?;
        let expected = kcore_pki::PeerExpectation::controller(&state.config.cluster_name);
        Ok(PeerFactory {
            tls: Arc::new(move || creds.client_config(&expected).map_err(|e| e.to_string())),
        })
    }

    /// A client for `address` (`HOST:PORT`), starting at the timeout ceiling; the first
    /// measured round trips bring it down.
    pub fn peer(&self, address: &str) -> Result<Peer, String> {
        let timeout = Duration::from_secs(10);
        let url = kcore_net::https_url(address);
        let client = Client::new(vec![url.clone()], (self.tls)()?, peer_options(timeout))
            .map_err(|e| format!("peer {address}: {e}"))?;
        Ok(Peer {
            name: address.to_string(),
            url,
            tls: self.tls.clone(),
            client,
            rtt: None,
            timeout,
            failures: 0,
            skip: 0,
        })
    }

    /// A plain client for `address` with this controller's certificate (registration).
    pub fn client(&self, address: &str) -> Result<Client, String> {
        Client::new(
            vec![kcore_net::https_url(address)],
            (self.tls)()?,
            peer_options(Duration::from_secs(5)),
        )
        .map_err(|e| format!("peer {address}: {e}"))
    }
}

/// Records a peer's new status; logs when its state or controller id changes, so a
/// refused or unreachable peer is logged once, not every second.
fn record(state: &AppState, mut status: PeerStatus) {
    let Ok(mut peers) = state.peers.write() else {
        return;
    };
    let old = peers.get(&status.peer);
    let changed = old.is_none_or(|o| o.state != status.state);
    status.since = if changed {
        Some(crate::api::rfc3339(time::OffsetDateTime::now_utc()))
    } else {
        old.and_then(|o| o.since.clone())
    };
    if changed || old.is_some_and(|o| o.reason.is_some() != status.reason.is_some()) {
        match status.state {
            PeerState::Healthy => {
                tracing::info!(peer = %status.peer, controller = ?status.controller_id, "peer healthy")
            }
            PeerState::ClockAhead => tracing::warn!(
                peer = %status.peer,
                controller = ?status.controller_id,
                clock_ahead_seconds = ?status.clock_ahead_seconds,
                refused_operations = status.refused_operations,
                refused_heartbeats = status.refused_heartbeats,
                "peer unhealthy: {}",
                status.reason.as_deref().unwrap_or("")
            ),
            PeerState::Unreachable => tracing::warn!(
                peer = %status.peer,
                "replication pull failed: {}",
                status.reason.as_deref().unwrap_or("")
            ),
            PeerState::Unknown => {}
        }
    }
    peers.insert(status.peer.clone(), status);
}

/// The status one poll result gives a peer.
fn status_of(
    name: &str,
    result: &Result<PullReport, kcore_net::ClientError>,
    bound: Duration,
) -> PeerStatus {
    let mut status = PeerStatus::unknown(name);
    match result {
        Ok(report) => {
            status.controller_id = Some(report.controller_id.clone());
            status.refused_operations = report.refused_operations;
            status.refused_heartbeats = report.refused_heartbeats;
            if report.refused_operations + report.refused_heartbeats == 0 {
                status.state = PeerState::Healthy;
                status.healthy = true;
            } else {
                status.state = PeerState::ClockAhead;
                status.clock_ahead_seconds = report.max_ahead.map(|d| d.as_secs());
                status.reason = Some(format!(
                    "refused {} operation(s) and {} heartbeat(s) stamped up to {} s ahead of this controller's clock (bound {} s, maxClockSkewSeconds); first: {}",
                    report.refused_operations,
                    report.refused_heartbeats,
                    report.max_ahead.map_or(0, |d| d.as_secs()),
                    bound.as_secs(),
                    report.first_refusal.as_deref().unwrap_or("-"),
                ));
            }
        }
        Err(err) => {
            status.state = PeerState::Unreachable;
            status.reason = Some(err.to_string());
        }
    }
    status
}

/// Polls every peer until `stop` is cancelled (the controller awaits it at shutdown).
/// Each tick first reconciles the peer set with the `Controller` records
/// ([`crate::membership::wanted_peers`]) and hands the revoked serials to the TLS layer.
pub async fn run(
    state: Arc<AppState>,
    factory: PeerFactory,
    tls: kcore_net::TlsSource,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(PULL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let bound = state.store.max_clock_skew();
    let mut peers: Vec<Peer> = Vec::new();
    // Seed address -> the controller id its vector last gave.
    let mut seed_ids: BTreeMap<String, String> = BTreeMap::new();
    let mut revoked: Vec<String> = Vec::new();
    loop {
        // A pull in progress finishes (each is bounded by the peer timeout); the next
        // one does not start once `stop` is cancelled.
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now_revoked: Vec<String> = crate::membership::revoked(&state).into_keys().collect();
        if now_revoked != revoked {
            tracing::info!(serials = ?now_revoked, "revoked certificate serials updated");
            tls.set_revoked_serials(&now_revoked);
            revoked = now_revoked;
        }
        reconcile(&state, &factory, &mut peers, &seed_ids);
        // Peers are pulled concurrently: one that is slow or unreachable does not hold
        // back the others. One that keeps failing is skipped for a bounded number of
        // ticks ([`backoff_ticks`]).
        let due: Vec<&mut Peer> = peers
            .iter_mut()
            .filter_map(|peer| {
                if peer.skip > 0 {
                    peer.skip -= 1;
                    None
                } else {
                    Some(peer)
                }
            })
            .collect();
        let state_ref = &state;
        let results = futures::future::join_all(due.into_iter().map(|peer| async move {
            let result = pull_once(state_ref, &peer.client).await;
            (peer, result)
        }))
        .await;
        for (peer, result) in results {
            match &result {
                Ok(report) => {
                    peer.failures = 0;
                    peer.observe(report.rtt);
                    if state.config.peers.contains(&peer.name) {
                        seed_ids.insert(peer.name.clone(), report.controller_id.clone());
                    }
                    if report.merged > 0 {
                        tracing::debug!(peer = %peer.name, operations = report.merged, "replicated");
                    }
                }
                Err(_) => {
                    peer.failures = peer.failures.saturating_add(1);
                    peer.skip = backoff_ticks(peer.failures);
                }
            }
            record(&state, status_of(&peer.name, &result, bound));
        }
    }
}

/// The most ticks an unreachable peer is skipped: it is tried at least every
/// `(MAX_BACKOFF_TICKS + 1) * PULL_INTERVAL` plus its timeout, so a healed partition is
/// noticed within seconds.
pub const MAX_BACKOFF_TICKS: u32 = 5;

/// Ticks to skip after `failures` consecutive failed pulls: 0, 1, 3, then
/// [`MAX_BACKOFF_TICKS`].
pub fn backoff_ticks(failures: u32) -> u32 {
    let doubled = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    (doubled - 1).min(MAX_BACKOFF_TICKS)
}

/// Adds a client for every wanted address not pulled yet and drops the ones no longer
/// wanted (and their status), keeping the measured round trip of those that stay.
fn reconcile(
    state: &AppState,
    factory: &PeerFactory,
    peers: &mut Vec<Peer>,
    seed_ids: &BTreeMap<String, String>,
) {
    let wanted = crate::membership::wanted_peers(state, &state.config.peers, seed_ids);
    peers.retain(|p| {
        let keep = wanted.contains(&p.name);
        if !keep {
            tracing::info!(peer = %p.name, "peer no longer pulled from (its controller was deleted or is reached through a seed)");
            if let Ok(mut statuses) = state.peers.write() {
                statuses.remove(&p.name);
            }
        }
        keep
    });
    if let Ok(mut set) = state.peer_set.write() {
        *set = Some(wanted.clone());
    }
    for address in wanted {
        if peers.iter().any(|p| p.name == address) {
            continue;
        }
        match factory.peer(&address) {
            Ok(peer) => {
                if !state.config.peers.contains(&address) {
                    tracing::info!(peer = %address, "discovered a controller; pulling from it");
                }
                peers.push(peer);
            }
            Err(err) => tracing::warn!(peer = %address, "cannot make a client: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_peer_backs_off_within_a_bound() {
        let ticks: Vec<u32> = (1..=6).map(backoff_ticks).collect();
        assert_eq!(ticks, vec![0, 1, 3, 5, 5, 5]);
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
