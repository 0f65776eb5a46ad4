//! HTTPS plumbing shared by the agent, the controller and kctl: a TLS accept loop that
//! hands each request the peer's identity and bounds what a client can hold (connections
//! per address, first-request, idle and body timeouts), hot-reloadable certificates, the
//! JSON error envelope for every error, role checks, NDJSON progress streams, the shared
//! part of `/metrics` ([`metrics`]), and a
//! client with mTLS, pinning and controller failover. The protocol is described in `docs/wire-protocol.md`.

pub mod auth;
pub mod client;
pub mod daemon;
pub mod error;
pub mod metrics;
pub mod ndjson;
mod request;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;

pub use auth::{Authenticated, allow_roles, ensure_self, require_role};
pub use client::{Client, ClientError, ClientOptions, TLS_FAILED, https_url};
pub use error::{ApiFailure, ApiJson, ApiPath};
pub use ndjson::ndjson_response;
pub use server::{
    ConnectionLimits, LimitError, PeerCert, PeerCertInfo, PeerIdentity, ServeOptions, TlsSource,
    serve, serve_with,
};

/// Every API path starts with this prefix.
pub const API_PREFIX: &str = "/v1";
