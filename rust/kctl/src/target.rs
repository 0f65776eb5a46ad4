//! Which server a command talks to, as flag groups flattened into the commands that use
//! them: [`NodeTarget`] (one node agent: `--node`, `--node-id`, `-k`, `--fingerprint`) on
//! `kctl node`, [`ControllerTarget`] (the controllers: `-s`) on the commands that call
//! controllers. On a command they are `global`, so they may follow its subcommand too
//! (`kctl node disks --node HOST:9091`).
//!
//! The documented spelling puts them before the command (`kctl --node HOST:9091 node
//! disks`, `kctl -s HOST:9090 get nodes`), and clap propagates flags only down the command
//! tree, never up. So the top-level parser carries the same groups once more as
//! [`Leading`] (not global: they are not offered to every command), and `cli::run` joins
//! what was given before the command with what was given after it ([`NodeTarget::join`],
//! [`ControllerTarget::join`]; the later counts). A command that does not use a group
//! refuses it when it is given before the command, instead of ignoring it, and clap
//! refuses it after such a command, where it is not defined.

use clap::{Args, FromArgMatches};
use kcore_api::ErrorCode;

use crate::exit::Refused;

/// The node agent a `kctl node ...` command talks to, and how kctl trusts it
/// ([`crate::agent_client`]).
#[derive(Debug, Clone, Default, Args)]
pub struct NodeTarget {
    /// The node agent to talk to, as HOST:PORT or https://HOST:PORT (agents listen on 9091).
    #[arg(long = "node", global = true, value_name = "HOST:PORT", value_parser = server_address)]
    pub node: Option<String>,

    /// The node id the agent at --node must prove in managed mode (its certificate's
    /// kcore://<cluster>/node/<ID>); without it any node of the cluster is accepted. For
    /// `node install`: the id of the node to install (default: a new random UUID).
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

impl NodeTarget {
    /// Whether no flag of the group was given.
    pub fn is_empty(&self) -> bool {
        self.node.is_none()
            && self.node_id.is_none()
            && !self.insecure
            && self.fingerprint.is_none()
    }

    /// `self` (given after the command) joined with `leading` (given before it), flag by
    /// flag; where both are given, the one after the command counts. (clap itself
    /// already shares a value between the two copies, since they have the same ids; the
    /// join keeps that rule explicit.)
    pub fn join(self, leading: NodeTarget) -> NodeTarget {
        NodeTarget {
            node: self.node.or(leading.node),
            node_id: self.node_id.or(leading.node_id),
            insecure: self.insecure || leading.insecure,
            fingerprint: self.fingerprint.or(leading.fingerprint),
        }
    }

    /// Refuses the group given before a command that does not talk to a node agent.
    pub fn unused(&self, command: &str) -> Result<(), Refused> {
        if self.is_empty() {
            return Ok(());
        }
        Err(Refused::new(
            ErrorCode::BadFlags,
            format!(
                "--node, --node-id, -k and --fingerprint are for `kctl node ...`: \
                 `kctl {command}` does not talk to a node agent"
            ),
        ))
    }
}

impl ControllerTarget {
    /// `-s` given after the command, else those given before it (as [`NodeTarget::join`]).
    pub fn join(self, leading: ControllerTarget) -> ControllerTarget {
        if self.servers.is_empty() {
            leading
        } else {
            self
        }
    }

    /// Refuses `-s` given before a command that does not call controllers.
    pub fn unused(&self, command: &str) -> Result<(), Refused> {
        if self.servers.is_empty() {
            return Ok(());
        }
        Err(Refused::new(
            ErrorCode::BadFlags,
            format!("-s is for commands that call controllers: `kctl {command}` does not"),
        ))
    }
}

/// A group's flags on the top-level parser, before the command: the same flags as `T`,
/// not global.
#[derive(Debug, Clone, Default)]
pub struct Leading<T>(pub T);

/// `cmd` with the flags `T` adds made non-global.
fn not_global<T: Args>(mut cmd: clap::Command) -> clap::Command {
    let ids: Vec<String> = T::augment_args(clap::Command::new("ids"))
        .get_arguments()
        .map(|a| a.get_id().as_str().to_string())
        .collect();
    for id in ids {
        cmd = cmd.mut_arg(id, |a| a.global(false));
    }
    cmd
}

impl<T: Args> Args for Leading<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        not_global::<T>(T::augment_args(cmd))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        not_global::<T>(T::augment_args_for_update(cmd))
    }
}

impl<T: FromArgMatches> FromArgMatches for Leading<T> {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Leading)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
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

    /// The target groups `cli::run` hands to the command, as it joins them.
    fn parsed(args: &[&str]) -> (NodeTarget, ControllerTarget) {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from(args).unwrap();
        let (node, ctl) = (cli.node.0, cli.controllers.0);
        match cli.command {
            crate::cli::Command::Node(a) => (a.node.join(node), a.controllers.join(ctl)),
            crate::cli::Command::Get(a) => (node, a.controllers.join(ctl)),
            _ => (node, ctl),
        }
    }

    #[test]
    fn target_flags_work_before_and_after_the_command_that_uses_them() {
        for args in [
            &["kctl", "--node", "a:1", "-k", "node", "disks"][..],
            &["kctl", "node", "disks", "--node", "a:1", "-k"],
            &["kctl", "node", "--node", "a:1", "disks", "-k"],
        ] {
            let (node, _) = parsed(args);
            assert_eq!(node.node.as_deref(), Some("a:1"), "{args:?}");
            assert!(node.insecure, "{args:?}");
        }
        let (node, _) = parsed(&["kctl", "--node", "a:1", "node", "disks", "--node", "b:1"]);
        assert_eq!(node.node.as_deref(), Some("b:1"), "the later counts");
        for args in [
            &["kctl", "-s", "c:1", "get", "nodes"][..],
            &["kctl", "get", "nodes", "-s", "c:1"],
            &["kctl", "-s", "c:1", "node", "approve", "n1"],
        ] {
            let (_, ctl) = parsed(args);
            assert_eq!(ctl.servers, ["c:1"], "{args:?}");
        }
        // After a command that does not use them, clap does not know them; before it,
        // the command refuses them.
        use clap::Parser as _;
        for args in [
            &["kctl", "config", "get-contexts", "--node", "a:1"][..],
            &["kctl", "config", "get-contexts", "-s", "a:1"],
            &["kctl", "get", "nodes", "-k"],
        ] {
            assert!(crate::cli::Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        let (node, ctl) = parsed(&[
            "kctl",
            "--node",
            "a:1",
            "-s",
            "c:1",
            "config",
            "get-contexts",
        ]);
        let err = node.unused("config").unwrap_err();
        assert!(
            err.message
                .contains("`kctl config` does not talk to a node agent"),
            "{}",
            err.message
        );
        assert_eq!(ctl.unused("config").unwrap_err().code, "BAD_FLAGS");
        NodeTarget::default().unused("config").unwrap();
    }
}
