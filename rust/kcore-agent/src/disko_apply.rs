//! `POST /v1/disko/apply`: validate a disko fragment (kcore-disko levels 1-3), plan it
//! against this machine's block devices and return the plan with its hash (dry run), or,
//! with `apply` and the hash the operator saw, run disko's format-and-mount for it.
//!
//! Decisions (see `docs/agent.md`):
//! - The management mode file is read on every request. `installer-only` (and any value
//!   that is not one of the two modes) refuses every apply; `controller-managed` allows
//!   additive plans only.
//! - The apply runs the configured `disko` binary as
//!   `disko --mode format,mount --root-mountpoint / FILE` (day 2: real mount points):
//!   disko's own package brings the partitioning and mkfs tools, and `format` only creates
//!   what does not exist yet. The plan check before it is what keeps it away from disks
//!   in use. It is an operation in the `disk` lane (a second one is `DISK_APPLY_IN_PROGRESS`)
//!   and runs in a transient unit (`crate::ops::unit`), so an agent restart neither kills a
//!   format half-way nor loses its outcome: the next agent re-attaches and keeps the fragment.
//! - Timeouts default to 300 s and are capped at 3600 s; past it the unit is stopped
//!   (`systemctl stop` ends every process of it).
//! - The applied fragment is kept as `<stateDir>/<names>.nix` (written atomically, the
//!   previous version kept as `.bak`); its previous version is the "current" tree the next
//!   plan is compared against.
//! - Every request evaluates the layout, dry run or not, and every evaluation is restricted
//!   and bounded (kcore-nix's `RestrictedEval`; `evaluation` in the configuration): it reads
//!   only the layout, the disko source and nixpkgs lib, no network, no store writes. A bound
//!   that stops it is `422 EVAL_TIMEOUT` / `422 EVAL_MEMORY_LIMIT`; a request finding
//!   `evaluation.maxConcurrent` others evaluating gets `429 EVAL_BUSY` (docs/validation.md).

use kcore_api::ErrorCode;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kcore_api::ApiError;
use kcore_api::inventory::{ApplyDiskoRequest, DiskoPlanResponse, OperationKind};
use kcore_disko::eval::{DeepInputs, EVAL_TIMEOUT, Evaluator, ValidateError, validate_file};
use kcore_disko::plan::ChangeClass;
use kcore_disko::{BuildPlan, DeviceTree, Plan};
use kcore_net::ApiFailure;
use kcore_nix::programs::DISKO;
use serde::{Deserialize, Serialize};

use crate::mgmt::ManagementMode;
use crate::ops::unit::{self, UnitRecord};
use crate::ops::{OpError, OpHandle, Outcome};
use crate::server::AgentState;

/// Timeout when the request names none.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
/// No disk apply runs longer than this, whatever was requested.
pub const MAX_TIMEOUT_SECONDS: u64 = 3600;

/// The timeout the agent enforces for a requested one: default 300, capped at 3600.
pub fn effective_timeout(requested: Option<u64>) -> Result<u64, ApiError> {
    match requested {
        None => Ok(DEFAULT_TIMEOUT_SECONDS),
        Some(0) => Err(ApiError::new(
            ErrorCode::BadRequest,
            "timeoutSeconds must be at least 1 (the default is 300, the maximum 3600)",
        )),
        Some(n) => Ok(n.min(MAX_TIMEOUT_SECONDS)),
    }
}

/// Whether `plan` may be applied under `mode`; the refusal says why not.
pub fn decide(mode: ManagementMode, plan: &Plan) -> Option<ApiError> {
    if mode == ManagementMode::InstallerOnly {
        return Some(ApiError::new(
            ErrorCode::DiskoInstallerOnly,
            "the disko management mode is installer-only: this node refuses every disk apply \
             (write `controller-managed` to the management mode file to allow additive changes)",
        ));
    }
    let refusals = plan.refusals();
    if let Some((target, first)) = refusals.first() {
        let details: Vec<serde_json::Value> = refusals
            .iter()
            .map(|(t, r)| {
                serde_json::json!({"target": t.name, "device": t.device, "code": r.code, "message": r.message})
            })
            .collect();
        return Some(
            ApiError::new(
                first.code.into(),
                format!("target {} refused: {}", target.name, first.message),
            )
            .with_details(serde_json::json!({ "refusals": details })),
        );
    }
    if plan.class == ChangeClass::Destructive {
        let destructive: Vec<String> = plan
            .targets
            .iter()
            .flat_map(|t| {
                t.actions
                    .iter()
                    .filter(|a| a.class == ChangeClass::Destructive)
                    .map(move |a| format!("{}: {}", t.name, a.detail))
            })
            .collect();
        return Some(
            ApiError::new(
                ErrorCode::DestructiveChangeRefused,
                format!(
                    "controller-managed allows additive changes only; this plan is destructive ({})",
                    destructive.join("; ")
                ),
            )
            .with_details(serde_json::json!({ "destructive": destructive })),
        );
    }
    None
}

