//! `kctl disko plan`: validate the new (and current) fragment to level 2, take the block
//! devices from a snapshot file or this machine, and print the plan with its hash. A plan
//! with refusals is printed and then exits 1 with the refusal codes.

use kcore_api::ErrorCode;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kcore_disko::plan::{BuildPlan, Plan};
use kcore_disko::{BlockSnapshot, DeviceTree};

use crate::exit::Refused;
use crate::global::GlobalArgs;
use crate::output::{OutputFormat, print};
use crate::views::disko::PlanView;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("devices_source").required(true).args(["devices", "live"])))]
pub struct PlanArgs {
    /// The new fragment.
    #[arg(short = 'f', long = "file", value_name = "NEW")]
    pub file: PathBuf,

    /// The fragment the node currently runs (omit for a fresh install).
    #[arg(long = "current", value_name = "CUR")]
    pub current: Option<PathBuf>,

    /// A block-device snapshot (JSON: lsblk output, swaps, holders, by-id links).
    #[arg(long = "devices", value_name = "SNAPSHOT.json")]
    pub devices: Option<PathBuf>,

    /// Take the snapshot from this machine (lsblk, /proc/swaps, /sys/block, /dev/disk).
    #[arg(long = "live")]
    pub live: bool,

    /// The lsblk binary for --live (default: $KCORE_LSBLK, then PATH).
    #[arg(long = "lsblk", value_name = "PATH")]
    pub lsblk: Option<PathBuf>,

    #[command(flatten)]
    pub nix: super::NixArgs,
}

async fn load_tree(
    evaluator: &kcore_disko::eval::Evaluator,
    file: &Path,
) -> anyhow::Result<DeviceTree> {
    kcore_disko::eval::validate_file(evaluator, file, None)
        .await
        .map(|v| v.tree)
        .map_err(|e| super::validate_error(e, file))
}

pub async fn run(args: PlanArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let evaluator = args.nix.evaluator()?;
    let new = load_tree(&evaluator, &args.file).await?;
    let current = match &args.current {
        Some(path) => Some(load_tree(&evaluator, path).await?),
        None => None,
    };
    let snapshot = match &args.devices {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            BlockSnapshot::from_json(&text).map_err(|e| {
                anyhow::Error::new(Refused::new(
                    ErrorCode::InvalidSnapshot,
                    format!("{} is not a block-device snapshot: {e}", path.display()),
                ))
            })?
        }
        None => BlockSnapshot::capture_live(args.lsblk.as_deref())
            .await
            .context("cannot take a snapshot of this machine's block devices")?,
    };
    let plan = Plan::build(&new, current.as_ref(), &snapshot);
    print(&PlanView(&plan), global.output)?;
    if matches!(global.output, OutputFormat::Table | OutputFormat::Wide) {
        let class = serde_json::to_value(plan.class)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        println!("\nclass: {class}\nplan hash: {}", plan.hash);
    }
    if plan.is_refused() {
        let lines: Vec<String> = plan
            .refusals()
            .into_iter()
            .map(|(t, r)| format!("{} ({}): {}: {}", t.name, t.device, r.code, r.message))
            .collect();
        let first = plan
            .refusals()
            .first()
            .map_or(ErrorCode::Refused.as_str(), |(_, r)| r.code.as_str());
        return Err(Refused::from_wire(
            first,
            format!("the plan is refused:\n{}", lines.join("\n")),
        )
        .into());
    }
    Ok(())
}
