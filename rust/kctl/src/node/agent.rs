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
    ApplyDiskoRequest, ApplyNixRequest, Disk, DiskInventory, DiskoPlanResponse, NicInventory,
    OperationEvent, OperationResult, OperationStarted, OperationStatus, StorageView,
};
use serde::Serialize;

use crate::escape::{escape, escape_lines};
use crate::exit::Refused;
use crate::global::GlobalArgs;
use crate::output::{OutputFormat, Tabular, print};
use crate::paths;
use crate::remote::Remote;
use crate::target::NodeTarget;

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
    let plan: DiskoPlanResponse = client.post_json("/v1/disko/apply", &dry).await?;
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
    let answer: serde_json::Value = client.post_json("/v1/nix/apply", &req).await?;
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

/// Stream an operation's events with a progress display; return its final result.
async fn follow(client: &Remote, id: &str) -> anyhow::Result<OperationResult> {
    let stream = paths::path(&["v1", "operations", id, "stream"])?;
    let result = paths::path(&["v1", "operations", id])?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let plain = bar.is_hidden();
    let mut last: Option<OperationResult> = None;
    let streamed = client
        .stream_ndjson::<(), OperationEvent, _>(
            &stream,
            None,
            // The node's tools' output: shown, with control characters escaped.
            |event| match event {
                OperationEvent::Started { kind, .. } => {
                    bar.set_message(format!("{}: started", escape(&kind)))
                }
                OperationEvent::Step { name } => {
                    let name = escape(&name).into_owned();
                    if plain {
                        eprintln!("==> {name}");
                    } else {
                        bar.println(format!("==> {name}"));
                    }
                    bar.set_message(name);
                }
                OperationEvent::Output { line, .. } => {
                    let line = escape(&line);
                    if plain {
                        eprintln!("{line}");
                    } else {
                        bar.println(line);
                    }
                }
                OperationEvent::Finished { result } => last = Some(*result),
            },
        )
        .await;
    bar.finish_and_clear();
    if let Err(err) = streamed {
        // The operation keeps running on the node; its result can be fetched later.
        return Err(err.context(format!(
            "lost the progress stream; fetch the result with `kctl node operation {}`",
            escape(id)
        )));
    }
    match last {
        Some(result) => Ok(result),
        None => client.get_json(&result).await,
    }
}

/// Print the result; a failed or timed-out operation is a failure (exit 3).
fn finish(result: OperationResult, format: OutputFormat) -> anyhow::Result<()> {
    let status = result.status;
    let error = result.error.clone();
    let id = result.operation_id.clone();
    print(&ResultOut(result), format)?;
    match status {
        OperationStatus::Succeeded | OperationStatus::Running => Ok(()),
        OperationStatus::Failed | OperationStatus::TimedOut => {
            let err = error.map_or_else(
                || format!("operation {id} did not succeed"),
                |e| format!("{} ({})", e.message, e.code),
            );
            Err(anyhow::anyhow!(err))
        }
    }
}

/// `1.5 GiB`-style sizes for tables.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn or_dash(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
struct DisksOut(DiskInventory);

fn disk_rows(disk: &Disk, depth: usize, wide: bool, rows: &mut Vec<Vec<String>>) {
    let indent = if depth == 0 {
        String::new()
    } else {
        format!("{}└─", "  ".repeat(depth - 1))
    };
    let mut row = vec![
        format!("{indent}{}", disk.name),
        disk.kind.clone(),
        human_bytes(disk.size_bytes),
        or_dash(disk.fstype.as_deref()),
        if disk.mountpoints.is_empty() {
            "-".into()
        } else {
            disk.mountpoints.join(",")
        },
        if disk.in_use {
            format!("yes: {}", disk.in_use_reason.as_deref().unwrap_or(""))
        } else {
            "no".into()
        },
    ];
    if wide {
        row.extend([
            disk.path.clone(),
            or_dash(disk.by_id.as_deref()),
            or_dash(disk.model.as_deref()),
            or_dash(disk.serial.as_deref()),
        ]);
    }
    rows.push(row);
    for child in &disk.children {
        disk_rows(child, depth + 1, wide, rows);
    }
}

