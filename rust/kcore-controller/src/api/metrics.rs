//! `GET /metrics` on the controller, in the Prometheus text format (docs/metrics.md):
//! nodes by status, heartbeat age, certificate expiry (node certificates, the sub-CA,
//! this controller's own certificate), replication towards each peer, and request latency
//! by route (`kcore_net::metrics`). Also the scraper's certificate:
//! `POST /v1/certificates/metrics` (admin, `kctl create metrics-cert`).
//!
//! Everything but the latency histogram is a view of state read at the scrape: node
//! statuses come from the same [`status_of`] as `GET /v1/nodes`, replication figures from
//! the same [`peer_list`] as `GET /v1/replication/peers`, so the metrics never disagree
//! with the API. Only the `metrics` and `admin` roles may scrape
//! ([`kcore_net::metrics::SCRAPERS`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kcore_api::ErrorCode;
use kcore_api::cluster::{CertificateResponse, IssueMetricsCertificateRequest, NodeStatus};
use kcore_net::metrics::{Labels, SCRAPERS, Scrape, unix_seconds};
use kcore_net::{ApiFailure, ApiJson};
use kcore_pki::{Identity, Role};
use strum::IntoEnumIterator as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::nodes::status_of;
use super::pki::{certificate_info, signing_failure};
use super::{AppState, Caller, Result, internal, now_unix};
use crate::replication::peer_list;
use crate::store::hlc_unix_seconds;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

/// A `notAfter` as the store records it (RFC 3339), in Unix seconds.
fn rfc3339_seconds(text: &str) -> Option<f64> {
    OffsetDateTime::parse(text, &Rfc3339).ok().map(unix_seconds)
}

