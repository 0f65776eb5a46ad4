//! An activation and its health gate, on the node alone (docs/rollouts.md has the state
//! machine):
//!
//! 1. The [`ActivationRecord`] is saved before anything changes.
//! 2. `nix-env --profile <system profile> --set <path>` (not for `test`), then
//!    `<path>/bin/switch-to-configuration <goal>` in a transient unit (`crate::ops::unit`), so
//!    an agent restart (switch-to-configuration restarts the agent's own unit when it
//!    changed) neither kills nor repeats it: the next agent re-attaches ([`resume`]) and
//!    carries on from the unit's real exit status.
//! 3. The exit status as nixpkgs' switch-to-configuration-ng gives it
//!    (`pkgs/by-name/sw/switch-to-configuration-ng/src/src/main.rs`): 0 done; 2 the
//!    activation script failed (revert); 4 some units failed (the system runs the new
//!    configuration, degraded: the gate reports the units and reverts); 100 the new `init`
//!    is incompatible and only a reboot activates it (fall back to `boot`); anything else
//!    fails the step and reverts.
//! 4. `switch`/`test`: the health gate ([`super::gate::health_gate`]) within `healthTimeoutSeconds`, else
//!    the revert: `--set <previous>` and its `switch-to-configuration switch`, in a unit too.
//! 5. `boot`: a trial boot: the old entry stays the default (`bootctl set-default`), the new
//!    one is booted once (`bootctl set-oneshot`), the record says so, `systemctl reboot`.
//!    With GRUB (`system::boots_with_grub`): the previous system's `switch-to-configuration
//!    boot` makes it "NixOS - Default" again and `grub-reboot` boots the new generation's
//!    submenu entry once.
//!    The agent that starts after the boot ([`after_boot`]) runs the gate on the booted
//!    system and makes the new entry the default only when it passes; otherwise it sets the
//!    previous generation back and boots it, once (at most one revert reboot).

use crate::ops::now_unix;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kcore_api::ErrorCode;
use kcore_api::inventory::{OperationKind, OperationStatus};
use kcore_api::rollout::{GenerationRef, StepCode, StepPhase};
use kcore_nix::Goal;
use kcore_nix::commands::{Bootctl, SwitchToConfiguration};
use serde::{Deserialize, Serialize};

use super::gate::health_gate;
use super::state::{self, ActivationRecord, RecordPhase};
use super::system;
use crate::ops::unit::{self, UnitRecord, UnitStatus};
use crate::ops::{OpError, OpHandle, Outcome};
use crate::server::AgentState;

/// Which unit of an activation ran: what to do with its exit status (the unit record's
/// `resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Step {
    /// The new system's switch-to-configuration with the record's goal.
    Activate,
    /// `boot` after `switch`/`test` answered 100.
    FallbackBoot,
    /// The previous system's `switch`.
    Revert,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AfterUnit {
    step: Step,
}

fn internal(e: impl std::fmt::Display) -> OpError {
    OpError::failed(ErrorCode::Internal, e.to_string())
}

fn ops_dir(state: &AgentState) -> Result<PathBuf, OpError> {
    unit::operations_dir(state)
}

/// Update the activation's report.
fn report(
    state: &AgentState,
    rec: &ActivationRecord,
    phase: StepPhase,
    f: impl FnOnce(&mut kcore_api::rollout::StepReport),
) -> Result<(), OpError> {
    let dir = ops_dir(state)?;
    let mut report = state::load_report(&dir, &rec.operation_id)
        .unwrap_or_else(|| state::new_report(&rec.operation_id, phase));
    report.phase = phase;
    report.store_path = Some(rec.store_path.display().to_string());
    report.goal = Some(rec.goal.clone());
    report.previous = rec.previous.clone();
    report.reboots = rec.reboots;
    report.code = rec.code;
    f(&mut report);
    state::save_report(&dir, &mut report)
}

fn goal_of(rec: &ActivationRecord) -> Goal {
    match rec.goal.as_str() {
        "boot" => Goal::Boot,
        "test" => Goal::Test,
        _ => Goal::Switch,
    }
}

