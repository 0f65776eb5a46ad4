//! The top-level parser: global flags shared by every command, and one subcommand
//! family per module (`disko`, `node`, ...), each exporting `Args` and `run()`.

use clap::{Parser, Subcommand};

use crate::global::GlobalArgs;

/// kcore's operator CLI: install, join, manage storage on and upgrade NixOS hypervisor nodes.
#[derive(Debug, Parser)]
#[command(name = "kctl", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
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
    /// List resources (nodes, storage classes).
    Get(crate::get::Args),
    /// Show one resource in detail.
    Describe(crate::describe::Args),
    /// Rotate cluster credentials (sub-CA).
    Rotate(crate::rotate::Args),
}

/// Run the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Disko(args) => crate::disko::run(args, &cli.global).await,
        Command::Node(args) => crate::node::run(args, &cli.global).await,
        Command::Create(args) => crate::create::run(args, &cli.global).await,
        Command::Config(args) => crate::config::run(args, &cli.global).await,
        Command::Get(args) => crate::get::run(args, &cli.global).await,
        Command::Describe(args) => crate::describe::run(args, &cli.global).await,
        Command::Rotate(args) => crate::rotate::run(args, &cli.global).await,
    }
}
