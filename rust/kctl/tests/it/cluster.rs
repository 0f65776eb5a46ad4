//! `kctl` against an in-process controller with real mutual TLS: `create cluster`,
//! contexts, node certificates from CSRs, `get` / `describe`, approval and sub-CA
//! rotation. Failover is in `failover`, server identity and output safety in `trust`.

use super::lab::{Lab, kctl, ok};
use super::support::text;

use kcore_api::cluster::{Node, NodeReport, NodeStatus, StorageBackend};

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
            // node-b (zfs) is rejected: not in NODES.
            vec!["zfs", "0", "0"],
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
    // The operator guide's shape.
    let class = ok(kctl(lab.home(), &["describe", "storage-class", "lvm"]).await);
    let lines: Vec<&str> = class.lines().collect();
    assert_eq!(lines[0], "Storage class: lvm", "{class}");
    let at = lines.iter().position(|l| *l == "Nodes (1):").expect(&class);
    assert!(lines[at + 1].starts_with("- node-a "), "{class}");
    assert_eq!(lines.len(), at + 2, "{class}");
    let zfs = ok(kctl(lab.home(), &["describe", "storage-class", "zfs"]).await);
    assert!(
        zfs.contains("Nodes (0):") && !zfs.contains("node-b"),
        "{zfs}"
    );
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

    // The old sub-CA is retired and node-a still holds a certificate it issued.
    let serial =
        |pem: &str| kcore_pki::serial_hex(&kcore_pki::certs_from_pem(pem).unwrap()[0]).unwrap();
    let (old, new) = (serial(&before), serial(&after));
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&ok(
            kctl(lab.home(), &["get", "sub-cas", "-o", "json"]).await
        ))
        .unwrap();
    let state_of = |list: &[serde_json::Value], s: &str| {
        list.iter()
            .find(|u| u["serial"] == s)
            .map(|u| u["state"].as_str().unwrap().to_string())
    };
    assert_eq!(
        state_of(&listed, &old).as_deref(),
        Some("retired"),
        "{listed:?}"
    );
    assert_eq!(
        state_of(&listed, &new).as_deref(),
        Some("active"),
        "{listed:?}"
    );
    let table = ok(kctl(lab.home(), &["get", "sub-cas"]).await);
    assert!(
        table.contains("SERIAL") && table.contains("node/node-a"),
        "{table}"
    );

    // Revoking it is refused while node-a uses it, and a bad serial is refused locally.
    let refused = kctl(lab.home(), &["revoke", "sub-ca", &old]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("node/node-a") && said.contains("--force"),
        "{said}"
    );
    let bad = kctl(lab.home(), &["revoke", "sub-ca", "not-hex"]).await;
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("SERIAL"),
        "{}",
        text(&bad)
    );
    // With --force it is revoked: listed so, and the answer says what was revoked.
    let out = ok(kctl(lab.home(), &["revoke", "sub-ca", &old, "--force"]).await);
    assert!(out.contains(&format!("sub-ca/{old} revoked")), "{out}");
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&ok(
            kctl(lab.home(), &["get", "sub-cas", "-o", "json"]).await
        ))
        .unwrap();
    assert_eq!(
        state_of(&listed, &old).as_deref(),
        Some("revoked"),
        "{listed:?}"
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
