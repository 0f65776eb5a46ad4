//! `kctl --node HOST:9091 node ...`: commands answered by one node's agent: inventory
//! (`disks`, `nics`, `storage`), day-2 changes (`apply-disko`, `apply-nix`) and the result
//! of a long operation (`operation`).
//!
//! `apply-disko` always shows the plan first (the dry run); with `--apply` it then sends
//! the hash of exactly that plan, so a plan that changed in between is refused by the
//! agent. Long operations stream their output with a progress display on a terminal (plain
//! lines on stderr otherwise); the final result goes to stdout in the `-o` format.
//! Refusals (the agent said no, nothing changed) exit 1, failures exit 3.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use kcore_api::inventory::{
    ApplyDiskoRequest, ApplyNixRequest, DiskInventory, DiskoPlanResponse, NicInventory,
    OperationResult, OperationStarted, StorageView,
};

use crate::escape::{escape, escape_lines};
use crate::exit::Refused;
use crate::follow::{finish, follow};
use crate::global::GlobalArgs;
use crate::output::{OutputFormat, print};
use crate::paths;
use crate::remote::Remote;
use crate::target::NodeTarget;
use crate::views::disko::PlanOut;
use crate::views::inventory::{DisksOut, NicsOut, StorageOut};

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List the node's block devices, with by-id paths and whether each is in use (and why).
    Disks,
    /// List the node's network interfaces: MAC, state, speed, addresses.
    Nics,
    /// Show the node's storage backend: volume groups and LVs, or ZFS pools, and kcore mounts.
    Storage,
    /// Validate and plan a disko fragment on the node; with --apply, format and mount it.
    ApplyDisko(ApplyDiskoArgs),
    /// Write a NixOS module to the node's configuration and rebuild (test, then switch).
    ApplyNix(ApplyNixArgs),
    /// Show a long operation's result (or follow it while it runs).
    Operation(OperationArgs),
}

#[derive(Debug, clap::Args)]
pub struct ApplyDiskoArgs {
    /// The disko fragment (`{ disko.devices = { ... }; }`), e.g. from `kctl disko render`.
    #[arg(short = 'f', long = "file", value_name = "LAYOUT.nix")]
    pub file: PathBuf,
    /// Apply the plan shown (without it, only the plan is shown and nothing is touched).
    #[arg(long)]
    pub apply: bool,
    /// Kill disko after this many seconds (the agent caps it at 3600; default 300).
    #[arg(long = "timeout-seconds", value_name = "N")]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct ApplyNixArgs {
    /// The NixOS module to write to the node's `nix.configPath`.
    #[arg(short = 'f', long = "file", value_name = "CONFIG.nix")]
    pub file: PathBuf,
    /// Only write the file; do not run nixos-rebuild.
    #[arg(long = "no-rebuild")]
    pub no_rebuild: bool,
}

#[derive(Debug, clap::Args)]
pub struct OperationArgs {
    /// The operation id an apply printed.
    pub id: String,
    /// Follow its output until it ends (replayed from the start).
    #[arg(long)]
    pub follow: bool,
}

pub async fn run(
    command: AgentCommand,
    global: &GlobalArgs,
    node: &NodeTarget,
) -> anyhow::Result<()> {
    let client = crate::agent_client::connect(global, node)?;
    match command {
        AgentCommand::Disks => {
            let inv: DiskInventory = client.get_json("/v1/inventory/disks").await?;
            print(&DisksOut(inv), global.output)
        }
        AgentCommand::Nics => {
            let inv: NicInventory = client.get_json("/v1/inventory/nics").await?;
            print(&NicsOut(inv), global.output)
        }
        AgentCommand::Storage => {
            let view: StorageView = client.get_json("/v1/inventory/storage").await?;
            for warning in &view.warnings {
                eprintln!("warning: {}", escape_lines(warning));
            }
            print(&StorageOut(view), global.output)
        }
        AgentCommand::ApplyDisko(args) => apply_disko(&client, args, global.output).await,
        AgentCommand::ApplyNix(args) => apply_nix(&client, args, global.output).await,
        AgentCommand::Operation(args) => {
            let result = if args.follow {
                follow(&client, &args.id).await?
            } else {
                client
                    .get_json(&paths::path(&["v1", "operations", &args.id])?)
                    .await?
            };
            finish(result, global.output)
        }
    }
}

