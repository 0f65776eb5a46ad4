//! A rollout's durable state besides its spec, as docs/controller.md ("Kinds written by one
//! owner") decides: the owner lease in `status.owner`, and append-only step records.
//!
//! A step record is its own resource, `clusterupdate/<name>/step/<node>/<epoch>-<seq>-<what>`,
//! with `what` `assigned` (the owner started the node's step), `prepare-ahead` (the owner
//! asked the node to prepare its update before its turn, docs/rollouts.md "Preparing
//! ahead") or a reported [`StepPhase`] (`activating`, `succeeded`, ...). The key names its one writer and its one
//! fact, so a record is written once and never updated: two controllers (the owner
//! assigning, any controller receiving a node's report) can never mix one record's fields,
//! and replication only ever adds records. The phase is part of the key (the decision's
//! `<epoch>-<seq>` plus what happened) because a step has several facts, each written by
//! whoever learnt it.

use std::collections::BTreeMap;

use kcore_api::clusterupdate::{ClusterUpdateStatus, RolloutOwner};
use kcore_api::resource::Kind;
use kcore_api::rollout::{StepPhase, StepReport};
use serde_json::{Value, json};

use crate::store::{Store, StoreError, resource_key};

/// What an `assigned` record says in `what`.
pub const ASSIGNED: &str = "assigned";
/// What a `prepare-ahead` record says in `what`: the node prepares its update step while
/// the wave before it activates. It takes no `maxUnavailable` slot (preparing takes
/// nothing down) and is no assignment: the step is assigned when the node's turn comes.
pub const PREPARE_AHEAD: &str = "prepare-ahead";

/// The `seq` of a node's update step: prepare and activate the rollout's target.
pub const UPDATE_SEQ: u64 = 1;
/// The `seq` of a node's rollback step: activate the generation its update step recorded
/// as `previous` (`kctl update cluster rollback`).
pub const ROLLBACK_SEQ: u64 = 2;

/// One step record.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub node: String,
    pub epoch: u64,
    pub seq: u64,
    /// [`ASSIGNED`], [`PREPARE_AHEAD`] or a reported phase in camelCase.
    pub what: String,
    /// RFC 3339 with sub-seconds, the writer's clock.
    pub at: String,
    /// The controller that wrote it.
    pub by: String,
    pub report: Option<StepReport>,
}

impl StepRecord {
    /// The reported phase (none for an assignment).
    pub fn phase(&self) -> Option<StepPhase> {
        serde_json::from_value(Value::String(self.what.clone())).ok()
    }
}

/// The key prefix of every step record of rollout `name`.
pub fn prefix(name: &str) -> String {
    format!("{}/step/", resource_key(Kind::ClusterUpdate, name))
}

fn key(name: &str, r: &StepRecord) -> String {
    // The epoch is zero-padded so keys sort in epoch order.
    format!(
        "{}{}/{:010}-{}-{}",
        prefix(name),
        r.node,
        r.epoch,
        r.seq,
        r.what
    )
}

/// Now, RFC 3339 in UTC with the clock's sub-seconds (records of one second must order).
pub fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Every step record of rollout `name`, in key order (node, epoch, seq).
pub fn records(store: &Store, name: &str) -> Vec<StepRecord> {
    decode(store.fields_under(&prefix(name)))
}

/// The step records of rollout `name` for `node` only: what a node's long poll and its
/// reports need, read without decoding every other node's records (the poll of each node
/// is woken at every store write).
pub fn node_records(store: &Store, name: &str, node: &str) -> Vec<StepRecord> {
    // The trailing `/` keeps node `n1` from matching `n10`.
    decode(store.fields_under(&format!("{}{node}/", prefix(name))))
}

fn decode(fields: Vec<(String, crate::store::Fields)>) -> Vec<StepRecord> {
    fields
        .into_iter()
        .filter_map(|(_, f)| {
            Some(StepRecord {
                node: f.get("node")?.as_str()?.to_string(),
                epoch: f.get("epoch")?.as_u64()?,
                seq: f.get("seq")?.as_u64()?,
                what: f.get("what")?.as_str()?.to_string(),
                at: f.get("at")?.as_str()?.to_string(),
                by: f.get("by")?.as_str()?.to_string(),
                report: f
                    .get("report")
                    .and_then(|r| serde_json::from_value(r.clone()).ok()),
            })
        })
        .collect()
}