/// Run a fresh activation described by `rec` (saved by the caller's handler).
pub async fn run(
    state: &AgentState,
    op: &OpHandle,
    mut rec: ActivationRecord,
) -> Result<Outcome, OpError> {
    let dir = ops_dir(state)?;
    let started = tokio::time::Instant::now();
    rec.save(&dir)?;
    report(state, &rec, StepPhase::Activating, |_| {})?;
    if goal_of(&rec) != Goal::Test {
        let set = system::set_profile(state, op, &rec.store_path).await;
        tracing::debug!(operation = %op.id, set_profile_ms = started.elapsed().as_millis() as u64,
            "nix-env --set ran");
        match set {
            Ok(generation) => rec.generation = Some(generation),
            // Nothing was activated: the step failed, the record goes.
            Err(OpError::Failed { status, mut error }) => {
                let _ = report(state, &rec, StepPhase::Failed, |r| {
                    r.reason = Some(error.message.clone());
                    r.code = Some(StepCode::ActivationFailed);
                });
                ActivationRecord::clear(&dir)?;
                error.message = format!("setting the system profile failed: {}", error.message);
                return Err(OpError::Failed { status, error });
            }
            Err(OpError::Detached) => return Err(OpError::Detached),
        }
        rec.save(&dir)?;
    }
    let exit = stc_unit(
        state,
        op,
        &rec.store_path.clone(),
        goal_of(&rec),
        Step::Activate,
    )
    .await?;
    tracing::debug!(operation = %op.id, exit, since_start_ms = started.elapsed().as_millis() as u64,
        "switch-to-configuration unit ended");
    after_unit(state, op, rec, Step::Activate, exit).await
}

/// `<toplevel>/bin/switch-to-configuration <goal>` in a unit; its exit status.
async fn stc_unit(
    state: &AgentState,
    op: &OpHandle,
    toplevel: &Path,
    goal: Goal,
    step: Step,
) -> Result<i32, OpError> {
    let stc = SwitchToConfiguration {
        toplevel: toplevel.to_path_buf(),
        goal,
    };
    let name = match step {
        Step::Revert => "revert".to_string(),
        _ => goal.as_str().to_string(),
    };
    let record = UnitRecord::new(
        &ops_dir(state)?,
        &state.options.rebuild_log_dir,
        &op.id,
        &unit::unit_name(op.kind(), &op.id, &name),
        state.options.rebuild_timeout,
        serde_json::to_value(AfterUnit { step }).map_err(internal)?,
    );
    let mut command: Vec<OsString> = vec![stc.program_path().into_os_string()];
    command.extend(stc.argv());
    op.step(format!("{} {goal}", stc.program_path().display()));
    let ran = unit::run(
        state,
        op,
        &record,
        &format!("kcore rollout: switch-to-configuration {goal}"),
        command,
    )
    .await;
    exit_status(&record, ran)
}

/// The unit's exit status from the file its `ExecStopPost=` helper wrote; a unit that was
/// killed, timed out or left no status is the error the runner gave.
fn exit_status(record: &UnitRecord, ran: Result<(), OpError>) -> Result<i32, OpError> {
    if matches!(ran, Err(OpError::Detached)) {
        return Err(OpError::Detached);
    }
    let status: Option<UnitStatus> = std::fs::read(&record.status)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match (status, ran) {
        (Some(s), _) if s.exit_code == "exited" => s.exit_status.parse().map_err(internal),
        (_, Ok(())) => Ok(0),
        (_, Err(e)) => Err(e),
    }
}

