//! The agent in-process on 127.0.0.1:0 with real TLS, one binary with a module per area:
//! `tls` (the TLS modes and who may call what, inventory from this host's real lsblk/ip),
//! `disko` (apply-disko, planned against a fixture snapshot, run through the disko
//! stand-in, since this machine has no spare disk), `nix` (apply-nix through the
//! systemd-run and nixos-rebuild stand-ins, which do a real `nix build` of a local test
//! flake), `ops` (long operations: lanes, transient units and re-attaching after an agent
//! restart), `restricted` (bounded evaluation of submitted Nix), `provision` (provision-disk's
//! command line, the guide's names), `rollout` (prepare, activate, health gate, revert and
//! trial boots against the real fleet flake of `rollout_rig`), `rollout_fleet` (a real controller
//! and five real agents running rollouts through the assignment loop, on `rollout_fleet_bed`),
//! `install` (install mode: plan, CSRs) and `install_run` (the install through stand-ins,
//! claim, reboot),
//! `rollout_fleet_kill` (the same with agents and controllers as OS processes, `rollout_proc`,
//! killed with SIGKILL mid-rollout), `metrics` (`/metrics`),
//! `vm` (the VM reconciler: volumes, image import and real QEMU guests on the filesystem
//! backend), `vm_e2e` (a real controller and a real agent placing, running and deleting a
//! VM). Tests that use a stand-in
//! say so in their names.

#![allow(clippy::unwrap_used)] // test helpers may unwrap, like the tests themselves

mod disko;
mod install;
mod install_run;
mod metrics;
mod nix;
mod ops;
mod provision;
mod restricted;
mod rollout;
mod rollout_fleet;
mod rollout_fleet_bed;
mod rollout_fleet_kill;
mod rollout_proc;
mod rollout_rig;
mod support;
mod tls;
mod vm;
mod vm_e2e;
