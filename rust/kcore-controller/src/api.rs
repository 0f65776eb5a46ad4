//! The controller's `/v1` routes and who may call them.
//!
//! | route | roles |
//! |---|---|
//! | `POST /v1/nodes/{id}/register` | node (own id) |
//! | `POST /v1/nodes/{id}/heartbeat` | node (own id) |
//! | `POST /v1/nodes/{id}/renew` | node (own id) |
//! | `GET /v1/nodes`, `GET /v1/nodes/{id}` | admin, controller |
//! | `POST /v1/nodes/{id}/approve`, `.../reject` | admin |
//! | `POST /v1/certificates/node` | admin (a node's first certificate, from its CSR) |
//! | `PUT /v1/pki/sub-ca` | admin (`kctl rotate sub-ca`) |
//! | `GET /v1/storage-classes`, `GET /v1/storage-classes/{name}` | admin, controller |
//! | `GET /v1/replication/vector`, `GET /v1/replication/ops` | controller |
//! | `GET /v1/replication/peers` | admin, controller |
//!
//! The caller's identity comes from the verified client certificate (the TLS layer puts
//! it in the request extensions, `kcore_net::PeerIdentity`); every handler starts with [`Caller::require`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use kcore_api::ApiError;
use kcore_api::cluster::{
    Approval, CertificateInfo, CertificateResponse, CsrRequest, HeartbeatRequest, InstallSubCa,
    IssueNodeCertificateRequest, Node, NodeAck, NodeList, NodeStatus, RegisterRequest,
    StorageClass, StorageClassDetail, StorageClassList, SubCaInstalled, storage_class_names,
};
use kcore_net::ApiJson;
use kcore_pki::{Authority, Identity, Role};

use crate::config::ControllerConfig;
use crate::store::{NodeRecord, Store, WriteOutcome};

/// Node certificates are valid this long; agents renew 30 days before the end.
pub const NODE_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// Shared state of the route handlers.
pub struct AppState {
    pub config: ControllerConfig,
    pub store: Store,
    /// The sub-CA that signs node CSRs; replaced by `PUT /v1/pki/sub-ca`.
    pub signer: RwLock<Arc<Authority>>,
    /// The root CA(s) from `tls.caFile`, to check a new sub-CA before installing it.
    pub trust_pem: String,
    /// What the replication loop last saw of each peer.
    pub peers: crate::replication::PeerStatuses,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("controller_id", &self.config.controller_id)
            .finish_non_exhaustive()
    }
}

/// A refused or failed request, rendered as the `{code, message, details}` envelope.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub error: ApiError,
}

impl Failure {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Failure {
            status,
            error: ApiError::new(code, message),
        }
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {message}");
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("internal error: {message}"),
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, Json(self.error)).into_response()
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(err: crate::store::StoreError) -> Self {
        Failure::internal(err)
    }
}

type Result<T> = std::result::Result<T, Failure>;

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
    /// Refuses unless the caller belongs to this cluster and has one of `roles`.
    pub fn require(&self, state: &AppState, roles: &[Role]) -> Result<&Identity> {
        let Some(identity) = &self.0 else {
            return Err(Failure::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "a client certificate with a kcore:// identity is required",
            ));
        };
        if identity.cluster != state.config.cluster_name {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "WRONG_CLUSTER",
                format!(
                    "{} belongs to cluster {:?}, this controller serves {:?}",
                    identity.uri(),
                    identity.cluster,
                    state.config.cluster_name
                ),
            ));
        }
        if !roles.contains(&identity.role) {
            let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN_ROLE",
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
    fn require_self(&self, state: &AppState, node_id: &str) -> Result<&Identity> {
        let identity = self.require(state, &[Role::Node])?;
        if identity.id != node_id {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "NOT_SELF",
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
    Router::new()
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{id}", get(get_node))
        .route("/v1/nodes/{id}/register", post(register))
        .route("/v1/nodes/{id}/heartbeat", post(heartbeat))
        .route("/v1/nodes/{id}/renew", post(renew))
        .route("/v1/nodes/{id}/approve", post(approve))
        .route("/v1/nodes/{id}/reject", post(reject))
        .route("/v1/certificates/node", post(issue_node_certificate))
        .route("/v1/pki/sub-ca", put(install_sub_ca))
        .route("/v1/storage-classes", get(list_storage_classes))
        .route("/v1/storage-classes/{name}", get(get_storage_class))
        .route("/v1/replication/vector", get(crate::replication::vector))
        .route("/v1/replication/ops", get(crate::replication::ops))
        .route("/v1/replication/peers", get(crate::replication::peers))
        .fallback(|| async {
            Failure::new(
                StatusCode::NOT_FOUND,
                "NO_SUCH_ROUTE",
                "no such route under /v1",
            )
        })
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

fn unix_to_rfc3339(secs: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .map(rfc3339)
}

fn status_of(state: &AppState, record: &NodeRecord, last_heartbeat: Option<i64>) -> NodeStatus {
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

fn node_view(state: &AppState, id: String, record: NodeRecord, beat: Option<i64>) -> Node {
    Node {
        status: status_of(state, &record, beat),
        node_id: id,
        approval: record.approval,
        report: record.report,
        registered_at: record.registered_at,
        last_heartbeat: beat.and_then(unix_to_rfc3339),
        certificate: record.certificate,
    }
}

fn check_node_id(id: &str) -> Result<()> {
    kcore_api::validate::node_id("node id", id)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "INVALID_NODE_ID", e.to_string()))
}

fn not_found(id: &str) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "NODE_NOT_FOUND",
        format!("no node {id:?} is registered"),
    )
}

