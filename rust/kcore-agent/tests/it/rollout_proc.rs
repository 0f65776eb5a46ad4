//! Agents and controllers of the fleet rig as OS processes of their own, so a test can kill
//! one with SIGKILL (issue 12: "agent killed -9 mid-activation", "controller killed -9
//! mid-rollout", "owner controller lost"): nothing of it runs on, nothing is flushed or
//! handed over, only what it had written to disk survives.
//!
//! The process is this test binary run again: [`ChildProcess::spawn`] starts
//! `current_exe() rollout_proc::fleet_child_process_entry --exact --ignored` with
//! `KCORE_IT_FLEET_CHILD` naming a JSON file ([`ChildSpec`]), and that ignored test runs
//! only the agent library (`Agent::serve`, with the rig's `RuntimeOptions`: a fake root the
//! production binary never takes) or the controller library (`kcore_controller::run`, as
//! `kcore-controller --config` does). The agent needs this way rather than the built
//! `kcore-agent` binary because the fake root is a `RuntimeOptions` field, not a config
//! key; the controller because its binary is another crate's (no `CARGO_BIN_EXE_` here).
//!
//! A child ends when its stdin closes, so one left behind by a test that panicked (or was
//! killed itself) exits with the test process instead of serving on.

use std::io::Read;
use std::process::{Child, Command, Stdio};

use kcore_controller::config::ControllerConfig;
use serde::{Deserialize, Serialize};

use crate::support::*;

const ENV: &str = "KCORE_IT_FLEET_CHILD";

/// What one child runs.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChildSpec {
    /// The agent on `config`; it binds 127.0.0.1:0 and writes the address to `addr_file`.
    Agent {
        config: Box<AgentConfig>,
        options: AgentOptions,
        addr_file: PathBuf,
    },
    /// The controller on `config`, listening on `config.listen`.
    Controller { config: Box<ControllerConfig> },
}

/// The `RuntimeOptions` the rig gives its agents (it has no serde form of its own).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentOptions {
    extra_env: Vec<(String, String)>,
    system_profile: PathBuf,
    rebuild_log_dir: PathBuf,
    rebuild_timeout_ms: u64,
    unit_result_helper: Option<PathBuf>,
    system_root: PathBuf,
    sysfs_root: PathBuf,
}

impl AgentOptions {
    pub fn of(o: &RuntimeOptions) -> AgentOptions {
        assert!(
            o.block_snapshot.is_none(),
            "the fleet rig's agent processes plan no disks"
        );
        AgentOptions {
            extra_env: o.extra_env.clone(),
            system_profile: o.system_profile.clone(),
            rebuild_log_dir: o.rebuild_log_dir.clone(),
            rebuild_timeout_ms: o.rebuild_timeout.as_millis() as u64,
            unit_result_helper: o.unit_result_helper.clone(),
            system_root: o.system_root.clone(),
            sysfs_root: o.sysfs_root.clone(),
        }
    }

    fn options(self) -> RuntimeOptions {
        RuntimeOptions {
            extra_env: self.extra_env,
            system_profile: self.system_profile,
            rebuild_log_dir: self.rebuild_log_dir,
            rebuild_timeout: Duration::from_millis(self.rebuild_timeout_ms),
            unit_result_helper: self.unit_result_helper,
            system_root: self.system_root,
            sysfs_root: self.sysfs_root,
            ..RuntimeOptions::default()
        }
    }
}

/// A running child; SIGKILLed when dropped.
pub struct ChildProcess {
    child: Child,
}

impl ChildProcess {
    /// Writes `spec` to `dir/NAME.json` and starts the child on it, its output appended to
    /// `dir/NAME.log` (kept across restarts, for a failing test's reader).
    pub fn spawn(dir: &Path, name: &str, spec: &ChildSpec) -> ChildProcess {
        let file = dir.join(format!("{name}.json"));
        let tmp = dir.join(format!("{name}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(spec).unwrap()).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "rollout_proc::fleet_child_process_entry",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, &file)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        ChildProcess { child }
    }

    /// SIGKILL (std's `Child::kill` on Unix) and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The graceful end: stdin closed, the server's shutdown runs; SIGKILL after 30 s.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        for _ in 0..300 {
            if !self.running() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.kill9();
    }

    /// Whether it still runs (it exits only when killed or its stdin closes).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The address an agent child wrote, once it listens (at most 60 s).
pub async fn agent_addr(child: &mut ChildProcess, addr_file: &Path) -> std::net::SocketAddr {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(addr_file)
            && let Ok(addr) = text.trim().parse()
        {
            return addr;
        }
        assert!(
            child.running(),
            "the agent process exited before it listened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the agent process never wrote {}", addr_file.display());
}

/// The child's side: run what `KCORE_IT_FLEET_CHILD` names until stdin closes. Ignored, so
/// only the rig runs it (a run with `--ignored` and no such variable skips it).
#[test]
#[ignore = "the fleet rig's agent and controller processes: run by the rig only"]
fn fleet_child_process_entry() {
    let Some(file) = std::env::var_os(ENV) else {
        eprintln!("SKIP: {ENV} is not set: this entry is the fleet rig's child process");
        return;
    };
    let spec: ChildSpec = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    kcore_net::daemon::init_tracing(&kcore_net::daemon::LogArgs {
        log_level: "info".into(),
        log_json: false,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            let _ = closed.send(());
        });
        let shutdown = async move {
            let _ = stdin_closed.await;
        };
        match spec {
            ChildSpec::Agent {
                config,
                options,
                addr_file,
            } => {
                let agent = Agent::new(*config, options.options()).unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap().to_string();
                let tmp = addr_file.with_extension("tmp");
                std::fs::write(&tmp, addr).unwrap();
                std::fs::rename(&tmp, &addr_file).unwrap();
                agent.serve(listener, shutdown).await.unwrap();
            }
            ChildSpec::Controller { config } => {
                let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
                kcore_controller::run(listener, *config, shutdown)
                    .await
                    .unwrap();
            }
        }
    });
}
