//! The rollout engine (issue 12): moves each `ClusterUpdate` through
//! `pending -> awaiting_approval -> rolling_out -> succeeded | halted | failed | cancelled`,
//! and on an operator's rollback through `rolling_back -> rolled_back | failed`, and decides
//! which node starts its step when. docs/rollouts.md has the state machine.
//!
//! - Ownership and progress follow docs/controller.md ("Kinds written by one owner"): one
//!   controller owns a rollout under a lease (`status.owner`, epoch +1 at a takeover), and
//!   every node's progress is append-only step records ([`records`]).
//! - Nodes are not dialled: they long-poll `GET /v1/nodes/{id}/assignment`
//!   ([`crate::assignment`], which takes the steps from [`assigned_steps`])
//!   and report back; the report lands in a step record, which wakes this loop through
//!   `Store::watch`.
//! - Everything the engine decides is recomputed from the store at every tick, so a
//!   restarted controller carries on where it was: a node with an `assigned` record is
//!   never assigned that step again. A node has at most two steps in a rollout: its update
//!   ([`records::UPDATE_SEQ`]) and its rollback ([`records::ROLLBACK_SEQ`]), which activates
//!   the generation the update step reported as `previous`.
//! - `drainVms`: the node is cordoned first (`cordon.rollout`, `by: clusterupdate/<name>`),
//!   which tells its VMs `desired: Stopped` on its assignment ([`crate::vm::node_vms`]);
//!   its step is assigned only once [`crate::vm::drained`] says they are down. While it
//!   drains the node counts against `maxUnavailable` (it is cordoned, so it is taken out of
//!   service already) and its row says `draining: ...`; a drain not done within
//!   `activation.healthTimeoutSeconds` of the cordon fails the node's step without
//!   assigning it ([`Drain::TimedOut`]). The cordon is lifted once the step ended, which
//!   tells the VMs `Running` again; the rollout does not wait for them to come back.

mod drain;
mod plan;
pub mod records;
mod rows;

use drain::*;
pub use plan::{candidates, plan, select, unavailable_cap, waves};
use rows::*;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kcore_api::cluster::{Approval, CordonEntry, CordonHolder, NodeRole};
use kcore_api::clusterupdate::{
    ApprovalPolicy, ClusterUpdatePhase, ClusterUpdatePlan, ClusterUpdateSpec, ClusterUpdateStatus,
    NodeUpdatePhase, NodeUpdateRow, PhaseChange, PlanNode, RolloutOwner, StrategyType,
};
use kcore_api::resource::{Kind, LabelSelector};
use kcore_api::rollout::{
    ActivationMode, AssignedStep, CAPABILITY_PREPARE_AHEAD, PrepareRequest, StepCode, StepPhase,
    StepReport,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, now_unix};
use crate::store::StoreError;
use records::{ASSIGNED, NodeProgress, PREPARE_AHEAD, ROLLBACK_SEQ, StepRecord, UPDATE_SEQ};

/// How long an owner's lease lasts; it is renewed every third of it.
pub const LEASE: Duration = Duration::from_secs(30);

/// The engine's loop: a tick at every store change (a report, an approval, an apply) and
/// at least every third of the lease, so the lease is renewed in time.
pub async fn run(state: Arc<AppState>, stop: CancellationToken) {
    let mut changes = state.store.watch();
    loop {
        if let Err(err) = tick(&state) {
            tracing::warn!("rollout engine: {err}");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            _ = changes.changed() => {}
            () = tokio::time::sleep(LEASE / 3) => {}
        }
    }
}

/// One pass over every rollout.
pub fn tick(state: &AppState) -> Result<(), StoreError> {
    let all = state
        .store
        .list(Kind::ClusterUpdate, &LabelSelector::default());
    let names: Vec<String> = all
        .iter()
        .filter_map(|o| o.pointer("/metadata/name")?.as_str().map(str::to_string))
        .collect();
    for name in &names {
        step_rollout(state, name)?;
    }
    Ok(())
}

