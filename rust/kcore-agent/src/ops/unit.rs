//! Transient systemd units for long operations that must survive an agent restart (a disko
//! apply, each rebuild step; install later): one runner for all of them.
//!
//! - The unit's command gets the agent's `PATH` and `NIX_REMOTE` and the test-only extra
//!   environment (`--setenv`): a transient unit starts from PID 1's environment, and the
//!   programs expect the tools the agent's own unit has on its `PATH`.
//! - Before a unit starts, its record (`<operations>/units/<id>/unit.json`: unit name, log
//!   file, status file, deadline, and what the kind does after the unit succeeded) is saved
//!   atomically. The unit runs through kcore-nix's `SystemdRun` (`--wait --collect`, output
//!   appended to its log file), which the agent follows and streams as `log` output lines.
//! - The unit's real outcome outlives the unit and the agent: `ExecStopPost=` runs
//!   `kcore-agent unit-result STATUS-FILE`, which writes systemd's `$SERVICE_RESULT`,
//!   `$EXIT_CODE` and `$EXIT_STATUS` (systemd `man/systemd.exec.xml`, "Environment Variables
//!   in Spawned Processes": set for `ExecStop=` and `ExecStopPost=` processes;
//!   `man/systemd.service.xml`: `ExecStopPost=` runs also when the service failed). It is
//!   needed because `--collect` unloads a failed unit too (`man/systemd-run.xml`), so
//!   `systemctl show -p Result,ExecMainStatus` of an ended unit says nothing after it was
//!   collected (an unknown unit shows defaults such as `Result=success`).
//! - While the agent that started it runs, the unit's end is `systemd-run --wait`'s exit
//!   status. An agent that finds the operation `running` at start-up re-attaches
//!   ([`reattach_all`]): it follows the log from its first byte (so the stream replays),
//!   waits for the status file, and asks `systemctl is-active` whether the unit is still
//!   there; a unit that ended while the agent was down is reported from its status file. A
//!   unit that is gone without a status file (the helper could not run) is `INTERRUPTED`.
//! - Past its deadline (kept in the record, so a re-attached unit has the same one) the unit
//!   is stopped with `systemctl stop` and the operation times out. An agent that is stopping
//!   leaves its units running and the operation `running` ([`OpError::Detached`]).

use super::now_unix;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kcore_api::ErrorCode;
use kcore_api::inventory::{OperationKind, OperationStatus};
use kcore_nix::commands::{Systemctl, SystemdRun, UnitPresence};
use kcore_nix::programs::{SYSTEMCTL, SYSTEMD_RUN};
use kcore_nix::runner::{RunError, StreamLine};
use serde::{Deserialize, Serialize};

use super::{OpError, OpHandle};
use crate::server::AgentState;

/// How long `systemctl stop` may take: it waits for the unit to stop, which systemd bounds
/// by the unit's stop timeout (90 s by default) before it kills.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one `systemctl is-active` may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the unit's log file (and a re-attached unit's status file) is read.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
/// A re-attached unit is asked whether it is still there every this many reads.
const PRESENCE_EVERY: u32 = 5;

/// What the agent keeps about the unit an operation is running in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitRecord {
    pub unit: String,
    /// The unit's output (appended by systemd).
    pub log: PathBuf,
    /// Written by the unit's `ExecStopPost=` helper when it ends.
    pub status: PathBuf,
    /// Unix seconds after which the unit is stopped and the operation has timed out.
    pub deadline: u64,
    /// The timeout the deadline came from, for messages.
    pub timeout_seconds: u64,
    /// What the operation's kind does after the unit succeeded (read by that kind's module).
    pub resume: serde_json::Value,
}

fn units_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join("units").join(id)
}

impl UnitRecord {
    /// A record for `unit` of operation `id`, its files under the operations directory
    /// and `log_dir`, its deadline `timeout` from now.
    pub fn new(
        dir: &Path,
        log_dir: &Path,
        id: &str,
        unit: &str,
        timeout: Duration,
        resume: serde_json::Value,
    ) -> UnitRecord {
        UnitRecord {
            unit: unit.to_string(),
            log: log_dir.join(format!("{unit}.log")),
            status: units_dir(dir, id).join(format!("{unit}.status.json")),
            deadline: now_unix().saturating_add(timeout.as_secs()),
            timeout_seconds: timeout.as_secs(),
            resume,
        }
    }

