//! `kctl node ...` commands handled by the agent side.

use clap::Subcommand;

use crate::cli::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum AgentCommand {}

pub async fn run(command: AgentCommand, _global: &GlobalArgs) -> anyhow::Result<()> {
    match command {}
}
