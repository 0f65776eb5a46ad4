//! kcore-net against real TLS on 127.0.0.1: mTLS admission (missing, foreign, expired
//! certificates), sub-CA rotation, role and self-only checks, install mode (-k and
//! pinning), certificate hot reload, graceful shutdown, NDJSON, and client failover.
#![allow(clippy::unwrap_used)] // tests may unwrap (team rule); helpers are test code too

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::{Json, Router};
use kcore_net::*;
use kcore_pki::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

const DAY: Duration = Duration::from_secs(24 * 3600);

struct Pki {
    root: Authority,
    sub: Authority,
}

fn pki() -> Pki {
    let root = Authority::new_root("lab", 3650 * DAY).unwrap();
    let sub = root.new_sub_ca("c1", 365 * DAY).unwrap();
    Pki { root, sub }
}

fn ident(role: Role, id: &str) -> Identity {
    Identity::new("lab", role, id).unwrap()
}

fn local_names() -> Vec<String> {
    vec!["127.0.0.1".into(), "localhost".into()]
}

fn mtls_server(p: &Pki) -> TlsSource {
    let leaf = p
        .sub
        .issue(&ident(Role::Controller, "c1"), &local_names(), 30 * DAY)
        .unwrap();
    TlsSource::new(server_config(p.root.cert_pem(), &leaf.cert_pem, &leaf.key_pem).unwrap())
}

fn quick() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(3),
        total_timeout: Duration::from_secs(8),
        stream_idle_timeout: Duration::from_secs(5),
    }
}

fn client_with(urls: &[&str], tls: rustls::ClientConfig, options: ClientOptions) -> Client {
    Client::new(urls.iter().map(|u| u.to_string()).collect(), tls, options).unwrap()
}

fn mtls_client(trust: &Authority, cert: &CertifiedKey, urls: &[&str]) -> Client {
    client_with(
        urls,
        client_config(trust.cert_pem(), &cert.cert_pem, &cert.key_pem).unwrap(),
        quick(),
    )
}

struct Running {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.handle.await.unwrap().unwrap();
    }
}

