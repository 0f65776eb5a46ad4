//! The lab the controller-facing areas share: kctl run as the real binary with a private
//! HOME, a cluster made by `kctl create cluster` with an in-process controller on
//! 127.0.0.1 (real mutual TLS), nodes enrolled and registered with the agent's own code,
//! and stand-in servers with certificates from the lab's sub-CA.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;
use kcore_api::cluster::{NodeReport, NodeStatus, StorageBackend, StorageReport};

use super::support::text;

/// Runs kctl with a private HOME (and `stdin`, if any); returns its output.
pub fn kctl_in_with(home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::cargo_bin("kctl").unwrap();
    cmd.env("HOME", home)
        .env_remove("KCORE_CONFIG")
        .env("KCORE_ATTEMPT_TIMEOUT_MS", "1500")
        .args(args);
    if let Some(input) = stdin {
        cmd.write_stdin(input.to_string());
    }
    cmd.output().unwrap()
}

pub async fn kctl(home: &Path, args: &[&str]) -> Output {
    kctl_stdin(home, args, None).await
}

/// [`kctl`] with `stdin` as its standard input.
pub async fn kctl_stdin(home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let home = home.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        kctl_in_with(&home, &refs, stdin.as_deref())
    })
    .await
    .unwrap()
}

pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// A cluster made by `kctl create cluster` with one in-process controller.
pub struct Lab {
    pub home: tempfile::TempDir,
    pub addr: String,
    pub ctx_dir: PathBuf,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl Lab {
    pub async fn start(manual: bool) -> Lab {
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

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Key and CSR "on the node" with kctl, signed through the controller with kctl.
    pub async fn enroll(&self, id: &str) -> (PathBuf, PathBuf, PathBuf) {
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
                "--dns",
                "127.0.0.1",
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
    pub async fn join(&self, id: &str, dc: &str, backend: Option<StorageBackend>) -> NodeStatus {
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
    pub async fn join_with(&self, id: &str, report: NodeReport) -> NodeStatus {
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
            client_tx: None,
        };
        let mut session = None;
        kcore_agent::registration::step(&ctx, &mut session)
            .await
            .unwrap()
            .unwrap()
            .status
    }

    /// Points the context's config entry for the file `from` at `to`.
    pub fn patch_config(&self, from: &Path, to: &Path) {
        let path = self.home().join(".kcore/config");
        let before = std::fs::read_to_string(&path).unwrap();
        let after = before.replace(
            &format!(": {}\n", from.display()),
            &format!(": {}\n", to.display()),
        );
        assert_ne!(before, after, "{} not in:\n{before}", from.display());
        std::fs::write(&path, after).unwrap();
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// Starts the controller described by `yaml` on `listener`; returns its stopper.
pub fn run_controller(
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

/// A stand-in server with a certificate the lab's sub-CA signed for `role`/`id` (with the
/// 127.0.0.1 name every node certificate carries by default), recording every request
/// and answering `answers[path]`. As a node: a node answering at a controller's address
/// (review D1). As a controller: one that serves data a current controller would refuse
/// to store (review D9).
pub async fn fake_server(
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
