//! What a node is told: the answer of its long-poll `GET /v1/nodes/{id}/assignment`
//! (route in `api/clusterupdates.rs`), which carries both its rollout step
//! ([`crate::rollout::assigned_steps`]) and every VM placed on it ([`crate::vm::node_vms`]).
//! One long-poll for both, so a node learns everything without being dialled, and a node
//! that was down gets its whole state in its first answer after it comes back.
//!
//! The token changes whenever either part changes: the step's `rollout:epoch:seq`, then
//! `vms:` and the first 16 hex digits of the SHA-256 of the VM list as sent (so a new
//! generation, a desired-state change or a VM coming or going all change it). It is empty
//! when there is nothing to do.
//!
//! Every store change wakes every node's long poll, and each woken poll reads its answer
//! again. The step part reads every rollout's step records, so it is computed once per
//! store version for all nodes ([`Cache`]) instead of once per node per wake: with 50
//! nodes polling, one step report used to cost 50 such reads. The VM part reads only the
//! node's own VMs (an index lookup) and stays per node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kcore_api::rollout::{AssignedStep, Assignment};
use sha2::{Digest, Sha256};

use crate::api::AppState;

/// node -> (token part, step), as [`crate::rollout::assigned_steps`] computes it.
pub type Steps = BTreeMap<String, (String, AssignedStep)>;

/// The step part of every node's assignment, computed once per store version
/// ([`crate::store::Store::watch`]'s counter) and shared by every poll that asks at that
/// version.
#[derive(Debug, Default)]
pub struct Cache {
    /// The version the steps were computed at, and the steps. An async lock: the polls
    /// woken by one change wait for the one computing instead of computing too.
    steps: tokio::sync::Mutex<Option<(u64, Arc<Steps>)>>,
    computations: AtomicU64,
}

impl Cache {
    /// Every node's step as of the store's current version (or later).
    pub async fn steps(&self, state: &AppState) -> Arc<Steps> {
        // The version is read before the store is: a write landing during the computation
        // bumps the version past the one recorded here, so the next poll computes again
        // (the answer cached is never older than its version says).
        let version = *state.store.watch().borrow();
        let mut slot = self.steps.lock().await;
        if let Some((at, steps)) = slot.as_ref()
            && *at == version
        {
            return steps.clone();
        }
        let steps = Arc::new(crate::rollout::assigned_steps(state));
        self.computations.fetch_add(1, Ordering::Relaxed);
        *slot = Some((version, steps.clone()));
        steps
    }

    /// How many times the steps were computed since the controller started (for tests
    /// and the benchmark: at most one per store version however many polls woke).
    pub fn computations(&self) -> u64 {
        self.computations.load(Ordering::Relaxed)
    }
}

/// The assignment of node `node` now.
pub async fn for_node(state: &AppState, node: &str) -> Assignment {
    let (step_token, step) = match state.assignments.steps(state).await.get(node) {
        Some((token, step)) => (token.clone(), Some(step.clone())),
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