/// The phase a stored `ClusterUpdate`'s status says (none before its first tick).
fn stored_phase(object: &serde_json::Value) -> Option<ClusterUpdatePhase> {
    serde_json::from_value(object.pointer("/status/phase")?.clone()).ok()
}

/// Whether a stored `ClusterUpdate` is `rolling_out`.
fn is_rolling_out(object: &serde_json::Value) -> bool {
    stored_phase(object) == Some(ClusterUpdatePhase::RollingOut)
}

/// Whether every step of a stored `ClusterUpdate` has ended: `succeeded` (every target's
/// update) or `rolled_back` (every rollback, after every update). A halted, cancelled or
/// failed one may still have steps in flight. Their records need no reading to know what
/// runs now.
fn all_steps_ended(object: &serde_json::Value) -> bool {
    matches!(
        stored_phase(object),
        Some(ClusterUpdatePhase::Succeeded | ClusterUpdatePhase::RolledBack)
    )
}

/// Nodes in flight in any rollout (a step assigned, draining under its cordon, or
/// preparing ahead in a rollout still `rolling_out`): node -> rollout.
fn busy_nodes(state: &AppState) -> BTreeMap<String, String> {
    let mut busy = BTreeMap::new();
    for (node, record, _) in state.store.nodes() {
        if let Some(name) = record
            .cordons
            .get(CordonHolder::Rollout)
            .and_then(|c| c.by.strip_prefix("clusterupdate/"))
        {
            busy.insert(node, name.to_string());
        }
    }
    for object in state
        .store
        .list(Kind::ClusterUpdate, &LabelSelector::default())
    {
        let Some(name) = object.pointer("/metadata/name").and_then(|n| n.as_str()) else {
            continue;
        };
        if all_steps_ended(&object) {
            continue;
        }
        let recs = records::records(&state.store, name);
        // A node preparing ahead is busy too, so no other rollout's prepare meets this
        // one's on the node's system lane; no longer once the rollout stopped offering it.
        let ahead_counts = is_rolling_out(&object);
        for seq in [UPDATE_SEQ, ROLLBACK_SEQ] {
            for (node, p) in records::progress(&recs, seq) {
                if p.in_flight() || (ahead_counts && p.preparing_ahead()) {
                    busy.insert(node, name.to_string());
                }
            }
        }
    }
    busy
}

fn spec_of(state: &AppState, name: &str) -> Option<(ClusterUpdateSpec, u64)> {
    let object = state.store.get(Kind::ClusterUpdate, name)?;
    let generation = object
        .pointer("/metadata/generation")
        .and_then(|g| g.as_u64())
        .unwrap_or(0);
    match serde_json::from_value(object.get("spec")?.clone()) {
        Ok(spec) => Some((spec, generation)),
        Err(err) => {
            tracing::warn!(rollout = %name, "stored spec does not decode: {err}");
            None
        }
    }
}

/// Takes or renews the lease. The owner (as merged after the write) or `None` when
/// another controller holds it.
fn own(
    state: &AppState,
    name: &str,
    status: &ClusterUpdateStatus,
) -> Result<Option<RolloutOwner>, StoreError> {
    let me = &state.config.controller_id;
    let now = now_unix();
    let lease = LEASE.as_secs() as i64;
    let skew = state.config.max_clock_skew_seconds as i64;
    let wanted = match &status.owner {
        Some(o) if &o.controller_id == me => {
            if o.lease_until - now > lease * 2 / 3 {
                return Ok(Some(o.clone()));
            }
            RolloutOwner {
                lease_until: now + lease,
                ..o.clone()
            }
        }
        Some(o) if now <= o.lease_until + skew => return Ok(None),
        other => RolloutOwner {
            controller_id: me.clone(),
            epoch: other.as_ref().map_or(1, |o| o.epoch + 1),
            lease_until: now + lease,
        },
    };
    records::write_status(&state.store, name, &[("owner", json!(wanted))])?;
    // Two controllers taking over at once both write; the merge keeps one, and only the
    // one that reads itself back goes on.
    Ok(records::owner(&state.store, name).filter(|o| &o.controller_id == me))
}

