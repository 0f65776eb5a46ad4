//! Certificates: node renewals, an admin issuing a node's first certificate or a new
//! controller's certificate (`kctl node install --run-controller`), the names a node
//! certificate may carry, and installing a new sub-CA.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kcore_api::ErrorCode;
use kcore_api::cluster::{
    Approval, CertificateInfo, CertificateResponse, ControllerCertificateResponse, CsrRequest,
    InstallSubCa, IssueControllerCertificateRequest, IssueNodeCertificateRequest, SubCaInstalled,
};
use kcore_net::{ApiFailure, ApiJson, PeerCert};
// kcore-net's `Path`: a segment that is not percent-encoded UTF-8 gets the JSON envelope.
use kcore_net::ApiPath as Path;
use kcore_pki::{Authority, Identity, Role, canonical_name};

use super::nodes::{check_node_id, rejected};
use super::{AppState, Caller, NODE_CERT_VALIDITY, RENEW_MIN_INTERVAL, Result, internal, rfc3339};
use crate::store::NodeRecord;

/// Names every node certificate may carry: the agent is reached on loopback by local
/// tools. Loopback names say nothing about which host answers, so sharing them with
/// controllers is harmless once clients check the identity (security review D1).
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// How long a controller certificate issued through the API is valid: as long as the
/// ones `kctl create cluster` / `kctl create controller` issue (kctl's `LEAF_VALIDITY`),
/// so a controller made by `kctl node install` is not the first to expire.
pub const CONTROLLER_CERT_VALIDITY: std::time::Duration =
    std::time::Duration::from_secs(365 * 24 * 3600);

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

/// A refused signature as the API answers it: 503 `SUB_CA_NOT_VALID` when this
/// controller's sub-CA is outside its validity (clients try the next controller), 400
/// `NAME_NOT_ALLOWED` naming the name, 400 `INVALID_CSR` otherwise.
pub(super) fn signing_failure(expected: &Identity, e: kcore_pki::PkiError) -> ApiFailure {
    let (status, code) = match &e {
        // Another controller may hold a current sub-CA: 503 makes clients fail over.
        kcore_pki::PkiError::SignerNotValid { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::SubCaNotValid)
        }
        kcore_pki::PkiError::NameNotAllowed { .. } | kcore_pki::PkiError::WildcardName { .. } => {
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
        .map_err(|e| signing_failure(&expected, e))?;
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
pub(super) fn record_presented_certificate(
    state: &AppState,
    node_id: &str,
    peer: &PeerCert,
) -> Result<()> {
    let Some(cert) = &peer.0 else {
        return Ok(());
    };
    let recorded = state.store.node(node_id).and_then(|r| r.certificate);
    // Recorded again when the issuer serial was not known yet (recorded before it was
    // kept), so revoking a sub-CA sees every node it issued to.
    if recorded
        .as_ref()
        .is_some_and(|c| c.serial == cert.serial && c.issuer_serial == cert.issuer_serial)
    {
        return Ok(());
    }
    let info = CertificateInfo {
        serial: cert.serial.clone(),
        not_before: rfc3339(cert.not_before),
        not_after: rfc3339(cert.not_after),
        issuer: cert.issuer.clone(),
        issuer_serial: cert.issuer_serial.clone(),
    };
    state.store.set_certificate(node_id, &info)?;
    Ok(())
}

/// What the API reports about the first certificate of `pem` (a node's leaf, a sub-CA).
pub(super) fn certificate_info(pem: &str) -> Result<CertificateInfo> {
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
        // The issuer of a chain's first certificate is its second one.
        issuer_serial: certs
            .get(1)
            .and_then(|issuer| kcore_pki::serial_hex(issuer).ok()),
    })
}

