//! Restricted evaluation through the real `nix-instantiate`: what submitted Nix can no
//! longer reach (other files, directories, the environment, the network, the store), the
//! memory and CPU bounds, and messages that quote no file but the submitted one.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kcore_nix::restricted::{EvalBounds, EvalError, RESTRICTED_HINT, RestrictedEval};
use kcore_nix::{Invocation, Output, Program};

/// Small bounds so the bound tests are quick; the wall clock is generous because the test
/// machine is shared.
const BOUNDS: EvalBounds = EvalBounds {
    timeout: Duration::from_secs(120),
    memory_mib: 256,
    cpu_seconds: 2,
};

struct Probe {
    nix: Program,
    dir: tempfile::TempDir,
    /// A 0600 file beside the submitted text: the evaluation must not read it.
    secret: PathBuf,
}

const SECRET: &str = "KCORE-TEST-SECRET-4f1d\nsecond-secret-line\n";

fn probe(test: &str) -> Option<Probe> {
    let nix = crate::support::tool_or_skip(kcore_nix::programs::NIX_INSTANTIATE, test)?;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let secret = std::fs::canonicalize(secret).unwrap();
    Some(Probe { nix, dir, secret })
}

impl Probe {
    /// Write `text` as the submitted file `name` and return its canonical path.
    fn submit(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::canonicalize(path).unwrap()
    }

    fn restricted(&self, file: &Path) -> RestrictedEval {
        RestrictedEval::new(&self.nix, BOUNDS).allow_submitted("kcore-fragment", file)
    }

    fn inv(eval: &RestrictedEval, file: &Path) -> Invocation {
        eval.invocation()
            .args(["--eval", "--strict", "--json"])
            .arg(file)
    }

    async fn eval(&self, text: &str) -> Result<Output, EvalError> {
        let file = self.submit("fragment.nix", text);
        let eval = self.restricted(&file);
        eval.run(&Self::inv(&eval, &file)).await
    }

    /// The error message of an evaluation that must fail.
    async fn refused(&self, text: &str) -> String {
        match self.eval(text).await {
            Err(EvalError::Failed { message }) => message,
            other => panic!("{text}: expected an evaluation error, got {other:?}"),
        }
    }

    async fn value(&self, text: &str) -> serde_json::Value {
        match self.eval(text).await {
            Ok(out) => serde_json::from_slice(&out.stdout).unwrap(),
            Err(e) => panic!("{text}: {e}"),
        }
    }
}

fn assert_no_secret(message: &str) {
    assert!(
        !message.contains("KCORE-TEST-SECRET") && !message.contains("second-secret-line"),
        "the secret leaked: {message}"
    );
}

#[tokio::test]
async fn files_and_directories_outside_the_submitted_text_are_refused() {
    let Some(p) = probe("files_and_directories_outside_the_submitted_text_are_refused") else {
        return;
    };
    let secret = p.secret.display();
    for text in [
        format!("builtins.readFile {secret}"),
        format!("throw (builtins.readFile {secret})"),
        format!("import {secret}"),
        "import /etc/passwd".to_string(),
        "throw (builtins.readFile /etc/passwd)".to_string(),
        "builtins.attrNames (builtins.readDir /.)".to_string(),
        "builtins.attrNames (builtins.readDir /root)".to_string(),
        // Not even the submitted file's own directory: only the file itself is allowed.
        "builtins.attrNames (builtins.readDir ./.)".to_string(),
        "builtins.readFile ./secret".to_string(),
        "builtins.storePath /nix/store".to_string(),
    ] {
        let message = p.refused(&text).await;
        assert!(
            message.contains("is forbidden in restricted mode"),
            "{text}: {message}"
        );
        assert!(message.contains(RESTRICTED_HINT), "{text}: {message}");
        assert_no_secret(&message);
        assert!(!message.contains("root:x:0:0"), "{text}: {message}");
    }
    // pathExists does not even tell that the file exists.
    assert_eq!(
        p.value(&format!("builtins.pathExists {secret}")).await,
        serde_json::json!(false)
    );
    // The submitted text itself stays readable (a layout may read its own file).
    assert_eq!(
        p.value("builtins.stringLength (builtins.readFile ./fragment.nix)")
            .await,
        serde_json::json!("builtins.stringLength (builtins.readFile ./fragment.nix)".len())
    );
}

