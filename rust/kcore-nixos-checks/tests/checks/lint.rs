//! deadnix (unused bindings, lambda arguments and `let` entries) over every `.nix` file of the
//! repository. deadnix comes from crates.io (`cargo install deadnix --locked`, done by
//! scripts/install-deps.sh); `KCORE_DEADNIX` names another binary. nixfmt is not packaged
//! for this machine: formatting is checked only by the flake's `formatting` check.

use kcore_nix::Program;

use crate::parse::nix_files;
use crate::support::{have_repo, repo_root, run};

#[test]
fn deadnix_finds_nothing_in_any_nix_file() {
    if !have_repo("deadnix_finds_nothing_in_any_nix_file") {
        return;
    }
    let deadnix = match Program::resolve("deadnix", None, "KCORE_DEADNIX") {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "SKIP: deadnix_finds_nothing_in_any_nix_file: {e} (scripts/install-deps.sh installs it)"
            );
            return;
        }
    };
    let root = repo_root();
    let mut files = Vec::new();
    nix_files(&root, &mut files);
    files.sort();
    assert!(
        files.len() > 30,
        "too few .nix files found: {}",
        files.len()
    );
    // The validation corpus is other people's layouts kept verbatim (issue 16: each names
    // its source); an unused `inputs` argument there is theirs, not ours to lint.
    let corpus = root.join("rust/kcore-disko/tests/corpus");
    files.retain(|f| !f.starts_with(&corpus));
    let mut argv = vec!["--fail".to_string()];
    argv.extend(files.iter().map(|f| f.display().to_string()));
    let out = run(&deadnix, &argv).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        out.status.success(),
        "deadnix found unused code (exit {:?}):\n{}{}",
        out.status.code(),
        out.stdout_lossy(),
        out.stderr_lossy()
    );
}
