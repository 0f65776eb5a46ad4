//! `kctl update cluster|os` against an in-process controller with real mutual TLS: apply a
//! manual rollout, see it wait for approval, approve it, and the exit codes (1 for a
//! rollout that failed or a refusal, 3 for an unreachable controller).

use super::lab::{Lab, kctl, ok};
use serde_json::Value;

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

async fn get(lab: &Lab, name: &str) -> Value {
    serde_json::from_str(&ok(kctl(
        lab.home(),
        &["update", "os", "get", name, "-o", "json"],
    )
    .await))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_cluster_apply_waits_for_approve_and_a_failed_rollout_exits_1() {
    let lab = Lab::start(false).await;
    // nodeIds names a node that never joined: once approved, nothing matches.
    let file = lab.home().join("r.yaml");
    std::fs::write(
        &file,
        format!(
            "kind: ClusterUpdate\nmetadata: {{name: r1}}\nspec:\n  target: {{flakeRef: \"github:kcorehypervisor/kcore\", flakeRev: \"{REV}\"}}\n  selector: {{nodeIds: [ghost]}}\n  approvalPolicy: manual\n"
        ),
    )
    .unwrap();
    let out = ok(kctl(
        lab.home(),
        &["update", "cluster", "apply", "-f", file.to_str().unwrap()],
    )
    .await);
    assert_eq!(out, "clusterupdate/r1 created\n");
    let mut cu = Value::Null;
    for _ in 0..150 {
        cu = get(&lab, "r1").await;
        if cu["status"]["phase"] == "awaiting_approval" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(cu["status"]["phase"], "awaiting_approval", "{cu:#}");
    let table = ok(kctl(lab.home(), &["update", "cluster", "list"]).await);
    assert!(
        table.starts_with("NAME\tPHASE") && table.contains("r1\tawaiting_approval"),
        "{table}"
    );

    let out = ok(kctl(lab.home(), &["update", "cluster", "approve", "r1"]).await);
    assert!(out.starts_with("r1: "), "{out}");
    let mut last = None;
    for _ in 0..150 {
        let run = kctl(lab.home(), &["update", "cluster", "get", "r1"]).await;
        if run.status.code() == Some(1) {
            last = Some(run);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let run = last.expect("the rollout never failed");
    let out = String::from_utf8_lossy(&run.stdout).to_string();
    let err = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(
        out.starts_with("r1: failed\nno Ready, approved node matches spec.selector"),
        "{out}"
    );
    assert!(err.contains("rollout \"r1\" is failed"), "{err}");

    // A rollout that does not exist is a refusal; a controller that does not answer is 3.
    let missing = kctl(lab.home(), &["update", "cluster", "get", "nope"]).await;
    assert_eq!(
        missing.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let server = format!("127.0.0.1:{port}");
    let down = kctl(lab.home(), &["update", "cluster", "list", "-s", &server]).await;
    assert_eq!(
        down.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_cluster_get_watch_prints_each_change_until_the_rollout_ends_and_exits_1_when_it_failed()
 {
    let lab = Lab::start(false).await;
    let file = lab.home().join("r.yaml");
    std::fs::write(
        &file,
        format!(
            "kind: ClusterUpdate\nmetadata: {{name: r2}}\nspec:\n  target: {{flakeRef: \"github:kcorehypervisor/kcore\", flakeRev: \"{REV}\"}}\n  selector: {{nodeIds: [ghost]}}\n  approvalPolicy: manual\n"
        ),
    )
    .unwrap();
    ok(kctl(
        lab.home(),
        &["update", "cluster", "apply", "-f", file.to_str().unwrap()],
    )
    .await);
    for _ in 0..150 {
        if get(&lab, "r2").await["status"]["phase"] == "awaiting_approval" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The watch runs while the rollout is approved; it ends by itself when the rollout
    // fails (no node matches), bounded here at a minute.
    let watch = kctl(lab.home(), &["update", "cluster", "get", "r2", "--watch"]);
    let approve = async {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        ok(kctl(lab.home(), &["update", "cluster", "approve", "r2"]).await)
    };
    let (run, _) = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        tokio::join!(watch, approve)
    })
    .await
    .expect("the watch never ended");
    let out = String::from_utf8_lossy(&run.stdout).to_string();
    assert_eq!(run.status.code(), Some(1), "{out}");
    // A pipe: one line per change, not a redrawn screen.
    assert!(!out.contains('\x1b'), "{out:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "r2: awaiting_approval",
            "r2: failed: no Ready, approved node matches spec.selector"
        ],
        "{out}"
    );
    // Nothing was updated: a rollback is refused (exit 1) and says what to do instead.
    let refused = kctl(lab.home(), &["update", "cluster", "rollback", "r2"]).await;
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("nothing to roll back"), "{err}");
}
