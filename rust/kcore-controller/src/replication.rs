//! Controller-to-controller replication: pull-based, per-origin cursors.
//!
//! Each controller serves its version vector (`GET /v1/replication/vector`: the newest
//! operation it holds from every origin) and the operations of one origin after a cursor
//! (`GET /v1/replication/ops?origin=O&after=HLC`). Every `peers` entry is polled: for
//! each origin where the peer holds something newer, the operations after our own
//! newest one are pulled in pages and merged last-writer-wins. Because a controller
//! serves every origin it holds, not only its own, operations relay through the graph
//! and no full mesh is needed. The cursor is simply `MAX(hlc)` of that origin in our
//! `ops` table, so it survives restarts without extra state.
//!
//! Both routes are for the `controller` role only. Per-peer timeouts follow the measured
//! round-trip time ([`adaptive_timeout`]). Not built yet: snapshot catch-up for cursors
//! older than compaction (nothing is compacted yet, so every operation is still there).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use kcore_net::{Client, ClientOptions};
use kcore_pki::Role;
use serde::{Deserialize, Serialize};

use crate::api::{AppState, Caller, Failure};
use crate::store::Op;

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

pub async fn vector(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<VersionVector>, Failure> {
    caller.require(&state, &[Role::Controller])?;
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
) -> Result<Json<OpsPage>, Failure> {
    caller.require(&state, &[Role::Controller])?;
    let mut ops = state
        .store
        .ops_since(&query.origin, &query.after, PAGE + 1)?;
    let more = ops.len() > PAGE;
    ops.truncate(PAGE);
    Ok(Json(OpsPage { ops, more }))
}

/// Pulls everything `peer` has that this store lacks. Returns the number of operations
/// merged and the round-trip time of the version-vector call.
pub async fn pull_once(
    state: &AppState,
    peer: &Client,
) -> Result<(usize, Duration), kcore_net::ClientError> {
    let started = std::time::Instant::now();
    let theirs: VersionVector = peer.get_json("/v1/replication/vector").await?;
    let rtt = started.elapsed();
    for (node, t) in &theirs.heartbeats {
        state.store.observe_heartbeat(node, *t);
    }
    let ours = state.store.version_vector().unwrap_or_default();
    let mut merged = 0;
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
            if let Err(err) = state.store.merge_remote(&ops) {
                tracing::error!(%origin, "cannot merge replicated operations: {err}");
                break;
            }
            merged += ops.len();
            cursor = last;
            if !page.more {
                break;
            }
        }
    }
    Ok((merged, rtt))
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

/// A client per peer, authenticated with this controller's own certificate. A peer must
/// present a controller certificate of this cluster: the chain alone would also accept
/// a node's certificate (security review D1), and a peer's operations are merged.
pub fn peer_clients(state: &AppState) -> Result<Vec<Peer>, String> {
    let tls = &state.config.tls;
    let creds = kcore_pki::Credentials::load(&kcore_pki::CredentialFiles::new(
        &tls.ca_file,
        &tls.cert_file,
        &tls.key_file,
    ))
    .map_err(|e| e.to_string())?;
    let expected = kcore_pki::PeerExpectation::controller(&state.config.cluster_name);
    let make_tls: Arc<dyn Fn() -> Result<rustls::ClientConfig, String> + Send + Sync> =
        Arc::new(move || creds.client_config(&expected).map_err(|e| e.to_string()));
    // Start at the ceiling; the first measured round trips bring it down.
    let timeout = Duration::from_secs(10);
    state
        .config
        .peers
        .iter()
        .map(|peer| {
            let url = if peer.starts_with("https://") {
                peer.clone()
            } else {
                format!("https://{peer}")
            };
            let client = Client::new(vec![url.clone()], make_tls()?, peer_options(timeout))
                .map_err(|e| format!("peer {peer}: {e}"))?;
            Ok(Peer {
                name: peer.clone(),
                url,
                tls: make_tls.clone(),
                client,
                rtt: None,
                timeout,
            })
        })
        .collect()
}

/// Polls every peer forever (the caller aborts the task at shutdown).
pub async fn run(state: Arc<AppState>, mut peers: Vec<Peer>) {
    let mut tick = tokio::time::interval(PULL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tick.tick().await;
        for peer in &mut peers {
            let name = peer.name.clone();
            match pull_once(&state, &peer.client).await {
                Ok((n, rtt)) => {
                    peer.observe(rtt);
                    if n > 0 {
                        tracing::debug!(peer = %name, operations = n, "replicated");
                    }
                    if last_error.remove(&name).is_some() {
                        tracing::info!(peer = %name, "peer reachable again");
                    }
                }
                Err(err) => {
                    let text = err.to_string();
                    // Log a peer's failure once, not every second.
                    if last_error.get(&name) != Some(&text) {
                        tracing::warn!(peer = %name, "replication pull failed: {text}");
                        last_error.insert(name, text);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