/// `<names>.nix`: the fragment's top-level device names (disks, pools, VGs), sorted,
/// joined with `+`. Names outside `[A-Za-z0-9_-]` are refused rather than mangled.
pub fn fragment_file_name(tree: &DeviceTree) -> Result<String, ApiError> {
    let mut names: Vec<&String> = tree
        .disk
        .keys()
        .chain(tree.zpool.keys())
        .chain(tree.lvm_vg.keys())
        .chain(tree.mdadm.keys())
        .chain(tree.nodev.keys())
        .chain(tree.bcachefs_filesystems.keys())
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(ApiError::new(
            ErrorCode::DiskoInvalid,
            "the fragment declares no devices under disko.devices",
        ));
    }
    if let Some(bad) = names.iter().find(|n| {
        !n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) {
        return Err(ApiError::new(
            ErrorCode::DiskoInvalid,
            format!(
                "device name {bad:?} must use only letters, digits, '-' and '_' (it names the applied fragment's file)"
            ),
        ));
    }
    let joined: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    Ok(format!("{}.nix", joined.join("+")))
}

fn failure(status: StatusCode, err: ApiError) -> ApiFailure {
    ApiFailure { status, error: err }
}

pub(crate) fn validate_failure(err: ValidateError) -> ApiFailure {
    match err {
        ValidateError::Invalid(findings) => failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::new(
                ErrorCode::DiskoInvalid,
                format!(
                    "the disko fragment is invalid:\n{}",
                    findings
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            )
            .with_details(serde_json::json!({ "findings": findings })),
        ),
        ValidateError::Tool(e) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::new(ErrorCode::ToolUnavailable, e.to_string()),
        ),
        ValidateError::Bound(e) => {
            let err = bound_error(&e, "the disko fragment");
            failure(StatusCode::UNPROCESSABLE_ENTITY, err)
        }
        other => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::new(ErrorCode::DiskoInvalid, other.to_string()),
        ),
    }
}

/// An evaluation stopped by a bound, as `EVAL_TIMEOUT`, `EVAL_MEMORY_LIMIT` or
/// `EVAL_OUTPUT_LIMIT` (shared with apply-nix). The message names the setting that sets the bound.
pub fn bound_error(err: &kcore_nix::EvalError, what: &str) -> ApiError {
    let (code, fix) = match err {
        kcore_nix::EvalError::MemoryBound(_) => (
            ErrorCode::EvalMemoryLimit,
            "simplify it, or raise evaluation.memoryLimitMiB in the agent's configuration",
        ),
        kcore_nix::EvalError::CpuBound(_) => (
            ErrorCode::EvalTimeout,
            "simplify it, or raise evaluation.cpuLimitSeconds in the agent's configuration",
        ),
        kcore_nix::EvalError::OutputBound(_) => (
            ErrorCode::EvalOutputLimit,
            "a layout or module evaluates to kilobytes; check for a runaway value or trace",
        ),
        _ => (
            ErrorCode::EvalTimeout,
            "simplify it (the wall-clock timeout is fixed), or retry when the node is less busy",
        ),
    };
    ApiError::new(
        code,
        format!("evaluating {what}: {err}; {fix} (see docs/validation.md)"),
    )
}

/// The result of validating and planning one request.
struct Planned {
    plan: Plan,
    levels: Vec<String>,
    file_name: String,
    /// Holds the fragment file disko will read.
    _workdir: tempfile::TempDir,
    fragment: PathBuf,
}

/// A layout written to a work directory and validated at levels 1-3 (3 with the configured
/// disko source and nixpkgs lib): where a disk apply and an install plan both start.
pub(crate) struct ValidatedLayout {
    /// Holds `file` (disko reads it during an apply).
    pub workdir: tempfile::TempDir,
    pub file: PathBuf,
    pub evaluator: Evaluator,
    pub deep: Option<DeepInputs>,
    pub tree: DeviceTree,
    /// The levels that ran: `parse`, `eval`, and `deep` when level 3 did.
    pub levels: Vec<String>,
}

