//! The kcore controller: the cluster's state, PKI authority and API.
//!
//! - [`config`], `controller.yaml`.
//! - [`store`], SQLite state as last-writer-wins operations, the generic resource store
//!   over them (`apply / get / list / delete / watch`), heartbeats as soft state.
//! - [`api`], the `/v1` routes and their role checks.
//! - [`membership`], `kind: Controller`: registration, the peer set from the records,
//!   revocation of deleted controllers.
//! - [`replication`], pulling operations from the peer set.
//! - [`rollout`], the `ClusterUpdate` engine: ownership, batches, step assignment.
//! - [`vm`], `kind: VM`: placement ([`vm::scheduler`]), node reports, two-step deletion.
//! - [`assignment`], what a node is told on its long-poll: its rollout step and its VMs.
//!
//! Serving (mutual TLS, the caller's identity per request, hot-swappable certificates)
//! comes from `kcore-net`.
//!
//! [`run`] is the whole daemon; `main.rs` only parses flags and starts tracing, and tests
//! call [`run`] in-process on `127.0.0.1:0`.

pub mod api;
pub mod assignment;
pub mod cli;
pub mod config;
pub mod membership;
pub mod replication;
pub mod rollout;
pub mod store;
pub mod sub_ca;
pub mod vm;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::ControllerConfig;

/// Why the controller could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Pki {
        what: String,
        source: kcore_pki::PkiError,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("registering this controller: {0}")]
    Membership(#[from] membership::MembershipError),
    #[error("peer clients: {0}")]
    Peers(String),
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Every agent keeps one connection open between heartbeats (they come more often than
/// the client's idle timeout), so a controller holds about one connection per node. The
/// process needs a file-descriptor limit above this (systemd: `LimitNOFILE`).
pub const MAX_CONNECTIONS: usize = 16_384;

/// Default limit of connections from one source address. Higher than the agent's:
/// the nodes of a site behind one NAT address each keep a connection open, so this
/// bounds how many nodes may share an address (`connections.maxConnectionsPerPeer`
/// raises it) while still keeping one address from taking every slot.
pub const MAX_CONNECTIONS_PER_PEER: usize = 1024;

/// How often heartbeats (soft state) are written to SQLite.
const HEARTBEAT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

fn read(what: &'static str, path: &std::path::Path) -> Result<String, ControllerError> {
    std::fs::read_to_string(path).map_err(|source| ControllerError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Everything [`run`] needs besides the socket, loaded and checked up front so a bad
/// file is reported before the port opens.
pub fn build_state(config: ControllerConfig) -> Result<Arc<api::AppState>, ControllerError> {
    let tls = &config.tls;
    let trust_pem = read("tls.caFile", &tls.ca_file)?;
    let signer = kcore_pki::Authority::from_pem(
        &read("tls.subCaCertFile", &tls.sub_ca_cert_file)?,
        &read("tls.subCaKeyFile", &tls.sub_ca_key_file)?,
    )
    .map_err(|source| ControllerError::Pki {
        what: format!(
            "tls.subCaCertFile {} / tls.subCaKeyFile {}",
            tls.sub_ca_cert_file.display(),
            tls.sub_ca_key_file.display()
        ),
        source,
    })?;
    let store = store::Store::open_with(
        &config.database_path,
        &config.controller_id,
        &store::StoreOptions {
            max_clock_skew: Duration::from_secs(config.max_clock_skew_seconds),
        },
    )?;
    Ok(Arc::new(api::AppState {
        config,
        store,
        signer: RwLock::new(Arc::new(signer)),
        trust_pem,
        renewals: Default::default(),
        peers: Default::default(),
        record_changed: Default::default(),
        credentials_changed: Default::default(),
        peer_set: Default::default(),
        requests: Default::default(),
        assignments: Default::default(),
    }))
}

/// The rustls server configuration from `tls.caFile`, `tls.certFile` and `tls.keyFile`.
pub fn server_tls(config: &ControllerConfig) -> Result<rustls::ServerConfig, ControllerError> {
    let tls = &config.tls;
    let files = kcore_pki::CredentialFiles::new(&tls.ca_file, &tls.cert_file, &tls.key_file);
    let pki = |source| ControllerError::Pki {
        what: format!(
            "tls.caFile {} / tls.certFile {} / tls.keyFile {}",
            tls.ca_file.display(),
            tls.cert_file.display(),
            tls.key_file.display()
        ),
        source,
    };
    kcore_pki::Credentials::load(&files)
        .and_then(|creds| creds.server_config())
        .map_err(pki)
}

/// Runs the controller on `listener` until `shutdown` completes, then flushes soft state.
pub async fn run(
    listener: TcpListener,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    let tls = server_tls(&config)?;
    // A controller made by `kctl create controller` has no sub-CA key yet: it fetches it
    // from a peer before anything can sign with it.
    if !config.tls.sub_ca_key_file.exists() {
        membership::fetch_sub_ca_key(&config)
            .await
            .map_err(ControllerError::Peers)?;
    }
    let state = build_state(config)?;
    serve(listener, tls, state, shutdown).await
}

/// [`run`] with the state already built ([`build_state`]): the caller keeps a handle on
/// it, so an in-process test can watch this controller's store while it serves and
/// replicates.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    state: Arc<api::AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    tracing::info!(
        controller = %state.config.controller_id,
        cluster = %state.config.cluster_name,
        address = ?listener.local_addr().ok(),
        manual_approval = state.config.require_manual_approval,
        "controller listening"
    );
    // Background tasks are tracked and stopped through one token, then awaited: none is
    // aborted mid-write or left running after `run` returns.
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    {
        let state = state.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_FLUSH_INTERVAL);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(err) = state.store.flush_heartbeats() {
                    tracing::warn!("cannot record heartbeats: {err}");
                }
            }
        });
    }
    let listening = listener
        .local_addr()
        .map(|a| a.to_string())
        .map_err(ControllerError::Serve)?;
    let me = membership::own_record(&state, &listening)?;
    if membership::register(&state, &me)? == membership::Registered::Revoked {
        tracing::error!(serial = %me.spec.certificate_serial, "this controller was deleted and its certificate revoked; it will not register (install a new certificate under a new id)");
    }
    let factory = replication::PeerFactory::new(&state).map_err(ControllerError::Peers)?;
    let tls = kcore_net::TlsSource::new(tls);
    tasks.spawn(rollout::run(state.clone(), stop.clone()));
    tasks.spawn(vm::run(state.clone(), stop.clone()));
    tasks.spawn(replication::run(
        state.clone(),
        factory.clone(),
        tls.clone(),
        stop.clone(),
    ));
    {
        // A sub-CA install reissued this controller's certificate: new handshakes and
        // peer clients use it from now on (open connections keep theirs).
        let (state, stop, tls, factory) =
            (state.clone(), stop.clone(), tls.clone(), factory.clone());
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = state.credentials_changed.notified() => {}
                }
                match server_tls(&state.config) {
                    Ok(config) => tls.replace(config),
                    Err(err) => {
                        tracing::error!("cannot load this controller's new certificate: {err}")
                    }
                }
                if let Err(err) = factory.reload() {
                    tracing::error!(
                        "cannot load this controller's new certificate for its peers: {err}"
                    );
                }
                tracing::info!("this controller's new certificate is in use");
            }
        });
    }
    tasks.spawn(refresh_registration(
        state.clone(),
        me,
        listening,
        factory,
        stop.clone(),
    ));
    tasks.close();
    let result = kcore_net::serve_with(
        listener,
        tls,
        api::router(state.clone()),
        shutdown,
        state.config.connections.apply(kcore_net::ServeOptions {
            max_connections: MAX_CONNECTIONS,
            max_connections_per_peer: MAX_CONNECTIONS_PER_PEER,
            cluster: Some(state.config.cluster_name.clone()),
            ..kcore_net::ServeOptions::default()
        }),
    )
    .await;
    stop.cancel();
    tasks.wait().await;
    state.store.flush_heartbeats()?;
    tracing::info!("controller stopped");
    result.map_err(ControllerError::Serve)
}

