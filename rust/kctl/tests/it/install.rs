//! `kctl node install` as the real binary against a REAL install-mode agent (in-process,
//! self-signed TLS on 127.0.0.1) and a REAL controller of a cluster made by `kctl create
//! cluster` ([`Lab`]): the node target's errors (no --node, unreachable, wrong
//! --fingerprint, context trust), `-k` printing the fingerprint it accepted and pinning it.

use std::path::Path;

use kcore_agent::config::AgentConfig;
use kcore_agent::{Agent, RuntimeOptions};
use serde_json::json;

use super::lab::{Lab, kctl};
use super::support::text;

/// A running install-mode agent.
struct Live {
    addr: String,
    fingerprint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Live {
    async fn start(dir: &Path) -> Live {
        let doc = json!({"nodeId": "live", "mode": "install",
            "disko": {"managementModeFile": dir.join("mode"), "stateDir": dir.join("disko")}});
        Live::start_with(doc, RuntimeOptions::default()).await
    }

    async fn start_with(doc: serde_json::Value, options: RuntimeOptions) -> Live {
        let config = AgentConfig::parse(&doc.to_string(), Path::new("node-agent.yaml")).unwrap();
        let agent = Agent::new(config, options).unwrap();
        let fingerprint = agent.fingerprint().unwrap().to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            agent
                .serve(listener, async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Live {
            addr,
            fingerprint,
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_target_errors_name_the_flag_to_fix() {
    let lab = Lab::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let live = Live::start(dir.path()).await;

    // No --node.
    let out = kctl(
        lab.home(),
        &["node", "install", "--os-disk", "/dev/sda", "--yes"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("--node HOST:9091"), "{}", text(&out));

    // The context's mTLS cannot reach an install-mode agent: -k or --fingerprint.
    let out = kctl(
        lab.home(),
        &[
            "node",
            "install",
            "--node",
            &live.addr,
            "--os-disk",
            "/dev/sda",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("--fingerprint SHA256"),
        "{}",
        text(&out)
    );

    // Nothing listens there: the error names --node, with -k and with --fingerprint.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    for trust in [vec!["-k"], vec!["--fingerprint", live.fingerprint.as_str()]] {
        let mut args = vec!["node", "install", "--node", closed.as_str()];
        args.extend(trust.iter().copied());
        args.extend(["--os-disk", "/dev/sda", "--yes"]);
        let out = kctl(lab.home(), &args).await;
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("cannot reach the node agent at --node {closed}")),
            "{trust:?}: {err}"
        );
    }

    // A wrong pin: the error names --fingerprint and shows the fingerprint seen.
    let wrong = "ab".repeat(32);
    let out = kctl(
        lab.home(),
        &[
            "node",
            "install",
            "--node",
            &live.addr,
            "--fingerprint",
            &wrong,
            "--os-disk",
            "/dev/sda",
            "--yes",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("--fingerprint"), "{err}");
    assert!(
        err.contains(&format!("expected {wrong}, got {}", live.fingerprint)),
        "{err}"
    );
    live.stop().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_prints_the_fingerprint_it_accepted() {
    let lab = Lab::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let live = Live::start(dir.path()).await;
    let out = kctl(
        lab.home(),
        &[
            "node",
            "install",
            "--node",
            &live.addr,
            "-k",
            "--os-disk",
            "/dev/sda",
            "--dry-run",
        ],
    )
    .await;
    let err = stderr(&out);
    assert!(
        err.contains(&format!("fingerprint {}", live.fingerprint)),
        "{}",
        text(&out)
    );
    assert!(
        err.contains(&format!("--fingerprint {}", live.fingerprint)),
        "{err}"
    );
    live.stop().await;
    lab.stop().await;
}
