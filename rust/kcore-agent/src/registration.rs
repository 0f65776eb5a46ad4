//! Registration with the controllers: register (trying each configured controller in
//! turn), heartbeat, and renew the node certificate from a CSR before it expires.
//!
//! # Use from the agent
//!
//! ```text
//! let ctx = registration::RegistrationContext::from_config(&config, Some(server_tls.clone()))?
//!     .with_report(inventory::report::inventory_report_fn(config.clone(), tools));
//! tokio::spawn(registration::run(ctx, shutdown_future));
//! ```
//!
//! [`run`] never gives up while the agent runs: an unreachable controller, a missing
//! certificate or a pending approval are logged and retried every heartbeat interval.
//!
//! # The first certificate
//!
//! A node's key is made on the node and never leaves it: `kctl create csr` (on the node)
//! writes the key (0600) and a CSR; the operator has a controller sign the CSR with
//! `kctl create node-cert` and puts the returned chain at `tls.certFile`. Until then
//! [`run`] waits and says so. See `docs/controller.md`.
//!
//! # Renewal
//!
//! From [`kcore_pki::RENEW_BEFORE`] (30 days) before expiry, the agent makes a new key and
//! CSR, asks a controller to sign it (`POST /v1/nodes/{id}/renew`, authenticated with the
//! current certificate), writes key and certificate atomically (key first, each by
//! rename) and swaps the TLS configuration of its server ([`kcore_net::TlsSource`]) and of
//! its controller client: open connections are not dropped.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kcore_api::cluster::{
    CertificateResponse, CsrRequest, HeartbeatRequest, NodeAck, NodeReport, NodeStatus,
    RegisterRequest,
};
use kcore_net::{Client, ClientError, ClientOptions, TlsSource};
use kcore_pki::Credentials;

use crate::config::AgentConfig;
use crate::metrics::{ControllerCall, RegistrationMetrics};

/// Produces the node's report (hostname, labels, storage, disks, NICs) when asked.
pub type ReportFn = Arc<dyn Fn() -> BoxFuture<'static, NodeReport> + Send + Sync>;

/// A report is sent with every this-many-th heartbeat (and at registration): inventory
/// changes rarely and the controller stores only changed fields.
const REPORT_EVERY: u64 = 20;

