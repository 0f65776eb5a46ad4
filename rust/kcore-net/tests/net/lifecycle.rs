//! The accept loop over a server's life: graceful shutdown, silent clients, the
//! connection limit.

use crate::support::*;
use kcore_net::*;
use kcore_pki::*;
use std::sync::Arc;
use std::time::Duration;

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
