//! The agent's HTTPS server: TLS per mode (managed: mTLS against the cluster CA; install:
//! a self-signed certificate whose SHA-256 fingerprint is logged), the `/v1` routes and
//! who may call them. In install mode only the inventory, install ([`crate::install`]) and
//! operation routes exist; everything else is a 404, not a 403, so a live ISO does not
//! even advertise day-2 operations (nor `/metrics`, which needs a client identity; managed
//! mode serves it, [`crate::metrics`]).

use kcore_api::ErrorCode;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kcore_api::inventory::{ApplyDiskoRequest, ApplyNixRequest};
use kcore_disko::BlockSnapshot;
// kcore-net's `Path`: a segment that is not percent-encoded UTF-8 gets the JSON envelope.
use kcore_net::ApiPath as UrlPath;
use kcore_net::{ApiFailure, ApiJson, TlsSource, allow_roles, ndjson_response};
use kcore_pki::Role;
use tokio::net::TcpListener;

use crate::config::{AgentConfig, Mode};
use crate::ops::Operations;
use crate::tools::Tools;
use crate::{disko_apply, inventory, nix_apply};

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read {what} {path}: {source}")]
    ReadTls {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS set-up: {0}")]
    Tls(#[from] kcore_pki::PkiError),
    #[error("managed mode needs the `tls` section (caFile, certFile, keyFile)")]
    NoTls,
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
}

/// Settings that are not part of `node-agent.yaml` because only tests and test beds
/// change them. `Default` is what production uses.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Extra environment for the long-running commands (disko, nixos-rebuild); passed into
    /// the transient unit with `systemd-run --setenv`.
    pub extra_env: Vec<(String, String)>,
    /// The system profile whose generation apply-nix reports.
    pub system_profile: PathBuf,
    /// Plan disk applies against this snapshot instead of the live machine (tests that
    /// cannot have a blank disk; the real block-device tests run in the storage bed).
    pub block_snapshot: Option<BlockSnapshot>,
    /// Where the transient rebuild units write their output (followed and streamed).
    pub rebuild_log_dir: PathBuf,
    /// How long one rebuild step may run before its unit is stopped
    /// ([`crate::nix_apply::REBUILD_TIMEOUT`]; tests shorten it).
    pub rebuild_timeout: std::time::Duration,
    /// The program a transient unit's `ExecStopPost=` runs as `PROGRAM unit-result FILE` to
    /// leave its exit status for an agent that was not there when it ended
    /// ([`crate::ops::unit`]). By default this agent's own executable; `None` (an
    /// executable that is not kcore-agent, e.g. another crate's test binary hosting the
    /// agent) starts units without it, and a unit that ends while no agent watches is then
    /// reported `INTERRUPTED`.
    pub unit_result_helper: Option<PathBuf>,
    /// The root the rollout steps see the system under: `/run/current-system`,
    /// `/run/booted-system` and the system profile (`system_profile` below it). `/` in
    /// production; the rollout tests' fake root of a node (`crate::rollout::system`).
    pub system_root: PathBuf,
    /// Where the inventory reads sysfs (NIC speeds, the TPM): `/sys` in production; a
    /// directory of the tests' making, so a TPM can be present or absent.
    pub sysfs_root: PathBuf,
    /// Where the install opens the device paths it writes to itself (the key device's
    /// partition, `crate::install::steps`): `/` in production; the tests' directory.
    pub dev_root: PathBuf,
}

/// This process's executable if it is kcore-agent (also as NixOS's wrapped
/// `.kcore-agent-wrapped`).
fn own_agent_executable() -> Option<PathBuf> {
    std::env::current_exe().ok().filter(|exe| {
        exe.file_name()
            .is_some_and(|n| n.to_string_lossy().contains("kcore-agent"))
    })
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            extra_env: Vec::new(),
            system_profile: PathBuf::from("/nix/var/nix/profiles/system"),
            block_snapshot: None,
            rebuild_log_dir: PathBuf::from("/var/log/kcore-agent"),
            rebuild_timeout: crate::nix_apply::REBUILD_TIMEOUT,
            unit_result_helper: own_agent_executable(),
            system_root: PathBuf::from("/"),
            sysfs_root: PathBuf::from("/sys"),
            dev_root: PathBuf::from("/"),
        }
    }
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct AgentState {
    pub config: AgentConfig,
    pub tools: Tools,
    pub options: RuntimeOptions,
    pub ops: Operations,
    /// What may not run twice at once: disk work, system activation ([`crate::ops::lanes`]).
    pub lanes: crate::ops::Lanes,
    /// Set when the agent stops: operations running in a unit stop following it and stay
    /// `running` for the next agent to re-attach.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// `evaluation.maxConcurrent` requests evaluating submitted Nix at once (dry runs
    /// included); one more gets `EVAL_BUSY`.
    pub evaluations: Arc<tokio::sync::Semaphore>,
    /// Request latency and registration figures for `GET /metrics` ([`crate::metrics`]).
    pub metrics: crate::metrics::AgentMetrics,
    /// The registration loop's controller client (mTLS, failover, renewed TLS), `None`
    /// until it made one: the rollout assignment loop polls through it and the rollout
    /// health gate asks through it whether this node reaches a controller.
    pub controller_client: Arc<tokio::sync::watch::Sender<Option<kcore_net::Client>>>,
    /// Install mode: the keys made and the installs' claims ([`crate::install`]).
    pub install: crate::install::InstallState,
}

