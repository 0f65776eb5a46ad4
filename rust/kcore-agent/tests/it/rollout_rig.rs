//! The rollout test rig (issue 12 "Test rig"): a fleet flake in a local git repository with
//! one commit per revision (`tests/support/fleet/flake.nix`, pinned as
//! `git+file:///...?rev=<sha>` and built for real with `nix build`), and nodes whose agent
//! runs in-process on 127.0.0.1 against a fake root of their own: `run/current-system`,
//! `run/booted-system`, `nix/var/nix/profiles/system`, the boot loader state
//! (`boot/loader`, `boot/efivars`), and what the stand-ins log (`var/log/kcore-fleet`).
//! The stand-ins (`tests/support/fleet/{switch-to-configuration,bootctl,systemctl}`) find the
//! fake root in `KCORE_FAKE_ROOT`: units get it through the agent's extra environment, the
//! agent's own `systemctl` and `bootctl` calls through a two-line wrapper per node.
//!
//! A reboot is simulated as the issue says: stop the agent, set `run/booted-system` (and
//! `run/current-system`) to what the boot loader state picks (the one-shot entry, removed
//! as it is used, else the default, else `loader.conf`'s default, as systemd-boot does),
//! and start the agent again.

use kcore_api::rollout::{StepPhase, StepReport};

use crate::rollout_proc::{AgentOptions, ChildProcess, ChildSpec, agent_addr};
use crate::support::*;

/// The fake root's install and boots, shared with the `fleet_agent` example.
#[path = "../../../../tests/support/fleet/fake_root.rs"]
pub mod fake_root;

/// The fleet repository, shared with the controller's rollout benchmark.
#[path = "../../../../tests/support/fleet/fleet_repo.rs"]
pub mod fleet_repo;
pub use fleet_repo::{Fleet, host};

/// One node: its fake root, its agent, an admin client.
pub struct FleetNode {
    pub pki: Pki,
    pub node: Node,
    pub options: RuntimeOptions,
    pub extra: serde_json::Value,
    pub agent: Option<Running>,
    /// The agent as an OS process instead ([`FleetNode::start_process`]).
    pub process: Option<ChildProcess>,
    pub admin: Option<Client>,
}

fn wrapper(path: &Path, root: &Path, program: &Path) {
    fake_root::wrapper(path, root, program).unwrap();
}

impl FleetNode {
    /// A node that runs `host` at `rev` (installed as the booted system, generation 1), its
    /// agent started; `gate`: switch-to-configuration waits for that file.
    pub async fn new(
        fleet: &Fleet,
        rev: &str,
        gate: Option<&Path>,
        timeout_tweak: Option<Duration>,
    ) -> FleetNode {
        let mut this = FleetNode::installed(fleet, rev, gate, timeout_tweak);
        this.start().await;
        this
    }

    /// [`FleetNode::new`] without starting the agent: the caller adds to `extra` first.
    pub fn installed(
        fleet: &Fleet,
        rev: &str,
        gate: Option<&Path>,
        timeout_tweak: Option<Duration>,
    ) -> FleetNode {
        Self::installed_with(fleet, rev, gate, timeout_tweak, false)
    }

    /// A node that boots with GRUB (`boot/grub/grub.cfg`, `grub-reboot`) instead of
    /// systemd-boot, its agent started.
    pub async fn new_grub(fleet: &Fleet, rev: &str) -> FleetNode {
        let mut this = Self::installed_with(fleet, rev, None, None, true);
        this.start().await;
        this
    }

    fn installed_with(
        fleet: &Fleet,
        rev: &str,
        gate: Option<&Path>,
        timeout_tweak: Option<Duration>,
        grub: bool,
    ) -> FleetNode {
        let pki = Pki::new();
        let node = Node::new();
        let root = node.path("root");
        std::fs::create_dir_all(node.path("bin")).unwrap();
        std::fs::create_dir_all(root.join("run")).unwrap();
        wrapper(
            &node.path("bin/systemctl"),
            &root,
            &support("fleet/systemctl"),
        );
        wrapper(&node.path("bin/bootctl"), &root, &support("fleet/bootctl"));
        wrapper(
            &node.path("bin/grub-reboot"),
            &root,
            &support("fleet/grub-reboot"),
        );
        if grub {
            // The stand-in's switch-to-configuration writes grub.cfg when this exists.
            std::fs::create_dir_all(root.join("boot/grub")).unwrap();
        }
        let extra = json!({"binaries": {
            "systemctl": node.path("bin/systemctl"),
            "bootctl": node.path("bin/bootctl"),
            "grub-reboot": node.path("bin/grub-reboot"),
        }});
        let mut env = vec![
            ("KCORE_FAKE_ROOT".to_string(), root.display().to_string()),
            // Offline: nothing to substitute from (the fleet's derivations exist only here).
            ("NIX_CONFIG".to_string(), "substituters =".to_string()),
        ];
        if let Some(gate) = gate {
            env.push((
                "KCORE_TEST_ACTIVATION_GATE".to_string(),
                gate.display().to_string(),
            ));
        }
        let mut options = RuntimeOptions {
            extra_env: env,
            rebuild_log_dir: node.path("logs"),
            unit_result_helper: unit_result_helper(),
            system_root: root.clone(),
            ..RuntimeOptions::default()
        };
        if let Some(t) = timeout_tweak {
            options.rebuild_timeout = t;
        }
        let this = FleetNode {
            pki,
            node,
            options,
            extra,
            agent: None,
            process: None,
            admin: None,
        };
        this.install(fleet, rev);
        this
    }

