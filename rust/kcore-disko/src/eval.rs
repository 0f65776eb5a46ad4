//! Validation levels 2 and 3, and the whole level 1-3 pipeline ([`validate_file`]).
//!
//! Level 2 evaluates the fragment with `nix-instantiate --eval --strict --json` and checks the
//! JSON against [`DeviceTree`]. Level 3 evaluates it through disko's own option types
//! (`diskoLib.toplevel` under `lib.evalModules`, nixpkgs `lib` only, no `pkgs`) down to the
//! real `_create` and `_mount` scripts.
//!
//! Every evaluation is a [`RestrictedEval`] (kcore-nix): restricted mode, no network, no
//! store writes, an empty environment, memory, CPU and wall-clock bounds. It may read the
//! fragment file itself and, where the level needs them, the nixpkgs `lib/` and disko
//! source trees; nothing else, not even the fragment's directory. Messages never quote lines
//! of any file but the fragment.
//!
//! The Nix expressions below are constants: the fragment path, the disko source and the
//! nixpkgs lib enter as `--argstr` values (strings in the argv, never spliced into source).
//! A fragment may be a function like disko's examples (`{ disks ? [ ... ], lib, ... }:`);
//! it is called with its defaults and, when known, `lib`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kcore_nix::programs::NIX_INSTANTIATE;
use kcore_nix::queries::NixEval;
use kcore_nix::restricted::{EvalBounds, EvalError, RestrictedEval};
use kcore_nix::runner::{Invocation, Program, RunError};
use serde::Serialize;

use crate::model::DeviceTree;
use crate::syntax;

/// How long one evaluation may take before its process group is killed (the default
/// wall-clock bound; memory and CPU default to [`EvalBounds::with_timeout`]'s).
pub const EVAL_TIMEOUT: Duration = Duration::from_secs(120);

/// Level 2: import the fragment (calling it if it is a function) and return it as data.
const LEVEL2_EXPR: &str = r#"
{ fragment, nixpkgsLib ? "" }:
let
  raw = import (/. + fragment);
  args = if nixpkgsLib == "" then { } else { lib = import (/. + nixpkgsLib); };
in
if builtins.isFunction raw then raw (builtins.intersectAttrs (builtins.functionArgs raw) args) else raw
"#;

/// Level 3: the fragment as a module under disko's `toplevel` type, down to its scripts.
const LEVEL3_EXPR: &str = r#"
{ fragment, disko, nixpkgsLib }:
let
  lib = import (/. + nixpkgsLib);
  diskoLib = import (/. + disko + "/lib") { inherit lib; };
  raw = import (/. + fragment);
  module = if builtins.isFunction raw then raw (builtins.intersectAttrs (builtins.functionArgs raw) { inherit lib; }) else raw;
  evaluated = lib.evalModules {
    modules = [
      { options.disko.devices = lib.mkOption { type = diskoLib.toplevel; }; }
      (lib.setDefaultModuleLocation fragment module)
    ];
  };
  devices = evaluated.config.disko.devices;
in
# disko's _mount reads _config.fileSystems, which only exists when something is mounted.
{ create = devices._create; mount = if devices._config ? fileSystems then devices._mount else ""; }
"#;

/// The disko source and nixpkgs `lib/` directory that level 3 evaluates with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeepInputs {
    /// The disko source root (it has `lib/default.nix`).
    pub disko: PathBuf,
    /// nixpkgs' `lib/` directory itself (it has `default.nix`).
    pub nixpkgs_lib: PathBuf,
}

