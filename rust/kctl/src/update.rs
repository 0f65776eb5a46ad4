//! `kctl update cluster plan|apply|get|list|approve|cancel|rollback` (alias `kctl update
//! os`): fleet upgrades as `kind: ClusterUpdate` rollouts (docs/rollouts.md). `plan` shows
//! what an apply would do and changes nothing ([`crate::update_plan`]); `apply` is `kctl
//! apply`; `get NAME` shows the rollout's phase and one row per node, and with `--watch`
//! keeps showing it until the rollout ends (redrawn on a terminal, one line per change in
//! a pipe); `approve`, `cancel` and `rollback` call the controller's
//! `POST /v1/clusterupdates/{name}/approve|cancel|rollback`. Exit codes: 0 done, 1 refused
//! or the rollout halted/failed, 3 unreachable or broken.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use kcore_api::ErrorCode;
use kcore_api::clusterupdate::{ClusterUpdatePhase, ClusterUpdateStatus, NodeUpdateRow};
use kcore_api::resource::Kind;
use serde_json::{Value, json};

use crate::controller_client::connect;
use crate::escape::escape;
use crate::exit::Refused;
use crate::global::GlobalArgs;
use crate::kinds;
use crate::output::{OutputFormat, print_object};
use crate::target::ControllerTarget;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which controllers to call.
    #[command(flatten, next_help_heading = "Controllers")]
    pub controllers: ControllerTarget,
    #[command(subcommand)]
    pub command: UpdateCommand,
}

