//! Restricted evaluation of Nix text that someone else submitted (a disko layout, a NixOS
//! module to validate): `nix-instantiate` with every way out of the expression closed, and
//! bounded in wall-clock time, CPU time and memory.
//!
//! What [`RestrictedEval::invocation`] passes, and why:
//! - `--option restrict-eval true`: Nix refuses every path outside the search path
//!   (`readFile`, `readDir`, `import`, `storePath`, `pathExists`, a `file://` fetch) and
//!   `builtins.getEnv` returns `""`.
//! - `--option nix-path ''` plus one `-I NAME=PATH` per path the caller allowed: restricted
//!   mode allows exactly the search path. Without the empty `nix-path`, Nix would add
//!   `$NIX_PATH` or, when that is unset, root's channels, and allow reading those. Nix 2.8
//!   has no `allowed-paths` setting (it warns "unknown setting"), so `-I` is the only way in.
//!   An entry may be a single file: then only that file is readable, not its directory.
//! - `--option allowed-uris ''`: no URI is allowed, so `fetchurl`, `fetchTarball`,
//!   `fetchGit` and `fetchMercurial` fail before they connect.
//! - `--option experimental-features ''`: with `flakes` enabled in nix.conf (common on
//!   NixOS), `builtins.getFlake` downloads whatever it is given even in restricted mode
//!   (seen with Nix 2.8); without experimental features it and `fetchTree` do not exist.
//! - `--option allow-unsafe-native-code-during-evaluation false` (no `builtins.exec`) and
//!   `--option allow-import-from-derivation false`, whatever nix.conf says.
//! - `--readonly-mode --store dummy://`: nothing reaches the store. `toFile`, `path` and
//!   derivations only compute their paths; a fetch of an allowed `file://` path (restricted
//!   mode permits it) fails because the dummy store cannot add paths, instead of copying the
//!   file into `/nix/store` (which `--readonly-mode` alone does not stop).
//! - An empty environment: nothing of the caller's environment (`NIX_PATH`, `NIX_CONFIG`,
//!   secrets in variables) reaches the evaluator.
//! - [`Limits`]: an address-space bound (`RLIMIT_AS`) and a CPU-time bound (`RLIMIT_CPU`),
//!   set between fork and exec; plus the runner's wall-clock timeout, which kills the
//!   evaluator's whole process group, and an output bound ([`MAX_OUTPUT_BYTES`]): the
//!   evaluator's output is held in the caller's memory, which its own bound does not cover.
//!
//! Error messages: [`sanitize_stderr`] keeps Nix's messages but drops the code frames
//! (the quoted source lines under `at FILE:LINE:COL:`) of every file that is not the
//! submitted text, so an error raised inside an allowed library file does not echo that
//! file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::runner::{Invocation, Limits, Output, Program, RunError};

/// The most stdout and stderr one evaluation may write: a layout's JSON and disko's
/// scripts are tens of KiB; past this the evaluation is stopped ([`EvalError::OutputBound`])
/// rather than held in the caller's memory.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

/// The bounds of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalBounds {
    /// Wall clock; past it the evaluator's process group is killed.
    pub timeout: Duration,
    /// Address space (`RLIMIT_AS`), in MiB.
    pub memory_mib: u64,
    /// CPU time (`RLIMIT_CPU`), in seconds.
    pub cpu_seconds: u64,
}

impl EvalBounds {
    /// Default memory bound. A level-3 disko evaluation (disko's types on nixpkgs `lib`)
    /// peaks around 45 MiB resident and runs in a 100 MiB address space; 1 GiB leaves
    /// room for large layouts and still stops a runaway long before the host notices.
    pub const DEFAULT_MEMORY_MIB: u64 = 1024;
    /// Default CPU bound: well above what a real layout needs (well under a second), and
    /// below the 120 s wall clock of a disko evaluation, so a spinning evaluation stops by
    /// itself even if nothing kills it (an agent that died without reaping its child).
    pub const DEFAULT_CPU_SECONDS: u64 = 60;

