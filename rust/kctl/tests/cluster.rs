//! `kctl` against an in-process controller with real mutual TLS: `create cluster`,
//! contexts, node certificates from CSRs, `get` / `describe`, approval, sub-CA rotation,
//! and failover when the first controller is down or hangs.

// Test helpers panic on setup failures; clippy's test exemption covers only #[test] fns.
#![allow(clippy::unwrap_used)]

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

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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
        let (ca_file, cert_file, key_file) = self.enroll(id).await;
        let report = NodeReport {
            hostname: format!("host-{id}"),
            dc_id: dc.into(),
            storage: StorageReport {
                backend,
                ..Default::default()
            },
            ..Default::default()
        };
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
            client_options: kcore_net::ClientOptions::default(),
        };
        let mut session = None;
        kcore_agent::registration::step(&ctx, &mut session)
            .await
            .unwrap()
            .unwrap()
            .status
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
