//! The HTTPS accept loop: per-connection TLS handshake (with a timeout), the peer's
//! certificate identity attached to every request, hot-swappable server certificates,
//! and graceful shutdown that lets in-flight requests finish.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use kcore_pki::Identity;
use rustls::ServerConfig;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

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

/// Tunables of the accept loop.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A client that has not finished its TLS handshake by then is dropped, so idle
    /// sockets cannot pile up.
    pub handshake_timeout: Duration,
    /// After shutdown is requested, in-flight requests get this long to finish
    /// before their connections are dropped.
    pub drain_timeout: Duration,
    /// An HTTP/1 connection that does not send a complete request head within this
    /// time (including an idle keep-alive connection) is closed. Longer than the
    /// client's pool idle time (20 s) so clients close first.
    pub header_read_timeout: Duration,
    /// At most this many connections at once; further clients wait in the kernel's
    /// accept queue instead of exhausting file descriptors.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(60),
            max_connections: 1024,
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

/// Serves `app` over TLS. Each request carries [`PeerIdentity`], [`PeerCert`] and
/// `ConnectInfo<SocketAddr>` extensions. When `shutdown` completes the listener stops
/// accepting, open connections finish their in-flight requests (HTTP/1 keep-alive is
/// closed, HTTP/2 gets GOAWAY), and the call returns once they are done or
/// `drain_timeout` has passed.
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
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let app = app.clone();
        let tls = tls.clone();
        let stop = stop_rx.clone();
        let options = options.clone();
        connections.spawn(async move {
            handle_connection(stream, remote, acceptor, tls, app, stop, &options).await;
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

/// What a peer with a revoked certificate gets, whatever it asks for.
fn revoked_app(serial: String) -> Router {
    Router::new().fallback(move || {
        let serial = serial.clone();
        async move {
            crate::error::ApiFailure::new(
                axum::http::StatusCode::UNAUTHORIZED,
                crate::error::codes::CERTIFICATE_REVOKED,
                format!(
                    "client certificate serial {serial} has been revoked; obtain a new certificate"
                ),
            )
        }
    })
}

fn peer_facts(conn: &rustls::ServerConnection) -> (PeerIdentity, PeerCert) {
    let Some(leaf) = conn.peer_certificates().and_then(|c| c.first()) else {
        return (PeerIdentity(None), PeerCert(None));
    };
    let identity = kcore_pki::identity_of(leaf).ok();
    let info = kcore_pki::cert_info(leaf).ok().map(|info| PeerCertInfo {
        not_before: info.not_before,
        not_after: info.not_after,
        issuer: info.issuer,
        fingerprint: info.fingerprint,
        serial: info.serial,
    });
    (PeerIdentity(identity), PeerCert(info))
}

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
    let app = match &cert.0 {
        Some(info) if source.is_revoked(&info.serial) => {
            tracing::info!(%remote, identity = ?identity.0, serial = %info.serial, "revoked certificate presented");
            revoked_app(info.serial.clone())
        }
        _ => app,
    };
    let service = app.map_request(
        move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            let ext = req.extensions_mut();
            ext.insert(identity.clone());
            ext.insert(cert.clone());
            ext.insert(ConnectInfo(remote));
            req
        },
    );
    // ALPN already chose the protocol. Telling hyper avoids its sniffing of the first
    // bytes, which has no timeout and would let a silent client hold the connection.
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Pings find dead HTTP/2 peers, which hold no request head to time out.
        .keep_alive_interval(options.header_read_timeout)
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        }
        () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => {
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "connection ended with an error while draining");
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
