//! The bed of the fleet rollout tests (`rollout_fleet`, `rollout_fleet_kill`): real
//! controllers on 127.0.0.1 and five real agents (`rollout_rig` nodes on the real fleet
//! flake) that register, long-poll their assignment through the registration client and run
//! the step with their own prepare and activate (`kcore_agent::rollout::assignment`).
//! Controllers and agents run in-process by default; a [`Shape`] makes them OS processes
//! (`rollout_proc`) where a test kills one with SIGKILL, and adds a second, replicating
//! controller. Every test ends with [`Bed::finish`]: the step records read from a
//! controller's database and checked by the one timeline checker
//! (`kcore_controller::rollout::records::timeline`: never more than the strategy's
//! `maxUnavailable` between activation start and the end of the step, no node assigned or
//! activated twice).

use kcore_api::cluster::{NodeList, NodeStatus};
use kcore_api::rollout::StepReport;
use kcore_controller::config::{ControllerConfig, ControllerTls};
use kcore_controller::rollout::records::{self, timeline};
pub use serde_json::Value;

use crate::rollout_proc::{ChildProcess, ChildSpec};
pub use crate::rollout_rig::{Fleet, FleetNode, host};
pub use crate::support::*;

const CLUSTER: &str = "lab";
pub const NODES: [&str; 5] = ["node-1", "node-2", "node-3", "node-4", "node-5"];
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

type ControllerTask = tokio::task::JoinHandle<Result<(), kcore_controller::ControllerError>>;

/// A running controller: in-process (stopped gracefully) or a process (SIGKILL possible).
enum Ctl {
    Task {
        stop: tokio::sync::oneshot::Sender<()>,
        task: ControllerTask,
    },
    Process(ChildProcess),
}

/// How the bed runs its parts.
#[derive(Clone, Copy, Default)]
pub struct Shape {
    /// Controllers `ctl1`, `ctl2`, ... each a peer of the others (0 means 1). With more
    /// than one, the clock bound is 1 s, so a lapsed lease is taken over after 30 s + 1 s.
    pub controllers: usize,
    pub controller_processes: bool,
    pub agent_processes: bool,
}

pub struct Bed {
    pub dir: tempfile::TempDir,
    pub fleet: Fleet,
    configs: Vec<ControllerConfig>,
    ctls: Vec<Option<Ctl>>,
    shape: Shape,
    /// Controller `ctl1`'s admin; `admins[i]` each controller's.
    pub admin: Client,
    pub admins: Vec<Client>,
    pub nodes: Vec<FleetNode>,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A rollout's spec to r`rev` over all nodes: `strategy`, `approvalPolicy`, `maxFailures`
/// and `activation` as given (`{}` keeps the defaults).
pub fn spec(fleet: &Fleet, rev: &str, strategy: Value, approval: &str, max_failures: u32) -> Value {
    json!({
        "target": {"flakeRef": fleet.flake_ref(), "flakeRev": rev},
        "selector": {"allNodes": true},
        "strategy": strategy,
        "approvalPolicy": approval,
        "maxFailures": max_failures,
        "activation": {"mode": "auto", "healthTimeoutSeconds": 3},
    })
}

pub fn one_at_a_time() -> Value {
    json!({"strategyType": "one-at-a-time"})
}

impl Bed {
    /// One controller and the five agents in-process: see [`Bed::with`].
    pub async fn new(fleet: Fleet, r1: &str, gated: Option<(&str, &Path)>) -> Bed {
        Bed::with(fleet, r1, gated, Shape::default()).await
    }

