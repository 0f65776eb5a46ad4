//! `kctl disko render|validate|plan`: offline work on storage layouts, no node needed.
//!
//! - `render` turns a storage spec (flags or `--spec FILE`) into a disko fragment (with
//!   `--node`, asking the node whether it has a TPM for LUKS mode `auto`);
//! - `validate` runs validation levels 1-2 (and 3 with `--deep`) on a fragment file;
//! - `plan` compares a new fragment with the current one on a block-device snapshot and
//!   prints the actions, their class and the plan hash; refusals exit with code 1.

mod plan;
mod render;
mod validate;

use kcore_api::ErrorCode;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use crate::global::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DiskoCommand,
}

#[derive(Debug, Subcommand)]
pub enum DiskoCommand {
    /// Render a node's storage spec into a disko fragment (`{ disko.devices = ...; }`).
    Render(render::RenderArgs),
    /// Validate a fragment: Nix syntax, the disko device tree, and with --deep disko's own types.
    Validate(validate::ValidateArgs),
    /// Plan a fragment against the block devices: actions, additive/destructive, refusals, hash.
    Plan(plan::PlanArgs),
}

/// `node` (`--node` before the command) is for `render`'s LUKS mode auto only.
pub async fn run(
    args: Args,
    global: &GlobalArgs,
    node: crate::target::NodeTarget,
) -> anyhow::Result<()> {
    match args.command {
        DiskoCommand::Render(a) => {
            let node = a.node.clone().join(node);
            render::run(a, global, &node).await
        }
        DiskoCommand::Validate(a) => {
            node.unused("disko validate")?;
            validate::run(a, global).await
        }
        DiskoCommand::Plan(a) => {
            node.unused("disko plan")?;
            plan::run(a, global).await
        }
    }
}

/// Where to find `nix-instantiate` and, for deep validation, the disko source and nixpkgs lib.
#[derive(Debug, Clone, clap::Args)]
pub struct NixArgs {
    /// The nix-instantiate binary (default: $KCORE_NIX_INSTANTIATE, then PATH).
    #[arg(long = "nix-instantiate", value_name = "PATH")]
    pub nix_instantiate: Option<PathBuf>,

    /// The disko source tree for --deep (default: $KCORE_DISKO, then $KCORE_TEST_DISKO, then
    /// ~/.cache/kcore/test-inputs/disko).
    #[arg(long = "disko", env = "KCORE_DISKO", value_name = "DIR")]
    pub disko: Option<PathBuf>,

    /// nixpkgs' lib/ directory for --deep (default: $KCORE_NIXPKGS_LIB, then
    /// $KCORE_TEST_NIXPKGS_LIB, then ~/.cache/kcore/test-inputs/nixpkgs-lib).
    #[arg(long = "nixpkgs-lib", env = "KCORE_NIXPKGS_LIB", value_name = "DIR")]
    pub nixpkgs_lib: Option<PathBuf>,
}

impl NixArgs {
    /// The evaluator; fragments that are functions of `lib` get nixpkgs lib when it is known.
    fn evaluator(&self) -> anyhow::Result<kcore_disko::eval::Evaluator> {
        let lib = self.deep_inputs().ok().flatten().map(|d| d.nixpkgs_lib);
        Ok(
            kcore_disko::eval::Evaluator::new(self.nix_instantiate.as_deref())
                .context("validation needs nix-instantiate")?
                .with_nixpkgs_lib(lib),
        )
    }

    /// The deep inputs from the flags, else the environment / cache fallback; `None` if unknown.
    fn deep_inputs(&self) -> anyhow::Result<Option<kcore_disko::DeepInputs>> {
        let fallback = kcore_disko::DeepInputs::from_env();
        let disko = self
            .disko
            .clone()
            .or_else(|| fallback.as_ref().map(|f| f.disko.clone()));
        let lib = self
            .nixpkgs_lib
            .clone()
            .or_else(|| fallback.as_ref().map(|f| f.nixpkgs_lib.clone()));
        match (disko, lib) {
            (Some(disko), Some(nixpkgs_lib)) => {
                let inputs = kcore_disko::DeepInputs { disko, nixpkgs_lib };
                inputs.check().map_err(anyhow::Error::msg)?;
                Ok(Some(inputs))
            }
            _ => Ok(None),
        }
    }
}

/// Turn a validation error into a refusal (invalid input, exit 1) or a failure (exit 3).
fn validate_error(err: kcore_disko::eval::ValidateError, file: &Path) -> anyhow::Error {
    use kcore_disko::eval::ValidateError;
    match err {
        ValidateError::Invalid(_) => anyhow::Error::new(crate::exit::Refused::new(
            ErrorCode::InvalidFragment,
            format!("{}: {err}", file.display()),
        )),
        ValidateError::Read { .. } => anyhow::Error::new(crate::exit::Refused::new(
            ErrorCode::UnreadableFile,
            err.to_string(),
        )),
        other => anyhow::Error::new(other).context(format!("validating {}", file.display())),
    }
}

/// Write `text` to `path` atomically: a temporary file in the same directory, then rename,
/// so a reader never sees half a file and a failure leaves the old file (or none).
pub fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} does not name a file", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(err) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}