/// Refreshes this controller's own record every [`membership::REFRESH_INTERVAL`] (and at
/// once when `record_changed` is notified, after a sub-CA install) and sends it to every
/// configured peer, so the controllers it joins learn of it (and dial it) without pulling
/// from it first. A seed that is down is tried again at the next refresh.
async fn refresh_registration(
    state: Arc<api::AppState>,
    mut me: membership::SelfRecord,
    listening: String,
    factory: replication::PeerFactory,
    stop: CancellationToken,
) {
    // Made again after this controller's certificate changed (a sub-CA rotation).
    let seed_clients = |factory: &replication::PeerFactory| -> Vec<(String, kcore_net::Client)> {
        state
            .config
            .peers
            .iter()
            .filter_map(|seed| match factory.client(seed) {
                Ok(client) => Some((seed.clone(), client)),
                Err(err) => {
                    tracing::warn!(peer = %seed, "cannot make a client: {err}");
                    None
                }
            })
            .collect()
    };
    let mut seeds = seed_clients(&factory);
    let mut generation = factory.generation();
    let path = format!("/v1/controllers/{}/register", me.id);
    let mut tick = tokio::time::interval(membership::REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
            () = state.record_changed.notified() => {}
        }
        match membership::own_record(&state, &listening) {
            Ok(now) => me = now,
            Err(err) => {
                tracing::warn!("cannot describe this controller, keeping its last record: {err}")
            }
        }
        match membership::register(&state, &me) {
            Ok(membership::Registered::Written) => {}
            Ok(membership::Registered::Revoked) => {
                tracing::warn!(
                    "this controller's certificate is revoked; not refreshing its record"
                );
                continue;
            }
            Err(err) => tracing::warn!("cannot refresh this controller's record: {err}"),
        }
        if factory.generation() != generation {
            generation = factory.generation();
            seeds = seed_clients(&factory);
        }
        for (seed, client) in &seeds {
            let sent = tokio::select! {
                () = stop.cancelled() => return,
                sent = client.post_json::<_, serde_json::Value>(&path, &me.spec) => sent,
            };
            if let Err(err) = sent {
                tracing::debug!(peer = %seed, "cannot register with the peer: {err}");
            }
        }
    }
}
