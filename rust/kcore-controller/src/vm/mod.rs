//! `kind: VM` in the controller (issue 17): reading VMs with their typed status, writing
//! status keys, what a node is told about each of its VMs, what its reports change, and
//! deletion in two steps. Placement is [`scheduler`]; what reaches a node, together with
//! its rollout step, is [`crate::assignment`]. docs/vms.md has the whole life of a VM.
//!
//! Status is written one top-level key at a time (`status.node`, `status.phase`, ...), each
//! its own replicated field, so the scheduler (on one controller) and a node's report (on
//! whichever controller the node reached) never remove each other's keys.

pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use kcore_api::cluster::Cordons;
use kcore_api::resource::{Kind, LabelSelector};
use kcore_api::vm::{
    MAX_VM_EVENTS, NodeVm, VmDesiredState, VmEvent, VmPhase, VmReports, VmSpec, VmStatus,
};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::rollout::records::now_rfc3339;
use crate::store::{Store, StoreError, resource_key};

/// One VM as the controller works with it.
#[derive(Debug, Clone, PartialEq)]
pub struct VmView {
    pub name: String,
    pub generation: u64,
    pub spec: VmSpec,
    pub status: VmStatus,
}

impl VmView {
    fn from_object(object: &Value) -> Option<VmView> {
        let name = object.pointer("/metadata/name")?.as_str()?.to_string();
        let spec = match serde_json::from_value(object.get("spec")?.clone()) {
            Ok(spec) => spec,
            Err(err) => {
                tracing::warn!(vm = %name, "stored spec does not decode: {err}");
                return None;
            }
        };
        Some(VmView {
            generation: object
                .pointer("/metadata/generation")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            status: object
                .get("status")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default(),
            spec,
            name,
        })
    }

    /// What the controller wants of it on its node. A rollout's cordon (`drainVms`)
    /// stops the node's VMs until the rollout lifts it; an operator's cordon only keeps
    /// new VMs off the node.
    pub fn desired(&self, cordons: &Cordons) -> VmDesiredState {
        if self.status.deletion_requested_at.is_some() {
            VmDesiredState::Deleted
        } else if !self.spec.running || cordons.rollout.is_some() {
            VmDesiredState::Stopped
        } else {
            VmDesiredState::Running
        }
    }
}

/// Every VM, by name.
pub fn all(store: &Store) -> Vec<VmView> {
    store
        .list(Kind::Vm, &LabelSelector::default())
        .iter()
        .filter_map(VmView::from_object)
        .collect()
}

/// VM `name`, if it exists.
pub fn get(store: &Store, name: &str) -> Option<VmView> {
    VmView::from_object(&store.get(Kind::Vm, name)?)
}

/// Writes the given `status.<key>` fields of VM `name` (`None` removes the key) and only
/// those. False when the VM does not exist (it was deleted meanwhile): nothing written.
pub fn write_status(
    store: &Store,
    name: &str,
    keys: &[(&str, Option<Value>)],
) -> Result<bool, StoreError> {
    if store.get(Kind::Vm, name).is_none() {
        return Ok(false);
    }
    let resource = resource_key(Kind::Vm, name);
    let writes: Vec<(String, String, Option<String>)> = keys
        .iter()
        .map(|(k, v)| {
            (
                resource.clone(),
                format!("status.{k}"),
                v.as_ref().map(Value::to_string),
            )
        })
        .collect();
    store.write_local(&writes)?;
    Ok(true)
}

/// `events` with one more at the end, the oldest dropped past [`MAX_VM_EVENTS`].
pub fn with_event(events: &[VmEvent], reason: &str, message: String) -> Value {
    let mut events = events.to_vec();
    events.push(VmEvent {
        at: now_rfc3339(),
        reason: reason.to_string(),
        message,
    });
    let skip = events.len().saturating_sub(MAX_VM_EVENTS);
    json!(events[skip..])
}

fn value<T: Serialize>(v: T) -> Option<Value> {
    Some(json!(v))
}

/// The VMs placed on `node`, each with what the controller wants of it.
pub fn node_vms(state: &AppState, node: &str) -> Vec<NodeVm> {
    let cordons = state
        .store
        .node(node)
        .map(|r| r.cordons)
        .unwrap_or_default();
    // Only this node's VMs are decoded: every long-poll recomputes this after every store
    // change (examples/bench_vms.rs measured the cost of decoding them all).
    state
        .store
        .names_where(Kind::Vm, "status.node", &json!(node))
        .iter()
        .filter_map(|name| get(&state.store, name))
        .map(|vm| NodeVm {
            desired: vm.desired(&cordons),
            name: vm.name,
            generation: vm.generation,
            spec: vm.spec,
        })
        .collect()
}

