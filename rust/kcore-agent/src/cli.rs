//! The `kcore-agent` command line: `serve` (the default) and `provision-disk`, and the
//! logging set-up shared by both.

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

    /// Log level or filter (`info`, `debug`, `kcore_agent=trace`); RUST_LOG overrides it.
    #[arg(
        long = "log-level",
        global = true,
        env = "LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,

    /// Log as JSON lines (for log shippers) instead of text.
    #[arg(long = "log-json", global = true)]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the agent API (the default when no subcommand is given).
    Serve,
    /// Give the node's data partition an LVM volume group, thin pool and owner id (idempotent).
    ProvisionDisk(ProvisionCli),
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
    #[arg(long, env = "NODE_ID")]
    pub node_id: String,
    /// Directory of the retry marker left by a failed run.
    #[arg(long, env = "MARKER_DIR", default_value = "/var/lib/kcore")]
    pub marker_dir: PathBuf,
}

/// Logs go to stderr; under systemd (JOURNAL_STREAM set) without timestamps, since the
/// journal adds its own.
pub fn init_tracing(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match (json, under_systemd) {
        (true, _) => builder.json().try_init(),
        (false, true) => builder.without_time().try_init(),
        (false, false) => builder.try_init(),
    };
}

/// Parse, set up logging, run.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log_level, cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // Once, on stderr (the journal keeps it under systemd).
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config).await,
        Command::ProvisionDisk(p) => {
            kcore_api::validate::node_id("--node-id", &p.node_id)?;
            let args = ProvisionArgs {
                partition_label: p.partition_label,
                volume_group: p.volume_group,
                pool: p.pool,
                node_id: p.node_id,
                marker_dir: p.marker_dir,
                by_partlabel_dir: PathBuf::from("/dev/disk/by-partlabel"),
            };
            provision(&args).await.context("provision-disk")?;
            Ok(())
        }
    }
}

async fn serve(config_path: &std::path::Path) -> anyhow::Result<()> {
    let config = AgentConfig::load(config_path).context("cannot start the agent")?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
    };
    crate::run(listener, config, shutdown)
        .await
        .context("serving the agent API")
}
