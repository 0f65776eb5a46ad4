//! `POST /v1/nix/apply`: validate a NixOS module (rnix syntax, then `nix-instantiate`
//! evaluates it to a function or an attribute set), write it atomically to `nix.configPath`
//! (the previous version kept as `.bak`), then `nixos-rebuild test` and, only if that
//! succeeded, `nixos-rebuild switch`, each inside a transient systemd unit so an agent
//! restart does not kill it. The unit writes its output to a log file that the agent
//! follows and streams; after the switch the system profile's generation is reported. A
//! step that runs past its timeout has its unit stopped with `systemctl stop` (killing
//! systemd-run, the agent's child, would leave the unit running), and the result says
//! whether that worked.
//!
//! One rebuild at a time: a second request while one runs (with or without `noRebuild`,
//! since writing the file would change what the running rebuild reads) is refused with
//! `REBUILD_IN_PROGRESS` and never interrupts the first.
//!
//! The validating evaluation is restricted and bounded like a disko layout's (kcore-nix's
//! `RestrictedEval`): it may read the submitted text only, so a module whose top level
//! imports another file is refused; the imports inside a module function are not evaluated
//! here (the rebuild evaluates them, as root, by design: apply-nix installs what it is given).

use kcore_api::ErrorCode;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kcore_api::ApiError;
use kcore_api::inventory::{ApplyNixRequest, OperationStarted, OperationStatus};
use kcore_net::ApiFailure;
use kcore_nix::Goal;
use kcore_nix::commands::{NixosRebuild, SystemdRun};
use kcore_nix::programs::{NIX_INSTANTIATE, NIXOS_REBUILD, SYSTEMCTL, SYSTEMD_RUN};
use kcore_nix::restricted::{EvalBounds, EvalError, RestrictedEval};
use kcore_nix::runner::{Invocation, Program, RunError};

use crate::disko_apply::run_error_status;
use crate::ops::OpHandle;
use crate::server::AgentState;

/// A rebuild step that takes longer than this is reported as timed out and its transient
/// unit is stopped.
pub const REBUILD_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long `systemctl stop` may take: it waits for the unit to stop, which systemd bounds
/// by the unit's stop timeout (90 s by default) before it kills.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the unit's log file is read while it runs.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

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
    let inv = eval
        .invocation()
        .args(["--eval", "--json", "--argstr", "file"])
        .arg(&file)
        .args(["--expr", TYPE_EXPR]);
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
    let guard = state.rebuild.clone().try_lock_owned().map_err(|_| {
        failure(
            StatusCode::CONFLICT,
            ApiError::new(
                ErrorCode::RebuildInProgress,
                "a rebuild is running on this node; it was not interrupted. Fetch its result with \
                 `kctl node operation ID` and try again when it has finished",
            ),
        )
    })?;
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
        Some((resolve(SYSTEMD_RUN)?, resolve(NIXOS_REBUILD)?))
    };
    let op = state.ops.start("apply-nix", None);
    let path = state.config.nix.config_path.clone();
    op.step(format!("write {}", path.display()));
    match crate::fsutil::write_with_backup(&path, req.config.as_bytes()) {
        Ok(backup) => op.update(|r| {
            r.written.push(path.display().to_string());
            r.written.extend(backup.map(|b| b.display().to_string()));
        }),
        Err(e) => {
            let result = op.finish(
                OperationStatus::Failed,
                Some(ApiError::new(
                    ErrorCode::WriteFailed,
                    format!("cannot write {}: {e}", path.display()),
                )),
            );
            return Ok((StatusCode::INTERNAL_SERVER_ERROR, Json(result)).into_response());
        }
    }
    let Some((systemd_run, nixos_rebuild)) = programs else {
        let result = op.finish(OperationStatus::Succeeded, None);
        return Ok(Json(result).into_response());
    };
    let started = OperationStarted {
        operation_id: op.id.clone(),
        effective_timeout_seconds: None,
    };
    tokio::spawn(async move {
        let _guard = guard;
        rebuild(&state, &op, &systemd_run, &nixos_rebuild).await;
    });
    Ok((StatusCode::ACCEPTED, Json(started)).into_response())
}

/// The transient unit's name for one step of one operation.
pub fn unit_name(op_id: &str, action: &str) -> String {
    let short: String = op_id
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(12)
        .collect();
    format!("kcore-apply-nix-{short}-{action}")
}

/// The transient unit that runs `nixos-rebuild <goal>` logging to `log` (kcore-nix's
/// typed builders spell both programs' flags).
pub fn rebuild_unit(
    unit: &str,
    log: &Path,
    env: &[(String, String)],
    nixos_rebuild: &Path,
    goal: Goal,
) -> SystemdRun {
    let mut command = vec![nixos_rebuild.as_os_str().to_owned()];
    command.extend(NixosRebuild { goal, flake: None }.argv());
    let mut run = SystemdRun::logged(
        unit,
        &format!("kcore apply-nix: nixos-rebuild {goal}"),
        log,
        command,
    );
    run.env = env.to_vec();
    run
}

