//! `kctl node ...`: commands about one node. Inventory and day-2 changes talk to the
//! node's agent (`--node HOST:9091`, see `agent`); approval talks to a controller.

use clap::Subcommand;

use crate::cli::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {}

pub async fn run(args: Args, _global: &GlobalArgs) -> anyhow::Result<()> {
    match args.command {}
}
