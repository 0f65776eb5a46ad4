//! The HTTPS accept loop: per-connection TLS handshake (with a timeout), connection
//! limits (global, per source address, first-request and idle timeouts, a deadline for
//! request bodies), the peer's certificate identity attached to every request,
//! hot-swappable server certificates, and graceful shutdown that lets in-flight
//! requests finish.

use kcore_api::ErrorCode;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::response::IntoResponse as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use kcore_pki::Identity;
use rustls::ServerConfig;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::request::{self, DeadlineBody, Quiet, TrackedBody, Tracker};

/// The server's TLS configuration, swappable while the server runs: certificate
/// renewal calls [`TlsSource::replace`]; the listener and open connections are not
/// touched, and every handshake after the call uses the new configuration.
///
/// It also holds the set of revoked certificate serials (the replicated revocation
/// list): a peer whose leaf serial is in it gets `401 CERTIFICATE_REVOKED` on every
/// request. This works across sub-CA rotations, unlike per-issuer CRLs (which
/// [`kcore_pki::server_config_with_crls`] also supports).
#[derive(Clone)]
pub struct TlsSource {
    current: Arc<RwLock<Arc<ServerConfig>>>,
    revoked: Arc<RwLock<Arc<HashSet<String>>>>,
}

/// Serial numbers compare as lowercase hex without colons or leading zero bytes.
fn normalise_serial(serial: &str) -> String {
    let hex: String = serial
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let mut rest = hex.as_str();
    while rest.len() > 2 && rest.starts_with("00") {
        rest = &rest[2..];
    }
    rest.to_string()
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSource")
    }
}

impl TlsSource {
    pub fn new(config: ServerConfig) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(config))),
            revoked: Arc::new(RwLock::new(Arc::new(HashSet::new()))),
        }
    }

    /// Replaces the set of revoked leaf serials (hex, as [`kcore_pki::serial_hex`]
    /// returns; colons and case are ignored). Applies to new connections.
    pub fn set_revoked_serials<I, S>(&self, serials: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let set: HashSet<String> = serials
            .into_iter()
            .map(|s| normalise_serial(s.as_ref()))
            .collect();
        *self.revoked.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    /// Whether a leaf serial is in the revocation set.
    pub fn is_revoked(&self, serial_hex: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&normalise_serial(serial_hex))
    }

    /// Installs a new configuration for all future handshakes.
    pub fn replace(&self, config: ServerConfig) {
        // A poisoned lock only means a writer panicked mid-assignment of an Arc, which
        // cannot leave it half-written; keep serving.
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(config);
    }

    /// The configuration the next handshake will use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The identity in the peer's client certificate (`None`: no certificate, e.g. install
/// mode, or a certificate without a `kcore://` SAN URI). Inserted into every request's
/// extensions by [`serve`] and usable directly as an extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(pub Option<Identity>);

/// Facts about the peer's leaf certificate, when it presented one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertInfo {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The issuer's distinguished name (the sub-CA), as [`kcore_pki::CertInfo`] has it.
    pub issuer: String,
    /// SHA-256 of the DER leaf, lowercase hex.
    pub fingerprint: String,
    /// Serial number, lowercase hex (what revocation lists name).
    pub serial: String,
    /// Serial of the presented certificate that issued the leaf (the sub-CA), when the
    /// chain holds one whose subject is the leaf's issuer.
    pub issuer_serial: Option<String>,
    /// Serials of every other certificate the peer presented with its leaf. A verified
    /// chain holds the real issuer, so revoking a sub-CA refuses every leaf it signed.
    pub chain_serials: Vec<String>,
}

impl PeerCertInfo {
    /// The first serial of the presented chain (leaf or intermediate) that `source`
    /// revokes.
    fn revoked_serial(&self, source: &TlsSource) -> Option<&str> {
        std::iter::once(&self.serial)
            .chain(&self.chain_serials)
            .find(|serial| source.is_revoked(serial))
            .map(String::as_str)
    }
}

/// Request extension and extractor: the peer's leaf certificate facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert(pub Option<PeerCertInfo>);

impl<S: Send + Sync> FromRequestParts<S> for PeerIdentity {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Requests that did not come through `serve` (e.g. `Router::oneshot` in unit
        // tests) carry no peer: they are unauthenticated, never trusted by default.
        Ok(parts
            .extensions
            .get::<PeerIdentity>()
            .cloned()
            .unwrap_or(PeerIdentity(None)))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PeerCert {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<PeerCert>()
            .cloned()
            .unwrap_or(PeerCert(None)))
    }
}

