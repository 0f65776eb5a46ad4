//! Offline checks of kcore's Nix code: every `.nix` file parses, and the NixOS modules
//! evaluate (with nixpkgs' lib, against tests/eval/nixos-stubs.nix) to the configuration files,
//! units, disko devices and assertions they promise. Each test prints `SKIP: ...` and returns
//! when `nix-instantiate` or nixpkgs' lib is missing.

// Test code: a panic with the value in the message is the failure report (the workspace
// allows unwrap in tests; the helpers here are test code too).
#![allow(clippy::unwrap_used)]

mod contract;
mod eval;
mod flake;
mod hosts;
mod install_files;
mod installed;
mod lint;
mod lock;
mod package;
mod parse;
mod support;
mod vm;