async fn start(tls: TlsSource, app: Router) -> Running {
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
struct AppState {
    name: &'static str,
    hits: Arc<AtomicUsize>,
    gate: Arc<Notify>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct WhoAmI {
    identity: Option<String>,
    not_after: Option<i64>,
    fingerprint: Option<String>,
    serial: Option<String>,
    server: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Step {
    step: u32,
}

const ADMIN_ONLY: &[Role] = &[Role::Admin];

fn app(state: AppState) -> Router {
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

fn named(name: &'static str) -> AppState {
    AppState {
        name,
        ..AppState::default()
    }
}

#[tokio::test]
async fn mtls_identity_and_expiry_reach_the_handler() {
    let p = pki();
    let server = start(mtls_server(&p), app(named("a"))).await;
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    let client = mtls_client(&p.root, &admin, &[&server.url]);
    let who: WhoAmI = client.get_json("/v1/whoami").await.unwrap();
    assert_eq!(who.identity.as_deref(), Some("kcore://lab/admin/ops"));
    assert_eq!(
        who.not_after,
        Some(not_after(&admin.cert_pem).unwrap().unix_timestamp())
    );
    let der = certs_from_pem(&admin.cert_pem).unwrap()[0].clone();
    assert_eq!(who.fingerprint, Some(fingerprint_sha256(&der)));
    assert_eq!(who.serial, Some(serial_hex(&der).unwrap()));
    // Unknown routes answer with the envelope as well.
    let err = client.get_json::<Value>("/v1/nope").await.unwrap_err();
    assert_eq!(err.api_code(), Some("NOT_FOUND"), "{err}");
    server.stop().await;
}

/// Expects the call to fail at the TLS layer (the server refuses the handshake).
async fn assert_refused(client: &Client) {
    match client.get_json::<WhoAmI>("/v1/whoami").await {
        Err(ClientError::Unreachable { attempts, .. }) => assert_eq!(attempts.len(), 1),
        other => panic!("expected a refused handshake, got {other:?}"),
    }
}

#[tokio::test]
async fn clients_without_valid_certificates_are_refused() {
    let p = pki();
    let state = named("a");
    let hits = state.hits.clone();
    let server = start(mtls_server(&p), app(state)).await;

    // Positive control: a good node certificate from the sub-CA is accepted.
    let node = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let who: WhoAmI = mtls_client(&p.root, &node, &[&server.url])
        .get_json("/v1/whoami")
        .await
        .unwrap();
    assert_eq!(who.identity.as_deref(), Some("kcore://lab/node/n1"));

    // No client certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(certs_from_pem(p.root.cert_pem()).unwrap()[0].clone())
        .unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert_refused(&client_with(&[&server.url], anonymous, quick())).await;

    // A certificate from another cluster's CA, even with a plausible identity.
    let other = Authority::new_root("lab", DAY).unwrap();
    let foreign = other.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    assert_refused(&mtls_client(&p.root, &foreign, &[&server.url])).await;

    // An expired certificate from the right sub-CA.
    let now = OffsetDateTime::now_utc();
    let expired = p
        .sub
        .issue_between(
            &ident(Role::Node, "n1"),
            &[],
            now - time::Duration::days(30),
            now - time::Duration::hours(1),
        )
        .unwrap();
    assert_refused(&mtls_client(&p.root, &expired, &[&server.url])).await;

    // A leaf whose chain lacks its sub-CA cannot be verified against the root.
    let leaf_only = CertifiedKey {
        cert_pem: node
            .cert_pem
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap()
            .to_string(),
        key_pem: node.key_pem.clone(),
    };
    assert_eq!(certs_from_pem(&leaf_only.cert_pem).unwrap().len(), 1);
    assert_refused(&mtls_client(&p.root, &leaf_only, &[&server.url])).await;

    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "only the good client reached the handler"
    );
    server.stop().await;
}

#[tokio::test]
async fn leaves_of_a_rotated_sub_ca_stay_valid_until_they_expire() {
    let p = pki();
    let server = start(mtls_server(&p), app(named("a"))).await;
    let old_leaf = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let rotated = p.root.new_sub_ca("c1-2", 365 * DAY).unwrap();
    let new_leaf = rotated.issue(&ident(Role::Node, "n2"), &[], DAY).unwrap();
    assert_ne!(
        certs_from_pem(&old_leaf.cert_pem).unwrap()[1],
        certs_from_pem(&new_leaf.cert_pem).unwrap()[1],
        "the two leaves carry different sub-CAs"
    );
    for (leaf, id) in [(&old_leaf, "n1"), (&new_leaf, "n2")] {
        let who: WhoAmI = mtls_client(&p.root, leaf, &[&server.url])
            .get_json("/v1/whoami")
            .await
            .unwrap();
        assert_eq!(who.identity, Some(format!("kcore://lab/node/{id}")));
    }
    server.stop().await;
}

#[tokio::test]
async fn routes_enforce_roles_and_self_only() {
    let p = pki();
    let server = start(mtls_server(&p), app(named("a"))).await;
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    let node = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let ctl = p
        .sub
        .issue(&ident(Role::Controller, "c2"), &[], DAY)
        .unwrap();
    let admin_c = mtls_client(&p.root, &admin, &[&server.url]);
    let node_c = mtls_client(&p.root, &node, &[&server.url]);
    let ctl_c = mtls_client(&p.root, &ctl, &[&server.url]);

    let ok: Value = admin_c.get_json("/v1/admin").await.unwrap();
    assert_eq!(ok["ok"], true);
    for c in [&node_c, &ctl_c] {
        match c.get_json::<Value>("/v1/admin").await.unwrap_err() {
            ClientError::Api { status, error, .. } => {
                assert_eq!(status, 403);
                assert_eq!(error.code, "FORBIDDEN");
                assert!(
                    error.message.contains("allowed roles: admin"),
                    "{}",
                    error.message
                );
            }
            other => panic!("expected 403, got {other:?}"),
        }
    }

    let body = Step { step: 3 };
    let mine: Value = node_c
        .post_json("/v1/nodes/n1/report", &body)
        .await
        .unwrap();
    assert_eq!(mine["by"], "kcore://lab/node/n1");
    let err = node_c
        .post_json::<_, Value>("/v1/nodes/n2/report", &body)
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("FORBIDDEN"), "{err}");
    let theirs: Value = ctl_c.post_json("/v1/nodes/n2/report", &body).await.unwrap();
    assert_eq!(theirs["node"], "n2");

    // Bad JSON gets the envelope with the parser's explanation.
    let err = node_c
        .post_json::<_, Value>("/v1/nodes/n1/report", &json!({"step": "three"}))
        .await
        .unwrap_err();
    match err {
        ClientError::Api { status, error, .. } => {
            assert_eq!(status, 422);
            assert_eq!(error.code, "BAD_REQUEST");
            assert!(error.message.contains("step"), "{}", error.message);
        }
        other => panic!("expected 422, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn requests_without_identity_get_401() {
    use tower::ServiceExt as _;
    // Requests that did not pass through `serve` carry no PeerIdentity: the extractor
    // and the middleware must both treat them as unauthenticated.
    for (method, uri, body) in [
        ("GET", "/v1/admin", ""),
        ("POST", "/v1/nodes/n1/report", r#"{"step":1}"#),
    ] {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        let resp = app(named("a")).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 401, "{uri}");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let err: kcore_api::ApiError = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(err.code, "UNAUTHENTICATED");
    }
}

#[tokio::test]
async fn install_mode_with_insecure_and_pinned_clients() {
    let (cert, fingerprint) = self_signed_install(&local_names()).unwrap();
    let tls = TlsSource::new(server_config_no_client_auth(&cert.cert_pem, &cert.key_pem).unwrap());
    let server = start(tls, app(named("iso"))).await;

    let insecure = client_with(&[&server.url], client_config_insecure().unwrap(), quick());
    let who: WhoAmI = insecure.get_json("/v1/whoami").await.unwrap();
    assert_eq!(who.identity, None, "install mode has no client identity");

    let upper_with_colons = fingerprint
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let pinned = client_with(
        &[&server.url],
        client_config_pinned(&upper_with_colons).unwrap(),
        quick(),
    );
    let who: WhoAmI = pinned.get_json("/v1/whoami").await.unwrap();
    assert_eq!(who.server, "iso");

    let (_, other_fp) = self_signed_install(&local_names()).unwrap();
    let wrong = client_with(
        &[&server.url],
        client_config_pinned(&other_fp).unwrap(),
        quick(),
    );
    let err = wrong.get_json::<WhoAmI>("/v1/whoami").await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("does not match the pinned"), "{text}");
    assert!(
        text.contains(&fingerprint),
        "names the actual fingerprint: {text}"
    );

    // A cluster client does not trust the self-signed installer certificate.
    let p = pki();
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    assert_refused(&mtls_client(&p.root, &admin, &[&server.url])).await;
    server.stop().await;
}

#[tokio::test]
async fn hot_reload_swaps_the_certificate_without_dropping_connections() {
    let (a, fp_a) = self_signed_install(&local_names()).unwrap();
    let (b, fp_b) = self_signed_install(&local_names()).unwrap();
    let tls = TlsSource::new(server_config_no_client_auth(&a.cert_pem, &a.key_pem).unwrap());
    let state = named("hot");
    let gate = state.gate.clone();
    let server = start(tls.clone(), app(state)).await;
    let pinned = |fp: &str| client_with(&[&server.url], client_config_pinned(fp).unwrap(), quick());

    let _: WhoAmI = pinned(&fp_a).get_json("/v1/whoami").await.unwrap();

    // A stream opened with certificate A, still running while we swap.
    let streaming = Arc::new(pinned(&fp_a));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream_task = {
        let streaming = streaming.clone();
        tokio::spawn(async move {
            streaming
                .stream_ndjson("/v1/gated", None::<&()>, |s: Step| tx.send(s.step).unwrap())
                .await
        })
    };
    assert_eq!(rx.recv().await, Some(0));

    tls.replace(server_config_no_client_auth(&b.cert_pem, &b.key_pem).unwrap());

    let err = pinned(&fp_a)
        .get_json::<WhoAmI>("/v1/whoami")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not match the pinned"),
        "{err}"
    );
    let who: WhoAmI = pinned(&fp_b).get_json("/v1/whoami").await.unwrap();
    assert_eq!(who.server, "hot");

    // The connection made before the swap is still alive and finishes its stream.
    gate.notify_one();
    assert_eq!(rx.recv().await, Some(1));
    stream_task.await.unwrap().unwrap();
    assert!(!server.handle.is_finished(), "the server kept running");
    server.stop().await;
}

#[tokio::test]
async fn ndjson_streams_items_in_order() {
    let p = pki();
    let server = start(mtls_server(&p), app(named("a"))).await;
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    let client = mtls_client(&p.root, &admin, &[&server.url]);
    let mut seen = Vec::new();
    client
        .stream_ndjson("/v1/progress", Some(&json!({"count": 50})), |s: Step| {
            seen.push(s.step)
        })
        .await
        .unwrap();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    // Errors before the stream starts are ordinary API errors.
    let err = client
        .stream_ndjson("/v1/conflict", None::<&()>, |_: Value| {})
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("PLAN_HASH_MISMATCH"), "{err}");
    server.stop().await;
}

async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// Accepts TCP connections and never says anything (a hung server).
async fn hanging_url() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    (url, task)
}

