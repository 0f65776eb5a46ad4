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

/// The user's file as one module, shared by levels 2 and 3 and the position look-up
/// (`src/nix/load.nix`): called with its defaults, `imports` dropped unforced, options beside
/// `disko` accepted lazily.
const LOAD_NIX: &str = include_str!("nix/load.nix");
/// Level 2: `disko.devices` after the module system, as data, plus what was ignored.
const LEVEL2_NIX: &str = include_str!("nix/level2.nix");
/// Level 3: the same module under disko's `toplevel` type, down to its scripts.
const LEVEL3_NIX: &str = include_str!("nix/level3.nix");
/// Where option paths were written in the user's file.
const POSITIONS_NIX: &str = include_str!("nix/positions.nix");

/// One `--expr`: `body` (a function of `load`, then of its arguments) applied to the shared
/// loader (one expression, as a restricted evaluation may read no file of ours; each file
/// still parses on its own).
fn with_load(body: &str) -> String {
    format!("({body}) ({LOAD_NIX})")
}

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
    /// `file:line:column` in the user's file where the option was written, when the file
    /// spells it out (levels 2 and 3 look it up after the fact).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// Nix's or disko's own message when `message` says it in kcore's words (an error raised
    /// inside disko's files, reported at the user's option).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Finding {
    /// A finding with no position or detail yet.
    pub fn new(level: u8, location: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            level,
            location: location.into(),
            message: message.into(),
            position: None,
            detail: None,
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "level {}: {}: {}",
            self.level, self.location, self.message
        )?;
        if let Some(at) = self.position.as_ref().filter(|p| **p != self.location) {
            write!(f, " (at {at})")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, "; disko said: {detail}")?;
        }
        Ok(())
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
    /// What the check saw but did not evaluate (options beside `disko`, `imports`).
    pub notes: Vec<String>,
}

/// What level 2 read: `disko.devices` after the module system, and what it left aside.
#[derive(Debug, Clone, serde::Deserialize)]
struct Level2Out {
    devices: serde_json::Value,
    beside: Vec<String>,
    imports: bool,
}

