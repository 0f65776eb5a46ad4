//! `POST /v1/rollout/plan {flakeRef, flakeRev, host?}` (admin): what a rollout step would
//! find on this node, evaluated here without building (`kctl update cluster plan`, issue
//! 12): whether the host attribute exists in the flake at that revision, the current,
//! booted and target toplevels, and the reboot verdict.
//!
//! One `nix-instantiate --eval` of kcore-nix's [`kcore_nix::flake::HOST_PLAN_EXPR`] over
//! the URL the prepare step would build ([`super::pinned`]), through the typed
//! [`kcore_nix::queries::NixEval`] builder. The reboot verdict compares the evaluated
//! kernel, initrd and kernel-modules paths with what `/run/booted-system`'s links resolve
//! to (the same comparison [`super::system::reboot_reasons`] makes on a built system), and
//! the evaluated `system.switch.inhibitors` with `/run/current-system`'s. An evaluation
//! holds one of the agent's evaluation slots (`evaluation.maxConcurrent`), so plans of a
//! large fleet cannot pile evaluators onto a node.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use kcore_api::ErrorCode;
use kcore_api::rollout::{HostPlan, PrepareRequest};
use kcore_net::ApiFailure;
use kcore_nix::programs::NIX_INSTANTIATE;
use kcore_nix::queries::NixEval;
use serde::Deserialize;

use super::system::{self, Inhibitors, SWITCH_INHIBITORS};
use crate::server::AgentState;

/// An evaluation longer than this is stopped (fetching the flake is part of it).
const PLAN_TIMEOUT: Duration = Duration::from_secs(300);

/// What [`kcore_nix::flake::HOST_PLAN_EXPR`] answers.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Evaluated {
    host_exists: bool,
    #[serde(default)]
    hosts: Vec<String>,
    toplevel: Option<String>,
    kernel: Option<String>,
    initrd: Option<String>,
    kernel_modules: Option<String>,
    #[serde(default)]
    switch_inhibitors: Inhibitors,
}

pub async fn handle(state: Arc<AgentState>, req: PrepareRequest) -> Result<Response, ApiFailure> {
    Ok(Json(plan(&state, &req).await?).into_response())
}

fn link(path: &Path) -> Option<String> {
    system::resolved(path).map(|p| p.display().to_string())
}

/// The plan of `req` on this node. An evaluation that fails (a flake that does not fetch
/// or evaluate) is an answer too, with `error`: the plan reports it per node.
pub async fn plan(state: &AgentState, req: &PrepareRequest) -> Result<HostPlan, ApiFailure> {
    let (url, host) = super::pinned(req, &state.config.node_id)?;
    let nix_instantiate = state
        .tools
        .resolve(NIX_INSTANTIATE)
        .map_err(|e| ApiFailure::new(ErrorCode::ToolUnavailable, e.to_string()))?;
    let _slot = state.evaluation_slot()?;
    let mut plan = HostPlan {
        host: host.clone(),
        current_system: link(&system::current_system(state)),
        booted_system: link(&system::booted_system(state)),
        ..HostPlan::default()
    };
    let mut inv = NixEval::expr(kcore_nix::flake::HOST_PLAN_EXPR)
        .flakes()
        .argstr("url", &url)
        .argstr("host", &host)
        .invocation(&nix_instantiate)
        .timeout(PLAN_TIMEOUT);
    for (k, v) in &state.options.extra_env {
        inv = inv.env(k, v);
    }
    let evaluated = match inv.output().await {
        Ok(out) => serde_json::from_slice::<Evaluated>(&out.stdout)
            .map_err(|e| format!("nix-instantiate answered something unexpected: {e}")),
        Err(e) => Err(format!("evaluating {url} failed: {e}")),
    };
    let ev = match evaluated {
        Ok(ev) => ev,
        Err(error) => {
            plan.error = Some(error);
            return Ok(plan);
        }
    };
    plan.host_exists = ev.host_exists;
    if !ev.host_exists {
        plan.hosts = ev.hosts;
        return Ok(plan);
    }
    let booted = system::booted_system(state);
    let mut reasons: Vec<String> = [
        ("kernel", &ev.kernel),
        ("initrd", &ev.initrd),
        ("kernel-modules", &ev.kernel_modules),
    ]
    .into_iter()
    .filter(|(part, evaluated)| link(&booted.join(part)).as_ref() != evaluated.as_ref())
    .map(|(part, _)| part.to_string())
    .collect();
    if !system::inhibitors_changed_from_current(state, &ev.switch_inhibitors).is_empty() {
        reasons.push(SWITCH_INHIBITORS.to_string());
    }
    plan.up_to_date = ev.toplevel.is_some() && ev.toplevel == plan.current_system;
    plan.target_system = ev.toplevel;
    plan.reboot_required = Some(!reasons.is_empty());
    plan.reboot_reasons = reasons;
    Ok(plan)
}
