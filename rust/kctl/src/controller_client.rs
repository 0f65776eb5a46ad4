//! Talking to the controllers: the admin credentials and controller list of the context
//! (or `-s HOST:PORT`, repeatable), one [`kcore_net::Client`] that fails over to the next
//! controller whenever one is unreachable or too slow, within a bounded total time.

use kcore_api::ErrorCode;
use std::time::Duration;

use kcore_net::{Client, ClientOptions};

use crate::context::{self, Context};
use crate::exit::Refused;
use crate::global::GlobalArgs;
use crate::remote::{Expected, Remote};
use crate::target::ControllerTarget;

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

/// The context's admin credentials (CA, certificate, key), with errors naming the files.
pub fn credentials(ctx: &Context) -> anyhow::Result<kcore_pki::Credentials> {
    kcore_pki::Credentials::load(&kcore_pki::CredentialFiles::new(
        &ctx.ca_file,
        &ctx.cert_file,
        &ctx.key_file,
    ))
    .map_err(|e| context::credentials_error(ctx, e))
}

/// A client for `servers`, authenticated with the context's admin certificate, that
/// accepts only servers presenting a controller certificate of the context's cluster.
pub fn client_for(ctx: &Context, servers: &[String]) -> anyhow::Result<Client> {
    let tls = credentials(ctx)?
        .client_config(&kcore_pki::PeerExpectation::controller(&ctx.cluster))
        .map_err(|e| context::credentials_error(ctx, e))?;
    Ok(Client::new(
        servers.iter().map(|s| kcore_net::https_url(s)).collect(),
        tls,
        options(),
    )?)
}

/// The controllers to call: `-s` (checked when parsed), else the context's, checked
/// with the same rule.
pub fn servers(target: &ControllerTarget, ctx: &Context) -> anyhow::Result<Vec<String>> {
    if !target.servers.is_empty() {
        return Ok(target.servers.clone());
    }
    ctx.controllers
        .iter()
        .map(|c| {
            crate::target::server_address(c).map_err(|e| {
                anyhow::Error::from(Refused::new(
                    ErrorCode::BadController,
                    format!(
                        "context {:?} lists the controller {c:?}: {e} (fix its controllers list)",
                        ctx.name
                    ),
                ))
            })
        })
        .collect()
}

/// The context and a failover client over `-s` servers, or the context's controllers.
pub fn connect(
    global: &GlobalArgs,
    target: &ControllerTarget,
) -> anyhow::Result<(Context, Remote)> {
    let ctx = context::resolve(global)?;
    let servers = servers(target, &ctx)?;
    if servers.is_empty() {
        return Err(Refused::new(
            ErrorCode::NoControllers,
            format!(
                "context {:?} lists no controllers: pass -s HOST:9090",
                ctx.name
            ),
        )
        .into());
    }
    let client = client_for(&ctx, &servers)?;
    let remote = Remote::new(client, Expected::Controller(ctx.clone()));
    Ok((ctx, remote))
}
