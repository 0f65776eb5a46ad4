//! flake.lock pins disko at exactly the source the offline checks evaluate (its NAR hash,
//! computed here with `nix hash path`), and both pins match the inputs flake.nix declares.

use std::path::PathBuf;

use kcore_nix::programs::NIX;
use serde_json::Value;

use crate::support::{have_repo, repo_root, run};

fn lock() -> Value {
    let text = std::fs::read_to_string(repo_root().join("flake.lock")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The disko source of the offline checks: `KCORE_TEST_DISKO`, else the test-inputs cache.
fn disko_source() -> Option<PathBuf> {
    let dir = match std::env::var_os("KCORE_TEST_DISKO") {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            cache.join("kcore/test-inputs/disko")
        }
    };
    dir.join("module.nix").is_file().then_some(dir)
}

#[test]
fn lock_matches_flake_inputs() {
    if !have_repo("lock_matches_flake_inputs") {
        return;
    }
    let lock = lock();
    let flake = std::fs::read_to_string(repo_root().join("flake.nix")).unwrap();
    let nodes = &lock["nodes"];
    assert_eq!(lock["version"], 7);
    assert_eq!(nodes["root"]["inputs"]["nixpkgs"], "nixpkgs");
    assert_eq!(nodes["root"]["inputs"]["disko"], "disko");
    // disko follows our nixpkgs, as flake.nix says.
    assert!(flake.contains("inputs.nixpkgs.follows = \"nixpkgs\";"));
    assert_eq!(
        nodes["disko"]["inputs"]["nixpkgs"],
        serde_json::json!(["nixpkgs"])
    );
    // The nixpkgs branch in the lock is the one flake.nix names.
    let branch = nodes["nixpkgs"]["original"]["ref"].as_str().unwrap();
    assert!(
        flake.contains(&format!("github:NixOS/nixpkgs/{branch}\"")),
        "flake.nix does not follow {branch}"
    );
    for node in ["nixpkgs", "disko"] {
        let locked = &nodes[node]["locked"];
        let rev = locked["rev"].as_str().unwrap();
        assert!(
            rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()),
            "{node}: {rev}"
        );
        assert!(
            locked["narHash"].as_str().unwrap().starts_with("sha256-"),
            "{node}"
        );
        assert!(locked["lastModified"].as_u64().unwrap() > 0, "{node}");
    }
}

#[test]
fn disko_pin_is_the_source_the_checks_evaluate() {
    if !have_repo("disko_pin_is_the_source_the_checks_evaluate") {
        return;
    }
    let Some(src) = disko_source() else {
        eprintln!(
            "SKIP: disko_pin_is_the_source_the_checks_evaluate: no disko source (set KCORE_TEST_DISKO)"
        );
        return;
    };
    let nix = match NIX.resolve(None) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIP: disko_pin_is_the_source_the_checks_evaluate: {e}");
            return;
        }
    };
    let argv: Vec<String> = vec![
        "--extra-experimental-features".into(),
        "nix-command".into(),
        "hash".into(),
        "path".into(),
        src.display().to_string(),
    ];
    let out = run(&nix, &argv).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(out.status.success(), "{}", out.stderr_lossy());
    let hash = out.stdout_lossy().trim().to_string();
    assert_eq!(
        lock()["nodes"]["disko"]["locked"]["narHash"],
        Value::String(hash),
        "flake.lock's disko narHash is not the NAR hash of {}",
        src.display()
    );
}

/// The nixpkgs lib the offline checks evaluate with is the release the lock pins
/// (`lib/.version` = the `nixos-YY.MM` branch), not a newer or older lib.
#[test]
fn the_checks_evaluate_with_the_pinned_release_of_nixpkgs_lib() {
    if !have_repo("the_checks_evaluate_with_the_pinned_release_of_nixpkgs_lib") {
        return;
    }
    let lib = match crate::support::nixpkgs_lib() {
        Ok(l) => l,
        Err(why) => {
            eprintln!("SKIP: the_checks_evaluate_with_the_pinned_release_of_nixpkgs_lib: {why}");
            return;
        }
    };
    let version = std::fs::read_to_string(lib.join(".version")).unwrap();
    let branch = lock()["nodes"]["nixpkgs"]["original"]["ref"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        format!("nixos-{}", version.trim()),
        branch,
        "{} is nixpkgs lib {}, but flake.lock pins {branch} (docs/nixos.md \"Which nixpkgs lib\")",
        lib.display(),
        version.trim()
    );
}