/// Tunables of the accept loop. The defaults are what the agent uses; every server sets
/// its own `max_connections` and may override the rest from its configuration file
/// ([`ConnectionLimits`]).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A client that has not finished its TLS handshake by then is dropped, so idle
    /// sockets cannot pile up.
    pub handshake_timeout: Duration,
    /// After shutdown is requested, in-flight requests get this long to finish
    /// before their connections are dropped. Also how long an idle HTTP/2 connection
    /// gets to close after its GOAWAY before it is dropped.
    pub drain_timeout: Duration,
    /// An HTTP/1 connection that does not send a complete request head within this
    /// time (including an idle keep-alive connection) is closed. Longer than the
    /// client's pool idle time (20 s) so clients close first.
    pub header_read_timeout: Duration,
    /// At most this many connections at once; further clients wait in the kernel's
    /// accept queue instead of exhausting file descriptors.
    pub max_connections: usize,
    /// At most this many connections (handshaking ones included) from one source
    /// address; more are closed at once. Without it one peer that never speaks could
    /// take every slot of `max_connections` and starve everybody else.
    pub max_connections_per_peer: usize,
    /// After the TLS handshake, a connection that has not started a request within
    /// this time is dropped. This is what closes an HTTP/2 client that negotiated `h2`
    /// and never sends its preface (hyper has no timeout for that).
    pub first_request_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2 gets a
    /// GOAWAY). An open NDJSON stream counts as in flight, however quiet it is.
    pub idle_timeout: Duration,
    /// A request body must have arrived completely this long after the request head;
    /// a slower one is cut off with `408 BODY_TIMEOUT` and its handler freed.
    pub body_read_timeout: Duration,
    /// HTTP/2 peers are pinged this often; one that does not answer within
    /// `h2_keep_alive_timeout` is dropped (finds dead peers during long streams).
    pub h2_keep_alive_interval: Duration,
    pub h2_keep_alive_timeout: Duration,
    /// The cluster every client identity must belong to; a certificate naming another
    /// cluster (signed by the same root) gets `403 WRONG_CLUSTER` on every request.
    /// `None`: not checked (install mode has no client identities).
    pub cluster: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_peer: 64,
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            h2_keep_alive_interval: Duration::from_secs(60),
            h2_keep_alive_timeout: Duration::from_secs(20),
            cluster: None,
        }
    }
}

/// The connection limits a server's configuration file may override (key
/// `connections` in `node-agent.yaml` and `controller.yaml`). Every field is optional;
/// an absent one keeps the server's default ([`ServeOptions`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_peer: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_request_timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_timeout_seconds: Option<u64>,
}

/// A [`ConnectionLimits`] value that cannot work: `field` is the YAML key under
/// `connections`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("connections.{field}: {message}")]
pub struct LimitError {
    pub field: &'static str,
    pub message: String,
}

impl ConnectionLimits {
    /// Refuses zeros (a zero limit or timeout would refuse every client).
    pub fn validate(&self) -> Result<(), LimitError> {
        let counts = [
            ("maxConnections", self.max_connections),
            ("maxConnectionsPerPeer", self.max_connections_per_peer),
        ];
        for (field, value) in counts {
            if value == Some(0) {
                return Err(LimitError {
                    field,
                    message: "must be at least 1; leave it out for the default".into(),
                });
            }
        }
        let seconds = [
            ("handshakeTimeoutSeconds", self.handshake_timeout_seconds),
            (
                "firstRequestTimeoutSeconds",
                self.first_request_timeout_seconds,
            ),
            ("idleTimeoutSeconds", self.idle_timeout_seconds),
            ("bodyTimeoutSeconds", self.body_timeout_seconds),
        ];
        for (field, value) in seconds {
            if value == Some(0) {
                return Err(LimitError {
                    field,
                    message: "must be at least 1 (seconds); leave it out for the default".into(),
                });
            }
        }
        Ok(())
    }

