//! The corpus of public layouts (`tests/corpus/*.nix`) and how a kctl result is judged
//! against disko's own CLI verdict. Shared by the `corpus` test and the `corpus` benchmark.
//!
//! Each file starts with a header naming where it came from and what kctl should do:
//!
//! ```text
//! # source: github.com/OWNER/REPO PATH [@ COMMIT | (as indexed by the code search)]
//! # covers: what the layout exercises
//! # changed: what was reduced (nothing, or what it imported from outside itself)
//! # kctl-stricter: TEXT | WHY     (only where kctl deliberately refuses what disko accepts)
//! ```

use std::path::{Path, PathBuf};

use kcore_disko::eval::{ValidateError, Validated};
use kcore_disko::reference::Verdict;

/// One layout of the corpus.
pub struct Case {
    /// The file name.
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// The `# source:` line.
    pub source: String,
    /// `# kctl-stricter:`: a text kctl's findings must contain, and why kctl refuses.
    pub stricter: Option<(String, String)>,
}

/// `tests/corpus`.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("corpus")
}

/// Every case, by name; a file without a `# source:` header is an error.
pub fn load() -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    let dir = corpus_dir();
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("nix") {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let header = |key: &str| {
            text.lines()
                .take_while(|l| l.starts_with('#'))
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")).map(str::to_string))
        };
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let source = header("source").ok_or(format!("{name}: no `# source:` header"))?;
        let stricter = match header("kctl-stricter") {
            None => None,
            Some(s) => {
                let (needle, why) = s
                    .split_once(" | ")
                    .ok_or(format!("{name}: `# kctl-stricter: TEXT | WHY`"))?;
                Some((needle.to_string(), why.to_string()))
            }
        };
        cases.push(Case {
            name,
            path,
            source,
            stricter,
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

/// How kctl's result compares with disko's.
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Both accept, or both refuse.
    Agree,
    /// disko accepts, kctl refuses with the finding the header states.
    StricterAsStated,
    /// Anything else, with why.
    Disagree(String),
}

/// Judge one case.
pub fn judge(case: &Case, disko: &Verdict, kctl: &Result<Validated, ValidateError>) -> Judgement {
    match (disko, kctl, &case.stricter) {
        (Verdict::Accepted, Ok(_), None) => Judgement::Agree,
        (Verdict::Accepted, Ok(_), Some((needle, _))) => Judgement::Disagree(format!(
            "stated as stricter ({needle:?}) but kctl accepted it"
        )),
        (Verdict::Accepted, Err(ValidateError::Invalid(findings)), Some((needle, _)))
            if findings.iter().any(|f| f.message.contains(needle.as_str())) =>
        {
            Judgement::StricterAsStated
        }
        (Verdict::Accepted, Err(e), _) => {
            Judgement::Disagree(format!("disko accepts it, kctl refuses: {e}"))
        }
        (Verdict::Refused(_), Err(ValidateError::Invalid(_)), None) => Judgement::Agree,
        (Verdict::Refused(f), Err(ValidateError::Invalid(_)), Some(_)) => {
            Judgement::Disagree(format!("stated as stricter, but disko refuses it too: {f}"))
        }
        (Verdict::Refused(f), Ok(_), _) => {
            Judgement::Disagree(format!("disko refuses it ({f}), kctl accepts it"))
        }
        (Verdict::Refused(_), Err(e), _) => Judgement::Disagree(format!("kctl failed: {e}")),
    }
}
