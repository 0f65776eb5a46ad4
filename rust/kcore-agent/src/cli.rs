//! The `kcore-agent` command line: `serve` (the default), `provision-disk`, and
//! `unit-result` (run by systemd as a transient unit's `ExecStopPost=`, see
//! `crate::ops::unit`). Logging
//! flags and set-up are kcore-net's `daemon`, shared with the controller.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{AgentConfig, DEFAULT_CONFIG_PATH};
use crate::provision::{ProvisionArgs, provision};

/// The kcore node agent: inventory, day-2 storage and configuration over HTTPS (port 9091).
#[derive(Debug, Parser)]
#[command(name = "kcore-agent", version, about)]
pub struct Cli {
    /// The agent's configuration file.
    #[arg(long = "config", global = true, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    /// A YAML of the same shape read UNDER `--config` (maps merge key by key, the config
    /// file wins, lists replace): an installed node's NixOS module passes the settings
    /// every node of the system shares here, the config file holds the node's own.
    #[arg(long = "defaults", global = true, value_name = "FILE")]
    pub defaults: Option<PathBuf>,

    #[command(flatten)]
    pub log: kcore_net::daemon::LogArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the agent API (the default when no subcommand is given).
    Serve,
    /// Give the node's data partition an LVM volume group, thin pool and owner id (idempotent).
    ProvisionDisk(ProvisionCli),
    /// Reconcile the node's VMs once with the desired list in FILE and print the reports as
    /// JSON (what the assignment loop does with each answer; for the storage bed and for
    /// operators checking a node by hand).
    #[command(hide = true)]
    VmReconcile {
        /// A JSON list of `NodeVm` (what the controller's assignment carries in `vms`).
        file: PathBuf,
    },
    /// Write a transient unit's end (`$SERVICE_RESULT`, `$EXIT_CODE`, `$EXIT_STATUS`, as
    /// systemd sets them for `ExecStopPost=`) to FILE; the agent's own units run this.
    #[command(hide = true)]
    UnitResult {
        /// The status file the agent reads.
        file: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct ProvisionCli {
    /// GPT partition label of the data partition (`/dev/disk/by-partlabel/LABEL`).
    #[arg(long, env = "PARTITION_LABEL")]
    pub partition_label: String,
    /// The volume group to create or keep on it; no other VG is ever touched.
    #[arg(long, env = "VOLUME_GROUP")]
    pub volume_group: String,
    /// The thin pool's name inside the volume group.
    #[arg(long, env = "POOL")]
    pub pool: String,
    /// This node's id, stored on the metadata LV; a different stored id resets the VG.
    /// The operator guide's `--satellite-id` / `SATELLITE_ID` are accepted too.
    #[arg(long, env = "NODE_ID", visible_alias = "satellite-id")]
    pub node_id: Option<String>,
    /// Directory of the retry marker left by a failed run.
    #[arg(long, env = "MARKER_DIR", default_value = "/var/lib/kcore")]
    pub marker_dir: PathBuf,
}

/// Parse, set up logging, run.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    kcore_net::daemon::init_tracing(&cli.log);
    kcore_net::daemon::run_main(dispatch(cli))
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.defaults.as_deref(), &cli.config).await,
        Command::ProvisionDisk(p) => {
            // clap reads one variable per argument; SATELLITE_ID is the guide's name for
            // NODE_ID (an init container's environment), read only when NODE_ID is unset.
            let node_id = p
                .node_id
                .or_else(|| std::env::var("SATELLITE_ID").ok())
                .context(
                    "the node id is missing: pass --node-id (or --satellite-id), or set \
                     NODE_ID (or SATELLITE_ID)",
                )?;
            kcore_api::validate::node_id("--node-id", &node_id)?;
            let args = ProvisionArgs {
                partition_label: p.partition_label,
                volume_group: p.volume_group,
                pool: p.pool,
                node_id,
                marker_dir: p.marker_dir,
                by_partlabel_dir: PathBuf::from("/dev/disk/by-partlabel"),
            };
            provision(&args).await.context("provision-disk")?;
            Ok(())
        }
        Command::VmReconcile { file } => {
            let config = AgentConfig::load_layered(cli.defaults.as_deref(), &cli.config)
                .context("reading the configuration")?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let desired: Vec<kcore_api::vm::NodeVm> = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a JSON list of NodeVm", file.display()))?;
            let host = crate::vm::VmHost::from_config(&config);
            let reports = crate::vm::reconcile(&host, &desired, &|_| {}).await;
            println!("{}", serde_json::to_string_pretty(&reports)?);
            Ok(())
        }
        Command::UnitResult { file } => crate::ops::unit::UnitStatus::write_from_env(&file)
            .with_context(|| format!("writing the unit status {}", file.display())),
    }
}

async fn serve(
    defaults: Option<&std::path::Path>,
    config_path: &std::path::Path,
) -> anyhow::Result<()> {
    let config =
        AgentConfig::load_layered(defaults, config_path).context("cannot start the agent")?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let shutdown = kcore_net::daemon::shutdown_signal();
    crate::run(listener, config, shutdown)
        .await
        .context("serving the agent API")
}
