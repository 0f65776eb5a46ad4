//! The kcore node agent: inventory, day-2 storage and configuration, served over HTTPS,
//! and registration with the controllers (`registration`).
//!
//! - [`config`] parses `/etc/kcore/node-agent.yaml`, [`config_defaults`] reads it over
//!   `--defaults FILE`.
//! - [`install`] is install mode's day 0: plan, CSRs, the install itself, claim, reboot.
//! - [`server`] sets up TLS per mode and the `/v1` routes ([`run`]).
//! - [`inventory`] collects disks, NICs and the storage view.
//! - [`disko_apply`] and [`nix_apply`] make the day-2 changes, run as [`ops`] operations.
//! - [`metrics`] is `GET /metrics` (operations, certificate expiry, registration, latency).
//! - [`mgmt`] reads the disko management mode, per request.
//! - [`rollout`] is the node-local half of a rollout step: prepare, activate, health gate,
//!   revert (also across a trial boot), and the loop that takes steps from the controllers
//!   (`rollout::assignment`).
//! - [`provision`] is `kcore-agent provision-disk`, the LVM identity reset.
//! - [`vm`] reconciles the node's VMs (volumes, images, QEMU guests) with the list the
//!   assignment loop receives, and reports them.

pub mod cli;
pub mod config;
pub mod config_defaults;
pub mod disko_apply;
pub mod fsutil;
pub mod install;
pub mod inventory;
pub mod metrics;
pub mod mgmt;
pub mod nix_apply;
pub mod ops;
pub mod provision;
pub mod registration;
pub mod rollout;
pub mod server;
pub mod tools;
pub mod vm;

pub use server::{Agent, AgentError, RuntimeOptions, run};