#[tokio::test]
async fn the_environment_and_the_search_path_are_empty() {
    let Some(p) = probe("the_environment_and_the_search_path_are_empty") else {
        return;
    };
    // A variable the evaluator really has (set on the child on purpose) still reads as "".
    let file = p.submit(
        "env.nix",
        r#"[ (builtins.getEnv "KCORE_PROBE_SECRET") (builtins.getEnv "PATH") (builtins.getEnv "HOME") ]"#,
    );
    let eval = p.restricted(&file);
    let out = eval
        .run(&Probe::inv(&eval, &file).env("KCORE_PROBE_SECRET", "s3cret"))
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!(["", "", ""])
    );

    // NIX_PATH in the evaluator's environment adds nothing: the search path is the allowed
    // entries only, so `<nixpkgs>` does not resolve even when NIX_PATH names it.
    let fake_nixpkgs = p.dir.path().join("nixpkgs");
    std::fs::create_dir(&fake_nixpkgs).unwrap();
    std::fs::write(fake_nixpkgs.join("default.nix"), "\"KCORE-TEST-SECRET\"").unwrap();
    let file = p.submit("nixpath.nix", "import <nixpkgs>");
    let eval = p.restricted(&file);
    let inv =
        Probe::inv(&eval, &file).env("NIX_PATH", format!("nixpkgs={}", fake_nixpkgs.display()));
    let Err(EvalError::Failed { message }) = eval.run(&inv).await else {
        panic!("<nixpkgs> resolved")
    };
    assert!(
        message.contains("was not found in the Nix search path"),
        "{message}"
    );
    assert_no_secret(&message);
    assert_eq!(
        p.value("map (e: e.prefix) builtins.nixPath").await,
        serde_json::json!(["kcore-fragment"])
    );
}