impl AgentState {
    /// A slot for evaluating submitted Nix, held until the permit is dropped; refused at
    /// once (`429 EVAL_BUSY`) when all are taken, never queued: a queue would let callers
    /// pile up requests that each later hold an evaluator.
    pub fn evaluation_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiFailure> {
        self.evaluations.clone().try_acquire_owned().map_err(|_| {
            ApiFailure::with_status(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::EvalBusy,
                format!(
                    "{} evaluations of submitted Nix are already running on this node \
                     (evaluation.maxConcurrent); nothing was done, try again when one has finished",
                    self.config.evaluation.max_concurrent
                ),
            )
        })
    }

    /// The bounds for one evaluation of submitted Nix with this wall-clock timeout.
    pub fn eval_bounds(&self, timeout: std::time::Duration) -> kcore_nix::EvalBounds {
        kcore_nix::EvalBounds {
            timeout,
            memory_mib: self.config.evaluation.memory_limit_mib,
            cpu_seconds: self.config.evaluation.cpu_limit_seconds,
        }
    }
}

/// A configured agent, ready to serve.
pub struct Agent {
    state: Arc<AgentState>,
    tls: TlsSource,
    fingerprint: Option<String>,
    /// The cluster of this node's own certificate (managed mode): client certificates
    /// naming another cluster are refused with `403 WRONG_CLUSTER`, as the controller does.
    cluster: Option<String>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node_id", &self.state.config.node_id)
            .field("mode", &self.state.config.mode)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

fn read(what: &'static str, path: &std::path::Path) -> Result<String, AgentError> {
    std::fs::read_to_string(path).map_err(|source| AgentError::ReadTls {
        what,
        path: path.to_path_buf(),
        source,
    })
}

impl Agent {
    /// Load TLS material (managed) or make the self-signed certificate (install).
    pub fn new(config: AgentConfig, options: RuntimeOptions) -> Result<Agent, AgentError> {
        let (server_config, fingerprint, cluster) = match config.mode {
            Mode::Managed => {
                let tls = config.tls.as_ref().ok_or(AgentError::NoTls)?;
                let ca = read("tls.caFile", &tls.ca_file)?;
                let cert = read("tls.certFile", &tls.cert_file)?;
                let key = read("tls.keyFile", &tls.key_file)?;
                let server = kcore_pki::server_config(&ca, &cert, &key)?;
                // A node certificate without a kcore identity still serves (the
                // handshake checks the chain); only the cluster check is then skipped.
                let cluster = kcore_pki::certs_from_pem(&cert)?
                    .first()
                    .and_then(|leaf| kcore_pki::identity_of(leaf).ok())
                    .map(|identity| identity.cluster);
                (server, None, cluster)
            }
            Mode::Install => {
                let mut names = vec![config.effective_hostname(), "localhost".to_string()];
                names.dedup();
                let (certified, fingerprint) = kcore_pki::self_signed_install(&names)?;
                let server = kcore_pki::server_config_no_client_auth(
                    &certified.cert_pem,
                    &certified.key_pem,
                )?;
                (server, Some(fingerprint), None)
            }
        };
        let tools = Tools::new(config.binaries.clone());
        let ops = Operations::persistent(crate::ops::dir_for(&config));
        let evaluations = Arc::new(tokio::sync::Semaphore::new(
            config.evaluation.max_concurrent,
        ));
        Ok(Agent {
            state: Arc::new(AgentState {
                config,
                tools,
                options,
                ops,
                lanes: crate::ops::Lanes::default(),
                stopping: tokio::sync::watch::Sender::new(false),
                evaluations,
                metrics: Default::default(),
                controller_client: Arc::new(tokio::sync::watch::Sender::new(None)),
                install: Default::default(),
            }),
            tls: TlsSource::new(server_config),
            fingerprint,
            cluster,
        })
    }

    /// The install-mode certificate's SHA-256 fingerprint (what `kctl --fingerprint` pins).
    pub fn fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    pub fn state(&self) -> &Arc<AgentState> {
        &self.state
    }

