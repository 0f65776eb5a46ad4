//! Long operations (a disk apply, a rebuild): the one framework every long-running request
//! goes through.
//!
//! - Each operation has an [`OperationKind`], an id, an event log that can be streamed as
//!   NDJSON from the start while it runs (and replayed after it ended), and a result that
//!   can be fetched again later.
//! - A handler takes the operation's [`lanes`] (disk work, system activation; a busy lane is
//!   the kind's existing `409` code), registers it with [`Operations::start`] and hands the
//!   work to [`OpHandle::spawn`] (answered with the one `202` shape, `OperationStarted`) or
//!   [`OpHandle::run`]. The work returns `Result<Outcome, OpError>` and `run` finishes the
//!   operation from it, once (after colmena's `src/job.rs`): no handler calls `finish`.
//! - Work that must survive an agent restart runs in a transient systemd unit ([`unit`]).
//! - Each end is counted by kind and outcome for `/metrics` ([`Operations::counters`]).
//! - Results are saved as `<id>.json` in the operations directory (next to
//!   `disko.stateDir`, see [`dir_for`]) when an operation starts and when it ends. At start-up
//!   an operation found still `running` whose unit record exists is re-attached to its unit
//!   ([`unit::reattach_all`]): its log is followed from the start and its real end reported.
//!   One without a unit was cut short by the agent's death and is reported as failed with
//!   [`ErrorCode::Interrupted`]. Events are kept in memory only: after a restart the stream of
//!   an old operation is its `started` and `finished` events (a re-attached one replays its
//!   unit's log). The newest [`KEEP`] are kept.

use kcore_api::ErrorCode;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::Stream;
use kcore_api::ApiError;
use kcore_api::inventory::{
    OperationEvent, OperationKind, OperationResult, OperationStarted, OperationStatus,
};
use tokio::sync::watch;

use crate::config::AgentConfig;

pub mod lanes;
pub mod unit;

#[cfg(test)]
mod tests;

pub use lanes::{Lane, LaneGuard, Lanes};

use crate::metrics::OperationCounters;

/// How many operations are kept (in memory and on disk).
pub const KEEP: usize = 100;
/// How many output lines a result keeps (`outputTail`).
pub const TAIL_LINES: usize = 40;
/// How many events one operation keeps for replay. A chatty rebuild can print far more;
/// past this, output lines only reach the result's tail (and the unit's log file), and
/// one `output` event says so.
pub const MAX_EVENTS: usize = 20_000;

/// Seconds since the Unix epoch (deadlines saved in records that outlive the agent).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 "now".
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The operations directory for `config`: `operations/` beside `disko.stateDir`
/// (`/var/lib/kcore/operations` by default). Derived rather than configured so the NixOS
/// modules and the configuration contract stay as they are.
pub fn dir_for(config: &AgentConfig) -> PathBuf {
    let state = &config.disko.state_dir;
    match state.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.join("operations"),
        _ => state.join("operations"),
    }
}

#[derive(Debug)]
struct Entry {
    events: Mutex<Vec<OperationEvent>>,
    result: Mutex<OperationResult>,
    /// Bumped on every new event so streams wake up.
    version: watch::Sender<usize>,
    /// Where the result is saved; `None` keeps it in memory only.
    file: Option<PathBuf>,
    /// The lanes this operation holds while it runs; released when it finishes.
    guard: Mutex<Option<LaneGuard>>,
    /// Where its end is counted (`/metrics`), shared with every other operation.
    counters: OperationCounters,
}

impl Entry {
    fn new(
        result: OperationResult,
        events: Vec<OperationEvent>,
        file: Option<PathBuf>,
        counters: OperationCounters,
    ) -> Self {
        let (version, _) = watch::channel(events.len());
        Entry {
            events: Mutex::new(events),
            result: Mutex::new(result),
            version,
            file,
            guard: Mutex::new(None),
            counters,
        }
    }

