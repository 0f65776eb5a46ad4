//! Shared plumbing of the checks: where the repository, `nix-instantiate` and nixpkgs' `lib/`
//! are, and running the evaluation harness (`tests/eval/eval.nix`) on a configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kcore_nix::programs::NIX_INSTANTIATE;
use kcore_nix::{Invocation, Output, Program, RunError};
use serde_json::Value;

/// No single evaluation or parse here takes more than a few seconds.
const NIX_TIMEOUT: Duration = Duration::from_secs(120);

/// The fake store path prefix `tests/eval/fake-pkgs.nix` gives every package.
pub const FAKE_STORE: &str = "/nix/store/00000000000000000000000000000000-";

/// The repository root (this crate lives in `rust/kcore-nixos-checks`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The sorted names of the directories (`want_dirs`) or files in `dir` of the repository.
pub fn names_in(dir: &str, want_dirs: bool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join(dir))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir() == want_dirs)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Whether the whole repository is above this crate. The Nix package builds from `rust/`
/// alone, so there the checks of the Nix tree print SKIP instead of failing.
pub fn have_repo(test: &str) -> bool {
    let ok = repo_root().join("flake.nix").is_file() && repo_root().join("modules").is_dir();
    if !ok {
        eprintln!(
            "SKIP: {test}: no kcore repository at {} (built from rust/ alone?)",
            repo_root().display()
        );
    }
    ok
}

/// `nix-instantiate` (`KCORE_NIX_INSTANTIATE`, else PATH), or `None` after a SKIP line.
pub fn nix_instantiate(test: &str) -> Option<Program> {
    match NIX_INSTANTIATE.resolve(None) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("SKIP: {test}: {e}");
            None
        }
    }
}

/// Runs `program argv` through kcore-nix's runner to completion, whatever the exit status.
///
/// The argvs the checks pass (the harness's `nix-instantiate --eval` of `tests/eval/eval.nix`,
/// `--parse`, `nix hash path`, `deadnix`) are test scaffolding: no kcore program runs them,
/// so they are spelled here rather than as kcore-nix builders.
pub fn run(program: &Program, argv: &[String]) -> Result<Output, RunError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime");
    rt.block_on(
        Invocation::new(program)
            .args(argv)
            .timeout(NIX_TIMEOUT)
            .output_unchecked(),
    )
}

/// nixpkgs' `lib/` directory: `KCORE_TEST_NIXPKGS_LIB`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/kcore/test-inputs/nixpkgs-lib`.
pub fn nixpkgs_lib() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("KCORE_TEST_NIXPKGS_LIB") {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = match std::env::var_os("XDG_CACHE_HOME") {
                Some(c) => PathBuf::from(c),
                None => match std::env::var_os("HOME") {
                    Some(h) => PathBuf::from(h).join(".cache"),
                    None => return Err("neither KCORE_TEST_NIXPKGS_LIB nor HOME is set".into()),
                },
            };
            cache.join("kcore/test-inputs/nixpkgs-lib")
        }
    };
    if dir.join("default.nix").is_file() && dir.join("modules.nix").is_file() {
        Ok(dir)
    } else {
        Err(format!(
            "no nixpkgs lib/ at {} (set KCORE_TEST_NIXPKGS_LIB to nixpkgs' lib/ directory)",
            dir.display()
        ))
    }
}

/// What an evaluation produced.
pub type EvalResult = Result<Value, String>;

/// The evaluation harness, ready to run.
pub struct Harness {
    nix: Program,
    lib: PathBuf,
    eval_nix: PathBuf,
}

impl Harness {
    /// The harness, or `None` after a SKIP line when nix or nixpkgs' lib is missing.
    pub fn get(test: &str) -> Option<Harness> {
        if !have_repo(test) {
            return None;
        }
        let nix = nix_instantiate(test)?;
        let lib = match nixpkgs_lib() {
            Ok(l) => l,
            Err(why) => {
                eprintln!("SKIP: {test}: {why}");
                return None;
            }
        };
        Some(Harness {
            nix,
            lib,
            eval_nix: repo_root().join("tests/eval/eval.nix"),
        })
    }

    fn run(&self, config: &Value, select: &str) -> EvalResult {
        self.run_with(config, select, true)
    }

    fn run_with(&self, config: &Value, select: &str, disko: bool) -> EvalResult {
        let argv: Vec<String> = vec![
            "--eval".into(),
            "--strict".into(),
            "--json".into(),
            "--readonly-mode".into(),
            self.eval_nix.display().to_string(),
            "--argstr".into(),
            "nixpkgsLib".into(),
            self.lib.display().to_string(),
            "--argstr".into(),
            "select".into(),
            select.into(),
            "--argstr".into(),
            "configJSON".into(),
            config.to_string(),
            "--arg".into(),
            "disko".into(),
            disko.to_string(),
        ];
        self.eval_json(&argv)
    }

