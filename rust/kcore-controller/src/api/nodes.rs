//! Node routes: registration and heartbeats (the node itself), listing, approval and
//! removal (operators). A node's record is the store's `node/<id>` resource.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kcore_api::cluster::{
    Approval, CordonEntry, CordonHolder, CordonRequest, HeartbeatRequest, Node, NodeAck, NodeList,
    NodeStatus, RegisterRequest,
};
use kcore_api::resource::{Deleted, Kind};
use kcore_api::{ApiError, ErrorCode};
use kcore_net::{ApiFailure, ApiJson, PeerCert};
// kcore-net's `Path`: a segment that is not percent-encoded UTF-8 gets the JSON envelope.
use kcore_net::ApiPath as Path;
use kcore_pki::Role;

use super::pki::record_presented_certificate;
use super::{AppState, Caller, Result, now_unix, rfc3339, unix_to_rfc3339};
use crate::store::{NodeRecord, WriteOutcome};

pub(super) fn status_of(
    state: &AppState,
    record: &NodeRecord,
    last_heartbeat: Option<i64>,
) -> NodeStatus {
    match record.approval {
        Approval::Pending => NodeStatus::Pending,
        Approval::Rejected => NodeStatus::Rejected,
        Approval::Approved => {
            let timeout = i64::try_from(state.config.heartbeat_timeout_seconds).unwrap_or(i64::MAX);
            match last_heartbeat {
                Some(t) if now_unix().saturating_sub(t) <= timeout => NodeStatus::Ready,
                _ => NodeStatus::NotReady,
            }
        }
    }
}

pub(crate) fn node_view(
    state: &AppState,
    id: String,
    record: NodeRecord,
    beat: Option<i64>,
) -> Node {
    Node {
        status: status_of(state, &record, beat),
        node_id: id,
        approval: record.approval,
        report: record.report,
        registered_at: record.registered_at,
        last_heartbeat: beat.and_then(unix_to_rfc3339),
        certificate: record.certificate,
        cordons: record.cordons,
    }
}

pub(super) fn check_node_id(id: &str) -> Result<()> {
    kcore_api::validate::node_id("node id", id).map_err(|e| {
        ApiFailure::with_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidNodeId,
            e.to_string(),
        )
    })
}

pub(super) fn not_found(id: &str) -> ApiFailure {
    ApiFailure::with_status(
        StatusCode::NOT_FOUND,
        ErrorCode::NodeNotFound,
        format!("no node {id:?} is registered"),
    )
}

pub(super) fn rejected(id: &str) -> ApiFailure {
    ApiFailure::with_status(
        StatusCode::FORBIDDEN,
        ErrorCode::NodeRejected,
        format!("node {id:?} was rejected by an operator; it cannot register again under this id"),
    )
}

/// Refuses a report over the limits of `kcore_api::report_limits` (413 for the whole
/// report, 422 naming the field).
fn check_report(report: &kcore_api::cluster::NodeReport) -> Result<()> {
    kcore_api::report_limits::check_report(report).map_err(|err| ApiFailure {
        status: StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
        error: err.into(),
    })
}

fn ack(state: &AppState, id: &str, presented: &PeerCert) -> Result<Json<NodeAck>> {
    let record = state.store.node(id).ok_or_else(|| not_found(id))?;
    let issuer = presented
        .0
        .as_ref()
        .and_then(|c| c.issuer_serial.as_deref());
    Ok(Json(NodeAck {
        node_id: id.to_string(),
        status: status_of(state, &record, state.store.last_heartbeat(id)),
        controller_id: state.config.controller_id.clone(),
        renew_certificate: issuer.is_some_and(|serial| crate::sub_ca::is_retired(state, serial)),
    }))
}