#[tokio::test]
async fn failover_past_a_closed_port_and_a_hung_server() {
    let p = pki();
    let server = start(mtls_server(&p), app(named("good"))).await;
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    let tls = || client_config(p.root.cert_pem(), &admin.cert_pem, &admin.key_pem).unwrap();
    let closed = closed_port_url().await;
    let (hung, hung_task) = hanging_url().await;
    let options = ClientOptions {
        attempt_timeout: Duration::from_millis(700),
        total_timeout: Duration::from_secs(10),
        ..quick()
    };

    let client = client_with(&[&closed, &hung, &server.url], tls(), options.clone());
    let who: WhoAmI = client.get_json("/v1/whoami").await.unwrap();
    assert_eq!(who.server, "good");

    // Every server bad: the error lists each one and why.
    let closed2 = closed_port_url().await;
    let client = client_with(&[&closed2, &hung], tls(), options.clone());
    match client.get_json::<WhoAmI>("/v1/whoami").await.unwrap_err() {
        ClientError::Unreachable {
            attempts,
            not_tried,
        } => {
            assert_eq!(attempts.len(), 2);
            assert_eq!(attempts[0].0, closed2);
            assert!(
                attempts[0].1.to_lowercase().contains("refused"),
                "{}",
                attempts[0].1
            );
            assert_eq!(attempts[1].0, hung);
            assert!(
                attempts[1].1.contains("no answer within"),
                "{}",
                attempts[1].1
            );
            assert!(not_tried.is_empty());
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }

    // The total budget bounds the call: with two hung servers ahead of the good one and
    // a budget of about one attempt, the good server is never reached.
    let (hung2, hung2_task) = hanging_url().await;
    let tight = ClientOptions {
        attempt_timeout: Duration::from_millis(700),
        total_timeout: Duration::from_millis(1000),
        ..quick()
    };
    let client = client_with(&[&hung, &hung2, &server.url], tls(), tight);
    match client.get_json::<WhoAmI>("/v1/whoami").await.unwrap_err() {
        ClientError::Unreachable {
            attempts,
            not_tried,
        } => {
            assert_eq!(attempts.len(), 2, "{attempts:?}");
            assert_eq!(not_tried, vec![server.url.clone()]);
            let text = ClientError::Unreachable {
                attempts,
                not_tried,
            }
            .to_string();
            assert!(
                text.contains("not tried (total time budget spent)"),
                "{text}"
            );
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    hung_task.abort();
    hung2_task.abort();
    server.stop().await;
}

#[tokio::test]
async fn api_errors_are_returned_as_is_and_503_fails_over() {
    let p = pki();
    let first = named("down");
    let second = named("up");
    let (first_hits, second_hits) = (first.hits.clone(), second.hits.clone());
    let s1 = start(mtls_server(&p), app(first)).await;
    let s2 = start(mtls_server(&p), app(second)).await;
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    let client = mtls_client(&p.root, &admin, &[&s1.url, &s2.url]);

    match client.get_json::<Value>("/v1/conflict").await.unwrap_err() {
        ClientError::Api {
            status,
            error,
            server,
        } => {
            assert_eq!(status, 409);
            assert_eq!(error.code, "PLAN_HASH_MISMATCH");
            assert_eq!(server, s1.url);
        }
        other => panic!("expected the 409 as is, got {other:?}"),
    }
    assert_eq!(first_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        second_hits.load(Ordering::SeqCst),
        0,
        "a 4xx must not fail over"
    );

    let answer: Value = client.get_json("/v1/maybe").await.unwrap();
    assert_eq!(answer["server"], "up");
    assert_eq!(first_hits.load(Ordering::SeqCst), 2);
    assert_eq!(second_hits.load(Ordering::SeqCst), 1);
    // The server that answered is preferred next time.
    let _: WhoAmI = client.get_json("/v1/whoami").await.unwrap();
    assert_eq!(first_hits.load(Ordering::SeqCst), 2);
    s1.stop().await;
    s2.stop().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let p = pki();
    let state = named("a");
    let gate = state.gate.clone();
    let server = start(mtls_server(&p), app(state)).await;
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    let client = Arc::new(mtls_client(&p.root, &admin, &[&server.url]));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .stream_ndjson("/v1/gated", None::<&()>, |s: Step| tx.send(s.step).unwrap())
                .await
        })
    };
    assert_eq!(rx.recv().await, Some(0));
    let Running { url, stop, handle } = server;
    stop.unwrap().send(()).unwrap();
    // Shutdown waits for the open request rather than cutting it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !handle.is_finished(),
        "serve returned while a request was in flight"
    );
    gate.notify_one();
    assert_eq!(rx.recv().await, Some(1));
    in_flight.await.unwrap().unwrap();
    handle.await.unwrap().unwrap();
    // And the port is closed afterwards.
    let fresh = mtls_client(&p.root, &admin, &[&url]);
    assert!(matches!(
        fresh.get_json::<WhoAmI>("/v1/whoami").await,
        Err(ClientError::Unreachable { .. })
    ));
}

