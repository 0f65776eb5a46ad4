//! The agent in-process on 127.0.0.1:0 with real TLS: the TLS modes and who may call what,
//! inventory from this host's real lsblk/ip, apply-disko (planned against a fixture
//! snapshot, run through the disko stand-in, since this machine has no spare disk) and
//! apply-nix (through the systemd-run and nixos-rebuild stand-ins, which do a real
//! `nix build` of a local test flake). Tests that use a stand-in say so in their names.

#![allow(clippy::unwrap_used)] // test helpers may unwrap, like the tests themselves

use std::path::{Path, PathBuf};
use std::time::Duration;

use kcore_agent::config::AgentConfig;
use kcore_agent::{Agent, RuntimeOptions};
use kcore_api::inventory::{
    ApplyDiskoRequest, ApplyNixRequest, DiskInventory, DiskoPlanResponse, NicInventory,
    OperationEvent, OperationResult, OperationStarted, OperationStatus, StorageView,
};
use kcore_disko::BlockSnapshot;
use kcore_net::{Client, ClientError, ClientOptions};
use kcore_pki::{Authority, CertifiedKey, Identity, Role};
use serde_json::json;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/support")
        .join(name)
}

fn fixture_snapshot() -> BlockSnapshot {
    let lsblk = include_str!("fixtures/lsblk.json");
    BlockSnapshot {
        lsblk: serde_json::from_str(lsblk).unwrap(),
        swaps: vec!["/dev/sda3".into()],
        holders: [("sda2".to_string(), vec!["dm-0".to_string()])].into(),
        links: [(
            "/dev/disk/by-id/ata-QEMU_HARDDISK_QM00002".to_string(),
            "/dev/sdb".to_string(),
        )]
        .into(),
        live: false,
    }
}

struct Pki {
    root: Authority,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            root: Authority::new_root("lab", 30 * DAY).unwrap(),
        }
    }

    fn leaf(&self, role: Role, id: &str) -> CertifiedKey {
        self.root
            .issue(
                &Identity::new("lab", role, id).unwrap(),
                &["localhost".into(), "127.0.0.1".into()],
                10 * DAY,
            )
            .unwrap()
    }

    fn client_tls(&self, leaf: &CertifiedKey) -> rustls::ClientConfig {
        kcore_pki::client_config(self.root.cert_pem(), &leaf.cert_pem, &leaf.key_pem).unwrap()
    }
}

/// A temporary node: its directories and the configuration pointing at them.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        Node {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The configuration as the NixOS module would write it (JSON is YAML), parsed by the
    /// real loader.
    fn config(&self, mode: &str, pki: Option<&Pki>, extra: serde_json::Value) -> AgentConfig {
        let mut doc = json!({
            "nodeId": "node-1",
            "mode": mode,
            "listen": "127.0.0.1:0",
            "disko": {
                "managementModeFile": self.path("disko-management-mode"),
                "stateDir": self.path("disko"),
            },
            "nix": { "configPath": self.path("flake/kcore-node.nix") },
            "binaries": {
                "disko": support("disko"),
                "systemdRun": support("systemd-run"),
                "systemctl": support("systemctl"),
                "nixosRebuild": support("nixos-rebuild"),
            },
        });
        if let Some(pki) = pki {
            let server = pki.leaf(Role::Node, "node-1");
            std::fs::write(self.path("ca.crt"), pki.root.cert_pem()).unwrap();
            std::fs::write(self.path("node.crt"), &server.cert_pem).unwrap();
            std::fs::write(self.path("node.key"), &server.key_pem).unwrap();
            doc["tls"] = json!({
                "caFile": self.path("ca.crt"),
                "certFile": self.path("node.crt"),
                "keyFile": self.path("node.key"),
            });
        }
        merge(&mut doc, extra);
        let text = serde_json::to_string_pretty(&doc).unwrap();
        AgentConfig::parse(&text, Path::new("node-agent.yaml")).unwrap()
    }

    fn set_mode(&self, mode: &str) {
        std::fs::write(self.path("disko-management-mode"), format!("{mode}\n")).unwrap();
    }
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            match b.get_mut(&k) {
                Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                _ => {
                    b.insert(k, v);
                }
            }
        }
    }
}

