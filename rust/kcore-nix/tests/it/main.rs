//! Integration tests for kcore-nix: real processes, real `nix-instantiate`, real git.
//! Tests that need a missing tool print `SKIP: <why>` and return.

// Helpers outside `#[test]` functions panic on setup failures on purpose, like the tests.
#![allow(clippy::unwrap_used)]

mod escape;
mod flake;
mod restricted;
mod runner;
mod support;
