//! The rollout engine over HTTPS (issue 12): a real controller, five nodes on 127.0.0.1
//! with their own node certificates that register, heartbeat, long-poll
//! `GET /v1/nodes/{id}/assignment` and report their step's phases. The nodes here are
//! stand-ins for the agent's step (they report what prepare/activate would, after a short
//! activation), so the engine's scheduling is checked on its recorded timeline: the step
//! records every controller keeps. A stand-in reports generation 1 (`<id>-old-system`)
//! as `previous` and 2 (`<id>-new-system`) after its update; a rollback step (one that
//! names a `storePath`) makes it generation 3, pointing at the old system again.
//! A stand-in also holds the VMs placed on it, as the agent does: told `Running` it reports
//! them running; told `Stopped` (a `drainVms` cordon) it reports them stopped after a
//! guest shutdown of [`SHUTDOWN`], or never when its bed says VMs never stop.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use kcore_api::cluster::VolumeMount;
use kcore_api::rollout::{
    Assignment, AssignmentReport, GenerationRef, StepCode, StepPhase, StepReport,
};
use kcore_api::vm::{NodeVm, VmDesiredState, VmPhase, VmReport, VmReports};
use kcore_controller::rollout::records;
use kcore_controller::rollout::records::timeline::{assigned_per_node, max_unavailable};
use serde_json::{Value, json};

use crate::support::*;

const REV: &str = "0123456789abcdef0123456789abcdef01234567";
const NODES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

pub fn rollout(name: &str, strategy: Value, approval: &str, max_failures: u32) -> Value {
    json!({
        "kind": "ClusterUpdate",
        "metadata": {"name": name},
        "spec": {
            "target": {"flakeRef": "github:kcorehypervisor/kcore", "flakeRev": REV},
            "selector": {"allNodes": true},
            "strategy": strategy,
            "approvalPolicy": approval,
            "maxFailures": max_failures,
        },
    })
}

/// What the stand-in nodes did: update activations started per node, and the rollback
/// activations in the order they started (node, store path).
/// And, for VMs, what each node did in order: (node, event, when), an event being
/// `"<vm> <Phase>"` when it reported a VM in a new phase (`when`: right before it sent
/// the report), `step <seq>` when it started a step and `end <seq>` once it reported its end.
#[derive(Default)]
struct Log {
    activations: Mutex<BTreeMap<String, u32>>,
    rollbacks: Mutex<Vec<(String, String)>>,
    vm_events: Mutex<Vec<(String, String, String)>>,
    /// The stand-ins' VMs never stop (a guest that ignores its shutdown).
    vms_never_stop: AtomicBool,
}

impl Log {
    fn event(&self, node: &str, what: String) {
        let at = records::now_rfc3339();
        self.vm_events
            .lock()
            .unwrap()
            .push((node.to_string(), what, at));
    }

    /// When `node` logged `what` for the `nth` time (0: the first).
    fn event_at(&self, node: &str, what: &str, nth: usize) -> Option<String> {
        let events = self.vm_events.lock().unwrap();
        events
            .iter()
            .filter(|(n, e, _)| n == node && e == what)
            .nth(nth)
            .map(|(_, _, at)| at.clone())
    }

    /// One node's events, without their times.
    fn events_of(&self, node: &str) -> Vec<String> {
        let events = self.vm_events.lock().unwrap();
        events
            .iter()
            .filter(|(n, _, _)| n == node)
            .map(|(_, e, _)| e.clone())
            .collect()
    }
}

/// How long a stand-in's guest takes to shut down when told `Stopped`.
const SHUTDOWN: Duration = Duration::from_millis(1000);