    /// The saved record of operation `id`, if it ran in a unit.
    pub fn load(dir: &Path, id: &str) -> Option<UnitRecord> {
        let bytes = std::fs::read(units_dir(dir, id).join("unit.json")).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!(operation = %id, error = %e, "unreadable unit record; ignored");
                None
            }
        }
    }

    fn save(&self, dir: &Path, id: &str) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(&units_dir(dir, id).join("unit.json"), &json)
    }

    fn remaining(&self) -> Duration {
        Duration::from_secs(self.deadline.saturating_sub(now_unix()))
    }

    fn details(&self) -> serde_json::Value {
        serde_json::json!({ "unit": self.unit, "log": self.log })
    }
}

/// The per-operation directory for files a unit reads after an agent restart (a disko
/// fragment), created.
pub fn work_dir(state: &AgentState, id: &str) -> Result<PathBuf, OpError> {
    let dir = operations_dir(state)?;
    let work = units_dir(&dir, id);
    std::fs::create_dir_all(&work).map_err(|e| {
        OpError::failed(
            ErrorCode::WriteFailed,
            format!("cannot create {}: {e}", work.display()),
        )
    })?;
    Ok(work)
}

/// The operations directory, where unit records live.
pub fn operations_dir(state: &AgentState) -> Result<PathBuf, OpError> {
    state.ops.dir().map(Path::to_path_buf).ok_or_else(|| {
        OpError::failed(
            ErrorCode::WriteFailed,
            "this agent keeps operations in memory only; a transient unit needs the operations directory",
        )
    })
}

/// Delete what was kept about operation `id`'s units (when its result is pruned).
pub fn remove_records(dir: &Path, id: &str) {
    let work = units_dir(dir, id);
    if let Err(e) = std::fs::remove_dir_all(&work)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %work.display(), error = %e, "cannot delete an old unit record");
    }
}

/// The unit name for one step of one operation: `kcore-<kind>-<12 hex of the id>-<step>`.
pub fn unit_name(kind: OperationKind, op_id: &str, step: &str) -> String {
    let short: String = op_id
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(12)
        .collect();
    format!("kcore-{kind}-{short}-{step}")
}

/// What the `ExecStopPost=` helper writes: systemd's own words for how the unit ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitStatus {
    /// `$SERVICE_RESULT`: `success`, `exit-code`, `signal`, `timeout`, `core-dump`, ...
    pub service_result: String,
    /// `$EXIT_CODE`: `exited`, `killed`, `dumped` (empty when the process never ran).
    pub exit_code: String,
    /// `$EXIT_STATUS`: the exit status (`0`..`255`) or the signal name (`KILL`, `TERM`).
    pub exit_status: String,
}

impl UnitStatus {
    /// `kcore-agent unit-result FILE`: write this unit's status from the environment
    /// systemd gives `ExecStopPost=`, atomically.
    pub fn write_from_env(file: &Path) -> std::io::Result<()> {
        let var = |name| std::env::var(name).unwrap_or_default();
        let status = UnitStatus {
            service_result: var("SERVICE_RESULT"),
            exit_code: var("EXIT_CODE"),
            exit_status: var("EXIT_STATUS"),
        };
        let json = serde_json::to_vec_pretty(&status).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(file, &json)
    }

    pub fn read(file: &Path) -> Option<UnitStatus> {
        serde_json::from_slice(&std::fs::read(file).ok()?).ok()
    }

    /// A clean exit with status 0.
    pub fn succeeded(&self) -> bool {
        self.service_result == "success" && self.exit_code == "exited" && self.exit_status == "0"
    }

    /// Success only for a clean exit with status 0; anything else is the unit's failure.
    fn outcome(&self, record: &UnitRecord) -> Result<(), OpError> {
        if self.succeeded() {
            return Ok(());
        }
        let how = match self.exit_code.as_str() {
            "exited" => format!("exited with status {}", self.exit_status),
            "killed" | "dumped" => format!("was killed by signal {}", self.exit_status),
            _ => format!("ended with result {}", self.service_result),
        };
        let mut details = record.details();
        details["serviceResult"] = self.service_result.clone().into();
        details["exitCode"] = self.exit_code.clone().into();
        details["exitStatus"] = self.exit_status.clone().into();
        Err(OpError::Failed {
            status: OperationStatus::Failed,
            error: kcore_api::ApiError::new(
                ErrorCode::CommandFailed,
                format!("unit {} {how} (see {})", record.unit, record.log.display()),
            )
            .with_details(details),
        })
    }
}

