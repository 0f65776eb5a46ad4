//! Benchmark: three controllers on 127.0.0.1, each pulling from the other two through a
//! fault-injecting proxy (the integration tests' `FaultProxy`), real mutual TLS.
//!
//! 1. Baseline: one write, and the time until the three merged tables are identical.
//! 2. WRITES operations (default 10,000: applies of 50 labels each, round-robin over the
//!    three controllers, three writers at once), and the time from the last acknowledged
//!    write until the three merged tables are identical.
//! 3. Partition `{a} | {b, c}`, WRITES more operations on both sides, keep it 10 s (the
//!    backoff of unreachable peers reaches its bound), heal, and the time from the heal
//!    until the tables are identical.
//! 4. The `ops` row count of each controller before and after one compaction pass.
//!
//! "Identical" is every `fields` row (resource, field, HLC, origin, value) except the
//! controllers' `status.lastSeen` refreshes, compared every 10 ms.
//!
//! ```sh
//! cargo run --release -p kcore-controller --example bench_replication -- [WRITES]
//! ```

// The integration tests' helpers, shared rather than copied; this example uses a few.
#[allow(dead_code, unused_imports, clippy::unwrap_used)]
#[path = "../tests/it/support.rs"]
mod support;

#[allow(dead_code, clippy::unwrap_used)]
#[path = "../tests/it/proxy.rs"]
mod proxy;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kcore_controller::api::AppState;
use kcore_controller::store::Op;
use proxy::FaultProxy;
use serde_json::{Value, json};
use support::{Client, Cluster, Running, client};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const LABELS: usize = 50;
const CONVERGE_LIMIT: Duration = Duration::from_secs(120);
const PARTITION_HOLD: Duration = Duration::from_secs(10);

fn main() -> Result<(), BoxError> {
    let writes: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(writes))
}

/// The merged table without `lastSeen` refreshes.
fn table(state: &AppState) -> Result<Vec<Op>, BoxError> {
    Ok(state
        .store
        .snapshot()?
        .fields
        .into_iter()
        .filter(|op| op.field != "status.lastSeen")
        .collect())
}