fn rejected(id: &str) -> Failure {
    Failure::new(
        StatusCode::FORBIDDEN,
        "NODE_REJECTED",
        format!("node {id:?} was rejected by an operator; it cannot register again under this id"),
    )
}

/// Refuses a report over the limits of `kcore_api::report_limits` (413 for the whole
/// report, 422 naming the field).
fn check_report(report: &kcore_api::cluster::NodeReport) -> Result<()> {
    kcore_api::report_limits::check_report(report).map_err(|err| Failure {
        status: StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
        error: err.into(),
    })
}

/// The code of an approval change that lost to a newer value (HTTP 409).
pub const WRITE_SUPERSEDED: &str = "WRITE_SUPERSEDED";

fn ack(state: &AppState, id: &str) -> Result<Json<NodeAck>> {
    let record = state.store.node(id).ok_or_else(|| not_found(id))?;
    Ok(Json(NodeAck {
        node_id: id.to_string(),
        status: status_of(state, &record, state.store.last_heartbeat(id)),
        controller_id: state.config.controller_id.clone(),
    }))
}

async fn register(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<Json<NodeAck>> {
    caller.require_self(&state, &id)?;
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
    state.store.heartbeat(&id, now_unix());
    tracing::info!(node = %id, approval = record.approval.as_str(), "node registered");
    ack(&state, &id)
}

async fn heartbeat(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HeartbeatRequest>,
) -> Result<Json<NodeAck>> {
    caller.require_self(&state, &id)?;
    if let Some(report) = &body.report {
        check_report(report)?;
    }
    let record = state.store.node(&id).ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            "NODE_NOT_REGISTERED",
            format!("node {id:?} is not registered: register first"),
        )
    })?;
    if record.approval == Approval::Rejected {
        return Err(rejected(&id));
    }
    if let Some(report) = &body.report {
        state.store.update_report(&id, report)?;
    }
    state.store.heartbeat(&id, now_unix());
    ack(&state, &id)
}

fn sign_for_node(state: &AppState, node_id: &str, csr_pem: &str) -> Result<CertificateResponse> {
    let expected = Identity::new(&state.config.cluster_name, Role::Node, node_id)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "INVALID_NODE_ID", e.to_string()))?;
    let signer = state
        .signer
        .read()
        .map_err(|_| Failure::internal("signer lock poisoned"))?
        .clone();
    let chain_pem = signer
        .sign_csr(csr_pem, &expected, NODE_CERT_VALIDITY)
        .map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "INVALID_CSR",
                format!("cannot sign the CSR for {}: {e}", expected.uri()),
            )
        })?;
    let info = certificate_info(&chain_pem)?;
    state.store.set_certificate(node_id, &info)?;
    tracing::info!(node = %node_id, not_after = %info.not_after, "node certificate issued");
    Ok(CertificateResponse {
        chain_pem,
        certificate: info,
    })
}

/// What the API reports about the first certificate of `pem` (a node's leaf, a sub-CA).
fn certificate_info(pem: &str) -> Result<CertificateInfo> {
    let certs = kcore_pki::certs_from_pem(pem).map_err(Failure::internal)?;
    let first = certs
        .first()
        .ok_or_else(|| Failure::internal("no certificate in the PEM"))?;
    let info = kcore_pki::cert_info(first).map_err(Failure::internal)?;
    Ok(CertificateInfo {
        serial: info.serial,
        not_before: rfc3339(info.not_before),
        not_after: rfc3339(info.not_after),
        issuer: info.issuer,
    })
}

async fn renew(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CsrRequest>,
) -> Result<Json<CertificateResponse>> {
    caller.require_self(&state, &id)?;
    if let Some(record) = state.store.node(&id)
        && record.approval == Approval::Rejected
    {
        return Err(rejected(&id));
    }
    Ok(Json(sign_for_node(&state, &id, &body.csr_pem)?))
}

async fn issue_node_certificate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<IssueNodeCertificateRequest>,
) -> Result<Json<CertificateResponse>> {
    let admin = caller.require(&state, &[Role::Admin])?.uri();
    check_node_id(&body.node_id)?;
    if let Some(record) = state.store.node(&body.node_id)
        && record.approval == Approval::Rejected
    {
        return Err(rejected(&body.node_id));
    }
    tracing::info!(node = %body.node_id, by = %admin, "issuing a node's first certificate");
    Ok(Json(sign_for_node(&state, &body.node_id, &body.csr_pem)?))
}

