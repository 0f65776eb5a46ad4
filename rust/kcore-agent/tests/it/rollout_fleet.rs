//! Rollouts end to end (issue 12): a real controller in-process on 127.0.0.1 and five real
//! agents (`rollout_rig` nodes on the real fleet flake) that register, long-poll their
//! assignment through the registration client and run the step with their own prepare and
//! activate (`kcore_agent::rollout::assignment`). What each node did is read back from its
//! fake root (profile, `run/current-system`, the stand-in's activation log) and the
//! rollout's outcome from the controller. Names say `with_fleet_flake`: they need
//! `tests/support`.

use kcore_api::cluster::{NodeList, NodeStatus};
use kcore_controller::config::{ControllerConfig, ControllerTls};
use serde_json::Value;

use crate::rollout_rig::{Fleet, FleetNode, host};
use crate::support::*;

const CLUSTER: &str = "lab";
const NODES: [&str; 5] = ["node-1", "node-2", "node-3", "node-4", "node-5"];
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

struct Bed {
    dir: tempfile::TempDir,
    fleet: Fleet,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), kcore_controller::ControllerError>>>,
    admin: Client,
    nodes: Vec<FleetNode>,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
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
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(kcore_controller::run(listener, config, async move {
            let _ = stopped.await;
        }));
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
            node.start().await;
            nodes.push(node);
        }
        let bed = Bed {
            dir,
            fleet,
            stop: Some(stop),
            task: Some(task),
            admin,
            nodes,
        };
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

    async fn apply(&self, name: &str, rev: &str) {
        let body = json!({
            "kind": "ClusterUpdate",
            "metadata": {"name": name},
            "spec": {
                "target": {"flakeRef": self.fleet.flake_ref(), "flakeRev": rev},
                "selector": {"allNodes": true},
                "strategy": {"strategyType": "one-at-a-time"},
                "approvalPolicy": "auto",
                "maxFailures": 0,
            },
        });
        let _: Value = self
            .admin
            .put_json(&format!("/v1/clusterupdates/{name}"), &body)
            .await
            .unwrap();
    }

    async fn wait_phase(&self, name: &str, phases: &[&str]) -> Value {
        let path = format!("/v1/clusterupdates/{name}");
        self.until(&format!("{name} in {phases:?}"), |bed| {
            let path = path.clone();
            async move {
                let v: Value = bed.admin.get_json(&path).await.ok()?;
                let p = v.pointer("/status/phase")?.as_str()?;
                phases.contains(&p).then_some(v)
            }
        })
        .await
    }

    fn node(&self, id: &str) -> &FleetNode {
        &self.nodes[NODES.iter().position(|n| *n == id).unwrap()]
    }

    async fn stop(mut self) {
        for n in &mut self.nodes {
            n.stop().await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        drop(self.dir);
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

/// The toplevel each node should run at `rev`, built by the test.
fn expected(bed: &Bed, rev: &str, id: &str) -> PathBuf {
    bed.fleet
        .build(rev, id, &bed.dir.path().join(format!("{id}-{}", &rev[..8])))
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_one_at_a_time_moves_five_real_agents_each_activated_once_with_fleet_flake() {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    bed.apply("u1", &r2).await;
    let done = bed
        .wait_phase("u1", &["succeeded", "halted", "failed"])
        .await;
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
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_a_failing_activation_halts_and_that_node_is_reverted_with_fleet_flake() {
    let Some((fleet, r1, r2)) = revisions(Some("node-2")) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    let installed = bed.node("node-2").link("run/current-system");
    bed.apply("u2", &r2).await;
    let done = bed
        .wait_phase("u2", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(done["status"]["phase"], "halted", "{done:#}");
    let failed = bed.node("node-2");
    assert_eq!(failed.link("run/current-system"), installed, "reverted");
    assert_eq!(failed.link("nix/var/nix/profiles/system"), installed);
    // One at a time: the nodes after the failed one never started.
    let started: Vec<&str> = NODES
        .iter()
        .copied()
        .filter(|id| !bed.node(id).log("activations").is_empty())
        .collect();
    assert!(started.contains(&"node-2"), "{started:?}");
    assert_eq!(started.len(), 2, "halted after the failure: {started:?}");
    bed.stop().await;
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
    bed.until("node-3 activating", |bed| async move {
        (!bed.node("node-3").log("activations").is_empty()).then_some(())
    })
    .await;
    let i = NODES.iter().position(|n| *n == "node-3").unwrap();
    bed.nodes[i].stop().await;
    bed.nodes[i].start().await;
    std::fs::write(&gate, "").unwrap();
    let done = bed
        .wait_phase("u3", &["succeeded", "halted", "failed"])
        .await;
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
    bed.stop().await;
}