/// Whether every VM placed on `node` has its guest down as its node last reported
/// (`Stopped`, `Failed`, or never started: `Pending`/`Provisioning` without a report):
/// what a rollout with `drainVms: true` waits for after its cordon told the node to stop
/// them, and before it activates. Names the VMs still up otherwise.
pub fn drained(store: &Store, node: &str) -> Result<(), Vec<String>> {
    let up: Vec<String> = all(store)
        .into_iter()
        .filter(|vm| vm.status.node.as_deref() == Some(node))
        .filter(|vm| {
            matches!(
                vm.status.phase,
                Some(VmPhase::Starting | VmPhase::Running | VmPhase::Deleting)
            )
        })
        .map(|vm| vm.name)
        .collect();
    if up.is_empty() { Ok(()) } else { Err(up) }
}

/// What `DELETE /v1/vms/{name}` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    NotFound,
    /// Never placed: gone at once.
    Deleted,
    /// Placed: the node is told `Deleted`; the object goes when it confirms.
    Requested,
}

/// Deletes a VM that was never placed, or asks its node to remove it.
pub fn request_delete(store: &Store, name: &str) -> Result<DeleteOutcome, StoreError> {
    let Some(vm) = get(store, name) else {
        return Ok(DeleteOutcome::NotFound);
    };
    let Some(node) = vm.status.node.as_deref() else {
        store.delete(Kind::Vm, name)?;
        return Ok(DeleteOutcome::Deleted);
    };
    if vm.status.deletion_requested_at.is_none() {
        write_status(
            store,
            name,
            &[
                ("deletionRequestedAt", value(now_rfc3339())),
                ("phase", value(VmPhase::Deleting)),
                (
                    "events",
                    Some(with_event(
                        &vm.status.events,
                        "DeletionRequested",
                        format!("node {node} is told to stop the guest and remove its volume"),
                    )),
                ),
            ],
        )?;
    }
    Ok(DeleteOutcome::Requested)
}

/// What a node's `POST /v1/nodes/{id}/vms/report` changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportOutcome {
    /// VMs whose status took the report.
    pub recorded: Vec<String>,
    /// VMs removed after the node confirmed their deletion.
    pub deleted: Vec<String>,
    /// Names the node reported that are not (or no longer) placed on it: left alone.
    pub ignored: Vec<String>,
}

/// Stores a node's account of its VMs into their status. Only VMs placed on `node` are
/// touched; a `deleted` entry removes the VM only when its deletion was asked for.
pub fn apply_reports(
    store: &Store,
    node: &str,
    reports: &VmReports,
) -> Result<ReportOutcome, StoreError> {
    let mut out = ReportOutcome::default();
    for report in &reports.vms {
        let Some(vm) =
            get(store, &report.name).filter(|vm| vm.status.node.as_deref() == Some(node))
        else {
            out.ignored.push(report.name.clone());
            continue;
        };
        // A VM being deleted stays `Deleting` whatever its guest does on the way.
        let phase = if vm.status.deletion_requested_at.is_some() {
            VmPhase::Deleting
        } else {
            report.phase
        };
        let mut keys: Vec<(&str, Option<Value>)> = Vec::new();
        if vm.status.phase != Some(phase) {
            let message = match &report.message {
                Some(m) => format!("{} on node {node}: {m}", phase.as_str()),
                None => format!("{} on node {node}", phase.as_str()),
            };
            keys.push(("phase", value(phase)));
            keys.push((
                "events",
                Some(with_event(&vm.status.events, "PhaseChanged", message)),
            ));
        }
        if vm.status.volume != report.volume {
            keys.push(("volume", report.volume.as_ref().map(|v| json!(v))));
        }
        if vm.status.message != report.message {
            keys.push(("message", report.message.as_ref().map(|m| json!(m))));
        }
        if vm.status.observed_generation != report.observed_generation {
            keys.push(("observedGeneration", value(report.observed_generation)));
        }
        write_status(store, &vm.name, &keys)?;
        out.recorded.push(vm.name);
    }
    for name in &reports.deleted {
        let placed_here = get(store, name).filter(|vm| {
            vm.status.node.as_deref() == Some(node) && vm.status.deletion_requested_at.is_some()
        });
        if placed_here.is_some() {
            store.delete(Kind::Vm, name)?;
            tracing::info!(vm = %name, node = %node, "VM deleted after its node removed it");
            out.deleted.push(name.clone());
        } else {
            out.ignored.push(name.clone());
        }
    }
    Ok(out)
}

/// How often the scheduler looks again without a store change: a node's readiness
/// changes with heartbeats, which are soft state and wake no watcher.
pub const RESCHEDULE_INTERVAL: Duration = Duration::from_secs(5);

/// The scheduler's loop: a pass at every store change and every [`RESCHEDULE_INTERVAL`].
pub async fn run(state: Arc<AppState>, stop: CancellationToken) {
    let mut changes = state.store.watch();
    loop {
        changes.borrow_and_update();
        if let Err(err) = scheduler::tick(&state) {
            tracing::warn!("VM scheduler: {err}");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            _ = changes.changed() => {}
            () = tokio::time::sleep(RESCHEDULE_INTERVAL) => {}
        }
    }
}
