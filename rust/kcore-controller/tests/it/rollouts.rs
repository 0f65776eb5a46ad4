//! The rollout engine over HTTPS (issue 12): a real controller, five nodes on 127.0.0.1
//! with their own node certificates that register, heartbeat, long-poll
//! `GET /v1/nodes/{id}/assignment` and report their step's phases. The nodes here are
//! stand-ins for the agent's step (they report what prepare/activate would, after a short
//! activation), so the engine's scheduling is checked on its recorded timeline: the step
//! records every controller keeps.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kcore_api::rollout::{Assignment, AssignmentReport, StepPhase, StepReport};
use kcore_controller::rollout::records;
use kcore_controller::rollout::records::timeline::{assigned_per_node, max_unavailable};
use serde_json::{Value, json};

use crate::support::*;

const REV: &str = "0123456789abcdef0123456789abcdef01234567";
const NODES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

fn rollout(name: &str, strategy: Value, approval: &str, max_failures: u32) -> Value {
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

/// What the stand-in nodes did: activations started per node.
#[derive(Default)]
struct Log {
    activations: Mutex<BTreeMap<String, u32>>,
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
        failed_units: vec![],
        reboots: 0,
    }
}

/// Sends `r` until a controller answers it (it may be restarting).
async fn send(c: &Client, id: &str, body: &AssignmentReport) {
    loop {
        let sent: Result<Value, ClientError> = c
            .post_json(&format!("/v1/nodes/{id}/assignment/report"), body)
            .await;
        match sent {
            Ok(_) => return,
            Err(err) => {
                tracing::debug!("report not taken yet: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A node: registers, beats, long-polls its assignment and plays the step. `fails` nodes
/// report `reverted` after activating.
async fn node(
    url: String,
    trust: String,
    cert: CertifiedKey,
    id: String,
    fails: bool,
    log: Arc<Log>,
) {
    let c = client(&url, &trust, &cert);
    register(&c, &id, report_for(&id)).await.unwrap();
    beat(&c, &id).await.unwrap();
    let mut known = String::new();
    let mut done: Vec<String> = Vec::new();
    loop {
        let path = format!("/v1/nodes/{id}/assignment?wait=30&known={known}");
        let a: Assignment = match c.get_json(&path).await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = beat(&c, &id).await;
        known = a.token.clone();
        let Some(step) = a.step else { continue };
        // The step's identity is rollout + seq: a re-sent assignment is not run again.
        let key = format!("{}:{}", step.rollout, step.seq);
        if done.contains(&key) {
            continue;
        }
        let body = |phase, reason| AssignmentReport {
            rollout: step.rollout.clone(),
            epoch: step.epoch,
            seq: step.seq,
            report: report(&id, phase, reason),
        };
        send(&c, &id, &body(StepPhase::Preparing, None)).await;
        send(&c, &id, &body(StepPhase::Prepared, None)).await;
        *log.activations
            .lock()
            .unwrap()
            .entry(id.clone())
            .or_default() += 1;
        send(&c, &id, &body(StepPhase::Activating, None)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if fails {
            send(
                &c,
                &id,
                &body(
                    StepPhase::Reverted,
                    Some("activation script failed (exit 2)"),
                ),
            )
            .await;
        } else {
            send(&c, &id, &body(StepPhase::Succeeded, None)).await;
        }
        done.push(key);
    }
}

fn report_for(id: &str) -> NodeReport {
    crate::support::report(id, "DC1", Some(StorageBackend::Filesystem))
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
                    ctl.url.clone(),
                    trust.clone(),
                    cl.node(id),
                    id.to_string(),
                    failing.contains(id),
                    log.clone(),
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