/// Plays the node's side of its VMs, as the agent does, and reports them
/// (`POST /v1/nodes/{id}/vms/report`) when one changes phase.
async fn play_vms(
    c: &Client,
    id: &str,
    vms: &[NodeVm],
    reported: &mut BTreeMap<String, VmPhase>,
    log: &Log,
) {
    let mut changed = Vec::new();
    for vm in vms {
        let phase = match vm.desired {
            VmDesiredState::Stopped if log.vms_never_stop.load(Ordering::SeqCst) => {
                VmPhase::Running
            }
            VmDesiredState::Stopped => VmPhase::Stopped,
            VmDesiredState::Running => VmPhase::Running,
            VmDesiredState::Deleted => continue,
        };
        if reported.get(&vm.name) == Some(&phase) {
            continue;
        }
        if phase == VmPhase::Stopped {
            tokio::time::sleep(SHUTDOWN).await;
        }
        log.event(id, format!("{} {}", vm.name, phase.as_str()));
        reported.insert(vm.name.clone(), phase);
        changed.push(VmReport {
            name: vm.name.clone(),
            observed_generation: vm.generation,
            phase,
            volume: None,
            message: None,
        });
    }
    if changed.is_empty() {
        return;
    }
    let body = VmReports {
        vms: changed,
        deleted: vec![],
    };
    for _ in 0..50 {
        let sent: Result<Value, ClientError> = c
            .post_json(&format!("/v1/nodes/{id}/vms/report"), &body)
            .await;
        if sent.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{id}: VM report not taken in 5 s");
}

fn generation(number: u64, id: &str, which: &str) -> GenerationRef {
    GenerationRef {
        number,
        store_path: format!("/nix/store/{id}-{which}-system"),
    }
}

fn report(id: &str, phase: StepPhase, reason: Option<&str>) -> StepReport {
    StepReport {
        operation_id: format!("op-{id}"),
        phase,
        updated_at: "2026-01-01T00:00:00Z".into(),
        store_path: None,
        reboot_required: Some(false),
        reboot_reasons: vec![],
        goal: None,
        previous: None,
        generation: None,
        reason: reason.map(str::to_string),
        code: None,
        failed_units: vec![],
        reboots: 0,
    }
}

/// Sends `r` until a controller answers it (it may be restarting). A `409` (stale epoch)
/// or `404` (not assigned there) ends it as the agent does: the report is dropped.
async fn send(c: &Client, id: &str, body: &AssignmentReport) {
    for _ in 0..600 {
        let sent: Result<Value, ClientError> = c
            .post_json(&format!("/v1/nodes/{id}/assignment/report"), body)
            .await;
        match sent {
            Ok(_) => return,
            Err(ClientError::Api { status, .. }) if status == 409 || status == 404 => return,
            Err(err) => {
                tracing::debug!("report not taken yet: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("{id}: no controller took a report in a minute");
}

/// A node: registers, beats, long-polls its assignment and plays the step, through a
/// client that fails over across `urls`. `fails` nodes report `reverted` after activating.
/// Like the agent, a step (rollout + seq) is run once: named again (a restart, a takeover
/// under a newer epoch) it only gets its final report again, under the epoch it is named
/// with.
async fn node(
    urls: Vec<String>,
    trust: String,
    cert: CertifiedKey,
    id: String,
    fails: bool,
    log: Arc<Log>,
    activation: Duration,
) {
    let tls = kcore_pki::client_config(&trust, &cert.cert_pem, &cert.key_pem).unwrap();
    let c = Client::new(urls, tls, options()).unwrap();
    register(&c, &id, report_for(&id)).await.unwrap();
    beat(&c, &id).await.unwrap();
    let mut known = String::new();
    let mut finals: BTreeMap<String, AssignmentReport> = BTreeMap::new();
    let mut reported: BTreeMap<String, VmPhase> = BTreeMap::new();
    loop {
        // Under the client's 5 s attempt timeout, so a poll is answered, not abandoned.
        let path = format!("/v1/nodes/{id}/assignment?wait=3&known={known}");
        let a: Assignment = match c.get_json(&path).await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        known = a.token.clone();
        play_vms(&c, &id, &a.vms, &mut reported, &log).await;
        let Some(step) = a.step else {
            // Beats between steps (at least every 3 s): the agent's heartbeat has a loop
            // of its own and never delays a step.
            let _ = beat(&c, &id).await;
            continue;
        };
        let key = format!("{}:{}", step.rollout, step.seq);
        if let Some(end) = finals.get(&key) {
            if end.epoch != step.epoch {
                let mut again = end.clone();
                again.epoch = step.epoch;
                send(&c, &id, &again).await;
                finals.insert(key, again);
            }
            continue;
        }
        log.event(&id, format!("step {}", step.seq));
        let body = |phase, reason| AssignmentReport {
            rollout: step.rollout.clone(),
            epoch: step.epoch,
            seq: step.seq,
            report: report(&id, phase, reason),
        };
        if let Some(path) = &step.store_path {
            // A rollback step: activate the named (previous) system, nothing to build.
            log.rollbacks
                .lock()
                .unwrap()
                .push((id.clone(), path.clone()));
            send(&c, &id, &body(StepPhase::Activating, None)).await;
            tokio::time::sleep(activation).await;
            let mut end = body(StepPhase::Succeeded, None);
            end.report.previous = Some(generation(2, &id, "new"));
            end.report.generation = Some(GenerationRef {
                number: 3,
                store_path: path.clone(),
            });
            finals.insert(key, end.clone());
            send(&c, &id, &end).await;
            log.event(&id, format!("end {}", step.seq));
            continue;
        }
        send(&c, &id, &body(StepPhase::Preparing, None)).await;
        send(&c, &id, &body(StepPhase::Prepared, None)).await;
        *log.activations
            .lock()
            .unwrap()
            .entry(id.clone())
            .or_default() += 1;
        send(&c, &id, &body(StepPhase::Activating, None)).await;
        tokio::time::sleep(activation).await;
        let mut end = if fails {
            body(
                StepPhase::Reverted,
                Some("activation script failed (exit 2)"),
            )
        } else {
            body(StepPhase::Succeeded, None)
        };
        if fails {
            end.report.code = Some(StepCode::ActivationFailed);
        }
        end.report.previous = Some(generation(1, &id, "old"));
        end.report.generation = Some(if fails {
            generation(3, &id, "old")
        } else {
            generation(2, &id, "new")
        });
        finals.insert(key, end.clone());
        send(&c, &id, &end).await;
        log.event(&id, format!("end {}", step.seq));
    }
}

/// A node with 100 GiB free for filesystem volumes, so VMs can be placed on it.
fn report_for(id: &str) -> NodeReport {
    let mut r = crate::support::report(id, "DC1", Some(StorageBackend::Filesystem));
    r.storage.mounts = vec![VolumeMount {
        path: "/var/lib/kcore/volumes".into(),
        size_bytes: Some(200 << 30),
        free_bytes: Some(100 << 30),
    }];
    r
}

struct Bed {
    cl: Cluster,
    ctl: Option<Running>,
    port: u16,
    admin: Client,
    log: Arc<Log>,
    nodes: Vec<tokio::task::JoinHandle<()>>,
}

impl Bed {
    async fn new(failing: &[&str]) -> Bed {
        Bed::with(failing, Duration::from_millis(300)).await
    }

    /// Five stand-ins whose activation takes `activation`; `failing` ones revert.
    async fn with(failing: &[&str], activation: Duration) -> Bed {
        let cl = Cluster::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ctl = Running::start_on(listener, cl.config(false));
        let trust = cl.root.cert_pem().to_string();
        let admin = client(&ctl.url, &trust, &cl.admin());
        let log = Arc::new(Log::default());
        let nodes = NODES
            .iter()
            .map(|id| {
                tokio::spawn(node(
                    vec![ctl.url.clone()],
                    trust.clone(),
                    cl.node(id),
                    id.to_string(),
                    failing.contains(id),
                    log.clone(),
                    activation,
                ))
            })
            .collect();
        let bed = Bed {
            cl,
            ctl: Some(ctl),
            port,
            admin,
            log,
            nodes,
        };
        let admin = &bed.admin;
        eventually("five Ready nodes", || async {
            let list: NodeList = admin.get_json("/v1/nodes").await.unwrap();
            list.items
                .iter()
                .filter(|n| n.status == NodeStatus::Ready)
                .count()
                == NODES.len()
        })
        .await;
        bed
    }

    async fn apply(&self, body: &Value) {
        let name = body["metadata"]["name"].as_str().unwrap();
        let _: Value = self
            .admin
            .put_json(&format!("/v1/clusterupdates/{name}"), body)
            .await
            .unwrap();
    }

    async fn get(&self, name: &str) -> Value {
        self.admin
            .get_json(&format!("/v1/clusterupdates/{name}"))
            .await
            .unwrap()
    }

    async fn wait_phase(&self, name: &str, phases: &[&str]) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            last = self.get(name).await;
            if let Some(p) = last.pointer("/status/phase").and_then(Value::as_str)
                && phases.contains(&p)
            {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name} never reached {phases:?}: {last:#}");
    }

    /// The step records, read from the controller's own database after it stopped.
    async fn timeline(mut self, name: &str) -> (Vec<records::StepRecord>, BTreeMap<String, u32>) {
        for n in &self.nodes {
            n.abort();
        }
        self.ctl.take().unwrap().stop().await;
        let store =
            kcore_controller::store::Store::open(&self.cl.path("state.sqlite"), "ctl1").unwrap();
        let log = self.log.activations.lock().unwrap().clone();
        (records::records(&store, name), log)
    }
}

fn node_phases(cu: &Value) -> BTreeMap<String, String> {
    cu["status"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["nodeId"].as_str().unwrap().to_string(),
                r["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn rollout_one_at_a_time_updates_every_node_once() {
    let bed = Bed::new(&[]).await;
    bed.apply(&rollout(
        "r1",
        json!({"strategyType": "one-at-a-time"}),
        "auto",
        0,
    ))
    .await;
    let cu = bed
        .wait_phase("r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    assert!(
        node_phases(&cu).values().all(|p| p == "succeeded"),
        "{cu:#}"
    );
    let phases: Vec<&str> = cu["status"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["pending", "rolling_out", "succeeded"]);
    let (recs, log) = bed.timeline("r1").await;
    assert_eq!(max_unavailable(&recs), 1);
    assert!(
        assigned_per_node(&recs).values().all(|n| *n == 1),
        "{recs:#?}"
    );
    assert_eq!(log.len(), 5);
    assert!(log.values().all(|n| *n == 1), "{log:?}");
}

#[tokio::test]
async fn rollout_batch_keeps_max_unavailable_on_the_timeline() {
    let bed = Bed::new(&[]).await;
    let strategy = json!({"strategyType": "batch", "batchSize": 3, "maxUnavailable": 2});
    bed.apply(&rollout("r1", strategy, "auto", 0)).await;
    let cu = bed
        .wait_phase("r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    let (recs, log) = bed.timeline("r1").await;
    // Two at a time at most, and two did run together (the limit, not one-at-a-time).
    assert_eq!(max_unavailable(&recs), 2, "{recs:#?}");
    assert!(log.values().all(|n| *n == 1) && log.len() == 5, "{log:?}");
}

#[tokio::test]
async fn rollout_halts_when_a_node_reverts_over_the_failure_budget() {
    // n1 is first in node order and reverts: nothing else starts.
    let bed = Bed::new(&["n1"]).await;
    bed.apply(&rollout(
        "r1",
        json!({"strategyType": "one-at-a-time"}),
        "auto",
        0,
    ))
    .await;
    let cu = bed
        .wait_phase("r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "halted", "{cu:#}");
    let message = cu["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("n1: activation script failed (exit 2)"),
        "{message}"
    );
    let phases = node_phases(&cu);
    assert_eq!(phases["n1"], "reverted");
    // The agent's code is the row's; rows of nodes that did not fail carry none.
    assert_eq!(row_of(&cu, "n1")["code"], "ACTIVATION_FAILED", "{cu:#}");
    assert!(row_of(&cu, "n2").get("code").is_none(), "{cu:#}");
    assert!(
        ["n2", "n3", "n4", "n5"]
            .iter()
            .all(|n| phases[*n] == "pending"),
        "{phases:?}"
    );
    let (recs, log) = bed.timeline("r1").await;
    assert_eq!(assigned_per_node(&recs).keys().collect::<Vec<_>>(), ["n1"]);
    assert_eq!(log.len(), 1, "{log:?}");
}

#[tokio::test]
async fn rollout_waits_for_manual_approval_and_cancel_stops_new_steps() {
    let bed = Bed::new(&[]).await;
    bed.apply(&rollout(
        "r1",
        json!({"strategyType": "one-at-a-time"}),
        "manual",
        0,
    ))
    .await;
    let cu = bed.wait_phase("r1", &["awaiting_approval"]).await;
    assert!(cu["status"].get("nodes").is_none(), "{cu:#}");
    // Approving starts it; cancelling after the first node began stops the rest.
    let _: Value = post(&bed.admin, "/v1/clusterupdates/r1/approve")
        .await
        .unwrap();
    let admin = &bed.admin;
    eventually("a first node activating", || async {
        let cu: Value = admin.get_json("/v1/clusterupdates/r1").await.unwrap();
        cu["status"]["nodes"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["phase"] != "pending"))
    })
    .await;
    let _: Value = post(&bed.admin, "/v1/clusterupdates/r1/cancel")
        .await
        .unwrap();
    let cu = bed.wait_phase("r1", &["cancelled"]).await;
    assert!(cu["status"]["approvedAt"].is_string() && cu["status"]["cancelledAt"].is_string());
    // Nothing was assigned after the cancel: the rows the engine wrote as it cancelled
    // name every node it had started, and at least one node never started.
    let started = cu["status"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["startedAt"].is_string())
        .count();
    let (recs, _) = bed.timeline("r1").await;
    assert_eq!(assigned_per_node(&recs).len(), started, "{recs:#?}");
    assert!(started < NODES.len());
}

#[tokio::test]
async fn rollout_resumes_after_a_controller_restart_without_activating_twice() {
    let mut bed = Bed::new(&[]).await;
    bed.apply(&rollout(
        "r1",
        json!({"strategyType": "one-at-a-time"}),
        "auto",
        0,
    ))
    .await;
    let admin = &bed.admin;
    eventually("two nodes done", || async {
        let cu: Value = admin.get_json("/v1/clusterupdates/r1").await.unwrap();
        cu["status"]["nodes"]
            .as_array()
            .is_some_and(|rows| rows.iter().filter(|r| r["phase"] == "succeeded").count() >= 2)
    })
    .await;
    // Stop it and start it again on the same port and database: the nodes keep polling
    // and reporting (retrying while it is down).
    bed.ctl.take().unwrap().stop().await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", bed.port))
        .await
        .unwrap();
    bed.ctl = Some(Running::start_on(listener, bed.cl.config(false)));
    let cu = bed
        .wait_phase("r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    let (recs, log) = bed.timeline("r1").await;
    assert!(
        assigned_per_node(&recs).values().all(|n| *n == 1) && assigned_per_node(&recs).len() == 5,
        "{recs:#?}"
    );
    assert!(log.values().all(|n| *n == 1) && log.len() == 5, "{log:?}");
    assert_eq!(max_unavailable(&recs), 1);
}

/// The HTTP status of an answered error (0 when there was no answer).
fn http_status(err: &ClientError) -> u16 {
    match err {
        ClientError::Api { status, .. } => status.as_u16(),
        _ => 0,
    }
}

fn of_seq(recs: &[records::StepRecord], seq: u64) -> Vec<records::StepRecord> {
    recs.iter().filter(|r| r.seq == seq).cloned().collect()
}

async fn rollback(bed: &Bed, name: &str) -> Result<Value, ClientError> {
    post(&bed.admin, &format!("/v1/clusterupdates/{name}/rollback")).await
}

#[tokio::test]
async fn rollout_rollback_returns_every_updated_node_in_reverse_order_under_the_batch_limits() {
    let bed = Bed::new(&[]).await;
    let strategy = json!({"strategyType": "batch", "batchSize": 2, "maxUnavailable": 2});
    bed.apply(&rollout("r1", strategy, "auto", 0)).await;
    let cu = bed
        .wait_phase("r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    let cu = rollback(&bed, "r1").await.unwrap();
    assert!(cu["status"]["rollbackAt"].is_string(), "{cu:#}");
    let cu = bed.wait_phase("r1", &["rolled_back", "failed"]).await;
    assert_eq!(cu["status"]["phase"], "rolled_back", "{cu:#}");
    for row in cu["status"]["nodes"].as_array().unwrap() {
        let id = row["nodeId"].as_str().unwrap();
        assert_eq!(row["phase"], "rolled_back", "{row:#}");
        // Generation before the update, and the one the rollback made (the old system).
        assert_eq!(row["previous"]["number"], 1, "{row:#}");
        assert_eq!(row["generation"]["number"], 3, "{row:#}");
        assert_eq!(
            row["generation"]["storePath"],
            format!("/nix/store/{id}-old-system")
        );
        assert!(row["startedAt"].is_string() && row["finishedAt"].is_string());
        assert!(row["rollbackStartedAt"].is_string() && row["rollbackFinishedAt"].is_string());
    }
    let phases: Vec<&str> = cu["status"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "pending",
            "rolling_out",
            "succeeded",
            "rolling_back",
            "rolled_back"
        ]
    );
    let rolled: Vec<(String, String)> = bed.log.rollbacks.lock().unwrap().clone();
    let (recs, log) = bed.timeline("r1").await;
    // Each node's previous system was activated, once.
    assert_eq!(rolled.len(), 5, "{rolled:?}");
    for (id, path) in &rolled {
        assert_eq!(path, &format!("/nix/store/{id}-old-system"));
    }
    // Reverse order in waves of two: {n5, n4}, {n3, n2}, {n1}, each wave after the last.
    let mut back: Vec<&records::StepRecord> = recs
        .iter()
        .filter(|r| r.seq == records::ROLLBACK_SEQ && r.what == records::ASSIGNED)
        .collect();
    back.sort_by(|a, b| a.at.cmp(&b.at));
    let order: Vec<&str> = back.iter().map(|r| r.node.as_str()).collect();
    let waves: Vec<Vec<&str>> = order
        .chunks(2)
        .map(|w| {
            let mut w = w.to_vec();
            w.sort();
            w
        })
        .collect();
    assert_eq!(waves, [vec!["n4", "n5"], vec!["n2", "n3"], vec!["n1"]]);
    assert!(max_unavailable(&of_seq(&recs, records::ROLLBACK_SEQ)) <= 2);
    assert!(max_unavailable(&of_seq(&recs, records::UPDATE_SEQ)) <= 2);
    for seq in [records::UPDATE_SEQ, records::ROLLBACK_SEQ] {
        let per = assigned_per_node(&of_seq(&recs, seq));
        assert!(per.len() == 5 && per.values().all(|n| *n == 1), "{per:?}");
    }
    assert!(log.values().all(|n| *n == 1) && log.len() == 5, "{log:?}");
}

#[tokio::test]
async fn rollout_rollback_of_a_halted_rollout_returns_only_the_nodes_it_updated() {
    // n3 reverts: n1 and n2 were updated, n4 and n5 never started.
    let bed = Bed::new(&["n3"]).await;
    bed.apply(&rollout(
        "r1",
        json!({"strategyType": "one-at-a-time"}),
        "auto",
        0,
    ))
    .await;
    let cu = bed
        .wait_phase("r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "halted", "{cu:#}");
    rollback(&bed, "r1").await.unwrap();
    let cu = bed.wait_phase("r1", &["rolled_back", "failed"]).await;
    assert_eq!(cu["status"]["phase"], "rolled_back", "{cu:#}");
    let phases = node_phases(&cu);
    assert_eq!(phases["n1"], "rolled_back");
    assert_eq!(phases["n2"], "rolled_back");
    assert_eq!(
        phases["n3"], "reverted",
        "reverted on its own, nothing to undo"
    );
    assert_eq!(phases["n4"], "pending");
    assert_eq!(phases["n5"], "pending");
    let rolled: Vec<String> = bed
        .log
        .rollbacks
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(rolled, ["n2", "n1"], "reverse order, one at a time");
    let (recs, _) = bed.timeline("r1").await;
    assert_eq!(max_unavailable(&of_seq(&recs, records::ROLLBACK_SEQ)), 1);
}

#[tokio::test]
async fn rollout_rollback_is_refused_before_any_node_started() {
    let bed = Bed::new(&[]).await;
    bed.apply(&rollout(
        "r1",
        json!({"strategyType": "one-at-a-time"}),
        "manual",
        0,
    ))
    .await;
    bed.wait_phase("r1", &["awaiting_approval"]).await;
    let err = rollback(&bed, "r1").await.unwrap_err();
    assert_eq!(http_status(&err), 409, "{err}");
    assert!(
        err.to_string()
            .contains("nothing to roll back; cancel it instead"),
        "{err}"
    );
    let cu = bed.get("r1").await;
    assert!(cu["status"].get("rollbackAt").is_none(), "{cu:#}");
    let err = rollback(&bed, "nope").await.unwrap_err();
    assert_eq!(http_status(&err), 404, "{err}");
}

#[tokio::test]
async fn rollout_spec_change_is_refused_once_it_started_but_an_unchanged_apply_is_fine() {
    let bed = Bed::with(&[], Duration::from_secs(1)).await;
    let original = rollout("r1", json!({"strategyType": "one-at-a-time"}), "manual", 0);
    let mut changed = original.clone();
    changed["spec"]["target"]["flakeRev"] = json!("89abcdef0123456789abcdef0123456789abcdef");
    bed.apply(&original).await;
    bed.wait_phase("r1", &["awaiting_approval"]).await;
    // Not started yet: a change is taken (and changed back).
    bed.apply(&changed).await;
    bed.apply(&original).await;
    let _: Value = post(&bed.admin, "/v1/clusterupdates/r1/approve")
        .await
        .unwrap();
    bed.wait_phase("r1", &["rolling_out"]).await;
    let admin = &bed.admin;
    let put = |body: Value| async move {
        admin
            .put_json::<_, Value>("/v1/clusterupdates/r1", &body)
            .await
    };
    // The same document again: idempotent, nothing changes.
    let same = put(original.clone()).await.unwrap();
    assert_eq!(same["changes"], json!([]), "{same:#}");
    let err = put(changed.clone()).await.unwrap_err();
    assert_eq!(http_status(&err), 409, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("is rolling_out") && text.contains("kctl update cluster cancel r1"),
        "{text}"
    );
    // A dry run is refused the same way.
    let dry = bed
        .admin
        .put_json::<_, Value>("/v1/clusterupdates/r1?dryRun=server", &changed)
        .await
        .unwrap_err();
    assert_eq!(http_status(&dry), 409, "{dry}");
    let _: Value = post(&bed.admin, "/v1/clusterupdates/r1/cancel")
        .await
        .unwrap();
    bed.wait_phase("r1", &["cancelled"]).await;
    let err = put(changed).await.unwrap_err();
    assert!(err.to_string().contains("under a new name"), "{err}");
    let cu = bed.get("r1").await;
    assert_eq!(
        cu["spec"]["target"]["flakeRev"], REV,
        "the stored spec kept"
    );
}

#[tokio::test]
async fn rollout_drain_vms_cordons_each_node_during_its_step_only() {
    let bed = Bed::with(&[], Duration::from_millis(800)).await;
    // An operator's cordon on n4 is not the rollout's to lift.
    let _: Value = bed
        .admin
        .post_json("/v1/nodes/n4/cordon", &json!({"reason": "disk swap"}))
        .await
        .unwrap();
    let mut body = rollout("r1", json!({"strategyType": "one-at-a-time"}), "auto", 0);
    body["spec"]["drainVms"] = json!(true);
    bed.apply(&body).await;
    // Watch the nodes while it runs: which were seen cordoned by the rollout, and how many
    // at once (bounded: 600 polls of 50 ms).
    let mut seen = std::collections::BTreeSet::new();
    let mut most = 0;
    for _ in 0..600 {
        let list: NodeList = bed.admin.get_json("/v1/nodes").await.unwrap();
        let now: Vec<String> = list
            .items
            .iter()
            .filter(|n| {
                n.cordons
                    .rollout
                    .as_ref()
                    .is_some_and(|c| c.by == "clusterupdate/r1")
            })
            .map(|n| n.node_id.clone())
            .collect();
        most = most.max(now.len());
        seen.extend(now);
        let cu = bed.get("r1").await;
        if cu["status"]["phase"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bed.get("r1").await["status"]["phase"], "succeeded");
    assert!(
        !seen.is_empty(),
        "no node was ever seen cordoned by the rollout"
    );
    assert_eq!(most, 1, "one at a time: one node cordoned at once");
    // Every cordon of the rollout is lifted once its step ended; n4's operator cordon stays.
    let admin = &bed.admin;
    eventually("rollout cordons lifted", || async {
        let list: NodeList = admin.get_json("/v1/nodes").await.unwrap();
        list.items.iter().all(|n| n.cordons.rollout.is_none())
    })
    .await;
    let list: NodeList = bed.admin.get_json("/v1/nodes").await.unwrap();
    let n4 = list.items.iter().find(|n| n.node_id == "n4").unwrap();
    assert_eq!(
        n4.cordons.operator.as_ref().map(|c| c.reason.as_str()),
        Some("disk swap")
    );
}

/// Applies VM `name` (1 GiB, filesystem) and waits until a stand-in reports it running;
/// the node it was placed on.
async fn running_vm(bed: &Bed, name: &str) -> String {
    let vm = json!({"kind": "VM", "metadata": {"name": name},
        "spec": {"storageBackend": "filesystem", "storageSizeBytes": "1G"}});
    let _: Value = bed
        .admin
        .put_json(&format!("/v1/vms/{name}"), &vm)
        .await
        .unwrap();
    let mut last = Value::Null;
    for _ in 0..100 {
        last = bed
            .admin
            .get_json(&format!("/v1/vms/{name}"))
            .await
            .unwrap();
        if last["status"]["phase"] == "Running"
            && let Some(node) = last["status"]["node"].as_str()
        {
            return node.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never reported Running: {last:#}");
}

/// A `drainVms` rollout over the five stand-ins in one batch with `maxUnavailable` 1: a
/// single wave, so only the slot count keeps a second node from starting while one drains.
fn drain_rollout(name: &str, health_timeout: u64, max_failures: u32) -> Value {
    let mut body = rollout(
        name,
        json!({"strategyType": "batch", "batchSize": 5, "maxUnavailable": 1}),
        "auto",
        max_failures,
    );
    body["spec"]["drainVms"] = json!(true);
    body["spec"]["activation"] = json!({"healthTimeoutSeconds": health_timeout});
    body
}

fn row_of<'a>(cu: &'a Value, node: &str) -> &'a Value {
    cu["status"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["nodeId"] == node)
        .unwrap()
}

#[tokio::test]
async fn rollout_drain_vms_assigns_a_step_only_once_its_vm_stopped_and_starts_it_again_after() {
    let bed = Bed::new(&[]).await;
    let host = running_vm(&bed, "web").await;
    bed.apply(&drain_rollout("r1", 60, 0)).await;
    // While the guest shuts down the node's row says it is draining (bounded: 300 polls).
    let mut seen_draining = false;
    for _ in 0..300 {
        let cu = bed.get("r1").await;
        let reason = row_of(&cu, &host)["reason"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if reason == "draining: waiting for VM(s) web to stop" {
            seen_draining = true;
            break;
        }
        if cu["status"]["phase"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_draining, "{host}'s row never said it was draining");
    bed.wait_phase("r1", &["succeeded"]).await;
    // The VM is told Running again once the step ended, and the stand-in says so.
    let admin = &bed.admin;
    eventually("web running again", || async {
        let vm: Value = admin.get_json("/v1/vms/web").await.unwrap();
        vm["status"]["phase"] == "Running"
    })
    .await;
    assert_eq!(
        bed.log.events_of(&host),
        [
            "web Running",
            "web Stopped",
            "step 1",
            "end 1",
            "web Running"
        ],
        "on {host}"
    );
    let stopped_at = bed.log.event_at(&host, "web Stopped", 0).unwrap();
    // Nodes without VMs are drained at once: they all ran their step, with no VM event.
    for n in NODES.iter().filter(|n| **n != host) {
        assert_eq!(bed.log.events_of(n), ["step 1", "end 1"], "on {n}");
    }
    let (recs, log) = bed.timeline("r1").await;
    records::timeline::check(&recs, 1).unwrap();
    assert!(
        log.values().all(|n| *n == 1) && log.len() == NODES.len(),
        "{log:?}"
    );
    let assigned = recs
        .iter()
        .find(|r| r.node == host && r.what == records::ASSIGNED)
        .unwrap();
    // Assigned after the guest was reported stopped: its stop report was sent first.
    assert!(
        assigned.at > stopped_at,
        "{host} assigned at {} before its VM stopped at {stopped_at}",
        assigned.at
    );
    // A draining node takes the one slot: while its guest shut down no other node had a
    // step in flight.
    for n in NODES.iter().filter(|n| **n != host) {
        let at = |what: &str| {
            recs.iter()
                .find(|r| r.node == *n && r.what == what)
                .map(|r| r.at.clone())
                .unwrap()
        };
        let (start, end) = (at(records::ASSIGNED), at("succeeded"));
        assert!(
            !(start < stopped_at && stopped_at < end),
            "{n} was in flight ({start} .. {end}) while {host} drained ({stopped_at})"
        );
    }
}

#[tokio::test]
async fn rollout_drain_vms_fails_the_step_of_a_node_whose_vm_never_stops() {
    let bed = Bed::new(&[]).await;
    bed.log.vms_never_stop.store(true, Ordering::SeqCst);
    let host = running_vm(&bed, "web").await;
    // One failure allowed: the other nodes go on after the drain timed out.
    bed.apply(&drain_rollout("r1", 2, 1)).await;
    let cu = bed.wait_phase("r1", &["succeeded", "halted"]).await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    let row = row_of(&cu, &host);
    assert_eq!(row["phase"], "failed", "{row:#}");
    assert_eq!(row["code"], "DRAIN_TIMEOUT", "{row:#}");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("drainVms: VM(s) web still running 2 s after the node was cordoned"),
        "{reason}"
    );
    // The cordon is lifted after the failed step, so the VM is wanted Running again.
    let admin = &bed.admin;
    eventually("rollout cordons lifted", || async {
        let list: NodeList = admin.get_json("/v1/nodes").await.unwrap();
        list.items.iter().all(|n| n.cordons.rollout.is_none())
    })
    .await;
    assert_eq!(bed.log.events_of(&host), ["web Running"], "never stepped");
    let (recs, log) = bed.timeline("r1").await;
    records::timeline::check(&recs, 1).unwrap();
    // Never assigned and never activated; every other node was, once.
    let per = assigned_per_node(&recs);
    assert!(
        !per.contains_key(&host) && !log.contains_key(&host),
        "{per:?} {log:?}"
    );
    assert_eq!(per.len(), NODES.len() - 1, "{per:?}");
    assert!(per.values().all(|n| *n == 1));
}

#[tokio::test]
async fn rollout_drain_vms_on_rollback_cordons_the_node_and_stops_its_vm_around_the_rollback_step()
{
    let bed = Bed::new(&[]).await;
    let host = running_vm(&bed, "web").await;
    bed.apply(&drain_rollout("r1", 60, 0)).await;
    bed.wait_phase("r1", &["succeeded"]).await;
    let admin = &bed.admin;
    let vm_running = || async {
        let vm: Value = admin.get_json("/v1/vms/web").await.unwrap();
        vm["status"]["phase"] == "Running"
    };
    eventually("web running again after the update", vm_running).await;
    rollback(&bed, "r1").await.unwrap();
    // While the guest shuts down for the rollback step, the node is cordoned by the
    // rollout and its row says it drains (bounded: 300 polls of 20 ms).
    let mut seen_draining = false;
    for _ in 0..300 {
        let cu = bed.get("r1").await;
        let list: NodeList = admin.get_json("/v1/nodes").await.unwrap();
        let cordoned = list.items.iter().any(|n| {
            n.node_id == host
                && n.cordons
                    .rollout
                    .as_ref()
                    .is_some_and(|c| c.by == "clusterupdate/r1")
        });
        if cordoned && row_of(&cu, &host)["reason"] == "draining: waiting for VM(s) web to stop" {
            seen_draining = true;
            break;
        }
        if cu["status"]["phase"] == "rolled_back" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen_draining,
        "{host} was never seen draining for its rollback"
    );
    let cu = bed.wait_phase("r1", &["rolled_back", "failed"]).await;
    assert_eq!(cu["status"]["phase"], "rolled_back", "{cu:#}");
    assert_eq!(row_of(&cu, &host)["phase"], "rolled_back", "{cu:#}");
    eventually("web running again after the rollback", vm_running).await;
    eventually("rollout cordons lifted", || async {
        let list: NodeList = admin.get_json("/v1/nodes").await.unwrap();
        list.items.iter().all(|n| n.cordons.rollout.is_none())
    })
    .await;
    // Stopped before each step, started again after it: the update's and the rollback's.
    assert_eq!(
        bed.log.events_of(&host),
        [
            "web Running",
            "web Stopped",
            "step 1",
            "end 1",
            "web Running",
            "web Stopped",
            "step 2",
            "end 2",
            "web Running"
        ],
        "on {host}"
    );
    let second_stop = bed.log.event_at(&host, "web Stopped", 1).unwrap();
    let (recs, _) = bed.timeline("r1").await;
    records::timeline::check(&recs, 1).unwrap();
    let back = of_seq(&recs, records::ROLLBACK_SEQ);
    let assigned = back
        .iter()
        .find(|r| r.node == host && r.what == records::ASSIGNED)
        .unwrap();
    // The rollback step was assigned only after the guest was reported stopped.
    assert!(
        assigned.at > second_stop,
        "{host}'s rollback assigned at {} before its VM stopped at {second_stop}",
        assigned.at
    );
    // Every node was rolled back once.
    assert_eq!(assigned_per_node(&back).len(), NODES.len(), "{back:#?}");
    assert!(assigned_per_node(&back).values().all(|n| *n == 1));
}

/// A controller as its own process (`kcore-controller --config FILE`), so a test can kill
/// it with SIGKILL mid-rollout: nothing of it runs on, nothing is flushed or handed over.
struct Proc {
    child: std::process::Child,
}

impl Proc {
    fn start(cl: &Cluster, config: &ControllerConfig) -> Proc {
        let id = &config.controller_id;
        let file = cl.path(&format!("{id}.yaml"));
        std::fs::write(&file, serde_json::to_string(config).unwrap()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cl.path(&format!("{id}.log")))
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_kcore-controller"))
            .arg("--config")
            .arg(&file)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Proc { child }
    }

    fn kill9(&mut self) {
        // std's Child::kill is SIGKILL on Unix.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Controllers `ids` as processes on 127.0.0.1, each a peer of the others, with a 1 s
/// clock bound (so a lapsed lease is taken over after 30 s + 1 s), and five stand-ins
/// whose client tries the controllers in `ids` order.
pub struct ProcBed {
    cl: Cluster,
    configs: Vec<ControllerConfig>,
    procs: Vec<Option<Proc>>,
    pub admins: Vec<Client>,
    log: Arc<Log>,
    nodes: Vec<tokio::task::JoinHandle<()>>,
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl ProcBed {
    /// Controllers `ids` and the five stand-ins, whose activation takes `activation`.
    async fn new(ids: &[&str], activation: Duration) -> ProcBed {
        let nodes: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
        ProcBed::with(ids, &nodes, activation).await
    }

    /// Controllers `ids`, and a stand-in per entry of `node_ids` whose activation takes
    /// `activation` (the benchmark's 50 nodes of 1 s go through here too).
    pub async fn with(ids: &[&str], node_ids: &[String], activation: Duration) -> ProcBed {
        let cl = Cluster::new();
        let addrs: Vec<String> = ids
            .iter()
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let configs: Vec<ControllerConfig> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let peers = addrs
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, a)| a.clone())
                    .collect();
                let mut c = cl.peer_config(id, false, peers);
                c.listen = addrs[i].parse().unwrap();
                c.max_clock_skew_seconds = 1;
                c
            })
            .collect();
        let procs = configs.iter().map(|c| Some(Proc::start(&cl, c))).collect();
        let trust = cl.root.cert_pem().to_string();
        let urls: Vec<String> = addrs.iter().map(|a| format!("https://{a}")).collect();
        let admins: Vec<Client> = urls
            .iter()
            .map(|u| client(u, &trust, &cl.admin()))
            .collect();
        for admin in &admins {
            eventually("the controller answers", || async {
                admin.get_json::<NodeList>("/v1/nodes").await.is_ok()
            })
            .await;
        }
        let log = Arc::new(Log::default());
        let nodes = node_ids
            .iter()
            .map(|id| {
                tokio::spawn(node(
                    urls.clone(),
                    trust.clone(),
                    cl.node(id),
                    id.to_string(),
                    false,
                    log.clone(),
                    activation,
                ))
            })
            .collect();
        let bed = ProcBed {
            cl,
            configs,
            procs,
            admins,
            log,
            nodes,
        };
        let admin = &bed.admins[0];
        eventually("every node Ready", || async {
            let list: NodeList = admin.get_json("/v1/nodes").await.unwrap();
            list.items
                .iter()
                .filter(|n| n.status == NodeStatus::Ready)
                .count()
                == node_ids.len()
        })
        .await;
        bed
    }

    /// The cluster's PKI (the benchmark's real agents get their certificates from it) and
    /// the controllers' addresses.
    #[allow(dead_code)] // used by benches/rollout.rs, which includes this file
    pub fn cluster(&self) -> (&Cluster, Vec<String>) {
        let addrs = self.configs.iter().map(|c| c.listen.to_string()).collect();
        (&self.cl, addrs)
    }

    /// The process id of controller `i` (for the benchmark's /proc readings).
    #[allow(dead_code)] // used by benches/rollout.rs, which includes this file
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().map(|p| p.child.id())
    }

    /// Polls controller `i` until rollout `name` is in one of `phases` (at most 2 min).
    pub async fn wait_phase(&self, i: usize, name: &str, phases: &[&str]) -> Value {
        let mut last = Value::Null;
        for _ in 0..1200 {
            if let Ok(v) = self.admins[i]
                .get_json::<Value>(&format!("/v1/clusterupdates/{name}"))
                .await
            {
                last = v;
                if let Some(p) = last.pointer("/status/phase").and_then(Value::as_str)
                    && phases.contains(&p)
                {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name} never reached {phases:?}: {last:#}");
    }

    /// Controller `i`'s rows: how many nodes succeeded.
    async fn succeeded(&self, i: usize, name: &str) -> usize {
        let cu: Value = match self.admins[i]
            .get_json(&format!("/v1/clusterupdates/{name}"))
            .await
        {
            Ok(v) => v,
            Err(_) => return 0,
        };
        cu["status"]["nodes"].as_array().map_or(0, |rows| {
            rows.iter().filter(|r| r["phase"] == "succeeded").count()
        })
    }

    /// Stops everything (SIGKILL to the controllers); controller `i`'s database and the
    /// stand-ins' activation counts.
    pub fn stop(mut self, i: usize) -> (kcore_controller::store::Store, BTreeMap<String, u32>) {
        for n in &self.nodes {
            n.abort();
        }
        for p in &mut self.procs {
            if let Some(mut p) = p.take() {
                p.kill9();
            }
        }
        let c = &self.configs[i];
        let store =
            kcore_controller::store::Store::open(&c.database_path, &c.controller_id).unwrap();
        let log = self.log.activations.lock().unwrap().clone();
        (store, log)
    }

    /// [`ProcBed::stop`], then rollout `name`'s step records in controller `i`'s database.
    pub fn timeline(
        self,
        i: usize,
        name: &str,
    ) -> (Vec<records::StepRecord>, BTreeMap<String, u32>) {
        let (store, log) = self.stop(i);
        (records::records(&store, name), log)
    }
}

fn auto_one_at_a_time(name: &str) -> Value {
    rollout(name, json!({"strategyType": "one-at-a-time"}), "auto", 0)
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_controller_process_killed_9_mid_rollout_and_restarted_resumes_without_activating_twice()
 {
    let mut bed = ProcBed::new(&["ctl1"], Duration::from_millis(500)).await;
    let _: Value = bed.admins[0]
        .put_json("/v1/clusterupdates/r1", &auto_one_at_a_time("r1"))
        .await
        .unwrap();
    let bed_ref = &bed;
    eventually("two nodes done", || async {
        bed_ref.succeeded(0, "r1").await >= 2
    })
    .await;
    bed.procs[0].take().unwrap().kill9();
    bed.procs[0] = Some(Proc::start(&bed.cl, &bed.configs[0]));
    let cu = bed
        .wait_phase(0, "r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    // The restarted controller is the same owner, under the same epoch.
    assert_eq!(cu["status"]["owner"]["controllerId"], "ctl1");
    assert_eq!(cu["status"]["owner"]["epoch"], 1);
    let (recs, log) = bed.timeline(0, "r1");
    let per = assigned_per_node(&recs);
    assert!(per.len() == 5 && per.values().all(|n| *n == 1), "{recs:#?}");
    assert!(log.len() == 5 && log.values().all(|n| *n == 1), "{log:?}");
    assert_eq!(max_unavailable(&recs), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_owner_controller_killed_9_is_taken_over_by_a_second_controller_after_its_lease() {
    // 1.5 s activations: the kill lands mid-rollout even with ctl2 a pull (1 s) behind.
    let mut bed = ProcBed::new(&["ctl1", "ctl2"], Duration::from_millis(1500)).await;
    let _: Value = bed.admins[0]
        .put_json("/v1/clusterupdates/r1", &auto_one_at_a_time("r1"))
        .await
        .unwrap();
    let bed_ref = &bed;
    // ctl1 owns it (applied there); wait until ctl2 has replicated two finished nodes, so
    // the test kills the owner mid-rollout with its peer caught up on what it did.
    eventually("ctl2 sees two nodes done", || async {
        bed_ref.succeeded(1, "r1").await >= 2
    })
    .await;
    let before = bed.wait_phase(1, "r1", &["rolling_out"]).await;
    assert_eq!(
        before["status"]["owner"]["controllerId"], "ctl1",
        "{before:#}"
    );
    bed.procs[0].take().unwrap().kill9();
    // The nodes fail over to ctl2; ctl2 takes the rollout when ctl1's lease lapses.
    let cu = bed
        .wait_phase(1, "r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    assert_eq!(cu["status"]["owner"]["controllerId"], "ctl2", "{cu:#}");
    assert_eq!(cu["status"]["owner"]["epoch"], 2, "{cu:#}");
    let (recs, log) = bed.timeline(1, "r1");
    let per = assigned_per_node(&recs);
    assert!(per.len() == 5 && per.values().all(|n| *n == 1), "{recs:#?}");
    // Some nodes were assigned by the deposed owner and some by the new one.
    assert_eq!(records::assigned_by(&recs), ["ctl1", "ctl2"], "{recs:#?}");
    assert!(log.len() == 5 && log.values().all(|n| *n == 1), "{log:?}");
    assert_eq!(max_unavailable(&recs), 1, "{recs:#?}");
}