/// Finish an activation whose unit an earlier agent started.
pub async fn resume(
    state: &AgentState,
    op: &OpHandle,
    unit_rec: UnitRecord,
) -> Result<Outcome, OpError> {
    let interrupted = |why: String| OpError::failed(ErrorCode::Interrupted, why);
    let after: AfterUnit = serde_json::from_value(unit_rec.resume.clone()).map_err(|e| {
        interrupted(format!(
            "the unit record of this activation is unreadable ({e})"
        ))
    })?;
    let rec = ActivationRecord::load(&ops_dir(state)?)
        .map_err(interrupted)?
        .ok_or_else(|| {
            interrupted("the activation record is gone; the outcome is unknown".into())
        })?;
    if matches!(rec.phase, RecordPhase::TrialBoot | RecordPhase::RevertBoot) {
        // The unit's work was done and the reboot asked for; the agent stopped before the
        // operation recorded its end (on a real node `systemctl reboot` stops it, so this
        // is the usual case). Running `after_unit` again would ask for a second trial
        // boot; this operation holds the system lane, so it finishes the step itself
        // instead of [`after_boot`]'s `rollout-verify`.
        return verify_booted(state, op, rec).await;
    }
    let ran = unit::reattach(state, op, &unit_rec).await;
    let exit = exit_status(&unit_rec, ran)?;
    after_unit(state, op, rec, after.step, exit).await
}

async fn after_unit(
    state: &AgentState,
    op: &OpHandle,
    mut rec: ActivationRecord,
    mut step: Step,
    mut exit: i32,
) -> Result<Outcome, OpError> {
    loop {
        let goal = goal_of(&rec);
        match (step, goal, exit) {
            (Step::Revert, _, _) => return finish_revert(state, op, rec, exit),
            (Step::Activate | Step::FallbackBoot, Goal::Boot, 0) => {
                return trial_boot(state, op, rec).await;
            }
            (Step::Activate, Goal::Switch | Goal::Test, 0 | 4) => {
                if exit == 4 {
                    op.output(
                        "agent",
                        "switch-to-configuration exited 4: some units failed",
                    );
                }
                return gate_then_revert(state, op, rec).await;
            }
            (Step::Activate, Goal::Switch | Goal::Test, 100) => {
                op.output(
                    "agent",
                    "switch-to-configuration exited 100: the new system needs a reboot; falling back to boot",
                );
                rec.goal = "boot".into();
                if rec.generation.is_none() {
                    rec.generation = Some(system::set_profile(state, op, &rec.store_path).await?);
                }
                rec.save(&ops_dir(state)?)?;
                exit = stc_unit(
                    state,
                    op,
                    &rec.store_path.clone(),
                    Goal::Boot,
                    Step::FallbackBoot,
                )
                .await?;
                step = Step::FallbackBoot;
            }
            (_, _, 2) => {
                let why = format!(
                    "the activation failed: switch-to-configuration {goal} exited 2 (an activation script failed)"
                );
                return revert(state, op, rec, StepCode::ActivationFailed, why, Vec::new()).await;
            }
            (_, _, n) => {
                let why = format!("switch-to-configuration {goal} exited {n}");
                return revert(state, op, rec, StepCode::ActivationFailed, why, Vec::new()).await;
            }
        }
    }
}

fn timeout_of(rec: &ActivationRecord) -> Duration {
    Duration::from_secs(rec.health_timeout_seconds)
}

async fn gate_then_revert(
    state: &AgentState,
    op: &OpHandle,
    rec: ActivationRecord,
) -> Result<Outcome, OpError> {
    report(state, &rec, StepPhase::Verifying, |_| {})?;
    match health_gate(state, op, &rec.store_path.clone(), false, timeout_of(&rec)).await? {
        Ok(()) => succeed(state, rec),
        Err(f) => revert(state, op, rec, f.code, f.reason, f.failed_units).await,
    }
}

fn succeed(state: &AgentState, rec: ActivationRecord) -> Result<Outcome, OpError> {
    let generation = system::current_generation(state);
    report(state, &rec, StepPhase::Succeeded, |r| {
        r.generation = generation.clone()
    })?;
    ActivationRecord::clear(&ops_dir(state)?)?;
    Ok(Outcome {
        written: Vec::new(),
        generation: generation.map(|g| g.number.to_string()),
    })
}

/// The step failed without a way back: reported `failed`, the record cleared.
fn revert_failed(
    state: &AgentState,
    rec: &ActivationRecord,
    code: StepCode,
    reason: String,
) -> OpError {
    let generation = system::current_generation(state);
    let _ = report(state, rec, StepPhase::Failed, |r| {
        r.reason = Some(reason.clone());
        r.code = Some(code);
        r.failed_units = rec.failed_units.clone();
        r.generation = generation;
    });
    if let Ok(dir) = ops_dir(state) {
        let _ = ActivationRecord::clear(&dir);
    }
    OpError::Failed {
        status: OperationStatus::Failed,
        error: kcore_api::ApiError::new(ErrorCode::RevertFailed, reason.clone())
            .with_details(serde_json::json!({ "reason": reason, "failedUnits": rec.failed_units })),
    }
}