/// Waits until the three tables are identical; the time it took from `since`.
async fn converged(states: &[Arc<AppState>], since: Instant) -> Result<Duration, BoxError> {
    loop {
        let a = table(&states[0])?;
        if a == table(&states[1])? && a == table(&states[2])? {
            return Ok(since.elapsed());
        }
        if since.elapsed() > CONVERGE_LIMIT {
            return Err(format!("no convergence within {CONVERGE_LIMIT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn apply(name: &str, round: usize) -> Value {
    let labels: serde_json::Map<String, Value> = (0..LABELS)
        .map(|i| (format!("l{i}"), json!(format!("r{round}"))))
        .collect();
    json!({
        "kind": "ClusterUpdate",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "target": {"flake_ref": "github:kcorehypervisor/kcore",
                       "flake_rev": "0123456789abcdef0123456789abcdef01234567"},
            "selector": {"all_nodes": true},
            "strategy": {"strategy_type": "batch", "batch_size": 2, "max_unavailable": 2},
        },
    })
}

/// `operations` writes spread over `writers` (one task each, object `name-<writer>`),
/// each apply changing all labels; returns when the last is acknowledged.
async fn write(
    writers: &[(Client, String)],
    operations: usize,
    first_round: usize,
) -> Result<Instant, BoxError> {
    let applies = operations.div_ceil(LABELS);
    let per_writer = applies.div_ceil(writers.len());
    let tasks = writers.iter().map(|(admin, name)| {
        let admin = admin.clone();
        let name = name.clone();
        async move {
            for round in first_round..first_round + per_writer {
                admin
                    .put_json::<_, Value>(
                        &format!("/v1/clusterupdates/{name}"),
                        &apply(&name, round),
                    )
                    .await?;
            }
            Ok::<_, kcore_net::ClientError>(())
        }
    });
    for result in futures::future::join_all(tasks).await {
        result?;
    }
    Ok(Instant::now())
}

async fn run(writes: usize) -> Result<(), BoxError> {
    let cl = Cluster::new();
    let ids = ["ctl-a", "ctl-b", "ctl-c"];
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    }
    let real: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    // links[x][y]: x pulls from y through it.
    let mut links: Vec<Vec<Option<FaultProxy>>> = Vec::new();
    for x in 0..3 {
        let mut row = Vec::new();
        for (y, upstream) in real.iter().enumerate() {
            row.push(if x == y {
                None
            } else {
                Some(FaultProxy::start(upstream).await)
            });
        }
        links.push(row);
    }
    let trust = cl.root.cert_pem().to_string();
    let mut running = Vec::new();
    let mut states = Vec::new();
    let mut admins = Vec::new();
    for (x, listener) in listeners.into_iter().enumerate() {
        let seeds: Vec<String> = links[x].iter().flatten().map(|p| p.addr.clone()).collect();
        let config = cl.peer_config(ids[x], false, seeds);
        let (r, state) = Running::start_on_keeping_state(listener, config);
        admins.push(client(&r.url, &trust, &cl.admin()));
        running.push(r);
        states.push(state);
    }
    // Every controller pulling from both seeds, healthy.
    let started = Instant::now();
    loop {
        let mut ready = true;
        for admin in &admins {
            let peers: Value = admin.get_json("/v1/replication/peers").await?;
            let healthy = peers["peers"]
                .as_array()
                .is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["state"] == "Healthy"));
            ready &= healthy;
        }
        if ready {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the three controllers never became healthy".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    converged(&states, Instant::now()).await?;

    let writers: Vec<(Client, String)> = admins
        .iter()
        .enumerate()
        .map(|(x, a)| (a.clone(), format!("bench-{}", ids[x])))
        .collect();

    // 1. Baseline: one write.
    let acked = write(&writers[..1], 1, 0).await?;
    let baseline = converged(&states, acked).await?;

    // 2. WRITES operations on all three.
    let began = Instant::now();
    let last = write(&writers, writes, 1).await?;
    let writing = last - began;
    let after_last = converged(&states, last).await?;

    // 3. Partition {a} | {b, c}, writes on both sides, heal.
    for y in [1, 2] {
        if let (Some(ab), Some(ba)) = (&links[0][y], &links[y][0]) {
            ab.partition();
            ba.partition();
        }
    }
    let rounds = writes.div_ceil(LABELS).div_ceil(3) + 1;
    write(&writers, writes, rounds + 1).await?;
    // Held long enough for the unreachable peers' backoff to reach its bound, so the heal
    // figure is the worst case, not a lucky short partition.
    tokio::time::sleep(PARTITION_HOLD).await;
    let healed = Instant::now();
    for proxy in links.iter().flatten().flatten() {
        proxy.heal();
    }
    let after_heal = converged(&states, healed).await?;

    // 4. Compaction: let every controller learn what the others hold (two pull ticks),
    // then one pass each.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut before = Vec::new();
    let mut after = Vec::new();
    for state in &states {
        before.push(state.store.operation_count()?);
        kcore_controller::replication::compact(state);
        after.push(state.store.operation_count()?);
    }

    println!("three controllers on 127.0.0.1, full mesh through proxies, long-polled pulls");
    println!(
        "baseline: one write converged in {:.3} s",
        baseline.as_secs_f64()
    );
    println!(
        "{writes} operations written in {:.2} s ({:.0}/s); converged {:.3} s after the last write (x{:.2} the baseline)",
        writing.as_secs_f64(),
        writes as f64 / writing.as_secs_f64(),
        after_last.as_secs_f64(),
        after_last.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "partition {{a}} | {{b, c}} held {} s with {writes} more operations: converged {:.3} s after healing (x{:.2} the baseline)",
        PARTITION_HOLD.as_secs(),
        after_heal.as_secs_f64(),
        after_heal.as_secs_f64() / baseline.as_secs_f64()
    );
    for (x, id) in ids.iter().enumerate() {
        println!(
            "{id}: ops table {} rows before compaction, {} after",
            before[x], after[x]
        );
    }
    for r in running {
        r.stop().await;
    }
    drop(links);
    Ok(())
}