    /// The default memory and CPU bounds with this wall-clock timeout.
    pub fn with_timeout(timeout: Duration) -> EvalBounds {
        EvalBounds {
            timeout,
            memory_mib: Self::DEFAULT_MEMORY_MIB,
            cpu_seconds: Self::DEFAULT_CPU_SECONDS,
        }
    }

    /// The kernel limits for these bounds.
    pub fn limits(&self) -> Limits {
        Limits {
            address_space_bytes: Some(self.memory_mib.saturating_mul(1024 * 1024)),
            cpu_seconds: Some(self.cpu_seconds),
        }
    }
}

/// Why a restricted evaluation did not produce a value.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Nix reported an error in the expression; `message` is its output after
    /// [`sanitize_stderr`].
    #[error("{message}")]
    Failed { message: String },
    /// The wall-clock timeout passed; the evaluator's process group was killed.
    #[error(
        "the evaluation ran past its timeout of {} s; its process group was killed",
        .0.as_secs()
    )]
    TimedOut(Duration),
    /// The CPU-time bound was used up; the kernel stopped the evaluator.
    #[error("the evaluation used up its CPU-time bound of {0} s and was stopped")]
    CpuBound(u64),
    /// The memory bound was reached; the evaluator could not allocate and stopped.
    #[error("the evaluation needed more than its memory bound of {0} MiB and was stopped")]
    MemoryBound(u64),
    /// The evaluation wrote more than [`MAX_OUTPUT_BYTES`] (a huge value or a flood of
    /// traces); its process group was killed.
    #[error("the evaluation wrote more than {} MiB of output and was stopped", .0 / (1024 * 1024))]
    OutputBound(usize),
    /// `nix-instantiate` could not be run at all.
    #[error(transparent)]
    Run(RunError),
}

impl EvalError {
    /// A wall-clock or CPU-time bound stopped the evaluation.
    pub fn is_timeout(&self) -> bool {
        matches!(self, EvalError::TimedOut(_) | EvalError::CpuBound(_))
    }
}

/// One path the evaluation may read, as a `-I NAME=PATH` search-path entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    name: String,
    path: PathBuf,
    /// The submitted text itself: its code frames may appear in messages.
    submitted: bool,
}

/// A `nix-instantiate` run over submitted text with everything but the allowed paths
/// closed (see the module documentation).
#[derive(Debug, Clone)]
pub struct RestrictedEval {
    program: Program,
    bounds: EvalBounds,
    allowed: Vec<Allowed>,
}

impl RestrictedEval {
    /// Nothing readable yet; add paths with [`RestrictedEval::allow_submitted`] and
    /// [`RestrictedEval::allow_source`].
    pub fn new(nix_instantiate: &Program, bounds: EvalBounds) -> RestrictedEval {
        RestrictedEval {
            program: nix_instantiate.clone(),
            bounds,
            allowed: Vec::new(),
        }
    }

    /// Let the evaluation read the submitted text at `path` (a file; pass its canonical
    /// path, since restricted mode compares symlink-free paths). Messages may quote it.
    /// `name` makes it reachable as `<name>` too.
    pub fn allow_submitted(self, name: &str, path: &Path) -> RestrictedEval {
        self.allow(name, path, true)
    }

    /// Let the evaluation read a trusted source tree or file (the disko source, nixpkgs
    /// `lib/`), canonical path. Messages never quote its lines.
    pub fn allow_source(self, name: &str, path: &Path) -> RestrictedEval {
        self.allow(name, path, false)
    }

    fn allow(mut self, name: &str, path: &Path, submitted: bool) -> RestrictedEval {
        self.allowed.push(Allowed {
            name: name.to_string(),
            path: path.to_path_buf(),
            submitted,
        });
        self
    }

    /// The bounds this evaluation runs under.
    pub fn bounds(&self) -> EvalBounds {
        self.bounds
    }

