//! `GET /v1/version`: the controller's build version and id, for `kctl version`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use kcore_api::version::ServerVersion;
use kcore_pki::Role;

use super::{AppState, Caller, Result};

pub(super) async fn version(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<ServerVersion>> {
    // Every role of the cluster may ask: nothing here is secret, but the route stays
    // behind mTLS like every other.
    caller.require(&[Role::Admin, Role::Controller, Role::Node])?;
    Ok(Json(ServerVersion {
        component: "kcore-controller".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        id: state.config.controller_id.clone(),
    }))
}
