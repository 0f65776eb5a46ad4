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

fn read(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the context's {what} {}", path.display()))
}

/// `HOST:PORT` to `https://HOST:PORT`.
pub fn base_url(server: &str) -> String {
    if server.starts_with("https://") {
        server.to_string()
    } else {
        format!("https://{server}")
    }
}

/// A client for `servers`, authenticated with the context's admin certificate.
pub fn client_for(ctx: &Context, servers: &[String]) -> anyhow::Result<Client> {
    let tls = kcore_pki::client_config(
        &read(&ctx.ca_file, "CA certificate")?,
        &read(&ctx.cert_file, "admin certificate")?,
        &read(&ctx.key_file, "admin key")?,
    )
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