fn enter(
    state: &AppState,
    name: &str,
    status: &ClusterUpdateStatus,
    phase: ClusterUpdatePhase,
    generation: u64,
    extra: &[(&str, serde_json::Value)],
) -> Result<(), StoreError> {
    let mut history = status.history.clone();
    history.push(PhaseChange {
        phase,
        at: records::now_rfc3339(),
    });
    let mut keys = vec![
        ("phase", json!(phase)),
        ("history", json!(history)),
        ("observedGeneration", json!(generation)),
    ];
    keys.extend(extra.iter().cloned());
    tracing::info!(rollout = %name, ?phase, "rollout phase");
    records::write_status(&state.store, name, &keys)
}

fn step_rollout(state: &AppState, name: &str) -> Result<(), StoreError> {
    let Some((spec, generation)) = spec_of(state, name) else {
        return Ok(());
    };
    let Some(status) = records::status(&state.store, name) else {
        return Ok(());
    };
    if spec.drain_vms {
        // Also for a rollout that ended: its last steps end after it halted or was cancelled.
        lift_cordons(state, name, &spec, status.phase)?;
    }
    let rollback_wanted = status.rollback_at.is_some();
    if status
        .phase
        .is_some_and(|p| p.is_final() && !(rollback_wanted && p.can_roll_back()))
    {
        return Ok(());
    }
    let Some(owner) = own(state, name, &status)? else {
        return Ok(());
    };
    let approved = spec.approval_policy == ApprovalPolicy::Auto || status.approved_at.is_some();
    match status.phase {
        Some(p) if rollback_wanted && p.can_roll_back() => enter(
            state,
            name,
            &status,
            ClusterUpdatePhase::RollingBack,
            generation,
            &[],
        ),
        Some(ClusterUpdatePhase::RollingBack) => {
            roll_back(state, name, &spec, &status, &owner, generation)
        }
        None => enter(
            state,
            name,
            &status,
            ClusterUpdatePhase::Pending,
            generation,
            &[],
        ),
        Some(ClusterUpdatePhase::Pending | ClusterUpdatePhase::AwaitingApproval)
            if status.cancelled_at.is_some() =>
        {
            enter(
                state,
                name,
                &status,
                ClusterUpdatePhase::Cancelled,
                generation,
                &[],
            )
        }
        Some(ClusterUpdatePhase::Pending) if !approved => enter(
            state,
            name,
            &status,
            ClusterUpdatePhase::AwaitingApproval,
            generation,
            &[],
        ),
        Some(ClusterUpdatePhase::Pending | ClusterUpdatePhase::AwaitingApproval) if approved => {
            let targets = select(state, &spec);
            if targets.is_empty() {
                return enter(
                    state,
                    name,
                    &status,
                    ClusterUpdatePhase::Failed,
                    generation,
                    &[(
                        "message",
                        json!("no Ready, approved node matches spec.selector"),
                    )],
                );
            }
            // Targets and phase in one write: a restart sees both or neither.
            enter(
                state,
                name,
                &status,
                ClusterUpdatePhase::RollingOut,
                generation,
                &[("targets", json!(targets))],
            )
        }
        Some(ClusterUpdatePhase::RollingOut) => {
            roll(state, name, &spec, &status, &owner, generation)
        }
        _ => Ok(()),
    }
}

