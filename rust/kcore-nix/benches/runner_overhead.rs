//! What the runner costs over a bare `tokio::process::Command` (process group, drop guard,
//! line-splitting readers, group kill after exit), measured against that baseline in the same
//! run: `cargo bench -p kcore-nix --bench runner_overhead`. Prints per-call times and the ratio.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kcore_nix::{Invocation, Program};

const ROUNDS: usize = 5;
const CALLS: usize = 100;

async fn baseline(path: &std::path::Path) -> Duration {
    let start = Instant::now();
    for _ in 0..CALLS {
        let out = tokio::process::Command::new(path)
            .arg("x")
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
    }
    start.elapsed() / CALLS as u32
}

async fn runner(program: &Program) -> Duration {
    let start = Instant::now();
    for _ in 0..CALLS {
        let out = Invocation::new(program)
            .arg("x")
            .timeout(Duration::from_secs(30))
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
    }
    start.elapsed() / CALLS as u32
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let program = Program::resolve("true", None, "KCORE_BENCH_TRUE").unwrap();
    rt.block_on(async {
        // Interleave rounds so drift on a shared machine hits both sides alike; keep the
        // fastest round of each (the least disturbed).
        let mut best_base = Duration::MAX;
        let mut best_runner = Duration::MAX;
        for _ in 0..ROUNDS {
            best_base = best_base.min(baseline(program.path()).await);
            best_runner = best_runner.min(runner(&program).await);
        }
        println!(
            "spawn+wait `true x`: tokio::process::Command {best_base:?}/call, kcore-nix runner \
             {best_runner:?}/call, ratio {:.2} (best of {ROUNDS} rounds x {CALLS} calls)",
            best_runner.as_secs_f64() / best_base.as_secs_f64()
        );
    });
}
