//! What VMs cost the controller (issue 17), in-process on a real store (SQLite in a temp
//! dir): `cargo run --release -p kcore-controller --example bench_vms -- NODES VMS`.
//!
//! 1. Placement: NODES Ready nodes (zfs, one DC, equal free space) and VMS VMs applied;
//!    the time of the scheduler passes that place them all.
//! 2. One node's assignment answer (`assignment::for_node`, what every long-poll computes
//!    after every store change) with VMS VMs in the cluster, against the same answer in a
//!    cluster without VMs, measured in the same run (the ratio is the figure).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kcore_api::cluster::{Approval, NodeReport, PoolReport, StorageBackend, StorageReport};
use kcore_api::resource::Kind;
use kcore_controller::config::{ControllerConfig, ControllerTls};
use kcore_pki::{Authority, Identity, Role};
use serde_json::json;

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn state(dir: &std::path::Path) -> std::sync::Arc<kcore_controller::api::AppState> {
    let root = Authority::new_root("bench", YEAR).unwrap();
    let sub = root.new_sub_ca("controllers", YEAR).unwrap();
    let ctl = sub
        .issue(
            &Identity::new("bench", Role::Controller, "ctl1").unwrap(),
            &["127.0.0.1".into()],
            YEAR,
        )
        .unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let config = ControllerConfig {
        controller_id: "ctl1".into(),
        cluster_name: "bench".into(),
        dc_id: "DC1".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        require_manual_approval: false,
        peers: vec![],
        heartbeat_timeout_seconds: 3600,
        database_path: dir.join("state.sqlite"),
        connections: Default::default(),
        max_clock_skew_seconds: 60,
        advertise_address: None,
        compaction: Default::default(),
        tls: ControllerTls {
            ca_file: write("ca.crt", root.cert_pem()),
            cert_file: write("c.crt", &ctl.cert_pem),
            key_file: write("c.key", &ctl.key_pem),
            sub_ca_cert_file: write("s.crt", sub.cert_pem()),
            sub_ca_key_file: write("s.key", sub.key_pem()),
        },
    };
    kcore_controller::build_state(config).unwrap()
}

fn add_nodes(state: &kcore_controller::api::AppState, nodes: usize) {
    let now = kcore_controller::api::now_unix();
    for i in 0..nodes {
        let id = format!("n{i:05}");
        let report = NodeReport {
            hostname: id.clone(),
            dc_id: "DC1".into(),
            storage: StorageReport {
                backend: Some(StorageBackend::Zfs),
                pool: Some(PoolReport {
                    name: "tank0".into(),
                    free_bytes: Some(1 << 50),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        state
            .store
            .put_node(&id, &report, Approval::Approved, "2026-01-01T00:00:00Z")
            .unwrap();
        state.store.heartbeat(&id, now);
    }
}

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort();
    t[runs / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("NODES VMS"))
        .collect();
    let (nodes, vms) = (
        args.first().copied().unwrap_or(200),
        args.get(1).copied().unwrap_or(1000),
    );

    let base_dir = tempfile::tempdir().unwrap();
    let baseline = state(base_dir.path());
    add_nodes(&baseline, nodes);

    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path());
    add_nodes(&s, nodes);
    for i in 0..vms {
        let vm = json!({"kind": "VM", "metadata": {"name": format!("vm-{i:05}")},
                        "spec": {"storageBackend": "zfs", "storageSizeBytes": 1u64 << 30,
                                 "cpus": 1, "memoryBytes": 1u64 << 30, "network": "default"}});
        s.store.apply(Kind::Vm, &vm, false).unwrap();
    }
    let start = Instant::now();
    kcore_controller::vm::scheduler::tick(&s).unwrap();
    let place = start.elapsed();
    let placed = kcore_controller::vm::all(&s.store)
        .iter()
        .filter(|v| v.status.node.is_some())
        .count();
    let idle_tick = median(5, || kcore_controller::vm::scheduler::tick(&s).unwrap());

    let runs = 21;
    // `for_node` is async (it waits on the steps' shared cache); a store unchanged between
    // calls reuses the cached steps, so what is timed here is the per-node VM part.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let for_node = |state, node| rt.block_on(kcore_controller::assignment::for_node(state, node));
    let base = median(runs, || {
        std::hint::black_box(for_node(&baseline, "n00000"));
    });
    let with = median(runs, || {
        std::hint::black_box(for_node(&s, "n00000"));
    });
    let told = for_node(&s, "n00000").vms.len();
    println!("nodes {nodes}, VMs {vms}: placed {placed} in one pass of {place:?}");
    println!("scheduler pass with every VM placed: {idle_tick:?} (median of 5)");
    println!(
        "assignment of one node ({told} VMs on it): {with:?} vs {base:?} without VMs (medians of {runs}), x{:.1}",
        with.as_secs_f64() / base.as_secs_f64().max(1e-9)
    );
}
