//! What one scrape of `GET /metrics` costs on a controller holding N nodes, against the
//! baseline of `GET /v1/nodes` on the same controller in the same run (both through the
//! real router and its layers, in-process, no TLS: the handler's own cost). Prints
//! medians, the ratio and the size of each answer.
//!
//! `cargo bench -p kcore-controller --bench scrape` (`KCORE_BENCH_NODES`, default 1000;
//! `KCORE_BENCH_N` requests each, default 200; add `--profile dev` for a quick run).
#![allow(clippy::unwrap_used)] // benchmark code: a failure should stop it loudly

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use kcore_api::cluster::{Approval, NodeReport};
use kcore_controller::config::{ControllerConfig, ControllerTls};
use kcore_pki::{Authority, Identity, Role};
use tower::ServiceExt as _;

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median time of `n` GETs of `path` as an admin, and the size of the last answer.
async fn time_get(router: &axum::Router, path: &str, n: usize) -> (Duration, usize) {
    let admin = Identity::new("lab", Role::Admin, "alice").unwrap();
    let mut samples = Vec::with_capacity(n);
    let mut size = 0;
    for _ in 0..n {
        let mut req = Request::get(path).body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(kcore_net::PeerIdentity(Some(admin.clone())));
        let start = Instant::now();
        let resp = router.clone().oneshot(req).await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        samples.push(start.elapsed());
        size = body.len();
    }
    (median(samples), size)
}

#[tokio::main]
async fn main() {
    let nodes = env_or("KCORE_BENCH_NODES", 1000);
    let n = env_or("KCORE_BENCH_N", 200);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let root = Authority::new_root("lab", YEAR * 10).unwrap();
    let sub = root.new_sub_ca("controllers", YEAR * 5).unwrap();
    let ctl = sub
        .issue(
            &Identity::new("lab", Role::Controller, "ctl1").unwrap(),
            &["127.0.0.1".into()],
            YEAR,
        )
        .unwrap();
    let config = ControllerConfig {
        controller_id: "ctl1".into(),
        cluster_name: "lab".into(),
        dc_id: "DC1".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        require_manual_approval: false,
        peers: vec![],
        heartbeat_timeout_seconds: 45,
        database_path: dir.path().join("state.sqlite"),
        connections: Default::default(),
        max_clock_skew_seconds: 60,
        advertise_address: None,
        compaction: Default::default(),
        tls: ControllerTls {
            ca_file: write("ca.crt", root.cert_pem()),
            cert_file: write("controller.crt", &ctl.cert_pem),
            key_file: write("controller.key", &ctl.key_pem),
            sub_ca_cert_file: write("sub-ca.crt", sub.cert_pem()),
            sub_ca_key_file: write("sub-ca.key", sub.key_pem()),
        },
    };
    let state = kcore_controller::build_state(config).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for i in 0..nodes {
        let id = format!("node-{i:05}");
        let report = NodeReport {
            hostname: format!("hv{i}"),
            dc_id: "DC1".into(),
            ..Default::default()
        };
        state
            .store
            .put_node(&id, &report, Approval::Approved, "2026-01-01T00:00:00Z")
            .unwrap();
        state.store.heartbeat(&id, now);
    }
    let router = kcore_controller::api::router(state.clone());
    // Warm both paths once (first-use allocations, lazy statics).
    time_get(&router, "/v1/nodes", 3).await;
    time_get(&router, "/metrics", 3).await;
    let (list, list_size) = time_get(&router, "/v1/nodes", n).await;
    let (scrape, scrape_size) = time_get(&router, "/metrics", n).await;
    println!("controller with {nodes} nodes, {n} requests each, median:");
    println!("  GET /v1/nodes (baseline): {list:?} ({list_size} bytes)");
    println!("  GET /metrics:             {scrape:?} ({scrape_size} bytes)");
    println!(
        "  ratio /metrics : /v1/nodes = {:.2}",
        scrape.as_secs_f64() / list.as_secs_f64()
    );
}