    /// Save the result. A failure is logged, not returned: the operation itself (a disk
    /// apply, a rebuild) matters more than whether its record survives a restart.
    fn save(&self) {
        let Some(file) = &self.file else { return };
        let result = lock(&self.result).clone();
        let written = serde_json::to_vec_pretty(&result)
            .map_err(std::io::Error::other)
            .and_then(|json| crate::fsutil::write_atomic(file, &json));
        if let Err(e) = written {
            tracing::warn!(operation = %result.operation_id, file = %file.display(), error = %e,
                "cannot save the operation's result; it is lost if the agent restarts");
        }
    }
}

/// All operations of this agent.
#[derive(Debug, Default)]
pub struct Operations {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    order: Mutex<VecDeque<String>>,
    /// The operations directory; `None` keeps everything in memory.
    dir: Option<PathBuf>,
    /// Operations loaded `running` with a unit record: [`unit::reattach_all`] takes them.
    detached: Mutex<Vec<String>>,
    /// Operations that ended in this process, by kind and outcome (`/metrics`).
    counters: OperationCounters,
}

/// `<dir>/<id>.json`, for ids this agent made (uuids: no `/`, no `..`).
fn result_file(dir: &Path, id: &str) -> Option<PathBuf> {
    let safe = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    safe.then(|| dir.join(format!("{id}.json")))
}

