//! Who kctl talks to and what it prints: servers must prove the expected identity (a node
//! posing as a controller gets nothing), URLs must be https, credential and config
//! problems name the file, and text that came from nodes is printed escaped.

use super::lab::{Lab, fake_server, kctl, ok};
use super::support::{assert_no_control, text};
use assert_cmd::Command;
use std::net::TcpListener as StdListener;

use kcore_api::cluster::{Node, NodeReport, NodeStatus};

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
        cordons: Default::default(),
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
