//! `kctl node approve|reject ID`: admit a pending node, or refuse a node for good (a
//! rejected id can never register again).
//!
//! A change that did not take effect is an error (exit 1), never "node X is Ready": the
//! controller answers 409 `WRITE_SUPERSEDED` when a newer value holds the approval, and
//! an answer whose approval is not the requested one (an older controller) is refused
//! here as `NOT_APPLIED`.

use clap::Subcommand;
use kcore_api::cluster::{Approval, Node};

use crate::controller_client::connect;
use crate::escape::escape;
use crate::global::GlobalArgs;
use crate::output::print_object;
use crate::paths;
use crate::target::ControllerTarget;

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

pub async fn run(
    command: ApprovalCommand,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    let (id, verb, wanted) = match &command {
        ApprovalCommand::Approve { id } => (id.clone(), "approve", Approval::Approved),
        ApprovalCommand::Reject { id } => (id.clone(), "reject", Approval::Rejected),
    };
    // Checked before connecting: `ghost/../node-3` must not approve node-3.
    paths::node_id("<ID>", &id)?;
    let (_, client) = connect(global, controllers)?;
    let node: Node = client
        .post_json(
            &paths::path(&["v1", "nodes", &id, verb])?,
            &serde_json::json!({}),
        )
        .await?;
    check_applied(&node, wanted)?;
    print_object(&node, global.output, || {
        format!("node {} is {}\n", escape(&node.node_id), node.status)
    })
}

/// Refuses an answer in which the node does not have the approval asked for.
fn check_applied(node: &Node, wanted: Approval) -> anyhow::Result<()> {
    if node.approval == wanted {
        return Ok(());
    }
    Err(crate::exit::Refused::new(
        kcore_api::ErrorCode::NotApplied,
        format!(
            "the controller answered, but node {} is still {} (status {}), not {}: the change did not take effect; check `kctl get node {}` and the controllers' clocks",
            escape(&node.node_id),
            node.approval.as_str(),
            node.status,
            wanted.as_str(),
            escape(&node.node_id)
        ),
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcore_api::cluster::{NodeReport, NodeStatus};

    #[test]
    fn an_answer_that_did_not_apply_the_change_is_refused() {
        let node = Node {
            node_id: "node-evil".into(),
            status: NodeStatus::Ready,
            approval: Approval::Approved,
            report: NodeReport::default(),
            registered_at: None,
            last_heartbeat: None,
            certificate: None,
        };
        let err = check_applied(&node, Approval::Rejected).unwrap_err();
        assert_eq!(crate::exit::code_for(&err), crate::exit::REFUSED);
        let text = err.to_string();
        assert!(
            text.contains("NOT_APPLIED") && text.contains("still Approved"),
            "{text}"
        );
        check_applied(&node, Approval::Approved).unwrap();
    }
}