struct Running {
    addr: std::net::SocketAddr,
    fingerprint: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    fn client(&self, tls: rustls::ClientConfig) -> Client {
        Client::new(
            vec![format!("https://{}", self.addr)],
            tls,
            ClientOptions {
                connect_timeout: Duration::from_secs(5),
                attempt_timeout: Duration::from_secs(60),
                total_timeout: Duration::from_secs(120),
                stream_idle_timeout: Duration::from_secs(120),
            },
        )
        .unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

async fn start(config: AgentConfig, options: RuntimeOptions) -> Running {
    let agent = Agent::new(config, options).unwrap();
    let fingerprint = agent.fingerprint().map(str::to_string);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        agent
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        fingerprint,
        stop: Some(stop),
        task: Some(task),
    }
}

fn code(err: &ClientError) -> String {
    err.api_code().unwrap_or("<no code>").to_string()
}

/// Collect an operation's events until it finishes.
async fn follow(client: &Client, id: &str) -> (Vec<OperationEvent>, OperationResult) {
    let mut events = Vec::new();
    client
        .stream_ndjson::<(), OperationEvent, _>(
            &format!("/v1/operations/{id}/stream"),
            None,
            |ev| events.push(ev),
        )
        .await
        .unwrap();
    let result = match events.last() {
        Some(OperationEvent::Finished { result }) => (**result).clone(),
        other => panic!("stream did not end with `finished`: {other:?}"),
    };
    let fetched: OperationResult = client
        .get_json(&format!("/v1/operations/{id}"))
        .await
        .unwrap();
    assert_eq!(fetched, result, "the result can be fetched again");
    (events, result)
}

fn output_lines(events: &[OperationEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            OperationEvent::Output { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// TLS modes and roles

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_mode_serves_admins_over_mtls_with_real_inventory() {
    let pki = Pki::new();
    let node = Node::new();
    let agent = start(
        node.config("managed", Some(&pki), json!({})),
        RuntimeOptions::default(),
    )
    .await;
    assert_eq!(agent.fingerprint, None);
    let admin = agent.client(pki.client_tls(&pki.leaf(Role::Admin, "alice")));

    // This host's real lsblk and ip.
    let disks: DiskInventory = admin.get_json("/v1/inventory/disks").await.unwrap();
    assert!(
        !disks.disks.is_empty(),
        "lsblk lists at least one device here"
    );
    for disk in &disks.disks {
        if !disk.mountpoints.is_empty() {
            assert!(disk.in_use, "{} is mounted but not in use", disk.path);
        }
    }
    let nics: NicInventory = admin.get_json("/v1/inventory/nics").await.unwrap();
    let lo = nics
        .nics
        .iter()
        .find(|n| n.name == "lo")
        .expect("lo exists");
    assert!(lo.addresses.contains(&"127.0.0.1/8".to_string()), "{lo:?}");
    let storage: StorageView = admin.get_json("/v1/inventory/storage").await.unwrap();
    assert_eq!(storage.backend, "filesystem");

    // A controller may read too; unknown routes answer with the JSON envelope.
    let controller = agent.client(pki.client_tls(&pki.leaf(Role::Controller, "ctl1")));
    let _: NicInventory = controller.get_json("/v1/inventory/nics").await.unwrap();
    let err = admin
        .get_json::<serde_json::Value>("/v1/nothing")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NOT_FOUND");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_mode_refuses_no_cert_other_ca_and_expired_cert() {
    let pki = Pki::new();
    let node = Node::new();
    let agent = start(
        node.config("managed", Some(&pki), json!({})),
        RuntimeOptions::default(),
    )
    .await;

    // Trusts the agent, presents nothing.
    let roots = {
        let mut store = rustls::RootCertStore::empty();
        for cert in kcore_pki::certs_from_pem(pki.root.cert_pem()).unwrap() {
            store.add(cert).unwrap();
        }
        store
    };
    let no_cert = rustls::ClientConfig::builder_with_provider(kcore_pki::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let err = agent
        .client(no_cert)
        .get_json::<NicInventory>("/v1/inventory/nics")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");

    // A valid admin certificate from another cluster's CA.
    let other = Pki::new();
    let foreign = other.leaf(Role::Admin, "mallory");
    let tls =
        kcore_pki::client_config(pki.root.cert_pem(), &foreign.cert_pem, &foreign.key_pem).unwrap();
    let err = agent
        .client(tls)
        .get_json::<NicInventory>("/v1/inventory/nics")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");

    // Our CA, but expired yesterday.
    let now = time::OffsetDateTime::now_utc();
    let expired = pki
        .root
        .issue_between(
            &Identity::new("lab", Role::Admin, "alice").unwrap(),
            &[],
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        )
        .unwrap();
    let err = agent
        .client(pki.client_tls(&expired))
        .get_json::<NicInventory>("/v1/inventory/nics")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");

    // The same client set-up with a valid certificate works (the refusals above are about
    // the certificates, not the set-up).
    let ok = agent.client(pki.client_tls(&pki.leaf(Role::Admin, "alice")));
    let _: NicInventory = ok.get_json("/v1/inventory/nics").await.unwrap();
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_cluster_certificates_bad_paths_and_wrong_methods_get_envelopes() {
    let pki = Pki::new();
    let node = Node::new();
    let agent = start(
        node.config("managed", Some(&pki), json!({})),
        RuntimeOptions::default(),
    )
    .await;

    // Signed by this cluster's root (the handshake passes) but naming cluster "other":
    // refused like the controller refuses it (security probe D12).
    let stranger = pki
        .root
        .issue(
            &Identity::new("other", Role::Admin, "mallory").unwrap(),
            &[],
            10 * DAY,
        )
        .unwrap();
    let client = agent.client(pki.client_tls(&stranger));
    let err = client
        .get_json::<NicInventory>("/v1/inventory/nics")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "WRONG_CLUSTER", "{err}");
    let err = client
        .post_json::<_, serde_json::Value>("/v1/disko/apply", &dry("{}"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "WRONG_CLUSTER", "{err}");

    let admin = agent.client(pki.client_tls(&pki.leaf(Role::Admin, "alice")));
    // Not UTF-8 after percent-decoding: a 400 envelope, not axum's plain text.
    let err = admin
        .get_json::<serde_json::Value>("/v1/operations/%FF")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "BAD_REQUEST", "{err}");
    // A known route with the wrong method: 405 envelope naming the method to use.
    match admin
        .get_json::<serde_json::Value>("/v1/disko/apply")
        .await
        .unwrap_err()
    {
        ClientError::Api { status, error, .. } => {
            assert_eq!(status, 405);
            assert_eq!(error.code, "METHOD_NOT_ALLOWED");
            assert_eq!(error.details["allowedMethods"], json!(["POST"]));
        }
        other => panic!("expected a 405 envelope, got {other:?}"),
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_mode_closes_a_client_that_never_speaks() {
    use tokio::io::AsyncReadExt as _;
    let node = Node::new();
    // `connections` from node-agent.yaml reaches the server: a short first-request timeout.
    let agent = start(
        node.config(
            "install",
            None,
            json!({ "connections": { "firstRequestTimeoutSeconds": 1 } }),
        ),
        RuntimeOptions::default(),
    )
    .await;
    // TLS without a certificate (nothing is needed on the live ISO), ALPN h2, then
    // silence: no HTTP/2 preface (security probe D5).
    let mut tls = kcore_pki::client_config_insecure().unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut silent = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a silent h2 client still holds the install-mode agent"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_read_only_their_own_inventory_and_never_apply() {
    let pki = Pki::new();
    let node = Node::new();
    node.set_mode("controller-managed");
    let agent = start(
        node.config("managed", Some(&pki), json!({})),
        RuntimeOptions::default(),
    )
    .await;
    let itself = agent.client(pki.client_tls(&pki.leaf(Role::Node, "node-1")));
    let _: NicInventory = itself.get_json("/v1/inventory/nics").await.unwrap();
    let other = agent.client(pki.client_tls(&pki.leaf(Role::Node, "node-2")));
    let err = other
        .get_json::<NicInventory>("/v1/inventory/nics")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "FORBIDDEN");
    let err = itself
        .post_json::<_, serde_json::Value>(
            "/v1/nix/apply",
            &ApplyNixRequest {
                config: "{ }".into(),
                no_rebuild: true,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "FORBIDDEN");
    assert!(!node.path("flake/kcore-node.nix").exists());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_mode_is_self_signed_pinnable_and_serves_inventory_only() {
    let node = Node::new();
    let agent = start(
        node.config("install", None, json!({})),
        RuntimeOptions::default(),
    )
    .await;
    let fingerprint = agent
        .fingerprint
        .clone()
        .expect("install mode has a fingerprint");

    // -k
    let insecure = agent.client(kcore_pki::client_config_insecure().unwrap());
    let _: NicInventory = insecure.get_json("/v1/inventory/nics").await.unwrap();
    let health: serde_json::Value = insecure.get_json("/v1/health").await.unwrap();
    assert_eq!(health["mode"], "install");
    // Day-2 routes do not exist in install mode.
    for path in ["/v1/disko/apply", "/v1/nix/apply"] {
        let err = insecure
            .post_json::<_, serde_json::Value>(path, &json!({}))
            .await
            .unwrap_err();
        assert_eq!(code(&err), "NOT_FOUND", "{path}");
    }
    let err = insecure
        .get_json::<serde_json::Value>("/v1/operations/x")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NOT_FOUND");

    // --fingerprint: the right pin works (with colons and upper case too), a wrong one fails.
    let pinned = agent.client(kcore_pki::client_config_pinned(&fingerprint).unwrap());
    let _: NicInventory = pinned.get_json("/v1/inventory/nics").await.unwrap();
    let colons = fingerprint
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let pinned = agent.client(kcore_pki::client_config_pinned(&colons).unwrap());
    let _: NicInventory = pinned.get_json("/v1/inventory/nics").await.unwrap();
    let wrong = format!("{}{}", &fingerprint[..fingerprint.len() - 1], {
        if fingerprint.ends_with('0') { "1" } else { "0" }
    });
    let err = agent
        .client(kcore_pki::client_config_pinned(&wrong).unwrap())
        .get_json::<NicInventory>("/v1/inventory/nics")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    agent.stop().await;
}

// ---------------------------------------------------------------------------------------
// apply-disko

const DATA_DISK: &str = r#"{
  disko.devices.disk.data1 = {
    type = "disk";
    device = "/dev/disk/by-id/ata-QEMU_HARDDISK_QM00002";
    content = {
      type = "gpt";
      partitions.data = {
        size = "100%";
        content = {
          type = "filesystem";
          format = "ext4";
          mountpoint = "/var/lib/kcore/volumes1";
        };
      };
    };
  };
}
"#;

fn deep_inputs() -> Option<kcore_disko::DeepInputs> {
    let inputs = kcore_disko::DeepInputs::from_env();
    if inputs.is_none() {
        eprintln!(
            "SKIP (deep level only): KCORE_TEST_DISKO / KCORE_TEST_NIXPKGS_LIB not set and no cached test inputs"
        );
    }
    inputs
}

fn dry(layout: &str) -> ApplyDiskoRequest {
    ApplyDiskoRequest {
        layout: layout.to_string(),
        apply: false,
        plan_hash: None,
        timeout_seconds: None,
    }
}

fn apply(layout: &str, hash: &str, timeout: Option<u64>) -> ApplyDiskoRequest {
    ApplyDiskoRequest {
        layout: layout.to_string(),
        apply: true,
        plan_hash: Some(hash.to_string()),
        timeout_seconds: timeout,
    }
}

struct DiskoBed {
    _pki: Pki,
    node: Node,
    agent: Running,
    admin: Client,
}

async fn disko_bed(extra: serde_json::Value, env: Vec<(String, String)>) -> DiskoBed {
    let pki = Pki::new();
    let node = Node::new();
    let options = RuntimeOptions {
        extra_env: env,
        block_snapshot: Some(fixture_snapshot()),
        ..RuntimeOptions::default()
    };
    let agent = start(node.config("managed", Some(&pki), extra), options).await;
    let admin = agent.client(pki.client_tls(&pki.leaf(Role::Admin, "alice")));
    DiskoBed {
        _pki: pki,
        node,
        agent,
        admin,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disko_dry_run_validates_deeply_plans_and_touches_nothing() {
    let Some(deep) = deep_inputs() else { return };
    let log = tempfile::NamedTempFile::new().unwrap();
    let bed = disko_bed(
        json!({"disko": {"diskoSource": deep.disko, "nixpkgsLib": deep.nixpkgs_lib}}),
        vec![(
            "KCORE_TEST_DISKO_LOG".into(),
            log.path().display().to_string(),
        )],
    )
    .await;
    bed.node.set_mode("controller-managed");
    let plan: DiskoPlanResponse = bed
        .admin
        .post_json("/v1/disko/apply", &dry(DATA_DISK))
        .await
        .unwrap();
    assert_eq!(plan.validated, ["parse", "eval", "deep"]);
    assert!(plan.plan_hash.starts_with("sha256:"));
    assert!(plan.apply_allowed, "{:?}", plan.refusal);
    assert_eq!(plan.management_mode, "controller-managed");
    let target = &plan.plan.targets[0];
    assert_eq!(
        target.identity.as_ref().map(|i| i.path.as_str()),
        Some("/dev/sdb")
    );
    assert_eq!(target.actions[0].kind, kcore_api::plan::ActionKind::NewDisk);
    // Same request, same plan, same hash.
    let again: DiskoPlanResponse = bed
        .admin
        .post_json("/v1/disko/apply", &dry(DATA_DISK))
        .await
        .unwrap();
    assert_eq!(again.plan_hash, plan.plan_hash);
    // Nothing ran, nothing was kept.
    assert_eq!(std::fs::read_to_string(log.path()).unwrap(), "");
    assert!(!bed.node.path("disko").exists());

    // Invalid fragments are refused with findings, at the level that caught them.
    let err = bed
        .admin
        .post_json::<_, DiskoPlanResponse>("/v1/disko/apply", &dry("{ disko.devices = ; }"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "DISKO_INVALID");
    assert!(err.to_string().contains("level 1"), "{err}");
    let bad_type = DATA_DISK.replace("\"filesystem\"", "\"filesystm\"");
    let err = bed
        .admin
        .post_json::<_, DiskoPlanResponse>("/v1/disko/apply", &dry(&bad_type))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "DISKO_INVALID");
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disko_management_modes_are_read_per_request_with_disko_stand_in() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let bed = disko_bed(
        json!({}),
        vec![(
            "KCORE_TEST_DISKO_LOG".into(),
            log.path().display().to_string(),
        )],
    )
    .await;

    // No mode file, an unknown value, and installer-only all refuse every apply.
    for mode in [None, Some("Controller-Managed"), Some("installer-only")] {
        if let Some(mode) = mode {
            bed.node.set_mode(mode);
        }
        let plan: DiskoPlanResponse = bed
            .admin
            .post_json("/v1/disko/apply", &dry(DATA_DISK))
            .await
            .unwrap();
        assert_eq!(plan.management_mode, "installer-only", "{mode:?}");
        assert!(!plan.apply_allowed);
        assert_eq!(plan.refusal.unwrap().code, "DISKO_INSTALLER_ONLY");
        let err = bed
            .admin
            .post_json::<_, OperationStarted>(
                "/v1/disko/apply",
                &apply(DATA_DISK, &plan.plan_hash, None),
            )
            .await
            .unwrap_err();
        assert_eq!(code(&err), "DISKO_INSTALLER_ONLY", "{mode:?}");
    }
    assert_eq!(std::fs::read_to_string(log.path()).unwrap(), "");

    // Flip the file: the next request sees it, no restart.
    bed.node.set_mode("controller-managed");
    let plan: DiskoPlanResponse = bed
        .admin
        .post_json("/v1/disko/apply", &dry(DATA_DISK))
        .await
        .unwrap();
    assert!(plan.apply_allowed);
    let started: OperationStarted = bed
        .admin
        .post_json("/v1/disko/apply", &apply(DATA_DISK, &plan.plan_hash, None))
        .await
        .unwrap();
    assert_eq!(started.effective_timeout_seconds, Some(300));
    let (events, result) = follow(&bed.admin, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    assert!(
        output_lines(&events).contains(&"formatted and mounted".to_string()),
        "disko's output is streamed: {events:?}"
    );
    let ran = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        ran.starts_with("args: --mode format,mount --root-mountpoint / "),
        "{ran}"
    );
    assert!(ran.contains("QM00002"), "disko got the fragment: {ran}");
    let kept = bed.node.path("disko/data1.nix");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), DATA_DISK);
    assert!(result.written.contains(&kept.display().to_string()));

    // Now a destructive change of that disk (ext4 -> xfs) is refused under controller-managed.
    let xfs = DATA_DISK.replace("ext4", "xfs");
    let plan: DiskoPlanResponse = bed
        .admin
        .post_json("/v1/disko/apply", &dry(&xfs))
        .await
        .unwrap();
    assert!(!plan.apply_allowed);
    assert_eq!(plan.refusal.unwrap().code, "DESTRUCTIVE_CHANGE_REFUSED");
    let err = bed
        .admin
        .post_json::<_, OperationStarted>("/v1/disko/apply", &apply(&xfs, &plan.plan_hash, None))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "DESTRUCTIVE_CHANGE_REFUSED");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), DATA_DISK);
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disko_plan_hash_must_match_and_in_use_targets_are_refused_with_disko_stand_in() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let bed = disko_bed(
        json!({}),
        vec![(
            "KCORE_TEST_DISKO_LOG".into(),
            log.path().display().to_string(),
        )],
    )
    .await;
    bed.node.set_mode("controller-managed");
    let plan: DiskoPlanResponse = bed
        .admin
        .post_json("/v1/disko/apply", &dry(DATA_DISK))
        .await
        .unwrap();

    // No hash, a made-up hash.
    let mut no_hash = apply(DATA_DISK, "", None);
    no_hash.plan_hash = None;
    let err = bed
        .admin
        .post_json::<_, OperationStarted>("/v1/disko/apply", &no_hash)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "PLAN_HASH_REQUIRED");
    let err = bed
        .admin
        .post_json::<_, OperationStarted>("/v1/disko/apply", &apply(DATA_DISK, "sha256:00", None))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "PLAN_HASH_MISMATCH");

    // The plan changes between dry run and apply (the disk was applied meanwhile): the old
    // hash no longer matches.
    std::fs::create_dir_all(bed.node.path("disko")).unwrap();
    std::fs::write(bed.node.path("disko/data1.nix"), DATA_DISK).unwrap();
    let err = bed
        .admin
        .post_json::<_, OperationStarted>(
            "/v1/disko/apply",
            &apply(DATA_DISK, &plan.plan_hash, None),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "PLAN_HASH_MISMATCH");

    // A target that holds the running system.
    let os_disk = DATA_DISK.replace("/dev/disk/by-id/ata-QEMU_HARDDISK_QM00002", "/dev/sda");
    let plan: DiskoPlanResponse = bed
        .admin
        .post_json("/v1/disko/apply", &dry(&os_disk))
        .await
        .unwrap();
    let refusal = plan.refusal.unwrap();
    assert_eq!(refusal.code, "TARGET_IS_OS_DISK");
    let codes: Vec<&str> = refusal.details["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["code"].as_str())
        .collect();
    assert!(codes.contains(&"TARGET_MOUNTED"), "{codes:?}");
    let err = bed
        .admin
        .post_json::<_, OperationStarted>(
            "/v1/disko/apply",
            &apply(&os_disk, &plan.plan_hash, None),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "TARGET_IS_OS_DISK");
    assert_eq!(
        std::fs::read_to_string(log.path()).unwrap(),
        "",
        "disko never ran"
    );
    bed.agent.stop().await;
}

fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A killed process whose parent died waits here for init to reap it: it is dead.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disko_timeout_is_capped_and_kills_the_process_group_with_disko_stand_in() {
    let pids = tempfile::NamedTempFile::new().unwrap();
    let bed = disko_bed(
        json!({}),
        vec![(
            "KCORE_TEST_DISKO_HANG".into(),
            pids.path().display().to_string(),
        )],
    )
    .await;
    bed.node.set_mode("controller-managed");
    let plan: DiskoPlanResponse = bed
        .admin
        .post_json("/v1/disko/apply", &dry(DATA_DISK))
        .await
        .unwrap();

    // 7200 s requested: the agent reports (and enforces) 3600. Zero is refused.
    let err = bed
        .admin
        .post_json::<_, OperationStarted>(
            "/v1/disko/apply",
            &apply(DATA_DISK, &plan.plan_hash, Some(0)),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "BAD_REQUEST");
    let started: OperationStarted = bed
        .admin
        .post_json(
            "/v1/disko/apply",
            &apply(DATA_DISK, &plan.plan_hash, Some(7200)),
        )
        .await
        .unwrap();
    assert_eq!(started.effective_timeout_seconds, Some(3600));
    // While it runs, a second apply is refused.
    let err = bed
        .admin
        .post_json::<_, OperationStarted>(
            "/v1/disko/apply",
            &apply(DATA_DISK, &plan.plan_hash, Some(2)),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "DISK_APPLY_IN_PROGRESS");
    // That one hangs for its 3600 s; it is not what we wait for here. The runner
    // kills its group when the agent's task is dropped at the end of the test.

    // A fresh agent (own lock) with a 2 s timeout: disko and its child both die.
    let pids2 = tempfile::NamedTempFile::new().unwrap();
    let bed2 = disko_bed(
        json!({}),
        vec![(
            "KCORE_TEST_DISKO_HANG".into(),
            pids2.path().display().to_string(),
        )],
    )
    .await;
    bed2.node.set_mode("controller-managed");
    let started: OperationStarted = bed2
        .admin
        .post_json(
            "/v1/disko/apply",
            &apply(DATA_DISK, &plan.plan_hash, Some(2)),
        )
        .await
        .unwrap();
    assert_eq!(started.effective_timeout_seconds, Some(2));
    let (events, result) = follow(&bed2.admin, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::TimedOut, "{result:?}");
    assert_eq!(result.error.as_ref().unwrap().code, "TIMED_OUT");
    assert!(output_lines(&events).contains(&"hanging".to_string()));
    let listed = std::fs::read_to_string(pids2.path()).unwrap();
    let pids_listed: Vec<&str> = listed.lines().collect();
    assert_eq!(pids_listed.len(), 2, "disko and its child: {listed}");
    // SIGKILL was sent before the result was published; give the kernel a moment to
    // tear the processes down (a bounded wait for a state, not a timing assertion).
    for _ in 0..100 {
        if pids_listed.iter().all(|p| process_gone(p)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pid in &pids_listed {
        assert!(process_gone(pid), "process {pid} survived the timeout");
    }
    assert!(!bed2.node.path("disko/data1.nix").exists(), "nothing kept");
    bed2.agent.stop().await;
    drop(bed);
}

// ---------------------------------------------------------------------------------------
// apply-nix

struct NixBed {
    pki: Pki,
    node: Node,
    options: RuntimeOptions,
    agent: Running,
    admin: Client,
}

impl NixBed {
    /// Stop this agent and start a new one on the same configuration and directories, as a
    /// restart of the service would.
    async fn restart(self) -> NixBed {
        let NixBed {
            pki,
            node,
            options,
            agent,
            ..
        } = self;
        agent.stop().await;
        let agent = start(
            node.config("managed", Some(&pki), json!({})),
            options.clone(),
        )
        .await;
        let admin = agent.client(pki.client_tls(&pki.leaf(Role::Admin, "alice")));
        NixBed {
            pki,
            node,
            options,
            agent,
            admin,
        }
    }

    fn activations(&self) -> Vec<String> {
        std::fs::read_to_string(self.node.path("activations"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

async fn nix_bed(gate: Option<&Path>) -> Option<NixBed> {
    nix_bed_with(gate, |_| {}).await
}

async fn nix_bed_with(
    gate: Option<&Path>,
    adjust: impl FnOnce(&mut RuntimeOptions),
) -> Option<NixBed> {
    if which_nix().is_none() {
        eprintln!("SKIP: `nix` is not on PATH (apt-get install nix-bin)");
        return None;
    }
    let pki = Pki::new();
    let node = Node::new();
    std::fs::create_dir_all(node.path("flake")).unwrap();
    std::fs::copy(
        support("test-flake/flake.nix"),
        node.path("flake/flake.nix"),
    )
    .unwrap();
    let profile = node.path("profiles/system");
    let mut env = vec![
        (
            "KCORE_TEST_FLAKE".to_string(),
            node.path("flake").display().to_string(),
        ),
        (
            "KCORE_SYSTEM_PROFILE".to_string(),
            profile.display().to_string(),
        ),
        (
            "KCORE_TEST_ACTIVATIONS".to_string(),
            node.path("activations").display().to_string(),
        ),
    ];
    if let Some(gate) = gate {
        env.push((
            "KCORE_TEST_REBUILD_GATE".to_string(),
            gate.display().to_string(),
        ));
    }
    let mut options = RuntimeOptions {
        extra_env: env,
        system_profile: profile,
        rebuild_log_dir: node.path("logs"),
        ..RuntimeOptions::default()
    };
    adjust(&mut options);
    let agent = start(
        node.config("managed", Some(&pki), json!({})),
        options.clone(),
    )
    .await;
    let admin = agent.client(pki.client_tls(&pki.leaf(Role::Admin, "alice")));
    Some(NixBed {
        pki,
        node,
        options,
        agent,
        admin,
    })
}

fn which_nix() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nix"))
            .find(|p| p.is_file())
    })
}

const MODULE_A: &str = "{ ... }: {\n  networking.hostName = \"hv1\";\n}\n";
const MODULE_B: &str = "{ ... }: {\n  networking.hostName = \"hv2\";\n}\n";

fn nix_req(config: &str, no_rebuild: bool) -> ApplyNixRequest {
    ApplyNixRequest {
        config: config.to_string(),
        no_rebuild,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_nix_validates_writes_and_rebuilds_with_nixos_rebuild_stand_in() {
    let Some(bed) = nix_bed(None).await else {
        return;
    };
    let config_path = bed.node.path("flake/kcore-node.nix");

    // Invalid Nix is refused before anything is written.
    for (bad, what) in [
        ("{ ... }: { networking.hostName = ; }", "does not parse"),
        ("{ ... }: undefinedThing", "does not evaluate"),
        ("42", "must be a function"),
    ] {
        let err = bed
            .admin
            .post_json::<_, OperationStarted>("/v1/nix/apply", &nix_req(bad, false))
            .await
            .unwrap_err();
        assert_eq!(code(&err), "NIX_INVALID", "{bad}");
        assert!(err.to_string().contains(what), "{bad}: {err}");
    }
    assert!(!config_path.exists());

    // test, then switch, in transient units; the new generation is reported.
    let started: OperationStarted = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_A, false))
        .await
        .unwrap();
    let (events, result) = follow(&bed.admin, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    assert_eq!(result.generation.as_deref(), Some("1"));
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), MODULE_A);
    let steps: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            OperationEvent::Step { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(steps[1..], ["nixos-rebuild test", "nixos-rebuild switch"]);
    assert!(
        output_lines(&events)
            .iter()
            .any(|l| l.starts_with("building the system configuration (switch)")),
        "the unit's log is streamed: {events:?}"
    );
    let acts = bed.activations();
    assert_eq!(acts.len(), 2, "{acts:?}");
    let (test_path, switch_path) = (
        acts[0].strip_prefix("test ").unwrap(),
        acts[1].strip_prefix("switch ").unwrap(),
    );
    assert_eq!(test_path, switch_path, "switch activates what test built");
    assert_eq!(
        std::fs::read_to_string(test_path).unwrap().trim(),
        MODULE_A.trim()
    );

    // A second configuration: new generation, previous file kept as .bak.
    let started: OperationStarted = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_B, false))
        .await
        .unwrap();
    let (_, result) = follow(&bed.admin, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    assert_eq!(result.generation.as_deref(), Some("2"));
    let bak = bed.node.path("flake/kcore-node.nix.bak");
    assert_eq!(std::fs::read_to_string(&bak).unwrap(), MODULE_A);
    assert!(result.written.contains(&bak.display().to_string()));
    let acts = bed.activations();
    assert_eq!(acts.len(), 4);
    assert_ne!(acts[3], acts[1], "a different system was switched to");

    // --no-rebuild only writes.
    let result: OperationResult = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_A, true))
        .await
        .unwrap();
    assert_eq!(result.status, OperationStatus::Succeeded);
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), MODULE_A);
    assert_eq!(bed.activations().len(), 4, "no rebuild ran");
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_nix_failed_test_never_switches_with_nixos_rebuild_stand_in() {
    let Some(bed) = nix_bed(None).await else {
        return;
    };
    let failing = "{ ... }: { # KCORE_TEST_FAIL_BUILD\n}\n";
    let started: OperationStarted = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(failing, false))
        .await
        .unwrap();
    let (events, result) = follow(&bed.admin, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::Failed, "{result:?}");
    let err = result.error.unwrap();
    assert_eq!(err.code, "COMMAND_FAILED");
    assert!(
        err.message.contains("nixos-rebuild test"),
        "{}",
        err.message
    );
    assert!(
        output_lines(&events)
            .iter()
            .any(|l| l.contains("build failed on purpose")),
        "{events:?}"
    );
    assert!(bed.activations().is_empty(), "nothing was activated");
    assert_eq!(result.generation, None);
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_nix_runs_one_rebuild_at_a_time_with_nixos_rebuild_stand_in() {
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("open");
    let Some(bed) = nix_bed(Some(&gate)).await else {
        return;
    };
    let first: OperationStarted = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_A, false))
        .await
        .unwrap();
    // The first rebuild holds at the gate; a second request (rebuild or write-only) is
    // refused and changes nothing.
    for no_rebuild in [false, true] {
        let err = bed
            .admin
            .post_json::<_, OperationStarted>("/v1/nix/apply", &nix_req(MODULE_B, no_rebuild))
            .await
            .unwrap_err();
        assert_eq!(code(&err), "REBUILD_IN_PROGRESS");
    }
    let running: OperationResult = bed
        .admin
        .get_json(&format!("/v1/operations/{}", first.operation_id))
        .await
        .unwrap();
    assert_eq!(running.status, OperationStatus::Running);
    assert_eq!(
        std::fs::read_to_string(bed.node.path("flake/kcore-node.nix")).unwrap(),
        MODULE_A
    );
    std::fs::write(&gate, "").unwrap();
    let (_, result) = follow(&bed.admin, &first.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    // Afterwards the next one is accepted.
    let second: OperationStarted = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_B, false))
        .await
        .unwrap();
    let (_, result) = follow(&bed.admin, &second.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    assert_eq!(result.generation.as_deref(), Some("2"));
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_results_survive_an_agent_restart_with_nixos_rebuild_stand_in() {
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("open");
    let Some(bed) = nix_bed(Some(&gate)).await else {
        return;
    };
    // A write-only apply finishes in the request; a rebuild is then held at the gate, so
    // it is still running when the agent stops.
    let done: OperationResult = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_A, true))
        .await
        .unwrap();
    assert_eq!(done.status, OperationStatus::Succeeded);
    let cut: OperationStarted = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_B, false))
        .await
        .unwrap();
    let running: OperationResult = bed
        .admin
        .get_json(&format!("/v1/operations/{}", cut.operation_id))
        .await
        .unwrap();
    assert_eq!(running.status, OperationStatus::Running);

    let bed = bed.restart().await;
    let again: OperationResult = bed
        .admin
        .get_json(&format!("/v1/operations/{}", done.operation_id))
        .await
        .unwrap();
    assert_eq!(again, done, "the finished result, as it was");
    let interrupted: OperationResult = bed
        .admin
        .get_json(&format!("/v1/operations/{}", cut.operation_id))
        .await
        .unwrap();
    assert_eq!(
        interrupted.status,
        OperationStatus::Failed,
        "{interrupted:?}"
    );
    assert_eq!(interrupted.error.as_ref().unwrap().code, "INTERRUPTED");
    assert_eq!(interrupted.started_at, running.started_at);
    // The stream of a loaded operation ends too, with the same result.
    let (_, streamed) = follow(&bed.admin, &cut.operation_id).await;
    assert_eq!(streamed, interrupted);
    // Saved as JSON beside the disko state directory.
    assert!(
        bed.node
            .path(&format!("operations/{}.json", done.operation_id))
            .is_file()
    );
    let err = bed
        .admin
        .get_json::<OperationResult>("/v1/operations/00000000-0000-0000-0000-000000000000")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NOT_FOUND");
    bed.agent.stop().await;
    // The rebuild held at the gate outlived the first agent, as a real unit would.
    let unit = format!(
        "kcore-apply-nix-{}-test",
        cut.operation_id.replace('-', "").get(..12).unwrap()
    );
    let stopped = std::process::Command::new(support("systemctl"))
        .args(["stop", &unit])
        .status()
        .unwrap();
    assert!(stopped.success());
}