/// Every fetcher is refused before it connects: a listener on 127.0.0.1 sees no
/// connection. `getFlake` and `fetchTree` do not exist even where nix.conf (here
/// `NIX_CONFIG`) enables flakes; with flakes enabled, Nix 2.8's `getFlake` would download
/// despite restricted mode.
#[tokio::test]
async fn fetchers_make_no_request() {
    let Some(p) = probe("fetchers_make_no_request") else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let zeros = "0".repeat(52);
    for text in [
        format!(r#"import (builtins.fetchurl "{url}/fetchurl")"#),
        format!(r#"builtins.fetchurl {{ url = "{url}/fetchurl2"; sha256 = "{zeros}"; }}"#),
        format!(r#"builtins.fetchTarball "{url}/tarball.tar.gz""#),
        format!(r#"builtins.fetchTarball {{ url = "{url}/t2.tar.gz"; sha256 = "{zeros}"; }}"#),
        format!(r#"builtins.fetchGit "{url}/repo""#),
        format!(r#"builtins.fetchGit {{ url = "{url}/repo2"; }}"#),
        format!(r#"builtins.fetchMercurial "{url}/hg""#),
    ] {
        let message = p.refused(&text).await;
        assert!(
            message.contains("is forbidden in restricted mode"),
            "{text}: {message}"
        );
    }
    for text in [
        format!(r#"builtins.getFlake "{url}/flake.tar.gz""#),
        format!(r#"builtins.getFlake "git+{url}/flake""#),
        format!(r#"builtins.fetchTree {{ type = "tarball"; url = "{url}/tree.tar.gz"; }}"#),
    ] {
        let file = p.submit("flake.nix", &text);
        let eval = p.restricted(&file);
        let inv = Probe::inv(&eval, &file)
            .env("NIX_CONFIG", "experimental-features = nix-command flakes");
        let Err(EvalError::Failed { message }) = eval.run(&inv).await else {
            panic!("{text} evaluated")
        };
        assert!(
            message.contains("attribute 'getFlake' missing")
                || message.contains("experimental Nix feature 'flakes' is disabled"),
            "{text}: {message}"
        );
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the listener received a connection from {peer}"),
        Err(e) => panic!("accept: {e}"),
    }
}

/// Nothing reaches /nix/store: paths are only computed, and a fetch of the submitted
/// file itself (a `file://` URL restricted mode permits) fails instead of copying it in.
#[tokio::test]
async fn nothing_is_written_to_the_store() {
    let Some(p) = probe("nothing_is_written_to_the_store") else {
        return;
    };
    let unique = format!(
        "kcore-probe-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let in_store = |name: &str| -> Vec<String> {
        std::fs::read_dir("/nix/store")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(name))
                    .collect()
            })
            .unwrap_or_default()
    };
    for text in [
        format!(r#"builtins.toFile "{unique}-tofile" "x""#),
        format!(r#"builtins.path {{ path = ./{unique}.nix; name = "{unique}-path"; }}"#),
        format!(r#""${{./{unique}.nix}}""#),
        format!(
            r#"(derivation {{ name = "{unique}-drv"; system = "x86_64-linux"; builder = "/bin/sh"; }}).drvPath"#
        ),
    ] {
        let file = p.submit(&format!("{unique}.nix"), &text);
        let eval = p.restricted(&file);
        let out = eval.run(&Probe::inv(&eval, &file)).await.unwrap();
        let path: String = serde_json::from_slice(&out.stdout).unwrap();
        assert!(path.starts_with("/nix/store/"), "{text}: {path}");
        assert!(!Path::new(&path).exists(), "{text} wrote {path}");
    }
    let file = p.submit(&format!("{unique}.nix"), "");
    let text = format!("builtins.fetchurl \"file://{}\"", file.display());
    let file = p.submit(&format!("{unique}.nix"), &text);
    let eval = p.restricted(&file);
    let result = eval.run(&Probe::inv(&eval, &file)).await;
    assert!(
        matches!(&result, Err(EvalError::Failed { message }) if message.contains("not supported by store 'dummy'")),
        "{result:?}"
    );
    assert_eq!(in_store(&unique), Vec::<String>::new());
}

#[tokio::test]
async fn endless_recursion_fails_fast_and_clearly() {
    let Some(p) = probe("endless_recursion_fails_fast_and_clearly") else {
        return;
    };
    let message = p.refused("let f = n: f (n + 1); in f 0").await;
    assert!(message.contains("stack overflow"), "{message}");
    let message = p.refused("let x = x; in x").await;
    assert!(message.contains("infinite recursion"), "{message}");
}

#[tokio::test]
async fn unbounded_allocation_is_stopped_by_the_memory_bound() {
    let Some(p) = probe("unbounded_allocation_is_stopped_by_the_memory_bound") else {
        return;
    };
    let result = p
        .eval("builtins.listToAttrs (builtins.genList (i: { name = toString i; value = i; }) 20000000)")
        .await;
    assert!(
        matches!(result, Err(EvalError::MemoryBound(256))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_cpu_heavy_fold_is_stopped_by_the_cpu_bound() {
    let Some(p) = probe("a_cpu_heavy_fold_is_stopped_by_the_cpu_bound") else {
        return;
    };
    let result = p
        .eval("let f = n: if n == 0 then 0 else f (n - 1); in builtins.foldl' (a: i: a + f 10000) 0 (builtins.genList (x: x) 100000)")
        .await;
    let err = result.unwrap_err();
    assert!(matches!(err, EvalError::CpuBound(2)), "{err:?}");
    assert!(err.is_timeout());
}

#[tokio::test]
async fn the_wall_clock_timeout_still_applies() {
    let Some(p) = probe("the_wall_clock_timeout_still_applies") else {
        return;
    };
    let file = p.submit(
        "slow.nix",
        "let f = n: if n == 0 then 0 else f (n - 1); in builtins.foldl' (a: i: a + f 10000) 0 (builtins.genList (x: x) 100000)",
    );
    let bounds = EvalBounds {
        timeout: Duration::from_millis(300),
        cpu_seconds: 60,
        ..BOUNDS
    };
    let eval = RestrictedEval::new(&p.nix, bounds).allow_submitted("kcore-fragment", &file);
    let err = eval.run(&Probe::inv(&eval, &file)).await.unwrap_err();
    assert!(matches!(err, EvalError::TimedOut(_)), "{err:?}");
    assert!(
        err.to_string().contains("process group was killed"),
        "{err}"
    );
}

/// An error raised inside an allowed source file names its position but does not quote its
/// lines; an error in the submitted file keeps its code frame.
#[tokio::test]
async fn messages_quote_only_the_submitted_file() {
    let Some(p) = probe("messages_quote_only_the_submitted_file") else {
        return;
    };
    let lib = p.dir.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    std::fs::write(
        lib.join("default.nix"),
        "{\n  f = arg:\n    let\n      string = toString arg; # KCORE-LIB-LINE\n    in string;\n}\n",
    )
    .unwrap();
    let lib = std::fs::canonicalize(lib).unwrap();
    let file = p.submit("uses-lib.nix", "(import <kcore-lib>).f { }\n");
    let eval = p.restricted(&file).allow_source("kcore-lib", &lib);
    let Err(EvalError::Failed { message }) = eval.run(&Probe::inv(&eval, &file)).await else {
        panic!("expected an error")
    };
    assert!(
        message.contains("cannot coerce a set to a string"),
        "{message}"
    );
    assert!(
        message.contains(&format!("{}/default.nix:4:", lib.display())),
        "{message}"
    );
    assert!(!message.contains("KCORE-LIB-LINE"), "{message}");

    let message = p.refused("let a = 1;\n  b = undefinedThing;\nin b\n").await;
    assert!(
        message.contains("undefined variable 'undefinedThing'"),
        "{message}"
    );
    assert!(message.contains("b = undefinedThing;"), "{message}");
}

/// A value too large to hand back stops at the output bound, not in the caller's memory.
#[tokio::test]
async fn a_huge_value_is_stopped_by_the_output_bound() {
    let Some(p) = probe("a_huge_value_is_stopped_by_the_output_bound") else {
        return;
    };
    // 20 MiB of JSON, well inside the 256 MiB memory bound.
    let result = p
        .eval("builtins.genList (i: \"0123456789abcdef0123456789abcdef\") 600000")
        .await;
    assert!(
        matches!(result, Err(EvalError::OutputBound(_))),
        "{result:?}"
    );
}