    /// `nix-instantiate` with the restrictions, the search path, the environment cleared,
    /// the limits and the timeout set. The caller appends its own arguments
    /// (`--eval --strict --json --argstr … --expr …`) and runs it with
    /// [`RestrictedEval::run`].
    pub fn invocation(&self) -> Invocation {
        let mut inv = Invocation::new(&self.program)
            .args([
                "--readonly-mode",
                "--store",
                "dummy://",
                "--option",
                "restrict-eval",
                "true",
                "--option",
                "allowed-uris",
                "",
                "--option",
                "nix-path",
                "",
                "--option",
                "experimental-features",
                "",
                "--option",
                "allow-unsafe-native-code-during-evaluation",
                "false",
                "--option",
                "allow-import-from-derivation",
                "false",
            ])
            .env_clear()
            .limits(self.bounds.limits())
            .max_output_bytes(MAX_OUTPUT_BYTES)
            .timeout(self.bounds.timeout);
        for allowed in &self.allowed {
            let mut entry = OsString::from(&allowed.name);
            entry.push("=");
            entry.push(&allowed.path);
            inv = inv.arg("-I").arg(entry);
        }
        inv
    }

    /// Run an invocation made by [`RestrictedEval::invocation`]: the output of a
    /// successful evaluation, else why not.
    pub async fn run(&self, inv: &Invocation) -> Result<Output, EvalError> {
        let out = match inv.output_unchecked().await {
            Ok(out) => out,
            Err(RunError::TimedOut { after, .. }) => return Err(EvalError::TimedOut(after)),
            Err(RunError::OutputTooLarge { limit, .. }) => {
                return Err(EvalError::OutputBound(limit));
            }
            Err(e) => return Err(EvalError::Run(e)),
        };
        if out.status.success() {
            return Ok(out);
        }
        if inv.limits_value().cpu_bound_hit(out.status) {
            return Err(EvalError::CpuBound(self.bounds.cpu_seconds));
        }
        let stderr = out.stderr_lossy();
        if out_of_memory(&stderr) {
            return Err(EvalError::MemoryBound(self.bounds.memory_mib));
        }
        let submitted: Vec<&Path> = self
            .allowed
            .iter()
            .filter(|a| a.submitted)
            .map(|a| a.path.as_path())
            .collect();
        let mut message = sanitize_stderr(&stderr, &submitted);
        if message.is_empty() {
            message = format!("nix-instantiate failed ({}) without a message", out.status);
        }
        Err(EvalError::Failed { message })
    }
}

/// Nix could not allocate: Boehm GC's own warning (which Nix code cannot print: `trace`
/// prefixes `trace: `), or Nix's message for a failed allocation.
fn out_of_memory(stderr: &str) -> bool {
    stderr.lines().map(str::trim).any(|l| {
        l.starts_with("GC Warning: Out of Memory!")
            || l == "error: out of memory"
            || l.contains("std::bad_alloc")
    })
}

/// The most of a message [`sanitize_stderr`] keeps (a `throw` of a huge string would
/// otherwise travel back whole).
pub const MESSAGE_MAX_BYTES: usize = 8192;

/// Added to Nix's "forbidden in restricted mode" errors so the reader knows the rule.
pub const RESTRICTED_HINT: &str = " (submitted Nix is evaluated in restricted mode: it may read only its own text, no other file, no environment variable and no URI; see docs/validation.md)";

