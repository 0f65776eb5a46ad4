//! `kctl node ...` commands handled by the approval side.

use clap::Subcommand;

use crate::cli::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum ApprovalCommand {}

pub async fn run(command: ApprovalCommand, _global: &GlobalArgs) -> anyhow::Result<()> {
    match command {}
}
