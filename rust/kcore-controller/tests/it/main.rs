//! The controller in-process on 127.0.0.1 with real mutual TLS: registration, approval,
//! rejection, the authorisation matrix, renewal, sub-CA rotation, restarts, replication,
//! the generic resource routes and `/metrics`. Agents are the real registration code from
//! `kcore-agent`. One test binary, one module per area.

// Test helpers panic on setup failures; clippy's test exemption covers only #[test] fns.
#![allow(clippy::unwrap_used)]

mod agent;
mod assignment_cache;
mod auth;
mod compaction;
mod controllers;
mod metrics;
mod nodes;
mod pki;
mod proxy;
mod replication;
mod resources;
mod rollout_owner;
mod rollouts;
mod sub_ca;
mod support;
mod vms;
