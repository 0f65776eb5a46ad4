//! `POST /v1/nix/apply`: validate a NixOS module (rnix syntax, then `nix-instantiate`
//! evaluates it to a function or an attribute set), write it atomically to `nix.configPath`
//! (the previous version kept as `.bak`), then `nixos-rebuild test` and, only if that
//! succeeded, `nixos-rebuild switch`, each inside a transient systemd unit
//! (`crate::ops::unit`) so an agent restart does not kill it: the next agent re-attaches to
//! the running step and carries on with the rest. The unit writes its output to a log file
//! that the agent follows and streams; after the switch the system profile's generation is
//! reported. A step that runs past its timeout has its unit stopped with `systemctl stop`
//! (killing systemd-run, the agent's child, would leave the unit running), and the result
//! says whether that worked.
//!
//! One rebuild at a time (the `system` lane): a second request while one runs (with or
//! without `noRebuild`, since writing the file would change what the running rebuild reads)
//! is refused with `REBUILD_IN_PROGRESS` and never interrupts the first.
//!
//! The validating evaluation is restricted and bounded like a disko layout's (kcore-nix's
//! `RestrictedEval`): it may read the submitted text only, so a module whose top level
//! imports another file is refused; the imports inside a module function are not evaluated
//! here (the rebuild evaluates them, as root, by design: apply-nix installs what it is given).

use kcore_api::ErrorCode;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kcore_api::ApiError;
use kcore_api::inventory::{ApplyNixRequest, OperationKind};
use kcore_net::ApiFailure;
use kcore_nix::Goal;
use kcore_nix::commands::NixosRebuild;
use kcore_nix::programs::{NIX_INSTANTIATE, NIXOS_REBUILD, SYSTEMD_RUN};
use kcore_nix::queries::NixEval;
use kcore_nix::restricted::{EvalBounds, EvalError, RestrictedEval};
use kcore_nix::runner::Program;
use serde::{Deserialize, Serialize};

use crate::ops::unit::{self, UnitRecord};
use crate::ops::{OpError, OpHandle, Outcome};
use crate::server::AgentState;

/// A rebuild step that takes longer than this is reported as timed out and its transient
/// unit is stopped.
pub const REBUILD_TIMEOUT: Duration = Duration::from_secs(3600);

/// Evaluates a module file to its type without building anything. The path is passed as
/// an argument, never spliced into the expression.
const TYPE_EXPR: &str = "{ file }: builtins.typeOf (import (/. + file))";
/// Wall-clock bound of the validating evaluation.
pub const VALIDATE_TIMEOUT: Duration = Duration::from_secs(60);

fn failure(status: StatusCode, err: ApiError) -> ApiFailure {
    ApiFailure { status, error: err }
}

/// Levels 1 and 2 for a NixOS module in `text`, level 2 restricted and within `bounds`.
/// Refusals are 422 (`NIX_INVALID`, `EVAL_TIMEOUT`, `EVAL_MEMORY_LIMIT`); a tool that
/// cannot run is 500 `TOOL_UNAVAILABLE`.
pub async fn validate(
    text: &str,
    nix_instantiate: &Program,
    bounds: EvalBounds,
) -> Result<(), ApiFailure> {
    let invalid = |err: ApiError| failure(StatusCode::UNPROCESSABLE_ENTITY, err);
    let errors = kcore_disko::syntax::check("config.nix", text);
    if !errors.is_empty() {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(invalid(
            ApiError::new(
                ErrorCode::NixInvalid,
                format!("the configuration does not parse:\n{}", lines.join("\n")),
            )
            .with_details(serde_json::json!({ "errors": errors })),
        ));
    }
    let write_failed = |e: std::io::Error| {
        failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::new(ErrorCode::WriteFailed, e.to_string()),
        )
    };
    let dir = tempfile::Builder::new()
        .prefix("kcore-nix-")
        .tempdir()
        .map_err(write_failed)?;
    let file = dir.path().join("config.nix");
    std::fs::write(&file, text).map_err(write_failed)?;
    // Restricted mode compares symlink-free paths (TMPDIR may be a symlink).
    let file = std::fs::canonicalize(&file).map_err(write_failed)?;
    let eval = RestrictedEval::new(nix_instantiate, bounds).allow_submitted("kcore-config", &file);
    let inv = NixEval::expr(TYPE_EXPR)
        .argstr("file", &file)
        .append_to(eval.invocation());
    let out = eval.run(&inv).await.map_err(|e| match e {
        EvalError::Failed { message } => invalid(ApiError::new(
            ErrorCode::NixInvalid,
            format!("the configuration does not evaluate:\n{message}"),
        )),
        EvalError::Run(e) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::new(ErrorCode::ToolUnavailable, e.to_string()),
        ),
        bound => invalid(crate::disko_apply::bound_error(&bound, "the configuration")),
    })?;
    let kind: String = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if kind != "lambda" && kind != "set" {
        return Err(invalid(ApiError::new(
            ErrorCode::NixInvalid,
            format!(
                "a NixOS module must be a function ({{ config, lib, pkgs, ... }}: {{ ... }}) or an attribute set; this evaluates to a {kind}"
            ),
        )));
    }
    Ok(())
}

