//! What every area's tests share: a cluster's PKI in a temp dir, controllers started
//! in-process on 127.0.0.1 with real mutual TLS, clients for each role, and small
//! request helpers.

pub use std::path::{Path, PathBuf};
pub use std::sync::Arc;
pub use std::time::Duration;

pub use kcore_api::cluster::{
    Approval, CertificateResponse, ControllerCertificateResponse, CsrRequest, HeartbeatRequest,
    InstallSubCa, IssueControllerCertificateRequest, IssueNodeCertificateRequest, Node, NodeAck,
    NodeList, NodeReport, NodeStatus, RegisterRequest, StorageBackend, StorageClassDetail,
    StorageClassList, StorageReport, SubCaInstalled,
};
pub use kcore_controller::config::{ControllerConfig, ControllerTls};
pub use kcore_net::{Client, ClientError, ClientOptions};
pub use kcore_pki::{Authority, CertifiedKey, Identity, Role};
pub use serde::de::DeserializeOwned;

pub const CLUSTER: &str = "lab";
pub const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// A cluster's PKI and one controller's files in a temp dir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub root: Authority,
    pub sub: Authority,
}

impl Cluster {
    pub fn new() -> Cluster {
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

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    pub fn config(&self, manual: bool) -> ControllerConfig {
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
            advertise_address: None,
            compaction: Default::default(),
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
    pub fn peer_config(&self, id: &str, manual: bool, peers: Vec<String>) -> ControllerConfig {
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

    pub fn admin(&self) -> CertifiedKey {
        self.root
            .issue(
                &Identity::new(CLUSTER, Role::Admin, "alice").unwrap(),
                &[],
                YEAR,
            )
            .unwrap()
    }

    pub fn controller_peer(&self) -> CertifiedKey {
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
    pub fn node(&self, id: &str) -> CertifiedKey {
        let ident = Identity::new(CLUSTER, Role::Node, id).unwrap();
        let (key_pem, csr_pem) = kcore_pki::generate_csr(&ident, &["localhost".into()]).unwrap();
        let cert_pem = self.sub.sign_csr(&csr_pem, &ident, YEAR).unwrap();
        CertifiedKey { cert_pem, key_pem }
    }
}

/// A running controller.
pub struct Running {
    pub url: String,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<Result<(), kcore_controller::ControllerError>>,
}

impl Running {
    pub async fn start(config: ControllerConfig) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Running::start_on(listener, config)
    }

    pub fn start_on(listener: tokio::net::TcpListener, config: ControllerConfig) -> Running {
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

    /// [`Running::start_on`] on a state built here, returned too: the test can watch the
    /// controller's store while it serves and replicates.
    pub fn start_on_keeping_state(
        listener: tokio::net::TcpListener,
        config: ControllerConfig,
    ) -> (Running, Arc<kcore_controller::api::AppState>) {
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let tls = kcore_controller::server_tls(&config).unwrap();
        let state = kcore_controller::build_state(config).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(kcore_controller::serve(
            listener,
            tls,
            state.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        let running = Running {
            url,
            stop: Some(tx),
            task,
        };
        (running, state)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

pub fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

pub fn client(url: &str, trust_pem: &str, who: &CertifiedKey) -> Client {
    let tls = kcore_pki::client_config(trust_pem, &who.cert_pem, &who.key_pem).unwrap();
    Client::new(vec![url.to_string()], tls, options()).unwrap()
}

/// Verifies the server but presents no client certificate.
pub fn anonymous_client(url: &str, trust_pem: &str) -> Client {
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

pub fn report(host: &str, dc: &str, backend: Option<StorageBackend>) -> NodeReport {
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

pub async fn register(c: &Client, id: &str, r: NodeReport) -> Result<NodeAck, ClientError> {
    c.post_json(
        &format!("/v1/nodes/{id}/register"),
        &RegisterRequest { report: r },
    )
    .await
}

pub async fn beat(c: &Client, id: &str) -> Result<NodeAck, ClientError> {
    c.post_json(
        &format!("/v1/nodes/{id}/heartbeat"),
        &HeartbeatRequest::default(),
    )
    .await
}

pub async fn post<T: DeserializeOwned>(c: &Client, path: &str) -> Result<T, ClientError> {
    c.post_json(path, &serde_json::json!({})).await
}

pub fn code(err: &ClientError) -> String {
    err.api_code()
        .map(str::to_string)
        .unwrap_or_else(|| format!("no answer: {err}"))
}

/// Whether the caller got past authentication and authorisation.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Allowed,
    /// Refused by the route's role or self check (the code).
    Refused(String),
    /// No HTTP answer at all: the TLS handshake refused the client.
    NoAnswer,
}

pub fn outcome<T>(result: Result<T, ClientError>) -> Outcome {
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

/// Writes a node's files and builds the agent-side registration context.
pub fn agent_context(
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
        client_tx: None,
    }
}

/// Polls `check` for up to 15 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
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

// --- Trust: whom clients accept and what the controller signs (security review D1, D2,
// D8, D13). ---

/// A stand-in server presenting `cert` (any certificate the cluster root signed) that
/// records every request reaching HTTP: what a hijacked controller address would see.
pub async fn impostor(trust_pem: &str, cert: &CertifiedKey) -> kcore_net::testing::RecordingServer {
    kcore_net::testing::RecordingServer::start(trust_pem, cert, Default::default())
        .await
        .unwrap()
}

/// A node certificate as nodes carry them by default (127.0.0.1 and localhost), so
/// only the identity check can tell it from a controller's.
pub fn node_cert_with_local_names(cl: &Cluster, id: &str) -> CertifiedKey {
    cl.sub
        .issue(
            &Identity::new(CLUSTER, Role::Node, id).unwrap(),
            &["127.0.0.1".into(), "localhost".into()],
            YEAR,
        )
        .unwrap()
}

/// A CSR for node `id` asking for `names`, and the key that goes with it.
/// `PUT /v1/pki/sub-ca` with `sub` (as `kctl rotate sub-ca` sends it to one controller).
pub async fn install_sub_ca(
    admin: &Client,
    sub: &Authority,
) -> Result<SubCaInstalled, ClientError> {
    admin
        .put_json(
            "/v1/pki/sub-ca",
            &InstallSubCa {
                certificate_pem: sub.cert_pem().into(),
                key_pem: sub.key_pem().into(),
                allow_short: false,
            },
        )
        .await
}

pub fn csr(id: &str, names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    kcore_pki::generate_csr(&Identity::new(CLUSTER, Role::Node, id).unwrap(), &names).unwrap()
}

pub async fn renew(
    c: &Client,
    id: &str,
    csr_pem: String,
) -> Result<CertificateResponse, ClientError> {
    c.post_json(&format!("/v1/nodes/{id}/renew"), &CsrRequest { csr_pem })
        .await
}

// ---------------------------------------------------------------------------------------
// Clock bound (review D3) and report limits and growth (review D7)
// ---------------------------------------------------------------------------------------

/// 2106-02-07, the largest HLC time, as the review's fake peer stamped its operations.
pub const FAR_HLC: &str = "fffffffffffffff0-1";
/// 2100-01-01 in unix seconds, the review's fake heartbeat.
pub const HEARTBEAT_2100: i64 = 4_102_444_800;

pub fn far_op(resource: &str, field: &str, value: &str) -> serde_json::Value {
    serde_json::json!({
        "hlc": FAR_HLC, "origin": "ctl1", "resource": resource, "field": field, "value": value,
    })
}

/// A replication peer that is not a controller of ours but holds a real controller
/// certificate of the cluster (`ctl-fake`, signed by the test sub-CA) and serves
/// far-future operations and heartbeats, like the review's `fake_peer.py`.
pub async fn start_fake_peer(
    cl: &Cluster,
    hits: Arc<std::sync::atomic::AtomicUsize>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    use axum::routing::get;
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
    start_fake_peer_with(cl, app).await
}

/// A stand-in replication peer serving `app` with a real controller certificate of the
/// cluster (`ctl-fake`).
pub async fn start_fake_peer_with(
    cl: &Cluster,
    app: axum::Router,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let config = cl.peer_config("ctl-fake", false, vec![]);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let tls = kcore_pki::server_config(
        &read(&config.tls.ca_file),
        &read(&config.tls.cert_file),
        &read(&config.tls.key_file),
    )
    .unwrap();
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