impl DeepInputs {
    /// From `KCORE_TEST_DISKO` / `KCORE_TEST_NIXPKGS_LIB`, else from
    /// `${XDG_CACHE_HOME:-$HOME/.cache}/kcore/test-inputs/{disko,nixpkgs-lib}`; `None` if
    /// either is missing.
    pub fn from_env() -> Option<DeepInputs> {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("kcore").join("test-inputs"));
        let pick = |var: &str, dir: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| cache.as_ref().map(|c| c.join(dir)))
        };
        let inputs = DeepInputs {
            disko: pick("KCORE_TEST_DISKO", "disko")?,
            nixpkgs_lib: pick("KCORE_TEST_NIXPKGS_LIB", "nixpkgs-lib")?,
        };
        inputs.check().ok().map(|()| inputs)
    }

    /// Both directories look right (`lib/default.nix` in disko, `default.nix` in lib).
    pub fn check(&self) -> Result<(), String> {
        if !self.disko.join("lib").join("default.nix").is_file() {
            return Err(format!(
                "{} is not a disko source (no lib/default.nix): point --disko / KCORE_TEST_DISKO at a disko checkout",
                self.disko.display()
            ));
        }
        if !self.nixpkgs_lib.join("default.nix").is_file()
            || !self.nixpkgs_lib.join("modules.nix").is_file()
        {
            return Err(format!(
                "{} is not nixpkgs' lib/ directory (no default.nix and modules.nix): point --nixpkgs-lib / KCORE_TEST_NIXPKGS_LIB at <nixpkgs>/lib",
                self.nixpkgs_lib.display()
            ));
        }
        Ok(())
    }
}

/// The scripts disko would run for a fragment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DeepOutput {
    /// The create script (partition, format): `diskoLib.create`.
    pub create: String,
    /// The mount script: `diskoLib.mount`.
    pub mount: String,
}

/// One problem found by a validation level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// 1, 2 or 3.
    pub level: u8,
    /// `file:line:column`, or the disko option path.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "level {}: {}: {}",
            self.level, self.location, self.message
        )
    }
}

/// Why validation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The fragment is invalid; each finding says where.
    #[error("invalid disko fragment:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Finding>),
    /// The fragment could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// nix-instantiate could not be found or started.
    #[error(transparent)]
    Tool(#[from] RunError),
    /// An evaluation bound stopped nix-instantiate: the wall-clock timeout, the CPU-time
    /// bound or the memory bound ([`EvalError::TimedOut`], [`EvalError::CpuBound`],
    /// [`EvalError::MemoryBound`]).
    #[error("{0}")]
    Bound(EvalError),
    /// The deep inputs are not usable.
    #[error("{0}")]
    Inputs(String),
}

/// What a successful validation established.
#[derive(Debug, Clone, Serialize)]
pub struct Validated {
    /// The file that was validated.
    pub file: String,
    /// The highest level that ran (2 or 3).
    pub level: u8,
    /// The typed device tree (level 2).
    pub tree: DeviceTree,
    /// The create and mount scripts (level 3, when it ran).
    pub deep: Option<DeepOutput>,
}

/// Runs `nix-instantiate` for levels 2 and 3.
#[derive(Debug, Clone)]
pub struct Evaluator {
    program: Program,
    bounds: EvalBounds,
    nixpkgs_lib: Option<PathBuf>,
}

impl Evaluator {
    /// Locate `nix-instantiate` (explicit path, then `KCORE_NIX_INSTANTIATE`, then PATH).
    /// Each evaluation runs under [`EVAL_TIMEOUT`] and the default memory and CPU bounds.
    pub fn new(explicit: Option<&Path>) -> Result<Evaluator, RunError> {
        Ok(Evaluator {
            program: NIX_INSTANTIATE.resolve(explicit)?,
            bounds: EvalBounds::with_timeout(EVAL_TIMEOUT),
            nixpkgs_lib: None,
        })
    }

    /// Run every evaluation under these bounds instead.
    pub fn with_bounds(mut self, bounds: EvalBounds) -> Evaluator {
        self.bounds = bounds;
        self
    }

    /// The bounds each evaluation runs under.
    pub fn bounds(&self) -> EvalBounds {
        self.bounds
    }

    /// Give level 2 a nixpkgs `lib/` for fragments that are functions of `lib` (like some of
    /// disko's examples) when the caller passes none.
    pub fn with_nixpkgs_lib(mut self, nixpkgs_lib: Option<PathBuf>) -> Evaluator {
        self.nixpkgs_lib = nixpkgs_lib;
        self
    }

    /// The restricted evaluator allowed to read `fragment` (the submitted text) and the
    /// `sources` (name, trusted tree), nothing else.
    fn restricted(&self, fragment: Option<&Path>, sources: &[(&str, &Path)]) -> RestrictedEval {
        let mut eval = RestrictedEval::new(&self.program, self.bounds);
        if let Some(fragment) = fragment {
            eval = eval.allow_submitted("kcore-fragment", fragment);
        }
        for (name, path) in sources {
            eval = eval.allow_source(name, path);
        }
        eval
    }

