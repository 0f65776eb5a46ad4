//! The per-node rows of a `ClusterUpdate`'s status, recomputed from the step records
//! ([`super::records`]) at every tick.

use super::*;

pub(super) fn node_phase(last: Option<StepPhase>) -> NodeUpdatePhase {
    match last {
        None => NodeUpdatePhase::Pending,
        Some(StepPhase::Preparing) => NodeUpdatePhase::Preparing,
        Some(StepPhase::Prepared) => NodeUpdatePhase::Prepared,
        Some(StepPhase::Activating) => NodeUpdatePhase::Activating,
        Some(StepPhase::Verifying | StepPhase::Rebooting) => NodeUpdatePhase::Verifying,
        Some(StepPhase::Succeeded) => NodeUpdatePhase::Succeeded,
        Some(StepPhase::Failed) => NodeUpdatePhase::Failed,
        Some(StepPhase::Reverted) => NodeUpdatePhase::Reverted,
    }
}

/// The newest report of a step that carries one (the final one once it ended).
pub(super) fn last_report(p: &NodeProgress) -> Option<StepReport> {
    p.reports.iter().rev().find_map(|r| r.report.clone())
}

/// One node's row, from its update step and (once it started) its rollback step.
pub(super) fn row(
    node: &str,
    update: Option<&NodeProgress>,
    back: Option<&NodeProgress>,
) -> NodeUpdateRow {
    let p = update.cloned().unwrap_or_default();
    let report = last_report(&p);
    let mut row = NodeUpdateRow {
        node_id: node.to_string(),
        phase: node_phase(p.last_phase()),
        started_at: p.assigned.as_ref().map(|r| r.at.clone()),
        finished_at: p.final_record().map(|r| r.at.clone()),
        previous: report.as_ref().and_then(|r| r.previous.clone()),
        generation: report.as_ref().and_then(|r| r.generation.clone()),
        code: code_of(&p, report.as_ref()),
        reason: report.and_then(|r| r.reason),
        rollback_started_at: None,
        rollback_finished_at: None,
    };
    let Some(b) = back.filter(|b| b.begun()) else {
        return row;
    };
    let report = last_report(b);
    row.rollback_started_at = b.assigned.as_ref().map(|r| r.at.clone());
    row.rollback_finished_at = b.final_record().map(|r| r.at.clone());
    row.phase = match b.last_phase() {
        Some(StepPhase::Succeeded) => NodeUpdatePhase::RolledBack,
        Some(StepPhase::Failed | StepPhase::Reverted) => NodeUpdatePhase::Failed,
        // In flight: where the rollback step is.
        other => node_phase(other),
    };
    if let Some(g) = report.as_ref().and_then(|r| r.generation.clone()) {
        row.generation = Some(g);
    }
    if b.final_record().is_some() {
        row.code = code_of(b, report.as_ref());
    }
    if let Some(reason) = report.and_then(|r| r.reason) {
        row.reason = Some(format!("rollback: {reason}"));
    }
    row
}

/// The code of a step that ended without succeeding: its final report's, or
/// `STEP_FAILED` for a report without one (an older agent's).
pub(super) fn code_of(p: &NodeProgress, report: Option<&StepReport>) -> Option<StepCode> {
    if !failed(Some(p)) {
        return None;
    }
    Some(report.and_then(|r| r.code).unwrap_or(StepCode::StepFailed))
}

pub(super) fn final_phase(p: Option<&NodeProgress>) -> Option<StepPhase> {
    p.and_then(NodeProgress::final_record)
        .and_then(StepRecord::phase)
}

pub(super) fn failed(p: Option<&NodeProgress>) -> bool {
    final_phase(p).is_some_and(|ph| ph != StepPhase::Succeeded)
}

/// The toplevel a node's update step recorded as the generation before it: what its
/// rollback step activates.
pub(super) fn previous_path(update: Option<&NodeProgress>) -> Option<String> {
    let report = update?.final_record()?.report.as_ref()?;
    Some(report.previous.as_ref()?.store_path.clone())
}

/// Recomputes `status.nodes` and writes it when it changed; the status with the new rows.
/// A node draining for its step says so in its row's reason (its phase stays `pending`,
/// or `succeeded` before its rollback).
pub(super) fn refresh_rows(
    state: &AppState,
    name: &str,
    spec: &ClusterUpdateSpec,
    status: &ClusterUpdateStatus,
    update: &BTreeMap<String, NodeProgress>,
    back: &BTreeMap<String, NodeProgress>,
) -> Result<ClusterUpdateStatus, StoreError> {
    let held = held_cordons(state, name, spec);
    let drains = draining(status.phase, &held, update, back);
    let rows: Vec<NodeUpdateRow> = status
        .targets
        .iter()
        .map(|n| {
            let mut row = row(n, update.get(n), back.get(n));
            if drains.contains(n) {
                let up = crate::vm::drained(&state.store, n)
                    .err()
                    .unwrap_or_default();
                row.reason = Some(draining_reason(&up));
            }
            row
        })
        .collect();
    if rows != status.nodes {
        records::write_status(&state.store, name, &[("nodes", json!(rows))])?;
    }
    Ok(ClusterUpdateStatus {
        nodes: rows,
        ..status.clone()
    })
}
