//! Talking to the controllers: the admin credentials and controller list of the context
//! (or `-s HOST:PORT`, repeatable), one [`kcore_net::Client`] that fails over to the next
//! controller whenever one is unreachable or too slow, within a bounded total time.

use std::time::Duration;

use anyhow::Context as _;
use kcore_net::{Client, ClientError, ClientOptions};

use crate::cli::GlobalArgs;
use crate::context::{self, Context};
use crate::exit::Refused;

/// One attempt (connect, TLS, request, response) may take this long before kctl moves on
/// to the next controller; all attempts together at most `TOTAL`.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Client options; `KCORE_ATTEMPT_TIMEOUT_MS` shortens attempts (tests, slow links).
pub fn options() -> ClientOptions {
    let attempt = std::env::var("KCORE_ATTEMPT_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(ATTEMPT_TIMEOUT);
    ClientOptions {
        connect_timeout: attempt.min(Duration::from_secs(3)),
        attempt_timeout: attempt,
        total_timeout: TOTAL_TIMEOUT.max(attempt),
        ..ClientOptions::default()
    }
}

/// `HOST:PORT` to `https://HOST:PORT`.
pub fn base_url(server: &str) -> String {
    if server.starts_with("https://") {
        server.to_string()
    } else {
        format!("https://{server}")
    }
}

/// The context's admin credentials (CA, certificate, key), with errors naming the files.
pub fn credentials(ctx: &Context) -> anyhow::Result<kcore_pki::Credentials> {
    kcore_pki::Credentials::load(&kcore_pki::CredentialFiles::new(
        &ctx.ca_file,
        &ctx.cert_file,
        &ctx.key_file,
    ))
    .with_context(|| format!("context {:?}: credentials do not load", ctx.name))
}

/// A client for `servers`, authenticated with the context's admin certificate, that
/// accepts only servers presenting a controller certificate of the context's cluster.
pub fn client_for(ctx: &Context, servers: &[String]) -> anyhow::Result<Client> {
    let tls = credentials(ctx)?
        .client_config(&kcore_pki::PeerExpectation::controller(&ctx.cluster))
        .with_context(|| format!("context {:?}: credentials do not load", ctx.name))?;
    Ok(Client::new(
        servers.iter().map(|s| base_url(s)).collect(),
        tls,
        options(),
    )?)
}

/// The context and a failover client over `-s` servers, or the context's controllers.
pub fn connect(global: &GlobalArgs) -> anyhow::Result<(Context, Client)> {
    let ctx = context::resolve(global)?;
    let servers = if global.servers.is_empty() {
        ctx.controllers.clone()
    } else {
        global.servers.clone()
    };
    if servers.is_empty() {
        return Err(Refused::new(
            "NO_CONTROLLERS",
            format!(
                "context {:?} lists no controllers: pass -s HOST:9090",
                ctx.name
            ),
        )
        .into());
    }
    let client = client_for(&ctx, &servers)?;
    Ok((ctx, client))
}

/// Turns an API refusal (4xx with a code) into a [`Refused`] (exit 1); everything else
/// stays a failure (exit 3).
pub fn map_err(err: ClientError) -> anyhow::Error {
    if let ClientError::Api { status, error, .. } = &err
        && status.is_client_error()
    {
        return Refused::new(error.code.clone(), error.message.clone()).into();
    }
    anyhow::Error::new(err)
}
