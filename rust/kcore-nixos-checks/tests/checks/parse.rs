//! `nix-instantiate --parse` of every `.nix` file in the repository.

use std::path::{Path, PathBuf};

use crate::support::{have_repo, nix_instantiate, repo_root, run};

/// Directories that hold no kcore Nix source: build output and VCS data.
fn skipped_dir(name: &str) -> bool {
    name == "target" || name == ".git" || name == "node_modules" || name.starts_with("result")
}

pub fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let ty = entry.file_type().unwrap();
        if ty.is_dir() {
            if !skipped_dir(&name) {
                nix_files(&path, out);
            }
        } else if ty.is_file() && name.ends_with(".nix") {
            out.push(path);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    if !have_repo("every_nix_file_parses") {
        return;
    }
    let Some(nix) = nix_instantiate("every_nix_file_parses") else {
        return;
    };
    let root = repo_root();
    let mut files = Vec::new();
    nix_files(&root, &mut files);
    files.sort();

    // Guard against a walk that silently finds nothing (wrong root, renamed dirs).
    let rel: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    for must in ["modules/agent.nix", "tests/eval/eval.nix"] {
        assert!(
            rel.iter().any(|r| r == must),
            "{must} not found among {rel:?}"
        );
    }

    let mut failures = Vec::new();
    for file in &files {
        let argv = vec!["--parse".to_string(), file.display().to_string()];
        let out = run(&nix, &argv).unwrap_or_else(|e| panic!("{e:#}"));
        if !out.status.success() {
            failures.push(format!(
                "{}:\n{}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} .nix files do not parse:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