fn reverted_error(rec: &ActivationRecord, reason: &str) -> OpError {
    let back = rec.previous.as_ref().map_or(0, |p| p.number);
    OpError::Failed {
        status: OperationStatus::Failed,
        error: kcore_api::ApiError::new(
            ErrorCode::Reverted,
            format!("{reason}; the node reverted to generation {back}"),
        )
        .with_details(serde_json::json!({
            "reason": reason,
            "failedUnits": rec.failed_units,
            "previous": rec.previous,
        })),
    }
}

/// Back to the previous generation (`--set` + `switch`), in a unit.
async fn revert(
    state: &AgentState,
    op: &OpHandle,
    mut rec: ActivationRecord,
    code: StepCode,
    reason: String,
    failed_units: Vec<String>,
) -> Result<Outcome, OpError> {
    op.output("agent", format!("reverting: {reason}"));
    rec.reason = Some(reason.clone());
    rec.code = Some(code);
    rec.failed_units = failed_units;
    rec.save(&ops_dir(state)?)?;
    let Some(prev) = rec.previous.clone() else {
        return Err(revert_failed(
            state,
            &rec,
            StepCode::NoPreviousGeneration,
            format!("{reason}; there is no previous generation to revert to"),
        ));
    };
    let prev_path = PathBuf::from(&prev.store_path);
    let current = system::current_generation(state);
    if current.as_ref().map(|g| &g.store_path) != Some(&prev.store_path) {
        system::set_profile(state, op, &prev_path).await?;
    }
    let exit = stc_unit(state, op, &prev_path, Goal::Switch, Step::Revert).await?;
    finish_revert(state, op, rec, exit)
}

fn finish_revert(
    state: &AgentState,
    op: &OpHandle,
    rec: ActivationRecord,
    exit: i32,
) -> Result<Outcome, OpError> {
    let reason = rec
        .reason
        .clone()
        .unwrap_or_else(|| "the activation failed".into());
    if exit != 0 {
        return Err(revert_failed(
            state,
            &rec,
            StepCode::RevertFailed,
            format!(
                "{reason}; reverting failed too: the previous system's switch-to-configuration switch exited {exit}"
            ),
        ));
    }
    op.output("agent", "reverted to the previous generation");
    let generation = system::current_generation(state);
    report(state, &rec, StepPhase::Reverted, |r| {
        r.reason = Some(reason.clone());
        r.failed_units = rec.failed_units.clone();
        r.generation = generation;
    })?;
    ActivationRecord::clear(&ops_dir(state)?)?;
    Err(reverted_error(&rec, &reason))
}

/// The new generation booted once, the old one still the default; then the reboot.
async fn trial_boot(
    state: &AgentState,
    op: &OpHandle,
    mut rec: ActivationRecord,
) -> Result<Outcome, OpError> {
    let new = rec
        .generation
        .clone()
        .ok_or_else(|| internal("a boot activation without a generation"))?;
    if system::boots_with_grub(state) {
        // GRUB: the previous system installed as "NixOS - Default" again, the new one
        // booted once from the generations' submenu (`grub-reboot`).
        if let Some(prev) = &rec.previous {
            system::install_boot_default(state, op, Path::new(&prev.store_path)).await?;
        }
        let entry = system::grub_entry(state, new.number)?;
        system::grub_reboot(state, op, entry).await?;
    } else {
        if let Some(prev) = &rec.previous {
            system::bootctl(
                state,
                op,
                Bootctl::SetDefault(system::boot_entry(prev.number)),
            )
            .await?;
        }
        system::bootctl(
            state,
            op,
            Bootctl::SetOneshot(system::boot_entry(new.number)),
        )
        .await?;
    }
    rec.phase = RecordPhase::TrialBoot;
    rec.reboots = 1;
    rec.deadline = now_unix().saturating_add(rec.health_timeout_seconds);
    rec.save(&ops_dir(state)?)?;
    report(state, &rec, StepPhase::Rebooting, |_| {})?;
    system::reboot(state, op).await?;
    Ok(Outcome {
        written: Vec::new(),
        generation: Some(new.number.to_string()),
    })
}