/// Live processes whose environment holds `var` (processes of one test's rebuild).
fn processes_with_env(var: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || process_gone(&pid) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|kv| kv == var.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_nix_timeout_stops_the_unit_with_systemd_run_and_systemctl_stand_ins() {
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("never-opened");
    let Some(bed) = nix_bed_with(Some(&gate), |o| {
        o.rebuild_timeout = Duration::from_secs(3);
    })
    .await
    else {
        return;
    };
    let started: OperationStarted = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_A, false))
        .await
        .unwrap();
    let (events, result) = follow(&bed.admin, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::TimedOut, "{result:?}");
    let err = result.error.unwrap();
    assert_eq!(err.code, "TIMED_OUT");
    assert_eq!(err.details["unitStopped"], true, "{err:?}");
    assert!(
        err.message.contains("its unit was stopped"),
        "{}",
        err.message
    );
    let unit = err.details["unit"].as_str().unwrap().to_string();
    assert!(unit.ends_with("-test"), "{unit}");
    let steps: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            OperationEvent::Step { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(steps.last(), Some(&format!("systemctl stop {unit}")));
    // The rebuild was really running (its first line reached the log) ...
    let waiting = output_lines(&events)
        .into_iter()
        .find(|l| l.starts_with("waiting for "))
        .unwrap_or_else(|| panic!("the rebuild never started: {events:?}"));
    let pid = waiting
        .rsplit_once("(pid ")
        .and_then(|(_, p)| p.strip_suffix(')'))
        .unwrap()
        .to_string();
    // ... and `stop` returned only after its processes were gone: nothing of it is left,
    // neither the stand-in nor a child carrying its environment.
    assert!(
        process_gone(&pid),
        "nixos-rebuild ({pid}) survived the stop"
    );
    let var = format!("KCORE_TEST_REBUILD_GATE={}", gate.display());
    assert_eq!(processes_with_env(&var), Vec::<String>::new(), "survivors");
    assert!(bed.activations().is_empty(), "nothing was activated");
    // A second stop finds no unit: the stand-in, like systemctl, says so.
    let again = std::process::Command::new(support("systemctl"))
        .args(["stop", &unit])
        .output()
        .unwrap();
    assert!(!again.status.success());
    bed.agent.stop().await;
}

