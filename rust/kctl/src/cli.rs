//! The top-level parser: global flags shared by every command, and one subcommand
//! family per module (`disko`, `node`, ...), each exporting `Args` and `run()`.

use clap::{Parser, Subcommand};

use crate::global::GlobalArgs;
use crate::target::{ControllerTarget, Leading, NodeTarget};

/// kcore's operator CLI: install, join, manage storage on and upgrade NixOS hypervisor nodes.
#[derive(Debug, Parser)]
#[command(name = "kctl", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// `--node ...` before the command (`kctl --node HOST:9091 node disks`).
    #[command(flatten, next_help_heading = "Node agent (kctl node ...)")]
    pub node: Leading<NodeTarget>,
    /// `-s` before the command (`kctl -s HOST:9090 get nodes`).
    #[command(flatten, next_help_heading = "Controllers")]
    pub controllers: Leading<ControllerTarget>,
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
    /// Revoke a retired sub-CA: every certificate it issued is refused by every controller.
    Revoke(crate::rotate::RevokeArgs),
    /// Print kctl's version and, with a context, each controller's.
    Version(crate::version::Args),
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completion(crate::completion::Args),
    /// Fleet upgrades: `update cluster apply|get|list|approve|cancel` (alias `update os`).
    Update(crate::update::Args),
    /// Start or stop a VM's guest (`vm start|stop NAME`).
    Vm(crate::vm::Args),
}

/// Run the parsed command. Each command gets the target groups it uses, joined from
/// before and after the command ([`crate::target`]); the others refuse them.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli {
        global,
        node: Leading(node),
        controllers: Leading(ctl),
        command,
    } = cli;
    let global = &global;
    match command {
        Command::Disko(args) => {
            ctl.unused("disko")?;
            crate::disko::run(args, global, node).await
        }
        Command::Node(args) => {
            let node = args.node.clone().join(node);
            let ctl = args.controllers.clone().join(ctl);
            crate::node::run(args, global, &node, &ctl).await
        }
        Command::Create(args) => {
            node.unused("create")?;
            let ctl = args.controllers.clone().join(ctl);
            crate::create::run(args, global, &ctl).await
        }
        Command::Config(args) => {
            node.unused("config")?;
            ctl.unused("config")?;
            crate::config::run(args, global).await
        }
        Command::Apply(args) => {
            node.unused("apply")?;
            let ctl = args.controllers.clone().join(ctl);
            crate::apply::run(args, global, &ctl).await
        }
        Command::Get(args) => {
            node.unused("get")?;
            let ctl = args.controllers.clone().join(ctl);
            crate::get::run(args, global, &ctl).await
        }
        Command::Describe(args) => {
            node.unused("describe")?;
            let ctl = args.controllers.clone().join(ctl);
            crate::describe::run(args, global, &ctl).await
        }
        Command::Delete(args) => {
            node.unused("delete")?;
            let ctl = args.controllers.clone().join(ctl);
            crate::delete::run(args, global, &ctl).await
        }
        Command::Rotate(args) => {
            node.unused("rotate")?;
            let ctl = args.controllers.clone().join(ctl);
            crate::rotate::run(args, global, &ctl).await
        }
        Command::Revoke(args) => {
            node.unused("revoke")?;
            let ctl = args.controllers.clone().join(ctl);
            crate::rotate::revoke(args, global, &ctl).await
        }
        Command::Version(args) => {
            node.unused("version")?;
            crate::version::run(args, global, ctl).await
        }
        Command::Completion(args) => {
            node.unused("completion")?;
            ctl.unused("completion")?;
            crate::completion::run(args)
        }
        Command::Update(args) => {
            node.unused("update")?;
            crate::update::run(args, global, &ctl).await
        }
        Command::Vm(args) => {
            node.unused("vm")?;
            let ctl = args.controllers.clone().join(ctl);
            crate::vm::run(args, global, &ctl).await
        }
    }
}
