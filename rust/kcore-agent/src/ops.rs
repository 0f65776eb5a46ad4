//! Long operations (a disk apply, a rebuild): each gets an id, an event log that can be
//! streamed as NDJSON from the start while it runs (and replayed after it ended), and a
//! result that can be fetched again later. Kept in memory for the agent's lifetime (the
//! newest [`KEEP`] operations); `docs/agent.md` says so.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::Stream;
use kcore_api::ApiError;
use kcore_api::inventory::{OperationEvent, OperationResult, OperationStatus};
use tokio::sync::watch;

/// How many finished operations are kept.
pub const KEEP: usize = 64;
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

#[derive(Debug)]
struct Entry {
    events: Mutex<Vec<OperationEvent>>,
    result: Mutex<OperationResult>,
    /// Bumped on every new event so streams wake up.
    version: watch::Sender<usize>,
}

/// All operations of this agent.
#[derive(Debug, Default)]
pub struct Operations {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    order: Mutex<VecDeque<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking writer cannot leave these in a state worse than "a few events missing".
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Operations {
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
        let (version, _) = watch::channel(0);
        let entry = Arc::new(Entry {
            events: Mutex::new(Vec::new()),
            result: Mutex::new(result),
            version,
        });
        lock(&self.entries).insert(id.clone(), entry.clone());
        let mut order = lock(&self.order);
        order.push_back(id.clone());
        while order.len() > KEEP {
            if let Some(old) = order.pop_front() {
                lock(&self.entries).remove(&old);
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
}
