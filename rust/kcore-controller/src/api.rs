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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use kcore_api::cluster::{
    Approval, CertificateInfo, CertificateResponse, CsrRequest, HeartbeatRequest, InstallSubCa,
    IssueNodeCertificateRequest, Node, NodeAck, NodeList, NodeStatus, RegisterRequest,
    StorageClass, StorageClassDetail, StorageClassList, SubCaInstalled, storage_class_names,
};
use kcore_api::{ApiError, ErrorCode};
use kcore_net::{ApiFailure, ApiJson, PeerCert};
// kcore-net's `Path`: a segment that is not percent-encoded UTF-8 gets the JSON envelope.
use kcore_net::ApiPath as Path;
use kcore_pki::{Authority, Identity, Role, canonical_name};

use crate::config::ControllerConfig;
use crate::store::{NodeRecord, Store, WriteOutcome};

/// Node certificates are valid this long; agents renew 30 days before the end.
pub use kcore_pki::NODE_CERT_VALIDITY;

/// A node may renew at most once per this interval (a healthy node renews every 60
/// days; anything faster is a loop or an abuse, and each renewal is a signature and a
/// stored operation).
pub const RENEW_MIN_INTERVAL: Duration = Duration::from_secs(60);

/// Names every node certificate may carry: the agent is reached on loopback by local
/// tools. Loopback names say nothing about which host answers, so sharing them with
/// controllers is harmless once clients check the identity (security review D1).
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

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
    fn require_self(&self, node_id: &str) -> Result<&Identity> {
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
        // The same 404 as the agent's (`NOT_FOUND`, naming the path).
        .fallback(kcore_net::error::not_found)
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
    kcore_api::validate::node_id("node id", id).map_err(|e| {
        ApiFailure::with_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidNodeId,
            e.to_string(),
        )
    })
}

fn not_found(id: &str) -> ApiFailure {
    ApiFailure::with_status(
        StatusCode::NOT_FOUND,
        ErrorCode::NodeNotFound,
        format!("no node {id:?} is registered"),
    )
}

fn rejected(id: &str) -> ApiFailure {
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
    ack(&state, &id)
}

async fn heartbeat(
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
    ack(&state, &id)
}

/// Who asked for a node certificate: the node renewing its own, or an admin issuing a
/// node's first one from the CSR the operator brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Requester {
    Node,
    Admin,
}

/// `host` of `host:port` / `[v6]:port` (an agent address), lower-cased.
fn host_of(address: &str) -> Option<String> {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| canonical_name(host))
}

/// The names a node claims through its registration: its id, hostname and the host of
/// its agent address.
fn registered_names(node_id: &str, record: Option<&NodeRecord>) -> Vec<String> {
    let mut names = vec![canonical_name(node_id)];
    if let Some(record) = record {
        if !record.report.hostname.is_empty() {
            names.push(canonical_name(&record.report.hostname));
        }
        if let Some(host) = record.report.agent_address.as_deref().and_then(host_of) {
            names.push(host);
        }
    }
    names
}

/// Names that belong to someone else: every other node's registered names, and this
/// controller's own (its id, the names in its certificate, its peers' hosts).
fn names_of_others(state: &AppState, node_id: &str) -> BTreeSet<String> {
    let mut taken = BTreeSet::new();
    for (id, record, _) in state.store.nodes() {
        if id != node_id {
            taken.extend(registered_names(&id, Some(&record)));
        }
    }
    taken.insert(canonical_name(&state.config.controller_id));
    taken.extend(state.config.peers.iter().filter_map(|p| host_of(p)));
    match kcore_pki::read_pem_file("tls.certFile", &state.config.tls.cert_file)
        .and_then(|pem| kcore_pki::certs_from_pem(&pem))
    {
        Ok(certs) => {
            if let Some(leaf) = certs.first() {
                taken.extend(
                    kcore_pki::cert_names(leaf)
                        .iter()
                        .map(|n| canonical_name(n)),
                );
            }
        }
        Err(err) => tracing::warn!("cannot read this controller's names: {err}"),
    }
    for loopback in LOOPBACK_NAMES {
        taken.remove(loopback);
    }
    taken
}