/// Every saved result in `dir`, oldest first. Unreadable files are logged and skipped.
fn load_dir(dir: &Path) -> Vec<(OperationResult, PathBuf)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read saved operations");
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<OperationResult>(&b).map_err(|e| e.to_string()));
        match parsed {
            // Only a file under its own id's name is trusted to be that operation.
            Ok(result) if result_file(dir, &result.operation_id).as_ref() == Some(&path) => {
                found.push((result, path));
            }
            Ok(_) => {
                tracing::warn!(file = %path.display(), "saved operation under another id's name; skipped")
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "unreadable saved operation; skipped");
            }
        }
    }
    // RFC 3339 in UTC (as `now_rfc3339` writes) sorts by time as text.
    found.sort_by(|a, b| a.0.started_at.cmp(&b.0.started_at));
    found
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking writer cannot leave these in a state worse than "a few events missing".
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Operations {
    /// Operations saved under `dir`, loaded from it: finished ones as they ended; running
    /// ones with a unit record still `running`, for [`unit::reattach_all`]; running ones
    /// without as failed with [`ErrorCode::Interrupted`] (saved so). Beyond the newest
    /// [`KEEP`], files (and unit records) are deleted.
    pub fn persistent(dir: PathBuf) -> Operations {
        let mut loaded = load_dir(&dir);
        let excess = loaded.len().saturating_sub(KEEP);
        for (result, path) in loaded.drain(..excess) {
            remove(&path);
            unit::remove_records(&dir, &result.operation_id);
        }
        let mut entries = HashMap::new();
        let mut order = VecDeque::new();
        let mut detached = Vec::new();
        // Operations that ended before this process started are not counted: counters
        // start at zero with the process.
        let counters = OperationCounters::default();
        for (mut result, path) in loaded {
            let running = result.status == OperationStatus::Running;
            let has_unit = running && unit::UnitRecord::load(&dir, &result.operation_id).is_some();
            let interrupted = running && !has_unit;
            if has_unit {
                tracing::info!(operation = %result.operation_id, kind = %result.kind,
                    "operation was running in a unit when the agent stopped; re-attaching");
                detached.push(result.operation_id.clone());
            }
            if interrupted {
                result.status = OperationStatus::Failed;
                result.error = Some(ApiError::new(
                    ErrorCode::Interrupted,
                    format!(
                        "the agent stopped while this {} ran (noticed at its next start, {}); \
                         it did not run in a transient unit, so its outcome is unknown",
                        result.kind,
                        now_rfc3339()
                    ),
                ));
                tracing::warn!(operation = %result.operation_id, kind = %result.kind,
                    "operation was running when the agent stopped; reported as interrupted");
            }
            let mut events = vec![OperationEvent::Started {
                operation_id: result.operation_id.clone(),
                kind: result.kind,
                effective_timeout_seconds: result.effective_timeout_seconds,
            }];
            if !running || interrupted {
                events.push(OperationEvent::Finished {
                    result: Box::new(result.clone()),
                });
            }
            let id = result.operation_id.clone();
            let entry = Entry::new(result, events, Some(path), counters.clone());
            if interrupted {
                entry.save();
            }
            entries.insert(id.clone(), Arc::new(entry));
            order.push_back(id);
        }
        Operations {
            entries: Mutex::new(entries),
            order: Mutex::new(order),
            dir: Some(dir),
            detached: Mutex::new(detached),
            counters,
        }
    }

    /// Operations that ended in this process, by kind and outcome.
    pub fn counters(&self) -> &OperationCounters {
        &self.counters
    }

    /// The kind of every operation running now (one entry per operation).
    pub fn running(&self) -> Vec<OperationKind> {
        let entries: Vec<Arc<Entry>> = lock(&self.entries).values().cloned().collect();
        entries
            .iter()
            .filter_map(|entry| {
                let result = lock(&entry.result);
                (result.status == OperationStatus::Running).then_some(result.kind)
            })
            .collect()
    }

    /// The operations directory (`None`: in memory only).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The loaded operations still running in a unit, each once.
    pub fn take_detached(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.detached))
    }

    /// The running side of an operation loaded `running` (to re-attach it), holding `guard`.
    pub fn handle(&self, id: &str, guard: LaneGuard) -> Option<OpHandle> {
        let entry = lock(&self.entries).get(id).cloned()?;
        if lock(&entry.result).status != OperationStatus::Running {
            return None;
        }
        *lock(&entry.guard) = Some(guard);
        Some(OpHandle {
            id: id.to_string(),
            entry,
        })
    }

    /// Register a new running operation holding `guard` (its lanes) and return its handle.
    pub fn start(
        &self,
        kind: OperationKind,
        effective_timeout_seconds: Option<u64>,
        guard: LaneGuard,
    ) -> OpHandle {
        let id = uuid::Uuid::new_v4().to_string();
        let result = OperationResult {
            operation_id: id.clone(),
            kind,
            status: OperationStatus::Running,
            started_at: now_rfc3339(),
            finished_at: None,
            effective_timeout_seconds,
            error: None,
            generation: None,
            written: Vec::new(),
            output_tail: Vec::new(),
            install: None,
        };
        let file = self.dir.as_deref().and_then(|d| result_file(d, &id));
        let entry = Entry::new(result, Vec::new(), file, self.counters.clone());
        *lock(&entry.guard) = Some(guard);
        let entry = Arc::new(entry);
        // Saved while running too, so a restart can tell it was cut short.
        entry.save();
        lock(&self.entries).insert(id.clone(), entry.clone());
        let mut order = lock(&self.order);
        order.push_back(id.clone());
        while order.len() > KEEP {
            if let Some(old) = order.pop_front() {
                let gone = lock(&self.entries).remove(&old);
                if let Some(file) = gone.as_ref().and_then(|e| e.file.as_ref()) {
                    remove(file);
                }
                if let Some(dir) = &self.dir {
                    unit::remove_records(dir, &old);
                }
            }
        }
        drop(order);
        let handle = OpHandle { id, entry };
        handle.emit(OperationEvent::Started {
            operation_id: handle.id.clone(),
            kind,
            effective_timeout_seconds,
        });
        handle
    }

    /// The operation's current result (status `running` while it runs).
    pub fn result(&self, id: &str) -> Option<OperationResult> {
        let entry = lock(&self.entries).get(id).cloned()?;
        let result = lock(&entry.result).clone();
        Some(result)
    }

    /// Returns once operation `id` has finished (its lanes are released by then, as
    /// `OpHandle::finish` drops them first), at once for an unknown id. One that is detached (the agent
    /// stops while its unit runs on) never finishes here: callers bound the wait.
    pub async fn finished(&self, id: &str) {
        let Some(entry) = lock(&self.entries).get(id).cloned() else {
            return;
        };
        let mut rx = entry.version.subscribe();
        loop {
            if lock(&entry.result).status != OperationStatus::Running {
                return;
            }
            // The sender lives in `entry`, which we hold; the status changes before the
            // `finished` event bumps the version.
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Every event from the first, then new ones as they come, ending after `finished`.
    pub fn stream(&self, id: &str) -> Option<impl Stream<Item = OperationEvent> + Send + 'static> {
        let entry = lock(&self.entries).get(id).cloned()?;
        let rx = entry.version.subscribe();
        Some(futures::stream::unfold(
            (entry, rx, 0usize, false),
            |(entry, mut rx, next, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let event = lock(&entry.events).get(next).cloned();
                    if let Some(event) = event {
                        let finished = matches!(event, OperationEvent::Finished { .. });
                        return Some((event, (entry, rx, next + 1, finished)));
                    }
                    // The sender lives in `entry`, which we hold: `changed` only returns
                    // once a new event was pushed.
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            },
        ))
    }
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), error = %e, "cannot delete an old saved operation");
    }
}