/// Writes `record` unless a record with its key exists already. True when written.
pub fn write_once(store: &Store, name: &str, record: &StepRecord) -> Result<bool, StoreError> {
    let key = key(name, record);
    if store.fields(&key).is_some() {
        return Ok(false);
    }
    let mut fields = vec![
        ("node", json!(record.node)),
        ("epoch", json!(record.epoch)),
        ("seq", json!(record.seq)),
        ("what", json!(record.what)),
        ("at", json!(record.at)),
        ("by", json!(record.by)),
    ];
    if let Some(report) = &record.report {
        fields.push(("report", json!(report)));
    }
    let writes: Vec<(String, String, Option<String>)> = fields
        .into_iter()
        .map(|(f, v)| (key.clone(), f.to_string(), Some(v.to_string())))
        .collect();
    store.write_local(&writes)?;
    Ok(true)
}

/// Writes the given top-level `status.<key>` fields of rollout `name`, and only those: the
/// engine's keys and the operators' `approvedAt` / `cancelledAt` are separate fields, so a
/// write of one never removes the other.
pub fn write_status(store: &Store, name: &str, keys: &[(&str, Value)]) -> Result<(), StoreError> {
    let resource = resource_key(Kind::ClusterUpdate, name);
    let writes: Vec<(String, String, Option<String>)> = keys
        .iter()
        .map(|(k, v)| (resource.clone(), format!("status.{k}"), Some(v.to_string())))
        .collect();
    store.write_local(&writes)?;
    Ok(())
}

/// The merged status of rollout `name` (default when it has none yet; `None` when the
/// rollout does not exist).
pub fn status(store: &Store, name: &str) -> Option<ClusterUpdateStatus> {
    let object = store.get(Kind::ClusterUpdate, name)?;
    Some(
        object
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default(),
    )
}

/// The owner of rollout `name` as merged now.
pub fn owner(store: &Store, name: &str) -> Option<RolloutOwner> {
    status(store, name)?.owner
}

/// Where one node is, from its records: its assignment and the facts reported for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeProgress {
    pub assigned: Option<StepRecord>,
    /// The owner asked the node to prepare this step ahead of its turn.
    pub prepare_ahead: Option<StepRecord>,
    /// Reported records of the assigned step, in the order phases advance.
    pub reports: Vec<StepRecord>,
}

impl NodeProgress {
    /// The record that ended the step, if it ended.
    pub fn final_record(&self) -> Option<&StepRecord> {
        self.reports.iter().find(|r| {
            matches!(
                r.phase(),
                Some(StepPhase::Succeeded | StepPhase::Failed | StepPhase::Reverted)
            )
        })
    }

    /// Assigned, or ended (a step can end unassigned: a drain that timed out, a rollback
    /// with nothing to go back to): the engine starts nothing more for it.
    pub fn begun(&self) -> bool {
        self.assigned.is_some() || self.final_record().is_some()
    }

    /// Assigned and not ended: the node counts against `maxUnavailable`.
    pub fn in_flight(&self) -> bool {
        self.assigned.is_some() && self.final_record().is_none()
    }

    /// Told to prepare ahead, not assigned yet, not ended (a prepare that failed ahead ends
    /// the step).
    pub fn preparing_ahead(&self) -> bool {
        self.prepare_ahead.is_some() && self.assigned.is_none() && self.final_record().is_none()
    }

    /// Whether a report of this step is taken: any once it is assigned; before that, with
    /// a [`PREPARE_AHEAD`] record, only what its prepare reports. A later phase needs the
    /// `assigned` record: a controller without one has not seen the assignment (one that a
    /// lost owner never replicated, docs/rollouts.md "Takeover"), and the new owner assigns
    /// the step afresh.
    pub fn takes_report(&self, report: &StepReport) -> bool {
        self.assigned.is_some() || (self.prepare_ahead.is_some() && report.is_of_a_prepare())
    }

