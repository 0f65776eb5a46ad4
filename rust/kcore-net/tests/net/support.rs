//! Shared fixtures of the kcore-net tests: a lab PKI, servers on 127.0.0.1:0 with a small
//! test app, clients with short timeouts, and raw TLS/TCP/curl helpers for the probes.

use axum::extract::{Path, State};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::{Json, Router};
use kcore_net::*;
use kcore_pki::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

pub const DAY: Duration = Duration::from_secs(24 * 3600);

pub struct Pki {
    pub root: Authority,
    pub sub: Authority,
}

pub fn pki() -> Pki {
    let root = Authority::new_root("lab", 3650 * DAY).unwrap();
    let sub = root.new_sub_ca("c1", 365 * DAY).unwrap();
    Pki { root, sub }
}

pub fn ident(role: Role, id: &str) -> Identity {
    Identity::new("lab", role, id).unwrap()
}

pub fn local_names() -> Vec<String> {
    vec!["127.0.0.1".into(), "localhost".into()]
}

pub fn mtls_server(p: &Pki) -> TlsSource {
    let leaf = p
        .sub
        .issue(&ident(Role::Controller, "c1"), &local_names(), 30 * DAY)
        .unwrap();
    TlsSource::new(server_config(p.root.cert_pem(), &leaf.cert_pem, &leaf.key_pem).unwrap())
}

pub fn quick() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(3),
        total_timeout: Duration::from_secs(8),
        stream_idle_timeout: Duration::from_secs(5),
    }
}

pub fn client_with(urls: &[&str], tls: rustls::ClientConfig, options: ClientOptions) -> Client {
    Client::new(urls.iter().map(|u| u.to_string()).collect(), tls, options).unwrap()
}

pub fn mtls_client(trust: &Authority, cert: &CertifiedKey, urls: &[&str]) -> Client {
    client_with(
        urls,
        client_config(trust.cert_pem(), &cert.cert_pem, &cert.key_pem).unwrap(),
        quick(),
    )
}

pub struct Running {
    pub url: String,
    pub stop: Option<oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.handle.await.unwrap().unwrap();
    }
}

pub async fn start(tls: TlsSource, app: Router) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(serve(listener, tls, app, async move {
        let _ = rx.await;
    }));
    Running {
        url,
        stop: Some(tx),
        handle,
    }
}

#[derive(Clone, Default)]
pub struct AppState {
    pub name: &'static str,
    pub hits: Arc<AtomicUsize>,
    pub gate: Arc<Notify>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct WhoAmI {
    pub identity: Option<String>,
    pub not_after: Option<i64>,
    pub fingerprint: Option<String>,
    pub serial: Option<String>,
    pub server: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub step: u32,
}

pub const ADMIN_ONLY: &[Role] = &[Role::Admin];

pub fn app(state: AppState) -> Router {
    let admin = Router::new()
        .route("/v1/admin", get(|| async { Json(json!({"ok": true})) }))
        .route_layer(from_fn_with_state(ADMIN_ONLY, allow_roles));
    Router::new()
        .route(
            "/v1/whoami",
            get(
                |State(s): State<AppState>, peer: PeerIdentity, cert: PeerCert| async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    Json(WhoAmI {
                        identity: peer.0.map(|i| i.uri()),
                        not_after: cert.0.as_ref().map(|c| c.not_after.unix_timestamp()),
                        fingerprint: cert.0.as_ref().map(|c| c.fingerprint.clone()),
                        serial: cert.0.map(|c| c.serial),
                        server: s.name.to_string(),
                    })
                },
            ),
        )
        .route(
            "/v1/nodes/{id}/report",
            post(
                |Authenticated(who): Authenticated,
                 Path(id): Path<String>,
                 ApiJson(body): ApiJson<Step>| async move {
                    ensure_self(&who, &id)?;
                    Ok::<_, ApiFailure>(Json(
                        json!({"node": id, "step": body.step, "by": who.uri()}),
                    ))
                },
            ),
        )
        .route(
            "/v1/conflict",
            get(|State(s): State<AppState>| async move {
                s.hits.fetch_add(1, Ordering::SeqCst);
                ApiFailure::with_status(
                    axum::http::StatusCode::CONFLICT,
                    kcore_api::ErrorCode::PlanHashMismatch,
                    "plan changed",
                )
            }),
        )
        .route(
            "/v1/maybe",
            get(|State(s): State<AppState>| async move {
                s.hits.fetch_add(1, Ordering::SeqCst);
                if s.name == "down" {
                    Err(ApiFailure::unavailable("draining"))
                } else {
                    Ok(Json(json!({"server": s.name})))
                }
            }),
        )
        .route(
            "/v1/progress",
            post(|ApiJson(req): ApiJson<Value>| async move {
                let count = req["count"].as_u64().unwrap_or(0) as u32;
                ndjson_response(futures::stream::iter((0..count).map(|step| Step { step })))
            }),
        )
        .route(
            "/v1/gated",
            // One item, then wait for the test to open the gate, then a second item.
            get(|State(s): State<AppState>| async move {
                let gate = s.gate.clone();
                let items = futures::stream::unfold(0u32, move |n| {
                    let gate = gate.clone();
                    async move {
                        match n {
                            0 => Some((Step { step: 0 }, 1)),
                            1 => {
                                gate.notified().await;
                                Some((Step { step: 1 }, 2))
                            }
                            _ => None,
                        }
                    }
                });
                ndjson_response(items)
            }),
        )
        .merge(admin)
        .fallback(kcore_net::error::not_found)
        .with_state(state)
}

