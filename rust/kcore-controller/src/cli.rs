//! The `kcore-controller` command line: `--config` and kcore-net's shared logging flags
//! (the same spelling as the agent's), then [`crate::run`] until SIGTERM.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// The kcore controller: node registration, approval, inventory and the cluster's sub-CA.
#[derive(Debug, Parser)]
#[command(name = "kcore-controller", version, about)]
pub struct Cli {
    /// The controller.yaml to read.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/kcore/controller.yaml"
    )]
    pub config: PathBuf,

    #[command(flatten)]
    pub log: kcore_net::daemon::LogArgs,
}

/// Parse, set up logging, run.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    kcore_net::daemon::init_tracing(&cli.log);
    kcore_net::daemon::run_main(serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let config = crate::ControllerConfig::load(&cli.config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (field `listen`)", config.listen))?;
    crate::run(listener, config, kcore_net::daemon::shutdown_signal())
        .await
        .context("controller failed")
}