    /// It reported `phase` or a later one, or its step ended.
    pub fn reached(&self, phase: StepPhase) -> bool {
        self.last_phase()
            .is_some_and(|p| phase_rank(p) >= phase_rank(phase))
    }

    /// The furthest phase reported.
    pub fn last_phase(&self) -> Option<StepPhase> {
        if let Some(r) = self.final_record() {
            return r.phase();
        }
        self.reports
            .iter()
            .filter_map(StepRecord::phase)
            .max_by_key(|p| phase_rank(*p))
    }
}

fn phase_rank(p: StepPhase) -> u8 {
    match p {
        StepPhase::Preparing => 0,
        StepPhase::Prepared => 1,
        StepPhase::Activating => 2,
        StepPhase::Verifying => 3,
        StepPhase::Rebooting => 4,
        StepPhase::Succeeded | StepPhase::Failed | StepPhase::Reverted => 5,
    }
}

/// The controllers that assigned steps in `records`, each once, in order (a takeover shows
/// both the deposed owner and the new one).
pub fn assigned_by(records: &[StepRecord]) -> Vec<&str> {
    let by: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|r| r.what == ASSIGNED)
        .map(|r| r.by.as_str())
        .collect();
    by.into_iter().collect()
}

/// Every node's progress in step `seq` ([`UPDATE_SEQ`] or [`ROLLBACK_SEQ`]) of one rollout.
/// Records of any epoch count, so a takeover keeps what the deposed owner started.
pub fn progress(records: &[StepRecord], seq: u64) -> BTreeMap<String, NodeProgress> {
    let mut out: BTreeMap<String, NodeProgress> = BTreeMap::new();
    for r in records.iter().filter(|r| r.seq == seq) {
        let p = out.entry(r.node.clone()).or_default();
        if r.what == ASSIGNED {
            // The first assignment is the step; a second could only come from a deposed
            // owner racing a takeover, and names the same step.
            if p.assigned.is_none() {
                p.assigned = Some(r.clone());
            }
        } else if r.what == PREPARE_AHEAD {
            if p.prepare_ahead.is_none() {
                p.prepare_ahead = Some(r.clone());
            }
        } else {
            p.reports.push(r.clone());
        }
    }
    for p in out.values_mut() {
        p.reports.sort_by_key(|r| r.phase().map(phase_rank));
    }
    out
}

/// The invariants every rollout test checks on the recorded timeline, in one place so the
/// engine's tests (`kcore-controller/tests/it/rollouts/`) and the end-to-end ones
/// (`kcore-agent/tests/it/rollout_fleet.rs`) check the same thing.
pub mod timeline {
    use std::collections::BTreeMap;

    use super::{ASSIGNED, PREPARE_AHEAD, StepRecord};

    /// The most nodes ever between `activating` and the end of their step. A step that
    /// ended without activating (failed before it was assigned: a `drainVms` drain that
    /// timed out, a rollback with nothing to go back to) is not counted at all.
    pub fn max_unavailable(recs: &[StepRecord]) -> usize {
        let activated: std::collections::BTreeSet<(&str, u64)> = recs
            .iter()
            .filter(|r| r.what == "activating")
            .map(|r| (r.node.as_str(), r.seq))
            .collect();
        let mut events: Vec<(String, i32)> = Vec::new();
        for r in recs {
            match r.what.as_str() {
                "activating" => events.push((r.at.clone(), 1)),
                "succeeded" | "reverted" | "failed"
                    if activated.contains(&(r.node.as_str(), r.seq)) =>
                {
                    events.push((r.at.clone(), -1))
                }
                _ => {}
            }
        }
        // RFC 3339 in UTC with the same layout sorts as time; an end at the same instant as
        // a start counts first (`-1` sorts before `1`).
        events.sort();
        let (mut now, mut max) = (0i32, 0i32);
        for (_, d) in events {
            now += d;
            max = max.max(now);
        }
        max as usize
    }

