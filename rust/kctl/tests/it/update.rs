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

/// A fleet flake in a fresh git repository (the rollout rig's, `tests/support/fleet`) with
/// host `node-1`; its rev. `None` (SKIP) without nix or git.
fn fleet_repo(dir: &std::path::Path) -> Option<String> {
    let has = |p: &str| {
        std::process::Command::new(p)
            .arg("--version")
            .output()
            .is_ok()
    };
    if !has("nix-instantiate") || !has("git") {
        eprintln!("SKIP: nix-instantiate or git is not on PATH");
        return None;
    }
    let support =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/fleet");
    std::fs::create_dir_all(dir.join("hosts")).unwrap();
    for f in ["flake.nix", "switch-to-configuration"] {
        std::fs::copy(support.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("hosts/node-1.json"),
        r#"{"activate": "ok", "health": "ok", "kernel": "6.6.1", "seconds": 0}"#,
    )
    .unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.email=t@kcore.test", "-c", "user.name=t"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "r1"]);
    Some(git(&["rev-parse", "HEAD"]))
}

/// `update cluster plan`: the controller's selection and waves, then node-1's real agent
/// (enrolled by kctl, listening on 127.0.0.1, reached with the context's admin
/// certificate) evaluates its host at the pinned rev. A second node whose agent does not
/// answer, and a selector that names nobody, are exit 1; nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_cluster_plan_shows_targets_waves_and_each_agents_evaluation_and_changes_nothing() {
    let lab = Lab::start(false).await;
    let repo = lab.home().join("fleet");
    let Some(rev) = fleet_repo(&repo) else { return };
    // node-1: a real agent whose system root has a current system but no kernel.
    let (ca, cert, key) = lab.enroll("node-1").await;
    let node = lab.home().join("node-1");
    let root = node.join("root");
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::fs::create_dir_all(node.join("installed")).unwrap();
    std::os::unix::fs::symlink(node.join("installed"), root.join("run/current-system")).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = format!(
        "nodeId: node-1\nmode: managed\nlisten: \"127.0.0.1:{port}\"\ncontrollers: [\"{}\"]\nheartbeatIntervalSeconds: 1\ntls: {{caFile: {}, certFile: {}, keyFile: {}}}\ndisko: {{managementModeFile: {}, stateDir: {}}}\nnix: {{configPath: {}}}\n",
        lab.addr,
        ca.display(),
        cert.display(),
        key.display(),
        node.join("mode").display(),
        node.join("state/disko").display(),
        node.join("kcore-node.nix").display(),
    );
    let config =
        kcore_agent::config::AgentConfig::parse(&config, std::path::Path::new("node-agent.yaml"))
            .unwrap();
    let options = kcore_agent::server::RuntimeOptions {
        system_root: root.clone(),
        extra_env: vec![("NIX_CONFIG".into(), "substituters =".into())],
        ..Default::default()
    };
    let agent = kcore_agent::server::Agent::new(config, options).unwrap();
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        agent
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    // node-2 reports an agent address where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().to_string();
    drop(closed);
    lab.join_with(
        "node-2",
        kcore_api::cluster::NodeReport {
            hostname: "node-2".into(),
            dc_id: "DC1".into(),
            agent_address: Some(dead),
            ..Default::default()
        },
    )
    .await;
    let write = |name: &str, selector: &str| {
        let file = lab.home().join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "kind: ClusterUpdate\nmetadata: {{name: {name}}}\nspec:\n  target: {{flakeRef: \"git+file://{}\", flakeRev: \"{rev}\"}}\n  selector: {selector}\n  strategy: {{strategyType: batch, batchSize: 1, maxUnavailable: 1}}\n",
                repo.display()
            ),
        )
        .unwrap();
        file.display().to_string()
    };
    let one = write("one", "{nodeIds: [node-1]}");
    // Ready once node-1's agent has registered and beat.
    let mut plan = Value::Null;
    for _ in 0..100 {
        let run = kctl(
            lab.home(),
            &["update", "cluster", "plan", "-f", &one, "-o", "json"],
        )
        .await;
        if run.status.success() {
            plan = serde_json::from_slice(&run.stdout).unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(plan["waves"], serde_json::json!([["node-1"]]), "{plan:#}");
    let n1 = &plan["nodes"][0];
    assert_eq!(n1["nodeId"], "node-1");
    assert_eq!(n1["reachable"], true, "{plan:#}");
    assert_eq!(n1["node"]["hostExists"], true, "{plan:#}");
    assert!(
        n1["node"]["targetSystem"]
            .as_str()
            .unwrap()
            .ends_with("-kcore-fleet-system-node-1")
    );
    // Nothing booted here: every part of the new system needs a reboot.
    assert_eq!(
        n1["node"]["rebootReasons"],
        serde_json::json!(["kernel", "initrd", "kernel-modules"])
    );
    let table = ok(kctl(lab.home(), &["update", "cluster", "plan", "-f", &one]).await);
    assert!(
        table.starts_with("one: 1 target(s) in 1 wave(s)"),
        "{table}"
    );
    assert!(table.contains("wave 1: node-1"), "{table}");

    let all = write("all", "{allNodes: true}");
    let run = kctl(lab.home(), &["update", "cluster", "plan", "-f", &all]).await;
    let err = String::from_utf8_lossy(&run.stderr).to_string();
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains("all node-2: agent unreachable"), "{err}");
    assert!(String::from_utf8_lossy(&run.stdout).contains("wave 2: node-2"));

    let nobody = write("nobody", "{nodeIds: [ghost]}");
    let run = kctl(lab.home(), &["update", "cluster", "plan", "-f", &nobody]).await;
    let err = String::from_utf8_lossy(&run.stderr).to_string();
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains("no Ready, approved node matches"), "{err}");

    // A plan creates nothing.
    let list = ok(kctl(lab.home(), &["update", "cluster", "list", "-o", "json"]).await);
    assert_eq!(list.trim(), "[]", "{list}");
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}

/// `scripts/demo-rollout.sh` runs to its end ("demo-rollout: ok": the second revision
/// halted with node-3 reverted), so the demo cannot rot. It needs the workspace's
/// binaries next to kctl's (`cargo test --workspace` builds them, and the `fleet_agent`
/// example); SKIP otherwise.
#[test]
fn demo_rollout_script_plans_applies_and_halts_on_the_failing_revision() {
    let kctl = std::path::Path::new(env!("CARGO_BIN_EXE_kctl"));
    let bin_dir = kctl.parent().unwrap();
    let needed = [
        bin_dir.join("kcore-controller"),
        bin_dir.join("kcore-agent"),
        bin_dir.join("examples/fleet_agent"),
    ];
    if let Some(missing) = needed.iter().find(|p| !p.exists()) {
        eprintln!(
            "SKIP: {} is not built (cargo build -p kcore-controller -p kcore-agent --bins --example fleet_agent)",
            missing.display()
        );
        return;
    }
    let has = |p: &str| {
        std::process::Command::new(p)
            .arg("--version")
            .output()
            .is_ok()
    };
    if !["nix", "git", "jq"].iter().all(|p| has(p)) {
        eprintln!("SKIP: nix, git or jq is not on PATH");
        return;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/demo-rollout.sh");
    let out = std::process::Command::new(script)
        .env("KCORE_BIN_DIR", bin_dir)
        .env_remove("KEEP")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("demo-rollout: ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("release-r3: halted"), "{stdout}");
    assert!(stdout.contains("node-3\treverted"), "{stdout}");
}