/// Nix's error output made safe to hand back: code frames (`  12| source line` and the
/// `   | ^` marker under them) are kept only below an `at FILE:LINE:COL:` naming one of the
/// `submitted` files; frames of any other file, including Nix's own `«string»`
/// expressions, are dropped. Boehm GC warnings and the `--show-trace` hint are dropped,
/// restricted-mode refusals get [`RESTRICTED_HINT`], and the result is cut at
/// [`MESSAGE_MAX_BYTES`].
pub fn sanitize_stderr(stderr: &str, submitted: &[&Path]) -> String {
    let mut kept: Vec<String> = Vec::new();
    let mut frame_allowed = false;
    for line in stderr.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("GC Warning:")
            || trimmed == "(use '--show-trace' to show detailed location information)"
        {
            continue;
        }
        if let Some(file) = position_file(trimmed) {
            frame_allowed = submitted.iter().any(|s| Path::new(file) == *s);
            kept.push(line.to_string());
            continue;
        }
        if is_code_frame(trimmed) {
            if frame_allowed {
                kept.push(line.to_string());
            }
            continue;
        }
        if trimmed.contains("is forbidden in restricted mode") {
            kept.push(format!("{line}{RESTRICTED_HINT}"));
        } else {
            kept.push(line.to_string());
        }
    }
    // Blank lines left where frames were dropped.
    let mut text = kept.join("\n");
    while text.contains("\n\n\n") {
        text = text.replace("\n\n\n", "\n\n");
    }
    let text = text.trim().to_string();
    cut(text, MESSAGE_MAX_BYTES)
}

/// `at FILE:LINE:COL:` → `FILE`.
fn position_file(trimmed: &str) -> Option<&str> {
    let rest = trimmed.strip_prefix("at ")?.strip_suffix(':')?;
    let mut parts = rest.rsplitn(3, ':');
    parts.next()?.parse::<u32>().ok()?;
    parts.next()?.parse::<u32>().ok()?;
    parts.next()
}

/// `12| text` or `| ^` (Nix pads the line number; the caller trims).
fn is_code_frame(trimmed: &str) -> bool {
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    trimmed[digits..].starts_with('|')
}

fn cut(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes not shown)",
        &text[..end],
        text.len() - end
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_FRAMES: &str = "error: cannot coerce a set to a string

       at /lib/strings.nix:1203:16:

         1202|     let
         1203|       string = toString arg;
             |                ^
         1204|     in

       at /tmp/k/fragment.nix:3:7:

            2|   a = 1;
            3|   b = x;
             |       ^
(use '--show-trace' to show detailed location information)";

    #[test]
    fn frames_of_other_files_are_dropped_and_the_submitted_ones_kept() {
        let s = sanitize_stderr(TWO_FRAMES, &[Path::new("/tmp/k/fragment.nix")]);
        assert!(!s.contains("toString arg") && !s.contains("1202|"), "{s}");
        assert!(s.contains("at /lib/strings.nix:1203:16:"), "{s}");
        assert!(s.contains("3|   b = x;"), "{s}");
        assert!(
            s.starts_with("error: cannot coerce a set to a string"),
            "{s}"
        );
        assert!(!s.contains("--show-trace"), "{s}");
        let none = sanitize_stderr(TWO_FRAMES, &[]);
        assert!(!none.contains('|'), "{none}");
    }

    #[test]
    fn internal_expression_frames_gc_warnings_and_long_messages() {
        let s = sanitize_stderr(
            "GC Warning: Failed to expand heap by 8388608 bytes\nerror: boom\n\n       at «string»:7:33:\n\n            7| raw = import x;\n",
            &[],
        );
        assert_eq!(s, "error: boom\n\n       at «string»:7:33:");
        let long = format!("error: {}", "é".repeat(MESSAGE_MAX_BYTES));
        let s = sanitize_stderr(&long, &[]);
        assert!(s.len() < MESSAGE_MAX_BYTES + 100, "{}", s.len());
        assert!(s.ends_with("more bytes not shown)"), "{s}");
    }

    #[test]
    fn restricted_refusals_get_the_hint() {
        let s = sanitize_stderr(
            "error: access to absolute path '/etc/shadow' is forbidden in restricted mode",
            &[],
        );
        assert!(s.ends_with(RESTRICTED_HINT), "{s}");
    }

    #[test]
    fn out_of_memory_is_recognised() {
        assert!(out_of_memory(
            "GC Warning: Out of Memory! Heap size: 409 MiB. Returning NULL!\nerror: out of memory\n"
        ));
        assert!(!out_of_memory(
            "trace: GC Warning: Out of Memory!\nerror: x\n"
        ));
    }
}
