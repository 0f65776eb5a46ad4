//! The rollout engine's overhead (issue 12 "Benchmark"): a real controller process and 50
//! stand-in nodes on 127.0.0.1 (the stand-ins of `tests/it/rollouts.rs`: real mutual TLS,
//! registration, heartbeats, the assignment long poll and every step report; the
//! activation itself is a 1 s sleep), timed from the controller's own step records.
//!
//! ```text
//! cd rust && cargo bench -p kcore-controller --bench rollout
//! # with the debug build cache instead of a release build (how docs/rollouts.md measured):
//! cd rust && cargo bench -p kcore-controller --bench rollout --profile dev
//! ```
//!
//! Two runs: `batch` (50 nodes, batchSize 10, maxUnavailable 10) against the ideal
//! ⌈N/B⌉·T = 5 s, and `one-at-a-time` over 10 of the nodes against 10·T = 10 s. Overhead
//! is the span from the first assignment to the last step's end, less the ideal. The
//! controller's CPU time (utime + stime from /proc/PID/stat) and its resident memory
//! (VmRSS, VmHWM from /proc/PID/status) are read around each run. Results: docs/rollouts.md.

#![allow(clippy::unwrap_used, dead_code, unused_imports)]

#[path = "../tests/it/rollouts.rs"]
mod rollouts;
#[path = "../tests/it/support.rs"]
mod support;

use std::time::{Duration, Instant};

use kcore_controller::rollout::records::{self, StepRecord};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const T: Duration = Duration::from_secs(1);

