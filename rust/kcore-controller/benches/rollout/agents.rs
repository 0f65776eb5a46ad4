//! Mode `agents`: the same two rollouts as the stand-ins mode, through real agent
//! processes. Each node is kcore-agent's `fleet_agent` example (the real agent library,
//! `RuntimeOptions::system_root` on a fake root of its own, as `scripts/demo-rollout.sh`
//! runs it) with its own node certificate, installed from the fleet flake of the rollout
//! tests (`tests/support/fleet`, a local git repository pinned by rev) at revision r1.
//! Its step is the agent's real assignment loop: prepare is a real `nix build` of the
//! node's toplevel at the rollout's revision, activation the fleet's stand-in
//! `switch-to-configuration` (1 s, `"seconds": 1` in every host file) in a transient unit
//! (the `systemd-run` stand-in), then the health gate.
//!
//! Needs nix and git (else it prints SKIP), and the two binaries built first with the
//! bench's profile: `cargo build -p kcore-agent --bin kcore-agent --example fleet_agent`
//! (add `--release` for a release bench). `KCORE_BENCH_AGENTS` sets the node count
//! (default 50); `KCORE_BENCH_KEEP=1` keeps every node's directory (its `agent.log`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use kcore_api::cluster::{NodeList, NodeStatus};
use serde_json::{Value, json};

use super::{Readings, manifests, measure, print_runs, rollouts, run};
use kcore_controller::rollout::records;

#[path = "../../../../tests/support/fleet/fleet_repo.rs"]
mod fleet_repo;
use fleet_repo::{Fleet, fleet_dir};

/// An agent process, SIGKILLed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kcore-agent` and `examples/fleet_agent` next to this bench's profile directory.
fn binaries() -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/rollout-<hash>
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let (agent, fleet_agent) = (dir.join("kcore-agent"), dir.join("examples/fleet_agent"));
    assert!(
        agent.is_file() && fleet_agent.is_file(),
        "{} or {} is missing: build them first with `cargo build -p kcore-agent --bin kcore-agent --example fleet_agent` (with --release for a release bench)",
        agent.display(),
        fleet_agent.display()
    );
    (agent, fleet_agent)
}

