//! Pinned flake URLs used for real: a local git flake with two commits, evaluated with
//! `nix eval` (offline) through the pinned `git+file` URL, must give the pinned commit's
//! value, not the branch head's.

use std::time::Duration;

use kcore_nix::programs::{GIT, NIX};
use kcore_nix::{Invocation, Program, pinned_flake_url};

use crate::support::tool_or_skip;

async fn git(git: &Program, dir: &std::path::Path, args: &[&str]) -> String {
    let out = Invocation::new(git)
        .args(["-C"])
        .arg(dir)
        .args([
            "-c",
            "user.name=kcore test",
            "-c",
            "user.email=test@kcore.invalid",
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .timeout(Duration::from_secs(30))
        .output()
        .await
        .unwrap();
    out.stdout_lossy().trim().to_owned()
}

#[tokio::test]
async fn git_file_url_pins_the_given_commit() {
    let (Some(git_bin), Some(nix)) = (
        tool_or_skip(GIT, "git_file_url_pins_the_given_commit"),
        tool_or_skip(NIX, "git_file_url_pins_the_given_commit"),
    ) else {
        return;
    };
    let repo = tempfile::tempdir().unwrap();
    // `nixosConfigurations.h...toplevel` is a plain string here: enough to prove the
    // installable path resolves, without nixpkgs.
    let flake = |v: &str| {
        format!(
            "{{ outputs = _: {{ value = \"{v}\"; nixosConfigurations.node-1.config.system.build.toplevel = \"{v}-system\"; }}; }}\n"
        )
    };
    git(&git_bin, repo.path(), &["init", "-q"]).await;
    std::fs::write(repo.path().join("flake.nix"), flake("first")).unwrap();
    git(&git_bin, repo.path(), &["add", "flake.nix"]).await;
    git(&git_bin, repo.path(), &["commit", "-q", "-m", "first"]).await;
    let first = git(&git_bin, repo.path(), &["rev-parse", "HEAD"]).await;
    std::fs::write(repo.path().join("flake.nix"), flake("second")).unwrap();
    git(
        &git_bin,
        repo.path(),
        &["commit", "-q", "-a", "-m", "second"],
    )
    .await;

    let flake_ref = format!("git+file://{}", repo.path().display());
    let url = pinned_flake_url(&flake_ref, &first).unwrap();
    let eval = |target: String| {
        Invocation::new(&nix)
            .args(["--extra-experimental-features", "nix-command flakes"])
            .args(["eval", "--offline", "--raw"])
            .arg(target)
            .timeout(Duration::from_secs(120))
    };
    let pinned = match eval(format!("{url}#value")).output().await {
        Ok(out) => out.stdout_lossy(),
        Err(e) => {
            eprintln!("SKIP: git_file_url_pins_the_given_commit: nix eval cannot run here: {e}");
            return;
        }
    };
    assert_eq!(pinned, "first", "pinned URL {url}");
    let head = eval(format!("{flake_ref}#value")).output().await.unwrap();
    assert_eq!(head.stdout_lossy(), "second", "unpinned ref follows HEAD");

    let installable = kcore_nix::toplevel_installable(&url, "node-1").unwrap();
    let out = eval(installable.clone()).output().await.unwrap();
    assert_eq!(out.stdout_lossy(), "first-system", "{installable}");

    // A git ref with a branch keeps it next to the pinned rev, and Nix accepts that form.
    let with_branch = pinned_flake_url(&format!("{flake_ref}?ref=main"), &first).unwrap();
    assert_eq!(with_branch, format!("{flake_ref}?ref=main&rev={first}"));
    let out = eval(format!("{with_branch}#value")).output().await.unwrap();
    assert_eq!(out.stdout_lossy(), "first", "pinned URL {with_branch}");
}