    /// Level 2 on a fragment file: its evaluated JSON, checked against the device tree.
    /// `nixpkgs_lib` is passed to fragments that are functions of `lib`.
    pub async fn level2(
        &self,
        fragment: &Path,
        nixpkgs_lib: Option<&Path>,
    ) -> Result<DeviceTree, ValidateError> {
        let json = self.eval_json(fragment, nixpkgs_lib).await?;
        DeviceTree::from_json(&json).map_err(|problems| {
            ValidateError::Invalid(fold_findings(
                problems
                    .into_iter()
                    .map(|p| Finding {
                        level: 2,
                        location: p.path,
                        message: p.message,
                    })
                    .collect(),
            ))
        })
    }

    /// The fragment evaluated to plain JSON (the first half of level 2).
    pub async fn eval_json(
        &self,
        fragment: &Path,
        nixpkgs_lib: Option<&Path>,
    ) -> Result<serde_json::Value, ValidateError> {
        let fragment = absolute(fragment)?;
        let lib = nixpkgs_lib
            .or(self.nixpkgs_lib.as_deref())
            .map(absolute)
            .transpose()?;
        let sources: Vec<(&str, &Path)> = lib
            .iter()
            .map(|l| ("kcore-nixpkgs-lib", l.as_path()))
            .collect();
        let eval = self.restricted(Some(&fragment), &sources);
        let mut args = NixEval::expr(LEVEL2_EXPR).argstr("fragment", &fragment);
        if let Some(lib) = &lib {
            args = args.argstr("nixpkgsLib", lib);
        }
        let inv = args.append_to(eval.invocation());
        self.run_json(&eval, inv, 2, &fragment).await
    }

    /// Level 3: evaluate through disko's option types to the create and mount scripts.
    pub async fn level3(
        &self,
        fragment: &Path,
        inputs: &DeepInputs,
    ) -> Result<DeepOutput, ValidateError> {
        inputs.check().map_err(ValidateError::Inputs)?;
        let fragment = absolute(fragment)?;
        let disko = absolute(&inputs.disko)?;
        let lib = absolute(&inputs.nixpkgs_lib)?;
        let eval = self.restricted(
            Some(&fragment),
            &[("kcore-disko", &disko), ("kcore-nixpkgs-lib", &lib)],
        );
        let inv = NixEval::expr(LEVEL3_EXPR)
            .argstr("fragment", &fragment)
            .argstr("disko", &disko)
            .argstr("nixpkgsLib", &lib)
            .append_to(eval.invocation());
        self.run_json(&eval, inv, 3, &fragment).await
    }

    /// `nix-instantiate --eval -E 1`, restricted like every evaluation: the cost of
    /// starting the evaluator (the benchmark's baseline).
    pub async fn baseline(&self) -> Result<(), ValidateError> {
        let eval = self.restricted(None, &[]);
        eval.run(&NixEval::expr("1").append_to(eval.invocation()))
            .await
            .map(|_| ())
            .map_err(|e| eval_failure(e, 2, Path::new("«baseline»")))
    }

    async fn run_json<T: serde::de::DeserializeOwned>(
        &self,
        eval: &RestrictedEval,
        inv: Invocation,
        level: u8,
        fragment: &Path,
    ) -> Result<T, ValidateError> {
        let out = eval
            .run(&inv)
            .await
            .map_err(|e| eval_failure(e, level, fragment))?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            ValidateError::Invalid(vec![Finding {
                level,
                location: fragment.display().to_string(),
                message: format!("nix-instantiate printed unexpected output: {e}"),
            }])
        })
    }
}

/// At most [`crate::MAX_REPORTED`] findings, repeats folded into the first (see
/// [`crate::fold_repeats`]).
pub fn fold_findings(findings: Vec<Finding>) -> Vec<Finding> {
    crate::fold_repeats(
        findings,
        crate::MAX_REPORTED,
        |f| &mut f.message,
        |f| f.location.clone(),
        |rest, first| Finding {
            level: first.level,
            location: first.location.clone(),
            message: format!(
                "{rest} more findings not shown (from here on); fix the ones above first"
            ),
        },
    )
}