impl Level2Out {
    /// The notes for what a standalone check leaves aside.
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.beside.is_empty() {
            notes.push(format!(
                "{} beside `disko`: NixOS options, not disko's; not checked",
                self.beside
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.imports {
            notes.push("`imports` is not evaluated by a standalone check: disks or pools declared in the imported modules are not seen".into());
        }
        notes
    }
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
    pub(crate) fn restricted(
        &self,
        fragment: Option<&Path>,
        sources: &[(&str, &Path)],
    ) -> RestrictedEval {
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
        self.level2_noted(fragment, nixpkgs_lib)
            .await
            .map(|(tree, _)| tree)
    }

    /// Level 2 and its notes (what the check saw but did not evaluate). Each finding
    /// carries the position in the user's file where its option was written.
    pub async fn level2_noted(
        &self,
        fragment: &Path,
        nixpkgs_lib: Option<&Path>,
    ) -> Result<(DeviceTree, Vec<String>), ValidateError> {
        let out = self.eval_level2(fragment, nixpkgs_lib).await?;
        let json = serde_json::json!({ "disko": { "devices": out.devices } });
        match DeviceTree::from_json(&json) {
            Ok(tree) => Ok((tree, out.notes())),
            Err(problems) => {
                let mut findings: Vec<Finding> = problems
                    .into_iter()
                    .map(|p| Finding::new(2, p.path, p.message))
                    .collect();
                self.locate(&mut findings, fragment, nixpkgs_lib).await;
                Err(ValidateError::Invalid(fold_findings(findings)))
            }
        }
    }

    /// The fragment's `disko.devices` as plain JSON, `{ "disko": { "devices": … } }` (the
    /// first half of level 2).
    pub async fn eval_json(
        &self,
        fragment: &Path,
        nixpkgs_lib: Option<&Path>,
    ) -> Result<serde_json::Value, ValidateError> {
        let out = self.eval_level2(fragment, nixpkgs_lib).await?;
        Ok(serde_json::json!({ "disko": { "devices": out.devices } }))
    }

    /// The nixpkgs lib to use: the caller's, else the evaluator's own.
    fn lib_for(&self, nixpkgs_lib: Option<&Path>) -> Result<Option<PathBuf>, ValidateError> {
        nixpkgs_lib
            .or(self.nixpkgs_lib.as_deref())
            .map(absolute)
            .transpose()
    }

    async fn eval_level2(
        &self,
        fragment: &Path,
        nixpkgs_lib: Option<&Path>,
    ) -> Result<Level2Out, ValidateError> {
        let fragment = absolute(fragment)?;
        let lib = self.lib_for(nixpkgs_lib)?;
        let sources: Vec<(&str, &Path)> = lib
            .iter()
            .map(|l| ("kcore-nixpkgs-lib", l.as_path()))
            .collect();
        let eval = self.restricted(Some(&fragment), &sources);
        let mut args = NixEval::expr(with_load(LEVEL2_NIX)).argstr("fragment", &fragment);
        if let Some(lib) = &lib {
            args = args.argstr("nixpkgsLib", lib);
        }
        let inv = args.append_to(eval.invocation());
        self.run_json(&eval, inv, 2, &fragment, None).await
    }

    /// Give each finding whose location is an option path the position in the user's file
    /// where that option was written. Best effort: a look-up that fails leaves them as
    /// they are (the findings are what matters).
    async fn locate(&self, findings: &mut [Finding], fragment: &Path, nixpkgs_lib: Option<&Path>) {
        let (Ok(fragment), Ok(lib)) = (absolute(fragment), self.lib_for(nixpkgs_lib)) else {
            return;
        };
        let paths: Vec<Vec<String>> = findings
            .iter()
            .map(|f| option_path_components(&f.location))
            .collect();
        if paths.iter().all(Vec::is_empty) {
            return;
        }
        let sources: Vec<(&str, &Path)> = lib
            .iter()
            .map(|l| ("kcore-nixpkgs-lib", l.as_path()))
            .collect();
        let eval = self.restricted(Some(&fragment), &sources);
        let Ok(paths_json) = serde_json::to_string(&paths) else {
            return;
        };
        let mut args = NixEval::expr(with_load(POSITIONS_NIX))
            .argstr("fragment", &fragment)
            .argstr("paths", paths_json);
        if let Some(lib) = &lib {
            args = args.argstr("nixpkgsLib", lib);
        }
        let inv = args.append_to(eval.invocation());
        let Ok(positions) = self
            .run_json::<Vec<Option<NixPos>>>(&eval, inv, 2, &fragment, None)
            .await
        else {
            return;
        };
        for (finding, pos) in findings.iter_mut().zip(positions) {
            if let Some(pos) = pos {
                finding.position = Some(format!("{}:{}:{}", pos.file, pos.line, pos.column));
            }
        }
    }

    /// Level 3: evaluate through disko's option types to the create and mount scripts.
    /// An error inside disko's own files is reported at the user's option that led there
    /// (the innermost option in Nix's trace, from a second run with `--show-trace`),
    /// disko's message kept as the detail.
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
        let args = NixEval::expr(with_load(LEVEL3_NIX))
            .argstr("fragment", &fragment)
            .argstr("disko", &disko)
            .argstr("nixpkgsLib", &lib);
        let inv = args.append_to(eval.invocation());
        match self.run_json(&eval, inv, 3, &fragment, Some(&disko)).await {
            Err(ValidateError::Invalid(findings)) => {
                // Only the trace names the user's option of an error raised inside disko's
                // files; `--show-trace` costs seconds on a large layout, so it runs only when
                // the message named no option.
                let mut findings = if findings.iter().all(|f| f.location.starts_with("disko.")) {
                    findings
                } else {
                    let inv = args.show_trace().append_to(eval.invocation());
                    match self
                        .run_json::<DeepOutput>(&eval, inv, 3, &fragment, Some(&disko))
                        .await
                    {
                        Err(ValidateError::Invalid(traced)) => traced,
                        _ => findings,
                    }
                };
                self.locate(&mut findings, &fragment, Some(&lib)).await;
                Err(ValidateError::Invalid(findings))
            }
            other => other,
        }
    }

    /// `nix-instantiate --eval -E 1`, restricted like every evaluation: the cost of
    /// starting the evaluator (the benchmark's baseline).
    pub async fn baseline(&self) -> Result<(), ValidateError> {
        let eval = self.restricted(None, &[]);
        eval.run(&NixEval::expr("1").append_to(eval.invocation()))
            .await
            .map(|_| ())
            .map_err(|e| eval_failure(e, 2, Path::new("«baseline»"), None))
    }

    pub(crate) async fn run_json<T: serde::de::DeserializeOwned>(
        &self,
        eval: &RestrictedEval,
        inv: Invocation,
        level: u8,
        fragment: &Path,
        disko: Option<&Path>,
    ) -> Result<T, ValidateError> {
        let out = eval
            .run(&inv)
            .await
            .map_err(|e| eval_failure(e, level, fragment, disko))?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            ValidateError::Invalid(vec![Finding::new(
                level,
                fragment.display().to_string(),
                format!("nix-instantiate printed unexpected output: {e}"),
            )])
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
        |rest, first| {
            Finding::new(
                first.level,
                first.location.clone(),
                format!("{rest} more findings not shown (from here on); fix the ones above first"),
            )
        },
    )
}

/// A failed evaluation as a finding (Nix reported an error) or as the bound or tool
/// problem it was.
fn eval_failure(err: EvalError, level: u8, fragment: &Path, disko: Option<&Path>) -> ValidateError {
    match err {
        EvalError::Failed { message } => {
            ValidateError::Invalid(vec![nix_finding_in(level, &message, fragment, disko)])
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

/// Turn nix's stderr into a finding (see [`nix_finding_in`]; no disko source known).
pub fn nix_finding(level: u8, stderr: &str, fragment: &Path) -> Finding {
    nix_finding_in(level, stderr, fragment, None)
}

/// Turn nix's stderr into a finding: the option path if the module system named one in
/// its message, else the innermost user option of the trace ("while evaluating the option
/// `…'", with disko's internal `_create`-style options cut off), else the first
/// `at FILE:LINE:COL` in the fragment, else any position, else the file. When the error
/// was raised inside `disko`'s own files and the message names no option, the finding says
/// so in kcore's words and keeps disko's message (and where) as its detail.
pub fn nix_finding_in(level: u8, stderr: &str, fragment: &Path, disko: Option<&Path>) -> Finding {
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
    let quoted_after = |text: &str, marker: &str| {
        text.find(marker).and_then(|i| {
            let rest = &text[i + marker.len()..];
            rest.find(['\'', '`']).map(|end| rest[..end].to_string())
        })
    };
    // The option named in the error message itself ("The option `…'", "A definition for
    // option `…'"), else the first one an error line names anywhere.
    let option_in = |text: &str| {
        quoted_after(text, "The option `").or_else(|| quoted_after(text, "for option `"))
    };
    let named = option_in(&message).or_else(|| option_in(stderr));
    // The innermost option being evaluated (the trace lists innermost first), without the
    // internal options disko computes from the user's ones.
    let traced = stderr
        .lines()
        .find_map(|l| quoted_after(l, "while evaluating the option `"))
        .map(|opt| {
            let parts = option_path_components(&opt);
            let keep = parts
                .iter()
                .position(|p| p.starts_with('_'))
                .unwrap_or(parts.len());
            join_option_path(&parts[..keep])
        })
        .filter(|opt| !opt.is_empty());
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
    let in_disko = match (disko, positions.first()) {
        (Some(d), Some((f, _, _))) => Path::new(f).starts_with(d),
        _ => false,
    };
    if named.is_none()
        && in_disko
        && let Some(opt) = &traced
    {
        let (f, l, c) = &positions[0];
        let mut finding = Finding::new(
            level,
            opt.clone(),
            "disko's own evaluation fails on this option (the error is raised inside disko's files; the option as written here is its cause)",
        );
        finding.detail = Some(format!("{message} (at {f}:{l}:{c})"));
        return finding;
    }
    let location = if let Some(opt) = named.or(traced) {
        opt
    } else if let Some((f, l, c)) = positions.iter().find(|(f, _, _)| *f == frag) {
        format!("{f}:{l}:{c}")
    } else if let Some((f, l, c)) = positions.iter().find(|(f, _, _)| !f.starts_with('«')) {
        format!("{f}:{l}:{c}")
    } else {
        frag
    };
    Finding::new(level, location, message)
}

/// Nix's `{ file, line, column }` of an attribute.
#[derive(Debug, serde::Deserialize)]
struct NixPos {
    file: String,
    line: u64,
    column: u64,
}

/// `disko.devices.disk."my disk".content` as its attribute names (quotes removed);
/// empty when `location` is not an option path (a `file:line:column` or a file).
fn option_path_components(location: &str) -> Vec<String> {
    if location.starts_with('/') || location.starts_with('(') || location.is_empty() {
        return Vec::new();
    }
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = location.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => cur.extend(chars.next()),
            '.' if !quoted => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

/// The inverse of [`option_path_components`], quoting names as the model does.
fn join_option_path(parts: &[String]) -> String {
    parts
        .iter()
        .map(|p| crate::model::attr_path(p))
        .collect::<Vec<_>>()
        .join(".")
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
                .map(|e| Finding::new(1, format!("{}:{}:{}", e.file, e.line, e.column), e.message))
                .collect(),
        ));
    }
    let (tree, notes) = evaluator
        .level2_noted(file, deep.map(|d| d.nixpkgs_lib.as_path()))
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
        notes,
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
    fn an_error_inside_disko_is_placed_at_the_innermost_user_option() {
        let stderr = "error: value is null while a set was expected\n\n       at /d/lib/types/disk.nix:64:17:\n\n       … while evaluating the option `disko.devices.disk.\"my disk\"._create':\n\n       … while evaluating the option `disko.devices._create':\n";
        let f = nix_finding_in(3, stderr, Path::new("/f.nix"), Some(Path::new("/d")));
        assert_eq!(f.location, "disko.devices.disk.\"my disk\"");
        assert!(f.message.starts_with("disko's own evaluation fails"), "{f}");
        assert_eq!(
            f.detail.as_deref(),
            Some("value is null while a set was expected (at /d/lib/types/disk.nix:64:17)")
        );
        // The same error outside disko's files keeps Nix's message as the finding.
        let f = nix_finding_in(3, stderr, Path::new("/f.nix"), Some(Path::new("/other")));
        assert_eq!(f.message, "value is null while a set was expected");
        assert_eq!(f.detail, None);
    }

    #[test]
    fn a_type_error_names_the_users_option_and_keeps_the_message() {
        let stderr = "error: A definition for option `disko.devices.zpool.t.options.autotrim' is not of type `string'.\n       at /d/lib/types/zpool.nix:1:1:\n";
        let f = nix_finding_in(3, stderr, Path::new("/f.nix"), Some(Path::new("/d")));
        assert_eq!(f.location, "disko.devices.zpool.t.options.autotrim");
        assert!(f.message.starts_with("A definition for option"), "{f}");
    }

    #[test]
    fn option_paths_split_on_unquoted_dots() {
        assert_eq!(
            option_path_components(r#"disko.devices.disk."a.b \"c\"".content"#),
            ["disko", "devices", "disk", "a.b \"c\"", "content"]
        );
        assert!(option_path_components("/f.nix:1:2").is_empty());
        assert_eq!(
            join_option_path(&option_path_components("disko.devices.disk.\"my disk\"")),
            "disko.devices.disk.\"my disk\""
        );
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
