//! What every area's tests share: a temporary node and its configuration, the PKI, an
//! agent running in-process on 127.0.0.1:0, following an operation's stream, and the beds
//! for disko and apply-nix (with the stand-ins under `tests/support`).

pub use std::path::{Path, PathBuf};
pub use std::time::Duration;

pub use kcore_agent::config::AgentConfig;
pub use kcore_agent::{Agent, RuntimeOptions};
pub use kcore_api::inventory::{
    ApplyDiskoRequest, ApplyNixRequest, DiskInventory, DiskoPlanResponse, NicInventory,
    OperationEvent, OperationResult, OperationStarted, OperationStatus, StorageView,
};
pub use kcore_disko::BlockSnapshot;
pub use kcore_net::{Client, ClientError, ClientOptions};
pub use kcore_pki::{Authority, CertifiedKey, Identity, Role};
pub use serde_json::json;

pub const DAY: Duration = Duration::from_secs(24 * 3600);

pub fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/support")
        .join(name)
}

pub fn fixture_snapshot() -> BlockSnapshot {
    let lsblk = include_str!("../fixtures/lsblk.json");
    BlockSnapshot {
        lsblk: serde_json::from_str(lsblk).unwrap(),
        swaps: vec!["/dev/sda3".into()],
        holders: [("sda2".to_string(), vec!["dm-0".to_string()])].into(),
        links: [(
            "/dev/disk/by-id/ata-QEMU_HARDDISK_QM00002".to_string(),
            "/dev/sdb".to_string(),
        )]
        .into(),
        live: false,
    }
}

pub struct Pki {
    pub root: Authority,
}

impl Pki {
    pub fn new() -> Pki {
        Pki {
            root: Authority::new_root("lab", 30 * DAY).unwrap(),
        }
    }

    pub fn leaf(&self, role: Role, id: &str) -> CertifiedKey {
        self.root
            .issue(
                &Identity::new("lab", role, id).unwrap(),
                &["localhost".into(), "127.0.0.1".into()],
                10 * DAY,
            )
            .unwrap()
    }

    pub fn client_tls(&self, leaf: &CertifiedKey) -> rustls::ClientConfig {
        kcore_pki::client_config(self.root.cert_pem(), &leaf.cert_pem, &leaf.key_pem).unwrap()
    }
}

/// A temporary node: its directories and the configuration pointing at them.
pub struct Node {
    pub dir: tempfile::TempDir,
}

impl Node {
    pub fn new() -> Node {
        Node {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The configuration as the NixOS module would write it (JSON is YAML), parsed by the
    /// real loader.
    pub fn config(&self, mode: &str, pki: Option<&Pki>, extra: serde_json::Value) -> AgentConfig {
        let mut doc = json!({
            "nodeId": "node-1",
            "mode": mode,
            "listen": "127.0.0.1:0",
            "disko": {
                "managementModeFile": self.path("disko-management-mode"),
                "stateDir": self.path("disko"),
            },
            "nix": { "configPath": self.path("flake/kcore-node.nix") },
            "binaries": {
                "disko": support("disko"),
                "systemdRun": support("systemd-run"),
                "systemctl": support("systemctl"),
                "nixosRebuild": support("nixos-rebuild"),
            },
        });
        if let Some(pki) = pki {
            let server = pki.leaf(Role::Node, "node-1");
            std::fs::write(self.path("ca.crt"), pki.root.cert_pem()).unwrap();
            std::fs::write(self.path("node.crt"), &server.cert_pem).unwrap();
            std::fs::write(self.path("node.key"), &server.key_pem).unwrap();
            doc["tls"] = json!({
                "caFile": self.path("ca.crt"),
                "certFile": self.path("node.crt"),
                "keyFile": self.path("node.key"),
            });
        }
        merge(&mut doc, extra);
        let text = serde_json::to_string_pretty(&doc).unwrap();
        AgentConfig::parse(&text, Path::new("node-agent.yaml")).unwrap()
    }

    pub fn set_mode(&self, mode: &str) {
        std::fs::write(self.path("disko-management-mode"), format!("{mode}\n")).unwrap();
    }
}

pub fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            match b.get_mut(&k) {
                Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                _ => {
                    b.insert(k, v);
                }
            }
        }
    }
}