/// Starts step `seq` on `node`: under `drainVms` drains it first ([`drain`]: cordoned, so
/// no VM is placed on a node about to go down and its VMs are told to stop) and assigns
/// the step once its VMs are down. Whether the node now takes a `maxUnavailable` slot
/// (draining or assigned); a drain that timed out fails the step and frees it.
fn start_step(
    state: &AppState,
    name: &str,
    spec: &ClusterUpdateSpec,
    owner: &RolloutOwner,
    held: &BTreeMap<String, CordonEntry>,
    node: &str,
    seq: u64,
) -> Result<bool, StoreError> {
    if spec.drain_vms {
        match drain(state, name, spec, held.get(node), node)? {
            Drain::Drained => {}
            Drain::Waiting => return Ok(true),
            Drain::TimedOut(up) => {
                let reason = format!(
                    "drainVms: VM(s) {} still running {} s after the node was cordoned \
                     (spec.activation.healthTimeoutSeconds); stop them (kctl vm stop) or \
                     raise the timeout",
                    up.join(", "),
                    spec.activation.health_timeout_seconds
                );
                fail_unassigned(
                    state,
                    name,
                    owner,
                    node,
                    seq,
                    StepCode::DrainTimeout,
                    reason,
                )?;
                return Ok(false);
            }
        }
    }
    assign(state, name, owner, node, seq)?;
    Ok(true)
}

/// Writes the `assigned` record of step `seq` that the node's long poll sees.
fn assign(
    state: &AppState,
    name: &str,
    owner: &RolloutOwner,
    node: &str,
    seq: u64,
) -> Result<(), StoreError> {
    write_owner_record(state, name, owner, node, seq, ASSIGNED)?;
    tracing::info!(rollout = %name, node = %node, epoch = owner.epoch, seq, "step assigned");
    Ok(())
}

/// Writes the owner's record `what` ([`ASSIGNED`] or [`PREPARE_AHEAD`]) of step `seq`.
fn write_owner_record(
    state: &AppState,
    name: &str,
    owner: &RolloutOwner,
    node: &str,
    seq: u64,
    what: &str,
) -> Result<bool, StoreError> {
    records::write_once(
        &state.store,
        name,
        &StepRecord {
            node: node.to_string(),
            epoch: owner.epoch,
            seq,
            what: what.into(),
            at: records::now_rfc3339(),
            by: state.config.controller_id.clone(),
            report: None,
        },
    )
}

/// Preparing ahead (docs/rollouts.md): once every node of wave `current` has started its
/// activation (or ended), the nodes of the wave after it are told to prepare their update
/// step (a [`PREPARE_AHEAD`] record), so that when their turn comes the activation starts
/// at once. Waiting for the current wave's activations keeps the next wave's builds from
/// competing with this wave's own; preparing takes nothing down, so it takes no
/// `maxUnavailable` slot. Not while canaries run: nothing else starts before they are
/// healthy.
fn prepare_next_wave(
    state: &AppState,
    name: &str,
    spec: &ClusterUpdateSpec,
    owner: &RolloutOwner,
    waves: &[Vec<String>],
    current: usize,
    progress: &BTreeMap<String, NodeProgress>,
) -> Result<(), StoreError> {
    let canaries = spec.strategy.strategy_type == StrategyType::Canary
        && spec.strategy.canary_count > 0
        && current == 0;
    let Some(next) = waves.get(current + 1) else {
        return Ok(());
    };
    let activating = |n: &String| {
        progress
            .get(n)
            .is_some_and(|p| p.reached(StepPhase::Activating))
    };
    if canaries || !waves[current].iter().all(activating) {
        return Ok(());
    }
    let todo: Vec<&String> = next
        .iter()
        .filter(|n| {
            !progress
                .get(*n)
                .is_some_and(|p| p.begun() || p.prepare_ahead.is_some())
        })
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let busy = busy_nodes(state);
    for node in todo {
        if busy.get(node).is_some_and(|other| other != name) {
            // Busy in another rollout: it prepares when its turn comes.
            continue;
        }
        let understands = state.store.node(node).is_some_and(|r| {
            r.report
                .capabilities
                .iter()
                .any(|c| c == CAPABILITY_PREPARE_AHEAD)
        });
        if !understands {
            // An older agent would run a `prepareOnly` step whole, activating before its
            // turn: it prepares in its own step.
            continue;
        }
        if records::owner(&state.store, name).as_ref() != Some(owner) {
            return Ok(());
        }
        if write_owner_record(state, name, owner, node, UPDATE_SEQ, PREPARE_AHEAD)? {
            tracing::info!(rollout = %name, node = %node, epoch = owner.epoch, "preparing ahead");
        }
    }
    Ok(())
}