    /// `node`'s earliest record of kind `what` (RFC 3339 in UTC with the same layout sorts
    /// as time, as in [`max_unavailable`]).
    pub fn first<'a>(recs: &'a [StepRecord], node: &str, what: &str) -> Option<&'a StepRecord> {
        recs.iter()
            .filter(|r| r.node == node && r.what == what)
            .min_by(|a, b| a.at.cmp(&b.at))
    }

    /// How many records of kind `what` each node has.
    pub fn count_per_node(recs: &[StepRecord], what: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in recs.iter().filter(|r| r.what == what) {
            *out.entry(r.node.clone()).or_default() += 1;
        }
        out
    }

    /// `assigned` records per node.
    pub fn assigned_per_node(recs: &[StepRecord]) -> BTreeMap<String, usize> {
        count_per_node(recs, ASSIGNED)
    }

    /// At most `cap` nodes between activation start and the end of their step, and no
    /// node assigned, told to prepare ahead or activated twice in one step (a node's update is step `seq` 1, its
    /// rollback step 2; re-reports under a newer epoch keep the seq); the violations,
    /// worded for a test's panic.
    pub fn check(recs: &[StepRecord], cap: usize) -> Result<(), String> {
        let mut wrong = Vec::new();
        let max = max_unavailable(recs);
        if max > cap {
            wrong.push(format!("{max} nodes unavailable at once, over {cap}"));
        }
        for what in [ASSIGNED, PREPARE_AHEAD, "activating"] {
            let mut per_step: BTreeMap<(&str, u64), usize> = BTreeMap::new();
            for r in recs.iter().filter(|r| r.what == what) {
                *per_step.entry((r.node.as_str(), r.seq)).or_default() += 1;
            }
            for ((node, seq), n) in per_step {
                if n > 1 {
                    wrong.push(format!("{node} has {n} `{what}` records in step {seq}"));
                }
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(node: &str, what: &str, at: &str) -> StepRecord {
        StepRecord {
            node: node.into(),
            epoch: 1,
            seq: UPDATE_SEQ,
            what: what.into(),
            at: format!("2026-01-01T00:00:0{at}Z"),
            by: "ctl1".into(),
            report: None,
        }
    }

    #[test]
    fn a_node_preparing_ahead_may_report_its_prepare_and_nothing_later() {
        let report = |phase: &str, code: Option<&str>| -> StepReport {
            serde_json::from_value(
                json!({"operationId": "1", "phase": phase, "updatedAt": "t", "code": code}),
            )
            .unwrap()
        };
        let ahead = NodeProgress {
            prepare_ahead: Some(rec("n1", PREPARE_AHEAD, "1")),
            ..NodeProgress::default()
        };
        for taken in [
            report("preparing", None),
            report("prepared", None),
            report("failed", Some("PREPARE_FAILED")),
        ] {
            assert!(ahead.takes_report(&taken), "{taken:?}");
        }
        // An activation's reports mean the node holds an assignment this controller never
        // saw (a lost owner's): refused, so the new owner assigns the step afresh.
        for refused in [
            report("activating", None),
            report("succeeded", None),
            report("failed", Some("ACTIVATION_FAILED")),
        ] {
            assert!(!ahead.takes_report(&refused), "{refused:?}");
        }
        let assigned = NodeProgress {
            assigned: Some(rec("n1", ASSIGNED, "2")),
            ..ahead
        };
        assert!(assigned.takes_report(&report("succeeded", None)));
        assert!(!NodeProgress::default().takes_report(&report("preparing", None)));
    }

    #[test]
    fn a_step_failed_before_it_activated_does_not_hide_two_nodes_down_at_once() {
        // n1's drain timed out (failed, never activating), then n2 and n3 are down together.
        let recs = [
            rec("n1", "failed", "1"),
            rec("n2", "activating", "2"),
            rec("n3", "activating", "3"),
            rec("n2", "succeeded", "4"),
            rec("n3", "succeeded", "5"),
        ];
        assert_eq!(timeline::max_unavailable(&recs), 2);
        assert!(timeline::check(&recs, 1).is_err());
    }
}