/// Writes `layout` to a work directory named `<prefix>...` and validates it.
pub(crate) async fn validate_layout(
    state: &AgentState,
    layout: &str,
    prefix: &str,
) -> Result<ValidatedLayout, ApiFailure> {
    let workdir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| ApiFailure::internal(format!("cannot create a work directory: {e}")))?;
    let file = workdir.path().join("fragment.nix");
    std::fs::write(&file, layout)
        .map_err(|e| ApiFailure::internal(format!("cannot write the layout: {e}")))?;
    let evaluator = Evaluator::new(state.config.binaries.get("nix-instantiate"))
        .map_err(|e| {
            failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                ApiError::new(ErrorCode::ToolUnavailable, e.to_string()),
            )
        })?
        .with_bounds(state.eval_bounds(EVAL_TIMEOUT));
    let deep = match (
        &state.config.disko.disko_source,
        &state.config.disko.nixpkgs_lib,
    ) {
        (Some(disko), Some(lib)) => Some(DeepInputs {
            disko: disko.clone(),
            nixpkgs_lib: lib.clone(),
        }),
        _ => None,
    };
    let validated = validate_file(&evaluator, &file, deep.as_ref())
        .await
        .map_err(validate_failure)?;
    let mut levels = vec!["parse".to_string(), "eval".to_string()];
    if validated.level >= 3 {
        levels.push("deep".to_string());
    }
    Ok(ValidatedLayout {
        workdir,
        file,
        evaluator,
        deep,
        tree: validated.tree,
        levels,
    })
}

async fn plan_request(state: &AgentState, layout: &str) -> Result<Planned, ApiFailure> {
    let ValidatedLayout {
        workdir,
        file: fragment,
        evaluator,
        deep,
        tree,
        levels,
    } = validate_layout(state, layout, "kcore-disko-").await?;
    let file_name =
        fragment_file_name(&tree).map_err(|e| failure(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let current_path = state.config.disko.state_dir.join(&file_name);
    let current = if current_path.is_file() {
        let lib = deep.as_ref().map(|d| d.nixpkgs_lib.as_path());
        Some(evaluator.level2(&current_path, lib).await.map_err(|e| {
            ApiFailure::internal(format!(
                "the previously applied fragment {} no longer evaluates: {e}",
                current_path.display()
            ))
        })?)
    } else {
        None
    };
    let snapshot = match &state.options.block_snapshot {
        Some(s) => s.clone(),
        None => crate::inventory::live_snapshot(&state.tools)
            .await
            .map_err(|e| {
                failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ApiError::new(ErrorCode::InventoryFailed, e.to_string()),
                )
            })?,
    };
    let plan = Plan::build(&tree, current.as_ref(), &snapshot);
    Ok(Planned {
        plan,
        levels,
        file_name,
        _workdir: workdir,
        fragment,
    })
}

/// Handle one request (dry run or apply).
pub async fn handle(
    state: Arc<AgentState>,
    req: ApplyDiskoRequest,
) -> Result<Response, ApiFailure> {
    let timeout =
        effective_timeout(req.timeout_seconds).map_err(|e| failure(StatusCode::BAD_REQUEST, e))?;
    let mode = ManagementMode::read(&state.config.disko.management_mode_file);
    let planned = {
        // Held for every evaluation of this request (the layout, the applied fragment),
        // released before an apply runs.
        let _slot = state.evaluation_slot()?;
        plan_request(&state, &req.layout).await?
    };
    let refusal = decide(mode, &planned.plan);
    if !req.apply {
        let body = DiskoPlanResponse {
            plan: planned.plan.clone(),
            plan_hash: planned.plan.hash.clone(),
            validated: planned.levels.clone(),
            management_mode: mode.as_str().to_string(),
            apply_allowed: refusal.is_none(),
            refusal,
        };
        return Ok(Json(body).into_response());
    }
    if mode == ManagementMode::InstallerOnly {
        if let Some(r) = refusal {
            return Err(failure(StatusCode::FORBIDDEN, r));
        }
    }
    let Some(presented) = &req.plan_hash else {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            ApiError::new(
                ErrorCode::PlanHashRequired,
                "an apply must present the planHash of the dry run the operator saw",
            ),
        ));
    };
    if *presented != planned.plan.hash {
        return Err(failure(
            StatusCode::CONFLICT,
            ApiError::new(
                ErrorCode::PlanHashMismatch,
                "the plan changed since the dry run (devices or the applied fragment differ): \
                 run the dry run again and review the new plan",
            )
            .with_details(serde_json::json!({
                "presented": presented,
                "current": planned.plan.hash,
                "plan": planned.plan,
            })),
        ));
    }
    if let Some(r) = refusal {
        return Err(failure(StatusCode::CONFLICT, r));
    }
    let guard = state.lanes.take(OperationKind::ApplyDisko)?;
    let op = state
        .ops
        .start(OperationKind::ApplyDisko, Some(timeout), guard);
    tracing::info!(
        operation = %op.id,
        plan = %planned.plan.hash,
        timeout,
        "disk apply accepted"
    );
    let started = op.spawn(move |op| async move { run_apply(&state, &op, planned, timeout).await });
    Ok((StatusCode::ACCEPTED, Json(started)).into_response())
}

/// disko for a day-2 fragment: format what does not exist yet and mount it at the node's
/// real mount points (disko's default root is `/mnt`, for installers).
pub fn disko_command(fragment: &Path) -> kcore_nix::commands::Disko {
    kcore_nix::commands::Disko {
        mode: kcore_nix::commands::DiskoMode::FormatMount,
        root_mountpoint: "/".into(),
        fragment: fragment.to_path_buf(),
    }
}

