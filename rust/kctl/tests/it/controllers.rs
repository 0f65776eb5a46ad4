//! Highly available controllers through kctl (issue 13): `kctl create controller`
//! prepares a second controller with only the first as its peer and no sub-CA key; the
//! controller fetches the key over mTLS, joins and is discovered; the context learns it
//! after one command (said once on stderr, file mode kept); `get controllers
//! --require-healthy` passes, then names the first controller once it is stopped, while
//! kctl keeps working through the second.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use kcore_api::cluster::{Node, NodeStatus};
use serde_json::Value;

use super::lab::{Lab, kctl, ok, run_controller};
use super::support::text;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn contexts_controllers(home: &std::path::Path) -> Vec<String> {
    let config = kctl::context::KctlConfig::load(&home.join(".kcore/config")).unwrap();
    config.find("lab").unwrap().controllers.clone()
}

/// Waits until the controller at `server` lists controller `id` (asked with -s, which
/// leaves the context as it is).
async fn until_listed(lab: &Lab, server: &str, id: &str) {
    for _ in 0..100 {
        let out = kctl(
            lab.home(),
            &["-s", server, "get", "controllers", "-o", "json"],
        )
        .await;
        if out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains(&format!("\"{id}\""))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{server} never learnt {id}'s record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_from_create_controller_joins_and_the_context_learns_it() {
    let mut lab = Lab::start(false).await;
    let a = lab.addr.clone();
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = lb.local_addr().unwrap().to_string();
    let out = ok(kctl(
        lab.home(),
        &["create", "controller", "--address", &b, "--dc-id", "DC2"],
    )
    .await);
    assert!(out.contains("controller ctl2"), "{out}");
    let cdir = lab.ctx_dir.join("controllers/ctl2");
    // The directory never holds the sub-CA key; its only peer is the first controller.
    assert!(!cdir.join("sub-ca.key").exists());
    assert_eq!(mode(&cdir.join("controller.key")), 0o600);
    let config = kcore_controller::ControllerConfig::load(&cdir.join("controller.yaml")).unwrap();
    assert_eq!(config.peers, vec![a.clone()]);
    assert_eq!(config.advertise_address.as_deref(), Some(b.as_str()));
    assert_eq!(config.dc_id, "DC2");

    // Started, it fetches the key from ctl1 over mTLS (0600, the context's sub-CA).
    let (stop_b, task_b) = run_controller(lb, &cdir.join("controller.yaml"));
    for _ in 0..100 {
        if cdir.join("sub-ca.key").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(mode(&cdir.join("sub-ca.key")), 0o600);
    assert_eq!(
        std::fs::read_to_string(cdir.join("sub-ca.key")).unwrap(),
        std::fs::read_to_string(lab.ctx_dir.join("sub-ca.key")).unwrap()
    );

    // ctl1 learns ctl2 from its registration (asked with -s, which leaves the context).
    until_listed(&lab, &a, "ctl2").await;
    assert_eq!(contexts_controllers(lab.home()), vec![a.clone()]);

    // One command through the context: it gains ctl2, says so once, keeps the mode.
    let config_file = lab.home().join(".kcore/config");
    std::fs::set_permissions(&config_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = kctl(lab.home(), &["get", "nodes"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "kctl: context lab: controllers now {a}, {b} (learnt from {a})"
        )),
        "{}",
        text(&out)
    );
    assert_eq!(contexts_controllers(lab.home()), vec![a.clone(), b.clone()]);
    assert_eq!(mode(&config_file), 0o640);
    let again = kctl(lab.home(), &["get", "nodes"]).await;
    assert!(
        !String::from_utf8_lossy(&again.stderr).contains("controllers now"),
        "{}",
        text(&again)
    );

    // A node registered on ctl1 is visible on ctl2.
    assert_eq!(lab.join("node-a", "DC1", None).await, NodeStatus::Ready);
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
    assert!(seen, "ctl2 never learnt node-a");

    // Both controllers listed, each peer healthy from the answering one. Healthy also
    // holds before the answering controller has pulled from the new one at all (no peer
    // is unhealthy), so the listing must carry the other's replication status too.
    let mut healthy = false;
    for _ in 0..50 {
        let out = kctl(
            lab.home(),
            &["get", "controllers", "--require-healthy", "-o", "json"],
        )
        .await;
        let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let others_pulled = listed.as_array().is_some_and(|l| {
            l.iter()
                .filter(|c| c["answering"] == false)
                .all(|c| c["replication"]["state"] == "Healthy")
        });
        if out.status.success() && others_pulled {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(healthy, "the peers never became healthy");
    let listed: Value =
        serde_json::from_str(&ok(
            kctl(lab.home(), &["get", "controllers", "-o", "json"]).await
        ))
        .unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["ctl1", "ctl2"], "{listed}");
    // The answering controller marks itself; the other carries its replication figures.
    let other = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["answering"] == false)
        .unwrap();
    assert_eq!(other["replication"]["state"], "Healthy", "{listed}");
    assert!(other["replication"]["lagOperations"].is_u64(), "{listed}");

    // ctl1 stops: kctl keeps working through ctl2, and --require-healthy names ctl1.
    lab.stop.take().unwrap().send(()).unwrap();
    lab.task.take().unwrap().await.unwrap();
    let nodes: Vec<Node> =
        serde_json::from_str(&ok(kctl(lab.home(), &["get", "nodes", "-o", "json"]).await)).unwrap();
    assert_eq!(nodes.len(), 1);
    let mut named = String::new();
    for _ in 0..60 {
        let out = kctl(lab.home(), &["get", "controllers", "--require-healthy"]).await;
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if out.status.code() == Some(1) && stderr.contains("ctl1") {
            named = stderr;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        named.contains("PEER_UNHEALTHY") && named.contains("Unreachable"),
        "--require-healthy never named ctl1: {named}"
    );
    let _ = stop_b.send(());
    task_b.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_controller_with_a_csr_writes_no_key_and_signs_that_identity() {
    let lab = Lab::start(false).await;
    let identity = kcore_pki::Identity::new("lab", kcore_pki::Role::Controller, "ctl7").unwrap();
    let (_key, csr) = kcore_pki::generate_csr(&identity, &["10.0.0.7".into()]).unwrap();
    let csr_file = lab.home().join("ctl7.csr");
    std::fs::write(&csr_file, csr).unwrap();
    ok(kctl(
        lab.home(),
        &[
            "create",
            "controller",
            "--address",
            "10.0.0.7:9090",
            "--id",
            "ctl7",
            "--csr",
            csr_file.to_str().unwrap(),
        ],
    )
    .await);
    let cdir = lab.ctx_dir.join("controllers/ctl7");
    assert!(!cdir.join("controller.key").exists());
    assert!(!cdir.join("sub-ca.key").exists());
    let chain = std::fs::read_to_string(cdir.join("controller.crt")).unwrap();
    let certs = kcore_pki::certs_from_pem(&chain).unwrap();
    let found = kcore_pki::identity_of(certs[0].as_ref()).unwrap();
    assert_eq!(found.uri(), "kcore://lab/controller/ctl7");
    // A CSR for another id is refused.
    let out = kctl(
        lab.home(),
        &[
            "create",
            "controller",
            "--address",
            "10.0.0.8:9090",
            "--id",
            "ctl8",
            "--csr",
            csr_file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    lab.stop().await;
}

/// `kctl delete controller ID` sent first to the controller being deleted: it refuses
/// (it would revoke the certificate it answers with) and kctl asks the next one, which
/// deletes it. With only that controller to ask, kctl says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_controller_sent_to_that_controller_fails_over_to_the_next() {
    let lab = Lab::start(false).await;
    let a = lab.addr.clone();
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = lb.local_addr().unwrap().to_string();
    ok(kctl(lab.home(), &["create", "controller", "--address", &b]).await);
    let cdir = lab.ctx_dir.join("controllers/ctl2");
    let (stop_b, task_b) = run_controller(lb, &cdir.join("controller.yaml"));
    until_listed(&lab, &a, "ctl2").await;

    // Only ctl2 to ask: refused, exit 1, and the way out named.
    let alone = kctl(lab.home(), &["-s", &b, "delete", "controller", "ctl2"]).await;
    assert_eq!(alone.status.code(), Some(1), "{}", text(&alone));
    let said = String::from_utf8_lossy(&alone.stderr);
    assert!(
        said.contains("cannot delete itself") && said.contains("no other controller did it"),
        "{}",
        text(&alone)
    );

    // ctl2 first, then ctl1: ctl1 deletes it.
    let out = ok(kctl(
        lab.home(),
        &["-s", &b, "-s", &a, "delete", "controller", "ctl2"],
    )
    .await);
    assert!(out.contains("controller/ctl2 deleted"), "{out}");
    let listed = ok(kctl(lab.home(), &["-s", &a, "get", "controllers", "-o", "json"]).await);
    assert!(!listed.contains("\"ctl2\""), "{listed}");
    let _ = stop_b.send(());
    task_b.await.unwrap();
    lab.stop().await;
}
