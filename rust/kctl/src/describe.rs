//! `kctl describe ...`.

use clap::Subcommand;

use crate::cli::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DescribeCommand,
}

#[derive(Debug, Subcommand)]
pub enum DescribeCommand {}

pub async fn run(args: Args, _global: &GlobalArgs) -> anyhow::Result<()> {
    match args.command {}
}
