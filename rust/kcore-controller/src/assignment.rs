//! What a node is told: the answer of its long-poll `GET /v1/nodes/{id}/assignment`
//! (route in `api/clusterupdates.rs`), which carries both its rollout step
//! ([`crate::rollout::assigned_step`]) and every VM placed on it ([`crate::vm::node_vms`]).
//! One long-poll for both, so a node learns everything without being dialled, and a node
//! that was down gets its whole state in its first answer after it comes back.
//!
//! The token changes whenever either part changes: the step's `rollout:epoch:seq`, then
//! `vms:` and the first 16 hex digits of the SHA-256 of the VM list as sent (so a new
//! generation, a desired-state change or a VM coming or going all change it). It is empty
//! when there is nothing to do.

use kcore_api::rollout::Assignment;
use sha2::{Digest, Sha256};

use crate::api::AppState;

/// The assignment of node `node` now.
pub fn for_node(state: &AppState, node: &str) -> Assignment {
    let (step_token, step) = match crate::rollout::assigned_step(state, node) {
        Some((token, step)) => (token, Some(step)),
        None => (String::new(), None),
    };
    let vms = crate::vm::node_vms(state, node);
    let token = match (step_token.is_empty(), vms.is_empty()) {
        (_, true) => step_token,
        (empty_step, false) => {
            // Serialising our own types cannot fail; an empty digest would only make the
            // token change less often, never wrongly.
            let json = serde_json::to_vec(&vms).unwrap_or_default();
            let digest = hex::encode(&Sha256::digest(&json)[..8]);
            if empty_step {
                format!("vms:{digest}")
            } else {
                format!("{step_token}+vms:{digest}")
            }
        }
    };
    Assignment { token, step, vms }
}
