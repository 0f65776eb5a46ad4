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
    if target.servers.is_empty()
        && let Ok(mut learn) = LEARN_FROM.lock()
    {
        *learn = Some((
            context::config_path(global)?,
            ctx.clone(),
            Remote::new(client.clone(), Expected::Controller(ctx.clone())),
        ));
    }
    let remote = Remote::new(client, Expected::Controller(ctx.clone()));
    Ok((ctx, remote))
}

/// The context and client of the last [`connect`] that used the context's controllers
/// (not `-s`): what [`refresh_context`] asks once the command has succeeded.
#[allow(clippy::type_complexity)]
static LEARN_FROM: std::sync::Mutex<Option<(std::path::PathBuf, Context, Remote)>> =
    std::sync::Mutex::new(None);

/// After a successful command: asks a controller of the context for the `Controller`
/// records (`GET /v1/controllers`, through the same failover client) and, when their
/// addresses differ from the context's `controllers`, rewrites that list in the config
/// file (temp file + rename, its mode kept) and says so once on stderr. Any failure here
/// is only logged: the command itself succeeded.
pub async fn refresh_context() {
    let taken = LEARN_FROM.lock().ok().and_then(|mut l| l.take());
    let Some((path, ctx, remote)) = taken else {
        return;
    };
    match learn(&path, &ctx, &remote).await {
        Ok(Some(message)) => eprintln!("{message}"),
        Ok(None) => {}
        Err(err) => tracing::debug!("cannot refresh the context's controllers: {err:#}"),
    }
}

/// The new list: the context's entries that still have a record, in their order, then
/// the addresses of records the context lacks (by controller id). `None`: no change, or
/// nothing usable learnt (an empty list never replaces a working one).
pub fn learnt_controllers(current: &[String], records: &[(String, String)]) -> Option<Vec<String>> {
    let addresses: Vec<&String> = records
        .iter()
        .map(|(_, a)| a)
        .filter(|a| crate::target::server_address(a).is_ok())
        .collect();
    if addresses.is_empty() {
        return None;
    }
    let mut next: Vec<String> = current
        .iter()
        .filter(|c| addresses.contains(c))
        .cloned()
        .collect();
    for address in addresses {
        if !next.contains(address) {
            next.push(address.clone());
        }
    }
    (next != current).then_some(next)
}

async fn learn(
    path: &std::path::Path,
    ctx: &Context,
    remote: &Remote,
) -> anyhow::Result<Option<String>> {
    let answered: kcore_api::version::ServerVersion = remote.get_json("/v1/version").await?;
    let list: kcore_api::resource::ResourceList = remote.get_json("/v1/controllers").await?;
    let mut records: Vec<(String, String)> = Vec::new();
    for item in list.items {
        let c: kcore_api::controller::Controller = serde_json::from_value(item)?;
        records.push((c.metadata.name, c.spec.address));
    }
    records.sort();
    let Some(next) = learnt_controllers(&ctx.controllers, &records) else {
        return Ok(None);
    };
    // Read again right before writing: only this context's list changes.
    let mut config = context::KctlConfig::load_existing(path)?;
    let Some(stored) = config.contexts.iter_mut().find(|c| c.name == ctx.name) else {
        return Ok(None);
    };
    if stored.controllers != ctx.controllers {
        // Someone changed it since this command read it: theirs stands.
        return Ok(None);
    }
    stored.controllers = next.clone();
    config.save_keeping_mode(path)?;
    let from = records
        .iter()
        .find(|(id, _)| *id == answered.id)
        .map_or_else(|| answered.id.clone(), |(_, address)| address.clone());
    Ok(Some(format!(
        "kctl: context {}: controllers now {} (learnt from {})",
        ctx.name,
        next.join(", "),
        from
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(i, a)| (i.to_string(), a.to_string()))
            .collect()
    }

    #[test]
    fn the_context_gains_new_controllers_keeps_its_order_and_drops_deleted_ones() {
        let current = vec!["10.0.0.2:9090".to_string(), "10.0.0.1:9090".to_string()];
        let same = records(&[("ctl1", "10.0.0.1:9090"), ("ctl2", "10.0.0.2:9090")]);
        assert_eq!(learnt_controllers(&current, &same), None);
        let grown = records(&[
            ("ctl1", "10.0.0.1:9090"),
            ("ctl2", "10.0.0.2:9090"),
            ("ctl3", "10.0.0.3:9090"),
        ]);
        assert_eq!(
            learnt_controllers(&current, &grown).unwrap(),
            vec!["10.0.0.2:9090", "10.0.0.1:9090", "10.0.0.3:9090"]
        );
        let shrunk = records(&[("ctl1", "10.0.0.1:9090")]);
        assert_eq!(
            learnt_controllers(&current, &shrunk).unwrap(),
            vec!["10.0.0.1:9090"]
        );
        assert_eq!(learnt_controllers(&current, &[]), None);
        // An address kctl could not dial (a scheme) is not learnt.
        let odd = records(&[("ctl1", "http://10.0.0.1:9090")]);
        assert_eq!(learnt_controllers(&current, &odd), None);
    }
}
