//! Long operations (a disk apply, a rebuild): each gets an id, an event log that can be
//! streamed as NDJSON from the start while it runs (and replayed after it ended), and a
//! result that can be fetched again later. Results are also saved as `<id>.json` in the
//! operations directory (next to `disko.stateDir`, see [`dir_for`]) when an operation starts
//! and when it ends, so they survive an agent restart; an operation found still `running`
//! at start-up was cut short by the agent's death and is reported as failed with
//! [`ErrorCode::Interrupted`]. Events are kept in memory only: after a restart the stream of
//! an old operation is its `started` and `finished` events. The newest [`KEEP`] are kept.

use kcore_api::ErrorCode;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::Stream;
use kcore_api::ApiError;
use kcore_api::inventory::{OperationEvent, OperationResult, OperationStatus};
use tokio::sync::watch;

use crate::config::AgentConfig;

/// How many operations are kept (in memory and on disk).
pub const KEEP: usize = 100;
/// How many output lines a result keeps (`outputTail`).
pub const TAIL_LINES: usize = 40;
/// How many events one operation keeps for replay. A chatty rebuild can print far more;
/// past this, output lines only reach the result's tail (and the unit's log file), and
/// one `output` event says so.
pub const MAX_EVENTS: usize = 20_000;

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
}

impl Entry {
    fn new(result: OperationResult, events: Vec<OperationEvent>, file: Option<PathBuf>) -> Self {
        let (version, _) = watch::channel(events.len());
        Entry {
            events: Mutex::new(events),
            result: Mutex::new(result),
            version,
            file,
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
    /// Operations saved under `dir`, loaded from it: finished ones as they ended, ones
    /// that were still running as failed with [`ErrorCode::Interrupted`] (saved so). Beyond
    /// the newest [`KEEP`], files are deleted.
    pub fn persistent(dir: PathBuf) -> Operations {
        let mut loaded = load_dir(&dir);
        let excess = loaded.len().saturating_sub(KEEP);
        for (_, path) in loaded.drain(..excess) {
            remove(&path);
        }
        let mut entries = HashMap::new();
        let mut order = VecDeque::new();
        for (mut result, path) in loaded {
            let interrupted = result.status == OperationStatus::Running;
            if interrupted {
                result.status = OperationStatus::Failed;
                result.error = Some(ApiError::new(
                    ErrorCode::Interrupted,
                    format!(
                        "the agent stopped while this {} ran (noticed at its next start, {}); \
                         its outcome is unknown. A rebuild's transient unit may have finished on \
                         its own: see its log under the agent's log directory",
                        result.kind,
                        now_rfc3339()
                    ),
                ));
                tracing::warn!(operation = %result.operation_id, kind = %result.kind,
                    "operation was running when the agent stopped; reported as interrupted");
            }
            let events = vec![
                OperationEvent::Started {
                    operation_id: result.operation_id.clone(),
                    kind: result.kind.clone(),
                    effective_timeout_seconds: result.effective_timeout_seconds,
                },
                OperationEvent::Finished {
                    result: Box::new(result.clone()),
                },
            ];
            let id = result.operation_id.clone();
            let entry = Entry::new(result, events, Some(path));
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
        }
    }

    /// Register a new running operation and return its handle.
    pub fn start(&self, kind: &str, effective_timeout_seconds: Option<u64>) -> OpHandle {
        let id = uuid::Uuid::new_v4().to_string();
        let result = OperationResult {
            operation_id: id.clone(),
            kind: kind.to_string(),
            status: OperationStatus::Running,
            started_at: now_rfc3339(),
            finished_at: None,
            effective_timeout_seconds,
            error: None,
            generation: None,
            written: Vec::new(),
            output_tail: Vec::new(),
        };
        let file = self.dir.as_deref().and_then(|d| result_file(d, &id));
        let entry = Arc::new(Entry::new(result, Vec::new(), file));
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
            }
        }
        drop(order);
        let handle = OpHandle { id, entry };
        handle.emit(OperationEvent::Started {
            operation_id: handle.id.clone(),
            kind: kind.to_string(),
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

    /// End the operation; emits the final event.
    pub fn finish(&self, status: OperationStatus, error: Option<ApiError>) -> OperationResult {
        let result = {
            let mut result = lock(&self.entry.result);
            result.status = status;
            result.error = error;
            result.finished_at = Some(now_rfc3339());
            result.clone()
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn stream_replays_from_the_start_and_ends_after_finish() {
        let ops = Operations::default();
        let op = ops.start("apply-disko", Some(300));
        op.step("disko");
        op.output("stdout", "line 1");
        let stream = ops.stream(&op.id).unwrap();
        let op2 = op.clone();
        let writer = tokio::spawn(async move {
            op2.output("stderr", "line 2");
            op2.finish(OperationStatus::Succeeded, None);
        });
        let events: Vec<OperationEvent> = stream.collect().await;
        writer.await.unwrap();
        assert_eq!(events.len(), 5, "{events:?}");
        assert!(matches!(events[0], OperationEvent::Started { .. }));
        assert!(
            matches!(&events[4], OperationEvent::Finished { result } if result.status == OperationStatus::Succeeded)
        );
        let result = ops.result(&op.id).unwrap();
        assert_eq!(result.output_tail, vec!["line 1", "line 2"]);
        // Replay after the end.
        let again: Vec<OperationEvent> = ops.stream(&op.id).unwrap().collect().await;
        assert_eq!(again, events);
        assert!(ops.result("nope").is_none());
    }

    #[tokio::test]
    async fn replay_is_bounded_but_steps_and_the_result_are_kept() {
        let ops = Operations::default();
        let op = ops.start("apply-nix", None);
        for i in 0..MAX_EVENTS + 10 {
            op.output("log", format!("line {i}"));
        }
        op.step("after the flood");
        op.finish(OperationStatus::Succeeded, None);
        let events: Vec<OperationEvent> = ops.stream(&op.id).unwrap().collect().await;
        assert_eq!(
            events.len(),
            MAX_EVENTS + 3,
            "cap + notice + step + finished"
        );
        assert!(
            matches!(&events[MAX_EVENTS], OperationEvent::Output { stream, .. } if stream == "agent")
        );
        assert!(matches!(
            &events[MAX_EVENTS + 1],
            OperationEvent::Step { .. }
        ));
        let tail = ops.result(&op.id).unwrap().output_tail;
        assert_eq!(
            tail.last().map(String::as_str),
            Some(format!("line {}", MAX_EVENTS + 9).as_str())
        );
    }

    #[test]
    fn saved_results_survive_and_running_ones_come_back_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let ops = Operations::persistent(dir.path().to_path_buf());
        let done = ops.start("apply-disko", Some(300));
        done.output("stdout", "formatted");
        done.finish(OperationStatus::Succeeded, None);
        let cut = ops.start("apply-nix", None);
        cut.step("nixos-rebuild test");
        // The agent "dies" here: `cut` never finishes.
        drop(ops);

        let again = Operations::persistent(dir.path().to_path_buf());
        let result = again.result(&done.id).unwrap();
        assert_eq!(result.status, OperationStatus::Succeeded);
        assert_eq!(result.output_tail, vec!["formatted"]);
        assert_eq!(result.effective_timeout_seconds, Some(300));
        let result = again.result(&cut.id).unwrap();
        assert_eq!(result.status, OperationStatus::Failed);
        assert!(result.error.unwrap().is(ErrorCode::Interrupted));
        // Saved as interrupted: a third start does not decide it again.
        let saved: OperationResult = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("{}.json", cut.id))).unwrap(),
        )
        .unwrap();
        assert_eq!(saved.status, OperationStatus::Failed);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[tokio::test]
    async fn a_loaded_operation_streams_started_and_finished() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let ops = Operations::persistent(dir.path().to_path_buf());
            let op = ops.start("apply-nix", None);
            op.finish(
                OperationStatus::TimedOut,
                Some(ApiError::new(ErrorCode::TimedOut, "slow")),
            );
            op.id
        };
        let ops = Operations::persistent(dir.path().to_path_buf());
        let events: Vec<OperationEvent> = ops.stream(&id).unwrap().collect().await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(
            matches!(&events[1], OperationEvent::Finished { result } if result.status == OperationStatus::TimedOut)
        );
    }

