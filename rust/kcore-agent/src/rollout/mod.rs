//! The node-local half of a rollout step (issue 12), as agent long operations on the system
//! lane (one activation, rebuild or prepare at a time): the controller's `ClusterUpdate`
//! engine drives the same calls through [`assignment`] (the agent's long poll of its
//! assignment); admins can also call them directly.
//!
//! - `POST /v1/rollout/prepare {flakeRef, flakeRev, host?}` (`rollout-prepare`): `nix build
//!   '<pinned url>#nixosConfigurations.<host>.config.system.build.toplevel'` (kcore-nix's flake
//!   helpers pin the URL and refuse unpinned refs), the node keeps running meanwhile; the
//!   report carries the store path and the reboot verdict (kernel, initrd or kernel-modules
//!   differ from `/run/booted-system`).
//! - `POST /v1/rollout/activate {storePath, mode, healthTimeoutSeconds}` (`rollout-activate`):
//!   [`activate`]: profile, switch-to-configuration in a transient unit, health gate, revert
//!   on the node; `boot` (or `auto` with a reboot needed) is a trial boot, finished by a
//!   `rollout-verify` operation the agent starts after the boot.
//! - `GET /v1/rollout/steps/{operationId}`: the step's [`kcore_api::rollout::StepReport`].
//! - `POST /v1/rollout/plan {flakeRef, flakeRev, host?}`: [`plan`], what a prepare would
//!   find, evaluated without building (for `kctl update cluster plan`).
//!
//! Every path the steps read or change is under `RuntimeOptions::system_root` (`/` in
//! production), so the tests point a real agent at a fake root ([`system`]).

pub mod activate;
pub mod assignment;
pub mod gate;
pub mod plan;
pub mod state;
pub mod system;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kcore_api::inventory::{OperationKind, OperationStarted};
use kcore_api::rollout::{
    ActivateRequest, ActivationMode, DEFAULT_HEALTH_TIMEOUT_SECONDS, MAX_HEALTH_TIMEOUT_SECONDS,
    PrepareRequest, StepCode, StepPhase,
};
use kcore_api::validate::FieldError;
use kcore_api::{ApiError, ErrorCode};
use kcore_net::ApiFailure;
use kcore_nix::Goal;
use kcore_nix::commands::NixBuild;
use kcore_nix::programs::{NIX, SYSTEMD_RUN};
use kcore_nix::runner::StreamLine;

use crate::ops::unit::UnitRecord;
use crate::ops::{OpError, OpHandle, Outcome};
use crate::server::AgentState;
use state::ActivationRecord;

/// A prepare's `nix build` longer than this is stopped and reported as timed out.
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(3600);

fn invalid(err: FieldError) -> ApiFailure {
    ApiFailure {
        status: StatusCode::BAD_REQUEST,
        error: ApiError::from(err),
    }
}

fn tool_unavailable(e: kcore_nix::RunError) -> ApiFailure {
    ApiFailure::new(ErrorCode::ToolUnavailable, e.to_string())
}

fn ops_dir(state: &AgentState) -> Result<PathBuf, ApiFailure> {
    state.ops.dir().map(PathBuf::from).ok_or_else(|| {
        ApiFailure::internal("this agent keeps operations in memory only; rollout steps need the operations directory")
    })
}

/// The installable for `req` (pinned URL, host attribute), or the field that is wrong.
pub fn installable(req: &PrepareRequest, node_id: &str) -> Result<String, ApiFailure> {
    let (url, host) = pinned(req, node_id)?;
    kcore_nix::toplevel_installable(&url, &host).map_err(|e| {
        invalid(FieldError::new(
            "host",
            &host,
            e.to_string(),
            "name the nixosConfigurations attribute (letters, digits, - and _)",
        ))
    })
}

