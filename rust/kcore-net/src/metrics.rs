//! What the controller's and the agent's `GET /metrics` share (docs/metrics.md): who may
//! scrape ([`SCRAPERS`]) and that a scraper may do nothing else ([`confine_scrapers`]),
//! request latency by route ([`RequestMetrics`], an axum middleware
//! labelled with the matched route template so a scanner trying random paths cannot
//! create series), and one scrape as the Prometheus text format 0.0.4 ([`Scrape`]).
//!
//! Values that are a view of state (nodes by status, certificate expiry) are not kept as
//! live metrics: each scrape builds a fresh [`Scrape`] from the state as it is and
//! registers the long-lived families (request latency, operation counters) beside them.
//! Metric names carry their unit (`_seconds`, `_timestamp_seconds`); counters get
//! `_total` from the encoder.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kcore_api::ErrorCode;
use kcore_pki::Role;
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::{ApiFailure, PeerIdentity};

/// The route both servers serve their metrics on (outside `/v1`: where Prometheus looks).
pub const METRICS_PATH: &str = "/metrics";

/// Who may call `GET /metrics`: the read-only scraper role, and admins (an operator
/// checking by hand). Controllers and nodes may not: neither needs the other's figures.
/// The `metrics` role is in no other route's list, so it gets `403` everywhere else.
pub const SCRAPERS: &[Role] = &[Role::Metrics, Role::Admin];

/// The `route` label of requests no route matched (404s): one series for all of them.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Every metric name starts with this (`kcore_nodes`, `kcore_http_request_duration_seconds`).
pub const PREFIX: &str = "kcore";

/// A gauge's labels in a scrape-time view: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route template (`/v1/nodes/{id}`), never the raw path.
    route: String,
    status: String,
}

fn request_histogram() -> Histogram {
    // 5 ms to 41 s: API calls take milliseconds, a node's assignment long-poll up to its
    // wait (about 28 s), a rebuild's NDJSON stream only until its headers are sent.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Request latency by method, route template and status, measured from the request head
/// to the response head (a stream's body is not included). Clones share the figures.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    durations: Family<RequestLabels, Histogram>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            durations: Family::new_with_constructor(request_histogram),
        }
    }
}

/// Methods outside the standard set share one label value, so the label stays bounded.
fn method_label(method: &Method) -> String {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    if KNOWN.contains(method) {
        method.as_str().to_string()
    } else {
        "other".to_string()
    }
}

impl RequestMetrics {
    /// Adds `kcore_http_request_duration_seconds` to a scrape.
    pub fn register(&self, scrape: &mut Scrape) {
        scrape.registry.register(
            "http_request_duration_seconds",
            "Time from request head to response head, by method, route template and status",
            self.durations.clone(),
        );
    }
}

/// Middleware for `Router::layer(from_fn(confine_scrapers))`: a `metrics` identity gets
/// `403 FORBIDDEN_ROLE` on everything but `GET /metrics` (404s included), before any
/// extractor reads the request. Each route's own role list refuses it too; this keeps the
/// role read-only even for a route added later without one.
pub async fn confine_scrapers(req: Request, next: Next) -> Response {
    let scraper = req
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|peer| peer.0.as_ref())
        .filter(|identity| identity.role == Role::Metrics)
        .map(|identity| identity.uri());
    if let Some(uri) = scraper
        && !(req.method() == Method::GET && req.uri().path() == METRICS_PATH)
    {
        return ApiFailure::with_status(
            StatusCode::FORBIDDEN,
            ErrorCode::ForbiddenRole,
            format!("{uri} is a metrics scraper: it may call only GET {METRICS_PATH}"),
        )
        .into_response();
    }
    next.run(req).await
}

/// Middleware for `Router::layer(from_fn_with_state(metrics, track_requests))`, added
/// after every route so each one (and the fallback) is measured.
pub async fn track_requests(
    State(metrics): State<RequestMetrics>,
    req: Request,
    next: Next,
) -> Response {
    // `Router::layer` wraps each route, so the matched template is already known here.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let labels = RequestLabels {
        method,
        route,
        status: response.status().as_u16().to_string(),
    };
    metrics
        .durations
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// One scrape being assembled: metrics named `kcore_*`, answered as the Prometheus text
/// format.
#[derive(Debug)]
pub struct Scrape {
    registry: Registry,
}

impl Default for Scrape {
    fn default() -> Self {
        Scrape {
            registry: Registry::with_prefix(PREFIX),
        }
    }
}

impl Scrape {
    /// A gauge whose series are exactly `rows`, taken from the state at this scrape.
    pub fn gauge(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, f64)>) {
        let family: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
        for (labels, value) in rows {
            family.get_or_create(&labels).set(value);
        }
        self.registry.register(name, help, family);
    }

    /// The registry, to register a long-lived family (a counter kept between scrapes).
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The text format body.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut body = String::new();
        prometheus_text::encode(&mut body, &self.registry)?;
        Ok(body)
    }
}

impl IntoResponse for Scrape {
    fn into_response(self) -> Response {
        match self.encode() {
            Ok(body) => (
                [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
                body,
            )
                .into_response(),
            Err(err) => {
                ApiFailure::internal(format!("cannot encode the metrics: {err}")).into_response()
            }
        }
    }
}

/// Seconds since the Unix epoch of `t`, as `_timestamp_seconds` gauges carry it.
pub fn unix_seconds(t: time::OffsetDateTime) -> f64 {
    t.unix_timestamp() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_lists_each_gauge_row_with_its_labels() {
        let mut scrape = Scrape::default();
        scrape.gauge(
            "nodes",
            "Nodes by status",
            [
                (vec![("status", "Ready".to_string())], 2.0),
                (vec![("status", "Pending".to_string())], 0.0),
            ],
        );
        let text = scrape.encode().unwrap();
        assert!(text.contains("# TYPE kcore_nodes gauge"), "{text}");
        assert!(text.contains("kcore_nodes{status=\"Ready\"} 2"), "{text}");
        assert!(text.contains("kcore_nodes{status=\"Pending\"} 0"), "{text}");
    }

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