/// The running side of one operation.
#[derive(Debug, Clone)]
pub struct OpHandle {
    pub id: String,
    entry: Arc<Entry>,
}

impl OpHandle {
    pub fn emit(&self, event: OperationEvent) {
        if let OperationEvent::Output { line, .. } = &event {
            let mut result = lock(&self.entry.result);
            result.output_tail.push(line.clone());
            let excess = result.output_tail.len().saturating_sub(TAIL_LINES);
            result.output_tail.drain(..excess);
        }
        let len = {
            let mut events = lock(&self.entry.events);
            let is_output = matches!(event, OperationEvent::Output { .. });
            if is_output && events.len() >= MAX_EVENTS {
                return;
            }
            events.push(event);
            if is_output && events.len() == MAX_EVENTS {
                events.push(OperationEvent::Output {
                    stream: "agent".into(),
                    line: format!(
                        "(more than {MAX_EVENTS} events: further output is not kept for replay; the result keeps the last {TAIL_LINES} lines)"
                    ),
                });
            }
            events.len()
        };
        self.entry.version.send_replace(len);
    }

    pub fn step(&self, name: impl Into<String>) {
        let name = name.into();
        tracing::info!(operation = %self.id, step = %name, "operation step");
        self.emit(OperationEvent::Step { name });
    }

    pub fn output(&self, stream: &str, line: impl Into<String>) {
        self.emit(OperationEvent::Output {
            stream: stream.to_string(),
            line: line.into(),
        });
    }

    /// Update the result while running (files written, generation).
    pub fn update(&self, f: impl FnOnce(&mut OperationResult)) {
        f(&mut lock(&self.entry.result));
    }

    /// The operation's kind.
    pub fn kind(&self) -> OperationKind {
        lock(&self.entry.result).kind
    }

    /// Run `work` to its end and finish the operation from what it returns: `Ok` succeeds
    /// (with the outcome's files and generation), `Err` fails or times out with its error.
    /// [`OpError::Detached`] (the agent is stopping while the work's unit runs on) leaves it
    /// `running` for the next agent to re-attach. The lanes are released either way.
    pub async fn run<F, Fut>(self, work: F) -> OperationResult
    where
        F: FnOnce(OpHandle) -> Fut,
        Fut: std::future::Future<Output = Result<Outcome, OpError>>,
    {
        let ended = work(self.clone()).await;
        let result = match ended {
            Ok(outcome) => {
                self.update(|r| {
                    r.written.extend(outcome.written);
                    if outcome.generation.is_some() {
                        r.generation = outcome.generation;
                    }
                });
                self.finish(OperationStatus::Succeeded, None)
            }
            Err(OpError::Failed { status, error }) => self.finish(status, Some(error)),
            Err(OpError::Detached) => {
                tracing::info!(operation = %self.id, "agent stopping; the operation's unit runs on");
                lock(&self.entry.result).clone()
            }
        };
        lock(&self.entry.guard).take();
        result
    }