/// At start-up: finish what an activation record left for after a boot (a `rollout-verify`
/// operation on the system lane), or close a record whose activation was cut short before
/// its unit started.
pub fn after_boot(state: &Arc<AgentState>) {
    let Some(dir) = state.ops.dir().map(Path::to_path_buf) else {
        return;
    };
    let rec = match ActivationRecord::load(&dir) {
        Ok(Some(rec)) => rec,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "activation record unreadable; no activation starts until it is removed");
            return;
        }
    };
    let running = state
        .ops
        .result(&rec.operation_id)
        .is_some_and(|r| r.status == OperationStatus::Running);
    if rec.phase == RecordPhase::Activating {
        if !running {
            let why = "the agent stopped before switch-to-configuration ran; nothing was activated"
                .to_string();
            let _ = revert_failed(state, &rec, StepCode::ActivationFailed, why);
        }
        return;
    }
    if running {
        // The activation was re-attached (its operation had not recorded its end before
        // the reboot) and finishes the post-boot gate itself ([`resume`]).
        return;
    }
    let guard = match state.lanes.take(OperationKind::RolloutVerify) {
        Ok(guard) => guard,
        Err(busy) => {
            tracing::warn!(error = %busy.error.message, "the post-boot health gate cannot start");
            return;
        }
    };
    let op = state.ops.start(
        OperationKind::RolloutVerify,
        Some(rec.health_timeout_seconds),
        guard,
    );
    let state = state.clone();
    tokio::spawn(op.run(move |op| async move { verify_booted(&state, &op, rec).await }));
}

async fn verify_booted(
    state: &AgentState,
    op: &OpHandle,
    mut rec: ActivationRecord,
) -> Result<Outcome, OpError> {
    let booted = system::resolved(&system::booted_system(state));
    let prev = rec.previous.clone();
    let prev_path = prev.as_ref().map(|p| PathBuf::from(&p.store_path));
    let booted_name = booted
        .as_ref()
        .map_or("nothing".into(), |p| p.display().to_string());
    op.step(format!("after the boot: booted {booted_name}"));
    if rec.phase == RecordPhase::RevertBoot {
        if booted.is_some() && booted == prev_path.as_ref().and_then(|p| system::resolved(p)) {
            let reason = rec.reason.clone().unwrap_or_default();
            let generation = system::current_generation(state);
            report(state, &rec, StepPhase::Reverted, |r| {
                r.reason = Some(reason.clone());
                r.failed_units = rec.failed_units.clone();
                r.generation = generation;
            })?;
            ActivationRecord::clear(&ops_dir(state)?)?;
            return Err(reverted_error(&rec, &reason));
        }
        // At most one revert reboot: the operator takes it from here.
        return Err(revert_failed(
            state,
            &rec,
            StepCode::RevertFailed,
            format!("the revert boot came up in {booted_name}, not the previous generation"),
        ));
    }
    let new = rec
        .generation
        .clone()
        .ok_or_else(|| internal("a trial boot without a generation"))?;
    if booted != system::resolved(&rec.store_path) {
        // The one-shot entry did not come up (or was not picked): the old default booted.
        let reason = format!(
            "the trial boot of generation {} did not come up; booted {booted_name}",
            new.number
        );
        rec.reason = Some(reason.clone());
        rec.code = Some(StepCode::TrialBootFailed);
        if let Some(p) = &prev_path {
            system::set_profile(state, op, p).await?;
        }
        let generation = system::current_generation(state);
        report(state, &rec, StepPhase::Reverted, |r| {
            r.reason = Some(reason.clone());
            r.generation = generation;
        })?;
        ActivationRecord::clear(&ops_dir(state)?)?;
        return Err(reverted_error(&rec, &reason));
    }
    report(state, &rec, StepPhase::Verifying, |_| {})?;
    match health_gate(state, op, &rec.store_path.clone(), true, timeout_of(&rec)).await? {
        Ok(()) => {
            if system::boots_with_grub(state) {
                system::install_boot_default(state, op, &rec.store_path.clone()).await?;
            } else {
                system::bootctl(
                    state,
                    op,
                    Bootctl::SetDefault(system::boot_entry(new.number)),
                )
                .await?;
            }
            succeed(state, rec)
        }
        Err(f) => {
            let Some(prev) = prev else {
                rec.failed_units = f.failed_units;
                return Err(revert_failed(
                    state,
                    &rec,
                    StepCode::NoPreviousGeneration,
                    format!("{}; there is no previous generation", f.reason),
                ));
            };
            op.output("agent", format!("reverting: {}", f.reason));
            rec.reason = Some(f.reason);
            rec.code = Some(f.code);
            rec.failed_units = f.failed_units;
            system::set_profile(state, op, Path::new(&prev.store_path)).await?;
            if system::boots_with_grub(state) {
                // Already "NixOS - Default" since the trial boot; installed again so the
                // submenu lists the generation just set.
                system::install_boot_default(state, op, Path::new(&prev.store_path)).await?;
            } else {
                system::bootctl(
                    state,
                    op,
                    Bootctl::SetDefault(system::boot_entry(prev.number)),
                )
                .await?;
            }
            rec.phase = RecordPhase::RevertBoot;
            rec.reboots = 2;
            rec.save(&ops_dir(state)?)?;
            report(state, &rec, StepPhase::Rebooting, |r| {
                r.reason = rec.reason.clone();
                r.failed_units = rec.failed_units.clone();
            })?;
            system::reboot(state, op).await?;
            let reason = rec.reason.clone().unwrap_or_default();
            Err(reverted_error(
                &rec,
                &format!("{reason} (booting the previous generation)"),
            ))
        }
    }
}

