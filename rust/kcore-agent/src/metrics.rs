//! `GET /metrics` on the agent (managed mode only), in the Prometheus text format
//! (docs/metrics.md): operations by kind and outcome ([`OperationCounters`], counted where
//! [`crate::ops`] finishes an operation), operations running now, this node's certificate
//! expiry, the last successful registration and heartbeat ([`RegistrationMetrics`], fed by
//! [`crate::registration::run_with`]), and request latency by route (`kcore_net::metrics`).
//!
//! Counters live as long as the agent process: after a restart they start from zero, as
//! Prometheus expects of counters. Only the `metrics` and `admin` roles may scrape
//! ([`kcore_net::metrics::SCRAPERS`]).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use kcore_api::inventory::{OperationKind, OperationStatus};
use kcore_net::metrics::{RequestMetrics, Scrape, unix_seconds};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use strum::IntoEnumIterator as _;

use crate::server::AgentState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    /// The wire spelling of [`OperationKind`] (`apply-disko`).
    kind: String,
    /// The terminal [`OperationStatus`] (`succeeded`, `failed`, `timedOut`).
    outcome: String,
}

impl OperationLabels {
    fn new(kind: OperationKind, outcome: OperationStatus) -> Self {
        OperationLabels {
            kind: kind.as_str().to_string(),
            outcome: outcome.as_str().to_string(),
        }
    }
}

/// Finished operations by kind and outcome. Clones share the counts.
#[derive(Debug, Clone)]
pub struct OperationCounters {
    finished: Family<OperationLabels, Counter>,
}

impl Default for OperationCounters {
    /// Every kind and outcome starts at 0, so `increase(...)` works from the first failure
    /// on instead of seeing a series appear.
    fn default() -> Self {
        let finished = Family::default();
        for kind in OperationKind::iter() {
            for outcome in OperationStatus::iter().filter(|s| *s != OperationStatus::Running) {
                // Creating the series is the point; the guard it returns is not needed.
                drop(finished.get_or_create(&OperationLabels::new(kind, outcome)));
            }
        }
        OperationCounters { finished }
    }
}

impl OperationCounters {
    /// An operation of `kind` ended as `outcome`.
    pub fn finished(&self, kind: OperationKind, outcome: OperationStatus) {
        self.finished
            .get_or_create(&OperationLabels::new(kind, outcome))
            .inc();
    }

    /// How many operations of `kind` ended as `outcome` since the agent started.
    pub fn count(&self, kind: OperationKind, outcome: OperationStatus) -> u64 {
        self.finished
            .get(&OperationLabels::new(kind, outcome))
            .map_or(0, |c| c.get())
    }
}

/// What the registration loop talks to the controllers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControllerCall {
    Register,
    Heartbeat,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: String,
}

impl From<ControllerCall> for CallLabels {
    fn from(call: ControllerCall) -> Self {
        CallLabels {
            call: match call {
                ControllerCall::Register => "register",
                ControllerCall::Heartbeat => "heartbeat",
            }
            .to_string(),
        }
    }
}

/// When registration and heartbeats last succeeded, and how often they failed. Clones
/// share the figures.
#[derive(Debug, Clone, Default)]
pub struct RegistrationMetrics {
    last_success: Family<CallLabels, Gauge<f64, AtomicU64>>,
    failures: Family<CallLabels, Counter>,
}

impl RegistrationMetrics {
    pub fn succeeded(&self, call: ControllerCall) {
        let now = unix_seconds(time::OffsetDateTime::now_utc());
        self.last_success.get_or_create(&call.into()).set(now);
    }

    pub fn failed(&self, call: ControllerCall) {
        self.failures.get_or_create(&call.into()).inc();
    }
}

/// The agent's long-lived metrics, besides the operation counters (which live with the
/// operations, [`crate::ops::Operations::counters`]).
#[derive(Debug, Clone, Default)]
pub struct AgentMetrics {
    pub requests: RequestMetrics,
    pub registration: RegistrationMetrics,
}

pub(crate) async fn metrics(State(state): State<Arc<AgentState>>) -> Scrape {
    let mut scrape = Scrape::default();
    let node = state.config.node_id.as_str();
    scrape.registry().register(
        "agent_operations",
        "Long operations that ended since the agent started, by kind and outcome",
        state.ops.counters().finished.clone(),
    );
    let running = state.ops.running();
    scrape.gauge(
        "agent_operations_running",
        "Long operations running now, by kind",
        OperationKind::iter().map(|kind| {
            let count = running.iter().filter(|k| **k == kind).count();
            (vec![("kind", kind.as_str().to_string())], count as f64)
        }),
    );
    // Read at each scrape: a renewal replaces the file, and this shows the new one.
    let expiry = state.config.tls.as_ref().and_then(|tls| {
        let pem = kcore_pki::read_pem_file("tls.certFile", &tls.cert_file)
            .map_err(|err| tracing::warn!("metrics: {err}"))
            .ok()?;
        kcore_pki::not_after(&pem).ok()
    });
    scrape.gauge(
        "certificate_expiry_timestamp_seconds",
        "notAfter of this node's certificate (tls.certFile) as Unix seconds",
        expiry.map(|t| {
            (
                vec![("kind", "node".to_string()), ("id", node.to_string())],
                unix_seconds(t),
            )
        }),
    );
    let registration = &state.metrics.registration;
    scrape.registry().register(
        "agent_controller_last_success_timestamp_seconds",
        "When registering with, or heartbeating to, a controller last succeeded (Unix seconds)",
        registration.last_success.clone(),
    );
    scrape.registry().register(
        "agent_controller_failures",
        "Registrations and heartbeats that failed (no controller answered, or one refused)",
        registration.failures.clone(),
    );
    state.metrics.requests.register(&mut scrape);
    scrape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_are_the_wire_spellings() {
        for status in OperationStatus::iter() {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
    }

    #[test]
    fn every_kind_and_outcome_starts_at_zero_and_counts_separately() {
        let counters = OperationCounters::default();
        counters.finished(OperationKind::ApplyNix, OperationStatus::Failed);
        assert_eq!(
            counters.count(OperationKind::ApplyNix, OperationStatus::Failed),
            1
        );
        assert_eq!(
            counters.count(OperationKind::ApplyNix, OperationStatus::Succeeded),
            0
        );
        let mut scrape = Scrape::default();
        scrape
            .registry()
            .register("agent_operations", "", counters.finished.clone());
        let text = scrape.encode().unwrap();
        assert!(
            text.contains(
                "kcore_agent_operations_total{kind=\"rollout-verify\",outcome=\"timedOut\"} 0"
            ),
            "{text}"
        );
    }
}
