//! The `/etc/kcore/node-agent.yaml` the install really writes (kcore-agent's write-config
//! step, `install::files::write_all`, run here on a temporary install root) fits the
//! installed systems: read with the agent's own layered loader over the `--defaults` file
//! hosts/installed-lvm renders, at the path that system's agent unit reads, it is a
//! managed-mode configuration with the node's values and the closure's store paths.
//! The write-config step alone runs (no disks); `install_run.rs` in kcore-agent runs the
//! whole install through stand-ins.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kcore_agent::config::{AgentConfig, Backend, Mode};
use kcore_agent::install::files::{MANAGEMENT_MODE_FILE, NODE_CONFIG, write_all};
use kcore_agent::install::plan::Prepared;
use kcore_agent::install::run::Job;
use kcore_agent::install::steps::Ctx;
use kcore_agent::ops::{Lanes, Operations};
use kcore_agent::server::{AgentState, RuntimeOptions};
use kcore_agent::tools::Tools;
use kcore_api::install::{InstallPlan, InstallRunRequest, LuksMode};
use kcore_api::inventory::OperationKind;
use serde_json::json;

use crate::support::{FAKE_STORE, Harness};

const NODE_ID: &str = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b";
const OS_DISK: &str = "/dev/disk/by-id/nvme-OS_1";

/// An install-mode agent's state whose install root and state dir are under `dir`.
fn install_state(dir: &Path) -> AgentState {
    let yaml = format!(
        "nodeId: installer\nmode: install\ninstall:\n  root: {root}\n  stateDir: {state}\n  \
         systems: {{ lvm: {FAKE_STORE}nixos-system-kcore-node-lvm }}\n",
        root = dir.join("mnt").display(),
        state = dir.join("state").display(),
    );
    let config = AgentConfig::parse(&yaml, Path::new("install.yaml")).unwrap();
    AgentState {
        tools: Tools::new(config.binaries.clone()),
        options: RuntimeOptions::default(),
        ops: Operations::persistent(dir.join("operations")),
        lanes: Lanes::default(),
        stopping: tokio::sync::watch::Sender::new(false),
        evaluations: Arc::new(tokio::sync::Semaphore::new(1)),
        metrics: Default::default(),
        controller_client: Arc::new(tokio::sync::watch::Sender::new(None)),
        install: Default::default(),
        config,
    }
}

/// The job of an lvm install with one data disk, as `install/run` prepares it.
fn lvm_job() -> Job {
    let spec = json!({
        "cluster": "lab",
        "nodeId": NODE_ID,
        "hostname": "hv1",
        "dcId": "DC2",
        "controllers": ["10.0.0.5:9090", "10.0.0.6:9090"],
        "osDisk": OS_DISK,
        "dataDisks": ["/dev/disk/by-id/nvme-DATA_1"],
        "storageBackend": "lvm",
        "lvmVgName": "vg_fast",
        "lvmLvPrefix": "kcore-",
        "zfsPoolName": "tank0",
        "zfsDatasetPrefix": "kcore",
        "luks": "tpm2",
    });
    let plan = InstallPlan {
        spec: serde_json::from_value(spec.clone()).unwrap(),
        tpm: true,
        layout: String::new(),
        validated: vec![],
        plan: kcore_api::plan::Plan::from_targets(vec![]),
        wipes: vec![],
        refusals: vec![],
        plan_hash: "sha256:00".into(),
        system: format!("{FAKE_STORE}nixos-system-kcore-node-lvm"),
    };
    let storage = serde_json::from_value(json!({
        "osDisk": OS_DISK,
        "dataDisks": ["/dev/disk/by-id/nvme-DATA_1"],
        "backend": "lvm",
        "lvm": { "vgName": "vg_fast", "lvPrefix": "kcore-" },
        "zfs": { "poolName": "tank0", "datasetPrefix": "kcore" },
    }))
    .unwrap();
    let request: InstallRunRequest = serde_json::from_value(json!({
        "spec": spec,
        "planHash": "sha256:00",
        "credentials": { "caPem": "CA\n", "nodeChainPem": "NODE\n" },
        "claimToken": "c".repeat(32),
    }))
    .unwrap();
    Job {
        prepared: Prepared {
            plan,
            storage,
            luks_mode: LuksMode::Tpm2,
            key_device: None,
            luks_device: format!("{OS_DISK}-part2"),
        },
        request,
        deadline: Instant::now() + Duration::from_secs(60),
    }
}

