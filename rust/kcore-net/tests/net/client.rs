//! The failover client: NDJSON streams, failover past closed and hung servers, API errors
//! returned as they are, stalled streams, HTTP/2.

use crate::support::*;
use kcore_net::*;
use kcore_pki::*;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;

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
