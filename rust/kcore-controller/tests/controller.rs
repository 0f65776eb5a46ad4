//! The controller in-process on 127.0.0.1 with real mutual TLS: registration, approval,
//! rejection, the authorisation matrix, renewal, sub-CA rotation and restarts. Agents
//! are the real registration code from `kcore-agent`.

// Test helpers panic on setup failures; clippy's test exemption covers only #[test] fns.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kcore_api::cluster::{
    Approval, CertificateResponse, CsrRequest, HeartbeatRequest, InstallSubCa,
    IssueNodeCertificateRequest, Node, NodeAck, NodeList, NodeReport, NodeStatus, RegisterRequest,
    StorageBackend, StorageClassDetail, StorageClassList, StorageReport, SubCaInstalled,
};
use kcore_controller::config::{ControllerConfig, ControllerTls};
use kcore_net::{Client, ClientError, ClientOptions};
use kcore_pki::{Authority, CertifiedKey, Identity, Role};
use serde::de::DeserializeOwned;

const CLUSTER: &str = "lab";
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// A cluster's PKI and one controller's files in a temp dir.
struct Cluster {
    dir: tempfile::TempDir,
    root: Authority,
    sub: Authority,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let root = Authority::new_root(CLUSTER, YEAR * 10).unwrap();
        let sub = root.new_sub_ca("controllers", YEAR * 5).unwrap();
        let c = Cluster { dir, root, sub };
        let ctl = c
            .sub
            .issue(
                &Identity::new(CLUSTER, Role::Controller, "ctl1").unwrap(),
                &["localhost".into(), "127.0.0.1".into()],
                YEAR,
            )
            .unwrap();
        c.write("ca.crt", c.root.cert_pem());
        c.write("controller.crt", &ctl.cert_pem);
        c.write("controller.key", &ctl.key_pem);
        c.write("sub-ca.crt", c.sub.cert_pem());
        c.write("sub-ca.key", c.sub.key_pem());
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    fn config(&self, manual: bool) -> ControllerConfig {
        ControllerConfig {
            controller_id: "ctl1".into(),
            cluster_name: CLUSTER.into(),
            dc_id: "DC1".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            require_manual_approval: manual,
            peers: vec![],
            heartbeat_timeout_seconds: 45,
            database_path: self.path("state.sqlite"),
            connections: Default::default(),
            max_clock_skew_seconds: 60,
            tls: ControllerTls {
                ca_file: self.path("ca.crt"),
                cert_file: self.path("controller.crt"),
                key_file: self.path("controller.key"),
                sub_ca_cert_file: self.path("sub-ca.crt"),
                sub_ca_key_file: self.path("sub-ca.key"),
            },
        }
    }

    /// Another controller of the same cluster: its own certificate, database and peers.
    fn peer_config(&self, id: &str, manual: bool, peers: Vec<String>) -> ControllerConfig {
        let cert = self
            .sub
            .issue(
                &Identity::new(CLUSTER, Role::Controller, id).unwrap(),
                &["127.0.0.1".into()],
                YEAR,
            )
            .unwrap();
        self.write(&format!("{id}.crt"), &cert.cert_pem);
        self.write(&format!("{id}.key"), &cert.key_pem);
        let mut config = self.config(manual);
        config.controller_id = id.into();
        config.peers = peers;
        config.database_path = self.path(&format!("{id}.sqlite"));
        config.tls.cert_file = self.path(&format!("{id}.crt"));
        config.tls.key_file = self.path(&format!("{id}.key"));
        config
    }

    fn admin(&self) -> CertifiedKey {
        self.root
            .issue(
                &Identity::new(CLUSTER, Role::Admin, "alice").unwrap(),
                &[],
                YEAR,
            )
            .unwrap()
    }

    fn controller_peer(&self) -> CertifiedKey {
        self.sub
            .issue(
                &Identity::new(CLUSTER, Role::Controller, "ctl2").unwrap(),
                &[],
                YEAR,
            )
            .unwrap()
    }

    /// A node certificate made the production way: key and CSR on the "node", signed
    /// by the sub-CA.
    fn node(&self, id: &str) -> CertifiedKey {
        let ident = Identity::new(CLUSTER, Role::Node, id).unwrap();
        let (key_pem, csr_pem) = kcore_pki::generate_csr(&ident, &["localhost".into()]).unwrap();
        let cert_pem = self.sub.sign_csr(&csr_pem, &ident, YEAR).unwrap();
        CertifiedKey { cert_pem, key_pem }
    }
}

/// A running controller.
struct Running {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), kcore_controller::ControllerError>>,
}