#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Rollouts of a pinned flake revision to the cluster's nodes.
    #[command(visible_alias = "os")]
    Cluster(ClusterArgs),
}

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// What applying ClusterUpdate documents would do, changing nothing: targets, waves,
    /// and per target its agent's evaluation of the pinned host (`update_plan`).
    Plan {
        #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Create or update ClusterUpdate documents (as `kctl apply -f`).
    Apply {
        #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// One rollout: its phase and a row per node. Exit 1 when it halted or failed.
    Get {
        name: String,
        /// Keep showing it until the rollout ends: redrawn on a terminal, one line per
        /// change otherwise (`-o json|yaml`: the object at each change).
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Every rollout with its phase.
    List,
    /// Let a rollout with approvalPolicy manual start.
    Approve { name: String },
    /// Start no further node (nodes mid-step finish or revert).
    Cancel { name: String },
    /// Return every node the rollout updated to its recorded previous generation, in
    /// reverse order under the same strategy limits.
    Rollback { name: String },
}

/// How often `get --watch` reads the rollout again.
const WATCH_EVERY: Duration = Duration::from_millis(500);

pub async fn run(
    args: Args,
    global: &GlobalArgs,
    leading: &ControllerTarget,
) -> anyhow::Result<()> {
    let controllers = args.controllers.join(leading.clone());
    let UpdateCommand::Cluster(cluster) = args.command;
    let (_, client) = match &cluster.command {
        ClusterCommand::Plan { files } => {
            return crate::update_plan::run(files, global, &controllers).await;
        }
        ClusterCommand::Apply { files } => {
            let apply = crate::apply::Args {
                controllers: controllers.clone(),
                files: files.clone(),
                dry_run: None,
            };
            return crate::apply::run(apply, global, &controllers).await;
        }
        _ => connect(global, &controllers)?,
    };
    match cluster.command {
        ClusterCommand::Apply { .. } | ClusterCommand::Plan { .. } => {
            unreachable!("answered above")
        }
        ClusterCommand::List => {
            let list: Value = client
                .get_json(&kinds::list_path(Kind::ClusterUpdate))
                .await?;
            let items = list.get("items").cloned().unwrap_or(Value::Array(vec![]));
            print_object(&items, global.output, || {
                let mut out = String::from("NAME\tPHASE\tNODES\n");
                for o in items.as_array().into_iter().flatten() {
                    let status = status_of(o);
                    let _ = writeln!(
                        out,
                        "{}\t{}\t{}",
                        escape(
                            o.pointer("/metadata/name")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                        ),
                        phase_text(status.phase),
                        status.targets.len()
                    );
                }
                out
            })
        }
        ClusterCommand::Get { name, watch } => {
            let path = kinds::object_path(Kind::ClusterUpdate, "<NAME>", &name)?;
            let object: Value = client.get_json(&path).await?;
            let object = if watch {
                watch_until_ended(&client, &path, object, global.output).await?
            } else {
                show(&object, global.output)?;
                object
            };
            ended_badly(&name, &status_of(&object))
        }
        ClusterCommand::Approve { name } => mark(&client, &name, "approve", global).await,
        ClusterCommand::Cancel { name } => mark(&client, &name, "cancel", global).await,
        ClusterCommand::Rollback { name } => mark(&client, &name, "rollback", global).await,
    }
}

/// `POST /v1/clusterupdates/{name}/approve|cancel`, then the rollout as it is.
async fn mark(
    client: &crate::remote::Remote,
    name: &str,
    what: &str,
    global: &GlobalArgs,
) -> anyhow::Result<()> {
    let path = format!(
        "{}/{what}",
        kinds::object_path(Kind::ClusterUpdate, "<NAME>", name)?
    );
    let object: Value = client.post_json(&path, &json!({})).await?;
    show(&object, global.output)
}

/// `get --watch`: shows `object`, then reads it every [`WATCH_EVERY`] and shows each change
/// until the rollout's phase is final; the last object read. A terminal is redrawn with the
/// whole view; a pipe gets one line per change of the rollout's phase or a node's row.
async fn watch_until_ended(
    client: &crate::remote::Remote,
    path: &str,
    mut object: Value,
    format: OutputFormat,
) -> anyhow::Result<Value> {
    let redraw = format == OutputFormat::Table && std::io::stdout().is_terminal();
    let mut shown: Option<Value> = None;
    loop {
        if shown.as_ref() != Some(&object) {
            if redraw {
                // Clear the screen and go home, then the whole view again.
                print!("\x1b[2J\x1b[H");
                show(&object, format)?;
            } else if matches!(format, OutputFormat::Table | OutputFormat::Wide) {
                print!("{}", change_lines(shown.as_ref(), &object));
            } else {
                show(&object, format)?;
            }
            shown = Some(object.clone());
        }
        if status_of(&object)
            .phase
            .is_some_and(ClusterUpdatePhase::is_final)
        {
            return Ok(object);
        }
        tokio::time::sleep(WATCH_EVERY).await;
        object = client.get_json(path).await?;
    }
}

/// The lines a pipe gets for the change from `before` to `now`: the rollout's phase when
/// it changed (with its message), and each node row that changed.
fn change_lines(before: Option<&Value>, now: &Value) -> String {
    let old = before.map(status_of).unwrap_or_default();
    let new = status_of(now);
    let name = now
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out = String::new();
    if before.is_none() || old.phase != new.phase {
        let _ = write!(out, "{}: {}", escape(name), phase_text(new.phase));
        if let Some(message) = &new.message {
            let _ = write!(out, ": {}", escape(message));
        }
        out.push('\n');
    }
    for row in &new.nodes {
        if old.nodes.iter().any(|r| r == row) {
            continue;
        }
        let _ = writeln!(out, "{}\t{}", escape(name), row_text(row));
    }
    out
}

fn generation_text(g: Option<&kcore_api::rollout::GenerationRef>) -> String {
    g.map_or_else(|| "-".into(), |g| g.number.to_string())
}

/// One node row as the table shows it: node, phase, generation before and after, when
/// it started and finished, the stable code and the reason of a failure.
fn row_text(row: &NodeUpdateRow) -> String {
    let phase = serde_json::to_value(row.phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    format!(
        "{}\t{phase}\t{}\t{}\t{}\t{}\t{}\t{}",
        escape(&row.node_id),
        generation_text(row.previous.as_ref()),
        generation_text(row.generation.as_ref()),
        row.started_at.as_deref().unwrap_or("-"),
        row.rollback_finished_at
            .as_deref()
            .or(row.finished_at.as_deref())
            .unwrap_or("-"),
        row.code.map_or("-", |c| c.as_str()),
        escape(row.reason.as_deref().unwrap_or("")),
    )
}

fn status_of(object: &Value) -> ClusterUpdateStatus {
    object
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

fn phase_text(phase: Option<ClusterUpdatePhase>) -> String {
    phase
        .and_then(|p| serde_json::to_value(p).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "new".into())
}

fn show(object: &Value, format: OutputFormat) -> anyhow::Result<()> {
    let status = status_of(object);
    print_object(object, format, || {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut out = format!("{}: {}\n", escape(name), phase_text(status.phase));
        if let Some(message) = &status.message {
            let _ = writeln!(out, "{}", escape(message));
        }
        if !status.nodes.is_empty() {
            out.push_str("NODE\tPHASE\tGEN-BEFORE\tGEN-AFTER\tSTARTED\tFINISHED\tCODE\tREASON\n");
        }
        for row in &status.nodes {
            let _ = writeln!(out, "{}", row_text(row));
        }
        out
    })
}

/// Exit 1 for a rollout that halted or failed (its status says why).
fn ended_badly(name: &str, status: &ClusterUpdateStatus) -> anyhow::Result<()> {
    match status.phase {
        Some(p @ (ClusterUpdatePhase::Halted | ClusterUpdatePhase::Failed)) => Err(Refused::new(
            ErrorCode::Forbidden,
            format!(
                "rollout {name:?} is {}: {}",
                phase_text(Some(p)),
                status.message.as_deref().unwrap_or("see its nodes")
            ),
        )
        .into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_row_shows_its_code_before_its_reason() {
        let row: NodeUpdateRow = serde_json::from_value(serde_json::json!({
            "nodeId": "n1", "phase": "reverted", "code": "HEALTH_TIMEOUT",
            "reason": "not healthy within 5 s",
        }))
        .unwrap();
        assert_eq!(
            row_text(&row),
            "n1\treverted\t-\t-\t-\t-\tHEALTH_TIMEOUT\tnot healthy within 5 s"
        );
        // A row of an older controller, without a code.
        let row: NodeUpdateRow =
            serde_json::from_value(serde_json::json!({"nodeId": "n2", "phase": "succeeded"}))
                .unwrap();
        assert_eq!(row_text(&row), "n2\tsucceeded\t-\t-\t-\t-\t-\t");
    }
}
