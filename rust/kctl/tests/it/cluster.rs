//! `kctl` against an in-process controller with real mutual TLS: `create cluster`,
//! contexts, node certificates from CSRs, `get` / `describe`, approval, sub-CA rotation,
//! and failover when the first controller is down or hangs.

use super::support::{assert_no_control, text};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use kcore_api::cluster::{Node, NodeReport, NodeStatus, StorageBackend, StorageReport};

/// Runs kctl with a private HOME; returns its output.
fn kctl_in(home: &Path, args: &[&str]) -> Output {
    Command::cargo_bin("kctl")
        .unwrap()
        .env("HOME", home)
        .env_remove("KCORE_CONFIG")
        .env("KCORE_ATTEMPT_TIMEOUT_MS", "1500")
        .args(args)
        .output()
        .unwrap()
}

async fn kctl(home: &Path, args: &[&str]) -> Output {
    let home = home.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        kctl_in(&home, &refs)
    })
    .await
    .unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// A cluster made by `kctl create cluster` with one in-process controller.
struct Lab {
    home: tempfile::TempDir,
    addr: String,
    ctx_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Lab {
    async fn start(manual: bool) -> Lab {
        let home = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        ok(kctl(
            home.path(),
            &[
                "create",
                "cluster",
                "--controller",
                &addr,
                "--context",
                "lab",
            ],
        )
        .await);
        let ctx_dir = home.path().join(".kcore").join("lab");
        let yaml = ctx_dir.join("controllers/ctl1/controller.yaml");
        let mut config = kcore_controller::ControllerConfig::load(&yaml).unwrap();
        config.require_manual_approval = manual;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            kcore_controller::run(listener, config, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Lab {
            home,
            addr,
            ctx_dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    /// Key and CSR "on the node" with kctl, signed through the controller with kctl.
    async fn enroll(&self, id: &str) -> (PathBuf, PathBuf, PathBuf) {
        let dir = self.home().join("nodes").join(id);
        let key = dir.join("node.key");
        let csr = dir.join("node.csr");
        let cert = dir.join("node.crt");
        let ca = dir.join("ca.crt");
        ok(kctl(
            self.home(),
            &[
                "create",
                "csr",
                "--node-id",
                id,
                "--cluster",
                "lab",
                "--key-out",
                key.to_str().unwrap(),
                "--csr-out",
                csr.to_str().unwrap(),
                "--dns",
                "localhost",
            ],
        )
        .await);
        ok(kctl(
            self.home(),
            &[
                "create",
                "node-cert",
                "--node-id",
                id,
                "--csr",
                csr.to_str().unwrap(),
                "--out",
                cert.to_str().unwrap(),
                "--ca-out",
                ca.to_str().unwrap(),
            ],
        )
        .await);
        (ca, cert, key)
    }

    /// Enrolls and registers a node with the agent's own registration code.
    async fn join(&self, id: &str, dc: &str, backend: Option<StorageBackend>) -> NodeStatus {
        let report = NodeReport {
            hostname: format!("host-{id}"),
            dc_id: dc.into(),
            storage: StorageReport {
                backend,
                ..Default::default()
            },
            ..Default::default()
        };
        self.join_with(id, report).await
    }

    /// Enrolls and registers a node that reports `report`.
    async fn join_with(&self, id: &str, report: NodeReport) -> NodeStatus {
        let (ca_file, cert_file, key_file) = self.enroll(id).await;
        let ctx = kcore_agent::registration::RegistrationContext {
            node_id: id.into(),
            controllers: vec![self.addr.clone()],
            heartbeat_interval: Duration::from_secs(1),
            ca_file,
            cert_file,
            key_file,
            dns_names: vec!["localhost".into()],
            report: std::sync::Arc::new(move || {
                let r = report.clone();
                Box::pin(async move { r })
            }),
            server_tls: None,
            renew_before: kcore_pki::RENEW_BEFORE,
            renew_retry_min: kcore_agent::registration::RENEW_RETRY_MIN,
            client_options: kcore_net::ClientOptions::default(),
        };
        let mut session = None;
        kcore_agent::registration::step(&ctx, &mut session)
            .await
            .unwrap()
            .unwrap()
            .status
    }

    /// Points the context's config entry for the file `from` at `to`.
    fn patch_config(&self, from: &Path, to: &Path) {
        let path = self.home().join(".kcore/config");
        let before = std::fs::read_to_string(&path).unwrap();
        let after = before.replace(
            &format!(": {}\n", from.display()),
            &format!(": {}\n", to.display()),
        );
        assert_ne!(before, after, "{} not in:\n{before}", from.display());
        std::fs::write(&path, after).unwrap();
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_cluster_writes_pki_and_context() {
    use std::os::unix::fs::PermissionsExt as _;
    let lab = Lab::start(false).await;
    for (file, mode) in [
        ("ca.key", 0o600),
        ("sub-ca.key", 0o600),
        ("admin.key", 0o600),
        ("ca.crt", 0o644),
    ] {
        let m = std::fs::metadata(lab.ctx_dir.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, mode, "{file}");
    }
    assert_eq!(
        ok(kctl(lab.home(), &["config", "current-context"]).await).trim(),
        "lab"
    );
    let contexts = ok(kctl(lab.home(), &["config", "get-contexts"]).await);
    assert!(contexts.contains(&lab.addr), "{contexts}");
    // The root CA key is never overwritten.
    let again = kctl(
        lab.home(),
        &[
            "create",
            "cluster",
            "--controller",
            &lab.addr,
            "--context",
            "lab",
        ],
    )
    .await;
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    // A second cluster, then switching between them.
    ok(kctl(
        lab.home(),
        &[
            "create",
            "cluster",
            "--controller",
            "127.0.0.1:1",
            "--context",
            "other",
        ],
    )
    .await);
    assert_eq!(
        ok(kctl(lab.home(), &["config", "current-context"]).await).trim(),
        "other"
    );
    ok(kctl(lab.home(), &["config", "use-context", "lab"]).await);
    assert_eq!(
        ok(kctl(lab.home(), &["config", "current-context"]).await).trim(),
        "lab"
    );
    let bad = kctl(lab.home(), &["config", "use-context", "nope"]).await;
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    // --kubeconfig points elsewhere: no contexts there.
    let other_cfg = lab.home().join("elsewhere/config");
    let out = kctl(
        lab.home(),
        &[
            "--kubeconfig",
            other_cfg.to_str().unwrap(),
            "config",
            "current-context",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_describe_approve_and_reject_through_kctl() {
    let lab = Lab::start(true).await;
    assert_eq!(
        lab.join("node-a", "DC1", Some(StorageBackend::Lvm)).await,
        NodeStatus::Pending
    );
    assert_eq!(
        lab.join("node-b", "DC2", Some(StorageBackend::Zfs)).await,
        NodeStatus::Pending
    );

    let out = ok(kctl(lab.home(), &["node", "approve", "node-a"]).await);
    assert!(out.contains("Ready"), "{out}");
    ok(kctl(lab.home(), &["node", "reject", "node-b"]).await);
    let again = kctl(lab.home(), &["node", "approve", "node-b"]).await;
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));

    let nodes: Vec<Node> =
        serde_json::from_str(&ok(kctl(lab.home(), &["get", "nodes", "-o", "json"]).await)).unwrap();
    let summary: Vec<(String, NodeStatus, String)> = nodes
        .iter()
        .map(|n| (n.node_id.clone(), n.status, n.report.dc_id.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("node-a".into(), NodeStatus::Ready, "DC1".into()),
            ("node-b".into(), NodeStatus::Rejected, "DC2".into()),
        ]
    );
    let table = ok(kctl(lab.home(), &["get", "nodes"]).await);
    assert!(table.starts_with("NAME"), "{table}");
    let expiry = nodes[0]
        .certificate
        .as_ref()
        .unwrap()
        .not_after
        .split('T')
        .next()
        .unwrap()
        .to_string();
    assert!(
        table.contains(&expiry),
        "cert expiry {expiry} missing:\n{table}"
    );
    let wide = ok(kctl(lab.home(), &["get", "nodes", "-o", "wide"]).await);
    assert!(wide.contains("LAST-HEARTBEAT"), "{wide}");
    let yaml = ok(kctl(lab.home(), &["get", "node", "node-a", "-o", "yaml"]).await);
    assert!(yaml.contains("nodeId: node-a"), "{yaml}");

    let sc = ok(kctl(lab.home(), &["get", "storage-class"]).await);
    let rows: Vec<Vec<&str>> = sc
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["filesystem", "0", "0"],
            vec!["lvm", "1", "1"],
            vec!["zfs", "1", "0"],
            vec!["unspecified", "0", "0"],
        ],
        "{sc}"
    );
    let described = ok(kctl(lab.home(), &["describe", "node", "node-a"]).await);
    for needle in [
        "Backend:       lvm",
        "Last heartbeat:",
        "Not after:",
        "DC:              DC1",
    ] {
        assert!(
            described.contains(needle),
            "{needle:?} missing:\n{described}"
        );
    }
    let class = ok(kctl(lab.home(), &["describe", "storage-class", "zfs"]).await);
    assert!(class.contains("node-b"), "{class}");
    let missing = kctl(lab.home(), &["describe", "node", "ghost"]).await;
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_sub_ca_installs_it_and_old_nodes_keep_working() {
    let lab = Lab::start(false).await;
    assert_eq!(lab.join("node-a", "DC1", None).await, NodeStatus::Ready);
    let before = std::fs::read_to_string(lab.ctx_dir.join("controllers/ctl1/sub-ca.crt")).unwrap();
    let out = ok(kctl(lab.home(), &["rotate", "sub-ca"]).await);
    assert!(out.contains("now signs with sub-CA"), "{out}");
    let after = std::fs::read_to_string(lab.ctx_dir.join("controllers/ctl1/sub-ca.crt")).unwrap();
    assert_ne!(before, after);
    // A node enrolled after the rotation gets the new sub-CA; both nodes are served.
    let (_, cert, _) = lab.enroll("node-c").await;
    assert!(std::fs::read_to_string(cert).unwrap().ends_with(&after));
    let nodes: Vec<Node> =
        serde_json::from_str(&ok(kctl(lab.home(), &["get", "nodes", "-o", "json"]).await)).unwrap();
    assert_eq!(nodes.len(), 1);
    lab.stop().await;
}

/// A port where nothing listens.
fn dead_port() -> String {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

/// A server that accepts connections and never answers.
fn hanging_server() -> (String, std::thread::JoinHandle<()>) {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in l.incoming().take(8) {
            held.push(conn);
        }
    });
    (addr, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_over_when_the_first_controller_is_down_or_hangs() {
    let lab = Lab::start(false).await;
    lab.join("node-a", "DC1", None).await;
    let dead = dead_port();
    let (hang, _hold) = hanging_server();

    for first in [&dead, &hang] {
        let started = Instant::now();
        let out = ok(kctl(
            lab.home(),
            &["-s", first, "-s", &lab.addr, "get", "nodes", "-o", "json"],
        )
        .await);
        let nodes: Vec<Node> = serde_json::from_str(&out).unwrap();
        assert_eq!(nodes.len(), 1);
        // Bounded: one attempt timeout (1.5 s) plus process start, far below the total.
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
    }

    // A context listing several controllers fails over the same way, for writes too.
    let config_path = lab.home().join(".kcore/config");
    let text_cfg = std::fs::read_to_string(&config_path).unwrap();
    let patched = text_cfg.replace(
        &format!("- {}", lab.addr),
        &format!("- {hang}\n  - {dead}\n  - {}", lab.addr),
    );
    assert_ne!(
        patched, text_cfg,
        "controllers list not found in:\n{text_cfg}"
    );
    std::fs::write(&config_path, patched).unwrap();
    ok(kctl(lab.home(), &["node", "approve", "node-a"]).await);

    // Nothing answers: a failure (exit 3) that names each controller, within the budget.
    let started = Instant::now();
    let out = kctl(lab.home(), &["-s", &dead, "-s", &hang, "get", "nodes"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&dead) && err.contains(&hang), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "took {:?}",
        started.elapsed()
    );
    lab.stop().await;
}

/// Starts the controller described by `yaml` on `listener`; returns its stopper.
fn run_controller(
    listener: tokio::net::TcpListener,
    yaml: &Path,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let config = kcore_controller::ControllerConfig::load(yaml).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        kcore_controller::run(listener, config, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (tx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_controller_context_survives_losing_one_controller() {
    let home = tempfile::tempdir().unwrap();
    let la = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a, b) = (
        la.local_addr().unwrap().to_string(),
        lb.local_addr().unwrap().to_string(),
    );
    ok(kctl(
        home.path(),
        &[
            "create",
            "cluster",
            "--controller",
            &a,
            "--controller",
            &b,
            "--context",
            "lab",
        ],
    )
    .await);
    let ctls = home.path().join(".kcore/lab/controllers");
    let (stop_a, task_a) = run_controller(la, &ctls.join("ctl1/controller.yaml"));
    let (stop_b, task_b) = run_controller(lb, &ctls.join("ctl2/controller.yaml"));

    // Enroll and register node-a with controller a only.
    let lab = Lab {
        home,
        addr: a.clone(),
        ctx_dir: PathBuf::new(),
        stop: None,
        task: None,
    };
    assert_eq!(lab.join("node-a", "DC1", None).await, NodeStatus::Ready);

    // b learns about it by replication (create cluster made them peers).
    let mut seen = false;
    for _ in 0..100 {
        if kctl(lab.home(), &["-s", &b, "get", "node", "node-a"])
            .await
            .status
            .success()
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen, "controller b never learnt about node-a");

    // Controller a goes away; the context (a, then b) keeps working for reads and writes.
    let _ = stop_a.send(());
    task_a.await.unwrap();
    let nodes: Vec<Node> =
        serde_json::from_str(&ok(kctl(lab.home(), &["get", "nodes", "-o", "json"]).await)).unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].node_id, "node-a");
    let out = ok(kctl(lab.home(), &["node", "reject", "node-a"]).await);
    assert!(out.contains("Rejected"), "{out}");
    let _ = stop_b.send(());
    task_b.await.unwrap();
}

/// A stand-in server with a certificate the lab's sub-CA signed for `role`/`id` (with the
/// 127.0.0.1 name every node certificate carries by default), recording every request
/// and answering `answers[path]`. As a node: a node answering at a controller's address
/// (review D1). As a controller: one that serves data a current controller would refuse
/// to store (review D9).
async fn fake_server(
    lab: &Lab,
    role: kcore_pki::Role,
    id: &str,
    answers: std::collections::BTreeMap<String, serde_json::Value>,
) -> kcore_net::testing::RecordingServer {
    let read = |name: &str| std::fs::read_to_string(lab.ctx_dir.join(name)).unwrap();
    let sub = kcore_pki::Authority::from_pem(&read("sub-ca.crt"), &read("sub-ca.key")).unwrap();
    let leaf = sub
        .issue(
            &kcore_pki::Identity::new("lab", role, id).unwrap(),
            &["127.0.0.1".into(), "localhost".into()],
            Duration::from_secs(86_400),
        )
        .unwrap();
    kcore_net::testing::RecordingServer::start(&read("ca.crt"), &leaf, answers)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kctl_refuses_a_node_posing_as_a_controller_and_never_sends_it_the_sub_ca_key() {
    let lab = Lab::start(false).await;
    let rogue = fake_server(&lab, kcore_pki::Role::Node, "node-1", Default::default()).await;

    let out = kctl(lab.home(), &["-s", &rogue.addr, "get", "nodes"]).await;
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("speaks for kcore://lab/node/node-1")
            && err.contains("expected kcore://lab/controller/*"),
        "{err}"
    );
    let out = kctl(lab.home(), &["-s", &rogue.addr, "rotate", "sub-ca"]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        rogue.requests().is_empty(),
        "the impostor received {:?}",
        rogue.requests()
    );

    // `--node` in managed mode expects a node, and `--node-id` that very node.
    let out = kctl(lab.home(), &["--node", &rogue.addr, "node", "nics"]).await;
    assert_eq!(rogue.requests().len(), 1, "{}", text(&out));
    let out = kctl(
        lab.home(),
        &["--node", &rogue.addr, "--node-id", "node-2", "node", "nics"],
    )
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("speaks for kcore://lab/node/node-1")
            && err.contains("expected kcore://lab/node/node-2"),
        "{err}"
    );
    assert_eq!(rogue.requests().len(), 1, "no second request reached it");
    // The real controller is still accepted.
    ok(kctl(lab.home(), &["get", "nodes"]).await);
    lab.stop().await;
}

/// A listener nobody serves: after kctl has run, says how many TCP connections kctl
/// opened to it (the kernel queues them whether or not anyone accepts).
struct Witness {
    listener: StdListener,
    addr: String,
}

impl Witness {
    fn new() -> Witness {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        Witness { listener, addr }
    }

    fn connections(&self) -> usize {
        let mut n = 0;
        while self.listener.accept().is_ok() {
            n += 1;
        }
        n
    }
}

const EVIL_HOST: &str = "\u{1b}[31mEVIL\u{1b}[0m\u{1b}]0;pwned\u{7}";
const EVIL_ADDRESS: &str = "evil.example:9091\r\u{1b}[2K";

/// A report from a node that tries to drive the operator's terminal: SGR colours, a
/// title change, a screen clear, a C1 CSI, a carriage return, a fake describe line.
fn evil_report() -> NodeReport {
    NodeReport {
        hostname: EVIL_HOST.into(),
        dc_id: "DC1".into(),
        labels: [
            ("k\u{1b}[2J".to_string(), "v\u{9b}1m".to_string()),
            ("note".to_string(), "one\nForged:          line".to_string()),
        ]
        .into(),
        disks: vec![serde_json::json!({"path": "/dev/\u{1b}[5mX", "sizeBytes": 1})],
        nics: vec![serde_json::json!({"name": "eth\u{7f}0", "state": "up\u{1b}[8m"})],
        agent_address: Some(EVIL_ADDRESS.into()),
        ..Default::default()
    }
}

// D9: everything kctl prints that came from a node is escaped; the data itself is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_supplied_text_is_printed_escaped() {
    let lab = Lab::start(false).await;
    // Controllers now refuse control characters in reports (report limits), so the
    // report comes from a controller that still holds one (an older peer's data, an old
    // database): kctl must be safe whatever a controller sends.
    let evil = Node {
        node_id: "node-evil".into(),
        status: NodeStatus::Ready,
        approval: kcore_api::cluster::Approval::Approved,
        report: evil_report(),
        registered_at: None,
        last_heartbeat: None,
        certificate: None,
    };
    let node = serde_json::to_value(&evil).unwrap();
    let answers = [
        ("/v1/nodes".to_string(), serde_json::json!({"items": [node]})),
        ("/v1/nodes/node-evil".to_string(), node.clone()),
        (
            "/v1/storage-classes/unspecified".to_string(),
            serde_json::json!({"class": {"name": "unspecified", "nodes": 1, "readyNodes": 1}, "nodes": [node]}),
        ),
    ]
    .into();
    let old_controller = fake_server(&lab, kcore_pki::Role::Controller, "ctl-old", answers).await;
    let kctl = |args: &[&str]| {
        let mut with_server = vec!["-s", old_controller.addr.as_str()];
        with_server.extend_from_slice(args);
        let with_server: Vec<String> = with_server.iter().map(|a| a.to_string()).collect();
        let home = lab.home().to_path_buf();
        async move {
            let refs: Vec<&str> = with_server.iter().map(String::as_str).collect();
            kctl(&home, &refs).await
        }
    };
    for args in [
        &["get", "nodes"][..],
        &["get", "nodes", "-o", "wide"],
        &["get", "nodes", "-o", "json"],
        &["get", "nodes", "-o", "yaml"],
        &["get", "node", "node-evil"],
        &["get", "node", "node-evil", "-o", "wide"],
        &["get", "node", "node-evil", "-o", "json"],
        &["get", "node", "node-evil", "-o", "yaml"],
        &["describe", "node", "node-evil"],
        &["describe", "node", "node-evil", "-o", "json"],
        &["describe", "node", "node-evil", "-o", "yaml"],
        &["describe", "storage-class", "unspecified"],
    ] {
        let out = kctl(args).await;
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert_no_control(&format!("kctl {args:?} (stdout)"), &out.stdout);
        assert_no_control(&format!("kctl {args:?} (stderr)"), &out.stderr);
    }

    // Visible, escaped: the operator sees that something odd is there.
    let table = ok(kctl(&["get", "nodes", "-o", "wide"]).await);
    assert!(table.contains("\\u{1b}[31mEVIL"), "{table}");
    assert!(table.contains("k\\u{1b}[2J=v\\u{9b}1m"), "{table}");
    let described = ok(kctl(&["describe", "node", "node-evil"]).await);
    let address = described
        .lines()
        .find(|l| l.starts_with("Agent address:"))
        .unwrap_or_else(|| panic!("no agent address in:\n{described}"));
    assert!(
        address.contains("evil.example:9091\\r\\u{1b}[2K")
            && address.contains("reported by the node"),
        "{address}"
    );
    // The label's newline cannot start a fake line.
    assert!(
        !described.lines().any(|l| l.starts_with("Forged:")),
        "{described}"
    );

    // JSON and YAML still carry the exact data (escaped the way each format escapes).
    let node: Node =
        serde_json::from_str(&ok(kctl(&["get", "node", "node-evil", "-o", "json"]).await)).unwrap();
    assert_eq!(node.report, evil_report());
    let node: Node =
        serde_yaml_ng::from_str(&ok(kctl(&["get", "node", "node-evil", "-o", "yaml"]).await))
            .unwrap();
    assert_eq!(node.report, evil_report());
    lab.stop().await;
}

// D10: a node id that is not a DNS label is refused before any request is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_node_ids_are_refused_before_any_request() {
    let lab = Lab::start(true).await;
    assert_eq!(lab.join("node-3", "DC1", None).await, NodeStatus::Pending);
    // The witness is tried first: a request that went out would reach it, then fail
    // over to the real controller.
    let witness = Witness::new();
    for args in [
        &["node", "approve", "ghost/../node-3"][..],
        &["node", "reject", "ghost/../node-3"],
        &["get", "node", "node-9/../node-3"],
        &["get", "node", "node-3?x=1"],
        &["get", "node", "node-3#frag"],
        &["describe", "node", "%6eode-3"],
        &["get", "node", "node-3/register"],
        &["get", "node", ""],
        &["describe", "storage-class", "lvm/../zfs"],
    ] {
        let mut full = vec!["-s", witness.addr.as_str(), "-s", lab.addr.as_str()];
        full.extend_from_slice(args);
        let out = kctl(lab.home(), &full).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        if args[0] == "describe" && args[1] == "storage-class" {
            assert!(err.contains("NO_SUCH_STORAGE_CLASS"), "{err}");
        } else {
            assert!(
                err.contains("<ID>") && err.contains("DNS label"),
                "{args:?}: {err}"
            );
            assert!(err.contains("INVALID_NODE_ID"), "{err}");
        }
        assert_eq!(witness.connections(), 0, "kctl {args:?} sent a request");
    }
    let node: Node = serde_json::from_str(&ok(kctl(
        lab.home(),
        &["get", "node", "node-3", "-o", "json"],
    )
    .await))
    .unwrap();
    assert_eq!(node.status, NodeStatus::Pending);
    lab.stop().await;
}

// D14: a config file that does not exist is named as missing, with how to make one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_file_is_reported_as_missing() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("nowhere/config");
    let out = tokio::task::spawn_blocking({
        let (home, missing) = (home.path().to_path_buf(), missing.clone());
        move || {
            Command::cargo_bin("kctl")
                .unwrap()
                .env("HOME", &home)
                .env("KCORE_CONFIG", &missing)
                .args(["get", "nodes"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{} does not exist", missing.display()))
            && err.contains("kctl create cluster")
            && err.contains("NO_CONFIG"),
        "{err}"
    );
    // The same through --kubeconfig, for a command that only reads the config.
    let out = kctl(
        home.path(),
        &[
            "--kubeconfig",
            missing.to_str().unwrap(),
            "config",
            "get-contexts",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        text(&out)
    );
}

// D14: `-s` takes HOST:PORT or https://HOST:PORT; any other scheme is refused up front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_urls_must_be_https() {
    let lab = Lab::start(false).await;
    lab.join("node-a", "DC1", None).await;
    let https = format!("https://{}", lab.addr);
    let nodes: Vec<Node> = serde_json::from_str(&ok(kctl(
        lab.home(),
        &["-s", &https, "get", "nodes", "-o", "json"],
    )
    .await))
    .unwrap();
    assert_eq!(nodes.len(), 1);
    let witness = Witness::new();
    for url in [
        format!("http://{}", witness.addr),
        format!("HTTP://{}", witness.addr),
        format!("ftp://{}", witness.addr),
    ] {
        let out = kctl(lab.home(), &["-s", &url, "get", "nodes"]).await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("kcore speaks TLS only: use HOST:PORT or https://HOST:PORT")
                && err.contains(&url),
            "{err}"
        );
        assert_eq!(witness.connections(), 0, "{url}");
    }
    // The same rule for --node.
    let out = kctl(
        lab.home(),
        &[
            "--node",
            &format!("http://{}", witness.addr),
            "node",
            "nics",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kcore speaks TLS only"),
        "{}",
        text(&out)
    );
    assert_eq!(witness.connections(), 0);
    // And for the context's own controllers list.
    let config_path = lab.home().join(".kcore/config");
    let before = std::fs::read_to_string(&config_path).unwrap();
    let after = before.replace(
        &format!("- {}", lab.addr),
        &format!("- http://{}", lab.addr),
    );
    assert_ne!(before, after, "{before}");
    std::fs::write(&config_path, after).unwrap();
    let out = kctl(lab.home(), &["get", "nodes"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BAD_CONTROLLER") && err.contains("kcore speaks TLS only"),
        "{err}"
    );
    lab.stop().await;
}

// D14: an admin key that does not belong to the admin certificate is said once, with
// both files named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_match_the_certificate_names_both_files() {
    let lab = Lab::start(false).await;
    let cert = lab.ctx_dir.join("admin.crt");
    // Another valid key of the same type (a copy of the sub-CA's) as the context's key.
    let key = lab.home().join("wrong.key");
    std::fs::copy(lab.ctx_dir.join("sub-ca.key"), &key).unwrap();
    lab.patch_config(&lab.ctx_dir.join("admin.key"), &key);
    let out = kctl(lab.home(), &["get", "nodes"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&key.display().to_string()) && err.contains(&cert.display().to_string()),
        "{err}"
    );
    assert!(err.contains("does not belong to"), "{err}");
    assert_eq!(err.matches("KeyMismatch").count(), 0, "{err}");
    assert_eq!(err.matches("does not belong to").count(), 1, "{err}");
    lab.stop().await;
}

// D14: a CA file that did not issue the controller's certificate is named, with the
// identity kctl expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_file_is_named() {
    let lab = Lab::start(false).await;
    // A second cluster's root CA, in place of this cluster's.
    let other = tempfile::tempdir().unwrap();
    ok(kctl(
        other.path(),
        &[
            "create",
            "cluster",
            "--controller",
            "127.0.0.1:9",
            "--context",
            "other",
        ],
    )
    .await);
    let ca = other.path().join(".kcore/other/ca.crt");
    lab.patch_config(&lab.ctx_dir.join("ca.crt"), &ca);
    let out = kctl(lab.home(), &["get", "nodes"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&ca.display().to_string())
            && err.contains(&lab.addr)
            && err.contains("kcore://lab/controller/"),
        "{err}"
    );
    lab.stop().await;
}

/// `kctl node reject` against a controller where a newer value (stamped in 2106, stored
/// before the clock bound existed) holds the node's approval: exit 1 with the
/// controller's `WRITE_SUPERSEDED` message, never "node n1 is Ready" with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_that_does_not_take_effect_exits_non_zero_with_the_reason() {
    let home = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    ok(kctl(
        home.path(),
        &[
            "create",
            "cluster",
            "--controller",
            &addr,
            "--context",
            "lab",
        ],
    )
    .await);
    let yaml = home
        .path()
        .join(".kcore/lab/controllers/ctl1/controller.yaml");
    let config = kcore_controller::ControllerConfig::load(&yaml).unwrap();
    let tls = kcore_controller::server_tls(&config).unwrap();
    let state = kcore_controller::build_state(config).unwrap();
    let report = NodeReport {
        hostname: "host-n1".into(),
        dc_id: "DC1".into(),
        ..Default::default()
    };
    state
        .store
        .put_node("n1", &report, kcore_api::cluster::Approval::Approved, "t")
        .unwrap();
    state
        .store
        .merge(&[kcore_controller::store::Op {
            hlc: "fffffffffffffff0-1".into(),
            origin: "ctl9".into(),
            resource: "node/n1".into(),
            field: "approval".into(),
            value: Some("\"Approved\"".into()),
        }])
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kcore_net::serve_with(
        listener,
        kcore_net::TlsSource::new(tls),
        kcore_controller::api::router(state),
        async move {
            let _ = rx.await;
        },
        kcore_net::ServeOptions::default(),
    ));
    let out = kctl(home.path(), &["node", "reject", "n1"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WRITE_SUPERSEDED") && stderr.contains("ctl9") && stderr.contains("2106"),
        "{}",
        text(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Ready"));
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}

/// `kctl create node-cert --offline` signs with the context's own sub-CA (no controller
/// running yet, or air-gapped) and still refuses what kcore-pki refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cert_offline_signs_with_the_contexts_sub_ca() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    ok(kctl(
        h,
        &[
            "create",
            "cluster",
            "--controller",
            "127.0.0.1:9",
            "--context",
            "lab",
        ],
    )
    .await);
    let path = |name: &str| h.join(name).to_str().unwrap().to_string();
    ok(kctl(
        h,
        &[
            "create",
            "csr",
            "--node-id",
            "n-off",
            "--cluster",
            "lab",
            "--key-out",
            &path("n.key"),
            "--csr-out",
            &path("n.csr"),
            "--dns",
            "127.0.0.1",
        ],
    )
    .await);
    let out = ok(kctl(
        h,
        &[
            "create",
            "node-cert",
            "--offline",
            "--node-id",
            "n-off",
            "--csr",
            &path("n.csr"),
            "--out",
            &path("n.crt"),
            "--ca-out",
            &path("ca.crt"),
        ],
    )
    .await);
    assert!(out.contains("n-off"), "{out}");
    let chain = std::fs::read_to_string(path("n.crt")).unwrap();
    let ca = std::fs::read_to_string(path("ca.crt")).unwrap();
    let identity = kcore_pki::verify_client_chain(&ca, &chain)
        .unwrap()
        .unwrap();
    assert_eq!(identity.uri(), "kcore://lab/node/n-off");
    // The CSR is for n-off: signing it as another node is refused, offline too.
    let out = kctl(
        h,
        &[
            "create",
            "node-cert",
            "--offline",
            "--node-id",
            "n-other",
            "--csr",
            &path("n.csr"),
            "--out",
            &path("other.crt"),
        ],
    )
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("does not match the expected identity"),
        "{}",
        text(&out)
    );
}