/// Every host's file at one revision: activation ok and 1 s long, healthy, same kernel
/// (so `auto` is a switch, no reboot).
fn revision(fleet: &Fleet, nodes: &[String], label: &str) -> String {
    let file =
        json!({"activate": "ok", "health": "ok", "kernel": "6.6.1", "seconds": 1, "label": label});
    let hosts: Vec<(&str, Value)> = nodes.iter().map(|n| (n.as_str(), file.clone())).collect();
    fleet.commit(&hosts)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Installs node `id` at `top` and starts its agent against the controllers `addrs`.
fn start_agent(
    cl: &super::support::Cluster,
    addrs: &[String],
    dir: &Path,
    id: &str,
    top: &Path,
    (agent_bin, fleet_agent): (&Path, &Path),
) -> Agent {
    let (root, bin, state) = (dir.join("root"), dir.join("bin"), dir.join("state"));
    std::fs::create_dir_all(&state).unwrap();
    let cert = cl.node(id);
    write(&dir.join("node.crt"), &cert.cert_pem);
    write(&dir.join("node.key"), &cert.key_pem);
    write(&dir.join("ca.crt"), cl.root.cert_pem());
    let st = Command::new(fleet_agent)
        .arg("install")
        .args([&root, top, &bin])
        .status()
        .unwrap();
    assert!(st.success(), "fleet_agent install {id}");
    // JSON is YAML: the agent reads it as its node-agent.yaml.
    let config = json!({
        "nodeId": id,
        "dcId": "DC1",
        "listen": format!("127.0.0.1:{}", rollouts::free_port()),
        "mode": "managed",
        "controllers": addrs,
        "heartbeatIntervalSeconds": 3,
        "tls": {"caFile": dir.join("ca.crt"), "certFile": dir.join("node.crt"), "keyFile": dir.join("node.key")},
        "disko": {"managementModeFile": state.join("disko-management-mode"), "stateDir": state.join("disko")},
        "nix": {"configPath": state.join("kcore-node.nix")},
        "binaries": {
            "systemctl": bin.join("systemctl"),
            "bootctl": bin.join("bootctl"),
            "systemdRun": fleet_dir().join("../systemd-run"),
        },
    });
    let file = dir.join("node-agent.yaml");
    write(&file, &config.to_string());
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let child = Command::new(fleet_agent)
        .arg("serve")
        .args([&file, &root, &agent_bin.to_path_buf()])
        // Offline: the fleet's derivations exist only on this machine.
        .env("NIX_CONFIG", "substituters =")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Agent(child)
}

/// `program argv`, its output dropped; whether it succeeded.
fn succeeds(program: &Path, argv: Vec<std::ffi::OsString>, env: &[(&str, &str)]) -> bool {
    Command::new(program)
        .args(argv)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// One node's prepare, run directly by the bench with the argv kcore-agent builds
/// (kcore-nix's `NixBuild`), without a controller or an agent: the built toplevel.
fn direct_build(installable: String, out_link: PathBuf) -> PathBuf {
    let cmd = kcore_nix::commands::NixBuild {
        installable,
        out_link: out_link.clone(),
    };
    let offline = [("NIX_CONFIG", "substituters =")];
    assert!(
        succeeds(Path::new("nix"), cmd.argv(), &offline),
        "baseline nix build"
    );
    std::fs::canonicalize(out_link).unwrap()
}

/// One node's activation of `top`, run directly the same way: `nix-env --set`,
/// `switch-to-configuration switch` in a unit of the `systemd-run` stand-in (with the
/// agent's `unit-result` helper as `ExecStopPost=`), then `systemctl is-system-running`.
/// `n` tells this activation's unit from the node's others.
fn direct_activate(dir: &Path, top: PathBuf, agent_bin: &Path, n: usize) {
    use kcore_nix::commands::{
        NixEnvProfile, ProfileAction, SwitchToConfiguration, SystemState, SystemdRun,
    };
    let root = dir.join("root");
    let set = NixEnvProfile {
        profile: root.join("nix/var/nix/profiles/system"),
        action: ProfileAction::Set(top.clone()),
    };
    assert!(
        succeeds(Path::new("nix-env"), set.argv(), &[]),
        "baseline nix-env --set"
    );
    let stc = SwitchToConfiguration {
        toplevel: top,
        goal: kcore_nix::Goal::Switch,
    };
    let mut command = vec![stc.program_path().into_os_string()];
    command.extend(stc.argv());
    let status = dir.join(format!("baseline-{n}.status"));
    let mut unit = SystemdRun::logged(
        &format!(
            "kcore-baseline-{}-{n}",
            dir.file_name().unwrap().to_string_lossy()
        ),
        "kcore bench baseline: switch-to-configuration switch",
        &dir.join("logs/baseline.log"),
        command,
    );
    unit.stop_post = vec![agent_bin.into(), "unit-result".into(), status.into()];
    unit.env = vec![("KCORE_FAKE_ROOT".into(), root.display().to_string())];
    let systemd_run = fleet_dir().join("../systemd-run");
    assert!(
        succeeds(&systemd_run, unit.argv(), &[]),
        "baseline switch-to-configuration"
    );
    assert!(
        succeeds(
            &dir.join("bin/systemctl"),
            SystemState::IsSystemRunning.argv(),
            &[]
        ),
        "baseline: the system runs"
    );
}

/// The same batch rollout's node-side work done directly ([`direct_build`],
/// [`direct_activate`]), pipelined as
/// kcore pipelines it: the first wave's builds, then each wave's activations at once
/// while the next wave builds. No controller, no agent, no report: what any orchestrator
/// pays on this machine for this work, the baseline kcore's run is set against.
async fn direct_baseline(
    fleet: &Fleet,
    nodes: &[String],
    work: &Path,
    rev: &str,
    agent_bin: &Path,
    batch: usize,
) -> Duration {
    let url = kcore_nix::flake::pinned_flake_url(&fleet.flake_ref(), rev).unwrap();
    let build = |id: &String| {
        let installable = kcore_nix::flake::toplevel_installable(&url, id).unwrap();
        let out_link = work.join(id).join("state/baseline-system");
        tokio::task::spawn_blocking(move || direct_build(installable, out_link))
    };
    let waves: Vec<&[String]> = nodes.chunks(batch).collect();
    let started = Instant::now();
    let mut built: Vec<_> = waves[0].iter().map(build).collect();
    for (i, wave) in waves.iter().enumerate() {
        let mut tops = Vec::new();
        for b in built.drain(..) {
            tops.push(b.await.unwrap());
        }
        let activations: Vec<_> = wave
            .iter()
            .zip(tops)
            .map(|(id, top)| {
                let (dir, agent_bin) = (work.join(id), agent_bin.to_path_buf());
                tokio::task::spawn_blocking(move || direct_activate(&dir, top, &agent_bin, i))
            })
            .collect();
        if let Some(next) = waves.get(i + 1) {
            built = next.iter().map(build).collect();
        }
        for a in activations {
            a.await.unwrap();
        }
    }
    started.elapsed()
}

pub async fn run_agents(count: usize) {
    let (agent_bin, fleet_agent) = binaries();
    let Some(fleet) = Fleet::new() else {
        return;
    };
    let nodes: Vec<String> = (1..=count).map(|i| format!("n{i:02}")).collect();
    let r1 = revision(&fleet, &nodes, "r1");
    let work = tempfile::tempdir().unwrap();
    let setup = Instant::now();
    let built = fleet.build_all(&r1, &nodes, &work.path().join("installed"));
    eprintln!(
        "agents: {count} toplevels at r1 built in {:.1} s (one nix build)",
        setup.elapsed().as_secs_f64()
    );

    let bed = rollouts::ProcBed::with(&["ctl1"], &[], super::T).await;
    let (cl, addrs) = bed.cluster();
    let started = Instant::now();
    let agents: Vec<Agent> = nodes
        .iter()
        .map(|id| {
            let dir = work.path().join(id);
            start_agent(cl, &addrs, &dir, id, &built[id], (&agent_bin, &fleet_agent))
        })
        .collect();
    let admin = &bed.admins[0];
    let mut ready = 0;
    for _ in 0..600 {
        if let Ok(list) = admin.get_json::<NodeList>("/v1/nodes").await {
            ready = list
                .items
                .iter()
                .filter(|n| n.status == NodeStatus::Ready)
                .count();
            if ready == count {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready, count, "every agent registered and Ready");
    eprintln!(
        "agents: {count} agents installed, started and Ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let revs = [
        ("bench-batch", revision(&fleet, &nodes, "r2")),
        ("bench-serial", revision(&fleet, &nodes, "r3")),
    ];
    let baseline_revs = [
        revision(&fleet, &nodes, "r4"),
        revision(&fleet, &nodes, "r5"),
    ];
    let flake_ref = fleet.flake_ref();
    let [(batch, ideal1), (serial, ideal2)] = manifests(&nodes, |name| {
        let rev = &revs.iter().find(|(n, _)| *n == name).unwrap().1;
        json!({"flakeRef": flake_ref, "flakeRev": rev})
    });
    let mut readings = Readings::start(bed.pid(0).unwrap());
    let batch_what = format!("agents: batch {count}/{}", 10.min(count));
    let r1 = run(&bed, &batch_what, batch, ideal1).await;
    readings.lap();
    let serial_what = format!("agents: one-at-a-time {}", 10.min(count));
    let r2 = run(&bed, &serial_what, serial, ideal2).await;
    readings.lap();
    let peak = readings.peak();
    // The baselines, in the same run on the same fake roots (the agents idle meanwhile, as
    // between steps): each rollout's node-side work done directly.
    let batch = 10.min(count);
    let (dir, bin) = (work.path(), &agent_bin);
    let baselines = [
        direct_baseline(&fleet, &nodes, dir, &baseline_revs[0], bin, batch).await,
        direct_baseline(&fleet, &nodes[..batch], dir, &baseline_revs[1], bin, 1).await,
    ];
    drop(agents);
    let (store, _) = bed.stop(0);
    let mut runs = Vec::new();
    for (name, r, cpu, cap) in [
        ("bench-batch", &r1, readings.cpus[0], 10.min(count)),
        ("bench-serial", &r2, readings.cpus[1], 1),
    ] {
        let recs = records::records(&store, name);
        // The recorded timeline holds the engine's invariants with real agents too.
        records::timeline::check(&recs, cap).unwrap();
        runs.push(measure(&recs, name, r, cpu));
    }
    print_runs(
        &format!("agents: {count} real agent processes (fleet_agent), prepare by nix build"),
        &runs,
        &readings,
        peak,
    );
    println!(
        "\nbaseline: each run's node-side work done directly by the bench (no controller, no agent), same run\n| run | ideal | baseline | baseline over ideal | kcore | kcore over baseline | ratio kcore / baseline |\n|---|---|---|---|---|---|---|"
    );
    for (run, baseline) in runs.iter().zip(baselines) {
        let (ideal, kcore, base) = (
            run.ideal.as_secs_f64(),
            run.span.as_secs_f64(),
            baseline.as_secs_f64(),
        );
        println!(
            "| {} | {ideal:.2} s | {base:.3} s | {:.3} s | {kcore:.3} s | **{:.3} s** | {:.3} |",
            run.what,
            base - ideal,
            kcore - base,
            kcore / base
        );
    }
    if std::env::var_os("KCORE_BENCH_KEEP").is_some() {
        // Each node's agent.log (with RUST_LOG=kcore_agent=debug: where its step's time
        // went) and fake root, for a look afterwards.
        eprintln!("agents: kept {}", work.keep().display());
    }
}