impl Tabular for DisksOut {
    fn headers(&self, wide: bool) -> Vec<String> {
        let mut h: Vec<String> = ["NAME", "TYPE", "SIZE", "FSTYPE", "MOUNTPOINTS", "IN USE"]
            .map(String::from)
            .to_vec();
        if wide {
            h.extend(["PATH", "BY-ID", "MODEL", "SERIAL"].map(String::from));
        }
        h
    }

    fn rows(&self, wide: bool) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        for disk in &self.0.disks {
            disk_rows(disk, 0, wide, &mut rows);
        }
        rows
    }
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
struct NicsOut(NicInventory);

impl Tabular for NicsOut {
    fn headers(&self, wide: bool) -> Vec<String> {
        let mut h: Vec<String> = ["NAME", "STATE", "MAC", "SPEED", "ADDRESSES"]
            .map(String::from)
            .to_vec();
        if wide {
            h.push("MTU".into());
        }
        h
    }

    fn rows(&self, wide: bool) -> Vec<Vec<String>> {
        self.0
            .nics
            .iter()
            .map(|n| {
                let mut row = vec![
                    n.name.clone(),
                    n.state.clone(),
                    or_dash(n.mac.as_deref()),
                    n.speed_mbps
                        .map_or_else(|| "-".to_string(), |s| format!("{s} Mb/s")),
                    if n.addresses.is_empty() {
                        "-".into()
                    } else {
                        n.addresses.join(",")
                    },
                ];
                if wide {
                    row.push(n.mtu.map_or_else(|| "-".into(), |m| m.to_string()));
                }
                row
            })
            .collect()
    }
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
struct StorageOut(StorageView);

impl Tabular for StorageOut {
    fn headers(&self, _wide: bool) -> Vec<String> {
        ["KIND", "NAME", "SIZE", "DETAIL"]
            .map(String::from)
            .to_vec()
    }