async fn apply_disko(
    client: &Remote,
    args: ApplyDiskoArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let layout = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let dry = ApplyDiskoRequest {
        layout: layout.clone(),
        apply: false,
        plan_hash: None,
        timeout_seconds: args.timeout_seconds,
    };
    let plan: DiskoPlanResponse = client
        .post_json("/v1/disko/apply", &dry)
        .await
        .map_err(|e| name_the_operators_file(e, &args.file))?;
    // With --apply on a terminal-less -o json run, stdout carries only the final result.
    if !(args.apply && format != OutputFormat::Table && format != OutputFormat::Wide) {
        print(&PlanOut(plan.clone()), format)?;
    }
    if let Some(refusal) = &plan.refusal {
        return Err(Refused::from_wire(refusal.code.clone(), refusal.message.clone()).into());
    }
    if !args.apply {
        eprintln!(
            "dry run: nothing was changed. Apply exactly this plan with --apply (plan {}).",
            escape(&plan.plan_hash)
        );
        return Ok(());
    }
    let req = ApplyDiskoRequest {
        layout,
        apply: true,
        plan_hash: Some(plan.plan_hash.clone()),
        timeout_seconds: args.timeout_seconds,
    };
    let started: OperationStarted = client.post_json("/v1/disko/apply", &req).await?;
    eprintln!(
        "applying plan {} as operation {} (timeout {} s)",
        escape(&plan.plan_hash),
        escape(&started.operation_id),
        started.effective_timeout_seconds.unwrap_or_default()
    );
    let result = follow(client, &started.operation_id).await?;
    finish(result, format)
}

async fn apply_nix(
    client: &Remote,
    args: ApplyNixArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let config = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let req = ApplyNixRequest {
        config,
        no_rebuild: args.no_rebuild,
    };
    // 200 with the result (--no-rebuild), or 202 with an operation to follow.
    let answer: serde_json::Value = client
        .post_json("/v1/nix/apply", &req)
        .await
        .map_err(|e| name_the_operators_file(e, &args.file))?;
    let result = if answer.get("status").is_some() {
        serde_json::from_value::<OperationResult>(answer).context("decoding the agent's result")?
    } else {
        let started: OperationStarted =
            serde_json::from_value(answer).context("decoding the agent's answer")?;
        eprintln!("rebuilding as operation {}", escape(&started.operation_id));
        follow(client, &started.operation_id).await?
    };
    finish(result, format)
}

/// The agent checks a layout or module in a work copy of its own (`/tmp/kcore-nix-…/
/// config.nix`, `/tmp/kcore-disko-…/fragment.nix`, or bare `config.nix:` in a syntax
/// report); a refusal names the file the operator passed instead, which is the one to fix.
fn name_the_operators_file(err: anyhow::Error, file: &std::path::Path) -> anyhow::Error {
    match err.downcast::<Refused>() {
        Ok(mut refused) => {
            refused.message = rename_work_copy(&refused.message, &file.display().to_string());
            refused.into()
        }
        Err(other) => other,
    }
}

fn rename_work_copy(message: &str, file: &str) -> String {
    let mut text = message.to_string();
    for (marker, base) in [
        ("/kcore-nix-", "/config.nix"),
        ("/kcore-disko-", "/fragment.nix"),
    ] {
        let mut from = 0;
        while let Some(at) = text[from..].find(marker).map(|i| i + from) {
            let Some(end) = text[at..].find(base).map(|i| at + i + base.len()) else {
                break;
            };
            let start = text[..at]
                .rfind(|c: char| c.is_whitespace() || "(\"'`«".contains(c))
                .map_or(0, |i| {
                    i + text[i..].chars().next().map_or(1, char::len_utf8)
                });
            text.replace_range(start..end, file);
            from = start + file.len();
        }
    }
    // The file is named once, in front; the syntax check's report names the work copy
    // by its bare name on every line, which keeps only the position.
    let body = text
        .lines()
        .map(|line| match line.strip_prefix("config.nix:") {
            Some(rest) => format!("  {rest}"),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    format!("{file}: {body}")
}

#[cfg(test)]
mod tests {
    use super::rename_work_copy;

    #[test]
    fn the_agents_work_copy_is_named_as_the_operators_file() {
        let msg = "the configuration does not evaluate:\nerror: boom\n       at /tmp/kcore-nix-Ab12/config.nix:1:1:\n(at /run/x/kcore-disko-9z/fragment.nix:3:4)";
        let out = rename_work_copy(msg, "hosts/hv1.nix");
        assert_eq!(
            out,
            "hosts/hv1.nix: the configuration does not evaluate:\nerror: boom\n       at hosts/hv1.nix:1:1:\n(at hosts/hv1.nix:3:4)"
        );
        let syntax = "the configuration does not parse:\nconfig.nix:1:33: unexpected TOKEN_SEMICOLON\nconfig.nix:1:35: unexpected end of file";
        assert_eq!(
            rename_work_copy(syntax, "my.nix"),
            "my.nix: the configuration does not parse:\n  1:33: unexpected TOKEN_SEMICOLON\n  1:35: unexpected end of file"
        );
        assert_eq!(
            rename_work_copy("nothing here", "a.nix"),
            "a.nix: nothing here"
        );
    }
}