/// The slots taken after a node that was (`already`) or was not draining now takes one
/// (`slot`) or not.
fn slots(in_flight: usize, already: bool, slot: bool) -> usize {
    match (already, slot) {
        (false, true) => in_flight + 1,
        (true, false) => in_flight.saturating_sub(1),
        _ => in_flight,
    }
}

fn roll(
    state: &AppState,
    name: &str,
    spec: &ClusterUpdateSpec,
    status: &ClusterUpdateStatus,
    owner: &RolloutOwner,
    generation: u64,
) -> Result<(), StoreError> {
    let recs = records::records(&state.store, name);
    let progress = records::progress(&recs, UPDATE_SEQ);
    let back = records::progress(&recs, ROLLBACK_SEQ);
    let status = &refresh_rows(state, name, spec, status, &progress, &back)?;
    if status.cancelled_at.is_some() {
        // Nodes mid-step finish or revert on their own; nothing new starts.
        return enter(
            state,
            name,
            status,
            ClusterUpdatePhase::Cancelled,
            generation,
            &[],
        );
    }
    let failures: Vec<&NodeUpdateRow> = status
        .nodes
        .iter()
        .filter(|r| failed(progress.get(&r.node_id)))
        .collect();
    let waves = waves(spec, &status.targets);
    let canary_failed = spec.strategy.strategy_type == StrategyType::Canary
        && waves
            .first()
            .is_some_and(|w| w.iter().any(|n| failed(progress.get(n))));
    if failures.len() > spec.max_failures as usize || canary_failed {
        let why: Vec<String> = failures
            .iter()
            .map(|r| format!("{}: {}", r.node_id, r.reason.as_deref().unwrap_or("failed")))
            .collect();
        let message = format!(
            "{} node(s) failed, over maxFailures {}{}: {}",
            failures.len(),
            spec.max_failures,
            if canary_failed {
                " or a canary failed"
            } else {
                ""
            },
            why.join("; ")
        );
        return enter(
            state,
            name,
            status,
            ClusterUpdatePhase::Halted,
            generation,
            &[("message", json!(message))],
        );
    }
    let ended = |n: &String| progress.get(n).is_some_and(|p| p.final_record().is_some());
    if status.targets.iter().all(ended) {
        return enter(
            state,
            name,
            status,
            ClusterUpdatePhase::Succeeded,
            generation,
            &[],
        );
    }
    let Some(current) = waves.iter().position(|w| !w.iter().all(ended)) else {
        return Ok(());
    };
    start_wave(
        state,
        name,
        spec,
        owner,
        status.phase,
        &waves[current],
        &progress,
        &back,
        UPDATE_SEQ,
    )?;
    prepare_next_wave(state, name, spec, owner, &waves, current, &progress)
}