    /// [`OpHandle::run`] in the background; returns the `202` answer.
    pub fn spawn<F, Fut>(self, work: F) -> OperationStarted
    where
        F: FnOnce(OpHandle) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Outcome, OpError>> + Send + 'static,
    {
        let started = {
            let result = lock(&self.entry.result);
            OperationStarted {
                operation_id: result.operation_id.clone(),
                kind: result.kind,
                effective_timeout_seconds: result.effective_timeout_seconds,
            }
        };
        tokio::spawn(self.run(work));
        started
    }

    /// End the operation; emits the final event. Only [`OpHandle::run`] calls it.
    fn finish(&self, status: OperationStatus, error: Option<ApiError>) -> OperationResult {
        // The lanes first: whoever sees the status change ([`Operations::finished`], the
        // assignment loop starting the activation after its prepare) can take them at once
        // instead of meeting a `409` and backing off.
        lock(&self.entry.guard).take();
        let result = {
            let mut result = lock(&self.entry.result);
            result.status = status;
            result.error = error;
            result.finished_at = Some(now_rfc3339());
            result.clone()
        };
        self.entry.counters.finished(result.kind, status);
        self.entry.save();
        match status {
            OperationStatus::Succeeded => {
                tracing::info!(operation = %self.id, kind = %result.kind, "operation succeeded");
            }
            _ => tracing::warn!(
                operation = %self.id,
                kind = %result.kind,
                status = ?status,
                error = ?result.error,
                "operation did not succeed"
            ),
        }
        self.emit(OperationEvent::Finished {
            result: Box::new(result.clone()),
        });
        result
    }
}

/// What a successful operation leaves behind, merged into its result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Files written (besides those already recorded while running).
    pub written: Vec<String>,
    /// The system generation after an activation.
    pub generation: Option<String>,
}

/// How an operation's work did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum OpError {
    /// It ended: `failed` or `timedOut`, with an error carrying a stable code.
    Failed {
        status: OperationStatus,
        error: ApiError,
    },
    /// The agent is stopping while the work's transient unit runs on: nothing is decided,
    /// the next agent re-attaches.
    Detached,
}

impl OpError {
    /// A failure with this code and message.
    pub fn failed(code: ErrorCode, message: impl Into<String>) -> OpError {
        OpError::Failed {
            status: OperationStatus::Failed,
            error: ApiError::new(code, message),
        }
    }

    /// The error, to amend its message or details (`None` for [`OpError::Detached`]).
    pub fn error_mut(&mut self) -> Option<&mut ApiError> {
        match self {
            OpError::Failed { error, .. } => Some(error),
            OpError::Detached => None,
        }
    }
}

impl From<&kcore_nix::RunError> for OpError {
    /// A runner error: `timedOut` for a timeout, `TOOL_UNAVAILABLE` for a program that
    /// cannot start, `COMMAND_FAILED` otherwise.
    fn from(err: &kcore_nix::RunError) -> OpError {
        use kcore_nix::RunError;
        let (status, code) = match err {
            RunError::TimedOut { .. } => (OperationStatus::TimedOut, ErrorCode::TimedOut),
            RunError::NotFound { .. } | RunError::Spawn { .. } => {
                (OperationStatus::Failed, ErrorCode::ToolUnavailable)
            }
            _ => (OperationStatus::Failed, ErrorCode::CommandFailed),
        };
        OpError::Failed {
            status,
            error: ApiError::new(code, err.to_string()),
        }
    }
}