/// The DNS names and addresses node `node_id`'s certificate may carry (docs/pki.md):
/// loopback, its id, and the hostname and agent address it registered with; for a
/// first certificate an admin issues, also the names in the CSR the admin brought.
/// Never a wildcard (kcore-pki refuses those) and never a name another node or a
/// controller holds.
fn allowed_names(
    state: &AppState,
    node_id: &str,
    csr_pem: &str,
    requester: Requester,
) -> Result<Vec<String>> {
    let mut allowed: BTreeSet<String> = LOOPBACK_NAMES.iter().map(|n| n.to_string()).collect();
    allowed.extend(registered_names(
        node_id,
        state.store.node(node_id).as_ref(),
    ));
    if requester == Requester::Admin {
        let names = kcore_pki::csr_names(csr_pem).map_err(|e| {
            ApiFailure::with_status(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidCsr,
                format!("csrPem: {e}"),
            )
        })?;
        allowed.extend(names.iter().map(|n| canonical_name(n)));
    }
    let taken = names_of_others(state, node_id);
    Ok(allowed.into_iter().filter(|n| !taken.contains(n)).collect())
}

fn sign_for_node(
    state: &AppState,
    node_id: &str,
    csr_pem: &str,
    requester: Requester,
) -> Result<CertificateResponse> {
    let expected = Identity::new(&state.config.cluster_name, Role::Node, node_id).map_err(|e| {
        ApiFailure::with_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidNodeId,
            e.to_string(),
        )
    })?;
    let allowed = allowed_names(state, node_id, csr_pem, requester)?;
    let signer = state
        .signer
        .read()
        .map_err(|_| internal("signer lock poisoned"))?
        .clone();
    let chain_pem = signer
        .sign_csr_for_names(csr_pem, &expected, &allowed, NODE_CERT_VALIDITY)
        .map_err(|e| {
            let (status, code) = match &e {
                // Another controller may hold a current sub-CA: 503 makes clients fail over.
                kcore_pki::PkiError::SignerNotValid { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::SubCaNotValid)
                }
                kcore_pki::PkiError::NameNotAllowed { .. }
                | kcore_pki::PkiError::WildcardName { .. } => {
                    (StatusCode::BAD_REQUEST, ErrorCode::NameNotAllowed)
                }
                _ => (StatusCode::BAD_REQUEST, ErrorCode::InvalidCsr),
            };
            let name = match &e {
                kcore_pki::PkiError::NameNotAllowed { name, .. }
                | kcore_pki::PkiError::WildcardName { name, .. } => Some(name.clone()),
                _ => None,
            };
            let failure = ApiFailure::with_status(
                status,
                code,
                format!("cannot sign the CSR for {}: {e}", expected.uri()),
            );
            match name {
                Some(name) => failure.with_details(serde_json::json!({"name": name})),
                None => failure,
            }
        })?;
    let info = certificate_info(&chain_pem)?;
    // Not recorded here: the controller records the certificate a node presents when it
    // registers or heartbeats (a certificate never installed must not show up).
    tracing::info!(node = %node_id, not_after = %info.not_after, "node certificate issued");
    Ok(CertificateResponse {
        chain_pem,
        certificate: info,
    })
}

/// Records the certificate the node authenticated this request with, when it is not
/// the one on record (after a renewal the node installed, or a first registration).
fn record_presented_certificate(state: &AppState, node_id: &str, peer: &PeerCert) -> Result<()> {
    let Some(cert) = &peer.0 else {
        return Ok(());
    };
    let recorded = state.store.node(node_id).and_then(|r| r.certificate);
    if recorded.as_ref().map(|c| c.serial.as_str()) == Some(cert.serial.as_str()) {
        return Ok(());
    }
    let info = CertificateInfo {
        serial: cert.serial.clone(),
        not_before: rfc3339(cert.not_before),
        not_after: rfc3339(cert.not_after),
        issuer: cert.issuer.clone(),
    };
    state.store.set_certificate(node_id, &info)?;
    Ok(())
}

/// What the API reports about the first certificate of `pem` (a node's leaf, a sub-CA).
fn certificate_info(pem: &str) -> Result<CertificateInfo> {
    let certs = kcore_pki::certs_from_pem(pem).map_err(internal)?;
    let first = certs
        .first()
        .ok_or_else(|| internal("no certificate in the PEM"))?;
    let info = kcore_pki::cert_info(first).map_err(internal)?;
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
    caller.require_self(&id)?;
    let record = state.store.node(&id).ok_or_else(|| {
        ApiFailure::with_status(
            StatusCode::NOT_FOUND,
            ErrorCode::NodeNotRegistered,
            format!("node {id:?} is not registered: register before renewing"),
        )
    })?;
    match record.approval {
        Approval::Approved => {}
        Approval::Rejected => return Err(rejected(&id)),
        Approval::Pending => {
            return Err(ApiFailure::with_status(
                StatusCode::FORBIDDEN,
                ErrorCode::NodeNotApproved,
                format!("node {id:?} is waiting for approval: `kctl node approve {id}` first"),
            ));
        }
    }
    {
        let renewals = state
            .renewals
            .lock()
            .map_err(|_| internal("renewal lock poisoned"))?;
        if let Some(last) = renewals.get(&id)
            && last.elapsed() < RENEW_MIN_INTERVAL
        {
            let wait = RENEW_MIN_INTERVAL.saturating_sub(last.elapsed()).as_secs() + 1;
            return Err(ApiFailure::with_status(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RenewRateLimited,
                format!(
                    "node {id:?} renewed less than {RENEW_MIN_INTERVAL:?} ago; retry in {wait} s"
                ),
            )
            .with_details(serde_json::json!({"retryAfterSeconds": wait})));
        }
    }
    let signed = sign_for_node(&state, &id, &body.csr_pem, Requester::Node)?;
    // Only signatures count against the rate: a refused CSR costs a parse, not an
    // operation or a key, and the node can correct it at once.
    state
        .renewals
        .lock()
        .map_err(|_| internal("renewal lock poisoned"))?
        .insert(id.clone(), Instant::now());
    Ok(Json(signed))
}