// ---------------------------------------------------------------------------------------
// Restricted, bounded evaluation of submitted Nix (security probe D4, D12)

mod restricted_evaluation {
    use super::*;

    /// Small bounds so the bound tests are quick.
    fn bounded(max_concurrent: usize) -> serde_json::Value {
        json!({"evaluation": {
            "memoryLimitMiB": 256,
            "cpuLimitSeconds": 2,
            "maxConcurrent": max_concurrent,
        }})
    }

    const SECRET: &str = "KCORE-AGENT-SECRET-line1\nsecond-secret-line\n";

    /// The whole error as it came over the wire (message and details).
    fn body(err: &ClientError) -> String {
        match err {
            ClientError::Api { error, .. } => serde_json::to_string(error).unwrap(),
            other => panic!("expected an API error, got {other}"),
        }
    }

    fn status(err: &ClientError) -> u16 {
        match err {
            ClientError::Api { status, .. } => status.as_u16(),
            other => panic!("expected an API error, got {other}"),
        }
    }

    fn assert_clean(what: &str, text: &str) {
        assert!(
            !text.contains("KCORE-AGENT-SECRET")
                && !text.contains("second-secret-line")
                && !text.contains("root:"),
            "{what} leaked: {text}"
        );
    }

    fn disk_layout(device_expr: &str) -> String {
        format!("{{ disko.devices.disk.x = {{ type = \"disk\"; device = {device_expr}; }}; }}")
    }

