//! The rollout engine's overhead (issue 12 "Benchmark"): a real controller process and
//! its nodes on 127.0.0.1, timed from the controller's own step records. Two modes:
//!
//! - `stand-ins`: 50 stand-in nodes in this process (the stand-ins of
//!   `tests/it/rollouts/mod.rs`: real mutual TLS, registration, heartbeats, the assignment long
//!   poll and every step report; the activation itself is a 1 s sleep).
//! - `agents`: real agent processes on fake roots, prepare by `nix build`, a 1 s
//!   activation through the agent's own assignment loop ([`agents`]; 50 by default,
//!   `KCORE_BENCH_AGENTS=N` for another count).
//!
//! ```text
//! cd rust && cargo build -p kcore-agent --bin kcore-agent --example fleet_agent
//! cargo bench -p kcore-controller --bench rollout --profile dev              # both modes
//! cargo bench -p kcore-controller --bench rollout --profile dev -- stand-ins
//! cargo bench -p kcore-controller --bench rollout --profile dev -- agents
//! ```
//!
//! Each mode runs `batch` (every node, batchSize 10, maxUnavailable 10) against the ideal
//! ⌈N/B⌉·T, and `one-at-a-time` over the first 10 nodes against 10·T. Overhead is the
//! span from the rollout entering `rolling_out` to the last step's end, less the ideal. The
//! controller's CPU time (utime + stime from /proc/PID/stat) and its resident memory
//! (VmRSS, VmHWM from /proc/PID/status) are read around each run. Results: docs/rollouts.md.

#![allow(clippy::unwrap_used, dead_code, unused_imports)]

/// Mode `agents`: real agent processes.
#[path = "rollout/agents.rs"]
mod agents;
#[path = "../tests/it/rollouts/mod.rs"]
mod rollouts;
#[path = "../tests/it/support.rs"]
mod support;

use std::collections::BTreeMap;
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

/// The whole machine's busy time (every CPU, `/proc/stat`'s first line less idle and
/// iowait), in clock ticks: with it the bench tells a starved machine from a slow engine.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    cpu.iter().sum::<u64>() - cpu[3] - cpu[4]
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
    // The engine's own time of entering `rolling_out`: where the span starts.
    let rolling_out = cu["status"]["history"]
        .as_array()
        .and_then(|h| h.iter().find(|c| c["phase"] == "rolling_out"))
        .map(|c| c["at"].clone())
        .unwrap_or(Value::Null);
    json!({"what": what, "name": name, "wall": started.elapsed().as_secs_f64(), "ideal": ideal.as_secs_f64(), "rollingOut": rolling_out})
}

