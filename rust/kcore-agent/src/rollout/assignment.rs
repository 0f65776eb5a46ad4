//! The agent's assignment loop (issue 12): long-poll `GET /v1/nodes/{id}/assignment`
//! through the registration loop's controller client (mTLS, failover, TLS swapped after a
//! renewal), run the step it names with the same [`super::start_prepare`] and
//! [`super::start_activate`] the admin routes use, and report every phase of the step's
//! [`StepReport`] with `POST /v1/nodes/{id}/assignment/report`.
//!
//! Fencing and restarts: the step in hand is saved (atomically) in
//! `<operations>/rollout/assignment.json` with its rollout, epoch, seq and the operation
//! ids it started, before and after each start. An agent that starts again finds it and
//! follows the operations it names (an activation re-attached to its unit keeps its id)
//! instead of starting them again; a step of that rollout with an older epoch, or the same
//! seq that already ended, is never run again. A report answered `409` (the epoch is no
//! longer the owner's) or `404` drops the step: nothing new starts for it, an activation
//! already running ends (or reverts) on its own, as docs/rollouts.md says.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use kcore_api::inventory::OperationStatus;
use kcore_api::rollout::{
    ActivateRequest, AssignedStep, Assignment, AssignmentReport, StepCode, StepPhase, StepReport,
};
use kcore_net::{Client, ClientError};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::state;
use crate::server::AgentState;

/// How often a running step's report is read for a new phase when no save woke the loop
/// first ([`state::reports_saved`] wakes it at every save; this catches what no save
/// announces: an operation that ended without a final report, a trial boot's record).
const FOLLOW_EVERY: Duration = Duration::from_millis(200);
/// How long the loop waits for a prepare whose final report it has to end (and release the
/// system lane) before it starts the activation anyway ([`Loop::start_with_retry`] then
/// waits out a lane still held).
const PREPARE_END_WAIT: Duration = Duration::from_secs(5);
/// A report is tried this many times before the loop gives up on that phase (the final
/// one is kept and sent again when the controller names the step once more).
const REPORT_ATTEMPTS: u32 = 6;
const REPORT_BACKOFF_MIN: Duration = Duration::from_millis(500);
const REPORT_BACKOFF_MAX: Duration = Duration::from_secs(8);
/// After a failed poll: wait this long, doubling up to [`POLL_BACKOFF_MAX`].
const POLL_BACKOFF_MIN: Duration = Duration::from_secs(1);
const POLL_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Past the step's own bounds (prepare timeout, health timeout), how long the loop waits
/// for a final report before it reports the step failed itself.
const FOLLOW_SLACK: Duration = Duration::from_secs(120);

/// The step in hand, saved as `<operations>/rollout/assignment.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub rollout: String,
    pub epoch: u64,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_op: Option<String>,
    /// Set right before the activation is started: an agent that finds it without
    /// `activate_op` stopped in between and does not start a second one.
    #[serde(default)]
    pub activation_started: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate_op: Option<String>,
    /// The step's last report, once it is final (kept to send again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_report: Option<StepReport>,
    /// The controller recorded the final report, or refused the step (409/404).
    #[serde(default)]
    pub closed: bool,
}

fn progress_file(ops_dir: &Path) -> PathBuf {
    state::dir(ops_dir).join("assignment.json")
}

/// The saved step, if any (an unreadable file is logged and treated as none).
pub fn load_progress(ops_dir: &Path) -> Option<Progress> {
    let file = progress_file(ops_dir);
    let bytes = std::fs::read(&file).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "unreadable assignment progress; ignored");
            None
        }
    }
}

fn save_progress(ops_dir: &Path, progress: &Progress) {
    let file = progress_file(ops_dir);
    let written = std::fs::create_dir_all(state::dir(ops_dir)).and_then(|()| {
        let json = serde_json::to_vec_pretty(progress).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(&file, &json)
    });
    if let Err(e) = written {
        tracing::warn!(file = %file.display(), error = %e,
            "cannot save the assignment progress; a restart may not find this step");
    }
}