    async fn dry_err(bed: &DiskoBed, layout: &str) -> ClientError {
        bed.admin
            .post_json::<_, DiskoPlanResponse>("/v1/disko/apply", &dry(layout))
            .await
            .unwrap_err()
    }

    async fn nix_err(bed: &DiskoBed, config: &str) -> ClientError {
        bed.admin
            .post_json::<_, OperationResult>("/v1/nix/apply", &nix_req(config, true))
            .await
            .unwrap_err()
    }

    /// What the review did through the HTTP routes: a secret read into a planned device,
    /// `/etc/shadow` thrown, `/root` listed, an imported secret quoted by apply-nix, the
    /// environment, and fetchurl to a listener on 127.0.0.1. Each is refused (or, for
    /// getEnv, empty), nothing of the files comes back, and the listener sees no request.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn submitted_nix_reads_no_file_environment_or_network() {
        let bed = disko_bed(bounded(2), vec![]).await;
        let secret = bed.node.path("secret");
        std::fs::write(&secret, SECRET).unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let secret = std::fs::canonicalize(secret).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let secret_s = secret.display().to_string();

        for device in [
            format!("\"/dev/disk/by-id/x\" + builtins.readFile {secret_s}"),
            "throw (builtins.replaceStrings [\"\\n\"] [\" | \"] (builtins.readFile /etc/shadow))"
                .to_string(),
            "throw (builtins.toJSON (builtins.attrNames (builtins.readDir /root)))".to_string(),
            "import /etc/passwd".to_string(),
            format!("import {secret_s}"),
            format!("import (builtins.fetchurl \"{url}/fetchurl-probe\")"),
            format!("builtins.fetchTarball \"{url}/fetchtarball-probe\""),
        ] {
            let err = dry_err(&bed, &disk_layout(&device)).await;
            assert_eq!(code(&err), "DISKO_INVALID", "{device}: {err}");
            assert_eq!(status(&err), 422);
            let text = body(&err);
            assert!(
                text.contains("forbidden in restricted mode"),
                "{device}: {text}"
            );
            assert_clean(&device, &text);
        }
        for config in [
            format!("import {secret_s}"),
            format!("throw (builtins.readFile {secret_s})"),
            "import /etc/passwd".to_string(),
            format!("import (builtins.fetchurl \"{url}/nix-fetchurl-probe\")"),
        ] {
            let err = nix_err(&bed, &config).await;
            assert_eq!(code(&err), "NIX_INVALID", "{config}: {err}");
            let text = body(&err);
            assert!(
                text.contains("forbidden in restricted mode"),
                "{config}: {text}"
            );
            assert_clean(&config, &text);
        }
        assert!(!bed.node.path("flake/kcore-node.nix").exists());

