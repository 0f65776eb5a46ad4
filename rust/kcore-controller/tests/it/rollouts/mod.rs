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

mod drain;
mod engine;
mod killed;
mod proc_bed;
mod rollbacks;

pub use proc_bed::{Proc, ProcBed};
// The real-agents bench (`benches/rollout/agents.rs`) picks its ports with it.
#[allow(unused_imports)]
pub use proc_bed::free_port;

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
    /// Stand-ins of an agent older than `prepare-ahead`: they report no capability, and
    /// run a step whole whatever it says (as an agent that does not know `prepareOnly`).
    old_agents: Vec<String>,
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
/// with. A `prepareOnly` step is prepared (`preparing`, `prepared`) and kept open; when the
/// step comes again without it, the activation starts at once.
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
    let old = log.old_agents.contains(&id);
    let mut node_report = report_for(&id);
    if !old {
        node_report.capabilities = vec![kcore_api::rollout::CAPABILITY_PREPARE_AHEAD.into()];
    }
    register(&c, &id, node_report).await.unwrap();
    beat(&c, &id).await.unwrap();
    let mut known = String::new();
    let mut finals: BTreeMap<String, AssignmentReport> = BTreeMap::new();
    let mut prepared_ahead: std::collections::BTreeSet<String> = Default::default();
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
        let body = |phase, reason| AssignmentReport {
            rollout: step.rollout.clone(),
            epoch: step.epoch,
            seq: step.seq,
            report: report(&id, phase, reason),
        };
        if step.prepare_only && !old {
            // Not a step's start for the VM log: nothing on the node changes.
            if prepared_ahead.insert(key) {
                send(&c, &id, &body(StepPhase::Preparing, None)).await;
                send(&c, &id, &body(StepPhase::Prepared, None)).await;
            }
            continue;
        }
        log.event(&id, format!("step {}", step.seq));
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
        if !prepared_ahead.contains(&key) {
            send(&c, &id, &body(StepPhase::Preparing, None)).await;
            send(&c, &id, &body(StepPhase::Prepared, None)).await;
        }
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
        Bed::with_old_agents(failing, activation, &[]).await
    }

    /// [`Bed::with`], the stand-ins named in `old` playing agents older than
    /// `prepare-ahead` ([`Log::old_agents`]).
    async fn with_old_agents(failing: &[&str], activation: Duration, old: &[&str]) -> Bed {
        let cl = Cluster::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ctl = Running::start_on(listener, cl.config(false));
        let trust = cl.root.cert_pem().to_string();
        let admin = client(&ctl.url, &trust, &cl.admin());
        let log = Arc::new(Log {
            old_agents: old.iter().map(|n| n.to_string()).collect(),
            ..Log::default()
        });
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

fn of_seq(recs: &[records::StepRecord], seq: u64) -> Vec<records::StepRecord> {
    recs.iter().filter(|r| r.seq == seq).cloned().collect()
}

async fn rollback(bed: &Bed, name: &str) -> Result<Value, ClientError> {
    post(&bed.admin, &format!("/v1/clusterupdates/{name}/rollback")).await
}

fn row_of<'a>(cu: &'a Value, node: &str) -> &'a Value {
    cu["status"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["nodeId"] == node)
        .unwrap()
}

/// `node` of `cu` was never started: it may have prepared ahead while the node before it
/// activated (how far it got before the rollout stopped is a race), and has no `startedAt`.
fn assert_never_started(cu: &Value, node: &str) {
    let row = row_of(cu, node);
    assert!(
        ["pending", "preparing", "prepared"].contains(&row["phase"].as_str().unwrap()),
        "{node}: {:?}",
        node_phases(cu)
    );
    assert!(row.get("startedAt").is_none(), "{cu:#}");
}
