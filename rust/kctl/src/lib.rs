//! The kcore operator CLI as a library: argument parsing (`cli`), one module per
//! subcommand family, output formatting and the mapping of errors to exit codes.

pub mod agent_client;
pub mod apply;
pub mod cli;
pub mod completion;
pub mod config;
pub mod context;
pub mod controller_client;
pub mod controllers;
pub mod create;
pub mod delete;
pub mod describe;
pub mod disko;
pub mod documents;
pub mod escape;
pub mod exit;
pub mod follow;
pub mod get;
pub mod global;
pub mod kinds;
pub mod node;
pub mod output;
pub mod paths;
pub mod remote;
pub mod rotate;
pub mod target;
pub mod update;
pub mod update_plan;
pub mod version;
pub mod views;
pub mod vm;

use clap::Parser;

/// Parse the command line, set up logging, run the command, map the outcome to an exit code.
pub fn main() -> std::process::ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help/version to stdout with exit 0 and usage errors with exit 2.
            let _ = err.print();
            return std::process::ExitCode::from(if err.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    cli.global.init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::from(exit::FAILED);
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = cli::run(cli) => Some(result),
            // Ctrl-C or SIGTERM: returning drops the command's future, and with it
            // kcore-nix's process-group guard, which SIGKILLs the child's group. The
            // child runs in its own group (so a terminal's Ctrl-C does not reach it);
            // without this, a stopped kctl left nix-instantiate running under PID 1.
            () = kcore_net::daemon::shutdown_signal() => None,
        }
    });
    let Some(outcome) = outcome else {
        eprintln!("error: interrupted; the programs kctl started were stopped");
        return std::process::ExitCode::from(exit::INTERRUPTED);
    };
    match outcome {
        Ok(()) => {
            // The context learns controllers added or removed since it was written.
            runtime.block_on(controller_client::refresh_context());
            std::process::ExitCode::from(exit::OK)
        }
        Err(err) => {
            // Messages quote servers and nodes: their control characters are escaped.
            eprintln!("error: {}", escape::escape_lines(&format!("{err:#}")));
            std::process::ExitCode::from(exit::code_for(&err))
        }
    }
}