        // getEnv evaluates to "": the plan shows the device without the agent's HOME.
        let plan: DiskoPlanResponse = bed
            .admin
            .post_json(
                "/v1/disko/apply",
                &dry(&disk_layout(
                    "\"/dev/disk/by-id/x\" + builtins.getEnv \"HOME\" + builtins.getEnv \"PATH\"",
                )),
            )
            .await
            .unwrap();
        assert_eq!(plan.plan.targets[0].device, "/dev/disk/by-id/x");

        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("the listener received a connection from {peer}"),
            Err(e) => panic!("accept: {e}"),
        }
        bed.agent.stop().await;
    }

    const BOMB: &str = "builtins.length (builtins.attrNames (builtins.listToAttrs (builtins.genList (i: { name = toString i; value = i; }) 20000000)))";
    /// 600,000 traces of 48 characters: about 34 MiB of stderr.
    const FLOOD: &str = "builtins.foldl' (a: i: builtins.trace \"0123456789abcdef0123456789abcdef0123456789abcdef\" a) { } (builtins.genList (i: i) 600000)";
    const SPIN: &str = "let f = n: if n == 0 then 0 else f (n - 1); in builtins.foldl' (a: i: a + f 10000) 0 (builtins.genList (x: x) 100000)";

    /// A layout or configuration that allocates without bound is stopped by the memory
    /// bound, a CPU-heavy fold by the CPU bound, a huge value by the output bound; both
    /// routes answer the same codes (422 `EVAL_MEMORY_LIMIT`, `EVAL_TIMEOUT`,
    /// `EVAL_OUTPUT_LIMIT`), and the agent keeps serving.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runaway_evaluations_stop_at_their_bounds_and_the_agent_keeps_serving() {
        let bed = disko_bed(bounded(2), vec![]).await;
        let disko_bomb = disk_layout(&format!("toString ({BOMB})"));
        let nix_bomb = format!("builtins.seq ({BOMB}) {{ }}");
        let disko_spin = disk_layout(&format!("toString ({SPIN})"));
        let nix_spin = format!("builtins.seq ({SPIN}) {{ }}");
        for (what, err) in [
            ("disko bomb", dry_err(&bed, &disko_bomb).await),
            ("nix bomb", nix_err(&bed, &nix_bomb).await),
        ] {
            assert_eq!(code(&err), "EVAL_MEMORY_LIMIT", "{what}: {err}");
            assert_eq!(status(&err), 422, "{what}");
            assert!(err.to_string().contains("256 MiB"), "{what}: {err}");
            assert!(
                err.to_string().contains("evaluation.memoryLimitMiB"),
                "{what}: {err}"
            );
        }
        for (what, err) in [
            ("disko spin", dry_err(&bed, &disko_spin).await),
            ("nix spin", nix_err(&bed, &nix_spin).await),
        ] {
            assert_eq!(code(&err), "EVAL_TIMEOUT", "{what}: {err}");
            assert_eq!(status(&err), 422, "{what}");
            assert!(
                err.to_string().contains("CPU-time bound of 2 s"),
                "{what}: {err}"
            );
        }
        // 32 MiB of output (a huge device string; a flood of traces on apply-nix) stops at the
        // output bound instead of being read into the agent.
        // 16 bytes doubled 21 times: 32 MiB, well inside the 256 MiB memory bound.
        let huge =
            "builtins.foldl' (s: _: s + s) \"0123456789abcdef\" (builtins.genList (i: i) 21)";
        for (what, err) in [
            ("disko output", dry_err(&bed, &disk_layout(huge)).await),
            ("nix trace", nix_err(&bed, FLOOD).await),
        ] {
            assert_eq!(code(&err), "EVAL_OUTPUT_LIMIT", "{what}: {err}");
            assert_eq!(status(&err), 422, "{what}");
            assert!(
                body(&err).len() < 16 * 1024,
                "{what}: {} bytes",
                body(&err).len()
            );
        }
        // Still serving, and an ordinary layout still plans.
        let health: serde_json::Value = bed.admin.get_json("/v1/health").await.unwrap();
        assert_eq!(health["nodeId"], "node-1");
        let plan: DiskoPlanResponse = bed
            .admin
            .post_json("/v1/disko/apply", &dry(DATA_DISK))
            .await
            .unwrap();
        assert!(plan.plan_hash.starts_with("sha256:"));
        bed.agent.stop().await;
    }

    /// With `maxConcurrent: 1`, of two evaluations sent at once (one per route: they share
    /// the bound) one runs and the other is refused at once with 429 `EVAL_BUSY`; once
    /// the first has finished, evaluations are accepted again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_evaluations_beyond_the_bound_are_refused_busy() {
        let bed = disko_bed(bounded(1), vec![]).await;
        let disko_spin = disk_layout(&format!("toString ({SPIN})"));
        let nix_spin = format!("builtins.seq ({SPIN}) {{ }}");
        let (a, b) = tokio::join!(dry_err(&bed, &disko_spin), nix_err(&bed, &nix_spin));
        let mut codes = vec![code(&a), code(&b)];
        codes.sort();
        assert_eq!(codes, ["EVAL_BUSY", "EVAL_TIMEOUT"], "{a} / {b}");
        let busy = if code(&a) == "EVAL_BUSY" { &a } else { &b };
        assert_eq!(status(busy), 429);
        assert!(
            busy.to_string().contains("evaluation.maxConcurrent"),
            "{busy}"
        );
        let plan: DiskoPlanResponse = bed
            .admin
            .post_json("/v1/disko/apply", &dry(DATA_DISK))
            .await
            .unwrap();
        assert!(plan.plan_hash.starts_with("sha256:"));
        bed.agent.stop().await;
    }

    /// Code frames come back only from the submitted text: an error raised inside nixpkgs
    /// lib (readable for layouts that use `lib`) names its position without quoting it, and
    /// apply-nix's message quotes the submitted line, not the agent's own expression.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_quote_only_the_submitted_text() {
        let Some(deep) = deep_inputs() else { return };
        let bed = disko_bed(
            json!({"disko": {"diskoSource": deep.disko, "nixpkgsLib": deep.nixpkgs_lib}}),
            vec![],
        )
        .await;
        let layout = "{ lib, ... }: { disko.devices.disk.x = { type = \"disk\"; device = lib.strings.escapeShellArg { }; }; }";
        let err = dry_err(&bed, layout).await;
        assert_eq!(code(&err), "DISKO_INVALID", "{err}");
        let text = body(&err);
        assert!(text.contains("cannot coerce a set to a string"), "{text}");
        assert!(!text.contains("toString arg"), "nixpkgs lib quoted: {text}");

        let err = nix_err(&bed, "let\n  a = undefinedThing;\nin a\n").await;
        assert_eq!(code(&err), "NIX_INVALID", "{err}");
        let text = body(&err);
        assert!(text.contains("a = undefinedThing;"), "{text}");
        let err = nix_err(&bed, "throw \"kcore-boom\"").await;
        let text = body(&err);
        assert!(text.contains("kcore-boom"), "{text}");
        assert!(
            !text.contains("typeOf"),
            "the agent's expression quoted: {text}"
        );
        bed.agent.stop().await;
    }

    /// D12: a layout nested 5,000 deep got 1,025 near-identical level-1 findings (234 KB).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deeply_nested_layout_gets_a_short_answer() {
        let bed = disko_bed(json!({}), vec![]).await;
        let nested = format!("{}1{}", "{ a = ".repeat(5000), " ; }".repeat(5000));
        let err = dry_err(&bed, &nested).await;
        assert_eq!(code(&err), "DISKO_INVALID");
        let ClientError::Api { error, .. } = &err else {
            unreachable!()
        };
        let findings = error.details["findings"].as_array().unwrap();
        assert!(
            !findings.is_empty() && findings.len() <= kcore_disko::MAX_REPORTED,
            "{} findings",
            findings.len()
        );
        assert!(body(&err).len() < 16 * 1024, "{} bytes", body(&err).len());
        bed.agent.stop().await;
    }
}