/// The pinned URL and the host attribute for `req` (validated: the host is an attribute
/// name), or the field that is wrong; what prepare and plan share.
pub fn pinned(req: &PrepareRequest, node_id: &str) -> Result<(String, String), ApiFailure> {
    let url = kcore_nix::pinned_flake_url(&req.flake_ref, &req.flake_rev).map_err(|e| {
        let field = if matches!(e, kcore_nix::FlakeError::BadRev { .. }) {
            ("flakeRev", req.flake_rev.as_str(), "give the full 40-hex commit the rollout moves to")
        } else {
            ("flakeRef", req.flake_ref.as_str(), "give a pinnable flake reference (github:owner/repo, git+https://..., git+file:///...), not a path: or indirect one")
        };
        invalid(FieldError::new(field.0, field.1, e.to_string(), field.2))
    })?;
    let host = req.host.as_deref().unwrap_or(node_id);
    kcore_nix::toplevel_installable(&url, host).map_err(|e| {
        invalid(FieldError::new(
            "host",
            host,
            e.to_string(),
            "name the nixosConfigurations attribute (letters, digits, - and _)",
        ))
    })?;
    Ok((url, host.to_string()))
}

/// `POST /v1/rollout/prepare`.
pub async fn prepare(state: Arc<AgentState>, req: PrepareRequest) -> Result<Response, ApiFailure> {
    let started = start_prepare(state, req)?;
    Ok((StatusCode::ACCEPTED, Json(started)).into_response())
}

/// Starts a `rollout-prepare` operation: what the route and the assignment loop share.
pub fn start_prepare(
    state: Arc<AgentState>,
    req: PrepareRequest,
) -> Result<OperationStarted, ApiFailure> {
    let installable = installable(&req, &state.config.node_id)?;
    let nix = state.tools.resolve(NIX).map_err(tool_unavailable)?;
    let dir = ops_dir(&state)?;
    let guard = state.lanes.take(OperationKind::RolloutPrepare)?;
    let op = state.ops.start(
        OperationKind::RolloutPrepare,
        Some(PREPARE_TIMEOUT.as_secs()),
        guard,
    );
    let started = op.spawn(move |op| async move {
        let mut report = state::new_report(&op.id, StepPhase::Preparing);
        state::save_report(&dir, &mut report)?;
        let built = build(&state, &op, &dir, &nix, installable).await;
        match built {
            Ok((path, link)) => {
                let reasons = system::reboot_reasons(&state, &path);
                op.output(
                    "agent",
                    format!(
                        "built {}; reboot needed: {}",
                        path.display(),
                        if reasons.is_empty() {
                            "no".to_string()
                        } else {
                            format!("yes ({})", reasons.join(", "))
                        }
                    ),
                );
                report.phase = StepPhase::Prepared;
                report.store_path = Some(path.display().to_string());
                report.reboot_required = Some(!reasons.is_empty());
                report.reboot_reasons = reasons;
                state::save_report(&dir, &mut report)?;
                Ok(Outcome {
                    written: vec![link.display().to_string()],
                    generation: None,
                })
            }
            Err(mut err) => {
                report.phase = StepPhase::Failed;
                report.reason = err.error_mut().map(|e| e.message.clone());
                report.code = Some(StepCode::PrepareFailed);
                state::save_report(&dir, &mut report)?;
                Err(err)
            }
        }
    });
    Ok(started)
}