/// Handle one request.
pub async fn handle(state: Arc<AgentState>, req: ApplyNixRequest) -> Result<Response, ApiFailure> {
    let nix_instantiate = state.tools.resolve(NIX_INSTANTIATE).map_err(|e| {
        failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::new(ErrorCode::ToolUnavailable, e.to_string()),
        )
    })?;
    {
        let _slot = state.evaluation_slot()?;
        validate(
            &req.config,
            &nix_instantiate,
            state.eval_bounds(VALIDATE_TIMEOUT),
        )
        .await?;
    }
    // Taken before writing: the file is what a running rebuild reads.
    let guard = state.lanes.take(OperationKind::ApplyNix)?;
    // Resolve the rebuild tools before touching the file, so a missing tool changes nothing.
    let programs = if req.no_rebuild {
        None
    } else {
        let resolve = |tool| {
            state.tools.resolve(tool).map_err(|e| {
                failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ApiError::new(ErrorCode::ToolUnavailable, e.to_string()),
                )
            })
        };
        resolve(SYSTEMD_RUN)?;
        Some(resolve(NIXOS_REBUILD)?)
    };
    let op = state.ops.start(OperationKind::ApplyNix, None, guard);
    let path = state.config.nix.config_path.clone();
    op.step(format!("write {}", path.display()));
    let written = crate::fsutil::write_with_backup(&path, req.config.as_bytes()).map_err(|e| {
        OpError::failed(
            ErrorCode::WriteFailed,
            format!("cannot write {}: {e}", path.display()),
        )
    });
    let written = match written {
        Ok(backup) => {
            let mut files = vec![path.display().to_string()];
            files.extend(backup.map(|b| b.display().to_string()));
            files
        }
        // Answered in the request, like a write-only apply: nothing runs in the background.
        Err(e) => {
            let result = op.run(|_| async move { Err(e) }).await;
            return Ok((StatusCode::INTERNAL_SERVER_ERROR, Json(result)).into_response());
        }
    };
    let Some(nixos_rebuild) = programs else {
        let result = op
            .run(|_| async move {
                Ok(Outcome {
                    written,
                    generation: None,
                })
            })
            .await;
        return Ok(Json(result).into_response());
    };
    op.update(|r| r.written.extend(written));
    let started = op.spawn(move |op| async move {
        rebuild(
            &state,
            &op,
            nixos_rebuild.path(),
            &[Goal::Test, Goal::Switch],
        )
        .await
    });
    Ok((StatusCode::ACCEPTED, Json(started)).into_response())
}

/// The unit record's `resume` for a rebuild step: which goal the unit runs, and which
/// program the remaining steps use.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AfterUnit {
    goal: String,
    nixos_rebuild: std::path::PathBuf,
}

/// The command of the transient unit that runs `nixos-rebuild <goal>` (kcore-nix's typed
/// builder spells its flags).
pub fn rebuild_command(nixos_rebuild: &Path, goal: Goal) -> Vec<std::ffi::OsString> {
    let mut command = vec![nixos_rebuild.as_os_str().to_owned()];
    command.extend(NixosRebuild { goal, flake: None }.argv());
    command
}

/// Each of `goals` in its own unit, in order, stopping at the first that fails; then the
/// system profile's generation.
async fn rebuild(
    state: &AgentState,
    op: &OpHandle,
    nixos_rebuild: &Path,
    goals: &[Goal],
) -> Result<Outcome, OpError> {
    for &goal in goals {
        let action = goal.as_str();
        op.step(format!("nixos-rebuild {action}"));
        let after = AfterUnit {
            goal: action.to_string(),
            nixos_rebuild: nixos_rebuild.to_path_buf(),
        };
        let record = UnitRecord::new(
            &unit::operations_dir(state)?,
            &state.options.rebuild_log_dir,
            &op.id,
            &unit::unit_name(OperationKind::ApplyNix, &op.id, action),
            state.options.rebuild_timeout,
            serde_json::to_value(&after)
                .map_err(|e| OpError::failed(ErrorCode::Internal, e.to_string()))?,
        );
        let ran = unit::run(
            state,
            op,
            &record,
            &format!("kcore apply-nix: nixos-rebuild {goal}"),
            rebuild_command(nixos_rebuild, goal),
        )
        .await;
        ran.map_err(|e| step_failed(e, action))?;
    }
    Ok(generation(state, op))
}

/// Name the step in a failure's message.
fn step_failed(mut err: OpError, action: &str) -> OpError {
    if let Some(error) = err.error_mut() {
        error.message = format!("nixos-rebuild {action} failed: {}", error.message);
    }
    err
}

fn generation(state: &AgentState, op: &OpHandle) -> Outcome {
    let mut outcome = Outcome::default();
    match kcore_nix::profile::Profile::new(&state.options.system_profile).current() {
        Ok(generation) => {
            op.output(
                "stdout",
                format!(
                    "system generation {}: {}",
                    generation.number,
                    generation.store_path.display()
                ),
            );
            outcome.generation = Some(generation.number.to_string());
        }
        Err(err) => op.output("stderr", err.to_string()),
    }
    outcome
}

/// Finish a rebuild whose step an earlier agent started: follow that step's unit to its
/// end, then run the steps after it (a `test` is followed by `switch`).
pub async fn resume(
    state: &AgentState,
    op: &OpHandle,
    record: UnitRecord,
) -> Result<Outcome, OpError> {
    let after: AfterUnit = serde_json::from_value(record.resume.clone()).map_err(|e| {
        OpError::failed(
            ErrorCode::Interrupted,
            format!("the unit record of this rebuild is unreadable ({e}); its outcome is unknown"),
        )
    })?;
    unit::reattach(state, op, &record)
        .await
        .map_err(|e| step_failed(e, &after.goal))?;
    let rest: &[Goal] = if after.goal == Goal::Test.as_str() {
        &[Goal::Switch]
    } else {
        &[]
    };
    rebuild(state, op, &after.nixos_rebuild, rest).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rebuild_unit_runs_nixos_rebuild_with_the_goal() {
        let args: Vec<String> = rebuild_command(
            Path::new("/run/current-system/sw/bin/nixos-rebuild"),
            Goal::Test,
        )
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
        assert_eq!(args, ["/run/current-system/sw/bin/nixos-rebuild", "test"]);
    }
}
