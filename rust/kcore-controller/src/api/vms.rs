//! `kind: VM` on the generic routes (`/v1/vms`): operators apply and delete VMs,
//! controllers read them; and the node's side ([`crate::vm`] holds the logic):
//!
//! | route | roles |
//! |---|---|
//! | `POST /v1/nodes/{id}/vms/report` | node (own id) |
//!
//! A node learns its VMs from its assignment long-poll (`api/clusterupdates.rs`). `DELETE
//! /v1/vms/{name}` of a placed VM answers at once with `pending` set: the node is told
//! `Deleted`, and the object goes when the node lists it in `deleted`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use kcore_api::resource::Kind;
use kcore_api::vm::{VmReports, VmSpec};
use kcore_net::{ApiJson, ApiPath as Path};
use kcore_pki::Role;

use super::resources::{Definition, Deletion};
use super::{AppState, Caller, Result};
use crate::store::StoreError;
use crate::vm::{self, DeleteOutcome, ReportOutcome};

pub(super) static DEFINITION: Definition = Definition {
    kind: Kind::Vm,
    read: &[Role::Admin, Role::Controller],
    write: &[Role::Admin],
    validate: kcore_api::resource::canonical::<VmSpec>,
    delete: Some(delete),
};

fn delete(state: &AppState, name: &str) -> std::result::Result<Deletion, StoreError> {
    Ok(match vm::request_delete(&state.store, name)? {
        DeleteOutcome::NotFound => Deletion::NotFound,
        DeleteOutcome::Deleted => Deletion::Deleted,
        DeleteOutcome::Requested => Deletion::Pending(
            "its node stops the guest and removes the volume; the VM goes when the node confirms (phase Deleting until then)".into(),
        ),
    })
}

pub(super) fn routes(router: Router<Arc<AppState>>) -> Router<Arc<AppState>> {
    router.route("/v1/nodes/{id}/vms/report", post(report))
}

/// A node's account of its VMs, stored into their status ([`vm::apply_reports`]).
async fn report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<VmReports>,
) -> Result<Json<ReportOutcome>> {
    caller.require_self(&id)?;
    Ok(Json(vm::apply_reports(&state.store, &id, &body)?))
}