/// Start `command` in the unit `record` names and follow it to its end.
pub async fn run(
    state: &AgentState,
    op: &OpHandle,
    record: &UnitRecord,
    description: &str,
    command: Vec<OsString>,
) -> Result<(), OpError> {
    let dir = operations_dir(state)?;
    let write_failed = |what: &Path, e: std::io::Error| {
        OpError::failed(
            ErrorCode::WriteFailed,
            format!("cannot write {}: {e}", what.display()),
        )
    };
    if let Some(logs) = record.log.parent() {
        std::fs::create_dir_all(logs).map_err(|e| write_failed(logs, e))?;
    }
    // Saved before the unit exists, so an agent that dies right after starting it still
    // knows where to look.
    record
        .save(&dir, &op.id)
        .map_err(|e| write_failed(&units_dir(&dir, &op.id), e))?;
    let systemd_run = state
        .tools
        .resolve(SYSTEMD_RUN)
        .map_err(|e| OpError::from(&e))?;
    let stop_post = match &state.options.unit_result_helper {
        Some(helper) => vec![
            helper.as_os_str().to_owned(),
            "unit-result".into(),
            record.status.as_os_str().to_owned(),
        ],
        None => Vec::new(),
    };
    let mut unit = SystemdRun::logged(&record.unit, description, &record.log, command);
    unit.stop_post = stop_post;
    unit.env = unit_env(&state.options.extra_env);
    let inv = unit
        .invocation(&systemd_run)
        .timeout(record.remaining().max(Duration::from_secs(1)));
    let run = inv.stream(|line| match line {
        StreamLine::Stdout(l) => op.output("stdout", l),
        StreamLine::Stderr(l) => op.output("stderr", l),
    });
    tokio::pin!(run);
    let mut follower = LogFollower::new(record.log.clone());
    let mut stopping = state.stopping.subscribe();
    let mut tick = tokio::time::interval(FOLLOW_INTERVAL);
    let ended = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = tick.tick() => follower.emit_new(op, false),
            _ = stopping.wait_for(|s| *s) => {
                follower.emit_new(op, false);
                return Err(OpError::Detached);
            }
        }
    };
    follower.emit_new(op, true);
    match ended {
        Ok(_) => Ok(()),
        // The runner killed systemd-run only; the unit belongs to systemd.
        Err(RunError::TimedOut { .. }) => Err(stop_after_timeout(state, op, record).await),
        Err(e) => {
            let mut err = OpError::from(&e);
            if let Some(error) = err.error_mut() {
                error.details = record.details();
            }
            Err(err)
        }
    }
}

/// The environment a unit's command gets: the agent's `PATH` and `NIX_REMOTE` (a transient
/// unit starts from PID 1's environment, not the agent's, and the programs, disko's scripts
/// above all, expect the tools the agent's own unit puts on its `PATH`), then `extra`.
fn unit_env(extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = ["PATH", "NIX_REMOTE"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .collect();
    env.extend(extra.iter().cloned());
    env
}

/// Follow a unit an earlier agent started, to its end.
pub async fn reattach(
    state: &AgentState,
    op: &OpHandle,
    record: &UnitRecord,
) -> Result<(), OpError> {
    op.step(format!("re-attach to unit {}", record.unit));
    let mut follower = LogFollower::new(record.log.clone());
    let mut stopping = state.stopping.subscribe();
    let mut reads = 0u32;
    loop {
        follower.emit_new(op, false);
        if let Some(status) = UnitStatus::read(&record.status) {
            follower.emit_new(op, true);
            return status.outcome(record);
        }
        if record.remaining().is_zero() {
            follower.emit_new(op, true);
            return Err(stop_after_timeout(state, op, record).await);
        }
        if reads % PRESENCE_EVERY == 0 && presence(state, &record.unit).await == UnitPresence::Ended
        {
            // The helper writes the status before the unit becomes inactive; read once more
            // in case it ended between the two looks.
            follower.emit_new(op, true);
            if let Some(status) = UnitStatus::read(&record.status) {
                return status.outcome(record);
            }
            return Err(OpError::Failed {
                status: OperationStatus::Failed,
                error: kcore_api::ApiError::new(
                    ErrorCode::Interrupted,
                    format!(
                        "unit {} ended while the agent was down and left no status file ({}); \
                         its outcome is unknown: see {}",
                        record.unit,
                        record.status.display(),
                        record.log.display()
                    ),
                )
                .with_details(record.details()),
            });
        }
        reads = reads.wrapping_add(1);
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            _ = stopping.wait_for(|s| *s) => return Err(OpError::Detached),
        }
    }
}

