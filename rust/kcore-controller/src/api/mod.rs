//! The controller's `/v1` routes and who may call them: the router and the caller's
//! identity here, one file per area ([`nodes`], [`pki`], [`storage_classes`]) and one per
//! stored kind ([`clusterupdates`], [`vms`], [`controllers`]) over the generic handlers in [`resources`].
//!
//! | route | roles |
//! |---|---|
//! | `POST /v1/nodes/{id}/register` | node (own id) |
//! | `POST /v1/nodes/{id}/heartbeat` | node (own id) |
//! | `POST /v1/nodes/{id}/renew` | node (own id) |
//! | `GET /v1/nodes`, `GET /v1/nodes/{id}` | admin, controller |
//! | `DELETE /v1/nodes/{id}` | admin |
//! | `POST /v1/nodes/{id}/approve`, `.../reject` | admin |
//! | `POST /v1/nodes/{id}/cordon`, `.../uncordon` | admin |
//! | `POST /v1/certificates/node` | admin (a node's first certificate, from its CSR) |
//! | `POST /v1/certificates/metrics` | admin (a scraper's certificate, from its CSR) |
//! | `POST /v1/certificates/controller` | admin (a new controller's certificate, from its CSR; `kctl node install --run-controller`) |
//! | `PUT /v1/pki/sub-ca` | admin (`kctl rotate sub-ca`; retires the one it replaces) |
//! | `GET /v1/pki/sub-cas`, `POST /v1/pki/sub-cas/{serial}/revoke` | admin ([`crate::sub_ca`]) |
//! | `GET /v1/storage-classes`, `GET /v1/storage-classes/{name}` | admin, controller |
//! | `GET /v1/clusterupdates`, `GET /v1/clusterupdates/{name}` | admin, controller |
//! | `PUT /v1/clusterupdates/{name}`, `DELETE /v1/clusterupdates/{name}` | admin |
//! | `POST /v1/clusterupdates/{name}/approve`, `.../cancel` | admin |
//! | `GET /v1/nodes/{id}/assignment?wait=S&known=T`, `POST .../assignment/report` | node (own id) |
//! | `GET /v1/vms`, `GET /v1/vms/{name}` | admin, controller |
//! | `PUT /v1/vms/{name}`, `DELETE /v1/vms/{name}` | admin |
//! | `POST /v1/nodes/{id}/vms/report` | node (own id) |
//! | `GET /v1/controllers`, `GET /v1/controllers/{id}` | admin, controller |
//! | `DELETE /v1/controllers/{id}` | admin (revokes its certificate) |
//! | `POST /v1/controllers/{id}/register` | controller (own id, own certificate serial) |
//! | `GET /v1/replication/vector`, `GET /v1/replication/ops`, `GET /v1/replication/snapshot` | controller |
//! | `GET /v1/replication/peers` | admin, controller |
//! | `GET /v1/version` | admin, controller, node |
//! | `GET /metrics` | metrics, admin ([`metrics`]; the `metrics` role may call nothing else) |
//!
//! The caller's identity comes from the verified client certificate (the TLS layer puts
//! it in the request extensions, `kcore_net::PeerIdentity`); every handler starts with [`Caller::require`].

mod clusterupdates;
mod controllers;
mod metrics;
pub(crate) mod nodes;
mod pki;
mod resources;
mod storage_classes;
mod version;
mod vms;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post, put};
use kcore_api::ErrorCode;
use kcore_net::ApiFailure;
use kcore_pki::{Authority, Identity, Role};

use crate::config::ControllerConfig;
use crate::store::Store;

/// Node certificates are valid this long; agents renew 30 days before the end.
pub use kcore_pki::NODE_CERT_VALIDITY;

/// A node may renew at most once per this interval (a healthy node renews every 60
/// days; anything faster is a loop or an abuse, and each renewal is a signature and a
/// stored operation).
pub const RENEW_MIN_INTERVAL: Duration = Duration::from_secs(60);

/// Shared state of the route handlers.
pub struct AppState {
    pub config: ControllerConfig,
    pub store: Store,
    /// The sub-CA that signs node CSRs; replaced by `PUT /v1/pki/sub-ca`.
    pub signer: RwLock<Arc<Authority>>,
    /// The root CA(s) from `tls.caFile`, to check a new sub-CA before installing it.
    pub trust_pem: String,
    /// When each node last renewed (soft state, for [`RENEW_MIN_INTERVAL`]).
    pub renewals: Mutex<HashMap<String, Instant>>,
    /// What the replication loop last saw of each peer.
    pub peers: crate::replication::PeerStatuses,
    /// The addresses pulled from, in order (seeds first), as last reconciled; `None`
    /// before the first tick (then the configured `peers` are shown).
    pub peer_set: RwLock<Option<Vec<String>>>,
    /// Wakes the refresh of this controller's own `Controller` record early, when what it
    /// says changed (a new sub-CA), instead of at the next interval.
    pub record_changed: tokio::sync::Notify,
    /// Wakes the reload of this controller's own certificate into its TLS server and peer
    /// clients, after a sub-CA install issued it a new one ([`crate::sub_ca`]).
    pub credentials_changed: tokio::sync::Notify,
    /// Request latency by route, for `GET /metrics` (filled by the router's layer).
    pub requests: kcore_net::metrics::RequestMetrics,
    /// Every node's rollout step, computed once per store version for all long polls.
    pub assignments: crate::assignment::Cache,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("controller_id", &self.config.controller_id)
            .finish_non_exhaustive()
    }
}

