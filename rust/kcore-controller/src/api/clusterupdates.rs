//! `kind: ClusterUpdate` on the generic routes (`/v1/clusterupdates`): operators apply and
//! delete rollouts, controllers read them; plus the rollout engine's routes
//! ([`crate::rollout`]):
//!
//! | route | roles |
//! |---|---|
//! | `POST /v1/clusterupdates/{name}/approve`, `.../cancel` | admin |
//! | `GET /v1/nodes/{id}/assignment?wait=SECONDS&known=TOKEN` | node (own id) |
//! | `POST /v1/nodes/{id}/assignment/report` | node (own id) |

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use kcore_api::ErrorCode;
use kcore_api::clusterupdate::ClusterUpdateSpec;
use kcore_api::resource::Kind;
use kcore_api::rollout::{Assignment, AssignmentReport};
use kcore_net::{ApiFailure, ApiJson, ApiPath as Path};
use kcore_pki::Role;
use serde::Deserialize;
use serde_json::{Value, json};

use super::resources::Definition;
use super::{AppState, Caller, Result};
use crate::rollout::records::{self, StepRecord};

pub(super) static DEFINITION: Definition = Definition {
    kind: Kind::ClusterUpdate,
    read: &[Role::Admin, Role::Controller],
    write: &[Role::Admin],
    validate: kcore_api::resource::canonical::<ClusterUpdateSpec>,
    delete: None,
};

/// The longest an assignment long-poll is held (the agent asks again at once).
pub const MAX_WAIT: Duration = Duration::from_secs(60);

pub(super) fn routes(router: Router<Arc<AppState>>) -> Router<Arc<AppState>> {
    router
        .route("/v1/clusterupdates/{name}/approve", post(approve))
        .route("/v1/clusterupdates/{name}/cancel", post(cancel))
        .route("/v1/nodes/{id}/assignment", get(assignment))
        .route("/v1/nodes/{id}/assignment/report", post(report))
}

fn no_rollout(name: &str) -> ApiFailure {
    ApiFailure::with_status(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no ClusterUpdate {name:?}; kctl update cluster list shows them"),
    )
}

/// Writes one operator field (`approvedAt` / `cancelledAt`) and answers the object.
fn mark(state: &AppState, caller: &Caller, name: &str, field: &str) -> Result<Json<Value>> {
    caller.require(&[Role::Admin])?;
    let status = records::status(&state.store, name).ok_or_else(|| no_rollout(name))?;
    let already = match field {
        "approvedAt" => status.approved_at.is_some(),
        _ => status.cancelled_at.is_some(),
    };
    if !already {
        records::write_status(
            &state.store,
            name,
            &[(field, json!(records::now_rfc3339()))],
        )?;
    }
    let object = state
        .store
        .get(Kind::ClusterUpdate, name)
        .ok_or_else(|| no_rollout(name))?;
    Ok(Json(object))
}

async fn approve(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    mark(&state, &caller, &name, "approvedAt")
}

async fn cancel(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    mark(&state, &caller, &name, "cancelledAt")
}

#[derive(Deserialize)]
struct Wait {
    #[serde(default)]
    wait: u64,
    #[serde(default)]
    known: String,
}

/// The node's step, at once when it differs from `known`, else when it changes (woken by
/// `Store::watch`) or after `wait` seconds (at most [`MAX_WAIT`]).
async fn assignment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<Wait>,
) -> Result<Json<Assignment>> {
    caller.require_self(&id)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait).min(MAX_WAIT);
    let mut changes = state.store.watch();
    loop {
        // Marked seen before reading, so a change after the read wakes the wait below.
        changes.borrow_and_update();
        let now = crate::assignment::for_node(&state, &id);
        if now.token != q.known || q.wait == 0 {
            return Ok(Json(now));
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return Ok(Json(now)) },
            () = tokio::time::sleep_until(deadline) => return Ok(Json(now)),
        }
    }
}

/// A node's progress on its step, kept as a step record (written once per phase).
async fn report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AssignmentReport>,
) -> Result<Json<Value>> {
    caller.require_self(&id)?;
    let owner =
        records::owner(&state.store, &body.rollout).ok_or_else(|| no_rollout(&body.rollout))?;
    if body.epoch != owner.epoch {
        return Err(ApiFailure::with_status(
            StatusCode::CONFLICT,
            ErrorCode::Forbidden,
            format!(
                "epoch {} of rollout {:?} is stale: its owner {} is at epoch {}; fetch GET /v1/nodes/{id}/assignment again",
                body.epoch, body.rollout, owner.controller_id, owner.epoch
            ),
        )
        .with_details(json!({"field": "epoch", "current": owner.epoch})));
    }
    let progress = records::progress(&records::records(&state.store, &body.rollout));
    let assigned = progress
        .get(&id)
        .and_then(|p| p.assigned.as_ref())
        .is_some_and(|a| a.seq == body.seq);
    if !assigned {
        return Err(ApiFailure::with_status(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!(
                "rollout {:?} assigned node {id:?} no step {}",
                body.rollout, body.seq
            ),
        ));
    }
    let what = serde_json::to_value(body.report.phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let recorded = records::write_once(
        &state.store,
        &body.rollout,
        &StepRecord {
            node: id,
            epoch: body.epoch,
            seq: body.seq,
            what,
            at: records::now_rfc3339(),
            by: state.config.controller_id.clone(),
            report: Some(body.report),
        },
    )?;
    // `recorded: false`: this phase of the step was reported before (a retry).
    Ok(Json(json!({ "recorded": recorded })))
}
