//! Controllers as their own processes (`kcore-controller --config FILE`) on 127.0.0.1, for
//! the tests that kill one with SIGKILL and for the real-agents bench.

use super::*;

/// A controller as its own process (`kcore-controller --config FILE`), so a test can kill
/// it with SIGKILL mid-rollout: nothing of it runs on, nothing is flushed or handed over.
pub struct Proc {
    child: std::process::Child,
}

impl Proc {
    pub fn start(cl: &Cluster, config: &ControllerConfig) -> Proc {
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

    pub fn kill9(&mut self) {
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
    pub cl: Cluster,
    pub configs: Vec<ControllerConfig>,
    pub procs: Vec<Option<Proc>>,
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
    pub async fn new(ids: &[&str], activation: Duration) -> ProcBed {
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
    pub async fn succeeded(&self, i: usize, name: &str) -> usize {
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