/// The expiry of the first certificate in a PEM file (this controller's own leaf), read at
/// each scrape so a replaced file shows at once.
fn file_expiry(path: &std::path::Path) -> Option<f64> {
    let pem = kcore_pki::read_pem_file("tls.certFile", path)
        .map_err(|err| tracing::warn!("metrics: {err}"))
        .ok()?;
    kcore_pki::not_after(&pem).ok().map(unix_seconds)
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Scrape> {
    caller.require(SCRAPERS)?;
    let mut scrape = Scrape::default();
    let now = now_unix();
    let me = state.config.controller_id.as_str();

    let nodes = state.store.nodes();
    let statuses: Vec<NodeStatus> = nodes
        .iter()
        .map(|(_, record, beat)| status_of(&state, record, *beat))
        .collect();
    // Every status is listed, zeros too, so an alert on `kcore_nodes{status="NotReady"}`
    // sees 0 rather than no series.
    scrape.gauge(
        "nodes",
        "Nodes known to this controller, by status (as GET /v1/nodes shows them)",
        NodeStatus::iter().map(|status| {
            let count = statuses.iter().filter(|s| **s == status).count();
            (labels(&[("status", &status.to_string())]), count as f64)
        }),
    );
    scrape.gauge(
        "node_heartbeat_age_seconds",
        "Seconds since each node's last heartbeat known to this controller (any controller's)",
        nodes.iter().filter_map(|(id, _, beat)| {
            let age = now.saturating_sub((*beat)?).max(0);
            Some((labels(&[("node", id)]), age as f64))
        }),
    );

    let signer = state
        .signer
        .read()
        .map_err(|_| internal("signer lock poisoned"))?
        .clone();
    let mut expiries: Vec<(Labels, f64)> = nodes
        .iter()
        .filter_map(|(id, record, _)| {
            let not_after = rfc3339_seconds(&record.certificate.as_ref()?.not_after)?;
            Some((labels(&[("kind", "node"), ("id", id)]), not_after))
        })
        .collect();
    expiries.push((
        labels(&[("kind", "sub-ca"), ("id", me)]),
        unix_seconds(signer.not_after()),
    ));
    if let Some(own) = file_expiry(&state.config.tls.cert_file) {
        expiries.push((labels(&[("kind", "controller"), ("id", me)]), own));
    }
    scrape.gauge(
        "certificate_expiry_timestamp_seconds",
        "notAfter of a certificate as Unix seconds: each node's (the one it presents), the sub-CA this controller signs with, and this controller's own",
        expiries,
    );

    let peers = peer_list(&state)?;
    scrape.gauge(
        "replication_peer_up",
        "1 when the last poll of this replication peer succeeded",
        peers.peers.iter().map(|p| {
            let id = p.controller_id.as_deref().unwrap_or("");
            (
                labels(&[("peer", &p.peer), ("controller", id)]),
                f64::from(u8::from(p.healthy)),
            )
        }),
    );
    scrape.gauge(
        "replication_peer_state",
        "1 for the state each replication peer is in (Unknown, Healthy, Unreachable, ClockAhead)",
        peers.peers.iter().map(|p| {
            let state = serde_json::to_value(p.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            (labels(&[("peer", &p.peer), ("state", &state)]), 1.0)
        }),
    );
    scrape.gauge(
        "replication_peer_refused_operations",
        "Operations refused at the last poll of this peer (stamped beyond maxClockSkewSeconds)",
        peers
            .peers
            .iter()
            .map(|p| (labels(&[("peer", &p.peer)]), p.refused_operations as f64)),
    );
    // How far each peer lags behind this controller (GET /v1/replication/peers'
    // lagOperations / lagSeconds, `Store::lag_of`); absent until the peer's id is known.
    scrape.gauge(
        "replication_peer_lag_operations",
        "Operations held here that each replication peer is not known to hold yet",
        peers
            .peers
            .iter()
            .filter_map(|p| Some((labels(&[("peer", &p.peer)]), p.lag_operations? as f64))),
    );
    scrape.gauge(
        "replication_peer_lag_seconds",
        "Age in seconds of the oldest operation held here that each replication peer lacks",
        peers
            .peers
            .iter()
            .filter_map(|p| Some((labels(&[("peer", &p.peer)]), p.lag_seconds? as f64))),
    );
    // Lag of a controller pulling from this one: per origin, how far the newest operation
    // it was served is behind the newest this controller holds (by the HLCs' clock time).
    let held = state.store.version_vector()?;
    scrape.gauge(
        "replication_pull_lag_seconds",
        "Per controller pulling from this one and per origin: this controller's newest operation time minus the newest it served that controller",
        peers.pulled_by.iter().flat_map(|cursor| {
            let held = &held;
            cursor.origins.iter().filter_map(move |(origin, reached)| {
                let newest = hlc_unix_seconds(held.get(origin)?)?;
                let lag = (newest - hlc_unix_seconds(reached)?).max(0.0);
                Some((
                    labels(&[("peer", &cursor.controller_id), ("origin", origin)]),
                    lag,
                ))
            })
        }),
    );
    scrape.gauge(
        "replication_pull_age_seconds",
        "Seconds since each controller pulling from this one last asked for operations",
        peers.pulled_by.iter().filter_map(|cursor| {
            let at = rfc3339_seconds(&cursor.at)?;
            Some((
                labels(&[("peer", &cursor.controller_id)]),
                (now as f64 - at).max(0.0),
            ))
        }),
    );

    state.requests.register(&mut scrape);
    Ok(scrape)
}

/// Signs a scraper's CSR for `kcore://<cluster>/metrics/<name>`: no DNS names (a scraper
/// is only ever a client), [`kcore_pki::METRICS_CERT_VALIDITY`].
pub(super) async fn issue_metrics_certificate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<IssueMetricsCertificateRequest>,
) -> Result<Json<CertificateResponse>> {
    let admin = caller.require(&[Role::Admin])?.uri();
    let expected =
        Identity::new(&state.config.cluster_name, Role::Metrics, &body.name).map_err(|e| {
            ApiFailure::with_status(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidIdentity,
                format!("name: {e}"),
            )
        })?;
    let signer = state
        .signer
        .read()
        .map_err(|_| internal("signer lock poisoned"))?
        .clone();
    let chain_pem = signer
        .sign_csr_for_names(
            &body.csr_pem,
            &expected,
            &[],
            kcore_pki::METRICS_CERT_VALIDITY,
        )
        .map_err(|e| signing_failure(&expected, e))?;
    let certificate = certificate_info(&chain_pem)?;
    tracing::info!(scraper = %expected.uri(), by = %admin, not_after = %certificate.not_after, "metrics certificate issued");
    Ok(Json(CertificateResponse {
        chain_pem,
        certificate,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_expiry_times_read_as_unix_seconds() {
        assert_eq!(rfc3339_seconds("1970-01-02T00:00:00Z"), Some(86_400.0));
        assert_eq!(rfc3339_seconds("not a time"), None);
    }
}
