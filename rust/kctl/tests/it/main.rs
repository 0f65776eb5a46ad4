//! kctl's integration tests, one binary with a module per area: `cluster` (contexts,
//! controllers, certificates, trust and output safety against in-process controllers),
//! `node` (talking to in-process agents), `disko` (render, validate, plan offline).
//! Servers run in-process on 127.0.0.1 with real TLS; kctl runs as the real binary.

// Helpers outside `#[test]` functions panic on setup failures on purpose, like the tests.
#![allow(clippy::unwrap_used)]

mod cluster;
mod disko;
mod node;
mod support;