/// What a re-attached disk apply does after its unit succeeded (the unit record's
/// `resume`): keep the fragment the unit formatted as the applied one.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AfterUnit {
    /// The fragment's copy in the operation's work directory (what disko read).
    fragment: PathBuf,
    /// `<names>.nix` under `disko.stateDir`.
    file_name: String,
}

async fn run_apply(
    state: &AgentState,
    op: &OpHandle,
    planned: Planned,
    timeout: u64,
) -> Result<Outcome, OpError> {
    let program = state.tools.resolve(DISKO).map_err(|e| OpError::from(&e))?;
    // disko reads the fragment from a file that must outlive the agent (a re-attached
    // apply keeps it afterwards); the request's temporary copy would not.
    let work = unit::work_dir(state, &op.id)?;
    let fragment = work.join("fragment.nix");
    let text = std::fs::read(&planned.fragment).and_then(|t| {
        crate::fsutil::write_atomic(&fragment, &t)?;
        Ok(t)
    });
    if let Err(e) = text {
        return Err(OpError::failed(
            ErrorCode::WriteFailed,
            format!("cannot keep the fragment at {}: {e}", fragment.display()),
        ));
    }
    let after = AfterUnit {
        fragment: fragment.clone(),
        file_name: planned.file_name.clone(),
    };
    let record = UnitRecord::new(
        &unit::operations_dir(state)?,
        &state.options.rebuild_log_dir,
        &op.id,
        &unit::unit_name(OperationKind::ApplyDisko, &op.id, "disko"),
        Duration::from_secs(timeout),
        serde_json::to_value(&after)
            .map_err(|e| OpError::failed(ErrorCode::Internal, e.to_string()))?,
    );
    op.step(format!(
        "disko --mode format,mount --root-mountpoint / ({})",
        planned.file_name
    ));
    let mut command = vec![program.path().as_os_str().to_owned()];
    command.extend(disko_command(&fragment).argv());
    unit::run(
        state,
        op,
        &record,
        "kcore apply-disko: disko --mode format,mount",
        command,
    )
    .await?;
    keep(state, op, &after)
}

/// Finish a disk apply whose unit an earlier agent started.
pub async fn resume(
    state: &AgentState,
    op: &OpHandle,
    record: UnitRecord,
) -> Result<Outcome, OpError> {
    let after: AfterUnit = serde_json::from_value(record.resume.clone()).map_err(|e| {
        OpError::failed(
            ErrorCode::Interrupted,
            format!(
                "the unit record of this disk apply is unreadable ({e}); its outcome is unknown"
            ),
        )
    })?;
    unit::reattach(state, op, &record).await?;
    keep(state, op, &after)
}

fn keep(state: &AgentState, op: &OpHandle, after: &AfterUnit) -> Result<Outcome, OpError> {
    op.step(format!("keep the applied fragment as {}", after.file_name));
    let target = state.config.disko.state_dir.join(&after.file_name);
    let written = keep_fragment(&after.fragment, &target).map_err(|e| {
        OpError::failed(
            ErrorCode::WriteFailed,
            format!(
                "disko succeeded but the fragment could not be kept at {}: {e}",
                target.display()
            ),
        )
    })?;
    Ok(Outcome {
        written,
        generation: None,
    })
}

fn keep_fragment(fragment: &Path, target: &Path) -> std::io::Result<Vec<String>> {
    let text = std::fs::read(fragment)?;
    let backup = crate::fsutil::write_with_backup(target, &text)?;
    let mut written = vec![target.display().to_string()];
    written.extend(backup.map(|b| b.display().to_string()));
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_default_cap_and_zero() {
        assert_eq!(effective_timeout(None).unwrap(), 300);
        assert_eq!(effective_timeout(Some(10)).unwrap(), 10);
        assert_eq!(effective_timeout(Some(3600)).unwrap(), 3600);
        assert_eq!(effective_timeout(Some(7200)).unwrap(), 3600);
        assert_eq!(
            effective_timeout(Some(0)).unwrap_err().code,
            ErrorCode::BadRequest.as_str()
        );
    }

    fn tree(json: serde_json::Value) -> DeviceTree {
        DeviceTree::from_json(&json).unwrap()
    }

    #[test]
    fn fragment_names() {
        let t = tree(serde_json::json!({"disko": {"devices": {"disk": {
            "data1": {"device": "/dev/sdb", "type": "disk",
                      "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/d1"}},
            "a": {"device": "/dev/sdc", "type": "disk",
                  "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/a"}}
        }}}}));
        assert_eq!(fragment_file_name(&t).unwrap(), "a+data1.nix");
    }
}