    fn rows(&self, _wide: bool) -> Vec<Vec<String>> {
        let v = &self.0;
        let mut rows = vec![vec![
            "backend".into(),
            v.backend.clone(),
            "-".into(),
            "-".into(),
        ]];
        if let Some(lvm) = &v.lvm {
            for vg in &lvm.volume_groups {
                let mark = if vg.name == lvm.vg_name {
                    " (kcore)"
                } else {
                    ""
                };
                rows.push(vec![
                    "vg".into(),
                    format!("{}{mark}", vg.name),
                    human_bytes(vg.size_bytes),
                    format!(
                        "free {}, {} PV, {} LV",
                        human_bytes(vg.free_bytes),
                        vg.pv_count,
                        vg.lv_count
                    ),
                ]);
            }
            for lv in &lvm.logical_volumes {
                let mut detail = format!("attr {}", lv.attr);
                if let Some(pool) = &lv.pool {
                    detail.push_str(&format!(", pool {pool}"));
                }
                if let Some(p) = &lv.data_percent {
                    detail.push_str(&format!(", data {p}%"));
                }
                rows.push(vec![
                    "lv".into(),
                    format!("{}/{}", lv.vg_name, lv.name),
                    human_bytes(lv.size_bytes),
                    detail,
                ]);
            }
        }
        if let Some(zfs) = &v.zfs {
            for pool in &zfs.pools {
                rows.push(vec![
                    "zpool".into(),
                    pool.name.clone(),
                    human_bytes(pool.size_bytes),
                    format!("{}, free {}", pool.health, human_bytes(pool.free_bytes)),
                ]);
            }
            for ds in &zfs.datasets {
                rows.push(vec![
                    "dataset".into(),
                    ds.name.clone(),
                    human_bytes(ds.used_bytes),
                    format!(
                        "avail {}, mounted {}",
                        human_bytes(ds.available_bytes),
                        ds.mountpoint.as_deref().unwrap_or("-")
                    ),
                ]);
            }
        }
        for m in &v.mounts {
            rows.push(vec![
                "mount".into(),
                m.target.clone(),
                "-".into(),
                format!("{} ({})", m.source, m.fstype),
            ]);
        }
        rows
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
struct PlanOut(DiskoPlanResponse);

impl Tabular for PlanOut {
    fn headers(&self, _wide: bool) -> Vec<String> {
        ["TARGET", "DEVICE", "RESOLVES TO", "ACTIONS", "REFUSED"]
            .map(String::from)
            .to_vec()
    }

    fn rows(&self, _wide: bool) -> Vec<Vec<String>> {
        let plan = &self.0;
        let mut rows = Vec::new();
        match serde_json::from_value::<kcore_disko::Plan>(plan.plan.clone()) {
            Ok(p) => {
                for t in &p.targets {
                    let identity = t.identity.as_ref().map_or_else(
                        || "(not found)".to_string(),
                        |i| {
                            format!(
                                "{} serial {} {}{}",
                                i.path,
                                i.serial.as_deref().unwrap_or("-"),
                                human_bytes(i.size),
                                i.by_id.first().map(|b| format!(" {b}")).unwrap_or_default()
                            )
                        },
                    );
                    let actions: Vec<String> = t
                        .actions
                        .iter()
                        .map(|a| {
                            format!(
                                "{} ({}): {}",
                                serde_json::to_value(a.kind)
                                    .ok()
                                    .and_then(|v| v.as_str().map(str::to_string))
                                    .unwrap_or_default(),
                                serde_json::to_value(a.class)
                                    .ok()
                                    .and_then(|v| v.as_str().map(str::to_string))
                                    .unwrap_or_default(),
                                a.detail
                            )
                        })
                        .collect();
                    let refused: Vec<String> = t
                        .refusals
                        .iter()
                        .map(|r| format!("{}: {}", r.code, r.message))
                        .collect();
                    rows.push(vec![
                        t.name.clone(),
                        t.device.clone(),
                        identity,
                        actions.join("; "),
                        if refused.is_empty() {
                            "-".into()
                        } else {
                            refused.join("; ")
                        },
                    ]);
                }
            }
            Err(_) => rows.push(vec![
                "(plan)".into(),
                "-".into(),
                "-".into(),
                plan.plan.to_string(),
                "-".into(),
            ]),
        }
        let verdict = match &plan.refusal {
            None => "apply allowed".to_string(),
            Some(r) => format!("apply refused: {} ({})", r.message, r.code),
        };
        rows.push(vec![
            "(summary)".into(),
            format!("mode {}", plan.management_mode),
            format!("validated: {}", plan.validated.join(", ")),
            format!("plan {}", plan.plan_hash),
            verdict,
        ]);
        rows
    }
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
struct ResultOut(OperationResult);

impl Tabular for ResultOut {
    fn headers(&self, _wide: bool) -> Vec<String> {
        [
            "OPERATION",
            "KIND",
            "STATUS",
            "GENERATION",
            "WRITTEN",
            "ERROR",
        ]
        .map(String::from)
        .to_vec()
    }

    fn rows(&self, _wide: bool) -> Vec<Vec<String>> {
        let r = &self.0;
        vec![vec![
            r.operation_id.clone(),
            r.kind.clone(),
            serde_json::to_value(r.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            or_dash(r.generation.as_deref()),
            if r.written.is_empty() {
                "-".into()
            } else {
                r.written.join(",")
            },
            r.error
                .as_ref()
                .map_or_else(|| "-".into(), |e| format!("{}: {}", e.code, e.message)),
        ]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(10 * 1024 * 1024 * 1024), "10.0 GiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
