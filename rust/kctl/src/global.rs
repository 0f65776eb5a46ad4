//! The flags every kctl command accepts (`GlobalArgs`: output, logging, which kctl config
//! and context), in their own module so that the command modules and the top-level parser
//! in `cli` do not import each other. Which server a command talks to is not here: see
//! [`crate::target`].

use clap::Args;

use crate::output::OutputFormat;

/// Flags every command accepts, before or after the subcommand; `--help` lists them under
/// their own heading, apart from the command's own flags.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Output format for commands that print data.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value_t
    )]
    pub output: OutputFormat,

    /// More log output: -v adds kcore's own debug lines, -vv and up the libraries' too.
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short = 'q', long = "quiet", global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// The context from the kctl config to use instead of the current one.
    #[arg(long = "context", global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// Path of the kctl config file (default ~/.kcore/config).
    #[arg(
        long = "kctl-config",
        // The old name, kept working but hidden from --help (clap's `alias` is hidden;
        // `visible_alias` would list it).
        alias = "kubeconfig",
        alias = "config-file",
        global = true,
        env = "KCORE_CONFIG",
        value_name = "FILE"
    )]
    pub config_file: Option<std::path::PathBuf>,
}

/// The `-v` filter: debug for kcore's crates, warn for everything else.
const KCORE_DEBUG: &str = "warn,kctl=debug,kcore_api=debug,kcore_net=debug,kcore_nix=debug,\
                           kcore_disko=debug,kcore_pki=debug,kcore_controller=debug,\
                           kcore_agent=debug";

impl GlobalArgs {
    /// Logs go to stderr; `-v` raises the level, `-q` keeps only errors, `RUST_LOG` overrides both.
    pub fn init_tracing(&self) {
        let default_level = if self.quiet {
            "error"
        } else {
            match self.verbose {
                0 => "warn",
                // kcore's own crates only: libraries (rustls, hyper, reqwest) stay at warn.
                1 => KCORE_DEBUG,
                2 => "debug",
                _ => "trace",
            }
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // Colour only on a terminal, and never with NO_COLOR set: the daemons' rule.
            .with_ansi(kcore_net::daemon::colour_on_stderr())
            .without_time()
            .try_init();
    }
}