    /// The controllers, then the five nodes installed at `r1` (hosts `node-1`..`node-5`
    /// in it), configured with every controller in order, and Ready; `gated`: that node's
    /// switch-to-configuration waits for `gate`.
    pub async fn with(fleet: Fleet, r1: &str, gated: Option<(&str, &Path)>, shape: Shape) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let root = Authority::new_root(CLUSTER, YEAR).unwrap();
        let sub = root.new_sub_ca("controllers", YEAR).unwrap();
        let count = shape.controllers.max(1);
        // The first in-process controller serves on the listener bound here; processes
        // (and more controllers) get a free port first, since each config names its peers.
        let first = if shape.controller_processes {
            None
        } else {
            Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
        };
        let addrs: Vec<String> = (0..count)
            .map(|i| match (&first, i) {
                (Some(l), 0) => format!("127.0.0.1:{}", l.local_addr().unwrap().port()),
                _ => format!("127.0.0.1:{}", free_port()),
            })
            .collect();
        let ca_file = write(d, "ca.crt", root.cert_pem());
        let configs: Vec<ControllerConfig> = (0..count)
            .map(|i| {
                let id = format!("ctl{}", i + 1);
                let ctl = sub
                    .issue(
                        &Identity::new(CLUSTER, Role::Controller, &id).unwrap(),
                        &["localhost".into(), "127.0.0.1".into()],
                        YEAR,
                    )
                    .unwrap();
                ControllerConfig {
                    controller_id: id.clone(),
                    cluster_name: CLUSTER.into(),
                    dc_id: "DC1".into(),
                    listen: addrs[i].parse().unwrap(),
                    require_manual_approval: false,
                    peers: addrs
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, a)| a.clone())
                        .collect(),
                    heartbeat_timeout_seconds: 45,
                    database_path: d.join(format!("{id}.sqlite")),
                    connections: Default::default(),
                    max_clock_skew_seconds: if count > 1 { 1 } else { 60 },
                    advertise_address: None,
                    compaction: Default::default(),
                    tls: ControllerTls {
                        ca_file: ca_file.clone(),
                        cert_file: write(d, &format!("{id}.crt"), &ctl.cert_pem),
                        key_file: write(d, &format!("{id}.key"), &ctl.key_pem),
                        sub_ca_cert_file: write(d, "sub-ca.crt", sub.cert_pem()),
                        sub_ca_key_file: write(d, "sub-ca.key", sub.key_pem()),
                    },
                }
            })
            .collect();
        let alice = root
            .issue(
                &Identity::new(CLUSTER, Role::Admin, "alice").unwrap(),
                &[],
                YEAR,
            )
            .unwrap();
        let tls =
            kcore_pki::client_config(root.cert_pem(), &alice.cert_pem, &alice.key_pem).unwrap();
        let admins: Vec<Client> = addrs
            .iter()
            .map(|a| {
                Client::new(
                    vec![format!("https://{a}")],
                    tls.clone(),
                    ClientOptions::default(),
                )
                .unwrap()
            })
            .collect();
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
            node.extra["controllers"] = json!(addrs);
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
            configs,
            ctls: (0..count).map(|_| None).collect(),
            shape,
            admin: admins[0].clone(),
            admins,
            nodes,
        };
        bed.start_controller_on(0, first).await;
        for i in 1..count {
            bed.start_controller_on(i, None).await;
        }
        for node in &mut bed.nodes {
            if shape.agent_processes {
                node.start_process().await;
            } else {
                node.start().await;
            }
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

    /// Starts controller `ctl1` again on its address and database.
    pub async fn start_controller(&mut self, listener: Option<tokio::net::TcpListener>) {
        self.start_controller_on(0, listener).await;
    }

    /// Starts controller `i` on its address and database (the first in-process one on the
    /// listener `with` bound), as a process when the shape says so; returns once it answers.
    pub async fn start_controller_on(
        &mut self,
        i: usize,
        listener: Option<tokio::net::TcpListener>,
    ) {
        assert!(self.ctls[i].is_none(), "controller {i} already runs");
        let config = self.configs[i].clone();
        let ctl = if self.shape.controller_processes {
            let spec = ChildSpec::Controller {
                config: Box::new(config),
            };
            Ctl::Process(ChildProcess::spawn(
                self.dir.path(),
                &self.configs[i].controller_id,
                &spec,
            ))
        } else {
            let listener = match listener {
                Some(l) => l,
                None => tokio::net::TcpListener::bind(config.listen).await.unwrap(),
            };
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(kcore_controller::run(listener, config, async move {
                let _ = stopped.await;
            }));
            Ctl::Task { stop, task }
        };
        self.ctls[i] = Some(ctl);
        self.until(&format!("controller {i} answers"), |bed| async move {
            bed.admins[i]
                .get_json::<NodeList>("/v1/nodes")
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }

    /// Stops controller `ctl1` gracefully.
    pub async fn stop_controller(&mut self) {
        self.stop_controller_on(0).await;
    }

    async fn stop_controller_on(&mut self, i: usize) {
        match self.ctls[i].take() {
            Some(Ctl::Task { stop, task }) => {
                let _ = stop.send(());
                task.await.unwrap().unwrap();
            }
            Some(Ctl::Process(p)) => p.stop().await,
            None => {}
        }
    }

    /// SIGKILL controller `i`'s process.
    pub fn kill9_controller(&mut self, i: usize) {
        match self.ctls[i].take() {
            Some(Ctl::Process(mut p)) => p.kill9(),
            _ => panic!("controller {i} does not run as a process"),
        }
    }

    /// Polls `check` (every 100 ms, at most 2 minutes: a bounded wait for a state, not a
    /// timing assertion).
    pub async fn until<'a, T, F, Fut>(&'a self, what: &str, check: F) -> T
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

    pub async fn apply_spec(&self, name: &str, spec: Value) {
        let body = json!({"kind": "ClusterUpdate", "metadata": {"name": name}, "spec": spec});
        let _: Value = self
            .admin
            .put_json(&format!("/v1/clusterupdates/{name}"), &body)
            .await
            .unwrap();
    }

    /// One at a time, approved at once, no failure allowed.
    pub async fn apply(&self, name: &str, rev: &str) {
        self.apply_spec(name, spec(&self.fleet, rev, one_at_a_time(), "auto", 0))
            .await;
    }

    pub async fn get(&self, name: &str) -> Option<Value> {
        self.get_on(0, name).await
    }

    /// Rollout `name` as controller `i` has it.
    pub async fn get_on(&self, i: usize, name: &str) -> Option<Value> {
        self.admins[i]
            .get_json(&format!("/v1/clusterupdates/{name}"))
            .await
            .ok()
    }

    pub async fn wait_phase(&self, name: &str, phases: &[&str]) -> Value {
        self.wait_phase_on(0, name, phases).await
    }

    pub async fn wait_phase_on(&self, i: usize, name: &str, phases: &[&str]) -> Value {
        self.until(&format!("{name} in {phases:?} on {i}"), |bed| async move {
            let v = bed.get_on(i, name).await?;
            let p = v.pointer("/status/phase")?.as_str()?;
            phases.contains(&p).then_some(v)
        })
        .await
    }

    pub async fn wait_done(&self, name: &str) -> Value {
        self.wait_done_on(0, name).await
    }

    pub async fn wait_done_on(&self, i: usize, name: &str) -> Value {
        self.wait_phase_on(i, name, &["succeeded", "halted", "failed", "cancelled"])
            .await
    }

    pub fn index(id: &str) -> usize {
        NODES.iter().position(|n| *n == id).unwrap()
    }

    pub fn node(&self, id: &str) -> &FleetNode {
        &self.nodes[Self::index(id)]
    }

    /// The nodes whose switch-to-configuration ran at all.
    pub fn started(&self) -> Vec<&'static str> {
        NODES
            .iter()
            .copied()
            .filter(|id| !self.node(id).log("activations").is_empty())
            .collect()
    }

    /// Waits until `id`'s switch-to-configuration stand-in has logged a call.
    pub async fn until_activating(&self, id: &str) {
        self.until(&format!("{id} activating"), |bed| async move {
            (!bed.node(id).log("activations").is_empty()).then_some(())
        })
        .await;
    }

    /// Until rollout `name` ends, performs each reboot a node asks for (a line in its
    /// `reboots` log) with the rig's simulated reboot; the final object.
    pub async fn drive_reboots(&mut self, name: &str) -> Value {
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
    pub fn step_report(&self, id: &str) -> StepReport {
        self.try_step_report(id).unwrap()
    }

    /// [`Bed::step_report`], `None` while the node has no step yet.
    pub fn try_step_report(&self, id: &str) -> Option<StepReport> {
        let ops = self.node(id).node.path("operations");
        let progress = kcore_agent::rollout::assignment::load_progress(&ops)?;
        let op = progress.activate_op.or(progress.prepare_op)?;
        kcore_agent::rollout::state::load_report(&ops, &op)
    }

    /// [`Bed::finish_on`] controller `ctl1`'s database.
    pub async fn finish(self, rollouts: &[(&str, usize)]) -> Vec<records::StepRecord> {
        self.finish_on(0, rollouts).await
    }

    /// Stops everything, then checks the timeline of each `(rollout, maxUnavailable)` on
    /// controller `i`'s database; the records of the first.
    pub async fn finish_on(
        mut self,
        i: usize,
        rollouts: &[(&str, usize)],
    ) -> Vec<records::StepRecord> {
        for n in &mut self.nodes {
            n.stop().await;
        }
        for c in 0..self.ctls.len() {
            self.stop_controller_on(c).await;
        }
        let config = &self.configs[i];
        let store =
            kcore_controller::store::Store::open(&config.database_path, &config.controller_id)
                .unwrap();
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

pub fn hosts(label: &str, failing: Option<&str>) -> Vec<(&'static str, Value)> {
    NODES
        .iter()
        .map(|id| {
            let activate = if failing == Some(*id) { "fail" } else { "ok" };
            (*id, host(activate, "ok", "6.6.1", label))
        })
        .collect()
}

pub fn revisions(failing: Option<&str>) -> Option<(Fleet, String, String)> {
    let fleet = Fleet::new()?;
    let r1 = fleet.commit(&hosts("r1", None));
    let r2 = fleet.commit(&hosts("r2", failing));
    Some((fleet, r1, r2))
}

/// r1 with every host healthy, r2 with `change` applied to the host files.
pub fn revisions_with(change: impl Fn(&str, &mut Value)) -> Option<(Fleet, String, String)> {
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
pub fn expected(bed: &Bed, rev: &str, id: &str) -> PathBuf {
    bed.fleet
        .build(rev, id, &bed.dir.path().join(format!("{id}-{}", &rev[..8])))
}

pub fn row<'a>(cu: &'a Value, id: &str) -> &'a Value {
    cu["status"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["nodeId"] == id)
        .unwrap()
}

/// Where a link under the node's root points now (`None` while it is being replaced).
pub fn system_link(node: &FleetNode, rel: &str) -> Option<PathBuf> {
    std::fs::canonicalize(node.root(rel)).ok()
}