#[test]
fn the_installers_node_agent_yaml_loads_over_the_installed_lvm_defaults() {
    let Some(h) =
        Harness::get("the_installers_node_agent_yaml_loads_over_the_installed_lvm_defaults")
    else {
        return;
    };
    let host = h.host_outputs("installed-lvm");
    let dir = tempfile::tempdir().unwrap();
    let state = install_state(dir.path());
    // The node key `install/csr` would have made.
    std::fs::create_dir_all(&state.config.install.state_dir).unwrap();
    std::fs::write(state.config.install.state_dir.join("node.key"), "KEY\n").unwrap();
    let job = lvm_job();
    let op = state.ops.start(OperationKind::Install, None, Lanes::none());
    let mut ctx = Ctx::new(&state, &op, &job);
    ctx.recovery_key = Some("recovery".into());
    let written = write_all(&ctx)
        .unwrap_or_else(|(what, path, e)| panic!("write-config: {what} {}: {e}", path.display()));
    assert!(written.iter().any(|w| w == NODE_CONFIG), "{written:?}");

    // The installed system's agent reads the file at the path the installer wrote it to.
    let exec = host["units"]["kcore-agent"]["serviceConfig"]["ExecStart"]
        .as_str()
        .unwrap();
    assert!(exec.ends_with(&format!("--config {NODE_CONFIG}")), "{exec}");
    let defaults = dir.path().join("node-agent-defaults.yaml");
    std::fs::write(&defaults, host["agentDefaults"].as_str().unwrap()).unwrap();
    let file = state
        .config
        .install
        .root
        .join(NODE_CONFIG.trim_start_matches('/'));
    let c = AgentConfig::load_layered(Some(&defaults), &file)
        .unwrap_or_else(|e| panic!("kcore-agent refuses the installed configuration: {e}"));

    // The node's values, from the installer's file.
    assert_eq!(c.mode, Mode::Managed);
    assert_eq!(c.node_id, NODE_ID);
    assert_eq!(c.dc_id, "DC2");
    assert_eq!(c.hostname.as_deref(), Some("hv1"));
    assert_eq!(c.controllers, ["10.0.0.5:9090", "10.0.0.6:9090"]);
    let tls = c.tls.as_ref().expect("managed mode has TLS");
    assert_eq!(tls.key_file, Path::new("/etc/kcore/tls/node.key"));
    assert_eq!(c.storage.backend, Backend::Lvm);
    assert_eq!(c.storage.lvm.vg_name, "vg_fast");
    // The same management mode file the closure's modules name (kcore.storage).
    assert_eq!(
        c.disko.management_mode_file,
        Path::new(MANAGEMENT_MODE_FILE)
    );
    let d: serde_json::Value =
        serde_yaml_ng::from_str(host["agentDefaults"].as_str().unwrap()).unwrap();
    assert_eq!(
        d["disko"]["managementModeFile"],
        json!(MANAGEMENT_MODE_FILE)
    );
    assert_eq!(
        d["storage"]["backend"],
        json!("lvm"),
        "the closure's backend"
    );
    // The closure's shared settings, from --defaults.
    assert_eq!(
        c.binaries.get("disko"),
        Some(Path::new(&format!("{FAKE_STORE}disko/bin/disko")))
    );
    assert_eq!(
        c.disko.state_dir,
        Path::new(d["disko"]["stateDir"].as_str().unwrap())
    );
}