async fn rebuild(
    state: &AgentState,
    op: &OpHandle,
    systemd_run: &Program,
    nixos_rebuild: &Program,
) {
    let log_dir = state.options.rebuild_log_dir.clone();
    if let Err(e) = std::fs::create_dir_all(&log_dir) {
        op.finish(
            OperationStatus::Failed,
            Some(ApiError::new(
                ErrorCode::WriteFailed,
                format!(
                    "cannot create the rebuild log directory {}: {e}",
                    log_dir.display()
                ),
            )),
        );
        return;
    }
    for goal in [Goal::Test, Goal::Switch] {
        let action = goal.as_str();
        op.step(format!("nixos-rebuild {action}"));
        let unit = unit_name(&op.id, action);
        let log = log_dir.join(format!("{unit}.log"));
        let inv = rebuild_unit(
            &unit,
            &log,
            &state.options.extra_env,
            nixos_rebuild.path(),
            goal,
        )
        .invocation(systemd_run)
        .timeout(state.options.rebuild_timeout);
        if let Err(e) = run_following(inv, &log, op).await {
            let (status, mut err) = run_error_status(&e);
            err.message = format!("nixos-rebuild {action} failed: {}", err.message);
            err.details = serde_json::json!({ "unit": unit, "log": log });
            if matches!(e, RunError::TimedOut { .. }) {
                // The runner killed systemd-run only; the unit belongs to systemd.
                op.step(format!("systemctl stop {unit}"));
                match stop_unit(state, &unit).await {
                    Ok(()) => {
                        err.message.push_str("; its unit was stopped");
                        err.details["unitStopped"] = true.into();
                    }
                    Err(why) => {
                        op.output("agent", format!("stopping {unit} failed: {why}"));
                        err.message.push_str(&format!(
                            "; stopping its unit failed, it may still be running: {why}"
                        ));
                        err.details["unitStopped"] = false.into();
                        err.details["stopError"] = why.into();
                    }
                }
            }
            op.finish(status, Some(err));
            return;
        }
    }
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
            op.update(|r| r.generation = Some(generation.number.to_string()));
        }
        Err(err) => op.output("stderr", err.to_string()),
    }
    op.finish(OperationStatus::Succeeded, None);
}

/// `systemctl stop <unit>`, which returns once the unit has stopped.
async fn stop_unit(state: &AgentState, unit: &str) -> Result<(), String> {
    let systemctl = state.tools.resolve(SYSTEMCTL).map_err(|e| e.to_string())?;
    Invocation::new(&systemctl)
        .args(["stop", unit])
        .timeout(STOP_TIMEOUT)
        .output()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Run `inv` while streaming new lines of `log` into the operation.
async fn run_following(
    inv: Invocation,
    log: &Path,
    op: &OpHandle,
) -> Result<(), kcore_nix::runner::RunError> {
    let run = inv.stream(crate::disko_apply::forward(op));
    tokio::pin!(run);
    let mut follower = LogFollower::new(log.to_path_buf());
    let mut tick = tokio::time::interval(FOLLOW_INTERVAL);
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = tick.tick() => follower.emit_new(op, false),
        }
    };
    follower.emit_new(op, true);
    result.map(|_| ())
}

/// Reads a growing file and emits complete lines.
struct LogFollower {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogFollower {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            partial: String::new(),
        }
    }

    fn emit_new(&mut self, op: &OpHandle, last: bool) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if let Ok(n) = file.read_to_end(&mut buf) {
            self.offset += n as u64;
        }
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            op.output("log", line.trim_end_matches(['\n', '\r']));
        }
        if last && !self.partial.is_empty() {
            op.output("log", std::mem::take(&mut self.partial));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_run_argv_keeps_values_whole() {
        let args: Vec<String> = rebuild_unit(
            "kcore-apply-nix-abc-test",
            Path::new("/var/log/k/a b.log"),
            &[("A".into(), "x y".into())],
            Path::new("/run/current-system/sw/bin/nixos-rebuild"),
            Goal::Test,
        )
        .argv()
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
        assert!(args.contains(&"--property=StandardOutput=append:/var/log/k/a b.log".to_string()));
        assert!(args.contains(&"--setenv=A=x y".to_string()));
        let dashdash = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(
            &args[dashdash + 1..],
            ["/run/current-system/sw/bin/nixos-rebuild", "test"]
        );
    }

    #[test]
    fn unit_names() {
        assert_eq!(
            unit_name("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "switch"),
            "kcore-apply-nix-0f1e2d3c4b5a-switch"
        );
    }
}
