//! `kctl node approve|reject ID`: admit a pending node, or refuse a node for good (a
//! rejected id can never register again). `kctl node cordon|uncordon ID`: keep a node
//! from taking new VMs, or let it take them again (the node's state on the controller,
//! like its approval).
//!
//! A change that did not take effect is an error (exit 1), never "node X is Ready": the
//! controller answers 409 `WRITE_SUPERSEDED` when a newer value holds the approval, and
//! an answer whose approval is not the requested one (an older controller) is refused
//! here as `NOT_APPLIED`.

use clap::Subcommand;
use kcore_api::cluster::{Approval, CordonRequest, Node};

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
    /// Cordon a node: no new VMs are placed on it; its running VMs stay.
    Cordon {
        /// The node's id.
        id: String,
        /// Why (shown by `get nodes -o wide` and `describe node`).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift the operator's cordon (a rollout's own cordon stays until its step ends).
    Uncordon {
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
        ApprovalCommand::Cordon { id, reason } => {
            let body = CordonRequest {
                reason: reason.clone(),
            };
            return set_cordon(global, controllers, id, "cordon", &body, true).await;
        }
        ApprovalCommand::Uncordon { id } => {
            let body = CordonRequest::default();
            return set_cordon(global, controllers, id, "uncordon", &body, false).await;
        }
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

async fn set_cordon(
    global: &GlobalArgs,
    controllers: &ControllerTarget,
    id: &str,
    verb: &str,
    body: &CordonRequest,
    cordoned: bool,
) -> anyhow::Result<()> {
    paths::node_id("<ID>", id)?;
    let (_, client) = connect(global, controllers)?;
    let node: Node = client
        .post_json(&paths::path(&["v1", "nodes", id, verb])?, body)
        .await?;
    if node.cordons.operator.is_some() != cordoned {
        return Err(crate::exit::Refused::new(
            kcore_api::ErrorCode::NotApplied,
            format!(
                "the controller answered, but node {} was not {verb}ed: the change did not take effect; check `kctl get node {}` and the controllers' clocks",
                escape(&node.node_id),
                escape(&node.node_id)
            ),
        )
        .into());
    }
    print_object(&node, global.output, || {
        let state = if node.cordons.is_empty() {
            "schedulable".to_string()
        } else {
            "cordoned (no new VMs)".to_string()
        };
        format!("node {} is {state}\n", escape(&node.node_id))
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
            cordons: Default::default(),
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
