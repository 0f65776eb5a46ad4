//! What mTLS costs: a request on a fresh connection (TCP + TLS 1.3 handshake with
//! client certificate + request) against the baseline of the same request on a
//! kept-alive connection, both measured in this run on 127.0.0.1. Also the cost of the
//! PKI operations a node renewal performs. Prints medians and the ratio.
//!
//! `cargo bench -p kcore-net --bench tls` (add `--profile dev` for a quick run).
#![allow(clippy::unwrap_used)] // benchmark code: a failure should stop it loudly

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use kcore_net::{TlsSource, serve};
use kcore_pki::{Authority, Identity, Role, client_config, generate_csr, server_config};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn http(tls: rustls::ClientConfig, pooled: bool) -> reqwest::Client {
    let mut tls = tls;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let builder = reqwest::Client::builder().use_preconfigured_tls(tls);
    let builder = if pooled {
        builder
    } else {
        builder.pool_max_idle_per_host(0)
    };
    builder.build().unwrap()
}

async fn time_requests(client: &reqwest::Client, url: &str, n: usize) -> Duration {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let resp = client.get(url).send().await.unwrap();
        assert!(resp.status().is_success());
        resp.bytes().await.unwrap();
        samples.push(start.elapsed());
    }
    median(samples)
}

fn time_op(n: usize, mut op: impl FnMut()) -> Duration {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        op();
        samples.push(start.elapsed());
    }
    median(samples)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("KCORE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let root = Authority::new_root("bench", 3650 * DAY).unwrap();
    let sub = root.new_sub_ca("c1", 365 * DAY).unwrap();
    let names = vec!["127.0.0.1".to_string()];
    let server_leaf = sub
        .issue(
            &Identity::new("bench", Role::Controller, "c1").unwrap(),
            &names,
            DAY,
        )
        .unwrap();
    let client_leaf = sub
        .issue(&Identity::new("bench", Role::Node, "n1").unwrap(), &[], DAY)
        .unwrap();
    let tls = TlsSource::new(
        server_config(root.cert_pem(), &server_leaf.cert_pem, &server_leaf.key_pem).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/v1/ping", listener.local_addr().unwrap());
    let app = Router::new().route("/v1/ping", get(|| async { "{}" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, tls, app, async move {
        let _ = stopped.await;
    }));

    let config =
        client_config(root.cert_pem(), &client_leaf.cert_pem, &client_leaf.key_pem).unwrap();
    let pooled = http(config.clone(), true);
    let fresh = http(config, false);
    // Warm up both paths (connection pool, lazy statics).
    time_requests(&pooled, &url, 10).await;
    time_requests(&fresh, &url, 10).await;
    let keep_alive = time_requests(&pooled, &url, n).await;
    let handshake = time_requests(&fresh, &url, n).await;

    let me = Identity::new("bench", Role::Node, "n2").unwrap();
    let csr_n = n.min(100);
    let csr_gen = time_op(csr_n, || {
        generate_csr(&me, &names).unwrap();
    });
    let (_, csr) = generate_csr(&me, &names).unwrap();
    let sign = time_op(csr_n, || {
        sub.sign_csr(&csr, &me, 90 * DAY).unwrap();
    });

    println!("kcore-net tls benchmark, {n} requests each, medians, 127.0.0.1");
    println!("  request on kept-alive mTLS connection (baseline): {keep_alive:?}");
    println!("  request on fresh connection incl. mTLS handshake: {handshake:?}");
    println!(
        "  ratio fresh/kept-alive: {:.1}x",
        handshake.as_secs_f64() / keep_alive.as_secs_f64()
    );
    println!("  generate_csr (P-256 key + CSR), {csr_n} runs: {csr_gen:?}");
    println!("  sign_csr by sub-CA, {csr_n} runs: {sign:?}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