async fn list_nodes(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Json<NodeList>> {
    caller.require(&state, &[Role::Admin, Role::Controller])?;
    let items = state
        .store
        .nodes()
        .into_iter()
        .map(|(id, rec, beat)| node_view(&state, id, rec, beat))
        .collect();
    Ok(Json(NodeList { items }))
}

async fn get_node(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Node>> {
    caller.require(&state, &[Role::Admin, Role::Controller])?;
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
    let admin = caller.require(&state, &[Role::Admin])?.uri();
    let record = state.store.node(&id).ok_or_else(|| not_found(&id))?;
    if record.approval == Approval::Rejected && approval == Approval::Approved {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            "NODE_REJECTED",
            format!(
                "node {id:?} was rejected; a rejected id stays rejected (reinstall the node under a new id)"
            ),
        ));
    }
    if record.approval != approval
        && let WriteOutcome::Superseded(newer) = state.store.set_approval(&id, approval)?
    {
        let value = newer.value.as_deref().unwrap_or("(deleted)");
        return Err(Failure {
            status: StatusCode::CONFLICT,
            error: ApiError::new(
                WRITE_SUPERSEDED,
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

async fn approve(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Node>> {
    set_approval(state, caller, id, Approval::Approved).await
}

async fn reject(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Node>> {
    set_approval(state, caller, id, Approval::Rejected).await
}

async fn install_sub_ca(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<InstallSubCa>,
) -> Result<Json<SubCaInstalled>> {
    let admin = caller.require(&state, &[Role::Admin])?.uri();
    let candidate = Authority::from_pem(&body.certificate_pem, &body.key_pem).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "INVALID_SUB_CA",
            format!("certificatePem/keyPem: {e}"),
        )
    })?;
    candidate.check_chains_to(&state.trust_pem).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "SUB_CA_UNTRUSTED",
            format!("the new sub-CA does not chain to this cluster's root CA: {e}"),
        )
    })?;
    let tls = &state.config.tls;
    // Key first: if the certificate write fails, the old certificate no longer matches
    // the key on disk and start-up says so, instead of silently signing with a mismatch.
    kcore_pki::write_atomically(&tls.sub_ca_key_file, body.key_pem.as_bytes(), 0o600)
        .map_err(|e| Failure::internal(format!("{}: {e}", tls.sub_ca_key_file.display())))?;
    kcore_pki::write_atomically(
        &tls.sub_ca_cert_file,
        body.certificate_pem.as_bytes(),
        0o644,
    )
    .map_err(|e| Failure::internal(format!("{}: {e}", tls.sub_ca_cert_file.display())))?;
    let candidate = Arc::new(candidate);
    let info = certificate_info(candidate.cert_pem())?;
    *state
        .signer
        .write()
        .map_err(|_| Failure::internal("signer lock poisoned"))? = candidate;
    state
        .store
        .put_field("pki/sub-ca", "certificatePem", &body.certificate_pem)?;
    tracing::info!(by = %admin, serial = %info.serial, "new sub-CA installed");
    Ok(Json(SubCaInstalled {
        controller_id: state.config.controller_id.clone(),
        certificate: info,
    }))
}

fn storage_classes(state: &AppState) -> Vec<(StorageClass, Vec<Node>)> {
    let nodes: Vec<Node> = state
        .store
        .nodes()
        .into_iter()
        .map(|(id, rec, beat)| node_view(state, id, rec, beat))
        .collect();
    storage_class_names()
        .into_iter()
        .map(|name| {
            let members: Vec<Node> = nodes
                .iter()
                .filter(|n| n.report.storage.class_name() == name)
                .cloned()
                .collect();
            let class = StorageClass {
                name: name.to_string(),
                nodes: members.len(),
                ready_nodes: members
                    .iter()
                    .filter(|n| n.status == NodeStatus::Ready)
                    .count(),
            };
            (class, members)
        })
        .collect()
}

async fn list_storage_classes(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<StorageClassList>> {
    caller.require(&state, &[Role::Admin, Role::Controller])?;
    Ok(Json(StorageClassList {
        items: storage_classes(&state)
            .into_iter()
            .map(|(c, _)| c)
            .collect(),
    }))
}

async fn get_storage_class(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<StorageClassDetail>> {
    caller.require(&state, &[Role::Admin, Role::Controller])?;
    storage_classes(&state)
        .into_iter()
        .find(|(c, _)| c.name == name)
        .map(|(class, nodes)| Json(StorageClassDetail { class, nodes }))
        .ok_or_else(|| {
            Failure::new(
                StatusCode::NOT_FOUND,
                "NO_SUCH_STORAGE_CLASS",
                format!(
                    "no storage class {name:?}; the classes are {}",
                    storage_class_names().join(", ")
                ),
            )
        })
}