impl Running {
    async fn start(config: ControllerConfig) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Running::start_on(listener, config)
    }

    fn start_on(listener: tokio::net::TcpListener, config: ControllerConfig) -> Running {
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(kcore_controller::run(listener, config, async move {
            let _ = rx.await;
        }));
        Running {
            url,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

fn client(url: &str, trust_pem: &str, who: &CertifiedKey) -> Client {
    let tls = kcore_pki::client_config(trust_pem, &who.cert_pem, &who.key_pem).unwrap();
    Client::new(vec![url.to_string()], tls, options()).unwrap()
}

/// Verifies the server but presents no client certificate.
fn anonymous_client(url: &str, trust_pem: &str) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in kcore_pki::certs_from_pem(trust_pem).unwrap() {
        roots.add(cert).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(kcore_pki::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Client::new(vec![url.to_string()], tls, options()).unwrap()
}

fn report(host: &str, dc: &str, backend: Option<StorageBackend>) -> NodeReport {
    NodeReport {
        hostname: host.into(),
        dc_id: dc.into(),
        storage: StorageReport {
            backend,
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn register(c: &Client, id: &str, r: NodeReport) -> Result<NodeAck, ClientError> {
    c.post_json(
        &format!("/v1/nodes/{id}/register"),
        &RegisterRequest { report: r },
    )
    .await
}

async fn beat(c: &Client, id: &str) -> Result<NodeAck, ClientError> {
    c.post_json(
        &format!("/v1/nodes/{id}/heartbeat"),
        &HeartbeatRequest::default(),
    )
    .await
}

async fn post<T: DeserializeOwned>(c: &Client, path: &str) -> Result<T, ClientError> {
    c.post_json(path, &serde_json::json!({})).await
}

fn code(err: &ClientError) -> String {
    err.api_code()
        .map(str::to_string)
        .unwrap_or_else(|| format!("no answer: {err}"))
}

#[tokio::test]
async fn auto_approved_node_registers_and_is_ready() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let n1 = client(&ctl.url, cl.root.cert_pem(), &cl.node("n1"));
    let ack = register(&n1, "n1", report("hv1", "DC1", Some(StorageBackend::Lvm)))
        .await
        .unwrap();
    assert_eq!(ack.status, NodeStatus::Ready);
    assert_eq!(ack.controller_id, "ctl1");
    assert_eq!(beat(&n1, "n1").await.unwrap().status, NodeStatus::Ready);

    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    let list: NodeList = admin.get_json("/v1/nodes").await.unwrap();
    assert_eq!(list.items.len(), 1);
    let node = &list.items[0];
    assert_eq!(node.node_id, "n1");
    assert_eq!(node.report.hostname, "hv1");
    assert_eq!(node.approval, Approval::Approved);
    assert!(node.last_heartbeat.is_some());
    ctl.stop().await;
}

#[tokio::test]
async fn manual_approval_keeps_node_pending_until_approved() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(true)).await;
    let n1 = client(&ctl.url, cl.root.cert_pem(), &cl.node("n1"));
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    let ack = register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();
    assert_eq!(ack.status, NodeStatus::Pending);
    assert_eq!(beat(&n1, "n1").await.unwrap().status, NodeStatus::Pending);
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(node.status, NodeStatus::Pending);

    let node: Node = post(&admin, "/v1/nodes/n1/approve").await.unwrap();
    assert_eq!(node.approval, Approval::Approved);
    assert_eq!(beat(&n1, "n1").await.unwrap().status, NodeStatus::Ready);
    ctl.stop().await;
}

#[tokio::test]
async fn rejected_node_cannot_heartbeat_or_register_again() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(true)).await;
    let n1 = client(&ctl.url, cl.root.cert_pem(), &cl.node("n1"));
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();
    let node: Node = post(&admin, "/v1/nodes/n1/reject").await.unwrap();
    assert_eq!(node.status, NodeStatus::Rejected);

    assert_eq!(code(&beat(&n1, "n1").await.unwrap_err()), "NODE_REJECTED");
    let err = register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NODE_REJECTED");
    // Even a freshly issued certificate for the same id cannot bring it back.
    let again = client(&ctl.url, cl.root.cert_pem(), &cl.node("n1"));
    let err = register(&again, "n1", report("hv1", "DC1", None))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NODE_REJECTED");
    let err = post::<Node>(&admin, "/v1/nodes/n1/approve")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NODE_REJECTED");
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(node.status, NodeStatus::Rejected);
    ctl.stop().await;
}

#[tokio::test]
async fn storage_classes_count_nodes_including_empty_classes() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    for (id, backend) in [
        ("n1", Some(StorageBackend::Lvm)),
        ("n2", Some(StorageBackend::Lvm)),
        ("n3", None),
    ] {
        let c = client(&ctl.url, cl.root.cert_pem(), &cl.node(id));
        register(&c, id, report(id, "DC1", backend)).await.unwrap();
    }
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    let list: StorageClassList = admin.get_json("/v1/storage-classes").await.unwrap();
    let counts: Vec<(String, usize)> = list
        .items
        .iter()
        .map(|c| (c.name.clone(), c.nodes))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("filesystem".to_string(), 0),
            ("lvm".to_string(), 2),
            ("zfs".to_string(), 0),
            ("unspecified".to_string(), 1),
        ]
    );
    let lvm: StorageClassDetail = admin.get_json("/v1/storage-classes/lvm").await.unwrap();
    let ids: Vec<&str> = lvm.nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, vec!["n1", "n2"]);
    let err = admin
        .get_json::<StorageClassDetail>("/v1/storage-classes/ceph")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NO_SUCH_STORAGE_CLASS");
    ctl.stop().await;
}

#[tokio::test]
async fn restart_keeps_state_without_re_registration() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(true)).await;
    let n1_cert = cl.node("n1");
    {
        let n1 = client(&ctl.url, cl.root.cert_pem(), &n1_cert);
        let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
        register(&n1, "n1", report("hv1", "DC2", Some(StorageBackend::Zfs)))
            .await
            .unwrap();
        post::<Node>(&admin, "/v1/nodes/n1/approve").await.unwrap();
    }
    ctl.stop().await;

    let ctl = Running::start(cl.config(true)).await;
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(node.approval, Approval::Approved);
    assert_eq!(node.report.dc_id, "DC2");
    assert_eq!(node.report.storage.backend, Some(StorageBackend::Zfs));
    // The heartbeat flushed at shutdown survived too.
    assert_eq!(node.status, NodeStatus::Ready);
    let n1 = client(&ctl.url, cl.root.cert_pem(), &n1_cert);
    assert_eq!(beat(&n1, "n1").await.unwrap().status, NodeStatus::Ready);
    ctl.stop().await;
}

/// Whether the caller got past authentication and authorisation.
#[derive(Debug, PartialEq)]
enum Outcome {
    Allowed,
    /// Refused by the route's role or self check (the code).
    Refused(String),
    /// No HTTP answer at all: the TLS handshake refused the client.
    NoAnswer,
}

fn outcome<T>(result: Result<T, ClientError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Allowed,
        Err(ClientError::Api { error, .. })
            if [
                "UNAUTHENTICATED",
                "FORBIDDEN_ROLE",
                "NOT_SELF",
                "WRONG_CLUSTER",
            ]
            .contains(&error.code.as_str()) =>
        {
            Outcome::Refused(error.code)
        }
        Err(ClientError::Api { .. }) => Outcome::Allowed,
        Err(ClientError::Unreachable { .. }) => Outcome::NoAnswer,
        Err(other) => panic!("unexpected client error: {other}"),
    }
}