async fn build(
    state: &AgentState,
    op: &OpHandle,
    dir: &std::path::Path,
    nix: &kcore_nix::Program,
    installable: String,
) -> Result<(PathBuf, PathBuf), OpError> {
    let link = state::system_link(dir, &op.id);
    std::fs::create_dir_all(state::dir(dir)).map_err(|e| {
        OpError::failed(
            ErrorCode::WriteFailed,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    let cmd = NixBuild {
        installable,
        out_link: link.clone(),
    };
    let mut inv = cmd.invocation(nix).timeout(PREPARE_TIMEOUT);
    for (k, v) in &state.options.extra_env {
        inv = inv.env(k, v);
    }
    op.step(inv.display());
    inv.stream(|line| match line {
        StreamLine::Stdout(l) => op.output("stdout", l),
        StreamLine::Stderr(l) => op.output("stderr", l),
    })
    .await
    .map_err(|e| {
        let mut err = OpError::from(&e);
        if let Some(error) = err.error_mut() {
            error.message = format!("nix build failed: {}", error.message);
        }
        err
    })?;
    let path = std::fs::canonicalize(&link).map_err(|e| {
        OpError::failed(
            ErrorCode::CommandFailed,
            format!("nix build left no result at {}: {e}", link.display()),
        )
    })?;
    Ok((path, link))
}

/// `POST /v1/rollout/activate`.
pub async fn activate(
    state: Arc<AgentState>,
    req: ActivateRequest,
) -> Result<Response, ApiFailure> {
    let started = start_activate(state, req)?;
    Ok((StatusCode::ACCEPTED, Json(started)).into_response())
}

/// Starts a `rollout-activate` operation: what the route and the assignment loop share.
pub fn start_activate(
    state: Arc<AgentState>,
    req: ActivateRequest,
) -> Result<OperationStarted, ApiFailure> {
    let timeout = req
        .health_timeout_seconds
        .unwrap_or(DEFAULT_HEALTH_TIMEOUT_SECONDS);
    if timeout == 0 || timeout > MAX_HEALTH_TIMEOUT_SECONDS {
        return Err(invalid(FieldError::new(
            "healthTimeoutSeconds",
            &timeout.to_string(),
            format!("is outside 1..={MAX_HEALTH_TIMEOUT_SECONDS}"),
            "give the seconds the new system has to become healthy, at most 3600",
        )));
    }
    let path = PathBuf::from(&req.store_path);
    let stc = path.join("bin/switch-to-configuration");
    if !req.store_path.starts_with("/nix/store/") || !stc.is_file() {
        return Err(invalid(FieldError::new(
            "storePath",
            &req.store_path,
            "is not a built NixOS system (no /nix/store/.../bin/switch-to-configuration)",
            "give the storePath a rollout-prepare step reported on this node",
        )));
    }
    state.tools.resolve(SYSTEMD_RUN).map_err(tool_unavailable)?;
    let dir = ops_dir(&state)?;
    let guard = state.lanes.take(OperationKind::RolloutActivate)?;
    match ActivationRecord::load(&dir) {
        Ok(None) => {}
        Ok(Some(rec)) => {
            return Err(ApiFailure::with_status(
                StatusCode::CONFLICT,
                ErrorCode::RebuildInProgress,
                format!(
                    "activation {} of {} has not ended (a trial boot is pending); nothing was done",
                    rec.operation_id,
                    rec.store_path.display()
                ),
            ));
        }
        Err(e) => {
            return Err(ApiFailure::internal(format!(
                "{e}; remove it once the system is known to be good"
            )));
        }
    }
    let reasons = system::reboot_reasons(&state, &path);
    // nixpkgs refuses a switch (or test) its switch inhibitors name; that system is
    // activated by a boot, as `auto` does for a new kernel (comin does the same).
    let inhibited = reasons.iter().any(|r| r == system::SWITCH_INHIBITORS);
    let goal = match req.mode {
        ActivationMode::Auto if reasons.is_empty() => Goal::Switch,
        ActivationMode::Auto | ActivationMode::Boot => Goal::Boot,
        ActivationMode::Switch | ActivationMode::Test if inhibited => Goal::Boot,
        ActivationMode::Switch => Goal::Switch,
        ActivationMode::Test => Goal::Test,
    };
    let previous = system::current_generation(&state);
    let op = state
        .ops
        .start(OperationKind::RolloutActivate, Some(timeout), guard);
    let rec = activate::new_record(&op.id, path, goal, previous, timeout);
    let mut report = state::new_report(&op.id, StepPhase::Activating);
    report.reboot_required = Some(!reasons.is_empty());
    report.reboot_reasons = reasons;
    state::save_report(&dir, &mut report).map_err(|e| match e {
        OpError::Failed { error, .. } => ApiFailure::new(ErrorCode::WriteFailed, error.message),
        OpError::Detached => ApiFailure::internal("detached"),
    })?;
    Ok(op.spawn(move |op| async move { activate::run(&state, &op, rec).await }))
}

/// `GET /v1/rollout/steps/{id}`.
pub fn step(state: &AgentState, id: &str) -> Result<Response, ApiFailure> {
    let dir = ops_dir(state)?;
    state::load_report(&dir, id)
        .map(|r| Json(r).into_response())
        .ok_or_else(|| ApiFailure::not_found(format!("no rollout step {id:?} on this agent")))
}

/// Re-attach a rollout operation an earlier agent left running in a unit.
pub async fn resume(
    state: &AgentState,
    op: &OpHandle,
    record: UnitRecord,
) -> Result<Outcome, OpError> {
    match op.kind() {
        OperationKind::RolloutActivate => activate::resume(state, op, record).await,
        kind => Err(OpError::failed(
            ErrorCode::Interrupted,
            format!("a {kind} does not run in a unit; its outcome is unknown"),
        )),
    }
}
