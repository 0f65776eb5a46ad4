//! The flags every kctl command accepts (`GlobalArgs`), in their own module so that the
//! command modules and the top-level parser in `cli` do not import each other.

use clap::Args;

use crate::output::OutputFormat;

/// Flags every command accepts, before or after the subcommand.
#[derive(Debug, Clone, Args)]
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

    /// More log output (repeat for more).
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short = 'q', long = "quiet", global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// The node agent to talk to, as HOST:PORT or https://HOST:PORT (agents listen on 9091).
    #[arg(long = "node", global = true, value_name = "HOST:PORT", value_parser = server_address)]
    pub node: Option<String>,

    /// The node id the agent at --node must prove in managed mode (its certificate's
    /// kcore://<cluster>/node/<ID>); without it any node of the cluster is accepted.
    #[arg(long = "node-id", global = true, value_name = "ID")]
    pub node_id: Option<String>,

    /// Accept the agent's certificate without verifying it (live-ISO install mode only).
    #[arg(short = 'k', long = "insecure", global = true)]
    pub insecure: bool,

    /// Pin the agent's self-signed certificate by its SHA-256 fingerprint (hex, colons optional).
    #[arg(long = "fingerprint", global = true, value_name = "SHA256")]
    pub fingerprint: Option<String>,

    /// A controller as HOST:PORT or https://HOST:PORT; repeat for failover, tried in order.
    #[arg(
        short = 's',
        long = "server",
        global = true,
        value_name = "HOST:PORT",
        value_parser = server_address
    )]
    pub servers: Vec<String>,

    /// The context from the kctl config to use instead of the current one.
    #[arg(long = "context", global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// Path of the kctl config file.
    #[arg(
        long = "kubeconfig",
        alias = "config-file",
        global = true,
        env = "KCORE_CONFIG",
        value_name = "FILE"
    )]
    pub config_file: Option<std::path::PathBuf>,
}

/// A server as `HOST:PORT` or `https://HOST:PORT` (a trailing `/` is dropped), returned
/// as `HOST:PORT`. Any other scheme is refused before anything is sent: kcore has no
/// plain-HTTP listener, and `http://` would otherwise be read as a host name. The host
/// and port themselves are checked when the URL is parsed. The error does not repeat the
/// value: clap (and [`crate::controller_client::servers`]) put it in front.
pub fn server_address(value: &str) -> Result<String, String> {
    const RULE: &str = "kcore speaks TLS only: use HOST:PORT or https://HOST:PORT";
    let rest = match value.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => rest,
        Some(_) => return Err(RULE.to_string()),
        None => value,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(format!("no server given: {RULE}"));
    }
    if let Some(c) = rest.chars().find(|c| matches!(c, '/' | '?' | '#' | '@')) {
        return Err(format!(
            "{c:?} is not part of a server address: use HOST:PORT or https://HOST:PORT"
        ));
    }
    Ok(rest.to_string())
}

impl GlobalArgs {
    /// Logs go to stderr; `-v` raises the level, `-q` keeps only errors, `RUST_LOG` overrides both.
    pub fn init_tracing(&self) {
        let default_level = if self.quiet {
            "error"
        } else {
            match self.verbose {
                0 => "warn",
                1 => "info",
                2 => "debug",
                _ => "trace",
            }
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .without_time()
            .try_init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_host_port_or_https_urls() {
        for (given, kept) in [
            ("10.0.0.5:9090", "10.0.0.5:9090"),
            ("https://hv1:9091", "hv1:9091"),
            ("HTTPS://hv1:9091/", "hv1:9091"),
            ("[::1]:9090", "[::1]:9090"),
        ] {
            assert_eq!(server_address(given).as_deref(), Ok(kept), "{given}");
        }
        for bad in [
            "http://hv1:9090",
            "ftp://hv1",
            "hv1:9090/v1",
            "https://",
            "u@hv1:9090",
        ] {
            assert!(server_address(bad).is_err(), "{bad}");
        }
        assert!(
            server_address("http://hv1:9090")
                .unwrap_err()
                .ends_with("kcore speaks TLS only: use HOST:PORT or https://HOST:PORT")
        );
    }
}
