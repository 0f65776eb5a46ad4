//! The top-level parser: global flags shared by every command, and one subcommand
//! family per module (`disko`, `node`, ...), each exporting `Args` and `run()`.

use clap::{Parser, Subcommand};

use crate::global::GlobalArgs;
use crate::target::{ControllerTarget, NodeTarget};

/// kcore's operator CLI: install, join, manage storage on and upgrade NixOS hypervisor nodes.
#[derive(Debug, Parser)]
#[command(name = "kctl", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten, next_help_heading = "Node agent (kctl node ...)")]
    pub node: NodeTarget,
    #[command(flatten, next_help_heading = "Controllers")]
    pub controllers: ControllerTarget,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render, validate and plan disko storage layouts (offline).
    Disko(crate::disko::Args),
    /// Talk to one node: inventory, day-2 storage and configuration, approval.
    Node(crate::node::Args),
    /// Create a cluster (CA, sub-CA, admin certificate, context).
    Create(crate::create::Args),
    /// Show and switch kctl contexts.
    Config(crate::config::Args),
    /// Create or update objects from YAML documents (-f FILE, -f - for stdin).
    Apply(crate::apply::Args),
    /// List objects of a kind (nodes, clusterupdates, vms, storage classes), or one.
    Get(crate::get::Args),
    /// Show one object in detail.
    Describe(crate::describe::Args),
    /// Delete one object.
    Delete(crate::delete::Args),
    /// Rotate cluster credentials (sub-CA).
    Rotate(crate::rotate::Args),
}

/// Run the parsed command; each command gets only the target groups it uses.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let (global, controllers) = (&cli.global, &cli.controllers);
    match cli.command {
        Command::Disko(args) => crate::disko::run(args, global).await,
        Command::Node(args) => crate::node::run(args, global, &cli.node, controllers).await,
        Command::Create(args) => crate::create::run(args, global, controllers).await,
        Command::Config(args) => crate::config::run(args, global).await,
        Command::Apply(args) => crate::apply::run(args, global, controllers).await,
        Command::Delete(args) => crate::delete::run(args, global, controllers).await,
        Command::Get(args) => crate::get::run(args, global, controllers).await,
        Command::Describe(args) => crate::describe::run(args, global, controllers).await,
        Command::Rotate(args) => crate::rotate::run(args, global, controllers).await,
    }
}