pub fn named(name: &'static str) -> AppState {
    AppState {
        name,
        ..AppState::default()
    }
}

pub async fn start_with(tls: TlsSource, app: Router, options: ServeOptions) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(serve_with(
        listener,
        tls,
        app,
        async move {
            let _ = rx.await;
        },
        options,
    ));
    Running {
        url,
        stop: Some(tx),
        handle,
    }
}

pub fn addr_of(url: &str) -> String {
    url.trim_start_matches("https://").to_string()
}

/// A route with a typed path parameter and a body-reading POST behind the admin role.
pub fn limits_app() -> Router {
    let admin_post = Router::new()
        .route(
            "/v1/admin/step",
            post(|ApiJson(step): ApiJson<Step>| async move { Json(step) }),
        )
        .route_layer(from_fn_with_state(ADMIN_ONLY, allow_roles));
    Router::new()
        .route(
            "/v1/items/{id}",
            get(|ApiPath(id): ApiPath<String>| async move { Json(json!({ "id": id })) }),
        )
        .route(
            "/v1/step",
            post(|ApiJson(step): ApiJson<Step>| async move { Json(step) }),
        )
        .route("/v1/health", get(|| async { Json(json!({"ok": true})) }))
        .route(
            "/v1/port",
            get(
                |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                    std::net::SocketAddr,
                >| async move { Json(peer.port()) },
            ),
        )
        .merge(admin_post)
        .fallback(kcore_net::error::not_found)
}

pub fn raw_http(tls: rustls::ClientConfig) -> reqwest::Client {
    let mut tls = tls;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Writes the PEM files curl needs into `dir`.
pub fn write_pems(dir: &std::path::Path, p: &Pki, who: &CertifiedKey) -> [String; 3] {
    let ca = dir.join("ca.crt");
    let cert = dir.join("client.crt");
    let key = dir.join("client.key");
    std::fs::write(&ca, p.root.cert_pem()).unwrap();
    std::fs::write(&cert, &who.cert_pem).unwrap();
    std::fs::write(&key, &who.key_pem).unwrap();
    [ca, cert, key].map(|f| f.to_string_lossy().into_owned())
}

/// curl over HTTP/2 (ALPN h2), if this host has a curl with HTTP/2; `None` otherwise.
/// curl is a test client only (the probes need a second HTTP/2 implementation), so its
/// argv is spelled in the tests, run through kcore-nix's runner, not a kcore-nix builder.
pub async fn curl_h2() -> Option<kcore_nix::runner::Program> {
    let curl = kcore_nix::runner::Program::resolve("curl", None, "KCORE_TEST_CURL").ok()?;
    let out = kcore_nix::runner::Invocation::new(&curl)
        .arg("--version")
        .timeout(Duration::from_secs(10))
        .output()
        .await
        .ok()?;
    out.stdout_lossy().contains("HTTP2").then_some(curl)
}

/// A TLS connection from `source` (a loopback address) to `url`, with ALPN `alpn`.
pub async fn tls_from(
    source: &str,
    url: &str,
    config: rustls::ClientConfig,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = config;
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tcp_from(source, url).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// A plain TCP connection to `url`'s address from the loopback address `source`.
pub async fn tcp_from(source: &str, url: &str) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(addr_of(url).parse().unwrap()).await
}

/// Reads until EOF (or a reset); panics if the peer is still open after `bound`.
pub async fn closed_within(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    bound: Duration,
    what: &str,
) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(bound, read)
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after {bound:?}"));
    seen
}

/// Expects the call to fail at the TLS layer (the server refuses the handshake).
pub async fn assert_refused(client: &Client) {
    match client.get_json::<WhoAmI>("/v1/whoami").await {
        Err(ClientError::Unreachable { attempts, .. }) => assert_eq!(attempts.len(), 1),
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

pub fn serial_of(cert: &CertifiedKey) -> String {
    serial_hex(&certs_from_pem(&cert.cert_pem).unwrap()[0]).unwrap()
}