/// `systemctl is-active`; a systemctl that cannot run counts as "still there" (logged), so
/// the deadline, not a missing tool, decides.
async fn presence(state: &AgentState, unit: &str) -> UnitPresence {
    unit_presence(&state.tools, unit).await
}

/// [`presence`] with the tools only (VM guests, `crate::vm::guest`).
pub async fn unit_presence(tools: &crate::tools::Tools, unit: &str) -> UnitPresence {
    let systemctl = match tools.resolve(SYSTEMCTL) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask systemd about a unit");
            return UnitPresence::Running;
        }
    };
    // Non-zero for anything but `active`: the printed word is the answer.
    match Systemctl::IsActive(unit.to_string())
        .invocation(&systemctl)
        .timeout(QUERY_TIMEOUT)
        .output_unchecked()
        .await
    {
        Ok(out) => UnitPresence::parse(&out.stdout_lossy()),
        Err(e) => {
            tracing::warn!(unit, error = %e, "systemctl is-active failed");
            UnitPresence::Running
        }
    }
}

/// A long-lived unit (a VM's guest) the agent starts and leaves to systemd: unlike an
/// operation's unit it is not waited for (`--wait` off), so it runs on after the agent
/// stops and is found again by name. The same environment and `ExecStopPost=` helper as an
/// operation's unit: `status` receives how it ended.
#[derive(Debug, Clone)]
pub struct ServiceUnit<'a> {
    pub unit: &'a str,
    pub description: &'a str,
    /// The command's stdout and stderr, appended.
    pub log: &'a Path,
    pub status: &'a Path,
    pub command: Vec<OsString>,
}

/// Start `service`; returns once systemd has started its command.
pub async fn start_service(
    tools: &crate::tools::Tools,
    extra_env: &[(String, String)],
    unit_result_helper: Option<&Path>,
    service: ServiceUnit<'_>,
) -> Result<(), RunError> {
    let systemd_run = tools.resolve(SYSTEMD_RUN)?;
    let mut unit = SystemdRun::logged(
        service.unit,
        service.description,
        service.log,
        service.command,
    );
    unit.wait = false;
    unit.stop_post = match unit_result_helper {
        Some(helper) => vec![
            helper.as_os_str().to_owned(),
            "unit-result".into(),
            service.status.as_os_str().to_owned(),
        ],
        None => Vec::new(),
    };
    unit.env = unit_env(extra_env);
    unit.invocation(&systemd_run)
        .timeout(QUERY_TIMEOUT)
        .output()
        .await
        .map(|_| ())
}

/// `systemctl stop UNIT` (systemd's stop: SIGTERM, then SIGKILL after the unit's timeout).
pub async fn stop_unit(tools: &crate::tools::Tools, unit: &str) -> Result<(), RunError> {
    let systemctl = tools.resolve(SYSTEMCTL)?;
    Systemctl::Stop(unit.to_string())
        .invocation(&systemctl)
        .timeout(STOP_TIMEOUT)
        .output()
        .await
        .map(|_| ())
}