/// `rolling_back`: the nodes whose update step succeeded return to the generation it
/// recorded as `previous`, in the reverse of the update order, in the strategy's waves and
/// under its `maxUnavailable`. Update steps still in flight end first (a node that ends
/// updated is rolled back too). More rollback failures than `maxFailures` end it `failed`.
fn roll_back(
    state: &AppState,
    name: &str,
    spec: &ClusterUpdateSpec,
    status: &ClusterUpdateStatus,
    owner: &RolloutOwner,
    generation: u64,
) -> Result<(), StoreError> {
    let recs = records::records(&state.store, name);
    let update = records::progress(&recs, UPDATE_SEQ);
    let back = records::progress(&recs, ROLLBACK_SEQ);
    let status = &refresh_rows(state, name, spec, status, &update, &back)?;
    let updated: Vec<String> = status
        .targets
        .iter()
        .rev()
        .filter(|n| final_phase(update.get(*n)) == Some(StepPhase::Succeeded))
        .cloned()
        .collect();
    let failures: Vec<&NodeUpdateRow> = status
        .nodes
        .iter()
        .filter(|r| failed(back.get(&r.node_id)))
        .collect();
    if failures.len() > spec.max_failures as usize {
        let why: Vec<String> = failures
            .iter()
            .map(|r| format!("{}: {}", r.node_id, r.reason.as_deref().unwrap_or("failed")))
            .collect();
        let message = format!(
            "rollback stopped: {} node(s) did not roll back, over maxFailures {}: {}",
            failures.len(),
            spec.max_failures,
            why.join("; ")
        );
        return enter(
            state,
            name,
            status,
            ClusterUpdatePhase::Failed,
            generation,
            &[("message", json!(message))],
        );
    }
    if update.values().any(NodeProgress::in_flight) {
        return Ok(());
    }
    let ended = |n: &String| back.get(n).is_some_and(|p| p.final_record().is_some());
    if updated.iter().all(ended) {
        return enter(
            state,
            name,
            status,
            ClusterUpdatePhase::RolledBack,
            generation,
            &[],
        );
    }
    let waves = waves(spec, &updated);
    let Some(wave) = waves.iter().find(|w| !w.iter().all(ended)) else {
        return Ok(());
    };
    start_wave(
        state,
        name,
        spec,
        owner,
        status.phase,
        wave,
        &update,
        &back,
        ROLLBACK_SEQ,
    )
}

/// Starts the steps `wave` may start now, for step `seq` of the rollout (its update or its
/// rollback): each node not yet assigned in that step, not in another rollout's step,
/// within `maxUnavailable` (a node draining its VMs holds a slot already), while this
/// controller is still the owner. A node to roll back with no recorded previous
/// generation fails its rollback without a step.
#[allow(clippy::too_many_arguments)]
fn start_wave(
    state: &AppState,
    name: &str,
    spec: &ClusterUpdateSpec,
    owner: &RolloutOwner,
    phase: Option<ClusterUpdatePhase>,
    wave: &[String],
    update: &BTreeMap<String, NodeProgress>,
    back: &BTreeMap<String, NodeProgress>,
    seq: u64,
) -> Result<(), StoreError> {
    let steps = if seq == ROLLBACK_SEQ { back } else { update };
    let todo: Vec<&String> = wave
        .iter()
        .filter(|n| !steps.get(*n).is_some_and(NodeProgress::begun))
        .collect();
    if todo.is_empty() {
        // The usual tick (a report of a node in flight): nothing to start, so nothing to
        // read about the other rollouts and the nodes.
        return Ok(());
    }
    let held = held_cordons(state, name, spec);
    let drains = draining(phase, &held, update, back);
    // A draining node is cordoned, so out of service already: it takes a slot.
    let mut in_flight = steps.values().filter(|p| p.in_flight()).count() + drains.len();
    let cap = unavailable_cap(spec);
    let busy = busy_nodes(state);
    for node in todo {
        if busy.get(node).is_some_and(|other| other != name) {
            // One rollout per node: it waits until the other rollout's step ended.
            continue;
        }
        let already = drains.contains(node);
        if !already && in_flight >= cap {
            continue;
        }
        // The owner must still see itself as owner right before each step.
        if records::owner(&state.store, name).as_ref() != Some(owner) {
            return Ok(());
        }
        if seq == ROLLBACK_SEQ && previous_path(update.get(node)).is_none() {
            // Nothing recorded to go back to: this node's rollback fails without a step.
            let reason = "its update step recorded no previous generation".to_string();
            let code = StepCode::NoPreviousGeneration;
            fail_unassigned(state, name, owner, node, ROLLBACK_SEQ, code, reason)?;
            in_flight = slots(in_flight, already, false);
            continue;
        }
        let slot = start_step(state, name, spec, owner, &held, node, seq)?;
        in_flight = slots(in_flight, already, slot);
    }
    Ok(())
}

