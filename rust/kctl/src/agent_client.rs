//! Talking to one node agent (`--node HOST:9091`): how kctl trusts it and who it is.
//!
//! - `-k`: accept the agent's certificate unverified (live-ISO install mode only);
//! - `--fingerprint SHA256`: accept only the install-mode certificate with that fingerprint;
//! - otherwise (managed mode): mTLS with the current context's CA and admin certificate
//!   (`~/.kcore/config`, or `--context` / `--kctl-config`); the agent must present a node
//!   certificate of the context's cluster, for exactly `--node-id` when that is given.
//!
//! `kctl node install` with `-k` learns the fingerprint from one handshake
//! ([`learn_fingerprint`]), prints it and pins it ([`pinned`]) for the rest of the install.
//!
//! Agent calls get longer timeouts than controller calls: a dry run evaluates Nix (the deep
//! level can take tens of seconds) and a stream may be quiet while a rebuild compiles.

use kcore_api::ErrorCode;
use std::time::Duration;

use anyhow::Context as _;
use kcore_net::{Client, ClientOptions};

use crate::exit::Refused;
use crate::global::GlobalArgs;
use crate::remote::{Expected, Remote};
use crate::target::NodeTarget;

/// Options for agent calls.
pub fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(5),
        attempt_timeout: Duration::from_secs(180),
        total_timeout: Duration::from_secs(180),
        // Longer than the agent's 3600 s cap on disk applies: a quiet stream is not dead.
        stream_idle_timeout: Duration::from_secs(3700),
    }
}

/// The TLS policy the flags ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    Insecure,
    Pinned(String),
    Context,
}

/// `-k` and `--fingerprint` exclude each other; neither means the context's mTLS.
pub fn trust(target: &NodeTarget) -> anyhow::Result<Trust> {
    match (target.insecure, &target.fingerprint) {
        (true, Some(_)) => Err(Refused::new(
            ErrorCode::BadFlags,
            "-k and --fingerprint exclude each other: pin the fingerprint the agent printed, or skip verification with -k",
        )
        .into()),
        (true, None) => Ok(Trust::Insecure),
        (false, Some(fp)) => Ok(Trust::Pinned(fp.clone())),
        (false, None) => Ok(Trust::Context),
    }
}

/// A client for the agent named by `--node`, with what kctl expects of it.
pub fn connect(global: &GlobalArgs, target: &NodeTarget) -> anyhow::Result<Remote> {
    let node = target.node.as_deref().ok_or_else(|| {
        Refused::new(
            ErrorCode::NoNode,
            "this command talks to a node agent: pass --node HOST:9091",
        )
    })?;
    let trust = trust(target)?;
    // The context whose CA and admin certificate are used, for explaining failures.
    let mut context = None;
    let tls = match trust.clone() {
        Trust::Insecure => kcore_pki::client_config_insecure()?,
        Trust::Pinned(fp) => {
            kcore_pki::client_config_pinned(&fp).with_context(|| format!("--fingerprint {fp:?}"))?
        }
        Trust::Context => {
            // A managed agent must prove it is a node of the context's cluster, and the
            // node `--node-id` names when given (security review D1).
            let ctx = crate::context::resolve(global)?;
            let expected =
                kcore_pki::PeerExpectation::node(&ctx.cluster, target.node_id.as_deref())
                    .with_context(|| "--node-id".to_string())?;
            let config = crate::controller_client::credentials(&ctx)?
                .client_config(&expected)
                .map_err(|e| crate::context::credentials_error(&ctx, e))?;
            context = Some(ctx);
            config
        }
    };
    let client = Client::new(vec![kcore_net::https_url(node)], tls, options())?;
    Ok(Remote::new(client, Expected::agent(&trust, context)))
}
/// The install-mode agent's certificate fingerprint, from one TLS handshake that accepts
/// any certificate (`-k`): printed, then pinned for the rest of the install.
pub fn learn_fingerprint(node: &str) -> anyhow::Result<String> {
    use std::net::ToSocketAddrs as _;
    let host_port = node
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let host = match host_port.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => host_port.clone(),
    };
    let addr = host_port
        .to_socket_addrs()
        .with_context(|| format!("--node {node}: cannot resolve it"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--node {node}: no address"))?;
    let config = std::sync::Arc::new(kcore_pki::client_config_insecure()?);
    let name = rustls::pki_types::ServerName::try_from(host)
        .with_context(|| format!("--node {node}: not a host name"))?;
    let mut conn = rustls::ClientConnection::new(config, name)?;
    let mut sock = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .with_context(|| {
            format!("cannot reach the node agent at --node {node}: is it booted from the live ISO and listening?")
        })?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .with_context(|| format!("--node {node}: TLS handshake"))?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| anyhow::anyhow!("--node {node}: the agent showed no certificate"))?;
    Ok(kcore_pki::fingerprint_sha256(leaf.as_ref()))
}

/// A client for the install-mode agent at `node` pinned to `fingerprint` (`kctl node
/// install` pins even after `-k`, to the fingerprint it printed).
pub fn pinned(node: &str, fingerprint: &str) -> anyhow::Result<Remote> {
    let tls = kcore_pki::client_config_pinned(fingerprint)
        .with_context(|| format!("--fingerprint {fingerprint:?}"))?;
    let client = kcore_net::Client::new(
        vec![kcore_net::https_url(node)],
        tls,
        crate::agent_client::options(),
    )?;
    Ok(Remote::new(
        client,
        Expected::PinnedAgent(fingerprint.to_string()),
    ))
}
