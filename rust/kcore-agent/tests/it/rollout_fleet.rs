//! Rollouts end to end (issue 12): a real controller in-process on 127.0.0.1 and five real
//! agents (`rollout_rig` nodes on the real fleet flake) that register, long-poll their
//! assignment through the registration client and run the step with their own prepare and
//! activate (`kcore_agent::rollout::assignment`). What each node did is read back from its
//! fake root (profile, `run/current-system`, the boot loader state, the stand-ins' logs),
//! the rollout's outcome from the controller, and every test ends with [`Bed::finish`]:
//! the step records read from the controller's database and checked by the one timeline
//! checker (`kcore_controller::rollout::records::timeline`: never more than the strategy's
//! `maxUnavailable` between activation start and the end of the step, no node assigned or
//! activated twice). Names say `with_fleet_flake`: they need `tests/support`.

use kcore_api::cluster::{NodeList, NodeStatus};
use kcore_api::rollout::StepReport;
use kcore_controller::config::{ControllerConfig, ControllerTls};
use kcore_controller::rollout::records::{self, timeline};
use serde_json::Value;

use crate::rollout_rig::{Fleet, FleetNode, host};
use crate::support::*;

const CLUSTER: &str = "lab";
const NODES: [&str; 5] = ["node-1", "node-2", "node-3", "node-4", "node-5"];
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

type ControllerTask = tokio::task::JoinHandle<Result<(), kcore_controller::ControllerError>>;

struct Bed {
    dir: tempfile::TempDir,
    fleet: Fleet,
    config: ControllerConfig,
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<ControllerTask>,
    admin: Client,
    nodes: Vec<FleetNode>,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A rollout's spec to r`rev` over all nodes: `strategy`, `approvalPolicy`, `maxFailures`
/// and `activation` as given (`{}` keeps the defaults).
fn spec(fleet: &Fleet, rev: &str, strategy: Value, approval: &str, max_failures: u32) -> Value {
    json!({
        "target": {"flakeRef": fleet.flake_ref(), "flakeRev": rev},
        "selector": {"allNodes": true},
        "strategy": strategy,
        "approvalPolicy": approval,
        "maxFailures": max_failures,
        "activation": {"mode": "auto", "healthTimeoutSeconds": 3},
    })
}

fn one_at_a_time() -> Value {
    json!({"strategyType": "one-at-a-time"})
}

impl Bed {
    /// The controller, then the five nodes installed at `r1` (hosts `node-1`..`node-5`
    /// in it) and Ready; `gated`: that node's switch-to-configuration waits for `gate`.
    async fn new(fleet: Fleet, r1: &str, gated: Option<(&str, &Path)>) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let root = Authority::new_root(CLUSTER, YEAR).unwrap();
        let sub = root.new_sub_ca("controllers", YEAR).unwrap();
        let ctl = sub
            .issue(
                &Identity::new(CLUSTER, Role::Controller, "ctl1").unwrap(),
                &["localhost".into(), "127.0.0.1".into()],
                YEAR,
            )
            .unwrap();
        let config = ControllerConfig {
            controller_id: "ctl1".into(),
            cluster_name: CLUSTER.into(),
            dc_id: "DC1".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            require_manual_approval: false,
            peers: vec![],
            heartbeat_timeout_seconds: 45,
            database_path: d.join("state.sqlite"),
            connections: Default::default(),
            max_clock_skew_seconds: 60,
            advertise_address: None,
            compaction: Default::default(),
            tls: ControllerTls {
                ca_file: write(d, "ca.crt", root.cert_pem()),
                cert_file: write(d, "controller.crt", &ctl.cert_pem),
                key_file: write(d, "controller.key", &ctl.key_pem),
                sub_ca_cert_file: write(d, "sub-ca.crt", sub.cert_pem()),
                sub_ca_key_file: write(d, "sub-ca.key", sub.key_pem()),
            },
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let alice = root
            .issue(
                &Identity::new(CLUSTER, Role::Admin, "alice").unwrap(),
                &[],
                YEAR,
            )
            .unwrap();
        let tls =
            kcore_pki::client_config(root.cert_pem(), &alice.cert_pem, &alice.key_pem).unwrap();
        let admin = Client::new(
            vec![format!("https://{addr}")],
            tls,
            ClientOptions::default(),
        )
        .unwrap();
        let mut nodes = Vec::new();
        for id in NODES {
            let gate = gated.filter(|(g, _)| *g == id).map(|(_, p)| p);
            let mut node = FleetNode::installed(&fleet, r1, gate, None);
            // The node's key and CSR made on the node, signed by the controllers' sub-CA.
            let ident = Identity::new(CLUSTER, Role::Node, id).unwrap();
            let (key, csr) =
                kcore_pki::generate_csr(&ident, &["localhost".into(), "127.0.0.1".into()]).unwrap();
            let cert = sub.sign_csr(&csr, &ident, YEAR).unwrap();
            let nd = node.node.path("");
            node.extra["nodeId"] = json!(id);
            node.extra["controllers"] = json!([addr]);
            node.extra["heartbeatIntervalSeconds"] = json!(1);
            node.extra["tls"] = json!({
                "caFile": write(&nd, "cluster-ca.crt", root.cert_pem()),
                "certFile": write(&nd, "cluster-node.crt", &cert),
                "keyFile": write(&nd, "cluster-node.key", &key),
            });
            nodes.push(node);
        }
        let mut bed = Bed {
            dir,
            fleet,
            config,
            addr,
            stop: None,
            task: None,
            admin,
            nodes,
        };
        bed.start_controller(Some(listener)).await;
        for node in &mut bed.nodes {
            node.start().await;
        }
        bed.until("five Ready nodes", |bed| async move {
            let list: NodeList = bed.admin.get_json("/v1/nodes").await.ok()?;
            let ready = list
                .items
                .iter()
                .filter(|n| n.status == NodeStatus::Ready)
                .count();
            (ready == NODES.len()).then_some(())
        })
        .await;
        bed
    }