#[tokio::test]
async fn authorization_matrix_every_route_and_caller() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(true)).await;
    let trust = cl.root.cert_pem().to_string();
    // Node n3 exists so approve/reject have a target.
    let n3 = client(&ctl.url, &trust, &cl.node("n3"));
    register(&n3, "n3", report("hv3", "DC1", None))
        .await
        .unwrap();

    let evil_root = Authority::new_root(CLUSTER, YEAR).unwrap();
    let evil_admin = evil_root
        .issue(
            &Identity::new(CLUSTER, Role::Admin, "alice").unwrap(),
            &[],
            YEAR,
        )
        .unwrap();
    let callers: Vec<(&str, Client)> = vec![
        ("admin", client(&ctl.url, &trust, &cl.admin())),
        (
            "controller",
            client(&ctl.url, &trust, &cl.controller_peer()),
        ),
        ("node-self", client(&ctl.url, &trust, &cl.node("n1"))),
        ("node-other", client(&ctl.url, &trust, &cl.node("n2"))),
        ("no-cert", anonymous_client(&ctl.url, &trust)),
        ("wrong-ca", client(&ctl.url, &trust, &evil_admin)),
    ];
    let n1_csr = kcore_pki::generate_csr(&Identity::new(CLUSTER, Role::Node, "n1").unwrap(), &[])
        .unwrap()
        .1;
    let n4_csr = kcore_pki::generate_csr(&Identity::new(CLUSTER, Role::Node, "n4").unwrap(), &[])
        .unwrap()
        .1;
    let new_sub = cl.root.new_sub_ca("rotated", YEAR).unwrap();

    use Outcome::{Allowed as A, NoAnswer as X};
    let f = || Outcome::Refused("FORBIDDEN_ROLE".into());
    let s = || Outcome::Refused("NOT_SELF".into());
    // Expected per caller, in the order of `callers`.
    type Call<'a> = Box<dyn Fn(&'a Client) -> futures::future::BoxFuture<'a, Outcome> + 'a>;
    let rows: Vec<(&str, Call, Vec<Outcome>)> = vec![
        (
            "POST /v1/nodes/n1/register",
            Box::new(|c| {
                Box::pin(
                    async move { outcome(register(c, "n1", report("hv1", "DC1", None)).await) },
                )
            }),
            vec![f(), f(), A, s(), X, X],
        ),
        (
            "POST /v1/nodes/n1/heartbeat",
            Box::new(|c| Box::pin(async move { outcome(beat(c, "n1").await) })),
            vec![f(), f(), A, s(), X, X],
        ),
        (
            "POST /v1/nodes/n1/renew",
            Box::new(|c| {
                let csr = n1_csr.clone();
                Box::pin(async move {
                    outcome(
                        c.post_json::<_, CertificateResponse>(
                            "/v1/nodes/n1/renew",
                            &CsrRequest { csr_pem: csr },
                        )
                        .await,
                    )
                })
            }),
            vec![f(), f(), A, s(), X, X],
        ),
        (
            "GET /v1/nodes",
            Box::new(|c| {
                Box::pin(async move { outcome(c.get_json::<NodeList>("/v1/nodes").await) })
            }),
            vec![A, A, f(), f(), X, X],
        ),
        (
            "GET /v1/nodes/n3",
            Box::new(|c| {
                Box::pin(async move { outcome(c.get_json::<Node>("/v1/nodes/n3").await) })
            }),
            vec![A, A, f(), f(), X, X],
        ),
        (
            "GET /v1/storage-classes",
            Box::new(|c| {
                Box::pin(async move {
                    outcome(c.get_json::<StorageClassList>("/v1/storage-classes").await)
                })
            }),
            vec![A, A, f(), f(), X, X],
        ),
        (
            "GET /v1/storage-classes/lvm",
            Box::new(|c| {
                Box::pin(async move {
                    outcome(
                        c.get_json::<StorageClassDetail>("/v1/storage-classes/lvm")
                            .await,
                    )
                })
            }),
            vec![A, A, f(), f(), X, X],
        ),
        (
            "POST /v1/certificates/node",
            Box::new(|c| {
                let csr = n4_csr.clone();
                Box::pin(async move {
                    outcome(
                        c.post_json::<_, CertificateResponse>(
                            "/v1/certificates/node",
                            &IssueNodeCertificateRequest {
                                node_id: "n4".into(),
                                csr_pem: csr,
                            },
                        )
                        .await,
                    )
                })
            }),
            vec![A, f(), f(), f(), X, X],
        ),
        (
            "PUT /v1/pki/sub-ca",
            Box::new(|c| {
                let body = InstallSubCa {
                    certificate_pem: new_sub.cert_pem().into(),
                    key_pem: new_sub.key_pem().into(),
                    allow_short: false,
                };
                Box::pin(async move {
                    outcome(
                        c.put_json::<_, SubCaInstalled>("/v1/pki/sub-ca", &body)
                            .await,
                    )
                })
            }),
            vec![A, f(), f(), f(), X, X],
        ),
        (
            "GET /v1/replication/vector",
            Box::new(|c| {
                Box::pin(async move {
                    outcome(
                        c.get_json::<serde_json::Value>("/v1/replication/vector")
                            .await,
                    )
                })
            }),
            vec![f(), A, f(), f(), X, X],
        ),
        (
            "GET /v1/replication/ops",
            Box::new(|c| {
                Box::pin(async move {
                    outcome(
                        c.get_json::<serde_json::Value>("/v1/replication/ops?origin=ctl1")
                            .await,
                    )
                })
            }),
            vec![f(), A, f(), f(), X, X],
        ),
        (
            "POST /v1/nodes/n3/approve",
            Box::new(|c| {
                Box::pin(async move { outcome(post::<Node>(c, "/v1/nodes/n3/approve").await) })
            }),
            vec![A, f(), f(), f(), X, X],
        ),
        (
            "POST /v1/nodes/n3/reject",
            Box::new(|c| {
                Box::pin(async move { outcome(post::<Node>(c, "/v1/nodes/n3/reject").await) })
            }),
            vec![A, f(), f(), f(), X, X],
        ),
    ];
    let mut mismatches = Vec::new();
    for (route, call, expected) in &rows {
        // Callers that must be refused go first so an allowed state change (reject)
        // cannot mask a refusal.
        let mut order: Vec<usize> = (0..callers.len()).collect();
        order.sort_by_key(|&i| expected[i] == Outcome::Allowed);
        for i in order {
            let (who, c) = &callers[i];
            let got = call(c).await;
            if got != expected[i] {
                mismatches.push(format!(
                    "{route} as {who}: expected {:?}, got {got:?}",
                    expected[i]
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    ctl.stop().await;
}

/// Writes a node's files and builds the agent-side registration context.
fn agent_context(
    dir: &Path,
    url: &str,
    trust_pem: &str,
    id: &str,
    cert: &CertifiedKey,
) -> kcore_agent::registration::RegistrationContext {
    let ca_file = dir.join(format!("{id}-ca.crt"));
    let cert_file = dir.join(format!("{id}.crt"));
    let key_file = dir.join(format!("{id}.key"));
    std::fs::write(&ca_file, trust_pem).unwrap();
    std::fs::write(&cert_file, &cert.cert_pem).unwrap();
    std::fs::write(&key_file, &cert.key_pem).unwrap();
    let r = report(id, "DC1", Some(StorageBackend::Filesystem));
    kcore_agent::registration::RegistrationContext {
        node_id: id.into(),
        controllers: vec![url.trim_start_matches("https://").to_string()],
        heartbeat_interval: Duration::from_millis(200),
        ca_file,
        cert_file,
        key_file,
        dns_names: vec!["localhost".into()],
        report: Arc::new(move || {
            let r = r.clone();
            Box::pin(async move { r })
        }),
        server_tls: None,
        renew_before: kcore_pki::RENEW_BEFORE,
        renew_retry_min: Duration::from_millis(200),
        client_options: options(),
    }
}

#[tokio::test]
async fn agent_renews_a_short_lived_certificate_and_reloads_tls() {
    use std::os::unix::fs::PermissionsExt as _;
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    // A certificate with 2 days left: inside the 30-day renewal window.
    let now = time::OffsetDateTime::now_utc();
    let short = cl
        .sub
        .issue_between(
            &Identity::new(CLUSTER, Role::Node, "n1").unwrap(),
            &["localhost".into()],
            now - time::Duration::hours(1),
            now + time::Duration::days(2),
        )
        .unwrap();
    let mut ctx = agent_context(cl.dir.path(), &ctl.url, cl.root.cert_pem(), "n1", &short);
    let server_cfg =
        kcore_pki::server_config(cl.root.cert_pem(), &short.cert_pem, &short.key_pem).unwrap();
    let source = kcore_net::TlsSource::new(server_cfg);
    ctx.server_tls = Some(source.clone());
    let before_tls = source.current();

    let mut session = None;
    let ack = kcore_agent::registration::step(&ctx, &mut session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.status, NodeStatus::Ready);

    let cert_after = std::fs::read_to_string(&ctx.cert_file).unwrap();
    let key_after = std::fs::read_to_string(&ctx.key_file).unwrap();
    assert_ne!(cert_after, short.cert_pem, "certificate was not renewed");
    assert_ne!(key_after, short.key_pem, "renewal must use a fresh key");
    let expiry = kcore_pki::not_after(&cert_after).unwrap();
    assert!(
        expiry > now + time::Duration::days(60),
        "renewed cert expires {expiry}"
    );
    let mode = std::fs::metadata(&ctx.key_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(cl.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".new"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staged files left behind: {leftovers:?}"
    );
    assert!(
        !Arc::ptr_eq(&before_tls, &source.current()),
        "server TLS not reloaded"
    );
    // The loaded pair matches: a server config can be built from the files.
    kcore_pki::server_config(cl.root.cert_pem(), &cert_after, &key_after).unwrap();

    // The next step heartbeats with the new certificate and does not renew again.
    let ack = kcore_agent::registration::step(&ctx, &mut session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.status, NodeStatus::Ready);
    assert_eq!(std::fs::read_to_string(&ctx.cert_file).unwrap(), cert_after);

    // The controller recorded the new certificate for `kctl get nodes`.
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    let info = node.certificate.unwrap();
    assert_eq!(
        time::OffsetDateTime::parse(
            &info.not_after,
            &time::format_description::well_known::Rfc3339
        )
        .unwrap(),
        expiry
    );
    ctl.stop().await;
}

#[tokio::test]
async fn agent_with_a_fresh_certificate_does_not_renew() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let cert = cl.node("n1");
    let ctx = agent_context(cl.dir.path(), &ctl.url, cl.root.cert_pem(), "n1", &cert);
    let mut session = None;
    kcore_agent::registration::step(&ctx, &mut session)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&ctx.cert_file).unwrap(),
        cert.cert_pem
    );
    ctl.stop().await;
}

#[tokio::test]
async fn agent_loop_registers_then_heartbeats_until_shutdown() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let ctx = agent_context(
        cl.dir.path(),
        &ctl.url,
        cl.root.cert_pem(),
        "n1",
        &cl.node("n1"),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(kcore_agent::registration::run(ctx, async move {
        let _ = rx.await;
    }));
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    let mut beats = std::collections::BTreeSet::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(node) = admin.get_json::<Node>("/v1/nodes/n1").await {
            beats.insert(node.last_heartbeat.unwrap());
            if beats.len() >= 2 {
                break;
            }
        }
    }
    // Heartbeat times are whole seconds, so two distinct values mean the loop kept going.
    let _ = tx.send(());
    agent.await.unwrap();
    assert!(
        beats.len() >= 2,
        "expected heartbeats in two different seconds, saw {beats:?}"
    );
    ctl.stop().await;
}

#[tokio::test]
async fn sub_ca_rotation_keeps_old_certificates_working() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let old_cert = cl.node("n1");
    let n1_old = client(&ctl.url, cl.root.cert_pem(), &old_cert);
    register(&n1_old, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();

    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    // A sub-CA from another root is refused and changes nothing.
    let stranger = Authority::new_root(CLUSTER, YEAR)
        .unwrap()
        .new_sub_ca("x", YEAR)
        .unwrap();
    let err = admin
        .put_json::<_, SubCaInstalled>(
            "/v1/pki/sub-ca",
            &InstallSubCa {
                certificate_pem: stranger.cert_pem().into(),
                key_pem: stranger.key_pem().into(),
                allow_short: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "SUB_CA_UNTRUSTED");
    assert_eq!(
        std::fs::read_to_string(cl.path("sub-ca.crt")).unwrap(),
        cl.sub.cert_pem()
    );

    let new_sub = cl.root.new_sub_ca("rotated", YEAR).unwrap();
    let installed: SubCaInstalled = admin
        .put_json(
            "/v1/pki/sub-ca",
            &InstallSubCa {
                certificate_pem: new_sub.cert_pem().into(),
                key_pem: new_sub.key_pem().into(),
                allow_short: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(installed.controller_id, "ctl1");
    assert_eq!(
        std::fs::read_to_string(cl.path("sub-ca.crt")).unwrap(),
        new_sub.cert_pem()
    );

    // The old leaf still works.
    assert_eq!(beat(&n1_old, "n1").await.unwrap().status, NodeStatus::Ready);
    // A renewal is signed by the new sub-CA (its chain carries it) and works too.
    let ident = Identity::new(CLUSTER, Role::Node, "n1").unwrap();
    let (key_pem, csr_pem) = kcore_pki::generate_csr(&ident, &[]).unwrap();
    let renewed: CertificateResponse = n1_old
        .post_json("/v1/nodes/n1/renew", &CsrRequest { csr_pem })
        .await
        .unwrap();
    assert!(
        renewed.chain_pem.ends_with(new_sub.cert_pem()),
        "chain does not carry the new sub-CA"
    );
    let n1_new = client(
        &ctl.url,
        cl.root.cert_pem(),
        &CertifiedKey {
            cert_pem: renewed.chain_pem,
            key_pem,
        },
    );
    assert_eq!(beat(&n1_new, "n1").await.unwrap().status, NodeStatus::Ready);
    ctl.stop().await;

    // After a restart the controller signs with the installed sub-CA.
    let ctl = Running::start(cl.config(false)).await;
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    let ident = Identity::new(CLUSTER, Role::Node, "n9").unwrap();
    let (_, csr_pem) = kcore_pki::generate_csr(&ident, &[]).unwrap();
    let issued: CertificateResponse = admin
        .post_json(
            "/v1/certificates/node",
            &IssueNodeCertificateRequest {
                node_id: "n9".into(),
                csr_pem,
            },
        )
        .await
        .unwrap();
    assert!(issued.chain_pem.ends_with(new_sub.cert_pem()));
    assert!(
        beat(&n1_old, "n1").await.is_err(),
        "old client points at the stopped controller"
    );
    ctl.stop().await;
}

#[tokio::test]
async fn issuing_a_node_certificate_checks_the_csr_identity() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    // A CSR for n5 cannot be signed as n6.
    let (_, csr_pem) =
        kcore_pki::generate_csr(&Identity::new(CLUSTER, Role::Node, "n5").unwrap(), &[]).unwrap();
    let err = admin
        .post_json::<_, CertificateResponse>(
            "/v1/certificates/node",
            &IssueNodeCertificateRequest {
                node_id: "n6".into(),
                csr_pem,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_CSR");
    ctl.stop().await;
}

/// Polls `check` for up to 15 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..150 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn controllers_replicate_through_a_relay_and_merge_approvals() {
    let cl = Cluster::new();
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let (la, lb, lc) = (bind().await, bind().await, bind().await);
    let addr = |l: &tokio::net::TcpListener| l.local_addr().unwrap().to_string();
    // a <-> b <- c: c never talks to a, so what it learns from a was relayed by b.
    let (a_addr, b_addr) = (addr(&la), addr(&lb));
    let a = Running::start_on(la, cl.peer_config("ctl-a", true, vec![b_addr.clone()]));
    let b = Running::start_on(lb, cl.peer_config("ctl-b", true, vec![a_addr]));
    let c = Running::start_on(lc, cl.peer_config("ctl-c", true, vec![b_addr]));
    let trust = cl.root.cert_pem().to_string();
    let admin_of = |r: &Running| client(&r.url, &trust, &cl.admin());

    let n1 = client(&a.url, &trust, &cl.node("n1"));
    register(&n1, "n1", report("hv1", "DC1", Some(StorageBackend::Zfs)))
        .await
        .unwrap();

    let admin_c = admin_of(&c);
    eventually("n1 to reach ctl-c through ctl-b", || async {
        admin_c.get_json::<Node>("/v1/nodes/n1").await.is_ok()
    })
    .await;
    let on_c: Node = admin_c.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(on_c.approval, Approval::Pending);
    assert_eq!(on_c.report.storage.backend, Some(StorageBackend::Zfs));

    // Approve on b; a (which pulls from b) and c both converge.
    post::<Node>(&admin_of(&b), "/v1/nodes/n1/approve")
        .await
        .unwrap();
    let admin_a = admin_of(&a);
    eventually("the approval to reach ctl-a and ctl-c", || async {
        let on_a = admin_a.get_json::<Node>("/v1/nodes/n1").await;
        let on_c = admin_c.get_json::<Node>("/v1/nodes/n1").await;
        matches!((on_a, on_c), (Ok(x), Ok(y)) if x.approval == Approval::Approved && y.approval == Approval::Approved)
    })
    .await;
    // The node heartbeats on a, where the approval arrived by replication, and the
    // heartbeat (soft state, not an operation) reaches c: Ready there too.
    assert_eq!(beat(&n1, "n1").await.unwrap().status, NodeStatus::Ready);
    eventually("c to see n1 Ready", || async {
        matches!(admin_c.get_json::<Node>("/v1/nodes/n1").await, Ok(n) if n.status == NodeStatus::Ready)
    })
    .await;
    // Heartbeats never become operations.
    let ops_before: serde_json::Value = client(&c.url, &trust, &cl.controller_peer())
        .get_json("/v1/replication/vector")
        .await
        .unwrap();
    beat(&n1, "n1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ops_after: serde_json::Value = client(&c.url, &trust, &cl.controller_peer())
        .get_json("/v1/replication/vector")
        .await
        .unwrap();
    assert_eq!(ops_before["origins"], ops_after["origins"]);

    // Replication routes are for controllers only.
    let err = admin_a
        .get_json::<serde_json::Value>("/v1/replication/vector")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "FORBIDDEN_ROLE");
    for r in [a, b, c] {
        r.stop().await;
    }
}

// --- Trust: whom clients accept and what the controller signs (security review D1, D2,
// D8, D13). ---

/// A stand-in server presenting `cert` (any certificate the cluster root signed) that
/// records every request reaching HTTP: what a hijacked controller address would see.
async fn impostor(trust_pem: &str, cert: &CertifiedKey) -> kcore_net::testing::RecordingServer {
    kcore_net::testing::RecordingServer::start(trust_pem, cert, Default::default())
        .await
        .unwrap()
}

/// A node certificate as nodes carry them by default (127.0.0.1 and localhost), so
/// only the identity check can tell it from a controller's.
fn node_cert_with_local_names(cl: &Cluster, id: &str) -> CertifiedKey {
    cl.sub
        .issue(
            &Identity::new(CLUSTER, Role::Node, id).unwrap(),
            &["127.0.0.1".into(), "localhost".into()],
            YEAR,
        )
        .unwrap()
}

#[tokio::test]
async fn agents_and_peer_controllers_refuse_a_node_posing_as_a_controller() {
    let cl = Cluster::new();
    let trust = cl.root.cert_pem().to_string();
    let rogue = impostor(&trust, &node_cert_with_local_names(&cl, "n2")).await;

    // The agent of n1 pointed at the rogue: the handshake fails, nothing is sent.
    let ctx = agent_context(cl.dir.path(), &rogue.url(), &trust, "n1", &cl.node("n1"));
    let mut session = None;
    let err = kcore_agent::registration::step(&ctx, &mut session)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("speaks for kcore://lab/node/n2")
            && err.contains("expected kcore://lab/controller/*"),
        "{err}"
    );
    assert!(rogue.requests().is_empty(), "{:?}", rogue.requests());

    // A controller with the rogue and a real peer: it pulls from the real one (so it
    // has polled the rogue too, which comes first) and never talks HTTP to the rogue.
    let real = Running::start(cl.peer_config("ctl-b", false, vec![])).await;
    let n3 = client(&real.url, &trust, &cl.node("n3"));
    register(&n3, "n3", report("hv3", "DC1", None))
        .await
        .unwrap();
    let a = Running::start(cl.peer_config(
        "ctl-a",
        false,
        vec![
            rogue.addr.clone(),
            real.url.trim_start_matches("https://").into(),
        ],
    ))
    .await;
    let admin_a = client(&a.url, &trust, &cl.admin());
    eventually("ctl-a to pull n3 from its real peer", || async {
        admin_a.get_json::<Node>("/v1/nodes/n3").await.is_ok()
    })
    .await;
    assert!(rogue.requests().is_empty(), "{:?}", rogue.requests());

    // Control: the same impostor with a controller certificate does get the requests,
    // so the empty lists above are the identity check at work, not a broken impostor.
    let posing_cert = cl
        .sub
        .issue(
            &Identity::new(CLUSTER, Role::Controller, "ctl9").unwrap(),
            &["127.0.0.1".into()],
            YEAR,
        )
        .unwrap();
    let posing = impostor(&trust, &posing_cert).await;
    let ctx = agent_context(cl.dir.path(), &posing.url(), &trust, "n1", &cl.node("n1"));
    let _ = kcore_agent::registration::step(&ctx, &mut None).await;
    let seen = posing.requests();
    assert!(
        seen.len() == 1 && seen[0].starts_with("POST /v1/nodes/n1/register "),
        "{seen:?}"
    );
    a.stop().await;
    real.stop().await;
}

/// A CSR for node `id` asking for `names`, and the key that goes with it.
fn csr(id: &str, names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    kcore_pki::generate_csr(&Identity::new(CLUSTER, Role::Node, id).unwrap(), &names).unwrap()
}

async fn renew(c: &Client, id: &str, csr_pem: String) -> Result<CertificateResponse, ClientError> {
    c.post_json(&format!("/v1/nodes/{id}/renew"), &CsrRequest { csr_pem })
        .await
}

#[tokio::test]
async fn renewal_signs_only_the_names_the_node_registered() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem();
    let n1 = client(&ctl.url, trust, &cl.node("n1"));
    let mut r1 = report("hv1", "DC1", None);
    r1.agent_address = Some("10.0.0.7:9091".into());
    register(&n1, "n1", r1).await.unwrap();
    let n2 = client(&ctl.url, trust, &cl.node("n2"));
    register(&n2, "n2", report("hv2", "DC1", None))
        .await
        .unwrap();

    let refused = |names: &'static [&'static str], name: &'static str| {
        let n1 = n1.clone();
        async move {
            let err = renew(&n1, "n1", csr("n1", names).1).await.unwrap_err();
            assert_eq!(code(&err), "NAME_NOT_ALLOWED", "{names:?}: {err}");
            let ClientError::Api { error, .. } = &err else {
                unreachable!()
            };
            assert_eq!(error.details["name"], name, "{err}");
        }
    };
    refused(&["hv1", "*.lab"], "*.lab").await; // wildcard
    refused(&["hv1", "hv2"], "hv2").await; // another node's hostname
    refused(&["n2"], "n2").await; // another node's id
    refused(&["ctl1"], "ctl1").await; // the controller's id
    refused(&["controller.lab"], "controller.lab").await; // nobody registered it

    // Its own names: id, hostname, agent address, loopback.
    let wanted = ["n1", "hv1", "10.0.0.7", "localhost", "127.0.0.1"];
    let signed = renew(&n1, "n1", csr("n1", &wanted).1).await.unwrap();
    let leaf = kcore_pki::certs_from_pem(&signed.chain_pem).unwrap();
    assert_eq!(kcore_pki::cert_names(&leaf[0]), wanted);
    // One signature per node per minute.
    let err = renew(&n1, "n1", csr("n1", &["hv1"]).1).await.unwrap_err();
    assert_eq!(code(&err), "RENEW_RATE_LIMITED", "{err}");
    ctl.stop().await;
}

