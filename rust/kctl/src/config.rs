//! `kctl config ...`.

use clap::Subcommand;

use crate::cli::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {}

pub async fn run(args: Args, _global: &GlobalArgs) -> anyhow::Result<()> {
    match args.command {}
}