/// A failure inside the controller: logged here, answered as `500 INTERNAL`.
pub fn internal(message: impl std::fmt::Display) -> ApiFailure {
    tracing::error!("internal error: {message}");
    ApiFailure::internal(format!("internal error: {message}"))
}

impl From<crate::store::StoreError> for ApiFailure {
    fn from(err: crate::store::StoreError) -> Self {
        internal(err)
    }
}

type Result<T> = std::result::Result<T, ApiFailure>;

/// The authenticated caller, from the client certificate's SAN URI.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Identity>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        Ok(Caller(
            parts
                .extensions
                .get::<kcore_net::PeerIdentity>()
                .and_then(|peer| peer.0.clone()),
        ))
    }
}

impl Caller {
    /// Refuses unless the caller has one of `roles`. Its cluster was checked for every
    /// request already (`ServeOptions::cluster`, `403 WRONG_CLUSTER`).
    pub fn require(&self, roles: &[Role]) -> Result<&Identity> {
        let Some(identity) = &self.0 else {
            return Err(ApiFailure::with_status(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                "a client certificate with a kcore:// identity is required",
            ));
        };
        if !roles.contains(&identity.role) {
            let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            return Err(ApiFailure::with_status(
                StatusCode::FORBIDDEN,
                ErrorCode::ForbiddenRole,
                format!(
                    "{} may not call this route (allowed roles: {})",
                    identity.uri(),
                    allowed.join(", ")
                ),
            ));
        }
        Ok(identity)
    }

    /// Refuses unless the caller is the node `node_id` itself.
    pub(super) fn require_self(&self, node_id: &str) -> Result<&Identity> {
        let identity = self.require(&[Role::Node])?;
        if identity.id != node_id {
            return Err(ApiFailure::with_status(
                StatusCode::FORBIDDEN,
                ErrorCode::NotSelf,
                format!(
                    "{} may act only for node {:?}, not {node_id:?}",
                    identity.uri(),
                    identity.id
                ),
            ));
        }
        Ok(identity)
    }
}

/// The routes, ready for the TLS server.
pub fn router(state: Arc<AppState>) -> Router {
    let router = Router::new()
        .route("/v1/nodes", get(nodes::list_nodes))
        .route(
            "/v1/nodes/{id}",
            get(nodes::get_node).delete(nodes::delete_node),
        )
        .route("/v1/nodes/{id}/register", post(nodes::register))
        .route("/v1/nodes/{id}/heartbeat", post(nodes::heartbeat))
        .route("/v1/nodes/{id}/renew", post(pki::renew))
        .route("/v1/nodes/{id}/approve", post(nodes::approve))
        .route("/v1/nodes/{id}/reject", post(nodes::reject))
        .route("/v1/nodes/{id}/cordon", post(nodes::cordon))
        .route("/v1/nodes/{id}/uncordon", post(nodes::uncordon))
        .route("/v1/certificates/node", post(pki::issue_node_certificate))
        .route(
            "/v1/certificates/controller",
            post(pki::issue_controller_certificate),
        )
        .route(
            "/v1/certificates/metrics",
            post(metrics::issue_metrics_certificate),
        )
        .route("/v1/pki/sub-ca", put(pki::install_sub_ca))
        .route("/v1/pki/sub-cas", get(pki::list_sub_cas))
        .route("/v1/pki/sub-cas/{serial}/revoke", post(pki::revoke_sub_ca))
        .route(
            "/v1/storage-classes",
            get(storage_classes::list_storage_classes),
        )
        .route(
            "/v1/storage-classes/{name}",
            get(storage_classes::get_storage_class),
        )
        .route("/v1/replication/vector", get(crate::replication::vector))
        .route("/v1/replication/ops", get(crate::replication::ops))
        .route(
            "/v1/replication/snapshot",
            get(crate::replication::snapshot),
        )
        .route("/v1/replication/peers", get(crate::replication::peers))
        .route("/v1/version", get(version::version))
        .route(kcore_net::metrics::METRICS_PATH, get(metrics::metrics));
    let router = resources::routes(router, &clusterupdates::DEFINITION);
    let router = clusterupdates::routes(router);
    let router = resources::routes(router, &vms::DEFINITION);
    let router = vms::routes(router);
    controllers::routes(router)
        // The same 404 as the agent's (`NOT_FOUND`, naming the path).
        .fallback(kcore_net::error::not_found)
        .layer(axum::middleware::from_fn(
            kcore_net::metrics::confine_scrapers,
        ))
        // Last, so it measures every route and the fallback.
        .layer(axum::middleware::from_fn_with_state(
            state.requests.clone(),
            kcore_net::metrics::track_requests,
        ))
        .with_state(state)
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// RFC 3339 in UTC, whole seconds (what tables and JSON show).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

pub(super) fn unix_to_rfc3339(secs: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .map(rfc3339)
}
