//! The fleet repository of the rollout tests (tests/support/fleet/README.md): this
//! directory's `flake.nix` and stand-in `switch-to-configuration` in a fresh git
//! repository, one commit per revision (`hosts/<node>.json` per node), pinned as
//! `git+file:///...?rev=<sha>` and built for real with `nix build`. Shared through
//! `#[path]` by kcore-agent's rollout rig (`rust/kcore-agent/tests/it/rollout_rig.rs`) and
//! the controller's rollout benchmark (`rust/kcore-controller/benches/rollout.rs`), whose
//! crates both sit at `rust/<crate>`.

#![allow(dead_code)] // each includer uses a part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// This directory, from either includer's manifest directory.
pub fn fleet_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/fleet")
}

fn nix_flags() -> [&'static str; 4] {
    [
        "--extra-experimental-features",
        "nix-command flakes",
        "--option",
        "substituters",
    ]
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.email=rig@kcore.test", "-c", "user.name=rig"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A host's file: what its toplevel does at that revision.
pub fn host(activate: &str, health: &str, kernel: &str, label: &str) -> serde_json::Value {
    serde_json::json!({"activate": activate, "health": health, "kernel": kernel, "seconds": 0, "label": label})
}

/// The fleet repository.
pub struct Fleet {
    pub repo: tempfile::TempDir,
}

impl Fleet {
    /// `None` (with a SKIP line) when nix or git is missing.
    pub fn new() -> Option<Fleet> {
        let runs = |tool: &str| Command::new(tool).arg("--version").output().is_ok();
        if !runs("nix") || !runs("git") {
            eprintln!("SKIP: `nix` or `git` is not on PATH (apt-get install nix-bin git)");
            return None;
        }
        let repo = tempfile::tempdir().unwrap();
        for f in ["flake.nix", "switch-to-configuration"] {
            std::fs::copy(fleet_dir().join(f), repo.path().join(f)).unwrap();
        }
        std::fs::create_dir_all(repo.path().join("hosts")).unwrap();
        git(repo.path(), &["init", "-q"]);
        Some(Fleet { repo })
    }

    /// Commit a revision in which `hosts` have these files and every other host file is
    /// gone; its rev.
    pub fn commit(&self, hosts: &[(&str, serde_json::Value)]) -> String {
        let dir = self.repo.path().join("hosts");
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            std::fs::remove_file(entry.path()).unwrap();
        }
        std::fs::write(dir.join(".keep"), "").unwrap();
        for (name, file) in hosts {
            std::fs::write(dir.join(format!("{name}.json")), file.to_string()).unwrap();
        }
        git(self.repo.path(), &["add", "-A"]);
        git(
            self.repo.path(),
            &["commit", "-q", "--allow-empty", "-m", "revision"],
        );
        git(self.repo.path(), &["rev-parse", "HEAD"])
    }

    pub fn flake_ref(&self) -> String {
        format!("git+file://{}", self.repo.path().display())
    }

    /// The toplevel of `host` at `rev`, built by the test itself (the expected answer).
    pub fn build(&self, rev: &str, host: &str, out: &Path) -> PathBuf {
        let installable = format!(
            "{}?rev={rev}#nixosConfigurations.{host}.config.system.build.toplevel",
            self.flake_ref()
        );
        let st = Command::new("nix")
            .args(nix_flags())
            .arg("")
            .args(["build", &installable, "--out-link"])
            .arg(out)
            .status()
            .unwrap();
        assert!(st.success(), "nix build {installable}");
        std::fs::canonicalize(out).unwrap()
    }

    /// The toplevels of `hosts` at `rev`, in one `nix build` (one evaluation of the flake
    /// for all of them), linked as `out`, `out-1`, `out-2`, ...: host -> store path.
    pub fn build_all(&self, rev: &str, hosts: &[String], out: &Path) -> BTreeMap<String, PathBuf> {
        let installables: Vec<String> = hosts
            .iter()
            .map(|host| {
                format!(
                    "{}?rev={rev}#nixosConfigurations.{host}.config.system.build.toplevel",
                    self.flake_ref()
                )
            })
            .collect();
        let st = Command::new("nix")
            .args(nix_flags())
            .arg("")
            .arg("build")
            .args(&installables)
            .arg("--out-link")
            .arg(out)
            .status()
            .unwrap();
        assert!(st.success(), "nix build of {} hosts at {rev}", hosts.len());
        // Each toplevel is named `kcore-fleet-system-<host>` (flake.nix), so the links map
        // back to their host whatever order nix numbered them in.
        let dir = out.parent().unwrap();
        let base = out.file_name().unwrap().to_string_lossy().to_string();
        let mut built = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name == base || name.starts_with(&format!("{base}-")) {
                let path = std::fs::canonicalize(entry.path()).unwrap();
                let file = path.file_name().unwrap().to_string_lossy().to_string();
                if let Some((_, host)) = file.split_once("-kcore-fleet-system-") {
                    built.insert(host.to_string(), path);
                }
            }
        }
        assert_eq!(built.len(), hosts.len(), "one toplevel per host: {built:?}");
        built
    }
}