    #[test]
    fn only_the_newest_are_kept_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let ops = Operations::persistent(dir.path().to_path_buf());
        let mut ids = Vec::new();
        for _ in 0..KEEP + 5 {
            let op = ops.start("apply-nix", None);
            op.finish(OperationStatus::Succeeded, None);
            ids.push(op.id);
        }
        let count = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(count, KEEP);
        assert!(ops.result(&ids[0]).is_none());
        assert!(!dir.path().join(format!("{}.json", ids[4])).exists());
        assert!(dir.path().join(format!("{}.json", ids[5])).exists());
        // Files beyond KEEP found at start (another agent's leftovers) are pruned too,
        // oldest first by start time.
        let extra = OperationResult {
            operation_id: "00000000-0000-0000-0000-000000000000".into(),
            kind: "apply-nix".into(),
            status: OperationStatus::Succeeded,
            started_at: "2000-01-01T00:00:00Z".into(),
            finished_at: None,
            effective_timeout_seconds: None,
            error: None,
            generation: None,
            written: Vec::new(),
            output_tail: Vec::new(),
        };
        let extra_file = dir.path().join(format!("{}.json", extra.operation_id));
        std::fs::write(&extra_file, serde_json::to_vec(&extra).unwrap()).unwrap();
        let again = Operations::persistent(dir.path().to_path_buf());
        assert!(!extra_file.exists());
        assert!(again.result(&extra.operation_id).is_none());
        assert!(again.result(&ids[KEEP + 4]).is_some());
    }

    #[test]
    fn the_directory_sits_beside_the_disko_state_dir() {
        let config = AgentConfig::parse(
            "nodeId: a\nmode: install\ndisko: { stateDir: /var/lib/kcore/disko }\n",
            Path::new("node-agent.yaml"),
        )
        .unwrap();
        assert_eq!(dir_for(&config), Path::new("/var/lib/kcore/operations"));
    }
}