/// A failed evaluation as a finding (Nix reported an error) or as the bound or tool
/// problem it was.
fn eval_failure(err: EvalError, level: u8, fragment: &Path) -> ValidateError {
    match err {
        EvalError::Failed { message } => {
            ValidateError::Invalid(vec![nix_finding(level, &message, fragment)])
        }
        EvalError::Run(e) => ValidateError::Tool(e),
        bound => ValidateError::Bound(bound),
    }
}

fn absolute(path: &Path) -> Result<PathBuf, ValidateError> {
    std::fs::canonicalize(path).map_err(|source| ValidateError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Turn nix's stderr into a finding: the option path if the module system named one,
/// else the first `at FILE:LINE:COL` in the fragment, else any position, else the file.
pub fn nix_finding(level: u8, stderr: &str, fragment: &Path) -> Finding {
    let message = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("error:"))
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| {
            stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("trace:"))
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        });
    let frag = fragment.display().to_string();
    // The option named in the error message itself, else the first one named anywhere.
    let option_in = |text: &str| {
        text.find("The option `").and_then(|i| {
            let rest = &text[i + "The option `".len()..];
            rest.find(['\'', '`']).map(|end| rest[..end].to_string())
        })
    };
    let option = option_in(&message).or_else(|| option_in(stderr));
    let positions: Vec<(String, usize, usize)> = stderr
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("at ")?.strip_suffix(':')?;
            let mut parts = rest.rsplitn(3, ':');
            let col = parts.next()?.parse().ok()?;
            let line = parts.next()?.parse().ok()?;
            Some((parts.next()?.to_string(), line, col))
        })
        .collect();
    let location = if let Some(opt) = option {
        opt
    } else if let Some((f, l, c)) = positions.iter().find(|(f, _, _)| *f == frag) {
        format!("{f}:{l}:{c}")
    } else if let Some((f, l, c)) = positions.iter().find(|(f, _, _)| !f.starts_with('«')) {
        format!("{f}:{l}:{c}")
    } else {
        frag
    };
    Finding {
        level,
        location,
        message,
    }
}

/// Levels 1, 2 and (with `deep`) 3 on a file, stopping at the first level that fails.
pub async fn validate_file(
    evaluator: &Evaluator,
    file: &Path,
    deep: Option<&DeepInputs>,
) -> Result<Validated, ValidateError> {
    let text = std::fs::read_to_string(file).map_err(|source| ValidateError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let errors = syntax::check(&file.display().to_string(), &text);
    if !errors.is_empty() {
        return Err(ValidateError::Invalid(
            errors
                .into_iter()
                .map(|e| Finding {
                    level: 1,
                    location: format!("{}:{}:{}", e.file, e.line, e.column),
                    message: e.message,
                })
                .collect(),
        ));
    }
    let tree = evaluator
        .level2(file, deep.map(|d| d.nixpkgs_lib.as_path()))
        .await?;
    let deep_out = match deep {
        Some(inputs) => Some(evaluator.level3(file, inputs).await?),
        None => None,
    };
    Ok(Validated {
        file: file.display().to_string(),
        level: if deep_out.is_some() { 3 } else { 2 },
        tree,
        deep: deep_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_path_wins_over_positions() {
        let stderr = "error: The option `disko.devices.disk.a.content.format' is used but not defined.\n\n       at /x/lib/modules.nix:1:2:\n";
        let f = nix_finding(3, stderr, Path::new("/f.nix"));
        assert_eq!(f.location, "disko.devices.disk.a.content.format");
    }

    #[test]
    fn positions_in_our_own_expression_are_not_reported() {
        let stderr = "error: anonymous function at /f.nix:1:1 called without required argument 'lib'\n\n       at «string»:7:33:\n";
        let f = nix_finding(2, stderr, Path::new("/f.nix"));
        assert_eq!(f.location, "/f.nix");
    }

    #[test]
    fn fragment_position_is_preferred() {
        let stderr =
            "error: undefined variable 'x'\n\n       at /lib/a.nix:9:9:\n       at /f.nix:3:7:\n";
        let f = nix_finding(2, stderr, Path::new("/f.nix"));
        assert_eq!(
            (f.location.as_str(), f.message.as_str()),
            ("/f.nix:3:7", "undefined variable 'x'")
        );
    }
}