async fn issue_node_certificate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<IssueNodeCertificateRequest>,
) -> Result<Json<CertificateResponse>> {
    let admin = caller.require(&[Role::Admin])?.uri();
    check_node_id(&body.node_id)?;
    if let Some(record) = state.store.node(&body.node_id)
        && record.approval == Approval::Rejected
    {
        return Err(rejected(&body.node_id));
    }
    tracing::info!(node = %body.node_id, by = %admin, "issuing a node's first certificate");
    Ok(Json(sign_for_node(
        &state,
        &body.node_id,
        &body.csr_pem,
        Requester::Admin,
    )?))
}

async fn list_nodes(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Json<NodeList>> {
    caller.require(&[Role::Admin, Role::Controller])?;
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
    let admin = caller.require(&[Role::Admin])?.uri();
    let candidate = Authority::from_pem(&body.certificate_pem, &body.key_pem).map_err(|e| {
        ApiFailure::with_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidSubCa,
            format!("certificatePem/keyPem: {e}"),
        )
    })?;
    let now = time::OffsetDateTime::now_utc();
    if now < candidate.not_before() || now >= candidate.not_after() {
        return Err(ApiFailure::with_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::SubCaNotValid,
            format!(
                "certificatePem: the sub-CA is valid from {} to {}, which does not include now ({}); issue a current one with `kctl rotate sub-ca`",
                rfc3339(candidate.not_before()),
                rfc3339(candidate.not_after()),
                rfc3339(now)
            ),
        ));
    }
    let needed = time::Duration::try_from(NODE_CERT_VALIDITY).unwrap_or(time::Duration::MAX);
    if candidate.not_after() < now + needed && !body.allow_short {
        return Err(ApiFailure::with_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::SubCaTooShort,
            format!(
                "certificatePem: the sub-CA expires {}, before a node certificate issued now would ({} days); every node would renew early and lose its certificate when it ends. Use a longer sub-CA, or pass --allow-short (allowShort: true) to install it anyway",
                rfc3339(candidate.not_after()),
                NODE_CERT_VALIDITY.as_secs() / 86_400
            ),
        ));
    }
    candidate.check_chains_to(&state.trust_pem).map_err(|e| {
        ApiFailure::with_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::SubCaUntrusted,
            format!("the new sub-CA does not chain to this cluster's root CA: {e}"),
        )
    })?;
    let tls = &state.config.tls;
    // Key first: if the certificate write fails, the old certificate no longer matches
    // the key on disk and start-up says so, instead of silently signing with a mismatch.
    kcore_pki::write_atomically(&tls.sub_ca_key_file, body.key_pem.as_bytes(), 0o600)
        .map_err(|e| internal(format!("{}: {e}", tls.sub_ca_key_file.display())))?;
    kcore_pki::write_atomically(
        &tls.sub_ca_cert_file,
        body.certificate_pem.as_bytes(),
        0o644,
    )
    .map_err(|e| internal(format!("{}: {e}", tls.sub_ca_cert_file.display())))?;
    let candidate = Arc::new(candidate);
    let info = certificate_info(candidate.cert_pem())?;
    *state
        .signer
        .write()
        .map_err(|_| internal("signer lock poisoned"))? = candidate;
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
    caller.require(&[Role::Admin, Role::Controller])?;
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
    caller.require(&[Role::Admin, Role::Controller])?;
    storage_classes(&state)
        .into_iter()
        .find(|(c, _)| c.name == name)
        .map(|(class, nodes)| Json(StorageClassDetail { class, nodes }))
        .ok_or_else(|| {
            ApiFailure::with_status(
                StatusCode::NOT_FOUND,
                ErrorCode::NoSuchStorageClass,
                format!(
                    "no storage class {name:?}; the classes are {}",
                    storage_class_names().join(", ")
                ),
            )
        })
}
