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
//! Both routes are for the `controller` role only. Not built yet: snapshot catch-up for
//! cursors older than compaction (nothing is compacted yet, so every operation is still
//! there) and round-trip-adaptive timeouts (fixed per-attempt timeouts are used).

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
/// merged.
pub async fn pull_once(state: &AppState, peer: &Client) -> Result<usize, kcore_net::ClientError> {
    let theirs: VersionVector = peer.get_json("/v1/replication/vector").await?;
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
    Ok(merged)
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

/// A client per peer, authenticated with this controller's own certificate.
pub fn peer_clients(state: &AppState) -> Result<Vec<(String, Client)>, String> {
    let tls = &state.config.tls;
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let (ca, cert, key) = (
        read(&tls.ca_file)?,
        read(&tls.cert_file)?,
        read(&tls.key_file)?,
    );
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(10),
        total_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
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
            let config = kcore_pki::client_config(&ca, &cert, &key).map_err(|e| e.to_string())?;
            Client::new(vec![url], config, options.clone())
                .map(|c| (peer.clone(), c))
                .map_err(|e| format!("peer {peer}: {e}"))
        })
        .collect()
}

/// Polls every peer forever (the caller aborts the task at shutdown).
pub async fn run(state: Arc<AppState>, peers: Vec<(String, Client)>) {
    let mut tick = tokio::time::interval(PULL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tick.tick().await;
        for (name, client) in &peers {
            match pull_once(&state, client).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(peer = %name, operations = n, "replicated");
                    }
                    if last_error.remove(name).is_some() {
                        tracing::info!(peer = %name, "peer reachable again");
                    }
                }
                Err(err) => {
                    let text = err.to_string();
                    // Log a peer's failure once, not every second.
                    if last_error.get(name) != Some(&text) {
                        tracing::warn!(peer = %name, "replication pull failed: {text}");
                        last_error.insert(name.clone(), text);
                    }
                }
            }
        }
    }
}