    /// The routes for this agent's mode.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serve until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AgentError> {
        let addr = listener.local_addr()?;
        match &self.fingerprint {
            Some(fp) => tracing::warn!(
                %addr,
                fingerprint = %fp,
                "install mode: serving inventory only, with a self-signed certificate; \
                 pin it with `kctl --node HOST:PORT --fingerprint {fp}`"
            ),
            None => {
                tracing::info!(%addr, node = %self.state.config.node_id, "managed mode: serving with mTLS")
            }
        }
        let app = self.router();
        let options = self
            .state
            .config
            .connections
            .apply(kcore_net::ServeOptions {
                cluster: self.cluster.clone(),
                ..kcore_net::ServeOptions::default()
            });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        self.start_registration(stop_rx);
        crate::ops::unit::reattach_all(&self.state);
        // After the re-attached ones took their lanes: what a boot left to finish.
        crate::rollout::activate::after_boot(&self.state);
        let state = self.state.clone();
        let shutdown = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            state.stopping.send_replace(true);
        };
        kcore_net::serve_with(listener, self.tls, app, shutdown, options).await?;
        Ok(())
    }

    /// In managed mode with controllers configured, register and heartbeat in the
    /// background (engineer-owned `registration` module) until the agent stops.
    fn start_registration(&self, stop: tokio::sync::watch::Receiver<bool>) {
        let config = &self.state.config;
        if config.mode != Mode::Managed || config.controllers.is_empty() {
            return;
        }
        match crate::registration::RegistrationContext::from_config(config, Some(self.tls.clone()))
        {
            Ok(ctx) => {
                let mut ctx = ctx.with_report(crate::inventory::report::inventory_report_fn(
                    config.clone(),
                    self.state.tools.clone(),
                ));
                // The rollout assignment loop polls through registration's client; its
                // long poll stays under the client's per-attempt timeout.
                ctx.client_tx = Some(self.state.controller_client.clone());
                let client_rx = self.state.controller_client.subscribe();
                let wait = ctx
                    .client_options
                    .attempt_timeout
                    .saturating_sub(std::time::Duration::from_secs(2));
                tokio::spawn(crate::rollout::assignment::run(
                    self.state.clone(),
                    client_rx,
                    wait,
                ));
                let mut stop = stop;
                let metrics = self.state.metrics.registration.clone();
                tokio::spawn(async move {
                    crate::registration::run_with(ctx, &metrics, async move {
                        let _ = stop.wait_for(|stopped| *stopped).await;
                    })
                    .await;
                });
            }
            Err(err) => tracing::warn!(error = %err, "not registering with the controllers"),
        }
    }
}

/// Build the agent from its configuration and serve on `listener` until `shutdown`.
pub async fn run(
    listener: TcpListener,
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    Agent::new(config, RuntimeOptions::default())?
        .serve(listener, shutdown)
        .await
}

const READERS: &[Role] = &[Role::Admin, Role::Controller, Role::Node];
const WRITERS: &[Role] = &[Role::Admin, Role::Controller];
/// The rollout step routes: admins only (the controller's engine drives the same steps
/// through the agent's own assignment loop, `rollout::assignment`).
const ADMINS: &[Role] = &[Role::Admin];
// `GET /metrics`: `kcore_net::metrics::SCRAPERS` (the `metrics` role and admins); the
// `metrics` role is in none of the lists above, so it may call nothing else.

