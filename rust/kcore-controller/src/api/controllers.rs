//! `kind: Controller` (`/v1/controllers`): controllers register themselves, admins and
//! controllers read the records, an admin deletes one (which revokes its certificate).
//! Reads go through the generic handlers in [`super::resources`]; the writes are the
//! kind's own because nobody applies a Controller (see [`crate::membership`]).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use kcore_api::ErrorCode;
use kcore_api::controller::ControllerSpec;
use kcore_api::resource::{Deleted, Kind, KindSpec};
use kcore_net::{ApiFailure, ApiJson, ApiPath as Path, PeerCert};
use kcore_pki::Role;
use serde_json::Value;

use super::resources::{self, Definition};
use super::{AppState, Caller, Result};
use crate::membership::{self, Registered, SelfRecord};

static DEFINITION: Definition = Definition {
    kind: Kind::Controller,
    read: &[Role::Admin, Role::Controller],
    write: &[Role::Admin],
    validate: kcore_api::resource::canonical::<ControllerSpec>,
    delete: None,
};

/// The routes of the kind.
pub(super) fn routes(router: Router<Arc<AppState>>) -> Router<Arc<AppState>> {
    router
        .route(
            "/v1/controllers",
            get(
                |State(state): State<Arc<AppState>>, caller: Caller, q: axum::extract::RawQuery| {
                    resources::list(&DEFINITION, state, caller, q.0)
                },
            ),
        )
        .route(
            "/v1/controllers/{name}",
            get(
                |State(state): State<Arc<AppState>>, caller: Caller, Path(name): Path<String>| {
                    resources::read(&DEFINITION, state, caller, name)
                },
            )
            .put(not_applied)
            .delete(delete),
        )
        .route("/v1/controllers/{name}/register", post(register))
        .route("/v1/pki/sub-ca/key", get(sub_ca_key))
}

/// The sub-CA this controller signs with, key included, for a controller that starts
/// without one (`kctl create controller`). Controller certificates only: an admin never
/// needs the key through the API (it has the root CA and `kctl rotate sub-ca`) and a node
/// must never hold it. A revoked controller is refused before this runs (TLS layer).
async fn sub_ca_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<kcore_api::controller::SubCaKey>> {
    let who = caller.require(&[Role::Controller])?.id.clone();
    let signer = state
        .signer
        .read()
        .map_err(|_| super::internal("signer lock poisoned"))?
        .clone();
    tracing::info!(controller = %who, "sub-CA key sent to a controller");
    Ok(Json(kcore_api::controller::SubCaKey {
        certificate_pem: signer.cert_pem().to_string(),
        key_pem: signer.key_pem().to_string(),
    }))
}

async fn not_applied() -> ApiFailure {
    ApiFailure::with_status(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "controllers register themselves (POST /v1/controllers/{id}/register with their own \
         certificate); an operator only reads or deletes a Controller",
    )
}

/// `POST /v1/controllers/{id}/register`: a controller's own record, sent to its seeds.
async fn register(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    PeerCert(cert): PeerCert,
    Path(id): Path<String>,
    ApiJson(spec): ApiJson<ControllerSpec>,
) -> Result<Json<Value>> {
    let identity = caller.require(&[Role::Controller])?;
    if identity.id != id {
        return Err(ApiFailure::with_status(
            StatusCode::FORBIDDEN,
            ErrorCode::NotSelf,
            format!(
                "{} may register only controller {:?}, not {id:?}",
                identity.uri(),
                identity.id
            ),
        ));
    }
    let presented = cert.map(|c| c.serial).unwrap_or_default();
    if presented.trim_start_matches('0') != spec.certificate_serial.trim_start_matches('0') {
        return Err(ApiFailure::with_status(
            StatusCode::FORBIDDEN,
            ErrorCode::NotSelf,
            format!(
                "spec.certificateSerial {:?} is not the serial of the certificate presented ({presented:?}); register with the certificate the record names",
                spec.certificate_serial
            ),
        )
        .with_details(serde_json::json!({"field": "spec.certificateSerial"})));
    }
    spec.validate().map_err(|e| {
        ApiFailure::with_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidField,
            e.to_string(),
        )
        .with_details(serde_json::json!({"field": e.field}))
    })?;
    let record = SelfRecord {
        id: id.clone(),
        spec,
    };
    match membership::register(&state, &record)? {
        Registered::Written => {}
        Registered::Revoked => {
            return Err(ApiFailure::with_status(
                StatusCode::UNAUTHORIZED,
                ErrorCode::CertificateRevoked,
                format!("controller {id} was deleted and its certificate revoked"),
            ));
        }
    }
    state
        .store
        .get(Kind::Controller, &id)
        .map(Json)
        .ok_or_else(|| super::internal(format!("controller {id} vanished after registering")))
}

/// `DELETE /v1/controllers/{id}`: the record goes and its certificate is revoked.
async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Deleted>> {
    let admin = caller.require(&[Role::Admin])?.uri();
    if name == state.config.controller_id {
        // Revoking the certificate of the controller answering would cut the caller off
        // mid-operation; another controller can do it.
        return Err(ApiFailure::with_status(
            StatusCode::CONFLICT,
            ErrorCode::ControllerDeletesItself,
            format!(
                "controller {name} cannot delete itself; send DELETE /v1/controllers/{name} to another controller"
            ),
        ));
    }
    let Some(revocation) = membership::delete(&state, &name)? else {
        return Err(ApiFailure::with_status(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no Controller named {name:?}"),
        )
        .with_details(serde_json::json!({"kind": Kind::Controller, "name": name})));
    };
    tracing::info!(controller = %name, by = %admin, address = ?revocation.address, "controller deleted and its certificate revoked");
    Ok(Json(Deleted {
        kind: Kind::Controller,
        name,
        pending: None,
    }))
}
