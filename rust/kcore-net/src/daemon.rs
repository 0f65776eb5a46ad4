//! What both daemons (agent and controller) share around their servers: one spelling of
//! the logging flags, one logging set-up, and the shutdown signal.

/// `--log-level` and `--log-json`, flattened into each daemon's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
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
}

/// Whether log lines on stderr may carry ANSI colour: only on a terminal (a pipe, a file or
/// the journal gets plain text) and never with `NO_COLOR` set to anything non-empty
/// (<https://no-color.org>). kctl uses the same rule.
pub fn colour_on_stderr() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Logs go to stderr; under systemd (JOURNAL_STREAM set) without timestamps, since the
/// journal adds its own; colour only as [`colour_on_stderr`] allows. A filter that does
/// not parse falls back to `info`.
pub fn init_tracing(args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr());
    let _ = match (args.log_json, under_systemd) {
        (true, _) => builder.json().try_init(),
        (false, true) => builder.without_time().try_init(),
        (false, false) => builder.try_init(),
    };
}

/// Completes on SIGTERM (systemd stop) or Ctrl-C.
pub async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

/// Runs `main` on a multi-threaded runtime and maps its result to the exit code, printing
/// an error once on stderr as `error: {err:#}` (the journal keeps it under systemd).
pub fn run_main<F>(main: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
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
    match runtime.block_on(main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn both_daemons_take_the_same_flags() {
        let cli = Cli::try_parse_from(["d", "--log-level", "debug", "--log-json"]).unwrap();
        assert_eq!(cli.log.log_level, "debug");
        assert!(cli.log.log_json);
        let err = Cli::try_parse_from(["d", "--log-format", "json"]).unwrap_err();
        assert!(err.to_string().contains("--log-format"), "{err}");
    }
}
