//! kctl's integration tests, one binary with a module per area: `cluster` (contexts,
//! certificates, get / describe, approval, rotation against in-process controllers),
//! `failover`, `trust` (server identity, credentials, escaped output), `resources` (apply,
//! get, describe, delete of any kind), all on `lab`;
//! `node` (talking to in-process agents), `disko` (render, validate, plan offline), `guide`
//! (the operator guide's commands, verbatim), `ux` (completions, version, help, flags),
//! `interrupt` (Ctrl-C and SIGTERM stop kctl's children), `metrics` (scraper certificates).
//! Servers run in-process on 127.0.0.1 with real TLS; kctl runs as the real binary.

// Helpers outside `#[test]` functions panic on setup failures on purpose, like the tests.
#![allow(clippy::unwrap_used)]

mod cluster;
mod controllers;
mod disko;
mod failover;
mod guide;
mod install;
mod interrupt;
mod lab;
mod metrics;
mod node;
mod resources;
mod support;
mod trust;
mod update;
mod ux;
mod vms;