#[tokio::test]
async fn renew_needs_an_approved_node_and_only_presented_certificates_are_recorded() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(true)).await;
    let trust = cl.root.cert_pem();
    let admin = client(&ctl.url, trust, &cl.admin());
    let first = cl.node("n5");
    let n5 = client(&ctl.url, trust, &first);
    let err = renew(&n5, "n5", csr("n5", &[]).1).await.unwrap_err();
    assert_eq!(code(&err), "NODE_NOT_REGISTERED", "{err}");
    register(&n5, "n5", report("hv5", "DC1", None))
        .await
        .unwrap();
    let err = renew(&n5, "n5", csr("n5", &[]).1).await.unwrap_err();
    assert_eq!(code(&err), "NODE_NOT_APPROVED", "{err}");
    post::<Node>(&admin, "/v1/nodes/n5/approve").await.unwrap();

    let serial_of =
        |pem: &str| kcore_pki::serial_hex(&kcore_pki::certs_from_pem(pem).unwrap()[0]).unwrap();
    let recorded = || async {
        admin
            .get_json::<Node>("/v1/nodes/n5")
            .await
            .unwrap()
            .certificate
            .map(|c| c.serial)
    };
    assert_eq!(recorded().await, Some(serial_of(&first.cert_pem)));
    // A renewal the node never installs does not change what the controller shows.
    let (key_pem, csr_pem) = csr("n5", &["hv5"]);
    let renewed = renew(&n5, "n5", csr_pem).await.unwrap();
    assert_eq!(recorded().await, Some(serial_of(&first.cert_pem)));
    // Once the node uses it, it is.
    let installed = CertifiedKey {
        cert_pem: renewed.chain_pem.clone(),
        key_pem,
    };
    beat(&client(&ctl.url, trust, &installed), "n5")
        .await
        .unwrap();
    assert_eq!(recorded().await, Some(serial_of(&renewed.chain_pem)));
    ctl.stop().await;
}

