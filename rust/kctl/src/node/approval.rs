//! `kctl node approve|reject ID`: admit a pending node, or refuse a node for good (a
//! rejected id can never register again).

use clap::Subcommand;
use kcore_api::cluster::Node;

use crate::cli::GlobalArgs;
use crate::controller_client::{connect, map_err};

#[derive(Debug, Subcommand)]
pub enum ApprovalCommand {
    /// Approve a node waiting as Pending (controllers with requireManualApproval).
    Approve {
        /// The node's id.
        id: String,
    },
    /// Reject a node: it becomes Rejected and cannot register again under this id.
    Reject {
        /// The node's id.
        id: String,
    },
}

pub async fn run(command: ApprovalCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let (id, verb) = match &command {
        ApprovalCommand::Approve { id } => (id.clone(), "approve"),
        ApprovalCommand::Reject { id } => (id.clone(), "reject"),
    };
    let (_, client) = connect(global)?;
    let node: Node = client
        .post_json(&format!("/v1/nodes/{id}/{verb}"), &serde_json::json!({}))
        .await
        .map_err(map_err)?;
    match global.output {
        crate::output::OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&node)?),
        crate::output::OutputFormat::Yaml => print!("{}", serde_yaml_ng::to_string(&node)?),
        _ => println!("node {} is {}", node.node_id, node.status),
    }
    Ok(())
}