    fn eval_json(&self, argv: &[String]) -> EvalResult {
        let out = run(&self.nix, argv).map_err(|e| format!("{e:#}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "harness output is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The outputs of a configuration that must evaluate with no failed assertion.
    pub fn outputs(&self, config: &Value) -> Value {
        match self.run(config, "outputs") {
            Ok(v) => v,
            Err(e) => panic!("evaluation of {config} failed:\n{e}"),
        }
    }

    /// The kcore options' documentation entries (`name`, `description`, `hasExample`,
    /// `hasDefault`).
    pub fn options(&self) -> Vec<Value> {
        match self.run(&serde_json::json!({}), "options") {
            Ok(Value::Array(opts)) => opts,
            Ok(other) => panic!("options are not a list: {other}"),
            Err(e) => panic!("listing the options failed:\n{e}"),
        }
    }

    /// The failed assertions of a configuration evaluated without any disko module.
    pub fn failed_assertions_without_disko(&self, config: &Value) -> Vec<String> {
        match self.run_with(config, "assertions", false) {
            Ok(Value::Array(msgs)) => msgs
                .into_iter()
                .map(|m| m.as_str().unwrap_or_default().to_string())
                .collect(),
            Ok(other) => panic!("assertions are not a list: {other}"),
            Err(e) => panic!("evaluation of {config} failed:\n{e}"),
        }
    }

    /// `select = summary` of `tests/eval/flake-outputs.nix` (the flake evaluated with
    /// stand-in inputs), `config` added to the evaluated `nixosModules.default`.
    pub fn flake_outputs(&self, config: &Value) -> Value {
        self.flake("summary", config, "")
            .unwrap_or_else(|e| panic!("flake-outputs.nix failed:\n{e}"))
    }

    /// Any `select` of `tests/eval/flake-outputs.nix`; `only` picks one module combination.
    pub fn flake(&self, select: &str, config: &Value, only: &str) -> EvalResult {
        let argv: Vec<String> = vec![
            "--eval".into(),
            "--strict".into(),
            "--json".into(),
            "--readonly-mode".into(),
            repo_root()
                .join("tests/eval/flake-outputs.nix")
                .display()
                .to_string(),
            "--argstr".into(),
            "nixpkgsLib".into(),
            self.lib.display().to_string(),
            "--argstr".into(),
            "configJSON".into(),
            config.to_string(),
            "--argstr".into(),
            "select".into(),
            select.into(),
            "--argstr".into(),
            "only".into(),
            only.into(),
        ];
        self.eval_json(&argv)
    }

    /// Every `nixosConfiguration`, evaluated as the flake exports it (`select = hosts`), with
    /// `config` added to each.
    pub fn hosts(&self, config: &Value) -> serde_json::Map<String, Value> {
        match self.flake("hosts", config, "") {
            Ok(Value::Object(m)) => m,
            Ok(other) => panic!("hosts are not an attribute set: {other}"),
            Err(e) => panic!("evaluating the flake's hosts failed:\n{e}"),
        }
    }

    /// One host of [`Harness::hosts`].
    pub fn host_outputs(&self, host: &str) -> Value {
        let mut hosts = self.hosts(&serde_json::json!({}));
        hosts
            .remove(host)
            .unwrap_or_else(|| panic!("no nixosConfiguration {host}"))
    }

    /// The messages of the failed assertions of a configuration.
    pub fn failed_assertions(&self, config: &Value) -> Vec<String> {
        match self.run(config, "assertions") {
            Ok(Value::Array(msgs)) => msgs
                .into_iter()
                .map(|m| m.as_str().unwrap_or_default().to_string())
                .collect(),
            Ok(other) => panic!("assertions are not a list: {other}"),
            Err(e) => panic!("evaluation of {config} failed:\n{e}"),
        }
    }

    /// The error of a configuration that must not evaluate.
    pub fn eval_error(&self, config: &Value) -> String {
        match self.run(config, "outputs") {
            Ok(v) => panic!("{config} evaluated, but should have failed; got {v}"),
            Err(e) => e,
        }
    }
}

/// A rendered configuration file (`agentConfig`, `controllerConfig`) parsed back into data.
pub fn rendered(outputs: &Value, key: &str) -> Value {
    let text = outputs[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} was not rendered: {outputs}"));
    // The harness writes JSON; the real pkgs.formats.yaml writes YAML of the same value. Parse
    // it as YAML, as the daemons do (JSON is YAML), to read it the daemons' way.
    serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{key} does not parse: {e}: {text}"))
}