/// Why registration could not be set up or a step failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error(
        "node-agent.yaml has no `tls` section: managed mode needs tls.caFile, tls.certFile and tls.keyFile"
    )]
    NoTls,
    #[error("node-agent.yaml has no `controllers`: list at least one controller as HOST:PORT")]
    NoControllers,
    #[error(
        "{path}: {source} (a node's first certificate comes from `kctl create csr` on the node and `kctl create node-cert` on the operator's machine)"
    )]
    ReadCredentials {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS credentials: {0}")]
    Pki(#[from] kcore_pki::PkiError),
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("the certificate at {path} speaks for {found}, but this node is {expected:?}")]
    WrongIdentity {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Everything the registration loop needs.
#[derive(Clone)]
pub struct RegistrationContext {
    pub node_id: String,
    /// `HOST:PORT` of each controller, tried in order.
    pub controllers: Vec<String>,
    pub heartbeat_interval: Duration,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// DNS names / IPs requested in renewal CSRs (the node certificate is also the
    /// agent's serving certificate, so `kctl --node HOST` must match one of them).
    pub dns_names: Vec<String>,
    pub report: ReportFn,
    /// The agent server's TLS, swapped after renewal (`None`: no server to update).
    pub server_tls: Option<TlsSource>,
    /// Renew this long before expiry ([`kcore_pki::RENEW_BEFORE`] by default).
    pub renew_before: Duration,
    /// The shortest wait after a failed renewal ([`RENEW_RETRY_MIN`] by default).
    pub renew_retry_min: Duration,
    pub client_options: ClientOptions,
    /// Gets the loop's controller client each time it makes one, so the rollout
    /// assignment loop talks through the same client (mTLS, failover, renewals).
    pub client_tx: Option<Arc<tokio::sync::watch::Sender<Option<Client>>>>,
}

impl std::fmt::Debug for RegistrationContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationContext")
            .field("node_id", &self.node_id)
            .field("controllers", &self.controllers)
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl RegistrationContext {
    /// Settings from `node-agent.yaml`; the report comes from the configuration alone
    /// until [`RegistrationContext::with_report`] supplies a live inventory.
    pub fn from_config(
        config: &AgentConfig,
        server_tls: Option<TlsSource>,
    ) -> Result<Self, RegistrationError> {
        let tls = config.tls.as_ref().ok_or(RegistrationError::NoTls)?;
        if config.controllers.is_empty() {
            return Err(RegistrationError::NoControllers);
        }
        let report = crate::inventory::report::report_from_config(config);
        let mut dns_names = vec![config.effective_hostname(), "localhost".to_string()];
        dns_names.push("127.0.0.1".to_string());
        dns_names.dedup();
        Ok(RegistrationContext {
            node_id: config.node_id.clone(),
            controllers: config.controllers.clone(),
            heartbeat_interval: Duration::from_secs(config.heartbeat_interval_seconds.max(1)),
            ca_file: tls.ca_file.clone(),
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            dns_names,
            report: Arc::new(move || {
                let report = report.clone();
                Box::pin(async move { report })
            }),
            server_tls,
            renew_before: kcore_pki::RENEW_BEFORE,
            renew_retry_min: RENEW_RETRY_MIN,
            client_options: ClientOptions::default(),
            client_tx: None,
        })
    }

    /// Use `report` to build the node's report (for example [`inventory_report_fn`]).
    pub fn with_report(mut self, report: ReportFn) -> Self {
        self.report = report;
        self
    }
}

/// The node's credentials from disk, checked to be this node's.
fn load_credentials(ctx: &RegistrationContext) -> Result<Credentials, RegistrationError> {
    let files = kcore_pki::CredentialFiles::new(&ctx.ca_file, &ctx.cert_file, &ctx.key_file);
    let creds = Credentials::load(&files).map_err(|err| match err {
        kcore_pki::PkiError::Io { path, source, .. } => {
            RegistrationError::ReadCredentials { path, source }
        }
        other => RegistrationError::Pki(other),
    })?;
    let identity = creds.identity()?;
    if identity.role != kcore_pki::Role::Node || identity.id != ctx.node_id {
        return Err(RegistrationError::WrongIdentity {
            path: ctx.cert_file.clone(),
            expected: ctx.node_id.clone(),
            found: identity.uri(),
        });
    }
    Ok(creds)
}

/// Agents talk only to controllers of their own cluster: a node certificate (or anything
/// else the root signed) answering at a controller's address is refused (review D1).
fn controller_tls(creds: &Credentials) -> Result<rustls::ClientConfig, RegistrationError> {
    let cluster = creds.identity()?.cluster;
    Ok(creds.client_config(&kcore_pki::PeerExpectation::controller(&cluster))?)
}

/// `HOST:PORT` list to `https://HOST:PORT` base URLs.
pub fn base_urls(controllers: &[String]) -> Vec<String> {
    controllers
        .iter()
        .map(|c| kcore_net::https_url(c))
        .collect()
}

/// The loop's working state.
struct Session {
    creds: Credentials,
    client: Client,
    registered: bool,
    beats: u64,
    /// After a renewal that failed or was refused: not before this instant again.
    renew_not_before: Option<tokio::time::Instant>,
    /// The wait after the last failed renewal; doubles up to [`RENEW_RETRY_MAX`].
    renew_backoff: Duration,
    /// What went wrong with the last renewal, reported to the controller.
    renewal_problem: Option<String>,
    /// The problem changed since the last report: send a report with the next heartbeat.
    report_due: bool,
}

/// A renewal that failed waits at least this long (or the heartbeat interval, if
/// longer) before the next try, doubling each time up to [`RENEW_RETRY_MAX`].
pub const RENEW_RETRY_MIN: Duration = Duration::from_secs(60);
pub const RENEW_RETRY_MAX: Duration = Duration::from_secs(6 * 3600);

impl Session {
    fn new(ctx: &RegistrationContext) -> Result<Self, RegistrationError> {
        let creds = load_credentials(ctx)?;
        let client = Client::new(
            base_urls(&ctx.controllers),
            controller_tls(&creds)?,
            ctx.client_options.clone(),
        )?;
        Ok(Session {
            creds,
            client,
            registered: false,
            beats: 0,
            renew_not_before: None,
            renew_backoff: Duration::ZERO,
            renewal_problem: None,
            report_due: false,
        })
    }

    /// A renewal failed: keep the current credentials, wait before the next try, and
    /// tell the controller (`kctl describe node` shows it).
    fn renewal_failed(&mut self, ctx: &RegistrationContext, problem: String) {
        let floor = ctx.renew_retry_min.max(ctx.heartbeat_interval);
        self.renew_backoff = (self.renew_backoff * 2).clamp(floor, RENEW_RETRY_MAX.max(floor));
        self.renew_not_before = Some(tokio::time::Instant::now() + self.renew_backoff);
        tracing::warn!(
            node = %ctx.node_id,
            retry_in = ?self.renew_backoff,
            "certificate renewal failed, keeping the current certificate: {problem}"
        );
        if self.renewal_problem.as_deref() != Some(problem.as_str()) {
            self.renewal_problem = Some(problem);
            self.report_due = true;
        }
    }

    fn renewal_succeeded(&mut self) {
        self.renew_backoff = Duration::ZERO;
        self.renew_not_before = None;
        if self.renewal_problem.take().is_some() {
            self.report_due = true;
        }
    }
}

/// Registers the node with the first controller that answers.
pub async fn register_once(
    client: &Client,
    node_id: &str,
    report: NodeReport,
) -> Result<NodeAck, ClientError> {
    client
        .post_json(
            &format!("/v1/nodes/{node_id}/register"),
            &RegisterRequest { report },
        )
        .await
}

/// One heartbeat, optionally with a fresh report.
pub async fn heartbeat_once(
    client: &Client,
    node_id: &str,
    report: Option<NodeReport>,
) -> Result<NodeAck, ClientError> {
    client
        .post_json(
            &format!("/v1/nodes/{node_id}/heartbeat"),
            &HeartbeatRequest { report },
        )
        .await
}

/// Renews the certificate if it is within `ctx.renew_before` of expiry, or the controller
/// asked for it (`asked`: it was issued by a retired sub-CA), and no failed attempt asks
/// to wait: new key and CSR, signed by a controller, checked, written
/// atomically, TLS swapped. Returns whether it renewed. A failure (controller error or
/// a certificate that [`Credentials::check_replacement`] refuses) keeps the current
/// credentials, is logged and reported to the controller, and backs off; it does not
/// fail the heartbeat that preceded it.
async fn renew_if_due(
    ctx: &RegistrationContext,
    session: &mut Session,
    asked: bool,
) -> Result<bool, RegistrationError> {
    let now = time::OffsetDateTime::now_utc();
    if !asked && !kcore_pki::needs_renewal(&session.creds.cert_pem, now, ctx.renew_before)? {
        return Ok(false);
    }
    if let Some(at) = session.renew_not_before
        && tokio::time::Instant::now() < at
    {
        return Ok(false);
    }
    match renew(ctx, session).await {
        Ok(()) => {
            session.renewal_succeeded();
            Ok(true)
        }
        Err(err) => {
            session.renewal_failed(ctx, err.to_string());
            Ok(false)
        }
    }
}

async fn renew(ctx: &RegistrationContext, session: &mut Session) -> Result<(), RegistrationError> {
    let identity = session.creds.identity()?;
    tracing::info!(node = %ctx.node_id, "renewing the certificate (it expires within the renewal window, or the controller asked: its sub-CA was retired)");
    let (key_pem, csr_pem) = kcore_pki::generate_csr(&identity, &ctx.dns_names)?;
    let signed: CertificateResponse = session
        .client
        .post_json(
            &format!("/v1/nodes/{}/renew", ctx.node_id),
            &CsrRequest { csr_pem },
        )
        .await?;
    let new_creds = Credentials {
        ca_pem: session.creds.ca_pem.clone(),
        cert_pem: signed.chain_pem.clone(),
        key_pem,
    };
    // Check and build every TLS config before touching the disk: a certificate that is
    // expired, shorter-lived, for another identity or key, or does not chain is refused
    // here and the old files stay in place (security review D2).
    session
        .creds
        .check_replacement(&new_creds, time::OffsetDateTime::now_utc())?;
    let client_tls = controller_tls(&new_creds)?;
    let server_tls = match &ctx.server_tls {
        Some(_) => Some(new_creds.server_config()?),
        None => None,
    };
    install_credentials(ctx, &new_creds)?;
    if let (Some(source), Some(config)) = (&ctx.server_tls, server_tls) {
        source.replace(config);
    }
    session.client.replace_tls(client_tls)?;
    session.creds = new_creds;
    tracing::info!(
        node = %ctx.node_id,
        not_after = %signed.certificate.not_after,
        "certificate renewed and reloaded"
    );
    Ok(())
}

/// Installs a new key and certificate. Both are first written completely (fsynced) next
/// to their targets as `*.new`, then renamed into place key first, certificate right
/// after: the only moment the pair on disk does not match is between two renames, not
/// during any write. A leftover `*.new` from a crash is simply overwritten next time.
fn install_credentials(
    ctx: &RegistrationContext,
    creds: &Credentials,
) -> Result<(), RegistrationError> {
    let staged = |path: &PathBuf| {
        let mut name = path.as_os_str().to_owned();
        name.push(".new");
        PathBuf::from(name)
    };
    let (key_new, cert_new) = (staged(&ctx.key_file), staged(&ctx.cert_file));
    let write = |path: &PathBuf, contents: &str, mode: u32| {
        kcore_pki::write_atomically(path, contents.as_bytes(), mode).map_err(|source| {
            RegistrationError::Write {
                path: path.clone(),
                source,
            }
        })
    };
    write(&key_new, &creds.key_pem, 0o600)?;
    write(&cert_new, &creds.cert_pem, 0o644)?;
    let rename = |from: &PathBuf, to: &PathBuf| {
        std::fs::rename(from, to).map_err(|source| RegistrationError::Write {
            path: to.clone(),
            source,
        })
    };
    rename(&key_new, &ctx.key_file)?;
    rename(&cert_new, &ctx.cert_file)?;
    Ok(())
}

fn log_failure(what: &str, err: &RegistrationError) {
    match err {
        RegistrationError::Client(ClientError::Api { error, .. })
            if error.is(kcore_api::ErrorCode::NodeRejected) =>
        {
            tracing::error!("{what}: {err} (an operator rejected this node id)");
        }
        _ => tracing::warn!("{what}: {err}"),
    }
}

/// One turn of the loop: load credentials if needed, register or heartbeat, renew when
/// due. Public so tests can drive the loop step by step.
pub async fn step(
    ctx: &RegistrationContext,
    session: &mut Option<SessionHandle>,
) -> Result<Option<NodeAck>, RegistrationError> {
    if session.is_none() {
        let s = Session::new(ctx)?;
        if let Some(tx) = &ctx.client_tx {
            tx.send_replace(Some(s.client.clone()));
        }
        *session = Some(SessionHandle(s));
    }
    let Some(SessionHandle(s)) = session.as_mut() else {
        return Ok(None);
    };
    let ack = if s.registered {
        s.beats += 1;
        let report = if s.beats % REPORT_EVERY == 0 || s.report_due {
            s.report_due = false;
            let mut report = (ctx.report)().await;
            report.certificate_renewal_problem = s.renewal_problem.clone();
            Some(report)
        } else {
            None
        };
        match heartbeat_once(&s.client, &ctx.node_id, report).await {
            Ok(ack) => ack,
            Err(err)
                if err.api_code() == Some(kcore_api::ErrorCode::NodeNotRegistered.as_str()) =>
            {
                // The controller lost us (new database): register again next turn.
                s.registered = false;
                return Err(err.into());
            }
            Err(err) => return Err(err.into()),
        }
    } else {
        let mut report = (ctx.report)().await;
        report.certificate_renewal_problem = s.renewal_problem.clone();
        let ack = register_once(&s.client, &ctx.node_id, report).await?;
        s.registered = true;
        tracing::info!(
            node = %ctx.node_id,
            status = %ack.status,
            controller = %ack.controller_id,
            "registered"
        );
        if ack.status == NodeStatus::Pending {
            tracing::warn!(
                node = %ctx.node_id,
                "waiting for approval: run `kctl node approve {}`",
                ctx.node_id
            );
        }
        ack
    };
    renew_if_due(ctx, s, ack.renew_certificate).await?;
    Ok(Some(ack))
}

/// Opaque state carried between [`step`] calls.
pub struct SessionHandle(Session);

impl SessionHandle {
    /// Why the last renewal failed, while it keeps failing.
    pub fn renewal_problem(&self) -> Option<&str> {
        self.0.renewal_problem.as_deref()
    }

    /// The node's current certificate chain (PEM), as the loop uses it.
    pub fn cert_pem(&self) -> &str {
        &self.0.creds.cert_pem
    }
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("registered", &self.0.registered)
            .finish_non_exhaustive()
    }
}

/// Registers, heartbeats every `heartbeat_interval` and renews the certificate, until
/// `shutdown` completes. Failures are logged and retried on the next tick.
pub async fn run(ctx: RegistrationContext, shutdown: impl Future<Output = ()> + Send) {
    run_with(ctx, &RegistrationMetrics::default(), shutdown).await;
}

/// [`run`], recording each registration's and heartbeat's success or failure in `metrics`
/// (the agent's `/metrics`).
pub async fn run_with(
    ctx: RegistrationContext,
    metrics: &RegistrationMetrics,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tick = tokio::time::interval(ctx.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut session = None;
    let mut last_status = None;
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        // What this turn does: a heartbeat once registered, a registration before.
        let call = match &session {
            Some(SessionHandle(s)) if s.registered => ControllerCall::Heartbeat,
            _ => ControllerCall::Register,
        };
        let outcome = step(&ctx, &mut session).await;
        match &outcome {
            Ok(Some(_)) => metrics.succeeded(call),
            Ok(None) => {}
            Err(_) => metrics.failed(call),
        }
        match outcome {
            Ok(Some(ack)) => {
                if last_status != Some(ack.status) {
                    tracing::info!(node = %ctx.node_id, status = %ack.status, "controller reports status");
                    last_status = Some(ack.status);
                }
            }
            Ok(None) => {}
            Err(err) => {
                if matches!(
                    err,
                    RegistrationError::ReadCredentials { .. }
                        | RegistrationError::WrongIdentity { .. }
                ) {
                    // Reload from disk next time: the operator may be installing the files.
                    session = None;
                }
                log_failure("registration", &err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_reads_the_controllers_from_the_configuration() {
        let yaml = "nodeId: n1\ndcId: DC2\nhostname: hv1\ncontrollers: [\"127.0.0.1:9090\"]\nstorage:\n  backend: lvm\n  lvm: { vgName: vg_x, lvPrefix: k- }\ntls: { caFile: /a, certFile: /b, keyFile: /c }\n";
        let config = AgentConfig::parse(yaml, std::path::Path::new("a.yaml")).unwrap();
        let ctx = RegistrationContext::from_config(&config, None).unwrap();
        assert_eq!(ctx.controllers, vec!["127.0.0.1:9090".to_string()]);
        assert_eq!(base_urls(&ctx.controllers), vec!["https://127.0.0.1:9090"]);
    }
}
