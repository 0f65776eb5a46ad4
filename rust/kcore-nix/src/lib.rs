//! Typed runners for the external programs kcore drives (`nix-instantiate`, `nix`,
//! `nixos-rebuild`, `disko`, `systemd-run`, `lsblk`, ...): argument vectors only, never a
//! shell. Also Nix string escaping and pinned flake URLs.
//!
//! - [`runner`]: resolve a program once, run it with an argv, a timeout that kills the
//!   whole process group, and errors that carry the full argv, exit status and stderr tail.
//! - [`programs`]: the well-known programs and the environment variables that override them.
//! - [`restricted`]: `nix-instantiate` over submitted text in restricted mode (no other
//!   files, no environment, no network, no store writes) with memory, CPU and time bounds.
//! - [`escape`]: values spliced into Nix source (string literals, attribute names).
//! - [`flake`]: `flake_ref` + `flake_rev` into a URL that pins the revision.
//! - [`commands`]: typed builders (`NixBuild`, `NixosRebuild`, `SwitchToConfiguration`,
//!   `NixEnvProfile`, `SystemdRun`, `Disko`, `NixosInstall`, `Bootctl`) whose `argv()` is
//!   the one place each program's flags are spelled, and the activation [`Goal`].
//! - [`profile`]: a profile's generations as [`profile::Generation`] values.
//! - [`queries`]: typed builders for the programs that only read state (`Lsblk`, and
//!   `NixEval` for `nix-instantiate --eval`).

pub mod commands;
pub mod escape;
pub mod flake;
pub mod profile;
pub mod programs;
pub mod queries;
pub mod restricted;
pub mod runner;

pub use commands::Goal;

pub use escape::{EscapeError, attr_name, is_valid_attr_name, nix_string};
pub use flake::{FlakeError, nixos_rebuild_target, pinned_flake_url, toplevel_installable};
pub use programs::Tool;
pub use restricted::{EvalBounds, EvalError, RestrictedEval};
pub use runner::{Invocation, Limits, Output, Program, RunError, StreamLine};
