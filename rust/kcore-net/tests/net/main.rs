//! kcore-net against real TLS on 127.0.0.1: mTLS admission (missing, foreign, expired
//! certificates), sub-CA rotation, role and self-only checks, install mode (-k and
//! pinning), certificate hot reload, graceful shutdown, NDJSON, and client failover.
//!
//! One test binary, a module per area; `support` holds the shared fixtures.
#![allow(clippy::unwrap_used)] // tests may unwrap (team rule); helpers are test code too

mod admission;
mod client;
mod install;
mod lifecycle;
mod probes;
mod reload;
mod roles;
mod server_identity;
mod support;
