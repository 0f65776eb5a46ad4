//! Connection handling and error envelopes (security probe D5, D6, D11, D12): axum's own
//! errors as envelopes, early refusals over HTTP/2 (curl), slow bodies, silent HTTP/2
//! clients, floods of idle connections from one address.

use crate::support::*;
use futures::StreamExt as _;
use kcore_net::*;
use kcore_pki::*;
use serde_json::{Value, json};
use std::time::Duration;

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