/// The activation record names operation `id` in a trial or revert boot.
fn trial_boot_pending(ops_dir: &Path, id: &str) -> bool {
    use super::state::{ActivationRecord, RecordPhase};
    ActivationRecord::load(ops_dir)
        .ok()
        .flatten()
        .is_some_and(|r| {
            r.operation_id == id
                && matches!(r.phase, RecordPhase::TrialBoot | RecordPhase::RevertBoot)
        })
}

/// How a report ended.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    Recorded,
    /// `409` (stale epoch) or `404` (not this node's step): drop the step.
    Refused,
    /// Every attempt failed to reach a controller.
    Undelivered,
}

/// Why following a step stopped early.
enum Halt {
    Stopping,
    Refused,
}

/// The newest controller client the registration loop made: renewals within one session
/// swap TLS inside the same client, and a session it rebuilds (credentials reloaded from
/// disk) sends a new one, which [`NewestClient::get`] takes. Shared by the assignment
/// poll and the VM reporter, so neither keeps a client the registration loop replaced.
pub struct NewestClient {
    client: Client,
    clients: watch::Receiver<Option<Client>>,
}

impl NewestClient {
    pub fn new(client: Client, clients: watch::Receiver<Option<Client>>) -> Self {
        Self { client, clients }
    }

    pub fn get(&mut self) -> Client {
        if let Some(newer) = self.clients.borrow_and_update().clone() {
            self.client = newer;
        }
        self.client.clone()
    }
}

struct Loop {
    state: Arc<AgentState>,
    ops_dir: PathBuf,
    client: NewestClient,
    stop: watch::Receiver<bool>,
    /// The VMs of each answer, for [`crate::vm::reporter`].
    vms: watch::Sender<Option<Vec<kcore_api::vm::NodeVm>>>,
}

/// Runs until the agent stops: waits for the registration loop's client, then long-polls
/// with `wait` (keep it under the client's per-attempt timeout) and runs each step.
pub async fn run(
    state: Arc<AgentState>,
    mut clients: watch::Receiver<Option<Client>>,
    wait: Duration,
) {
    let mut stop = state.stopping.subscribe();
    let Some(ops_dir) = state.ops.dir().map(PathBuf::from) else {
        tracing::warn!("operations kept in memory only: not polling for rollout steps");
        return;
    };
    let client = tokio::select! {
        c = clients.wait_for(Option::is_some) => match c {
            Ok(c) => c.clone().unwrap_or_else(|| unreachable!("waited for Some")),
            Err(_) => return,
        },
        _ = stop.wait_for(|s| *s) => return,
    };
    let vms = crate::vm::reporter::spawn(
        state.clone(),
        NewestClient::new(client.clone(), clients.clone()),
    );
    let mut lp = Loop {
        state,
        ops_dir,
        client: NewestClient::new(client, clients),
        stop,
        vms,
    };
    lp.poll_forever(wait.max(Duration::from_secs(1))).await;
}

