//! The health gate of an activation (docs/rollouts.md, "verify"): within the activation's
//! `healthTimeoutSeconds` the new system is the current (and after a boot the booted) one,
//! `systemctl is-system-running` says `running`, and the node reaches a controller. Kept
//! apart from [`super::activate`], which decides what a failed gate reverts.

use std::path::Path;
use std::time::Duration;

use kcore_api::rollout::StepCode;
use kcore_nix::commands::Running;

use super::system;
use crate::ops::{OpError, OpHandle};
use crate::server::AgentState;

/// The health gate looks again after this, doubling up to [`GATE_INTERVAL_MAX`]: a system
/// that is healthy a moment after its activation (the usual case) passes within tens of
/// milliseconds, one still starting is not asked about thousands of times (each look runs
/// `systemctl is-system-running` and may ask a controller).
const GATE_INTERVAL_MIN: Duration = Duration::from_millis(25);
const GATE_INTERVAL_MAX: Duration = Duration::from_secs(1);

/// Why a health gate did not pass.
#[derive(Debug)]
pub struct GateFailure {
    /// `DEGRADED` or `HEALTH_TIMEOUT`.
    pub code: StepCode,
    pub reason: String,
    pub failed_units: Vec<String>,
}

/// Within `timeout`: `/run/current-system` (and after a boot `/run/booted-system`) is
/// `expected`, `systemctl is-system-running` says `running`, and the node reaches a
/// controller ([`reaches_controller`]). `degraded` fails at once with the failed units;
/// any other state, and an unreachable controller, is waited out until the deadline.
pub async fn health_gate(
    state: &AgentState,
    op: &OpHandle,
    expected: &Path,
    after_boot: bool,
    timeout: Duration,
) -> Result<Result<(), GateFailure>, OpError> {
    op.step(format!("health gate ({} s)", timeout.as_secs()));
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let mut interval = super::assignment::Doubling::new(GATE_INTERVAL_MIN, GATE_INTERVAL_MAX);
    let mut looks = 0u32;
    let mut stopping = state.stopping.subscribe();
    let expected = system::resolved(expected).unwrap_or_else(|| expected.to_path_buf());
    loop {
        looks += 1;
        let mut links = vec![("/run/current-system", system::current_system(state))];
        if after_boot {
            links.push(("/run/booted-system", system::booted_system(state)));
        }
        let wrong = links.into_iter().find_map(|(name, link)| {
            let is = system::resolved(&link);
            (is.as_deref() != Some(expected.as_path())).then(|| {
                let is = is.map_or("missing".to_string(), |p| p.display().to_string());
                format!("{name} is {is}, not {}", expected.display())
            })
        });
        let why = match wrong {
            Some(why) => why,
            None => match system::system_running(state).await {
                (Running::Running, _) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match reaches_controller(state, left).await {
                        Ok(reached) => {
                            tracing::debug!(operation = %op.id, looks,
                                gate_ms = started.elapsed().as_millis() as u64, "health gate passed");
                            op.output(
                                "agent",
                                format!("health gate passed: the new system is running{reached}"),
                            );
                            return Ok(Ok(()));
                        }
                        Err(why) => why,
                    }
                }
                (Running::Degraded, failed_units) => {
                    return Ok(Err(GateFailure {
                        code: StepCode::Degraded,
                        reason: format!(
                            "the system is degraded; failed units: {}",
                            failed_units.join(", ")
                        ),
                        failed_units,
                    }));
                }
                (Running::Other(s), _) => format!("systemctl is-system-running says {s}"),
            },
        };
        if tokio::time::Instant::now() >= deadline {
            return Ok(Err(GateFailure {
                code: StepCode::HealthTimeout,
                reason: format!("not healthy within {} s: {why}", timeout.as_secs()),
                failed_units: Vec::new(),
            }));
        }
        tokio::select! {
            _ = tokio::time::sleep(interval.wait().min(deadline.saturating_duration_since(tokio::time::Instant::now()))) => {}
            // The unit record stays: the next agent re-attaches to the ended unit and runs
            // the gate again.
            _ = stopping.wait_for(|s| *s) => return Err(OpError::Detached),
        }
    }
}

/// The longest one "does this node reach a controller" request may take inside the gate,
/// so a controller that hangs does not eat the whole health timeout in one try.
const CONTROLLER_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The gate's third condition: the node reaches a controller, asked with its own
/// `GET /v1/nodes/{id}/assignment?wait=0` through the registration loop's client (the same
/// mutual TLS and failover as the heartbeat), answered within `left` (at most
/// [`CONTROLLER_PROBE_TIMEOUT`]). A new system that cannot talk to the cluster (a broken
/// network configuration, a firewall, a certificate) is not healthy. An agent without
/// controllers (standalone, or an admin driving the steps by hand) has nothing to reach:
/// `Ok("")`. `Ok` carries what the gate's output line says; `Err` why not healthy yet.
async fn reaches_controller(state: &AgentState, left: Duration) -> Result<String, String> {
    if state.config.mode != crate::config::Mode::Managed || state.config.controllers.is_empty() {
        return Ok(String::new());
    }
    let Some(client) = state.controller_client.borrow().clone() else {
        return Err("the agent has no controller connection yet".into());
    };
    let path = format!(
        "/v1/nodes/{}/assignment?wait=0",
        percent_encoding::utf8_percent_encode(
            &state.config.node_id,
            percent_encoding::NON_ALPHANUMERIC
        )
    );
    let probe = client.get_json::<serde_json::Value>(&path);
    match tokio::time::timeout(left.min(CONTROLLER_PROBE_TIMEOUT), probe).await {
        Ok(Ok(_)) => Ok(" and reaches a controller".into()),
        Ok(Err(e)) => Err(format!("the agent cannot reach a controller: {e}")),
        Err(_) => Err("the agent cannot reach a controller: no answer in time".into()),
    }
}