/// The steps every node should run now, node -> (token part, step): for each node the
/// first rollout with an assignment for it that has not ended, stamped with that rollout
/// owner's current epoch, and its token part (`rollout:epoch:seq`). A node preparing
/// ahead in a rollout still `rolling_out` gets its update step with `prepareOnly`, token
/// `rollout:epoch:seq:prepare` (so the token changes when the step is assigned). Computed for all nodes
/// at once, because every node's long poll wakes at every store change and they share one
/// answer per store version ([`crate::assignment::Cache`]). What a node is told as a whole
/// is [`crate::assignment`].
pub fn assigned_steps(state: &AppState) -> BTreeMap<String, (String, AssignedStep)> {
    let mut out: BTreeMap<String, (String, AssignedStep)> = BTreeMap::new();
    for object in state
        .store
        .list(Kind::ClusterUpdate, &LabelSelector::default())
    {
        let Some(name) = object.pointer("/metadata/name").and_then(|n| n.as_str()) else {
            continue;
        };
        if all_steps_ended(&object) {
            continue;
        }
        let recs = records::records(&state.store, name);
        let update = records::progress(&recs, UPDATE_SEQ);
        let back = records::progress(&recs, ROLLBACK_SEQ);
        let running = |p: &BTreeMap<String, NodeProgress>, node: &str| {
            p.get(node).is_some_and(NodeProgress::in_flight)
        };
        // A node already told a step by an earlier rollout keeps it (one rollout per node).
        let nodes: std::collections::BTreeSet<&String> = update.keys().chain(back.keys()).collect();
        let ahead = is_rolling_out(&object);
        let steps: Vec<(&String, u64, Option<String>, bool)> = nodes
            .into_iter()
            .filter(|node| !out.contains_key(*node))
            .filter_map(|node| {
                if running(&back, node) {
                    Some((node, ROLLBACK_SEQ, previous_path(update.get(node)), false))
                } else if running(&update, node) {
                    Some((node, UPDATE_SEQ, None, false))
                } else if ahead && update.get(node).is_some_and(NodeProgress::preparing_ahead) {
                    Some((node, UPDATE_SEQ, None, true))
                } else {
                    None
                }
            })
            .collect();
        if steps.is_empty() {
            continue;
        }
        let (Some((spec, _)), Some(owner)) =
            (spec_of(state, name), records::owner(&state.store, name))
        else {
            continue;
        };
        for (node, seq, store_path, prepare_only) in steps {
            let step = AssignedStep {
                rollout: name.to_string(),
                epoch: owner.epoch,
                seq,
                prepare: PrepareRequest {
                    flake_ref: spec.target.flake_ref.clone(),
                    flake_rev: spec.target.flake_rev.clone(),
                    host: spec.target.host.clone(),
                },
                mode: mode(spec.activation.mode),
                health_timeout_seconds: spec.activation.health_timeout_seconds,
                store_path,
                prepare_only,
            };
            let only = if prepare_only { ":prepare" } else { "" };
            out.insert(
                node.clone(),
                (format!("{name}:{}:{seq}{only}", owner.epoch), step),
            );
        }
    }
    out
}

