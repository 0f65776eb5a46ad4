//! Which server a command talks to, as flag groups that only the commands using them
//! receive: [`NodeTarget`] (one node agent: `--node`, `--node-id`, `-k`, `--fingerprint`)
//! and [`ControllerTarget`] (the controllers: `-s`).
//!
//! Both groups are flattened into the top-level parser with `global = true`, because the
//! documented spelling puts them before the subcommand (`kctl --node HOST:9091 node disks`,
//! `kctl -s HOST:9090 get nodes`) and clap propagates a global flag only down the command
//! tree, never up. `cli::run` then hands each command only the groups it uses, so a
//! command's signature says which servers it may call.

use clap::Args;

/// The node agent a `kctl node ...` command talks to, and how kctl trusts it
/// ([`crate::agent_client`]).
#[derive(Debug, Clone, Default, Args)]
pub struct NodeTarget {
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
}

/// The controllers a command talks to ([`crate::controller_client`]): `-s`, else the
/// context's list.
#[derive(Debug, Clone, Default, Args)]
pub struct ControllerTarget {
    /// A controller as HOST:PORT or https://HOST:PORT; repeat for failover, tried in order.
    #[arg(
        short = 's',
        long = "server",
        global = true,
        value_name = "HOST:PORT",
        value_parser = server_address
    )]
    pub servers: Vec<String>,
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