impl Loop {
    /// The newest client the registration loop made ([`NewestClient`]).
    fn client(&mut self) -> Client {
        self.client.get()
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps `d`; false when the agent stops meanwhile.
    async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            _ = self.stop.wait_for(|s| *s) => false,
        }
    }

    async fn poll_forever(&mut self, wait: Duration) {
        let node = self.state.config.node_id.clone();
        let mut known = String::new();
        let mut backoff = Doubling::new(POLL_BACKOFF_MIN, POLL_BACKOFF_MAX);
        while !self.stopping() {
            let path = format!(
                "/v1/nodes/{node}/assignment?wait={}&known={}",
                wait.as_secs(),
                utf8_percent_encode(&known, NON_ALPHANUMERIC)
            );
            let client = self.client();
            let answer = tokio::select! {
                a = client.get_json::<Assignment>(&path) => a,
                _ = self.stop.wait_for(|s| *s) => return,
            };
            match answer {
                Ok(a) => {
                    backoff.reset();
                    known = a.token;
                    if !a.vms.is_empty() {
                        self.vms.send_replace(Some(a.vms));
                    }
                    if let Some(step) = a.step
                        && self.run_step(step).await.is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let wait = backoff.wait();
                    tracing::warn!(node = %node, error = %e, retry_in = ?wait, "assignment poll failed");
                    if !self.sleep(wait).await {
                        return;
                    }
                }
            }
        }
    }

    /// One assigned step: new, resumed after a restart, or already ended (then only its
    /// final report is sent again). `Err` when the agent is stopping.
    async fn run_step(&mut self, step: AssignedStep) -> Result<(), ()> {
        let Some(mut progress) = decide(load_progress(&self.ops_dir), &step) else {
            tracing::info!(rollout = %step.rollout, epoch = step.epoch, seq = step.seq,
                "assignment older than the step in hand, or that step already ended; ignored");
            return Ok(());
        };
        save_progress(&self.ops_dir, &progress);
        match self.drive(&step, &mut progress).await {
            Ok(()) => {}
            Err(Halt::Refused) => {
                tracing::warn!(rollout = %step.rollout, epoch = step.epoch,
                    "the controller refused this step's report (stale epoch or not assigned); dropped");
                progress.closed = true;
            }
            Err(Halt::Stopping) => return Err(()),
        }
        save_progress(&self.ops_dir, &progress);
        Ok(())
    }

    async fn drive(&mut self, step: &AssignedStep, p: &mut Progress) -> Result<(), Halt> {
        if let Some(report) = p.final_report.clone() {
            return self.close(step, p, report).await;
        }
        if step.prepare_only && !p.activation_started {
            return self.prepare_ahead(step, p).await;
        }
        if p.activate_op.is_none() && p.activation_started {
            p.activate_op = super::state::ActivationRecord::load(&self.ops_dir)
                .ok()
                .flatten()
                .map(|r| r.operation_id);
        }
        if p.activate_op.is_none() {
            let prepared = match &step.store_path {
                // A rollback step: the recorded previous generation is on the node already
                // (its profile link keeps it), so there is nothing to build.
                Some(path) => {
                    let mut report = state::new_report("", StepPhase::Prepared);
                    report.store_path = Some(path.clone());
                    report
                }
                None => {
                    let prepared = self.prepare(step, p).await?;
                    // The final report is saved before the operation ends: without this
                    // wait the activation would meet the prepare's system lane (a `409`
                    // and a 0.5 s back-off).
                    if let Some(id) = p.prepare_op.clone() {
                        let started = tokio::time::Instant::now();
                        tokio::select! {
                            _ = tokio::time::timeout(PREPARE_END_WAIT, self.state.ops.finished(&id)) => {}
                            _ = self.stop.wait_for(|s| *s) => return Err(Halt::Stopping),
                        }
                        tracing::debug!(operation = %id, waited_ms = started.elapsed().as_millis() as u64,
                            "prepare ended; starting the activation");
                    }
                    prepared
                }
            };
            if prepared.phase != StepPhase::Prepared {
                return self.close(step, p, prepared).await;
            }
            if p.activation_started {
                let mut report = prepared;
                report.phase = StepPhase::Failed;
                report.reason = Some(
                    "the agent stopped while starting the activation; it was not started again"
                        .into(),
                );
                report.code = Some(StepCode::ActivationFailed);
                return self.close(step, p, report).await;
            }
            let store_path = prepared.store_path.clone().unwrap_or_default();
            p.activation_started = true;
            save_progress(&self.ops_dir, p);
            let req = ActivateRequest {
                store_path,
                mode: step.mode,
                health_timeout_seconds: Some(step.health_timeout_seconds),
            };
            match self
                .start_with_retry(|s| super::start_activate(s, req.clone()))
                .await?
            {
                Ok(id) => {
                    p.activate_op = Some(id);
                    save_progress(&self.ops_dir, p);
                }
                Err(reason) => {
                    let mut report = prepared;
                    report.phase = StepPhase::Failed;
                    report.reason = Some(reason);
                    report.code = Some(StepCode::ActivationFailed);
                    return self.close(step, p, report).await;
                }
            }
        }
        let id = p.activate_op.clone().unwrap_or_default();
        let bound = Duration::from_secs(step.health_timeout_seconds) * 2 + FOLLOW_SLACK;
        let report = self.follow(step, &id, bound).await?;
        self.close(step, p, report).await
    }

    /// A `prepareOnly` step (docs/rollouts.md, "Preparing ahead"): the prepare runs, and
    /// `prepared` is reported, but the step stays open (`closed` false): the same step
    /// comes again without `prepareOnly` when the node's turn comes, and [`Loop::drive`]
    /// then follows the saved prepare, over already, to the activation. A prepare that
    /// failed is the step's final report.
    ///
    /// A refused report (`409`, `404`) does not close it either, unlike a whole step's:
    /// nothing but a build ran, and a `404` here may only mean the controller answering
    /// has not replicated the `prepare-ahead` record yet; closed, the step would be
    /// ignored when it is assigned under the same epoch, and the rollout would wait for
    /// this node for ever. An undelivered `prepared` is not needed either: the engine waits
    /// for it only to prepare the wave after, and the assignment comes regardless.
    async fn prepare_ahead(&mut self, step: &AssignedStep, p: &mut Progress) -> Result<(), Halt> {
        let outcome = match self.prepare(step, p).await {
            Ok(prepared) if prepared.phase != StepPhase::Prepared => {
                self.close(step, p, prepared).await
            }
            Ok(prepared) => self.report(step, &prepared).await.map(|_| ()),
            Err(halt) => Err(halt),
        };
        match outcome {
            Err(Halt::Refused) => {
                tracing::info!(rollout = %step.rollout, epoch = step.epoch,
                    "a report of this prepare-ahead was refused; the step stays open for its assignment");
                Ok(())
            }
            other => other,
        }
    }

    /// The prepare's final report, starting it unless the saved progress names one.
    async fn prepare(&mut self, step: &AssignedStep, p: &mut Progress) -> Result<StepReport, Halt> {
        let id = match p.prepare_op.clone() {
            Some(id) => id,
            None => match self
                .start_with_retry(|s| super::start_prepare(s, step.prepare.clone()))
                .await?
            {
                Ok(id) => {
                    p.prepare_op = Some(id.clone());
                    save_progress(&self.ops_dir, p);
                    id
                }
                Err(reason) => {
                    let mut report = state::new_report("", StepPhase::Failed);
                    report.reason = Some(reason);
                    report.code = Some(StepCode::PrepareFailed);
                    return Ok(report);
                }
            },
        };
        self.follow(step, &id, super::PREPARE_TIMEOUT + FOLLOW_SLACK)
            .await
    }

    /// Starts an operation; a busy system lane (another step or rebuild) is waited out
    /// for a bounded number of tries. `Ok(Err(reason))`: not started.
    async fn start_with_retry(
        &mut self,
        start: impl Fn(
            Arc<AgentState>,
        ) -> Result<kcore_api::inventory::OperationStarted, kcore_net::ApiFailure>,
    ) -> Result<Result<String, String>, Halt> {
        let mut backoff = Doubling::new(REPORT_BACKOFF_MIN, REPORT_BACKOFF_MAX);
        for attempt in 1..=REPORT_ATTEMPTS {
            match start(self.state.clone()) {
                Ok(started) => return Ok(Ok(started.operation_id)),
                Err(f) if f.status == StatusCode::CONFLICT && attempt < REPORT_ATTEMPTS => {
                    tracing::info!(error = %f.error.message, "system lane busy; trying again");
                    if !self.sleep(backoff.wait()).await {
                        return Err(Halt::Stopping);
                    }
                }
                Err(f) => return Ok(Err(f.error.message)),
            }
        }
        Ok(Err("the system lane stayed busy".into()))
    }

    /// Reports each new phase of operation `id`'s step report until it is final (or the
    /// operation ended without making it final, or `bound` passed).
    async fn follow(
        &mut self,
        step: &AssignedStep,
        id: &str,
        bound: Duration,
    ) -> Result<StepReport, Halt> {
        let started = tokio::time::Instant::now();
        let deadline = started + bound;
        let mut last: Option<StepPhase> = None;
        // Subscribed before the first read, so no save between a read and the wait is lost.
        let mut saved = state::reports_saved();
        loop {
            let ended = self
                .state
                .ops
                .result(id)
                .is_none_or(|r| r.status != OperationStatus::Running);
            // Read after the status: an operation that ended has saved its last report.
            let report = state::load_report(&self.ops_dir, id);
            if let Some(report) = &report {
                if report.phase.is_final() || last != Some(report.phase) {
                    // Where a step's time goes on the node (docs/rollouts.md, "Benchmark").
                    tracing::debug!(operation = %id, phase = ?report.phase,
                        since_follow_ms = started.elapsed().as_millis() as u64, "step phase seen");
                }
                if report.phase.is_final() {
                    return Ok(report.clone());
                }
                if last != Some(report.phase) {
                    last = Some(report.phase);
                    let sent = tokio::time::Instant::now();
                    if self.report(step, report).await? == Delivery::Refused {
                        return Err(Halt::Refused);
                    }
                    tracing::debug!(operation = %id, phase = ?report.phase,
                        report_ms = sent.elapsed().as_millis() as u64, "step phase reported");
                }
            }
            // A trial boot outlives the activation operation: until its record is gone the
            // step goes on (rebooting, then the post-boot `rollout-verify` writing into this
            // same report), whatever phase the report shows meanwhile.
            let waiting_for_boot = report
                .as_ref()
                .is_some_and(|r| r.phase == StepPhase::Rebooting)
                || trial_boot_pending(&self.ops_dir, id);
            if (ended && !waiting_for_boot) || tokio::time::Instant::now() > deadline {
                let mut failed = report.unwrap_or_else(|| state::new_report(id, StepPhase::Failed));
                failed.reason = Some(format!(
                    "operation {id} ended (or ran past {bound:?}) with the step {}",
                    last.map_or("never reported".into(), |p| format!("{p:?}").to_lowercase())
                ));
                failed.phase = StepPhase::Failed;
                failed.code = failed.code.or(Some(StepCode::StepFailed));
                return Ok(failed);
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_EVERY) => {}
                // Closed only if the sender were dropped (it is a static): then the sleep.
                Ok(()) = saved.changed() => {}
                _ = self.stop.wait_for(|s| *s) => return Err(Halt::Stopping),
            }
        }
    }

    /// Saves and sends the final report.
    async fn close(
        &mut self,
        step: &AssignedStep,
        p: &mut Progress,
        report: StepReport,
    ) -> Result<(), Halt> {
        p.final_report = Some(report.clone());
        save_progress(&self.ops_dir, p);
        match self.report(step, &report).await? {
            Delivery::Recorded => {
                p.closed = true;
                Ok(())
            }
            Delivery::Refused => Err(Halt::Refused),
            // Kept: the controller names the step again until it has the final report.
            Delivery::Undelivered => Ok(()),
        }
    }

    async fn report(&mut self, step: &AssignedStep, report: &StepReport) -> Result<Delivery, Halt> {
        let body = AssignmentReport {
            rollout: step.rollout.clone(),
            epoch: step.epoch,
            seq: step.seq,
            report: report.clone(),
        };
        let path = format!("/v1/nodes/{}/assignment/report", self.state.config.node_id);
        let mut backoff = Doubling::new(REPORT_BACKOFF_MIN, REPORT_BACKOFF_MAX);
        for attempt in 1..=REPORT_ATTEMPTS {
            match self
                .client()
                .post_json::<_, serde_json::Value>(&path, &body)
                .await
            {
                Ok(_) => return Ok(Delivery::Recorded),
                Err(ClientError::Api { status, .. })
                    if status == StatusCode::CONFLICT || status == StatusCode::NOT_FOUND =>
                {
                    return Ok(Delivery::Refused);
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, phase = ?report.phase, "step report failed");
                    if attempt < REPORT_ATTEMPTS && !self.sleep(backoff.wait()).await {
                        return Err(Halt::Stopping);
                    }
                }
            }
        }
        Ok(Delivery::Undelivered)
    }
}

