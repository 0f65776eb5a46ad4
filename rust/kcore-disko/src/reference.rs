//! The reference verdict: what disko's own CLI says of a layout file, evaluated the way its
//! `cli.nix` does (`nix/reference.nix`), so tests and the corpus benchmark can compare kctl's
//! levels with disko itself.
//!
//! disko's `cli.nix` (at the locked rev) imports the file, calls it when it is a function
//! with `{ inherit lib; } // args` (the `disko` script passes `--argstr mode` and `--arg
//! diskoFile`), and hands `.disko.devices` to `default.nix`'s `eval`: `lib.evalModules` with
//! one option `disko.devices` of disko's `toplevel` type. The script needs `pkgs`; the
//! pkgs-free `_create` and `_mount` of the same `eval` are what this forces, so an error the
//! CLI would hit while evaluating the layout is an error here. It runs restricted like every
//! evaluation (reading the file, disko and nixpkgs lib only).

use std::path::Path;

use kcore_nix::queries::NixEval;

use crate::eval::{DeepInputs, Evaluator, Finding, ValidateError};

/// disko's CLI-style evaluation, from disko's own files.
const REFERENCE_NIX: &str = include_str!("nix/reference.nix");

/// What disko's CLI made of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// disko evaluated it to its create and mount scripts.
    Accepted,
    /// disko's evaluation failed: its first error, located as kctl locates level-3 errors.
    Refused(Finding),
}

impl Evaluator {
    /// Evaluate `file` as disko's CLI does (see the module doc). A tool or bound failure is
    /// an error, not a verdict.
    pub async fn disko_cli_verdict(
        &self,
        file: &Path,
        inputs: &DeepInputs,
    ) -> Result<Verdict, ValidateError> {
        inputs.check().map_err(ValidateError::Inputs)?;
        let canon = |p: &Path| {
            std::fs::canonicalize(p).map_err(|source| ValidateError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let file = canon(file)?;
        let disko = canon(&inputs.disko)?;
        let lib = canon(&inputs.nixpkgs_lib)?;
        let eval = self.restricted(
            Some(&file),
            &[("kcore-disko", &disko), ("kcore-nixpkgs-lib", &lib)],
        );
        let inv = NixEval::expr(REFERENCE_NIX)
            .argstr("diskoFile", &file)
            .argstr("disko", &disko)
            .argstr("nixpkgsLib", &lib)
            .append_to(eval.invocation());
        match self
            .run_json::<bool>(&eval, inv, 3, &file, Some(&disko))
            .await
        {
            Ok(_) => Ok(Verdict::Accepted),
            Err(ValidateError::Invalid(mut findings)) if !findings.is_empty() => {
                Ok(Verdict::Refused(findings.remove(0)))
            }
            Err(e) => Err(e),
        }
    }
}