fn serial_of(cert: &CertifiedKey) -> String {
    serial_hex(&certs_from_pem(&cert.cert_pem).unwrap()[0]).unwrap()
}

#[tokio::test]
async fn revoked_serials_get_401_and_the_set_is_hot_swappable() {
    let p = pki();
    let tls = mtls_server(&p);
    let server = start(tls.clone(), app(named("a"))).await;
    let n1 = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let n2 = p.sub.issue(&ident(Role::Node, "n2"), &[], DAY).unwrap();
    let (c1, c2) = (
        mtls_client(&p.root, &n1, &[&server.url]),
        mtls_client(&p.root, &n2, &[&server.url]),
    );
    let _: WhoAmI = c1.get_json("/v1/whoami").await.unwrap();

    // Colons and upper case are accepted, as operators paste them.
    let pasted = serial_of(&n1)
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_string())
        .collect::<Vec<_>>()
        .join(":");
    tls.set_revoked_serials([pasted]);
    // A fresh client: the revocation set applies per connection.
    let c1 = mtls_client(&p.root, &n1, &[&server.url]);
    match c1.get_json::<WhoAmI>("/v1/whoami").await.unwrap_err() {
        ClientError::Api { status, error, .. } => {
            assert_eq!(status, 401);
            assert_eq!(error.code, "CERTIFICATE_REVOKED");
            assert!(error.message.contains(&serial_of(&n1)), "{}", error.message);
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let who: WhoAmI = c2.get_json("/v1/whoami").await.unwrap();
    assert_eq!(who.identity.as_deref(), Some("kcore://lab/node/n2"));

    tls.set_revoked_serials(Vec::<String>::new());
    let c1 = mtls_client(&p.root, &n1, &[&server.url]);
    let _: WhoAmI = c1.get_json("/v1/whoami").await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn crl_from_the_sub_ca_refuses_the_listed_leaf_in_the_handshake() {
    let p = pki();
    let n1 = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let n2 = p.sub.issue(&ident(Role::Node, "n2"), &[], DAY).unwrap();
    let crl = p
        .sub
        .revocation_list(&[serial_of(&n1)], 1, 7 * DAY)
        .unwrap();
    assert!(crl.contains("BEGIN X509 CRL"));
    let leaf = p
        .sub
        .issue(&ident(Role::Controller, "c1"), &local_names(), 30 * DAY)
        .unwrap();
    let tls = TlsSource::new(
        server_config_with_crls(p.root.cert_pem(), &leaf.cert_pem, &leaf.key_pem, &[crl]).unwrap(),
    );
    let server = start(tls, app(named("a"))).await;
    assert_refused(&mtls_client(&p.root, &n1, &[&server.url])).await;
    let who: WhoAmI = mtls_client(&p.root, &n2, &[&server.url])
        .get_json("/v1/whoami")
        .await
        .unwrap();
    assert_eq!(who.identity.as_deref(), Some("kcore://lab/node/n2"));
    server.stop().await;
}

#[tokio::test]
async fn clients_can_require_the_server_identity() {
    let p = pki();
    let controller = start(mtls_server(&p), app(named("ctl"))).await;
    // A node certificate that lists 127.0.0.1, as a node's own certificate would.
    let rogue_leaf = p
        .sub
        .issue(&ident(Role::Node, "n9"), &local_names(), DAY)
        .unwrap();
    let rogue_tls = TlsSource::new(
        server_config(p.root.cert_pem(), &rogue_leaf.cert_pem, &rogue_leaf.key_pem).unwrap(),
    );
    let rogue = start(rogue_tls, app(named("rogue"))).await;

    let me = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let expecting = |expect: PeerExpectation, url: &str| {
        client_with(
            &[url],
            client_config_expecting(p.root.cert_pem(), &me.cert_pem, &me.key_pem, &expect).unwrap(),
            quick(),
        )
    };
    let controllers = PeerExpectation::controller("lab");

    let who: WhoAmI = expecting(controllers.clone(), &controller.url)
        .get_json("/v1/whoami")
        .await
        .unwrap();
    assert_eq!(who.server, "ctl");
    // Plain client_config would accept the rogue (valid chain, matching IP SAN) ...
    let _: WhoAmI = mtls_client(&p.root, &me, &[&rogue.url])
        .get_json("/v1/whoami")
        .await
        .unwrap();
    // ... the expecting config does not, and says why.
    let err = expecting(controllers.clone(), &rogue.url)
        .get_json::<WhoAmI>("/v1/whoami")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("speaks for kcore://lab/node/n9, expected kcore://lab/controller/*"),
        "{err}"
    );
    // A controller certificate of another cluster under the same root is refused too.
    let foreign_leaf = p
        .sub
        .issue(
            &Identity::new("other", Role::Controller, "ctl").unwrap(),
            &local_names(),
            DAY,
        )
        .unwrap();
    let foreign = start(
        TlsSource::new(
            server_config(
                p.root.cert_pem(),
                &foreign_leaf.cert_pem,
                &foreign_leaf.key_pem,
            )
            .unwrap(),
        ),
        app(named("foreign")),
    )
    .await;
    let err = expecting(controllers.clone(), &foreign.url)
        .get_json::<WhoAmI>("/v1/whoami")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("speaks for kcore://other/controller/ctl, expected kcore://lab/controller/*"),
        "{err}"
    );
    foreign.stop().await;

    let exact = PeerExpectation::Exactly(ident(Role::Node, "n9"));
    let who: WhoAmI = expecting(exact, &rogue.url)
        .get_json("/v1/whoami")
        .await
        .unwrap();
    assert_eq!(who.server, "rogue");
    let wrong = PeerExpectation::Exactly(ident(Role::Node, "n8"));
    assert!(
        expecting(wrong, &rogue.url)
            .get_json::<WhoAmI>("/v1/whoami")
            .await
            .is_err()
    );
    controller.stop().await;
    rogue.stop().await;
}