fn mode(m: kcore_api::clusterupdate::ActivationMode) -> ActivationMode {
    use kcore_api::clusterupdate::ActivationMode as M;
    match m {
        M::Auto => ActivationMode::Auto,
        M::Switch => ActivationMode::Switch,
        M::Boot => ActivationMode::Boot,
        M::Test => ActivationMode::Test,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(strategy: serde_json::Value) -> ClusterUpdateSpec {
        serde_json::from_value(json!({
            "target": {"flakeRef": "github:o/r", "flakeRev": "0123456789abcdef0123456789abcdef01234567"},
            "selector": {"allNodes": true},
            "strategy": strategy,
        }))
        .unwrap()
    }

    fn nodes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn a_row_carries_the_final_reports_code_or_step_failed_when_it_has_none() {
        let progress = |phase: &str, code: Option<&str>| {
            let mut report = json!({"operationId": "1", "phase": phase, "updatedAt": "t"});
            if let Some(code) = code {
                report["code"] = json!(code);
            }
            let rec = |what: &str, report| StepRecord {
                node: "n1".into(),
                epoch: 1,
                seq: UPDATE_SEQ,
                what: what.into(),
                at: "2026-01-01T00:00:00Z".into(),
                by: "ctl1".into(),
                report,
            };
            NodeProgress {
                assigned: Some(rec(ASSIGNED, None)),
                prepare_ahead: None,
                reports: vec![rec(phase, serde_json::from_value(report).ok())],
            }
        };
        let code = |p: NodeProgress| row("n1", Some(&p), None).code;
        assert_eq!(
            code(progress("reverted", Some("HEALTH_TIMEOUT"))),
            Some(StepCode::HealthTimeout)
        );
        // An older agent's report without a code.
        assert_eq!(code(progress("failed", None)), Some(StepCode::StepFailed));
        assert_eq!(code(progress("succeeded", None)), None);
    }

    #[test]
    fn a_node_preparing_ahead_shows_its_prepare_and_no_start() {
        let rec = |what: &str| StepRecord {
            node: "n3".into(),
            epoch: 1,
            seq: UPDATE_SEQ,
            what: what.into(),
            at: "2026-01-01T00:00:00Z".into(),
            by: "ctl1".into(),
            report: None,
        };
        let p = NodeProgress {
            assigned: None,
            prepare_ahead: Some(rec(PREPARE_AHEAD)),
            reports: vec![rec("preparing"), rec("prepared")],
        };
        assert!(
            p.preparing_ahead() && !p.in_flight(),
            "no maxUnavailable slot"
        );
        let r = row("n3", Some(&p), None);
        assert_eq!((r.phase, r.started_at), (NodeUpdatePhase::Prepared, None));
        // Once assigned it is in flight, and no longer preparing ahead.
        let assigned = NodeProgress {
            assigned: Some(rec(ASSIGNED)),
            ..p
        };
        assert!(assigned.in_flight() && !assigned.preparing_ahead());
    }

    #[test]
    fn waves_follow_the_strategy() {
        let one = spec(json!({"strategyType": "one-at-a-time"}));
        assert_eq!(waves(&one, &nodes(3)), [["n1"], ["n2"], ["n3"]]);
        assert_eq!(unavailable_cap(&one), 1);
        let batch = spec(json!({"strategyType": "batch", "batchSize": 2, "maxUnavailable": 3}));
        assert_eq!(
            waves(&batch, &nodes(5)),
            [vec!["n1", "n2"], vec!["n3", "n4"], vec!["n5"]]
        );
        assert_eq!(unavailable_cap(&batch), 3);
        // Canaries are a wave of their own, then batches of the rest.
        let canary = spec(json!({"strategyType": "canary", "canaryCount": 2, "batchSize": 2}));
        assert_eq!(
            waves(&canary, &nodes(5)),
            [vec!["n1", "n2"], vec!["n3", "n4"], vec!["n5"]]
        );
        let canary = spec(json!({"strategyType": "canary", "canaryCount": 1, "batchSize": 3}));
        assert_eq!(
            waves(&canary, &nodes(5)),
            [vec!["n1"], vec!["n2", "n3", "n4"], vec!["n5"]]
        );
        // More canaries than nodes: every node is a canary.
        let canary = spec(json!({"strategyType": "canary", "canaryCount": 9}));
        assert_eq!(waves(&canary, &nodes(2)), [vec!["n1", "n2"]]);
    }
}