/// Stop a unit past its deadline; the operation has timed out, and the error says whether
/// the stop worked.
async fn stop_after_timeout(state: &AgentState, op: &OpHandle, record: &UnitRecord) -> OpError {
    let unit = &record.unit;
    op.step(format!("systemctl stop {unit}"));
    let mut details = record.details();
    let mut message = format!(
        "{unit} ran past its timeout of {} s",
        record.timeout_seconds
    );
    let stopped = match state.tools.resolve(SYSTEMCTL) {
        Ok(systemctl) => Systemctl::Stop(unit.clone())
            .invocation(&systemctl)
            .timeout(STOP_TIMEOUT)
            .output()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match stopped {
        Ok(()) => {
            message.push_str("; its unit was stopped");
            details["unitStopped"] = true.into();
        }
        Err(why) => {
            op.output("agent", format!("stopping {unit} failed: {why}"));
            message.push_str(&format!(
                "; stopping its unit failed, it may still be running: {why}"
            ));
            details["unitStopped"] = false.into();
            details["stopError"] = why.into();
        }
    }
    OpError::Failed {
        status: OperationStatus::TimedOut,
        error: kcore_api::ApiError::new(ErrorCode::TimedOut, message).with_details(details),
    }
}

/// Re-attach every operation the store loaded `running` with a unit record, each holding
/// its kind's lanes, finished by [`OpHandle::run`] like a fresh one.
pub fn reattach_all(state: &Arc<AgentState>) {
    let Some(dir) = state.ops.dir().map(Path::to_path_buf) else {
        return;
    };
    for id in state.ops.take_detached() {
        let Some(record) = UnitRecord::load(&dir, &id) else {
            continue;
        };
        let Some(kind) = state.ops.result(&id).map(|r| r.kind) else {
            continue;
        };
        let guard = match state.lanes.take(kind) {
            Ok(guard) => guard,
            Err(busy) => {
                // Two loaded operations of one lane cannot both have been running.
                tracing::warn!(operation = %id, error = %busy.error.message, "not re-attached");
                continue;
            }
        };
        let Some(op) = state.ops.handle(&id, guard) else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(op.run(move |op| async move {
            match kind {
                OperationKind::ApplyDisko => crate::disko_apply::resume(&state, &op, record).await,
                OperationKind::ApplyNix => crate::nix_apply::resume(&state, &op, record).await,
                OperationKind::RolloutPrepare
                | OperationKind::RolloutActivate
                | OperationKind::RolloutVerify => crate::rollout::resume(&state, &op, record).await,
                // The live ISO's install runs in the agent itself, never in a unit: there
                // is nothing to re-attach to, and the operator retries from the plan.
                OperationKind::Install => Err(crate::ops::OpError::failed(
                    ErrorCode::Interrupted,
                    "an install never runs in a transient unit; plan and run it again",
                )),
            }
        }));
    }
}

/// Reads a growing file from its first byte and emits complete lines as `log` output.
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

    fn record() -> UnitRecord {
        UnitRecord::new(
            Path::new("/var/lib/kcore/operations"),
            Path::new("/var/log/kcore-agent"),
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "kcore-apply-disko-0f1e2d3c4b5a-disko",
            Duration::from_secs(300),
            serde_json::json!({}),
        )
    }

    #[test]
    fn unit_names_and_files() {
        let id = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        assert_eq!(
            unit_name(OperationKind::ApplyNix, id, "switch"),
            "kcore-apply-nix-0f1e2d3c4b5a-switch"
        );
        let r = record();
        assert_eq!(
            r.log,
            Path::new("/var/log/kcore-agent/kcore-apply-disko-0f1e2d3c4b5a-disko.log")
        );
        assert_eq!(
            r.status,
            Path::new(
                "/var/lib/kcore/operations/units/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/kcore-apply-disko-0f1e2d3c4b5a-disko.status.json"
            )
        );
        assert!(r.remaining() <= Duration::from_secs(300));
    }

    #[test]
    fn a_status_is_success_only_for_a_clean_zero_exit() {
        let r = record();
        let status = |result: &str, code: &str, st: &str| UnitStatus {
            service_result: result.into(),
            exit_code: code.into(),
            exit_status: st.into(),
        };
        assert!(status("success", "exited", "0").outcome(&r).is_ok());
        let Err(OpError::Failed { status: s, error }) =
            status("exit-code", "exited", "1").outcome(&r)
        else {
            panic!("a non-zero exit fails")
        };
        assert_eq!(s, OperationStatus::Failed);
        assert_eq!(error.code, "COMMAND_FAILED");
        assert!(
            error.message.contains("exited with status 1"),
            "{}",
            error.message
        );
        assert_eq!(error.details["exitStatus"], "1");
        let Err(OpError::Failed { error, .. }) = status("signal", "killed", "KILL").outcome(&r)
        else {
            panic!("a signal fails")
        };
        assert!(
            error.message.contains("killed by signal KILL"),
            "{}",
            error.message
        );
    }

    #[test]
    fn units_get_the_agents_path_unless_extra_sets_it() {
        let env = unit_env(&[("A".into(), "1".into())]);
        assert_eq!(env.last(), Some(&("A".to_string(), "1".to_string())));
        if let Ok(path) = std::env::var("PATH") {
            assert!(env.contains(&("PATH".to_string(), path)));
        }
        let env = unit_env(&[("PATH".into(), "/x".into())]);
        let paths: Vec<_> = env.iter().filter(|(k, _)| k == "PATH").collect();
        assert_eq!(paths, [&("PATH".to_string(), "/x".to_string())]);
    }

    #[test]
    fn the_record_round_trips_and_is_removed_with_its_operation() {
        let dir = tempfile::tempdir().unwrap();
        let id = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let r = UnitRecord::new(
            dir.path(),
            dir.path(),
            id,
            "u",
            Duration::from_secs(5),
            serde_json::json!({"goal": "test"}),
        );
        r.save(dir.path(), id).unwrap();
        assert_eq!(UnitRecord::load(dir.path(), id), Some(r));
        remove_records(dir.path(), id);
        assert_eq!(UnitRecord::load(dir.path(), id), None);
    }
}