pub struct Running {
    pub addr: std::net::SocketAddr,
    pub fingerprint: Option<String>,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn client(&self, tls: rustls::ClientConfig) -> Client {
        Client::new(
            vec![format!("https://{}", self.addr)],
            tls,
            ClientOptions {
                connect_timeout: Duration::from_secs(5),
                attempt_timeout: Duration::from_secs(60),
                total_timeout: Duration::from_secs(120),
                stream_idle_timeout: Duration::from_secs(120),
            },
        )
        .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

pub async fn start(config: AgentConfig, options: RuntimeOptions) -> Running {
    let agent = Agent::new(config, options).unwrap();
    let fingerprint = agent.fingerprint().map(str::to_string);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        agent
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        fingerprint,
        stop: Some(stop),
        task: Some(task),
    }
}

pub fn code(err: &ClientError) -> String {
    err.api_code().unwrap_or("<no code>").to_string()
}

/// Collect an operation's events until it finishes.
pub async fn follow(client: &Client, id: &str) -> (Vec<OperationEvent>, OperationResult) {
    let mut events = Vec::new();
    client
        .stream_ndjson::<(), OperationEvent, _>(
            &format!("/v1/operations/{id}/stream"),
            None,
            |ev| events.push(ev),
        )
        .await
        .unwrap();
    let result = match events.last() {
        Some(OperationEvent::Finished { result }) => (**result).clone(),
        other => panic!("stream did not end with `finished`: {other:?}"),
    };
    let fetched: OperationResult = client
        .get_json(&format!("/v1/operations/{id}"))
        .await
        .unwrap();
    assert_eq!(fetched, result, "the result can be fetched again");
    (events, result)
}

pub fn output_lines(events: &[OperationEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            OperationEvent::Output { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

pub const DATA_DISK: &str = r#"{
  disko.devices.disk.data1 = {
    type = "disk";
    device = "/dev/disk/by-id/ata-QEMU_HARDDISK_QM00002";
    content = {
      type = "gpt";
      partitions.data = {
        size = "100%";
        content = {
          type = "filesystem";
          format = "ext4";
          mountpoint = "/var/lib/kcore/volumes1";
        };
      };
    };
  };
}
"#;

pub fn deep_inputs() -> Option<kcore_disko::DeepInputs> {
    let inputs = kcore_disko::DeepInputs::from_env();
    if inputs.is_none() {
        eprintln!(
            "SKIP (deep level only): KCORE_TEST_DISKO / KCORE_TEST_NIXPKGS_LIB not set and no cached test inputs"
        );
    }
    inputs
}

pub fn dry(layout: &str) -> ApplyDiskoRequest {
    ApplyDiskoRequest {
        layout: layout.to_string(),
        apply: false,
        plan_hash: None,
        timeout_seconds: None,
    }
}

pub fn apply(layout: &str, hash: &str, timeout: Option<u64>) -> ApplyDiskoRequest {
    ApplyDiskoRequest {
        layout: layout.to_string(),
        apply: true,
        plan_hash: Some(hash.to_string()),
        timeout_seconds: timeout,
    }
}

/// This crate's agent binary: what a transient unit's `ExecStopPost=` runs to leave its
/// exit status (an in-process agent's own executable is the test binary).
pub fn unit_result_helper() -> Option<PathBuf> {
    Some(PathBuf::from(env!("CARGO_BIN_EXE_kcore-agent")))
}

pub struct DiskoBed {
    pub pki: Pki,
    pub node: Node,
    pub extra: serde_json::Value,
    pub options: RuntimeOptions,
    pub agent: Running,
    pub admin: Client,
}

pub async fn disko_bed(extra: serde_json::Value, env: Vec<(String, String)>) -> DiskoBed {
    let pki = Pki::new();
    let node = Node::new();
    let options = RuntimeOptions {
        extra_env: env,
        block_snapshot: Some(fixture_snapshot()),
        rebuild_log_dir: node.path("logs"),
        unit_result_helper: unit_result_helper(),
        ..RuntimeOptions::default()
    };
    let agent = start(
        node.config("managed", Some(&pki), extra.clone()),
        options.clone(),
    )
    .await;
    let admin = agent.client(pki.client_tls(&pki.leaf(Role::Admin, "alice")));
    DiskoBed {
        pki,
        node,
        extra,
        options,
        agent,
        admin,
    }
}

impl DiskoBed {
    /// Stop this agent (its units run on); `start_again` starts a new one on the same
    /// configuration and directories, as a restart of the service would.
    pub async fn stop_agent(self) -> StoppedDiskoBed {
        let DiskoBed {
            pki,
            node,
            extra,
            options,
            agent,
            ..
        } = self;
        agent.stop().await;
        StoppedDiskoBed {
            pki,
            node,
            extra,
            options,
        }
    }

    pub async fn restart(self) -> DiskoBed {
        self.stop_agent().await.start_again().await
    }
}

/// A disko bed whose agent is stopped.
pub struct StoppedDiskoBed {
    pub pki: Pki,
    pub node: Node,
    pub extra: serde_json::Value,
    pub options: RuntimeOptions,
}

impl StoppedDiskoBed {
    pub async fn start_again(self) -> DiskoBed {
        let StoppedDiskoBed {
            pki,
            node,
            extra,
            options,
        } = self;
        let agent = start(
            node.config("managed", Some(&pki), extra.clone()),
            options.clone(),
        )
        .await;
        let admin = agent.client(pki.client_tls(&pki.leaf(Role::Admin, "alice")));
        DiskoBed {
            pki,
            node,
            extra,
            options,
            agent,
            admin,
        }
    }
}

/// Poll the operation's result until `done` holds for it (a bounded wait for a state of
/// the system under test, never a timing assertion).
pub async fn wait_for_result(
    client: &Client,
    id: &str,
    what: &str,
    done: impl Fn(&OperationResult) -> bool,
) -> OperationResult {
    let mut last = None;
    for _ in 0..600 {
        let result: OperationResult = client
            .get_json(&format!("/v1/operations/{id}"))
            .await
            .unwrap();
        if done(&result) {
            return result;
        }
        last = Some(result);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("operation {id} never reached {what}: {last:?}");
}

pub fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A killed process whose parent died waits here for init to reap it: it is dead.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

pub struct NixBed {
    pub pki: Pki,
    pub node: Node,
    pub options: RuntimeOptions,
    pub agent: Running,
    pub admin: Client,
}

impl NixBed {
    /// Stop this agent and start a new one on the same configuration and directories, as a
    /// restart of the service would.
    pub async fn restart(self) -> NixBed {
        let NixBed {
            pki,
            node,
            options,
            agent,
            ..
        } = self;
        agent.stop().await;
        let agent = start(
            node.config("managed", Some(&pki), json!({})),
            options.clone(),
        )
        .await;
        let admin = agent.client(pki.client_tls(&pki.leaf(Role::Admin, "alice")));
        NixBed {
            pki,
            node,
            options,
            agent,
            admin,
        }
    }

    pub fn activations(&self) -> Vec<String> {
        std::fs::read_to_string(self.node.path("activations"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

pub async fn nix_bed(gate: Option<&Path>) -> Option<NixBed> {
    nix_bed_with(gate, |_| {}).await
}

pub async fn nix_bed_with(
    gate: Option<&Path>,
    adjust: impl FnOnce(&mut RuntimeOptions),
) -> Option<NixBed> {
    if which_nix().is_none() {
        eprintln!("SKIP: `nix` is not on PATH (apt-get install nix-bin)");
        return None;
    }
    let pki = Pki::new();
    let node = Node::new();
    std::fs::create_dir_all(node.path("flake")).unwrap();
    std::fs::copy(
        support("test-flake/flake.nix"),
        node.path("flake/flake.nix"),
    )
    .unwrap();
    let profile = node.path("profiles/system");
    let mut env = vec![
        (
            "KCORE_TEST_FLAKE".to_string(),
            node.path("flake").display().to_string(),
        ),
        (
            "KCORE_SYSTEM_PROFILE".to_string(),
            profile.display().to_string(),
        ),
        (
            "KCORE_TEST_ACTIVATIONS".to_string(),
            node.path("activations").display().to_string(),
        ),
    ];
    if let Some(gate) = gate {
        env.push((
            "KCORE_TEST_REBUILD_GATE".to_string(),
            gate.display().to_string(),
        ));
    }
    let mut options = RuntimeOptions {
        extra_env: env,
        system_profile: profile,
        rebuild_log_dir: node.path("logs"),
        unit_result_helper: unit_result_helper(),
        ..RuntimeOptions::default()
    };
    adjust(&mut options);
    let agent = start(
        node.config("managed", Some(&pki), json!({})),
        options.clone(),
    )
    .await;
    let admin = agent.client(pki.client_tls(&pki.leaf(Role::Admin, "alice")));
    Some(NixBed {
        pki,
        node,
        options,
        agent,
        admin,
    })
}

pub fn which_nix() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nix"))
            .find(|p| p.is_file())
    })
}

pub const MODULE_A: &str = "{ ... }: {\n  networking.hostName = \"hv1\";\n}\n";
pub const MODULE_B: &str = "{ ... }: {\n  networking.hostName = \"hv2\";\n}\n";

pub fn nix_req(config: &str, no_rebuild: bool) -> ApplyNixRequest {
    ApplyNixRequest {
        config: config.to_string(),
        no_rebuild,
    }
}

/// Live processes whose environment holds `var` (processes of one test's rebuild).
pub fn processes_with_env(var: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || process_gone(&pid) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|kv| kv == var.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// A real controller process's task (in this test process) on 127.0.0.1.
pub struct Controller {
    pub addr: String,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<Result<(), kcore_controller::ControllerError>>,
    /// Its database and certificates; removed when dropped.
    pub dir: tempfile::TempDir,
}

/// A controller with its certificate from a sub-CA of `pki`'s root, auto-approving nodes.
pub async fn real_controller(pki: &Pki) -> Controller {
    use kcore_controller::config::{ControllerConfig, ControllerTls};
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let sub = pki.root.new_sub_ca("controllers", 20 * DAY).unwrap();
    let ctl = sub
        .issue(
            &Identity::new("lab", Role::Controller, "ctl1").unwrap(),
            &["127.0.0.1".into()],
            10 * DAY,
        )
        .unwrap();
    let config = ControllerConfig {
        controller_id: "ctl1".into(),
        cluster_name: "lab".into(),
        dc_id: "DC1".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        require_manual_approval: false,
        peers: vec![],
        heartbeat_timeout_seconds: 45,
        database_path: dir.path().join("state.sqlite"),
        connections: Default::default(),
        max_clock_skew_seconds: 60,
        advertise_address: None,
        compaction: Default::default(),
        tls: ControllerTls {
            ca_file: write("ca.crt", pki.root.cert_pem()),
            cert_file: write("controller.crt", &ctl.cert_pem),
            key_file: write("controller.key", &ctl.key_pem),
            sub_ca_cert_file: write("sub-ca.crt", sub.cert_pem()),
            sub_ca_key_file: write("sub-ca.key", sub.key_pem()),
        },
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(kcore_controller::run(listener, config, async move {
        let _ = stopped.await;
    }));
    Controller {
        addr,
        stop,
        task,
        dir,
    }
}