/// What to do with `step` given the saved progress: `None` ignores it (an older epoch or
/// seq of the saved rollout, or the same step already closed under this epoch); otherwise
/// the progress to carry on with: the saved one for the same seq (under the step's epoch,
/// never started afresh), a new one for anything else.
pub fn decide(saved: Option<Progress>, step: &AssignedStep) -> Option<Progress> {
    match saved.filter(|p| p.rollout == step.rollout) {
        Some(p) if step.epoch < p.epoch || step.seq < p.seq => None,
        Some(p) if step.seq == p.seq && p.closed && p.epoch == step.epoch => None,
        Some(mut p) if step.seq == p.seq => {
            p.epoch = step.epoch;
            p.closed = false;
            Some(p)
        }
        _ => Some(Progress {
            rollout: step.rollout.clone(),
            epoch: step.epoch,
            seq: step.seq,
            prepare_op: None,
            activation_started: false,
            activate_op: None,
            final_report: None,
            closed: false,
        }),
    }
}

/// Waits that double from `min` up to `max`: one per failed try (also the VM reports').
pub(crate) struct Doubling {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Doubling {
    pub(crate) fn new(min: Duration, max: Duration) -> Doubling {
        Doubling {
            next: min,
            min,
            max,
        }
    }

    /// The wait before the next try; the one after it is twice as long, up to `max`.
    pub(crate) fn wait(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcore_api::rollout::{ActivationMode, PrepareRequest};

    fn step(rollout: &str, epoch: u64, seq: u64) -> AssignedStep {
        AssignedStep {
            rollout: rollout.into(),
            epoch,
            seq,
            prepare: PrepareRequest {
                flake_ref: "git+file:///fleet".into(),
                flake_rev: "0".repeat(40),
                host: None,
            },
            mode: ActivationMode::Auto,
            health_timeout_seconds: 30,
            store_path: None,
            prepare_only: false,
        }
    }

    fn saved(epoch: u64, seq: u64, closed: bool) -> Progress {
        let mut p = decide(None, &step("u1", epoch, seq)).unwrap();
        p.activate_op = Some("op-1".into());
        p.closed = closed;
        p
    }

    #[test]
    fn an_older_epoch_or_seq_of_the_saved_rollout_is_ignored() {
        assert_eq!(decide(Some(saved(2, 1, false)), &step("u1", 1, 1)), None);
        assert_eq!(decide(Some(saved(2, 2, true)), &step("u1", 2, 1)), None);
    }

    #[test]
    fn the_same_step_closed_under_its_epoch_is_not_run_again() {
        assert_eq!(decide(Some(saved(1, 1, true)), &step("u1", 1, 1)), None);
    }

    #[test]
    fn the_same_step_under_a_newer_epoch_carries_on_with_its_operations() {
        let p = decide(Some(saved(1, 1, true)), &step("u1", 3, 1)).unwrap();
        assert_eq!((p.epoch, p.closed), (3, false));
        assert_eq!(p.activate_op.as_deref(), Some("op-1"), "not started afresh");
        let p = decide(Some(saved(1, 1, false)), &step("u1", 1, 1)).unwrap();
        assert_eq!(
            p.activate_op.as_deref(),
            Some("op-1"),
            "resumed after a restart"
        );
    }

    #[test]
    fn a_new_seq_or_another_rollout_starts_afresh() {
        let p = decide(Some(saved(1, 1, true)), &step("u1", 1, 2)).unwrap();
        assert_eq!((p.seq, p.activate_op), (2, None));
        let p = decide(Some(saved(5, 1, false)), &step("u2", 1, 1)).unwrap();
        assert_eq!(
            (p.rollout.as_str(), p.epoch, p.activate_op),
            ("u2", 1, None)
        );
    }

    /// The VM reporter and the poll take their client through this: after the
    /// registration loop sent a new one, `get` answers it (not the first).
    #[test]
    fn newest_client_follows_the_registration_loops_latest() {
        let client = |url: &str| {
            Client::new(
                vec![url.to_string()],
                kcore_pki::client_config_insecure().unwrap(),
                kcore_net::ClientOptions::default(),
            )
            .unwrap()
        };
        let first = client("https://127.0.0.1:1");
        let (tx, rx) = watch::channel(Some(first.clone()));
        let mut newest = NewestClient::new(first, rx);
        assert_eq!(newest.get().base_urls(), ["https://127.0.0.1:1"]);
        tx.send_replace(Some(client("https://127.0.0.1:2")));
        assert_eq!(newest.get().base_urls(), ["https://127.0.0.1:2"]);
        // A `None` (no session at the moment) keeps the last one.
        tx.send_replace(None);
        assert_eq!(newest.get().base_urls(), ["https://127.0.0.1:2"]);
    }
}