#[tokio::test]
async fn short_or_expired_sub_cas_cannot_produce_dead_certificates() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem();
    let admin = client(&ctl.url, trust, &cl.admin());
    let install = |sub: &Authority, allow_short: bool| {
        let admin = admin.clone();
        let body = InstallSubCa {
            certificate_pem: sub.cert_pem().into(),
            key_pem: sub.key_pem().into(),
            allow_short,
        };
        async move {
            admin
                .put_json::<_, SubCaInstalled>("/v1/pki/sub-ca", &body)
                .await
        }
    };
    // Ten days left: shorter than a node certificate (90 days), refused unless allowed.
    let short = cl
        .root
        .new_sub_ca("short", Duration::from_secs(10 * 86_400))
        .unwrap();
    let err = install(&short, false).await.unwrap_err();
    assert_eq!(code(&err), "SUB_CA_TOO_SHORT", "{err}");
    assert!(err.to_string().contains("--allow-short"), "{err}");
    install(&short, true).await.unwrap();
    // Leaves are capped at the sub-CA's end.
    let n1 = client(&ctl.url, trust, &cl.node("n1"));
    register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();
    let signed = renew(&n1, "n1", csr("n1", &[]).1).await.unwrap();
    let leaf_end = kcore_pki::not_after(&signed.chain_pem).unwrap();
    assert!(
        leaf_end <= short.not_after(),
        "{leaf_end} > {}",
        short.not_after()
    );

    // A sub-CA that has ended: installing it is refused, and a controller that still
    // holds one signs nothing (503, so clients try another controller).
    let brief = cl.root.new_sub_ca("brief", Duration::from_secs(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = install(&brief, true).await.unwrap_err();
    assert_eq!(code(&err), "SUB_CA_NOT_VALID", "{err}");
    ctl.stop().await;

    cl.write("sub-ca.crt", brief.cert_pem());
    cl.write("sub-ca.key", brief.key_pem());
    let ctl = Running::start(cl.config(false)).await;
    let admin = client(&ctl.url, trust, &cl.admin());
    let err = admin
        .post_json::<_, CertificateResponse>(
            "/v1/certificates/node",
            &IssueNodeCertificateRequest {
                node_id: "n9".into(),
                csr_pem: csr("n9", &[]).1,
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("503") && err.contains("SUB_CA_NOT_VALID"),
        "{err}"
    );
    ctl.stop().await;
}

#[tokio::test]
async fn agent_keeps_its_certificate_when_a_renewal_would_not_last_longer() {
    let cl = Cluster::new();
    // The controller's sub-CA ends in 20 days; the node's certificate already ends then,
    // so every renewal can at best produce the same end (review D2: renewing on every
    // heartbeat).
    let sub = cl
        .root
        .new_sub_ca("ending", Duration::from_secs(20 * 86_400))
        .unwrap();
    cl.write("sub-ca.crt", sub.cert_pem());
    cl.write("sub-ca.key", sub.key_pem());
    let ctl = Running::start(cl.config(false)).await;
    let ident = Identity::new(CLUSTER, Role::Node, "n1").unwrap();
    let (key_pem, csr_pem) = kcore_pki::generate_csr(&ident, &["localhost".into()]).unwrap();
    let cert_pem = sub.sign_csr(&csr_pem, &ident, YEAR).unwrap();
    let current = CertifiedKey { cert_pem, key_pem };
    let trust = cl.root.cert_pem();
    let ctx = agent_context(cl.dir.path(), &ctl.url, trust, "n1", &current);
    let mut session = None;
    kcore_agent::registration::step(&ctx, &mut session)
        .await
        .unwrap();
    let problem = session
        .as_ref()
        .and_then(|s| s.renewal_problem())
        .expect("the renewal was refused")
        .to_string();
    assert!(
        problem.contains("not later than the current one"),
        "{problem}"
    );
    assert_eq!(
        std::fs::read_to_string(&ctx.cert_file).unwrap(),
        current.cert_pem,
        "the current certificate stays on disk"
    );
    // The next turns do not ask again (a new request would now get RENEW_RATE_LIMITED
    // and change the problem), and the controller learns about it from the report.
    let admin = client(&ctl.url, trust, &cl.admin());
    for _ in 0..3 {
        kcore_agent::registration::step(&ctx, &mut session)
            .await
            .unwrap();
    }
    let still = session.as_ref().and_then(|s| s.renewal_problem()).unwrap();
    assert_eq!(still, problem);
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    let shown = node.report.certificate_renewal_problem.unwrap_or_default();
    assert!(shown.contains("not later than the current one"), "{shown}");
    ctl.stop().await;
}

#[tokio::test]
async fn unknown_routes_bad_paths_and_wrong_methods_are_envelopes() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem().to_string();
    let admin = client(&ctl.url, &trust, &cl.admin());
    // The same code as the agents' (security probe D12), naming the path.
    let err = admin
        .get_json::<serde_json::Value>("/v1/bogus")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NOT_FOUND", "{err}");
    assert!(err.to_string().contains("/v1/bogus"), "{err}");
    // Not UTF-8 once percent-decoded: a 400 envelope (was axum's plain text, D11).
    for path in ["/v1/nodes/%FF", "/v1/nodes/%FF/approve"] {
        let err = if path.ends_with("approve") {
            post::<serde_json::Value>(&admin, path).await.unwrap_err()
        } else {
            admin.get_json::<serde_json::Value>(path).await.unwrap_err()
        };
        assert_eq!(code(&err), "BAD_REQUEST", "{path}: {err}");
    }
    // Wrong method on a known route: 405 envelope with the allowed methods (was empty).
    match admin
        .get_json::<serde_json::Value>("/v1/nodes/n1/register")
        .await
        .unwrap_err()
    {
        ClientError::Api { status, error, .. } => {
            assert_eq!(status, 405);
            assert_eq!(error.code, "METHOD_NOT_ALLOWED");
            assert_eq!(error.details["allowedMethods"], serde_json::json!(["POST"]));
        }
        other => panic!("expected a 405 envelope, got {other:?}"),
    }
    ctl.stop().await;
}

// ---------------------------------------------------------------------------------------
// Clock bound (review D3) and report limits and growth (review D7)
// ---------------------------------------------------------------------------------------

/// 2106-02-07, the largest HLC time, as the review's fake peer stamped its operations.
const FAR_HLC: &str = "fffffffffffffff0-1";
/// 2100-01-01 in unix seconds, the review's fake heartbeat.
const HEARTBEAT_2100: i64 = 4_102_444_800;

fn far_op(resource: &str, field: &str, value: &str) -> serde_json::Value {
    serde_json::json!({
        "hlc": FAR_HLC, "origin": "ctl1", "resource": resource, "field": field, "value": value,
    })
}

/// A replication peer that is not a controller of ours but holds a real controller
/// certificate of the cluster (`ctl-fake`, signed by the test sub-CA) and serves
/// far-future operations and heartbeats, like the review's `fake_peer.py`.
async fn start_fake_peer(
    cl: &Cluster,
    hits: Arc<std::sync::atomic::AtomicUsize>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    use axum::routing::get;
    let config = cl.peer_config("ctl-fake", false, vec![]);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let tls = kcore_pki::server_config(
        &read(&config.tls.ca_file),
        &read(&config.tls.cert_file),
        &read(&config.tls.key_file),
    )
    .unwrap();
    let vector = serde_json::json!({
        "controllerId": "ctl1",
        "origins": {"ctl1": FAR_HLC},
        "heartbeats": {"node-evil": HEARTBEAT_2100, "n1": HEARTBEAT_2100},
    });
    let ops = serde_json::json!({"more": false, "ops": [
        far_op("node/node-evil", "approval", "\"Approved\""),
        far_op("node/node-evil", "registeredAt", "\"2100-01-01T00:00:00Z\""),
        far_op("node/node-evil", "report.hostname", "\"injected\""),
        far_op("node/node-evil", "report.dcId", "\"DC1\""),
        far_op("node/n1", "approval", "\"Approved\""),
    ]});
    let app = axum::Router::new()
        .route(
            "/v1/replication/vector",
            get(move || async move { axum::Json(vector) }),
        )
        .route(
            "/v1/replication/ops",
            get(move || {
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move { axum::Json(ops) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(kcore_net::serve_with(
        listener,
        kcore_net::TlsSource::new(tls),
        app,
        async move {
            let _ = rx.await;
        },
        kcore_net::ServeOptions::default(),
    ));
    (addr, tx)
}

#[tokio::test]
async fn far_future_operations_and_heartbeats_from_a_peer_are_refused_and_reported() {
    let cl = Cluster::new();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (fake, stop_fake) = start_fake_peer(&cl, hits.clone()).await;
    let ctl = Running::start(cl.peer_config("ctl-b", true, vec![fake.clone()])).await;
    let trust = cl.root.cert_pem().to_string();
    let admin = client(&ctl.url, &trust, &cl.admin());
    let n1 = client(&ctl.url, &trust, &cl.node("n1"));
    register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();

    eventually("the fake peer to be reported as ClockAhead", || async {
        let list: serde_json::Value = admin.get_json("/v1/replication/peers").await.unwrap();
        list["peers"][0]["state"] == "ClockAhead"
    })
    .await;
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let list: serde_json::Value = admin.get_json("/v1/replication/peers").await.unwrap();
    let peer = &list["peers"][0];
    assert_eq!(peer["peer"], fake.as_str());
    assert_eq!(peer["healthy"], false);
    assert_eq!(peer["controllerId"], "ctl1");
    assert_eq!(peer["refusedOperations"], 5);
    assert_eq!(peer["refusedHeartbeats"], 2);
    // 2106 is about 80 years ahead of any clock this test runs on.
    assert!(
        peer["clockAheadSeconds"].as_u64().unwrap() > 70 * 365 * 24 * 3600,
        "{peer}"
    );
    let reason = peer["reason"].as_str().unwrap();
    assert!(reason.contains("maxClockSkewSeconds"), "{reason}");
    assert_eq!(list["maxClockSkewSeconds"], 60);

    // Nothing was merged: no injected node, n1 still Pending and not made Ready by 2100.
    let nodes: NodeList = admin.get_json("/v1/nodes").await.unwrap();
    let ids: Vec<&str> = nodes.items.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, vec!["n1"]);
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(node.approval, Approval::Pending);
    assert_ne!(
        node.last_heartbeat.as_deref().map(|t| &t[..4]),
        Some("2100")
    );
    let vector: serde_json::Value = client(&ctl.url, &trust, &cl.controller_peer())
        .get_json("/v1/replication/vector")
        .await
        .unwrap();
    assert!(vector["origins"].get("ctl1").is_none(), "{vector}");
    // The operator's reject takes effect.
    let rejected: Node = post(&admin, "/v1/nodes/n1/reject").await.unwrap();
    assert_eq!(rejected.status, NodeStatus::Rejected);
    // A node certificate may not read peer status.
    let err = n1
        .get_json::<serde_json::Value>("/v1/replication/peers")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "FORBIDDEN_ROLE");
    let _ = stop_fake.send(());
    ctl.stop().await;
}

#[tokio::test]
async fn a_reject_that_loses_to_a_stored_far_future_value_is_reported_then_refused_at_restart() {
    let cl = Cluster::new();
    let config = cl.config(false);
    let trust = cl.root.cert_pem().to_string();
    {
        // A controller holding a far-future operation stored before the bound existed
        // (merged raw, past the clock check, exactly as the old merge_remote kept it).
        let state = kcore_controller::build_state(config.clone()).unwrap();
        state
            .store
            .put_node("n1", &report("hv1", "DC1", None), Approval::Approved, "t")
            .unwrap();
        state
            .store
            .merge(&[kcore_controller::store::Op {
                hlc: FAR_HLC.into(),
                origin: "ctl9".into(),
                resource: "node/n1".into(),
                field: "approval".into(),
                value: Some("\"Approved\"".into()),
            }])
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(kcore_net::serve_with(
            listener,
            kcore_net::TlsSource::new(kcore_controller::server_tls(&config).unwrap()),
            kcore_controller::api::router(state.clone()),
            async move {
                let _ = rx.await;
            },
            kcore_net::ServeOptions::default(),
        ));
        let admin = client(&url, &trust, &cl.admin());
        let err = post::<Node>(&admin, "/v1/nodes/n1/reject")
            .await
            .unwrap_err();
        let ClientError::Api { status, error, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(
            (status.as_u16(), error.code.as_str()),
            (409, "WRITE_SUPERSEDED")
        );
        assert!(
            error.message.contains("ctl9") && error.message.contains("2106"),
            "{}",
            error.message
        );
        assert_eq!(error.details["newerOrigin"], "ctl9");
        assert_eq!(error.details["newerValue"], "\"Approved\"");
        let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
        assert_eq!(node.approval, Approval::Approved);
        let _ = tx.send(());
        server.await.unwrap().unwrap();
        state.store.flush_heartbeats().unwrap();
    }
    // Restarted, the controller refuses the far-future operation at start and reports it;
    // the recorded reject is now the newest value.
    let ctl = Running::start(config).await;
    let admin = client(&ctl.url, &trust, &cl.admin());
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(node.approval, Approval::Rejected);
    let list: serde_json::Value = admin.get_json("/v1/replication/peers").await.unwrap();
    assert_eq!(list["refusedAtStart"][0]["origin"], "ctl9");
    assert_eq!(list["refusedAtStart"][0]["operations"], 1);
    let approved = post::<Node>(&admin, "/v1/nodes/n1/approve")
        .await
        .unwrap_err();
    assert_eq!(code(&approved), "NODE_REJECTED");
    ctl.stop().await;
}

#[tokio::test]
async fn reports_over_a_limit_are_refused_naming_the_field() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem().to_string();
    let n1 = client(&ctl.url, &trust, &cl.node("n1"));
    let base = || report("hv1.lab", "DC1", None);
    let mut cases: Vec<(&str, NodeReport, u16, &str, &str)> = Vec::new();
    let mut r = base();
    r.hostname = "hv1\0".into();
    cases.push((
        "NUL in hostname",
        r,
        422,
        "INVALID_FIELD",
        "report.hostname",
    ));
    let mut r = base();
    r.hostname = format!("{}.lab", "a".repeat(60)).repeat(5);
    cases.push((
        "hostname > 253 bytes",
        r,
        422,
        "INVALID_FIELD",
        "report.hostname",
    ));
    let mut r = base();
    r.labels = (0..65)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    cases.push(("65 labels", r, 422, "INVALID_FIELD", "report.labels"));
    let mut r = base();
    r.labels.insert("k".into(), "v".repeat(64));
    cases.push((
        "label value > 63",
        r,
        422,
        "INVALID_FIELD",
        "report.labels[\"k\"]",
    ));
    let mut r = base();
    r.labels
        .insert(format!("{}/k", "a".repeat(254)), "v".into());
    cases.push(("label prefix > 253", r, 422, "INVALID_FIELD", ""));
    let mut r = base();
    r.disks = vec![serde_json::json!({"name": "sda"}); 513];
    cases.push(("513 disks", r, 422, "INVALID_FIELD", "report.disks"));
    let mut r = base();
    r.nics = vec![serde_json::json!({"name": "eth0"}); 257];
    cases.push(("257 nics", r, 422, "INVALID_FIELD", "report.nics"));
    let mut r = base();
    r.storage.mounts = vec![Default::default(); 65];
    cases.push((
        "65 mounts",
        r,
        422,
        "INVALID_FIELD",
        "report.storage.mounts",
    ));
    let mut r = base();
    r.labels.insert("big".into(), "v".repeat(200 * 1024));
    cases.push(("200 KiB report", r, 413, "REPORT_TOO_LARGE", "report"));
    for (what, r, status, want_code, field) in cases {
        let err = register(&n1, "n1", r).await.unwrap_err();
        let ClientError::Api {
            status: got, error, ..
        } = &err
        else {
            panic!("{what}: {err}");
        };
        assert_eq!(
            (got.as_u16(), error.code.as_str()),
            (status, want_code),
            "{what}: {error}"
        );
        let named = error.details["field"].as_str().unwrap();
        if field.is_empty() {
            assert!(named.starts_with("report.labels["), "{what}: {named}");
        } else {
            assert_eq!(named, field, "{what}");
        }
        assert!(
            error.details["limit"].is_u64() || what.contains("NUL"),
            "{what}: {error}"
        );
    }
    let admin = client(&ctl.url, &trust, &cl.admin());
    assert_eq!(
        code(&admin.get_json::<Node>("/v1/nodes/n1").await.unwrap_err()),
        "NODE_NOT_FOUND"
    );
    // Heartbeats are checked the same way.
    register(&n1, "n1", base()).await.unwrap();
    let mut r = base();
    r.hostname = "a b".into();
    let err = n1
        .post_json::<_, NodeAck>(
            "/v1/nodes/n1/heartbeat",
            &HeartbeatRequest { report: Some(r) },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_FIELD");
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(node.report.hostname, "hv1.lab");
    ctl.stop().await;
}

#[tokio::test]
async fn repeated_heartbeats_with_changing_labels_keep_the_database_bounded() {
    let cl = Cluster::new();
    let config = cl.config(false);
    let db = config.database_path.clone();
    let ctl = Running::start(config).await;
    let trust = cl.root.cert_pem().to_string();
    let n1 = client(&ctl.url, &trust, &cl.node("n1"));
    register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();
    let measure = || {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let q = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        (
            q("SELECT COUNT(*) FROM ops"),
            q("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM ops"),
            q("PRAGMA page_count") - q("PRAGMA freelist_count"),
        )
    };
    // Each heartbeat carries 64 labels of the largest allowed size, all changed.
    let with_labels = |i: usize| {
        let mut r = report("hv1", "DC1", None);
        r.labels = (0..64)
            .map(|k| (format!("k{k:02}"), format!("{i:03}{}", "v".repeat(60))))
            .collect();
        r
    };
    let hb = |i: usize| HeartbeatRequest {
        report: Some(with_labels(i)),
    };
    n1.post_json::<_, NodeAck>("/v1/nodes/n1/heartbeat", &hb(0))
        .await
        .unwrap();
    let first = measure();
    for i in 1..50 {
        n1.post_json::<_, NodeAck>("/v1/nodes/n1/heartbeat", &hb(i))
            .await
            .unwrap();
    }
    let last = measure();
    let admin = client(&ctl.url, &trust, &cl.admin());
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert!(node.report.labels["k00"].starts_with("049"));
    // One row per field: the same count and the same bytes as after the first change.
    assert_eq!(last.0, first.0, "ops rows: {first:?} -> {last:?}");
    assert_eq!(last.1, first.1, "ops bytes: {first:?} -> {last:?}");
    // Deleted rows' pages are reused: the live database does not grow with the count of
    // reports (49 more copies of ~5 KB of labels would be dozens of pages).
    assert!(last.2 <= first.2 + 4, "live pages: {first:?} -> {last:?}");
    ctl.stop().await;
}
