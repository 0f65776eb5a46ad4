//! `drainVms`: the cordon a rollout holds on a node while its VMs stop, the drain's
//! deadline, and lifting the cordons once the steps ended (the module doc of [`super`]).

use super::*;

/// The `by` of the cordon a `drainVms` rollout sets.
pub(super) fn cordon_by(name: &str) -> String {
    format!("clusterupdate/{name}")
}

/// The nodes this rollout holds cordoned (`drainVms`): node -> the cordon.
pub(super) fn held_cordons(
    state: &AppState,
    name: &str,
    spec: &ClusterUpdateSpec,
) -> BTreeMap<String, CordonEntry> {
    // Only a `drainVms` rollout cordons (its spec cannot change once it started), and
    // reading the cordons decodes every node: not at every tick of every other rollout.
    if !spec.drain_vms {
        return BTreeMap::new();
    }
    let by = cordon_by(name);
    state
        .store
        .nodes()
        .into_iter()
        .filter_map(|(node, record, _)| {
            let entry = record.cordons.get(CordonHolder::Rollout)?;
            (entry.by == by).then(|| (node, entry.clone()))
        })
        .collect()
}

/// The nodes draining for this rollout: cordoned by it with no record yet of the step the
/// phase schedules (update while `rolling_out`; rollback of an updated node while
/// `rolling_back`). In any other phase nothing drains, so the cordon is lifted.
pub(super) fn draining(
    phase: Option<ClusterUpdatePhase>,
    held: &BTreeMap<String, CordonEntry>,
    update: &BTreeMap<String, NodeProgress>,
    back: &BTreeMap<String, NodeProgress>,
) -> Vec<String> {
    let untouched = |p: &BTreeMap<String, NodeProgress>, n: &str| {
        p.get(n)
            .is_none_or(|p| p.assigned.is_none() && p.final_record().is_none())
    };
    held.keys()
        .filter(|n| match phase {
            Some(ClusterUpdatePhase::RollingOut) => untouched(update, n),
            Some(ClusterUpdatePhase::RollingBack) => {
                final_phase(update.get(*n)) == Some(StepPhase::Succeeded) && untouched(back, n)
            }
            _ => false,
        })
        .cloned()
        .collect()
}

pub(super) fn draining_reason(up: &[String]) -> String {
    if up.is_empty() {
        "draining: VMs down, step about to be assigned".into()
    } else {
        format!("draining: waiting for VM(s) {} to stop", up.join(", "))
    }
}

/// Where a node stands in its drain (`drainVms`), before its step is assigned.
#[derive(Debug, PartialEq)]
pub(super) enum Drain {
    /// Every VM on it is down: assign the step.
    Drained,
    /// Cordoned, VMs (named) still up.
    Waiting,
    /// VMs (named) still up `activation.healthTimeoutSeconds` after the cordon.
    TimedOut(Vec<String>),
}

/// Cordons `node` for this rollout unless it already is (the cordon is what tells its
/// VMs `Stopped`), and says whether its VMs are down. The drain's clock starts at the
/// cordon's `at`, so a restarted controller keeps counting from the same instant.
pub(super) fn drain(
    state: &AppState,
    name: &str,
    spec: &ClusterUpdateSpec,
    held: Option<&CordonEntry>,
    node: &str,
) -> Result<Drain, StoreError> {
    let since = match held {
        Some(entry) => entry.at.clone(),
        None => {
            let entry = CordonEntry {
                by: cordon_by(name),
                reason: format!("updating in rollout {name} (drainVms)"),
                at: records::now_rfc3339(),
            };
            state
                .store
                .set_cordon(node, CordonHolder::Rollout, Some(&entry))?;
            tracing::info!(rollout = %name, node = %node, "drainVms: cordoned, VMs told to stop");
            entry.at
        }
    };
    let Err(up) = crate::vm::drained(&state.store, node) else {
        return Ok(Drain::Drained);
    };
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let elapsed = time::OffsetDateTime::parse(&since, rfc3339)
        .map(|t| (time::OffsetDateTime::now_utc() - t).whole_seconds())
        // A cordon time that does not parse (written by hand): count from now, never fail.
        .unwrap_or(0);
    if elapsed >= spec.activation.health_timeout_seconds as i64 {
        return Ok(Drain::TimedOut(up));
    }
    Ok(Drain::Waiting)
}

/// Ends step `seq` on `node` as failed without assigning it (nothing to run, or its VMs
/// did not drain): a final `failed` record, which counts against `maxFailures`.
pub(super) fn fail_unassigned(
    state: &AppState,
    name: &str,
    owner: &RolloutOwner,
    node: &str,
    seq: u64,
    code: StepCode,
    reason: String,
) -> Result<(), StoreError> {
    let report = StepReport {
        operation_id: String::new(),
        phase: StepPhase::Failed,
        updated_at: records::now_rfc3339(),
        store_path: None,
        reboot_required: None,
        reboot_reasons: Vec::new(),
        goal: None,
        previous: None,
        generation: None,
        reason: Some(reason),
        code: Some(code),
        failed_units: Vec::new(),
        reboots: 0,
    };
    tracing::warn!(rollout = %name, node = %node, seq, "step failed before assignment");
    records::write_once(
        &state.store,
        name,
        &StepRecord {
            node: node.to_string(),
            epoch: owner.epoch,
            seq,
            what: "failed".into(),
            at: records::now_rfc3339(),
            by: state.config.controller_id.clone(),
            report: Some(report),
        },
    )?;
    Ok(())
}

/// Lifts the `drainVms` cordons this rollout set on nodes that have no step of it in
/// flight and are not draining for one; a cordon someone else holds is left alone.
pub(super) fn lift_cordons(
    state: &AppState,
    name: &str,
    spec: &ClusterUpdateSpec,
    phase: Option<ClusterUpdatePhase>,
) -> Result<(), StoreError> {
    let recs = records::records(&state.store, name);
    let (update, back) = (
        records::progress(&recs, UPDATE_SEQ),
        records::progress(&recs, ROLLBACK_SEQ),
    );
    let held = held_cordons(state, name, spec);
    let drains = draining(phase, &held, &update, &back);
    for node in held.keys() {
        let running = [&update, &back]
            .iter()
            .any(|p| p.get(node).is_some_and(NodeProgress::in_flight));
        if !running && !drains.contains(node) {
            let node = node.clone();
            state.store.set_cordon(&node, CordonHolder::Rollout, None)?;
            tracing::info!(rollout = %name, node = %node, "drainVms cordon lifted");
        }
    }
    Ok(())
}
