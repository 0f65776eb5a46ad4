//! What a flood of idle connections from one address costs a real client: the latency
//! of a health probe (a fresh TCP + mTLS connection and one request, like `curl -m 4`)
//! from 127.0.0.1 while 127.0.0.2 holds more plain TCP connections than the server's
//! connection limit, reopening those the server closes (the probe's `hold.py`),
//! against the same probe without the flood, both measured in this run. A third run
//! turns the per-address limit off (what the server did before it had one) to show
//! what the limit buys. Prints medians, maxima, timeouts and the ratio; asserts nothing.
//!
//! `cargo bench -p kcore-net --bench flood` (add `--profile dev` for a quick run;
//! `KCORE_BENCH_N` sets the number of probes per run, 40 by default).
#![allow(clippy::unwrap_used)] // benchmark code: a failure should stop it loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use kcore_net::{ServeOptions, TlsSource, serve_with};
use kcore_pki::{Authority, Identity, Role, client_config, server_config};

const DAY: Duration = Duration::from_secs(24 * 3600);
/// The server's connection limit in this benchmark, and the flood's size: well above.
const MAX_CONNECTIONS: usize = 64;
const FLOOD: usize = 200;
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

struct Probes {
    median: Duration,
    max: Duration,
    timeouts: usize,
    n: usize,
}

impl std::fmt::Display for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:>8.2?}  max {:>8.2?}  timeouts {}/{}",
            self.median, self.max, self.timeouts, self.n
        )
    }
}

async fn probe(tls: &rustls::ClientConfig, url: &str, n: usize) -> Probes {
    let mut samples = Vec::with_capacity(n);
    let mut timeouts = 0;
    for _ in 0..n {
        let mut tls = tls.clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        // A new client each time: a fresh connection, as an operator's curl would make.
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .pool_max_idle_per_host(0)
            .timeout(PROBE_TIMEOUT)
            .build()
            .unwrap();
        let start = Instant::now();
        match client.get(url).send().await {
            Ok(resp) if resp.status().is_success() => {
                resp.bytes().await.unwrap();
                samples.push(start.elapsed());
            }
            _ => {
                timeouts += 1;
                samples.push(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    samples.sort();
    Probes {
        median: samples[samples.len() / 2],
        max: samples[samples.len() - 1],
        timeouts,
        n,
    }
}

/// Holds `FLOOD` plain TCP connections from 127.0.0.2 until `stop`, reopening closed
/// ones. Returns how many it opened.
fn flood(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let opened = AtomicUsize::new(0); // counted across reopenings
        let mut held: Vec<tokio::net::TcpStream> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            // Drop the sockets the server closed (EOF or reset); WouldBlock is open.
            held.retain(|s| match s.try_read(&mut [0u8; 1]) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            });
            while held.len() < FLOOD {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                match tokio::time::timeout(Duration::from_millis(200), socket.connect(addr)).await {
                    Ok(Ok(s)) => {
                        held.push(s);
                        opened.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        opened.load(Ordering::SeqCst)
    })
}

async fn run(per_peer: usize, with_flood: bool, n: usize) -> (Probes, usize) {
    let root = Authority::new_root("bench", 3650 * DAY).unwrap();
    let sub = root.new_sub_ca("c1", 365 * DAY).unwrap();
    let server_leaf = sub
        .issue(
            &Identity::new("bench", Role::Controller, "c1").unwrap(),
            &["127.0.0.1".to_string()],
            DAY,
        )
        .unwrap();
    let admin = root
        .issue(
            &Identity::new("bench", Role::Admin, "ops").unwrap(),
            &[],
            DAY,
        )
        .unwrap();
    let tls = TlsSource::new(
        server_config(root.cert_pem(), &server_leaf.cert_pem, &server_leaf.key_pem).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/v1/health", get(|| async { "{\"ok\":true}" }));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        max_connections: MAX_CONNECTIONS,
        max_connections_per_peer: per_peer,
        handshake_timeout: Duration::from_secs(10),
        ..ServeOptions::default()
    };
    let server = tokio::spawn(serve_with(
        listener,
        tls,
        app,
        async move {
            let _ = stop_rx.await;
        },
        options,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = with_flood.then(|| flood(addr, stop.clone()));
    if with_flood {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let client_tls = client_config(root.cert_pem(), &admin.cert_pem, &admin.key_pem).unwrap();
    let probes = probe(&client_tls, &format!("https://{addr}/v1/health"), n).await;
    stop.store(true, Ordering::SeqCst);
    let opened = match flooder {
        Some(f) => f.await.unwrap(),
        None => 0,
    };
    let _ = stop_tx.send(());
    let _ = server.await;
    (probes, opened)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("KCORE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let (baseline, _) = run(16, false, n).await;
    let (flooded, opened) = run(16, true, n).await;
    println!(
        "server limit {MAX_CONNECTIONS} connections, 16 per address; flood {FLOOD} idle TCP from 127.0.0.2"
    );
    println!("health probe, no flood:                  {baseline}");
    println!("health probe, flood ({opened:>5} opened):     {flooded}");
    println!(
        "ratio flood/no flood (medians): {:.2}",
        flooded.median.as_secs_f64() / baseline.median.as_secs_f64()
    );
    // For contrast, fewer probes: each may wait the whole probe timeout.
    let (unlimited, opened) = run(usize::MAX, true, n.div_ceil(4)).await;
    println!("per-address limit off, flood ({opened:>5} opened): {unlimited}");
}
