//! The assignment loop's side of the VMs: each answer that carries `vms` hands the list
//! over a watch channel (the newest list wins; the loop never waits for a reconcile), a
//! task reconciles it ([`super::reconcile`]), and every change of the reports, progress
//! included, is posted to `POST /v1/nodes/{id}/vms/report` by a second task with the
//! loop's doubling backoff; a newer report replaces one still being retried. The long-poll
//! answers at least every `wait` seconds, so the VMs are looked at again that often (a
//! guest that powered off is noticed, a node that was down catches up at once).

use std::sync::Arc;
use std::time::Duration;

use kcore_api::vm::{NodeVm, VmReports};
use tokio::sync::watch;

use super::VmHost;
use crate::rollout::assignment::{Doubling, NewestClient};
use crate::server::AgentState;

const REPORT_ATTEMPTS: u32 = 6;
const REPORT_BACKOFF_MIN: Duration = Duration::from_millis(500);
const REPORT_BACKOFF_MAX: Duration = Duration::from_secs(8);

/// Start the reconcile and report tasks; send desired lists into the returned channel.
pub fn spawn(state: Arc<AgentState>, client: NewestClient) -> watch::Sender<Option<Vec<NodeVm>>> {
    let (desired_tx, mut desired_rx) = watch::channel::<Option<Vec<NodeVm>>>(None);
    let (reports_tx, reports_rx) = watch::channel::<Option<VmReports>>(None);
    let host = VmHost::from_state(&state);
    let mut stop = state.stopping.subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = desired_rx.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            let Some(desired) = desired_rx.borrow_and_update().clone() else {
                continue;
            };
            let sink = |r: &VmReports| {
                reports_tx.send_replace(Some(r.clone()));
            };
            super::reconcile(&host, &desired, &sink).await;
        }
    });
    let node = state.config.node_id.clone();
    tokio::spawn(post_reports(state, client, node, reports_rx));
    desired_tx
}

async fn post_reports(
    state: Arc<AgentState>,
    mut client: NewestClient,
    node: String,
    mut rx: watch::Receiver<Option<VmReports>>,
) {
    let mut stop = state.stopping.subscribe();
    let path = format!("/v1/nodes/{node}/vms/report");
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(reports) = rx.borrow_and_update().clone() else {
            continue;
        };
        let mut backoff = Doubling::new(REPORT_BACKOFF_MIN, REPORT_BACKOFF_MAX);
        for attempt in 1..=REPORT_ATTEMPTS {
            match client
                .get()
                .post_json::<_, serde_json::Value>(&path, &reports)
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "VM report failed");
                    // A newer report is sent instead of retrying this one.
                    if rx.has_changed().unwrap_or(true) {
                        break;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff.wait()) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    }
}
