//! `kcore-controller`: parse, start tracing, hand over to the library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// The kcore controller: node registration, approval, inventory and the cluster's sub-CA.
#[derive(Debug, Parser)]
#[command(name = "kcore-controller", version, about)]
struct Args {
    /// The controller.yaml to read.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/kcore/controller.yaml"
    )]
    config: PathBuf,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines (no timestamps under systemd: journald adds them).
    Text,
    /// One JSON object per line.
    Json,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    match (format, under_systemd) {
        (LogFormat::Json, _) => builder.json().init(),
        (LogFormat::Text, true) => builder.without_time().init(),
        (LogFormat::Text, false) => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_tracing(args.log_format);
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = kcore_controller::ControllerConfig::load(&args.config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (field `listen`)", config.listen))?;
    kcore_controller::run(listener, config, shutdown_signal())
        .await
        .context("controller failed")
}
