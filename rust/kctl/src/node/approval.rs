//! `kctl node approve|reject ID`: admit a pending node, or refuse a node for good (a
//! rejected id can never register again).

use clap::Subcommand;
use kcore_api::cluster::Node;

use crate::cli::GlobalArgs;
use crate::controller_client::connect;
use crate::escape::escape;
use crate::output::print_object;
use crate::paths;

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
    // Checked before connecting: `ghost/../node-3` must not approve node-3.
    paths::node_id("<ID>", &id)?;
    let (_, client) = connect(global)?;
    let node: Node = client
        .post_json(
            &paths::path(&["v1", "nodes", &id, verb])?,
            &serde_json::json!({}),
        )
        .await?;
    print_object(&node, global.output, || {
        format!("node {} is {}\n", escape(&node.node_id), node.status)
    })
}