/// A record for a new activation of `store_path` (not saved).
pub fn new_record(
    id: &str,
    store_path: PathBuf,
    goal: Goal,
    previous: Option<GenerationRef>,
    health_timeout_seconds: u64,
) -> ActivationRecord {
    ActivationRecord {
        operation_id: id.to_string(),
        store_path,
        goal: goal.as_str().to_string(),
        previous,
        generation: None,
        health_timeout_seconds,
        phase: RecordPhase::Activating,
        deadline: now_unix().saturating_add(health_timeout_seconds),
        reason: None,
        code: None,
        failed_units: Vec::new(),
        reboots: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dir: &Path) -> UnitRecord {
        UnitRecord::new(
            dir,
            dir,
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "kcore-rollout-activate-0f1e2d3c4b5a-switch",
            Duration::from_secs(5),
            serde_json::json!({"step": "activate"}),
        )
    }

    fn write_status(rec: &UnitRecord, result: &str, code: &str, status: &str) {
        let s = UnitStatus {
            service_result: result.into(),
            exit_code: code.into(),
            exit_status: status.into(),
        };
        std::fs::create_dir_all(rec.status.parent().unwrap()).unwrap();
        std::fs::write(&rec.status, serde_json::to_vec(&s).unwrap()).unwrap();
    }

    #[test]
    fn the_exit_status_comes_from_the_units_status_file() {
        let dir = tempfile::tempdir().unwrap();
        let rec = record(dir.path());
        let failed = || Err(OpError::failed(ErrorCode::CommandFailed, "unit failed"));
        // No status file: the runner's word.
        assert_eq!(exit_status(&rec, Ok(())), Ok(0));
        assert!(matches!(
            exit_status(&rec, failed()),
            Err(OpError::Failed { .. })
        ));
        assert_eq!(
            exit_status(&rec, Err(OpError::Detached)),
            Err(OpError::Detached)
        );
        write_status(&rec, "exit-code", "exited", "100");
        assert_eq!(exit_status(&rec, failed()), Ok(100));
        write_status(&rec, "signal", "killed", "KILL");
        assert!(matches!(
            exit_status(&rec, failed()),
            Err(OpError::Failed { .. })
        ));
    }
}