    /// `base` with the fields that are set replaced.
    pub fn apply(&self, base: ServeOptions) -> ServeOptions {
        let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
        ServeOptions {
            max_connections: self.max_connections.unwrap_or(base.max_connections),
            max_connections_per_peer: self
                .max_connections_per_peer
                .unwrap_or(base.max_connections_per_peer),
            handshake_timeout: secs(self.handshake_timeout_seconds, base.handshake_timeout),
            first_request_timeout: secs(
                self.first_request_timeout_seconds,
                base.first_request_timeout,
            ),
            idle_timeout: secs(self.idle_timeout_seconds, base.idle_timeout),
            body_read_timeout: secs(self.body_timeout_seconds, base.body_read_timeout),
            ..base
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` completes, with default
/// [`ServeOptions`]. See [`serve_with`].
pub async fn serve(
    listener: TcpListener,
    tls: TlsSource,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, tls, app, shutdown, ServeOptions::default()).await
}

/// Open connections per source address, for `max_connections_per_peer`.
#[derive(Default)]
struct PeerCounts {
    open: HashMap<IpAddr, PeerEntry>,
}

struct PeerEntry {
    open: usize,
    /// When the last "too many connections" warning for this peer was logged: one a
    /// minute, so a flood does not flood the journal too.
    warned: Option<Instant>,
}

/// One connection's place in [`PeerCounts`]; gives it back on drop.
struct PeerSlot {
    counts: Arc<Mutex<PeerCounts>>,
    ip: IpAddr,
}

impl PeerSlot {
    fn take(counts: &Arc<Mutex<PeerCounts>>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut guard = counts.lock().unwrap_or_else(|e| e.into_inner());
        let entry = guard.open.entry(ip).or_insert(PeerEntry {
            open: 0,
            warned: None,
        });
        if entry.open >= max {
            let now = Instant::now();
            if entry
                .warned
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
            {
                entry.warned = Some(now);
                tracing::warn!(
                    peer = %ip,
                    limit = max,
                    "too many connections from one address; closing the new ones"
                );
            }
            return None;
        }
        entry.open += 1;
        Some(PeerSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut guard = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = guard.open.get_mut(&self.ip) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 {
                guard.open.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` over TLS. Each request carries [`PeerIdentity`], [`PeerCert`] and
/// `ConnectInfo<SocketAddr>` extensions. When `shutdown` completes the listener stops
/// accepting, open connections finish their in-flight requests (HTTP/1 keep-alive is
/// closed, HTTP/2 gets GOAWAY), and the call returns once they are done or
/// `drain_timeout` has passed.
///
/// Every error response leaves as the JSON envelope, also axum's own (405, path
/// rejections): see [`crate::error::ensure_envelope`].
pub async fn serve_with(
    listener: TcpListener,
    tls: TlsSource,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let peers = Arc::new(Mutex::new(PeerCounts::default()));
    let per_peer = options.max_connections_per_peer.max(1);
    tokio::pin!(shutdown);
    loop {
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed; stop if it were
            },
        };
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends are transient: back off instead of spinning
                    // or taking the server down.
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Checked after accept, before any work: the refused socket is closed at once
        // and gives its global slot back, so one address can never hold them all.
        let Some(peer_slot) = PeerSlot::take(&peers, remote.ip().to_canonical(), per_peer) else {
            drop(stream);
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let app = app.clone();
        let tls = tls.clone();
        let stop = stop_rx.clone();
        let options = options.clone();
        connections.spawn(async move {
            handle_connection(stream, remote, acceptor, tls, app, stop, &options).await;
            drop(peer_slot);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(options.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "drain timeout reached; dropping open connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// What a peer with a revoked certificate (or one issued by a revoked sub-CA) gets,
/// whatever it asks for.
fn revoked_app(serial: &str, revoked: &str) -> Router {
    let message = if serial == revoked {
        format!("client certificate serial {serial} has been revoked; obtain a new certificate")
    } else {
        format!(
            "client certificate serial {serial} was issued by sub-CA serial {revoked}, which has been revoked; obtain a new certificate"
        )
    };
    Router::new().fallback(move || {
        let message = message.clone();
        async move {
            crate::error::ApiFailure::with_status(
                axum::http::StatusCode::UNAUTHORIZED,
                ErrorCode::CertificateRevoked,
                message,
            )
        }
    })
}

fn peer_facts(conn: &rustls::ServerConnection) -> (PeerIdentity, PeerCert) {
    let Some((leaf, rest)) = conn.peer_certificates().and_then(|c| c.split_first()) else {
        return (PeerIdentity(None), PeerCert(None));
    };
    let identity = kcore_pki::identity_of(leaf).ok();
    let presented: Vec<kcore_pki::CertInfo> = rest
        .iter()
        .filter_map(|c| kcore_pki::cert_info(c).ok())
        .collect();
    let info = kcore_pki::cert_info(leaf).ok().map(|info| PeerCertInfo {
        not_before: info.not_before,
        not_after: info.not_after,
        issuer_serial: presented
            .iter()
            .find(|c| c.subject == info.issuer)
            .map(|c| c.serial.clone()),
        chain_serials: presented.iter().map(|c| c.serial.clone()).collect(),
        issuer: info.issuer,
        fingerprint: info.fingerprint,
        serial: info.serial,
    });
    (PeerIdentity(identity), PeerCert(info))
}

/// What a peer whose certificate names another cluster gets, whatever it asks for.
fn wrong_cluster_app(identity: &Identity, cluster: &str) -> Router {
    let failure = crate::error::ApiFailure::with_status(
        axum::http::StatusCode::FORBIDDEN,
        ErrorCode::WrongCluster,
        format!(
            "{} belongs to cluster {:?}, this server serves {:?}",
            identity.uri(),
            identity.cluster,
            cluster
        ),
    )
    .with_details(serde_json::json!({
        "identity": identity.uri(),
        "cluster": cluster,
    }));
    Router::new().fallback(move || {
        let failure = failure.clone();
        async move { failure }
    })
}

/// How much of an unread request body is drained before an HTTP/2 answer goes out,
/// and for how long at most (see [`crate::request::BodyHandle::drain`]). The bytes
/// bound is the largest JSON body the routes accept (axum's 2 MB default limit).
const H2_DRAIN_MAX_BYTES: usize = 2 * 1024 * 1024;
const H2_DRAIN_MAX_TIME: Duration = Duration::from_secs(2);

async fn handle_connection(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    source: TlsSource,
    app: Router,
    mut stop: watch::Receiver<bool>,
    options: &ServeOptions,
) {
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout(options.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            // Refused client certificates end up here; debug, not warn, because port
            // scanners would otherwise flood the journal.
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let (identity, cert) = peer_facts(tls.get_ref().1);
    tracing::trace!(%remote, identity = ?identity.0, "connection accepted");
    let app = match (&cert.0, &identity.0, &options.cluster) {
        (Some(info), _, _) if info.revoked_serial(&source).is_some() => {
            let revoked = info.revoked_serial(&source).unwrap_or_default().to_string();
            tracing::info!(%remote, identity = ?identity.0, serial = %info.serial, %revoked, "revoked certificate presented");
            revoked_app(&info.serial, &revoked)
        }
        (_, Some(who), Some(cluster)) if &who.cluster != cluster => {
            tracing::info!(%remote, identity = %who.uri(), "certificate of another cluster presented");
            wrong_cluster_app(who, cluster)
        }
        _ => app,
    };
    // ALPN already chose the protocol. Telling hyper avoids its sniffing of the first
    // bytes, which has no timeout and would let a silent client hold the connection.
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let (tracker, activity) = Tracker::new();
    let body_limit = options.body_read_timeout;
    let service = tower::service_fn(move |req: axum::extract::Request<Incoming>| {
        let app = app.clone();
        let identity = identity.clone();
        let cert = cert.clone();
        let in_flight = tracker.start();
        async move {
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(identity);
            parts.extensions.insert(cert);
            parts.extensions.insert(ConnectInfo(remote));
            let method = parts.method.clone();
            let path = parts.uri.path().to_string();
            let (body, handle) = DeadlineBody::new(body, body_limit);
            let req = axum::extract::Request::from_parts(parts, axum::body::Body::new(body));
            let Ok(response) = app.oneshot(req).await;
            let response = if handle.timed_out() && !response.status().is_success() {
                tracing::debug!(%remote, %method, %path, "request body too slow; cut off");
                crate::error::ApiFailure::with_status(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    ErrorCode::BodyTimeout,
                    format!(
                        "the request body did not arrive completely within {}s; send it at once",
                        body_limit.as_secs_f64()
                    ),
                )
                .into_response()
            } else {
                if h2 {
                    handle.drain(H2_DRAIN_MAX_BYTES, H2_DRAIN_MAX_TIME).await;
                }
                crate::error::ensure_envelope(response, &method, &path).await
            };
            Ok::<_, Infallible>(response.map(|b| TrackedBody::new(b, in_flight)))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Pings find dead HTTP/2 peers, which hold no request head to time out.
        .keep_alive_interval(options.h2_keep_alive_interval)
        .keep_alive_timeout(options.h2_keep_alive_timeout);
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let spoke = activity.clone();
    let quiet = request::quiet(
        activity,
        options.first_request_timeout,
        options.idle_timeout,
    );
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        }
        () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => {
            if !spoke.borrow().started {
                // Nothing to finish, and an HTTP/2 client that never sent its preface
                // would hold the graceful shutdown until the drain timeout.
                return;
            }
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "connection ended with an error while draining");
            }
        }
        verdict = quiet => match verdict {
            // Nothing to finish: drop it. A graceful shutdown would wait for the HTTP/2
            // preface that never comes.
            Quiet::NeverSpoke => {
                tracing::debug!(%remote, h2, "no request after the handshake; closing");
            }
            Quiet::Idle => {
                tracing::trace!(%remote, h2, "idle connection; closing");
                conn.as_mut().graceful_shutdown();
                // A peer that ignores the GOAWAY gets dropped after the drain timeout.
                let _ = tokio::time::timeout(options.drain_timeout, conn).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalise_serial;

    #[test]
    fn serials_compare_without_colons_case_or_leading_zero_bytes() {
        assert_eq!(normalise_serial("00:AB:cd"), "abcd");
        assert_eq!(normalise_serial("0000ab"), "ab");
        assert_eq!(normalise_serial("00"), "00");
        assert_eq!(normalise_serial("0a0b"), "0a0b");
    }
}