pub(super) async fn renew(
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

pub(super) async fn issue_node_certificate(
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

/// `POST /v1/certificates/controller` (admin): signs a new controller's CSR for
/// `kcore://<cluster>/controller/<controllerId>` with the current sub-CA and answers the
/// chain and the sub-CA certificate. The CSR's names are kept unless another node or this
/// controller holds them ([`names_of_others`], loopback allowed). Refused: this
/// controller's own id, and the id of a controller already registered (its certificate
/// would be a second identity for a live controller; delete it first).
pub(super) async fn issue_controller_certificate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<IssueControllerCertificateRequest>,
) -> Result<Json<ControllerCertificateResponse>> {
    let admin = caller.require(&[Role::Admin])?.uri();
    let id = &body.controller_id;
    let expected =
        Identity::new(&state.config.cluster_name, Role::Controller, id).map_err(|e| {
            ApiFailure::with_status(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidIdentity,
                format!("controllerId: {e}"),
            )
        })?;
    if *id == state.config.controller_id
        || state
            .store
            .get(kcore_api::resource::Kind::Controller, id)
            .is_some()
    {
        return Err(ApiFailure::with_status(
            StatusCode::CONFLICT,
            ErrorCode::InvalidIdentity,
            format!(
                "controllerId: controller {id:?} already exists in this cluster; pick another \
                 id (kctl node install --node-id), or `kctl delete controller {id}` first"
            ),
        ));
    }
    let names = kcore_pki::csr_names(&body.csr_pem).map_err(|e| {
        ApiFailure::with_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidCsr,
            format!("csrPem: {e}"),
        )
    })?;
    let taken = names_of_others(&state, id);
    let allowed: Vec<String> = names
        .iter()
        .map(|n| canonical_name(n))
        .filter(|n| !taken.contains(n))
        .collect();
    let signer = state
        .signer
        .read()
        .map_err(|_| internal("signer lock poisoned"))?
        .clone();
    let chain_pem = signer
        .sign_csr_for_names(&body.csr_pem, &expected, &allowed, CONTROLLER_CERT_VALIDITY)
        .map_err(|e| signing_failure(&expected, e))?;
    let certificate = certificate_info(&chain_pem)?;
    tracing::info!(controller = %expected.uri(), by = %admin, not_after = %certificate.not_after, "controller certificate issued");
    Ok(Json(ControllerCertificateResponse {
        chain_pem,
        certificate,
        sub_ca_pem: signer.cert_pem().to_string(),
    }))
}

pub(super) async fn install_sub_ca(
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
    let replaced = {
        let mut signer = state
            .signer
            .write()
            .map_err(|_| internal("signer lock poisoned"))?;
        std::mem::replace(&mut *signer, candidate.clone())
    };
    let old = certificate_info(replaced.cert_pem())?;
    state
        .store
        .put_field("pki/sub-ca", "certificatePem", &body.certificate_pem)?;
    if old.serial != info.serial {
        crate::sub_ca::retire(&state, &old.serial, &info.serial)?;
        // This controller's own certificate moves to the new sub-CA too, so the old one
        // can be revoked without cutting it off. A failure leaves it on the old one (it
        // keeps working until that is revoked) and says so.
        match crate::sub_ca::reissue_own_certificate(&state, &candidate) {
            Ok(serial) => {
                tracing::info!(%serial, "this controller's certificate reissued by the new sub-CA");
                state.credentials_changed.notify_one();
            }
            Err(err) => tracing::warn!(
                "cannot reissue this controller's certificate from the new sub-CA (revoking sub-CA {} will be refused while it holds one from it): {err}",
                old.serial
            ),
        }
    }
    // The Controller record names the sub-CA it signs with and its certificate's issuer.
    state.record_changed.notify_one();
    tracing::info!(by = %admin, serial = %info.serial, retired = %old.serial, "new sub-CA installed");
    Ok(Json(SubCaInstalled {
        controller_id: state.config.controller_id.clone(),
        certificate: info,
    }))
}

/// `GET /v1/pki/sub-cas`: every sub-CA known, who signs with it and whose certificates it
/// issued ([`crate::sub_ca::uses`]).
pub(super) async fn list_sub_cas(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<kcore_api::controller::SubCaUse>>> {
    caller.require(&[Role::Admin])?;
    Ok(Json(crate::sub_ca::uses(&state)))
}

/// `POST /v1/pki/sub-cas/{serial}/revoke`: see [`crate::sub_ca::revoke`].
pub(super) async fn revoke_sub_ca(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(serial): Path<String>,
    ApiJson(body): ApiJson<kcore_api::controller::RevokeSubCa>,
) -> Result<Json<kcore_api::controller::Revocation>> {
    let admin = caller.require(&[Role::Admin])?.uri();
    let revocation = crate::sub_ca::revoke(&state, &serial, body.force)?;
    tracing::warn!(by = %admin, %serial, force = body.force, "sub-CA revoked");
    Ok(Json(revocation))
}
