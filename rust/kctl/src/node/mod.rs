//! `kctl node ...`: commands about one node. Inventory and day-2 changes talk to the
//! node's agent (`--node HOST:9091`, module `agent`); approval talks to a controller
//! (module `approval`); `install` talks to both: the install-mode agent on the live ISO
//! and a controller that signs the node's certificates.

pub mod agent;
pub mod approval;
pub mod install;

use clap::Subcommand;

use crate::global::GlobalArgs;
use crate::target::{ControllerTarget, NodeTarget};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent the inventory and day-2 commands talk to.
    #[command(flatten, next_help_heading = "Node agent")]
    pub node: NodeTarget,
    /// Which controllers to call.
    #[command(flatten, next_help_heading = "Controllers")]
    pub controllers: crate::target::ControllerTarget,
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    #[command(flatten)]
    Agent(agent::AgentCommand),
    #[command(flatten)]
    Approval(approval::ApprovalCommand),
    /// Install a node booted from the live ISO: plan, confirm, format, install, enrol
    /// LUKS, write /etc/kcore, store the recovery key, reboot (docs/kctl.md).
    Install(Box<install::InstallArgs>),
}

/// Agent commands get the node target, approval the controllers.
pub async fn run(
    args: Args,
    global: &GlobalArgs,
    node: &NodeTarget,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    match args.command {
        NodeCommand::Agent(command) => agent::run(command, global, node).await,
        NodeCommand::Approval(command) => approval::run(command, global, controllers).await,
        NodeCommand::Install(args) => install::run(*args, global, node, controllers).await,
    }
}