pub(super) async fn register(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    peer_cert: PeerCert,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<Json<NodeAck>> {
    caller.require_self(&id)?;
    check_node_id(&id)?;
    check_report(&body.report)?;
    if let Some(existing) = state.store.node(&id)
        && existing.approval == Approval::Rejected
    {
        return Err(rejected(&id));
    }
    let approval = if state.config.require_manual_approval {
        Approval::Pending
    } else {
        Approval::Approved
    };
    let record = state.store.put_node(
        &id,
        &body.report,
        approval,
        &rfc3339(time::OffsetDateTime::now_utc()),
    )?;
    record_presented_certificate(&state, &id, &peer_cert)?;
    state.store.heartbeat(&id, now_unix());
    tracing::info!(node = %id, approval = record.approval.as_str(), "node registered");
    ack(&state, &id, &peer_cert)
}

pub(super) async fn heartbeat(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    peer_cert: PeerCert,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HeartbeatRequest>,
) -> Result<Json<NodeAck>> {
    caller.require_self(&id)?;
    if let Some(report) = &body.report {
        check_report(report)?;
    }
    let record = state.store.node(&id).ok_or_else(|| {
        ApiFailure::with_status(
            StatusCode::NOT_FOUND,
            ErrorCode::NodeNotRegistered,
            format!("node {id:?} is not registered: register first"),
        )
    })?;
    if record.approval == Approval::Rejected {
        return Err(rejected(&id));
    }
    if let Some(report) = &body.report {
        state.store.update_report(&id, report)?;
    }
    record_presented_certificate(&state, &id, &peer_cert)?;
    state.store.heartbeat(&id, now_unix());
    ack(&state, &id, &peer_cert)
}

pub(super) async fn list_nodes(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<NodeList>> {
    caller.require(&[Role::Admin, Role::Controller])?;
    let items = state
        .store
        .nodes()
        .into_iter()
        .map(|(id, rec, beat)| node_view(&state, id, rec, beat))
        .collect();
    Ok(Json(NodeList { items }))
}

pub(super) async fn get_node(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Node>> {
    caller.require(&[Role::Admin, Role::Controller])?;
    let record = state.store.node(&id).ok_or_else(|| not_found(&id))?;
    let beat = state.store.last_heartbeat(&id);
    Ok(Json(node_view(&state, id, record, beat)))
}

async fn set_approval(
    state: Arc<AppState>,
    caller: Caller,
    id: String,
    approval: Approval,
) -> Result<Json<Node>> {
    let admin = caller.require(&[Role::Admin])?.uri();
    let record = state.store.node(&id).ok_or_else(|| not_found(&id))?;
    if record.approval == Approval::Rejected && approval == Approval::Approved {
        return Err(ApiFailure::with_status(
            StatusCode::CONFLICT,
            ErrorCode::NodeRejected,
            format!(
                "node {id:?} was rejected; a rejected id stays rejected (reinstall the node under a new id)"
            ),
        ));
    }
    if record.approval != approval
        && let WriteOutcome::Superseded(newer) = state.store.set_approval(&id, approval)?
    {
        let value = newer.value.as_deref().unwrap_or("(deleted)");
        return Err(ApiFailure {
            status: StatusCode::CONFLICT,
            error: ApiError::new(
                ErrorCode::WriteSuperseded,
                format!(
                    "setting node {id:?} to {} did not take effect: the newer value {value} written by controller {} at {} (HLC {}) wins. A time in the future means a controller's clock is or was ahead (see GET /v1/replication/peers); a restart of this controller sets aside operations stamped beyond maxClockSkewSeconds, then retry",
                    approval.as_str(),
                    newer.origin,
                    newer.time,
                    newer.hlc
                ),
            )
            .with_details(serde_json::json!({
                "field": newer.field,
                "newerValue": value,
                "newerOrigin": newer.origin,
                "newerTime": newer.time,
                "newerHlc": newer.hlc,
            })),
        });
    }
    tracing::info!(node = %id, by = %admin, approval = approval.as_str(), "approval changed");
    let record = state.store.node(&id).ok_or_else(|| not_found(&id))?;
    let beat = state.store.last_heartbeat(&id);
    Ok(Json(node_view(&state, id, record, beat)))
}

pub(super) async fn approve(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Node>> {
    set_approval(state, caller, id, Approval::Approved).await
}

pub(super) async fn reject(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Node>> {
    set_approval(state, caller, id, Approval::Rejected).await
}

/// The longest cordon reason kept (it is shown in `kctl get nodes -o wide`).
const MAX_CORDON_REASON: usize = 256;

/// `POST /v1/nodes/{id}/cordon`: the operator's cordon; the node takes no new VMs until
/// `uncordon`. A rollout's own cordon (`drainVms`) is separate and left alone.
pub(super) async fn cordon(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CordonRequest>,
) -> Result<Json<Node>> {
    let admin = caller.require(&[Role::Admin])?.uri().to_string();
    let reason = body.reason.unwrap_or_default();
    if reason.chars().count() > MAX_CORDON_REASON || reason.chars().any(char::is_control) {
        return Err(ApiFailure::with_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidField,
            format!(
                "reason: give at most {MAX_CORDON_REASON} characters without control characters"
            ),
        ));
    }
    let entry = CordonEntry {
        by: admin,
        reason,
        at: rfc3339(time::OffsetDateTime::now_utc()),
    };
    set_cordon(state, id, Some(entry)).await
}

/// `POST /v1/nodes/{id}/uncordon`: lifts the operator's cordon.
pub(super) async fn uncordon(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Node>> {
    caller.require(&[Role::Admin])?;
    set_cordon(state, id, None).await
}

async fn set_cordon(
    state: Arc<AppState>,
    id: String,
    entry: Option<CordonEntry>,
) -> Result<Json<Node>> {
    check_node_id(&id)?;
    let record = state.store.node(&id).ok_or_else(|| not_found(&id))?;
    if record.cordons.operator != entry {
        let outcome = state
            .store
            .set_cordon(&id, CordonHolder::Operator, entry.as_ref())?;
        if let WriteOutcome::Superseded(newer) = outcome {
            return Err(ApiFailure::with_status(
                StatusCode::CONFLICT,
                ErrorCode::WriteSuperseded,
                format!(
                    "the cordon of node {id:?} did not change: a newer value written by controller {} at {} wins; check the controllers' clocks, then retry",
                    newer.origin, newer.time
                ),
            ));
        }
        tracing::info!(node = %id, cordoned = entry.is_some(), "operator cordon changed");
    }
    let record = state.store.node(&id).ok_or_else(|| not_found(&id))?;
    let beat = state.store.last_heartbeat(&id);
    Ok(Json(node_view(&state, id, record, beat)))
}

/// `DELETE /v1/nodes/{id}`: removes the node's record (tombstones, replicated). The
/// node's certificate stays valid until it expires or is revoked; a node that registers
/// again afterwards is a new node.
pub(super) async fn delete_node(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Deleted>> {
    let admin = caller.require(&[Role::Admin])?.uri();
    if !state.store.delete_node(&id)? {
        return Err(not_found(&id));
    }
    tracing::info!(node = %id, by = %admin, "node deleted");
    Ok(Json(Deleted {
        kind: Kind::Node,
        name: id,
        pending: None,
    }))
}
