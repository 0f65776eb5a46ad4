//! A kcore agent on a rollout test node's fake root, for `scripts/demo-rollout.sh` (no
//! NixOS there): the real agent library with `RuntimeOptions::system_root` pointing at the
//! node's fake root, which the production binary never does. Test use only.
//!
//! - `fleet_agent install ROOT TOPLEVEL BIN_DIR`: install a built fleet toplevel on the
//!   fake root as generation 1, booted (`tests/support/fleet/fake_root.rs`, shared with the
//!   rig), and write `BIN_DIR/systemctl` and `BIN_DIR/bootctl`, the stand-ins bound to it.
//! - `fleet_agent serve CONFIG ROOT AGENT_BIN`: serve `CONFIG` (node-agent.yaml) until
//!   SIGTERM; `AGENT_BIN` is the kcore-agent binary the transient units call back
//!   (`unit-result`).

// Shared with the rig, which also simulates boots (`next_boot`); the demo needs none.
#[allow(dead_code)]
#[path = "../../../tests/support/fleet/fake_root.rs"]
mod fake_root;

use std::path::{Path, PathBuf};

fn usage() -> ! {
    eprintln!("usage: fleet_agent install ROOT TOPLEVEL BIN_DIR | serve CONFIG ROOT AGENT_BIN");
    std::process::exit(2);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["install", root, top, bin] => {
            let (root, bin) = (Path::new(root), Path::new(bin));
            let fleet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/fleet");
            std::fs::create_dir_all(bin)?;
            for tool in ["systemctl", "bootctl"] {
                fake_root::wrapper(&bin.join(tool), root, &fleet.join(tool))?;
            }
            Ok(fake_root::install(root, Path::new(top))?)
        }
        ["serve", config, root, agent_bin] => {
            // The daemons' own logging set-up: warnings by default, RUST_LOG for more
            // (`kcore_agent=debug` logs where a step's time goes, docs/rollouts.md).
            kcore_net::daemon::init_tracing(&kcore_net::daemon::LogArgs {
                log_level: "warn".into(),
                log_json: false,
            });
            let config = kcore_agent::config::AgentConfig::load(Path::new(config))?;
            let root = PathBuf::from(root);
            let options = kcore_agent::server::RuntimeOptions {
                system_root: root.clone(),
                extra_env: vec![
                    ("KCORE_FAKE_ROOT".into(), root.display().to_string()),
                    // Offline: the fleet's derivations exist only on this machine.
                    ("NIX_CONFIG".into(), "substituters =".into()),
                ],
                rebuild_log_dir: root.join("../logs"),
                unit_result_helper: Some(PathBuf::from(agent_bin)),
                ..Default::default()
            };
            let listener = tokio::net::TcpListener::bind(&config.listen).await?;
            kcore_agent::server::Agent::new(config, options)?
                .serve(listener, kcore_net::daemon::shutdown_signal())
                .await?;
            Ok(())
        }
        _ => usage(),
    }
}