    pub fn root(&self, rel: &str) -> PathBuf {
        self.node.path("root").join(rel)
    }

    /// Install `node-1` at `rev` as generation 1, booted, its boot loader written, healthy.
    fn install(&self, fleet: &Fleet, rev: &str) {
        let top = fleet.build(rev, "node-1", &self.node.path("installed"));
        fake_root::install(&self.root(""), &top).unwrap();
    }

    fn boot_into(&self, top: &Path) {
        fake_root::boot_into(&self.root(""), top).unwrap();
    }

    pub async fn start(&mut self) {
        let agent = start(
            self.node
                .config("managed", Some(&self.pki), self.extra.clone()),
            self.options.clone(),
        )
        .await;
        self.admin = Some(agent.client(self.pki.client_tls(&self.pki.leaf(Role::Admin, "alice"))));
        self.agent = Some(agent);
    }

    /// The agent as an OS process of its own (`rollout_proc`), with the same configuration
    /// and options as [`FleetNode::start`], so [`FleetNode::kill9`] can SIGKILL it.
    pub async fn start_process(&mut self) {
        let config = self
            .node
            .config("managed", Some(&self.pki), self.extra.clone());
        let addr_file = self.node.path("agent.addr");
        let _ = std::fs::remove_file(&addr_file);
        let spec = ChildSpec::Agent {
            config: Box::new(config),
            options: AgentOptions::of(&self.options),
            addr_file: addr_file.clone(),
        };
        let mut child = ChildProcess::spawn(&self.node.path(""), "agent", &spec);
        let addr = agent_addr(&mut child, &addr_file).await;
        let running = Running {
            addr,
            fingerprint: None,
            stop: None,
            task: None,
        };
        self.admin =
            Some(running.client(self.pki.client_tls(&self.pki.leaf(Role::Admin, "alice"))));
        self.process = Some(child);
    }

    /// SIGKILL the agent's process: nothing of it runs on; its transient units (their own
    /// sessions, as systemd's are) do.
    pub fn kill9(&mut self) {
        self.admin = None;
        let mut child = self.process.take().expect("the agent runs as a process");
        child.kill9();
    }

    pub async fn stop(&mut self) {
        self.admin = None;
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
        if let Some(child) = self.process.take() {
            child.stop().await;
        }
    }

    pub fn admin(&self) -> &Client {
        self.admin.as_ref().unwrap()
    }

    /// The simulated reboot: stop, boot what the boot loader picks, start.
    pub async fn reboot(&mut self) -> PathBuf {
        self.reboot_with(true).await
    }

    /// A reboot in which the one-shot entry does not come up (a kernel that hangs, then a
    /// power cycle): the one-shot is used up and the default boots.
    pub async fn reboot_failing_oneshot(&mut self) -> PathBuf {
        self.reboot_with(false).await
    }

    async fn reboot_with(&mut self, oneshot_boots: bool) -> PathBuf {
        self.stop().await;
        let top = fake_root::next_boot(&self.root(""), oneshot_boots).unwrap();
        self.boot_into(&top);
        self.start().await;
        top
    }

    /// Lines of one of the stand-ins' logs (`activations`, `reboots`, `bootctl`).
    pub fn log(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.root(&format!("var/log/kcore-fleet/{name}")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The systems its rollout prepares built: their GC roots,
    /// `operations/rollout/<operation>.system`.
    pub fn built_systems(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.node.path("operations/rollout"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".system"))
            .collect()
    }

    pub fn link(&self, rel: &str) -> PathBuf {
        std::fs::canonicalize(self.root(rel)).unwrap()
    }

    pub fn efi(&self, var: &str) -> Option<String> {
        std::fs::read_to_string(self.root(&format!("boot/efivars/{var}")))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Prepare `rev` and follow it to its end.
    pub async fn prepare(&self, fleet: &Fleet, rev: &str) -> (OperationResult, StepReport) {
        let started: OperationStarted = self
            .admin()
            .post_json(
                "/v1/rollout/prepare",
                &json!({"flakeRef": fleet.flake_ref(), "flakeRev": rev}),
            )
            .await
            .unwrap();
        assert_eq!(started.kind, "rollout-prepare");
        let (_, result) = follow(self.admin(), &started.operation_id).await;
        (result, self.step(&started.operation_id).await)
    }

    /// Start an activation; its operation id.
    pub async fn activate(&self, path: &Path, mode: &str, timeout: u64) -> String {
        let started: OperationStarted = self
            .admin()
            .post_json(
                "/v1/rollout/activate",
                &json!({"storePath": path, "mode": mode, "healthTimeoutSeconds": timeout}),
            )
            .await
            .unwrap();
        assert_eq!(started.kind, "rollout-activate");
        started.operation_id
    }

    pub async fn step(&self, id: &str) -> StepReport {
        self.admin()
            .get_json(&format!("/v1/rollout/steps/{id}"))
            .await
            .unwrap()
    }

    /// Poll the step's report until it is in `phase` (a bounded wait for a state, never a
    /// timing assertion).
    pub async fn wait_phase(&self, id: &str, phase: StepPhase) -> StepReport {
        let mut last = None;
        for _ in 0..600 {
            let report = self.step(id).await;
            if report.phase == phase {
                return report;
            }
            last = Some(report);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("step {id} never reached {phase:?}: {last:?}");
    }
}
