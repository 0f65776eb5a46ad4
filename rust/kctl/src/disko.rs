//! `kctl disko render|validate|plan`: offline work on storage layouts.

use clap::Subcommand;

use crate::cli::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DiskoCommand,
}

#[derive(Debug, Subcommand)]
pub enum DiskoCommand {}

pub async fn run(args: Args, _global: &GlobalArgs) -> anyhow::Result<()> {
    match args.command {}
}