/// The `/v1` routes for the configured mode.
pub fn router(state: Arc<AgentState>) -> Router {
    let inventory = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/inventory/disks", get(disks))
        .route("/v1/inventory/nics", get(nics))
        .route("/v1/inventory/storage", get(storage));
    let app = match state.config.mode {
        // No client identities exist on the live ISO: inventory and the install routes are
        // open (TLS pinned by kctl; nothing secret comes in, the recovery key goes out
        // only for the claim token), nothing else exists.
        Mode::Install => inventory
            .route("/v1/install/plan", post(crate::install::plan_route))
            .route("/v1/install/csr", post(crate::install::csr_route))
            .route("/v1/install/run", post(crate::install::run::run_route))
            .route(
                "/v1/install/recovery-key",
                post(crate::install::run::recovery_key_route),
            )
            .route(
                "/v1/install/reboot",
                post(crate::install::run::reboot_route),
            )
            .route("/v1/operations/{id}", get(operation))
            .route("/v1/operations/{id}/stream", get(operation_stream)),
        Mode::Managed => {
            let day2 = Router::new()
                .route("/v1/disko/apply", post(apply_disko))
                .route("/v1/nix/apply", post(apply_nix))
                .route("/v1/operations/{id}", get(operation))
                .route("/v1/operations/{id}/stream", get(operation_stream))
                .route_layer(from_fn_with_state(WRITERS, allow_roles));
            let rollout = Router::new()
                .route("/v1/rollout/prepare", post(rollout_prepare))
                .route("/v1/rollout/activate", post(rollout_activate))
                .route("/v1/rollout/plan", post(rollout_plan))
                .route("/v1/rollout/steps/{id}", get(rollout_step))
                .route_layer(from_fn_with_state(ADMINS, allow_roles));
            let metrics = Router::new()
                .route(
                    kcore_net::metrics::METRICS_PATH,
                    get(crate::metrics::metrics),
                )
                .route_layer(from_fn_with_state(
                    kcore_net::metrics::SCRAPERS,
                    allow_roles,
                ));
            inventory
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    node_reads_only_itself,
                ))
                .route_layer(from_fn_with_state(READERS, allow_roles))
                .merge(day2)
                .merge(rollout)
                .merge(metrics)
        }
    };
    app.fallback(kcore_net::error::not_found)
        .layer(axum::middleware::from_fn(
            kcore_net::metrics::confine_scrapers,
        ))
        // Last, so it measures every route and the fallback.
        .layer(from_fn_with_state(
            state.metrics.requests.clone(),
            kcore_net::metrics::track_requests,
        ))
        .with_state(state)
}

/// A node identity may read only its own agent's inventory.
async fn node_reads_only_itself(
    State(state): State<Arc<AgentState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<kcore_net::PeerIdentity>()
        .cloned()
        .unwrap_or(kcore_net::PeerIdentity(None));
    if let Some(identity) = &peer.0 {
        if let Err(failure) = kcore_net::ensure_self(identity, &state.config.node_id) {
            return failure.into_response();
        }
    }
    next.run(req).await
}

async fn health(State(state): State<Arc<AgentState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "nodeId": state.config.node_id,
        "mode": state.config.mode,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

fn inventory_failure(err: inventory::InventoryError) -> ApiFailure {
    ApiFailure::new(ErrorCode::InventoryFailed, err.to_string())
}

async fn disks(State(state): State<Arc<AgentState>>) -> Result<Response, ApiFailure> {
    let inv = inventory::collect_disks(
        &state.tools,
        state.options.block_snapshot.as_ref(),
        &state.options.sysfs_root,
    )
    .await
    .map_err(inventory_failure)?;
    Ok(Json(inv).into_response())
}

async fn nics(State(state): State<Arc<AgentState>>) -> Result<Response, ApiFailure> {
    let inv = inventory::collect_nics(&state.tools, &state.options.sysfs_root)
        .await
        .map_err(inventory_failure)?;
    Ok(Json(inv).into_response())
}

async fn storage(State(state): State<Arc<AgentState>>) -> Response {
    Json(inventory::collect_storage(&state.config, &state.tools).await).into_response()
}

async fn apply_disko(
    State(state): State<Arc<AgentState>>,
    ApiJson(req): ApiJson<ApplyDiskoRequest>,
) -> Result<Response, ApiFailure> {
    disko_apply::handle(state, req).await
}

async fn apply_nix(
    State(state): State<Arc<AgentState>>,
    ApiJson(req): ApiJson<ApplyNixRequest>,
) -> Result<Response, ApiFailure> {
    nix_apply::handle(state, req).await
}

async fn rollout_prepare(
    State(state): State<Arc<AgentState>>,
    ApiJson(req): ApiJson<kcore_api::rollout::PrepareRequest>,
) -> Result<Response, ApiFailure> {
    crate::rollout::prepare(state, req).await
}

async fn rollout_activate(
    State(state): State<Arc<AgentState>>,
    ApiJson(req): ApiJson<kcore_api::rollout::ActivateRequest>,
) -> Result<Response, ApiFailure> {
    crate::rollout::activate(state, req).await
}

async fn rollout_plan(
    State(state): State<Arc<AgentState>>,
    ApiJson(req): ApiJson<kcore_api::rollout::PrepareRequest>,
) -> Result<Response, ApiFailure> {
    crate::rollout::plan::handle(state, req).await
}

async fn rollout_step(
    State(state): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiFailure> {
    crate::rollout::step(&state, &id)
}

async fn operation(
    State(state): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiFailure> {
    state
        .ops
        .result(&id)
        .map(|r| Json(r).into_response())
        .ok_or_else(|| ApiFailure::not_found(format!("no operation {id:?} on this agent")))
}

async fn operation_stream(
    State(state): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiFailure> {
    state
        .ops
        .stream(&id)
        .map(ndjson_response)
        .ok_or_else(|| ApiFailure::not_found(format!("no operation {id:?} on this agent")))
}