fn at(r: &StepRecord) -> OffsetDateTime {
    OffsetDateTime::parse(&r.at, &Rfc3339).unwrap()
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ')'.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// `VmRSS` and `VmHWM` of `pid`, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

struct Run {
    what: String,
    ideal: Duration,
    span: Duration,
    wall: Duration,
    step_latency_max: Duration,
    step_latency_mean: Duration,
    most_unavailable: usize,
    cpu_seconds: f64,
}

/// Applies `body`, waits for it to end, and measures it on controller 0.
async fn run(bed: &rollouts::ProcBed, what: &str, body: Value, ideal: Duration) -> Value {
    let name = body["metadata"]["name"].as_str().unwrap().to_string();
    let started = Instant::now();
    let _: Value = bed.admins[0]
        .put_json(&format!("/v1/clusterupdates/{name}"), &body)
        .await
        .unwrap();
    let cu = bed
        .wait_phase(0, &name, &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{what}: {cu:#}");
    json!({"what": what, "name": name, "wall": started.elapsed().as_secs_f64(), "ideal": ideal.as_secs_f64()})
}

fn measure(recs: &[StepRecord], name: &str, run: &Value, cpu_seconds: f64) -> Run {
    let recs: Vec<&StepRecord> = recs.iter().collect();
    let assigned: Vec<&&StepRecord> = recs
        .iter()
        .filter(|r| r.what == records::ASSIGNED)
        .collect();
    let ends: Vec<&&StepRecord> = recs
        .iter()
        .filter(|r| matches!(r.what.as_str(), "succeeded" | "failed" | "reverted"))
        .collect();
    let first = assigned.iter().map(|r| at(r)).min().unwrap();
    let last = ends.iter().map(|r| at(r)).max().unwrap();
    // Step latency: the assignment's write to the node's first report (`preparing`), which
    // includes the long poll waking, the answer, and the report's round trip.
    let mut latencies = Vec::new();
    for a in &assigned {
        let first_report = recs
            .iter()
            .filter(|r| r.node == a.node && r.what == "preparing")
            .map(|r| at(r))
            .min()
            .unwrap();
        latencies.push(first_report - at(a));
    }
    // Where a step's time goes, averaged over the nodes: assigned -> preparing ->
    // activating -> end, and from a step's end to the next assignment (the engine's turn).
    let when = |node: &str, what: &str| {
        recs.iter()
            .filter(|r| r.node == node && r.what == what)
            .map(|r| at(r))
            .min()
    };
    let mut gaps = [0f64; 3];
    for a in &assigned {
        let (p, act) = (when(&a.node, "preparing"), when(&a.node, "activating"));
        let end = when(&a.node, "succeeded");
        if let (Some(p), Some(act), Some(end)) = (p, act, end) {
            gaps[0] += (p - at(a)).as_seconds_f64();
            gaps[1] += (act - p).as_seconds_f64();
            gaps[2] += (end - act).as_seconds_f64();
        }
    }
    let mut turn = Vec::new();
    for a in &assigned {
        let t = at(a);
        if let Some(prev_end) = ends.iter().map(|r| at(r)).filter(|e| *e <= t).max() {
            turn.push((t - prev_end).as_seconds_f64());
        }
    }
    let n = assigned.len() as f64;
    eprintln!(
        "{name}: mean assigned->preparing {:.1} ms, preparing->activating {:.1} ms, activating->end {:.1} ms; step end -> next assignment mean {:.1} ms over {} hand-overs",
        gaps[0] / n * 1000.0,
        gaps[1] / n * 1000.0,
        gaps[2] / n * 1000.0,
        turn.iter().sum::<f64>() / (turn.len().max(1) as f64) * 1000.0,
        turn.len()
    );
    let to_std = |d: time::Duration| Duration::from_secs_f64(d.as_seconds_f64().max(0.0));
    let total: f64 = latencies.iter().map(|d| d.as_seconds_f64()).sum();
    let owned: Vec<StepRecord> = recs.iter().map(|r| (*r).clone()).collect();
    Run {
        what: format!("{} ({name})", run["what"].as_str().unwrap()),
        ideal: Duration::from_secs_f64(run["ideal"].as_f64().unwrap()),
        span: to_std(last - first),
        wall: Duration::from_secs_f64(run["wall"].as_f64().unwrap()),
        step_latency_max: to_std(latencies.iter().copied().max().unwrap()),
        step_latency_mean: Duration::from_secs_f64(total / latencies.len() as f64),
        most_unavailable: records::timeline::max_unavailable(&owned),
        cpu_seconds,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let nodes: Vec<String> = (1..=50).map(|i| format!("n{i:02}")).collect();
        let bed = rollouts::ProcBed::with(&["ctl1"], &nodes, T).await;
        let pid = bed.pid(0).unwrap();
        let tck = clock_ticks_per_second() as f64;
        let (rss_idle, _) = memory_mib(pid);

        let batch = rollouts::rollout(
            "bench-batch",
            json!({"strategyType": "batch", "batchSize": 10, "maxUnavailable": 10}),
            "auto",
            0,
        );
        let cpu0 = cpu_ticks(pid);
        let r1 = run(&bed, "batch 50/10", batch, T * 5).await;
        let cpu1 = cpu_ticks(pid);
        let (rss1, _) = memory_mib(pid);

        let mut serial = rollouts::rollout(
            "bench-serial",
            json!({"strategyType": "one-at-a-time"}),
            "auto",
            0,
        );
        serial["spec"]["selector"] = json!({"nodeIds": nodes[..10]});
        let r2 = run(&bed, "one-at-a-time 10", serial, T * 10).await;
        let cpu2 = cpu_ticks(pid);
        let (rss2, hwm) = memory_mib(pid);

        let cpu = [(cpu1 - cpu0) as f64 / tck, (cpu2 - cpu1) as f64 / tck];
        let (store, log) = bed.stop(0);
        // n01..n10 were in both rollouts, the rest in the batch one only.
        let once_per_rollout = nodes
            .iter()
            .enumerate()
            .all(|(i, n)| log.get(n) == Some(&if i < 10 { 2 } else { 1 }));
        assert!(once_per_rollout, "a node activated twice in a rollout: {log:?}");
        let runs = [
            measure(&records::records(&store, "bench-batch"), "bench-batch", &r1, cpu[0]),
            measure(&records::records(&store, "bench-serial"), "bench-serial", &r2, cpu[1]),
        ];
        println!("| run | ideal | first assignment to last end | overhead | ratio to ideal | wall (apply to seen done) | step latency mean / max | most unavailable | controller CPU |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for r in &runs {
            println!(
                "| {} | {:.2} s | {:.3} s | {:.3} s | {:.3} | {:.3} s | {:.1} / {:.1} ms | {} | {:.2} s ({:.0} %) |",
                r.what,
                r.ideal.as_secs_f64(),
                r.span.as_secs_f64(),
                r.span.as_secs_f64() - r.ideal.as_secs_f64(),
                r.span.as_secs_f64() / r.ideal.as_secs_f64(),
                r.wall.as_secs_f64(),
                r.step_latency_mean.as_secs_f64() * 1000.0,
                r.step_latency_max.as_secs_f64() * 1000.0,
                r.most_unavailable,
                r.cpu_seconds,
                100.0 * r.cpu_seconds / r.wall.as_secs_f64(),
            );
        }
        // The figures mean little on a starved machine; they carry the load they ran under.
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!(
            "load average during the runs (1/5/15 min): {} on {cores} cores",
            load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
        println!(
            "controller RSS: {rss_idle:.1} MiB with 50 nodes idle, {rss1:.1} MiB after the batch run, {rss2:.1} MiB after the serial run; peak (VmHWM) {hwm:.1} MiB"
        );
    });
}
