//! `kind: ClusterUpdate` on the generic routes (`/v1/clusterupdates`): operators apply and
//! delete rollouts, controllers read them; plus the rollout engine's routes
//! ([`crate::rollout`]):
//!
//! | route | roles |
//! |---|---|
//! | `POST /v1/clusterupdates/{name}/approve`, `.../cancel`, `.../rollback` | admin |
//! | `POST /v1/clusterupdates/{name}/plan` (the manifest; changes nothing) | admin |
//! | `GET /v1/nodes/{id}/assignment?wait=SECONDS&known=TOKEN` | node (own id) |
//! | `POST /v1/nodes/{id}/assignment/report` | node (own id) |
//!
//! And two rules of `PUT /v1/clusterupdates/{name}`: once a rollout chose its targets, its
//! spec no longer changes (an unchanged apply is fine; [`refuse_spec_change`]), and the
//! controller that creates a rollout is its first owner ([`status_at_creation`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use kcore_api::ErrorCode;
use kcore_api::clusterupdate::{ClusterUpdatePhase, ClusterUpdateSpec};
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
        .route("/v1/clusterupdates/{name}/rollback", post(rollback))
        .route("/v1/clusterupdates/{name}/plan", post(plan))
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

fn phase_name(phase: Option<ClusterUpdatePhase>) -> String {
    phase
        .and_then(|p| serde_json::to_value(p).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "new".into())
}

/// Refuses a `PUT` that changes the spec of a rollout that chose its targets (`409`):
/// its step records are facts about the spec they ran, so a new target is a new rollout.
/// Called by the generic apply for this kind; an unchanged spec (an idempotent apply) and
/// a rollout still `pending` / `awaiting_approval` pass.
pub(super) fn refuse_spec_change(state: &AppState, name: &str, object: &Value) -> Result<()> {
    let Some(stored) = state.store.get(Kind::ClusterUpdate, name) else {
        return Ok(());
    };
    if stored.get("spec") == object.get("spec") {
        return Ok(());
    }
    let status = records::status(&state.store, name).unwrap_or_default();
    if status.targets.is_empty() {
        return Ok(());
    }
    let phase = phase_name(status.phase);
    let fix = match status.phase {
        Some(p) if p.is_final() => {
            "it has ended; apply the new spec under a new name (a ClusterUpdate runs once)"
                .to_string()
        }
        _ => format!(
            "cancel it first (kctl update cluster cancel {name}), then apply the new spec under a new name"
        ),
    };
    Err(ApiFailure::with_status(
        StatusCode::CONFLICT,
        ErrorCode::Forbidden,
        format!("ClusterUpdate {name:?} is {phase}: its spec cannot change once it started; {fix}"),
    )
    .with_details(json!({"field": "spec", "phase": phase})))
}

/// The status a new rollout is created with, in the apply's own write: this controller as
/// its owner (epoch 1, lease from now). The controller a rollout was applied to owns it,
/// and a peer that replicates the new rollout learns its owner with it, so a peer whose
/// engine sees it first leaves it alone until the lease lapses (docs/rollouts.md).
pub(super) fn status_at_creation(state: &AppState) -> Vec<(String, Value)> {
    let owner = kcore_api::clusterupdate::RolloutOwner {
        controller_id: state.config.controller_id.clone(),
        epoch: 1,
        lease_until: super::now_unix() + crate::rollout::LEASE.as_secs() as i64,
    };
    vec![("status.owner".to_string(), json!(owner))]
}

/// Writes one operator field (`approvedAt` / `cancelledAt` / `rollbackAt`) and answers
/// the object.
fn mark(state: &AppState, caller: &Caller, name: &str, field: &str) -> Result<Json<Value>> {
    caller.require(&[Role::Admin])?;
    let status = records::status(&state.store, name).ok_or_else(|| no_rollout(name))?;
    let already = match field {
        "approvedAt" => status.approved_at.is_some(),
        "rollbackAt" => status.rollback_at.is_some(),
        _ => status.cancelled_at.is_some(),
    };
    let started =
        status.phase.is_some_and(ClusterUpdatePhase::can_roll_back) && !status.targets.is_empty();
    if field == "rollbackAt" && !already && !started {
        return Err(ApiFailure::with_status(
            StatusCode::CONFLICT,
            ErrorCode::Forbidden,
            format!(
                "ClusterUpdate {name:?} is {}: no node was updated, so there is nothing to roll back; cancel it instead (kctl update cluster cancel {name})",
                phase_name(status.phase)
            ),
        ));
    }
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

/// The engine moves the rollout to `rolling_back` at its next tick.
async fn rollback(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    mark(&state, &caller, &name, "rollbackAt")
}

/// What applying the manifest in the body would do now ([`crate::rollout::plan`]); the
/// manifest is validated as an apply would, and nothing is written.
async fn plan(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<kcore_api::clusterupdate::ClusterUpdatePlan>> {
    caller.require(&[Role::Admin])?;
    let object = kcore_api::resource::decode_object::<ClusterUpdateSpec>(body)
        .map_err(|e| super::resources::invalid(&e))?;
    if object.metadata.name != name {
        return Err(ApiFailure::with_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidField,
            format!(
                "metadata.name {:?} is not {name:?} of the path; plan the manifest at /v1/clusterupdates/{}/plan",
                object.metadata.name, object.metadata.name
            ),
        )
        .with_details(json!({"field": "metadata.name"})));
    }
    Ok(Json(crate::rollout::plan(&state, &name, &object.spec)))
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
        let now = crate::assignment::for_node(&state, &id).await;
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
    let progress = records::progress(
        &records::node_records(&state.store, &body.rollout, &id),
        body.seq,
    );
    if !progress
        .get(&id)
        .is_some_and(|p| p.takes_report(&body.report))
    {
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