    /// Starts the controller on its address (the first time on the listener `new` bound).
    async fn start_controller(&mut self, listener: Option<tokio::net::TcpListener>) {
        let listener = match listener {
            Some(l) => l,
            None => tokio::net::TcpListener::bind(&self.addr).await.unwrap(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(kcore_controller::run(
            listener,
            self.config.clone(),
            async move {
                let _ = stopped.await;
            },
        )));
    }

    async fn stop_controller(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Polls `check` (every 100 ms, at most 2 minutes: a bounded wait for a state, not a
    /// timing assertion).
    async fn until<'a, T, F, Fut>(&'a self, what: &str, check: F) -> T
    where
        F: Fn(&'a Bed) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        for _ in 0..1200 {
            if let Some(t) = check(self).await {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never: {what}");
    }

    async fn apply_spec(&self, name: &str, spec: Value) {
        let body = json!({"kind": "ClusterUpdate", "metadata": {"name": name}, "spec": spec});
        let _: Value = self
            .admin
            .put_json(&format!("/v1/clusterupdates/{name}"), &body)
            .await
            .unwrap();
    }

    /// One at a time, approved at once, no failure allowed.
    async fn apply(&self, name: &str, rev: &str) {
        self.apply_spec(name, spec(&self.fleet, rev, one_at_a_time(), "auto", 0))
            .await;
    }

    async fn get(&self, name: &str) -> Option<Value> {
        self.admin
            .get_json(&format!("/v1/clusterupdates/{name}"))
            .await
            .ok()
    }

    async fn wait_phase(&self, name: &str, phases: &[&str]) -> Value {
        self.until(&format!("{name} in {phases:?}"), |bed| async move {
            let v = bed.get(name).await?;
            let p = v.pointer("/status/phase")?.as_str()?;
            phases.contains(&p).then_some(v)
        })
        .await
    }

    async fn wait_done(&self, name: &str) -> Value {
        self.wait_phase(name, &["succeeded", "halted", "failed", "cancelled"])
            .await
    }

    fn index(id: &str) -> usize {
        NODES.iter().position(|n| *n == id).unwrap()
    }

    fn node(&self, id: &str) -> &FleetNode {
        &self.nodes[Self::index(id)]
    }

    /// The nodes whose switch-to-configuration ran at all.
    fn started(&self) -> Vec<&'static str> {
        NODES
            .iter()
            .copied()
            .filter(|id| !self.node(id).log("activations").is_empty())
            .collect()
    }

    /// Waits until `id`'s switch-to-configuration stand-in has logged a call.
    async fn until_activating(&self, id: &str) {
        self.until(&format!("{id} activating"), |bed| async move {
            (!bed.node(id).log("activations").is_empty()).then_some(())
        })
        .await;
    }

    /// Until rollout `name` ends, performs each reboot a node asks for (a line in its
    /// `reboots` log) with the rig's simulated reboot; the final object.
    async fn drive_reboots(&mut self, name: &str) -> Value {
        let mut done = vec![0usize; NODES.len()];
        for _ in 0..1200 {
            if let Some(v) = self.get(name).await
                && let Some(p) = v.pointer("/status/phase").and_then(Value::as_str)
                && ["succeeded", "halted", "failed", "cancelled"].contains(&p)
            {
                return v;
            }
            for (i, done) in done.iter_mut().enumerate() {
                if self.nodes[i].log("reboots").len() > *done {
                    *done += 1;
                    self.nodes[i].reboot().await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("rollout {name} never ended");
    }

    /// The agent's report of `id`'s step in the rollout (the one its assignment progress
    /// names), read from the node's operations directory (the agent serves with the
    /// cluster's certificate here, not the rig's admin one).
    fn step_report(&self, id: &str) -> StepReport {
        let ops = self.node(id).node.path("operations");
        let progress = kcore_agent::rollout::assignment::load_progress(&ops).unwrap();
        let op = progress.activate_op.or(progress.prepare_op).unwrap();
        kcore_agent::rollout::state::load_report(&ops, &op).unwrap()
    }

    /// Stops everything, then checks the timeline of each `(rollout, maxUnavailable)` on
    /// the controller's database; the records of the first.
    async fn finish(mut self, rollouts: &[(&str, usize)]) -> Vec<records::StepRecord> {
        for n in &mut self.nodes {
            n.stop().await;
        }
        self.stop_controller().await;
        let store =
            kcore_controller::store::Store::open(&self.config.database_path, "ctl1").unwrap();
        let mut first = None;
        for (name, cap) in rollouts {
            let recs = records::records(&store, name);
            if let Err(why) = timeline::check(&recs, *cap) {
                panic!("rollout {name}: {why}\n{recs:#?}");
            }
            first.get_or_insert(recs);
        }
        drop(store);
        drop(self.dir);
        first.unwrap_or_default()
    }
}

fn hosts(label: &str, failing: Option<&str>) -> Vec<(&'static str, Value)> {
    NODES
        .iter()
        .map(|id| {
            let activate = if failing == Some(*id) { "fail" } else { "ok" };
            (*id, host(activate, "ok", "6.6.1", label))
        })
        .collect()
}

fn revisions(failing: Option<&str>) -> Option<(Fleet, String, String)> {
    let fleet = Fleet::new()?;
    let r1 = fleet.commit(&hosts("r1", None));
    let r2 = fleet.commit(&hosts("r2", failing));
    Some((fleet, r1, r2))
}

/// r1 with every host healthy, r2 with `change` applied to the host files.
fn revisions_with(change: impl Fn(&str, &mut Value)) -> Option<(Fleet, String, String)> {
    let fleet = Fleet::new()?;
    let r1 = fleet.commit(&hosts("r1", None));
    let mut r2 = hosts("r2", None);
    for (id, file) in &mut r2 {
        change(id, file);
    }
    let r2: Vec<(&str, Value)> = r2.into_iter().filter(|(_, f)| !f.is_null()).collect();
    let r2 = fleet.commit(&r2);
    Some((fleet, r1, r2))
}

/// The toplevel each node should run at `rev`, built by the test.
fn expected(bed: &Bed, rev: &str, id: &str) -> PathBuf {
    bed.fleet
        .build(rev, id, &bed.dir.path().join(format!("{id}-{}", &rev[..8])))
}

fn row<'a>(cu: &'a Value, id: &str) -> &'a Value {
    cu["status"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["nodeId"] == id)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_one_at_a_time_moves_five_real_agents_each_activated_once_with_fleet_flake() {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    bed.apply("u1", &r2).await;
    let done = bed.wait_done("u1").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    for id in NODES {
        let new = expected(&bed, &r2, id);
        let node = bed.node(id);
        assert_eq!(node.link("nix/var/nix/profiles/system"), new, "{id}");
        assert_eq!(node.link("run/current-system"), new, "{id}");
        assert_eq!(
            node.log("activations"),
            [format!("switch {}", new.display())],
            "{id} activated exactly once"
        );
    }
    bed.finish(&[("u1", 1)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_a_failing_activation_halts_and_that_node_is_reverted_with_fleet_flake() {
    let Some((fleet, r1, r2)) = revisions(Some("node-2")) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    let installed = bed.node("node-2").link("run/current-system");
    bed.apply("u2", &r2).await;
    let done = bed.wait_done("u2").await;
    assert_eq!(done["status"]["phase"], "halted", "{done:#}");
    let failed = bed.node("node-2");
    assert_eq!(failed.link("run/current-system"), installed, "reverted");
    assert_eq!(failed.link("nix/var/nix/profiles/system"), installed);
    // One at a time: the nodes after the failed one never started.
    let started = bed.started();
    assert!(started.contains(&"node-2"), "{started:?}");
    assert_eq!(started.len(), 2, "halted after the failure: {started:?}");
    bed.finish(&[("u2", 1)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_an_agent_restarted_mid_step_reattaches_and_the_rollout_succeeds_with_fleet_flake()
 {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("open");
    let mut bed = Bed::new(fleet, &r1, Some(("node-3", &gate))).await;
    bed.apply("u3", &r2).await;
    // node-3's switch-to-configuration has started (it logged) and waits at the gate.
    bed.until_activating("node-3").await;
    let i = Bed::index("node-3");
    bed.nodes[i].stop().await;
    bed.nodes[i].start().await;
    std::fs::write(&gate, "").unwrap();
    let done = bed.wait_done("u3").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    for id in NODES {
        let new = expected(&bed, &r2, id);
        assert_eq!(bed.node(id).link("run/current-system"), new, "{id}");
        assert_eq!(
            bed.node(id).log("activations"),
            [format!("switch {}", new.display())],
            "{id} activated exactly once"
        );
    }
    bed.finish(&[("u3", 1)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_batch_and_canary_move_every_node_once_within_max_unavailable_with_fleet_flake()
 {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let r3 = fleet.commit(&hosts("r3", None));
    let bed = Bed::new(fleet, &r1, None).await;
    let batch = json!({"strategyType": "batch", "batchSize": 3, "maxUnavailable": 2});
    bed.apply_spec("batch", spec(&bed.fleet, &r2, batch, "auto", 0))
        .await;
    let done = bed.wait_done("batch").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    let canary =
        json!({"strategyType": "canary", "canaryCount": 1, "batchSize": 4, "maxUnavailable": 4});
    bed.apply_spec("canary", spec(&bed.fleet, &r3, canary, "auto", 0))
        .await;
    let done = bed.wait_done("canary").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    for id in NODES {
        let (two, three) = (expected(&bed, &r2, id), expected(&bed, &r3, id));
        assert_eq!(bed.node(id).link("run/current-system"), three, "{id}");
        assert_eq!(
            bed.node(id).log("activations"),
            [
                format!("switch {}", two.display()),
                format!("switch {}", three.display())
            ],
            "{id}: one activation per rollout"
        );
    }
    let canary_recs = bed.finish(&[("canary", 4), ("batch", 2)]).await;
    // The canary's step ended before any other node was assigned.
    let at = |node: &str, what: &str| {
        canary_recs
            .iter()
            .find(|r| r.node == node && r.what == what)
            .map(|r| r.at.clone())
            .unwrap()
    };
    for id in &NODES[1..] {
        assert!(
            at("node-1", "succeeded") <= at(id, records::ASSIGNED),
            "{id} started before the canary ended"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_a_host_missing_at_the_rev_fails_prepare_and_halts_a_batch_with_fleet_flake()
{
    let Some((fleet, r1, r2)) = revisions_with(|id, file| {
        if id == "node-3" {
            *file = Value::Null;
        }
    }) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    let installed = bed.node("node-3").link("run/current-system");
    let batch = json!({"strategyType": "batch", "batchSize": 2, "maxUnavailable": 2});
    bed.apply_spec("p", spec(&bed.fleet, &r2, batch, "auto", 0))
        .await;
    let done = bed.wait_done("p").await;
    assert_eq!(done["status"]["phase"], "halted", "{done:#}");
    let failed = row(&done, "node-3");
    assert_eq!(failed["phase"], "failed", "{done:#}");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("nix build failed"), "{reason}");
    // Nothing changed on node-3; the third batch (node-5) never started.
    assert_eq!(bed.node("node-3").link("run/current-system"), installed);
    assert!(bed.node("node-3").log("activations").is_empty());
    assert!(!bed.started().contains(&"node-5"), "{:?}", bed.started());
    assert_eq!(row(&done, "node-5")["phase"], "pending");
    bed.finish(&[("p", 2)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_a_degraded_canary_reverts_and_halts_before_the_rest_with_fleet_flake() {
    let Some((fleet, r1, r2)) = revisions_with(|id, file| {
        if id == "node-1" {
            file["health"] = json!("degraded");
        }
    }) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    let installed = bed.node("node-1").link("run/current-system");
    // A canary that fails halts even with failures to spare.
    let canary =
        json!({"strategyType": "canary", "canaryCount": 1, "batchSize": 2, "maxUnavailable": 2});
    bed.apply_spec("d", spec(&bed.fleet, &r2, canary, "auto", 3))
        .await;
    let done = bed.wait_done("d").await;
    assert_eq!(done["status"]["phase"], "halted", "{done:#}");
    assert_eq!(row(&done, "node-1")["phase"], "reverted", "{done:#}");
    let report = bed.step_report("node-1");
    assert_eq!(report.failed_units, ["kcore-fleet-probe.service"]);
    assert!(report.reason.unwrap().contains("degraded"));
    assert_eq!(bed.node("node-1").link("run/current-system"), installed);
    assert_eq!(bed.started(), ["node-1"]);
    bed.finish(&[("d", 2)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_health_that_never_arrives_reverts_one_node_within_the_failure_budget_with_fleet_flake()
 {
    let Some((fleet, r1, r2)) = revisions_with(|id, file| {
        if id == "node-4" {
            file["health"] = json!("never");
        }
    }) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    let installed = bed.node("node-4").link("run/current-system");
    let batch = json!({"strategyType": "batch", "batchSize": 5, "maxUnavailable": 5});
    bed.apply_spec("h", spec(&bed.fleet, &r2, batch, "auto", 1))
        .await;
    let done = bed.wait_done("h").await;
    // One failure is within maxFailures 1: the rollout ends succeeded with node-4 reverted.
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    let reverted = row(&done, "node-4");
    assert_eq!(reverted["phase"], "reverted", "{done:#}");
    let reason = reverted["reason"].as_str().unwrap();
    assert!(reason.contains("not healthy within 3 s"), "{reason}");
    assert_eq!(bed.node("node-4").link("run/current-system"), installed);
    for id in ["node-1", "node-2", "node-3", "node-5"] {
        assert_eq!(row(&done, id)["phase"], "succeeded", "{id}");
        assert_eq!(
            bed.node(id).link("run/current-system"),
            expected(&bed, &r2, id)
        );
    }
    bed.finish(&[("h", 5)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_a_kernel_change_is_a_trial_boot_kept_when_healthy_and_reverted_when_not_with_fleet_flake()
 {
    let Some((fleet, r1, r2)) = revisions_with(|id, file| match id {
        "node-1" => file["kernel"] = json!("6.12.1"),
        "node-2" => {
            file["kernel"] = json!("6.12.1");
            file["health"] = json!("never");
        }
        _ => {}
    }) else {
        return;
    };
    let mut bed = Bed::new(fleet, &r1, None).await;
    let installed = bed.node("node-2").link("run/current-system");
    // As on a real node, `systemctl reboot` does not return before the agent is stopped:
    // the activation never records its end, and the agent after the boot re-attaches it.
    for id in ["node-1", "node-2"] {
        std::fs::write(bed.node(id).root("run/kcore-stand-in/reboot-blocks"), "").unwrap();
    }
    let batch = json!({"strategyType": "batch", "batchSize": 5, "maxUnavailable": 5});
    bed.apply_spec("k", spec(&bed.fleet, &r2, batch, "auto", 1))
        .await;
    let done = bed.drive_reboots("k").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    // node-1: booted once into the new kernel, healthy, now the default entry.
    let new = expected(&bed, &r2, "node-1");
    let one = bed.node("node-1");
    assert_eq!(row(&done, "node-1")["phase"], "succeeded", "{done:#}");
    assert_eq!(one.link("run/booted-system"), new);
    assert_eq!(one.log("activations"), [format!("boot {}", new.display())]);
    assert_eq!(one.log("reboots").len(), 1);
    assert_eq!(
        one.efi("LoaderEntryDefault").as_deref(),
        Some("nixos-generation-2.conf")
    );
    // node-2: the trial boot never became healthy: the previous generation back, booted
    // by exactly one more reboot.
    let two = bed.node("node-2");
    assert_eq!(row(&done, "node-2")["phase"], "reverted", "{done:#}");
    assert_eq!(two.link("run/booted-system"), installed);
    assert_eq!(two.link("nix/var/nix/profiles/system"), installed);
    assert_eq!(
        two.log("reboots").len(),
        2,
        "one trial boot, one revert boot: {:?} {:?}",
        two.log("bootctl"),
        two.log("activations")
    );
    assert_eq!(
        two.efi("LoaderEntryDefault").as_deref(),
        Some("nixos-generation-1.conf")
    );
    // The others switched without a reboot.
    for id in ["node-3", "node-4", "node-5"] {
        assert!(bed.node(id).log("reboots").is_empty(), "{id}");
    }
    bed.finish(&[("k", 5)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_cancel_lets_the_node_mid_activation_finish_and_starts_no_other_with_fleet_flake()
 {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("open");
    let bed = Bed::new(fleet, &r1, Some(("node-2", &gate))).await;
    bed.apply("c", &r2).await;
    bed.until_activating("node-2").await;
    let _: Value = bed
        .admin
        .post_json("/v1/clusterupdates/c/cancel", &json!({}))
        .await
        .unwrap();
    let done = bed.wait_phase("c", &["cancelled"]).await;
    std::fs::write(&gate, "").unwrap();
    // node-2 finishes its step on its own; nothing after it starts.
    let new = expected(&bed, &r2, "node-2");
    bed.until("node-2 on the new system", |bed| {
        let new = new.clone();
        async move { (bed.node("node-2").link("run/current-system") == new).then_some(()) }
    })
    .await;
    assert_eq!(bed.started(), ["node-1", "node-2"], "{done:#}");
    bed.finish(&[("c", 1)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_manual_approval_holds_every_node_until_approved_with_fleet_flake() {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    let canary =
        json!({"strategyType": "canary", "canaryCount": 2, "batchSize": 3, "maxUnavailable": 3});
    bed.apply_spec("m", spec(&bed.fleet, &r2, canary, "manual", 0))
        .await;
    bed.wait_phase("m", &["awaiting_approval"]).await;
    // Held: a heartbeat round later still nothing started.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(bed.started().is_empty(), "{:?}", bed.started());
    assert_eq!(
        bed.get("m").await.unwrap()["status"]["phase"],
        "awaiting_approval"
    );
    let _: Value = bed
        .admin
        .post_json("/v1/clusterupdates/m/approve", &json!({}))
        .await
        .unwrap();
    let done = bed.wait_done("m").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    assert_eq!(bed.started().len(), 5);
    bed.finish(&[("m", 3)]).await;
}

/// node-1 hosts the controller: its switch restarts the controller's unit. The test stops
/// the controller while node-1's switch-to-configuration runs and starts it again after,
/// as systemd would; node-1's health gate waits for a controller to answer, the engine
/// carries on from its database, and no node runs twice.
#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_the_controllers_own_node_restarts_it_mid_step_and_the_rollout_resumes_with_fleet_flake()
 {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("open");
    let mut bed = Bed::new(fleet, &r1, Some(("node-1", &gate))).await;
    // Time enough for the controller to come back before node-1's gate gives up.
    let mut own = spec(&bed.fleet, &r2, one_at_a_time(), "auto", 0);
    own["activation"]["healthTimeoutSeconds"] = json!(60);
    bed.apply_spec("own", own).await;
    bed.until_activating("node-1").await;
    bed.stop_controller().await;
    std::fs::write(&gate, "").unwrap();
    // The new system is in place but the gate has not passed: no controller answers.
    let new = expected(&bed, &r2, "node-1");
    bed.until("node-1 switched", |bed| {
        let new = new.clone();
        async move {
            (system_link(bed.node("node-1"), "run/current-system") == Some(new)).then_some(())
        }
    })
    .await;
    bed.start_controller(None).await;
    let done = bed.wait_done("own").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    for id in NODES {
        let new = expected(&bed, &r2, id);
        assert_eq!(bed.node(id).link("run/current-system"), new, "{id}");
        assert_eq!(
            bed.node(id).log("activations"),
            [format!("switch {}", new.display())],
            "{id} activated exactly once"
        );
    }
    bed.finish(&[("own", 1)]).await;
}

/// The health gate's third condition: a node that cannot reach a controller after its
/// switch is not healthy, and reverts on its own (the report waits for the controller).
#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_a_controller_unreachable_during_verify_reverts_the_node_with_fleet_flake() {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("open");
    let mut bed = Bed::new(fleet, &r1, Some(("node-1", &gate))).await;
    let installed = bed.node("node-1").link("run/current-system");
    bed.apply("unreach", &r2).await;
    bed.until_activating("node-1").await;
    bed.stop_controller().await;
    std::fs::write(&gate, "").unwrap();
    // The revert's switch is the stand-in's second call.
    bed.until("node-1 reverted", |bed| {
        let installed = installed.clone();
        async move {
            (bed.node("node-1").log("activations").len() == 2
                && system_link(bed.node("node-1"), "run/current-system") == Some(installed))
            .then_some(())
        }
    })
    .await;
    let report = bed
        .until("the revert reported on the node", |bed| async move {
            let r = bed.step_report("node-1");
            (r.phase == kcore_api::rollout::StepPhase::Reverted).then_some(r)
        })
        .await;
    let reason = report.reason.unwrap();
    assert!(
        reason.contains("not healthy within 3 s") && reason.contains("cannot reach a controller"),
        "{reason}"
    );
    // Back online, the controller learns of the revert and halts the rollout.
    bed.start_controller(None).await;
    let done = bed.wait_done("unreach").await;
    assert_eq!(done["status"]["phase"], "halted", "{done:#}");
    assert_eq!(row(&done, "node-1")["phase"], "reverted");
    assert_eq!(bed.started(), ["node-1"]);
    bed.finish(&[("unreach", 1)]).await;
}

/// Where a link under the node's root points now (`None` while it is being replaced).
fn system_link(node: &FleetNode, rel: &str) -> Option<PathBuf> {
    std::fs::canonicalize(node.root(rel)).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_rollback_returns_five_real_agents_to_their_installed_generation_in_reverse_with_fleet_flake()
 {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    let installed: Vec<PathBuf> = NODES
        .iter()
        .map(|id| bed.node(id).link("run/current-system"))
        .collect();
    bed.apply("u4", &r2).await;
    let done = bed
        .wait_phase("u4", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    let _: Value = bed
        .admin
        .post_json("/v1/clusterupdates/u4/rollback", &json!({}))
        .await
        .unwrap();
    let back = bed.wait_phase("u4", &["rolled_back", "failed"]).await;
    assert_eq!(back["status"]["phase"], "rolled_back", "{back:#}");
    let rows = back["status"]["nodes"].as_array().unwrap();
    for (i, id) in NODES.iter().enumerate() {
        let new = expected(&bed, &r2, id);
        let node = bed.node(id);
        // The installed system runs again, through the profile (a new generation).
        assert_eq!(node.link("run/current-system"), installed[i], "{id}");
        assert_eq!(
            node.link("nix/var/nix/profiles/system"),
            installed[i],
            "{id}"
        );
        assert_eq!(
            node.log("activations"),
            [
                format!("switch {}", new.display()),
                format!("switch {}", installed[i].display())
            ],
            "{id}: updated once, rolled back once"
        );
        let row = &rows[i];
        assert_eq!(row["phase"], "rolled_back", "{row:#}");
        assert_eq!(
            row["previous"]["storePath"],
            installed[i].display().to_string(),
            "{row:#}"
        );
        assert_eq!(
            row["generation"]["storePath"],
            installed[i].display().to_string(),
            "{row:#}"
        );
    }
    // Reverse order, one at a time: each rollback started after the one before it ended.
    let mut spans: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["nodeId"].as_str().unwrap(),
                r["rollbackStartedAt"].as_str().unwrap(),
                r["rollbackFinishedAt"].as_str().unwrap(),
            )
        })
        .collect();
    spans.sort_by_key(|(_, started, _)| *started);
    let order: Vec<&str> = spans.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(order, ["node-5", "node-4", "node-3", "node-2", "node-1"]);
    assert!(spans.windows(2).all(|w| w[0].2 <= w[1].1), "{spans:?}");
    bed.finish(&[("u4", 1)]).await;
}