/// The server side of the authorisation matrix: each kind of kcore client (by the
/// expectation it builds) against servers presenting the right role, a wrong role,
/// the wrong node and another cluster's certificate (all signed by the same root).
#[tokio::test]
async fn every_client_accepts_only_its_server_role_and_cluster() {
    let p = pki();
    let cert = |cluster: &str, role: Role, id: &str| {
        p.sub
            .issue(
                &Identity::new(cluster, role, id).unwrap(),
                &local_names(),
                DAY,
            )
            .unwrap()
    };
    let servers = [
        ("controller lab/ctl", cert("lab", Role::Controller, "ctl")),
        ("node lab/n1", cert("lab", Role::Node, "n1")),
        ("node lab/n2", cert("lab", Role::Node, "n2")),
        ("admin lab/ops", cert("lab", Role::Admin, "ops")),
        (
            "controller other/ctl",
            cert("other", Role::Controller, "ctl"),
        ),
        ("node other/n1", cert("other", Role::Node, "n1")),
    ];
    // (client, its expectation, which servers it must accept)
    let clients = [
        (
            "kctl, agents and peers -> controller",
            PeerExpectation::controller("lab"),
            vec!["controller lab/ctl"],
        ),
        (
            "kctl --node (managed)",
            PeerExpectation::node("lab", None).unwrap(),
            vec!["node lab/n1", "node lab/n2"],
        ),
        (
            "kctl --node --node-id n1",
            PeerExpectation::node("lab", Some("n1")).unwrap(),
            vec!["node lab/n1"],
        ),
    ];
    let me = p.sub.issue(&ident(Role::Admin, "alice"), &[], DAY).unwrap();
    let mut running = Vec::new();
    for (name, leaf) in &servers {
        let tls = TlsSource::new(
            server_config(p.root.cert_pem(), &leaf.cert_pem, &leaf.key_pem).unwrap(),
        );
        running.push((*name, start(tls, app(named("any"))).await));
    }
    let mut mismatches = Vec::new();
    for (client_name, expectation, accepts) in &clients {
        for (server_name, server) in &running {
            let client = client_with(
                &[&server.url],
                client_config_expecting(p.root.cert_pem(), &me.cert_pem, &me.key_pem, expectation)
                    .unwrap(),
                quick(),
            );
            let result = client.get_json::<WhoAmI>("/v1/whoami").await;
            let accepted = result.is_ok();
            if accepted != accepts.contains(server_name) {
                mismatches.push(format!("{client_name} x {server_name}: {result:?}"));
            }
            if let Err(err) = result {
                let text = err.to_string();
                if !text.contains(&expectation.describe()) {
                    mismatches.push(format!(
                        "{client_name} x {server_name}: the error does not say what was expected: {text}"
                    ));
                }
            }
        }
    }
    for (_, server) in running {
        server.stop().await;
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

async fn start_with(tls: TlsSource, app: Router, options: ServeOptions) -> Running {
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

fn addr_of(url: &str) -> String {
    url.trim_start_matches("https://").to_string()
}

#[tokio::test]
async fn silent_clients_are_disconnected() {
    use tokio::io::AsyncReadExt as _;
    let p = pki();
    let options = ServeOptions {
        handshake_timeout: Duration::from_millis(300),
        header_read_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let server = start_with(mtls_server(&p), app(named("a")), options).await;

    // Connects and never starts TLS: closed after the handshake timeout.
    let mut raw = tokio::net::TcpStream::connect(addr_of(&server.url))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf))
        .await
        .expect("the server should have closed the silent TCP connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected EOF");

    // Completes TLS and never sends a request: closed after the header read timeout.
    let node = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let config = client_config(p.root.cert_pem(), &node.cert_pem, &node.key_pem).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr_of(&server.url))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
        .await
        .expect("the server should have closed the idle TLS connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected EOF");

    // The server still serves others.
    let _: WhoAmI = mtls_client(&p.root, &node, &[&server.url])
        .get_json("/v1/whoami")
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn connection_limit_queues_clients_instead_of_failing_them() {
    let p = pki();
    let options = ServeOptions {
        max_connections: 1,
        handshake_timeout: Duration::from_secs(30),
        ..ServeOptions::default()
    };
    let server = start_with(mtls_server(&p), app(named("a")), options).await;
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    let tls = || client_config(p.root.cert_pem(), &admin.cert_pem, &admin.key_pem).unwrap();
    let impatient = client_with(
        &[&server.url],
        tls(),
        ClientOptions {
            attempt_timeout: Duration::from_millis(500),
            ..quick()
        },
    );

    // One silent connection holds the only slot. Completing the TLS handshake proves
    // the server accepted it (and so holds the slot) before the next client comes.
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls()));
    let tcp = tokio::net::TcpStream::connect(addr_of(&server.url))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let hog = connector.connect(name, tcp).await.unwrap();
    match impatient
        .get_json::<WhoAmI>("/v1/whoami")
        .await
        .unwrap_err()
    {
        ClientError::Unreachable { attempts, .. } => {
            assert!(attempts[0].1.contains("no answer within"), "{attempts:?}")
        }
        other => panic!("expected a queued (timed out) request, got {other:?}"),
    }
    drop(hog);
    // The slot frees when the hog's connection ends; a patient client gets through.
    let patient = client_with(&[&server.url], tls(), quick());
    let who: WhoAmI = patient.get_json("/v1/whoami").await.unwrap();
    assert_eq!(who.server, "a");
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_from_a_csr_authenticates_its_node() {
    let p = pki();
    let server = start(mtls_server(&p), app(named("a"))).await;
    let me = ident(Role::Node, "n5");
    let (key_pem, csr_pem) = generate_csr(&me, &local_names()).unwrap();
    let cert_pem = p.sub.sign_csr(&csr_pem, &me, 90 * DAY).unwrap();
    let creds = CertifiedKey { cert_pem, key_pem };
    let who: WhoAmI = mtls_client(&p.root, &creds, &[&server.url])
        .get_json("/v1/whoami")
        .await
        .unwrap();
    assert_eq!(who.identity.as_deref(), Some("kcore://lab/node/n5"));
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_stream_is_reported_not_waited_on_forever() {
    let p = pki();
    let server = start(mtls_server(&p), app(named("a"))).await;
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    let client = client_with(
        &[&server.url],
        client_config(p.root.cert_pem(), &admin.cert_pem, &admin.key_pem).unwrap(),
        ClientOptions {
            stream_idle_timeout: Duration::from_millis(300),
            ..quick()
        },
    );
    let mut seen = Vec::new();
    // The gate is never opened: one item, then silence.
    let err = client
        .stream_ndjson("/v1/gated", None::<&()>, |s: Step| seen.push(s.step))
        .await
        .unwrap_err();
    assert_eq!(seen, vec![0]);
    match err {
        ClientError::Stream { server: s, reason } => {
            assert_eq!(s, server.url);
            assert!(reason.contains("no data for"), "{reason}");
        }
        other => panic!("expected a stream error, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn http2_clients_are_served_with_identity() {
    let p = pki();
    let server = start(mtls_server(&p), app(named("a"))).await;
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    let mut tls = client_config(p.root.cert_pem(), &admin.cert_pem, &admin.key_pem).unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    let resp = http
        .get(format!("{}/v1/whoami", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let who: WhoAmI = resp.json().await.unwrap();
    assert_eq!(who.identity.as_deref(), Some("kcore://lab/admin/ops"));
    server.stop().await;
}

#[tokio::test]
async fn replace_tls_switches_the_client_certificate() {
    let p = pki();
    let server = start(mtls_server(&p), app(named("a"))).await;
    let n1 = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let renewed = p.sub.issue(&ident(Role::Node, "n1"), &[], 2 * DAY).unwrap();
    let client = mtls_client(&p.root, &n1, &[&server.url]);
    let before: WhoAmI = client.get_json("/v1/whoami").await.unwrap();
    client
        .replace_tls(client_config(p.root.cert_pem(), &renewed.cert_pem, &renewed.key_pem).unwrap())
        .unwrap();
    let after: WhoAmI = client.get_json("/v1/whoami").await.unwrap();
    assert_eq!(before.identity, after.identity);
    assert_eq!(after.serial, Some(serial_of(&renewed)));
    assert_ne!(before.serial, after.serial);
    server.stop().await;
}

#[tokio::test]
async fn a_valid_certificate_without_kcore_identity_is_unauthenticated() {
    // Signed by the cluster root (so the handshake succeeds) but carrying no kcore://
    // URI: built with rcgen directly, because kcore-pki never issues such a thing.
    let p = pki();
    let issuer_key = rcgen::KeyPair::from_pem(p.root.key_pem()).unwrap();
    let issuer = rcgen::CertificateParams::from_ca_cert_pem(p.root.cert_pem())
        .unwrap()
        .self_signed(&issuer_key)
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["anonymous.lab".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer, &issuer_key).unwrap();
    let anonymous = CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };

    let server = start(mtls_server(&p), app(named("a"))).await;
    let client = mtls_client(&p.root, &anonymous, &[&server.url]);
    let who: WhoAmI = client.get_json("/v1/whoami").await.unwrap();
    assert_eq!(who.identity, None, "handshake passes, identity is absent");
    assert!(
        who.fingerprint.is_some(),
        "the certificate facts are still there"
    );
    for (path, body) in [
        ("/v1/admin", None),
        ("/v1/nodes/n1/report", Some(json!({"step": 1}))),
    ] {
        let err = match body {
            None => client.get_json::<Value>(path).await.unwrap_err(),
            Some(b) => client.post_json::<_, Value>(path, &b).await.unwrap_err(),
        };
        match err {
            ClientError::Api { status, error, .. } => {
                assert_eq!(status, 401, "{path}");
                assert_eq!(error.code, "UNAUTHENTICATED");
            }
            other => panic!("{path}: expected 401, got {other:?}"),
        }
    }
    server.stop().await;
}

// ---- connection handling and error envelopes (security probe D5, D6, D11, D12) ----

use futures::StreamExt as _;

/// A route with a typed path parameter and a body-reading POST behind the admin role.
fn limits_app() -> Router {
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

fn raw_http(tls: rustls::ClientConfig) -> reqwest::Client {
    let mut tls = tls;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn axum_errors_leave_as_envelopes_with_one_not_found_code() {
    let p = pki();
    let server = start(mtls_server(&p), limits_app()).await;
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    let http = raw_http(client_config(p.root.cert_pem(), &admin.cert_pem, &admin.key_pem).unwrap());
    let url = |path: &str| format!("{}{path}", server.url);

    // Not valid percent-encoded UTF-8 in a path parameter: 400 envelope, not plain text.
    let resp = http.get(url("/v1/items/%FF")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "BAD_REQUEST", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("UTF-8"),
        "{body}"
    );
    // The parameter itself still works.
    let body: Value = http
        .get(url("/v1/items/a%20b"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["id"], "a b");

    // Wrong method: 405 envelope naming the allowed methods; the Allow header stays.
    let resp = http.delete(url("/v1/items/x")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let allow = resp.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET"), "{allow}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "METHOD_NOT_ALLOWED", "{body}");
    let allowed: Vec<&str> = body["details"]["allowedMethods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(allowed.contains(&"GET"), "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("DELETE"),
        "{body}"
    );
    let resp = http.get(url("/v1/step")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["details"]["allowedMethods"], json!(["POST"]), "{body}");

    // Unknown route: 404 NOT_FOUND naming the path.
    let resp = http.get(url("/v1/bogus")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "NOT_FOUND");
    assert!(body["message"].as_str().unwrap().contains("/v1/bogus"));
    server.stop().await;
}

/// Writes the PEM files curl needs into `dir`.
fn write_pems(dir: &std::path::Path, p: &Pki, who: &CertifiedKey) -> [String; 3] {
    let ca = dir.join("ca.crt");
    let cert = dir.join("client.crt");
    let key = dir.join("client.key");
    std::fs::write(&ca, p.root.cert_pem()).unwrap();
    std::fs::write(&cert, &who.cert_pem).unwrap();
    std::fs::write(&key, &who.key_pem).unwrap();
    [ca, cert, key].map(|f| f.to_string_lossy().into_owned())
}

/// curl over HTTP/2 (ALPN h2), if this host has a curl with HTTP/2; `None` otherwise.
async fn curl_h2() -> Option<kcore_nix::runner::Program> {
    let curl = kcore_nix::runner::Program::resolve("curl", None, "KCORE_TEST_CURL").ok()?;
    let out = kcore_nix::runner::Invocation::new(&curl)
        .arg("--version")
        .timeout(Duration::from_secs(10))
        .output()
        .await
        .ok()?;
    out.stdout_lossy().contains("HTTP2").then_some(curl)
}

#[tokio::test]
async fn early_refusals_reach_http2_clients() {
    let p = pki();
    let server = start(mtls_server(&p), limits_app()).await;
    let node = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    const TRIES: usize = 20;

    // kcore's own stack as an HTTP/2 client (reqwest, ALPN h2): the body is sent in
    // slow pieces so the refusal is certainly given before the body is complete.
    let mut tls = client_config(p.root.cert_pem(), &node.cert_pem, &node.key_pem).unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let h2 = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for i in 0..5 {
        let chunks = futures::stream::iter([r#"{"st"#, r#"ep": 1}"#]).then(|c| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, std::io::Error>(bytes::Bytes::from(c))
        });
        let resp = h2
            .post(format!("{}/v1/admin/step", server.url))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .unwrap_or_else(|e| panic!("try {i}: no answer over h2: {e:?}"));
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 403, "try {i}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "FORBIDDEN", "try {i}");
    }

    // curl (nghttp2), the client the probe saw fail 15-17 times in 20.
    let Some(curl) = curl_h2().await else {
        eprintln!("no curl with HTTP/2 on this host: the curl half of this test did not run");
        server.stop().await;
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key] = write_pems(dir.path(), &p, &node);
    let cases = [
        // 403 from the role middleware, before the body is read.
        ("/v1/admin/step", "application/json", 403, "FORBIDDEN"),
        // 415 from the JSON extractor, before the body is read.
        ("/v1/step", "text/plain", 415, "BAD_REQUEST"),
    ];
    for (path, content_type, status, code) in cases {
        let mut failures = Vec::new();
        for i in 0..TRIES {
            let out = kcore_nix::runner::Invocation::new(&curl)
                .args(["-sS", "--http2", "--max-time", "10", "--cacert", &ca])
                .args(["--cert", &cert, "--key", &key, "-X", "POST"])
                .args(["-H", &format!("Content-Type: {content_type}")])
                .args(["--data-binary", r#"{"step": 1, "pad": "xxxxxxxxxxxxxxxx"}"#])
                .args(["-w", "\n%{http_code} %{http_version}"])
                .arg(format!("{}{path}", server.url))
                .timeout(Duration::from_secs(20))
                .output_unchecked()
                .await
                .unwrap();
            let stdout = out.stdout_lossy();
            let ok = out.status.success()
                && stdout.ends_with(&format!("\n{status} 2"))
                && stdout.contains(&format!(r#""code":"{code}""#));
            if !ok {
                failures.push(format!("try {i}: {stdout:?} {}", out.stderr_lossy()));
            }
        }
        assert!(
            failures.is_empty(),
            "{path}: {} of {TRIES} early refusals did not reach curl over h2: {failures:#?}",
            failures.len()
        );
    }
    server.stop().await;
}

/// A TLS connection from `source` (a loopback address) to `url`, with ALPN `alpn`.
async fn tls_from(
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
async fn tcp_from(source: &str, url: &str) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(addr_of(url).parse().unwrap()).await
}

/// Reads until EOF (or a reset); panics if the peer is still open after `bound`.
async fn closed_within(
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

#[tokio::test]
async fn a_body_trickled_too_slowly_is_cut_off_with_408() {
    use tokio::io::AsyncWriteExt as _;
    let p = pki();
    let options = ServeOptions {
        body_read_timeout: Duration::from_secs(1),
        ..ServeOptions::default()
    };
    let server = start_with(mtls_server(&p), limits_app(), options).await;
    let node = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let config = client_config(p.root.cert_pem(), &node.cert_pem, &node.key_pem).unwrap();
    let mut tls = tls_from("127.0.0.1", &server.url, config, b"http/1.1").await;
    let head = "POST /v1/step HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{";
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    // One byte every 200 ms, in the background, for at most 20 s (the probe's trickle,
    // faster, so the test is short): far too slow for a 100,000-byte body.
    let (mut reader, mut writer) = tokio::io::split(tls);
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b" ").await.is_err() || writer.flush().await.is_err() {
                break;
            }
        }
    });
    let answer = closed_within(&mut reader, Duration::from_secs(15), "slow body").await;
    trickle.abort();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"BODY_TIMEOUT""#), "{text}");

    // A body that arrives at once is served as before.
    let http = raw_http(client_config(p.root.cert_pem(), &node.cert_pem, &node.key_pem).unwrap());
    let step: Step = http
        .post(format!("{}/v1/step", server.url))
        .json(&Step { step: 7 })
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(step, Step { step: 7 });
    server.stop().await;
}

#[tokio::test]
async fn silent_http2_clients_are_closed_in_managed_and_install_mode() {
    use tokio::io::AsyncWriteExt as _;
    let p = pki();
    let options = ServeOptions {
        first_request_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(800),
        drain_timeout: Duration::from_secs(2),
        ..ServeOptions::default()
    };
    let managed = start_with(mtls_server(&p), limits_app(), options.clone()).await;
    let node = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let config = || client_config(p.root.cert_pem(), &node.cert_pem, &node.key_pem).unwrap();

    // ALPN h2, then nothing: no preface, ever.
    let mut silent = tls_from("127.0.0.1", &managed.url, config(), b"h2").await;
    assert_eq!(silent.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    closed_within(&mut silent, Duration::from_secs(10), "h2 without preface").await;

    // Preface and SETTINGS, then silence (it never opens a stream): closed too, long
    // before the ping timeout (80 s by default) would have closed it.
    let mut idle = tls_from("127.0.0.1", &managed.url, config(), b"h2").await;
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    idle.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // empty SETTINGS
    idle.flush().await.unwrap();
    closed_within(
        &mut idle,
        Duration::from_secs(10),
        "h2 preface, then silent",
    )
    .await;

    // A real HTTP/2 client that made a request and then idles: the server closes the
    // connection after the idle timeout, so the next request comes on a new one
    // (reqwest itself would keep it for 90 s).
    let mut h2_tls = config();
    h2_tls.alpn_protocols = vec![b"h2".to_vec()];
    let h2 = reqwest::Client::builder()
        .use_preconfigured_tls(h2_tls)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let port = |h2: reqwest::Client| {
        let url = format!("{}/v1/port", managed.url);
        async move {
            let resp = h2.get(url).send().await.unwrap();
            assert_eq!(resp.version(), reqwest::Version::HTTP_2);
            resp.json::<u16>().await.unwrap()
        }
    };
    let first = port(h2.clone()).await;
    assert_eq!(port(h2.clone()).await, first, "a busy connection is reused");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_ne!(
        port(h2.clone()).await,
        first,
        "the idle connection was not closed"
    );

    // The install-mode agent's configuration: no client certificate at all.
    let (install_cert, fingerprint) = self_signed_install(&local_names()).unwrap();
    let install_tls = TlsSource::new(
        server_config_no_client_auth(&install_cert.cert_pem, &install_cert.key_pem).unwrap(),
    );
    let install = start_with(install_tls, limits_app(), options).await;
    let mut silent = tls_from(
        "127.0.0.1",
        &install.url,
        client_config_pinned(&fingerprint).unwrap(),
        b"h2",
    )
    .await;
    closed_within(
        &mut silent,
        Duration::from_secs(10),
        "install mode, h2 without preface",
    )
    .await;

    // Both still serve real clients.
    let _: Value = mtls_client(&p.root, &node, &[&managed.url])
        .get_json("/v1/health")
        .await
        .unwrap();
    let _: Value = client_with(
        &[&install.url],
        client_config_pinned(&fingerprint).unwrap(),
        quick(),
    )
    .get_json("/v1/health")
    .await
    .unwrap();
    managed.stop().await;
    install.stop().await;
}

#[tokio::test]
async fn a_flood_of_idle_connections_from_one_address_does_not_starve_others() {
    let p = pki();
    // Small limits so the flood exceeds the server's connection limit several times.
    const MAX: usize = 16;
    const FLOOD: usize = 48;
    let options = ServeOptions {
        max_connections: MAX,
        max_connections_per_peer: 4,
        // Long, so flood sockets are not freed by the handshake timeout during the test.
        handshake_timeout: Duration::from_secs(30),
        ..ServeOptions::default()
    };
    let server = start_with(mtls_server(&p), limits_app(), options).await;
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();

    // From 127.0.0.2: plain TCP connections that never start TLS, reopened when the
    // server closes them (what the probe's hold.py does), for a bounded time.
    let url = server.url.clone();
    let flood = tokio::spawn(async move {
        let mut held = Vec::new();
        let mut opened = 0usize;
        let until = tokio::time::Instant::now() + Duration::from_secs(4);
        while tokio::time::Instant::now() < until && opened < 5000 {
            // Drop the sockets the server closed (EOF or reset); WouldBlock is open.
            held.retain(
                |s: &tokio::net::TcpStream| match s.try_read(&mut [0u8; 1]) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                },
            );
            while held.len() < FLOOD && opened < 5000 {
                match tcp_from("127.0.0.2", &url).await {
                    Ok(s) => held.push(s),
                    Err(_) => break,
                }
                opened += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (held.len(), opened)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // From 127.0.0.1 meanwhile: every health probe, each on a fresh connection, answers
    // within the client's timeout.
    let tls = || client_config(p.root.cert_pem(), &admin.cert_pem, &admin.key_pem).unwrap();
    for i in 0..8 {
        let probe = client_with(
            &[&server.url],
            tls(),
            ClientOptions {
                attempt_timeout: Duration::from_secs(2),
                total_timeout: Duration::from_secs(2),
                ..quick()
            },
        );
        probe
            .get_json::<Value>("/v1/health")
            .await
            .unwrap_or_else(|e| panic!("probe {i} during the flood: {e}"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (held, opened) = flood.await.unwrap();
    assert!(opened > MAX, "the flood opened only {opened} connections");
    eprintln!("flood: {opened} connections opened, {held} still open at the end");
    server.stop().await;
}

#[tokio::test]
async fn certificates_of_another_cluster_get_403_wrong_cluster() {
    let p = pki();
    let options = ServeOptions {
        cluster: Some("lab".into()),
        ..ServeOptions::default()
    };
    let server = start_with(mtls_server(&p), app(named("a")), options).await;
    // Signed by the same sub-CA, so the handshake passes; the URI names cluster "other".
    let stranger = p
        .sub
        .issue(
            &Identity::new("other", Role::Admin, "ops").unwrap(),
            &[],
            DAY,
        )
        .unwrap();
    let client = mtls_client(&p.root, &stranger, &[&server.url]);
    for path in ["/v1/whoami", "/v1/admin", "/v1/nope"] {
        match client.get_json::<Value>(path).await.unwrap_err() {
            ClientError::Api { status, error, .. } => {
                assert_eq!(status, 403, "{path}");
                assert_eq!(error.code, "WRONG_CLUSTER", "{path}");
                assert!(error.message.contains("\"other\""), "{}", error.message);
            }
            other => panic!("{path}: expected 403 WRONG_CLUSTER, got {other:?}"),
        }
    }
    // Its own cluster's admin is served.
    let admin = p.sub.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    let _: Value = mtls_client(&p.root, &admin, &[&server.url])
        .get_json("/v1/admin")
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_client_that_never_spoke() {
    let p = pki();
    let options = ServeOptions {
        first_request_timeout: Duration::from_secs(60),
        drain_timeout: Duration::from_secs(60),
        ..ServeOptions::default()
    };
    let server = start_with(mtls_server(&p), limits_app(), options).await;
    let node = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let config = client_config(p.root.cert_pem(), &node.cert_pem, &node.key_pem).unwrap();
    // ALPN h2 and no preface: a graceful HTTP/2 shutdown would wait for it.
    let _silent = tls_from("127.0.0.1", &server.url, config, b"h2").await;
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("shutdown waited for a connection that never sent a request");
}
