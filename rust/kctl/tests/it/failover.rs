//! Failover: requests move on to the next controller when one is down or hangs, within
//! a bounded time, and a two-controller context keeps working after losing one.

use super::lab::{Lab, kctl, ok, run_controller};
use super::support::text;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kcore_api::cluster::{Node, NodeStatus};

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