fn measure(recs: &[StepRecord], name: &str, run: &Value, cpu_seconds: f64) -> Run {
    let assigned: Vec<&StepRecord> = recs
        .iter()
        .filter(|r| r.what == records::ASSIGNED)
        .collect();
    let ends: Vec<&StepRecord> = recs
        .iter()
        .filter(|r| matches!(r.what.as_str(), "succeeded" | "failed" | "reverted"))
        .collect();
    // From the rollout entering `rolling_out` (before its first assignment), so the first
    // wave's prepare and the engine's first tick count.
    let first = run["rollingOut"]
        .as_str()
        .map(|t| OffsetDateTime::parse(t, &Rfc3339).unwrap())
        .unwrap_or_else(|| assigned.iter().map(|r| at(r)).min().unwrap());
    let last = ends.iter().map(|r| at(r)).max().unwrap();
    // A node's first report after its assignment (`preparing`, or `activating` for a node
    // that prepared ahead, whose `preparing` and `prepared` came before).
    let first_report_after = |a: &StepRecord| {
        recs.iter()
            .filter(|r| r.node == a.node && r.what != records::ASSIGNED)
            .filter(|r| r.what != records::PREPARE_AHEAD && at(r) >= at(a))
            .map(at)
            .min()
    };
    // Step latency: the assignment's write to that report, which includes the long poll
    // waking, the answer, and the report's round trip.
    let mut latencies = Vec::new();
    for a in &assigned {
        latencies.push(first_report_after(a).unwrap() - at(a));
    }
    // Preparing ahead: how many nodes did, and how long before their assignment their
    // prepare was over.
    let ahead: Vec<time::Duration> = assigned
        .iter()
        .filter(|a| {
            recs.iter()
                .any(|r| r.node == a.node && r.what == records::PREPARE_AHEAD)
        })
        .filter_map(|a| {
            let prepared = recs
                .iter()
                .find(|r| r.node == a.node && r.what == "prepared")?;
            Some(at(a) - at(prepared))
        })
        .collect();
    if !ahead.is_empty() {
        eprintln!(
            "{name}: {} of {} nodes prepared ahead, `prepared` a mean {:.0} ms before their assignment",
            ahead.len(),
            assigned.len(),
            ahead.iter().map(|d| d.as_seconds_f64()).sum::<f64>() / ahead.len() as f64 * 1000.0
        );
    }
    // Where a step's time goes, averaged over the nodes: assigned -> preparing ->
    // activating -> end, and from a step's end to the next assignment (the engine's turn).
    let when = |node: &str, what: &str| records::timeline::first(recs, node, what).map(at);
    let mut gaps = [0f64; 3];
    for a in &assigned {
        let p = first_report_after(a);
        let act = when(&a.node, "activating");
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
    // What each node's step recorded, in order.
    let mut sequences: BTreeMap<Vec<&str>, usize> = BTreeMap::new();
    for a in &assigned {
        let mut mine: Vec<&StepRecord> = recs.iter().filter(|r| r.node == a.node).collect();
        mine.sort_by_key(|r| at(r));
        *sequences
            .entry(mine.iter().map(|r| r.what.as_str()).collect())
            .or_default() += 1;
    }
    eprintln!("{name}: records per step (how many nodes): {sequences:?}");
    eprintln!(
        "{name}: mean assigned->first report after it {:.1} ms, that report->activating {:.1} ms, activating->end {:.1} ms; step end -> next assignment mean {:.1} ms over {} hand-overs",
        gaps[0] / n * 1000.0,
        gaps[1] / n * 1000.0,
        gaps[2] / n * 1000.0,
        turn.iter().sum::<f64>() / (turn.len().max(1) as f64) * 1000.0,
        turn.len()
    );
    let to_std = |d: time::Duration| Duration::from_secs_f64(d.as_seconds_f64().max(0.0));
    let total: f64 = latencies.iter().map(|d| d.as_seconds_f64()).sum();
    Run {
        what: format!("{} ({name})", run["what"].as_str().unwrap()),
        ideal: Duration::from_secs_f64(run["ideal"].as_f64().unwrap()),
        span: to_std(last - first),
        wall: Duration::from_secs_f64(run["wall"].as_f64().unwrap()),
        step_latency_max: to_std(latencies.iter().copied().max().unwrap()),
        step_latency_mean: Duration::from_secs_f64(total / latencies.len() as f64),
        most_unavailable: records::timeline::max_unavailable(recs),
        cpu_seconds,
    }
}

/// The controller's CPU and memory around the runs, and the runs' figures, as table rows.
pub struct Readings {
    pid: u32,
    tck: f64,
    rss_idle: f64,
    cpu: u64,
    rss_after: Vec<f64>,
    cpus: Vec<f64>,
    machine: u64,
    /// Seconds of the whole machine's CPU each run used (all processes: controller,
    /// nodes, their builds and stand-ins).
    machine_busy: Vec<f64>,
}

impl Readings {
    fn start(pid: u32) -> Readings {
        Readings {
            pid,
            tck: clock_ticks_per_second() as f64,
            rss_idle: memory_mib(pid).0,
            cpu: cpu_ticks(pid),
            rss_after: Vec::new(),
            cpus: Vec::new(),
            machine: machine_busy_ticks(),
            machine_busy: Vec::new(),
        }
    }

    /// After a run: its CPU seconds since the previous reading, and the RSS now.
    fn lap(&mut self) {
        let now = cpu_ticks(self.pid);
        self.cpus.push((now - self.cpu) as f64 / self.tck);
        self.cpu = now;
        self.rss_after.push(memory_mib(self.pid).0);
        let machine = machine_busy_ticks();
        self.machine_busy
            .push((machine - self.machine) as f64 / self.tck);
        self.machine = machine;
    }

    fn peak(&self) -> f64 {
        memory_mib(self.pid).1
    }
}

fn print_runs(title: &str, runs: &[Run], r: &Readings, peak: f64) {
    println!("\n{title}");
    println!(
        "| run | ideal | rolling_out to last end | overhead | ratio to ideal | wall (apply to seen done) | step latency mean / max | most unavailable | controller CPU | machine CPU (all cores) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let machine_busy = r.machine_busy.clone();
    for (i, r) in runs.iter().enumerate() {
        let machine = machine_busy.get(i).copied().unwrap_or(0.0);
        println!(
            "| {} | {:.2} s | {:.3} s | {:.3} s | {:.3} | {:.3} s | {:.1} / {:.1} ms | {} | {:.2} s ({:.0} %) | {:.2} s ({:.0} % of {cores} cores) |",
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
            machine,
            100.0 * machine / (cores * r.wall.as_secs_f64()),
        );
    }
    // The figures mean little on a starved machine; they carry the load they ran under.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "load average after the runs (1/5/15 min): {} on {cores} cores",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let after: Vec<String> = r.rss_after.iter().map(|m| format!("{m:.1}")).collect();
    println!(
        "controller RSS: {:.1} MiB with every node idle, {} MiB after each run; peak (VmHWM) {peak:.1} MiB",
        r.rss_idle,
        after.join(" / ")
    );
}

/// The batch rollout over all nodes and the one-at-a-time one over the first ten, as
/// both modes run them; `target` sets each manifest's `spec.target`.
fn manifests(nodes: &[String], target: impl Fn(&str) -> Value) -> [(Value, Duration); 2] {
    let n = nodes.len();
    let batch = 10.min(n);
    let mut first = rollouts::rollout(
        "bench-batch",
        json!({"strategyType": "batch", "batchSize": batch, "maxUnavailable": batch}),
        "auto",
        0,
    );
    first["spec"]["target"] = target("bench-batch");
    let mut serial = rollouts::rollout(
        "bench-serial",
        json!({"strategyType": "one-at-a-time"}),
        "auto",
        0,
    );
    serial["spec"]["selector"] = json!({"nodeIds": nodes[..10.min(n)]});
    serial["spec"]["target"] = target("bench-serial");
    [
        (first, T * n.div_ceil(batch) as u32),
        (serial, T * 10.min(n) as u32),
    ]
}

/// Mode `stand-ins`: 50 stand-in nodes in this process.
async fn stand_ins() {
    let nodes: Vec<String> = (1..=50).map(|i| format!("n{i:02}")).collect();
    let bed = rollouts::ProcBed::with(&["ctl1"], &nodes, T).await;
    let mut readings = Readings::start(bed.pid(0).unwrap());
    let [(batch, ideal1), (serial, ideal2)] = manifests(&nodes, |_| {
        rollouts::rollout("x", json!({}), "auto", 0)["spec"]["target"].clone()
    });
    let r1 = run(&bed, "batch 50/10", batch, ideal1).await;
    readings.lap();
    let r2 = run(&bed, "one-at-a-time 10", serial, ideal2).await;
    readings.lap();
    let peak = readings.peak();
    let (store, log) = bed.stop(0);
    // n01..n10 were in both rollouts, the rest in the batch one only.
    let once_per_rollout = nodes
        .iter()
        .enumerate()
        .all(|(i, n)| log.get(n) == Some(&if i < 10 { 2 } else { 1 }));
    assert!(
        once_per_rollout,
        "a node activated twice in a rollout: {log:?}"
    );
    let runs = [
        measure(
            &records::records(&store, "bench-batch"),
            "bench-batch",
            &r1,
            readings.cpus[0],
        ),
        measure(
            &records::records(&store, "bench-serial"),
            "bench-serial",
            &r2,
            readings.cpus[1],
        ),
    ];
    print_runs(
        "stand-ins: 50 stand-in nodes in the bench process",
        &runs,
        &readings,
        peak,
    );
}

fn main() {
    // `cargo bench` adds `--bench`; the rest picks the modes (default: both).
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let wants = |mode: &str| args.is_empty() || args.iter().any(|a| a == mode);
    if let Some(bad) = args
        .iter()
        .find(|a| !matches!(a.as_str(), "stand-ins" | "agents"))
    {
        eprintln!("unknown mode {bad:?}: use `-- stand-ins`, `-- agents`, or nothing for both");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if wants("stand-ins") {
            stand_ins().await;
        }
        if wants("agents") {
            let count = std::env::var("KCORE_BENCH_AGENTS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(50);
            agents::run_agents(count).await;
        }
    });
}
