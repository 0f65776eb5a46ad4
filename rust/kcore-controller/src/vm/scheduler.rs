//! Placement of VMs on nodes (issue 17).
//!
//! A VM goes to a Ready, approved, uncordoned node whose storage backend is the VM's, in
//! the VM's DC when it names one, with enough free capacity for its volume: the free space
//! the node reports for its backend ([`free_bytes`]) minus what VMs already placed there
//! and not yet holding a volume reserve. Among the nodes that fit, the one with the fewest
//! VMs wins, then the one with the most room, then the lowest id. When none fits, the VM
//! stays `Pending` with a message that names what was missing ([`place`]).
//!
//! A placement is written once (`status.node`) and never moved: a node that goes
//! `NotReady` keeps its VMs, so a node that comes back finds them in its next assignment
//! and no VM ever runs on two nodes.
//!
//! One controller places (decision, docs/vms.md): the one with the lowest id among the
//! controllers whose record is fresh. A deterministic rule needs no lease records; two
//! controllers that disagree (a partition) may both place a VM, and the merge then keeps
//! one `status.node` (the later write) on every controller.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use kcore_api::cluster::{Approval, Node, NodeStatus, StorageBackend, StorageReport};
use kcore_api::controller::ControllerStatus;
use kcore_api::resource::{Kind, LabelSelector};
use kcore_api::validate::human_bytes;
use kcore_api::vm::{VmPhase, VmSpec};
use serde_json::json;

use super::{VmView, all, with_event, write_status};
use crate::api::AppState;
use crate::api::nodes::node_view;
use crate::store::StoreError;

/// The free space node `storage` offers for a new volume of its backend: the emptiest
/// volume mount (a file volume lives on one filesystem), the thin pool's free data space
/// when LVs go into a pool, else the VG's free extents, the ZFS pool's free space. `None`
/// when the node did not report it.
pub fn free_bytes(storage: &StorageReport) -> Option<u64> {
    match storage.backend? {
        StorageBackend::Filesystem => storage.mounts.iter().filter_map(|m| m.free_bytes).max(),
        StorageBackend::Lvm => {
            let vg = storage.volume_group.as_ref()?;
            match vg.thin_pool {
                Some(_) => vg.thin_pool_free_bytes,
                None => vg.free_bytes,
            }
        }
        StorageBackend::Zfs => storage.pool.as_ref()?.free_bytes,
    }
}

/// What VMs already placed on a node take of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub vms: usize,
    /// Sizes of placed VMs whose volume the node has not reported yet (once it has, the
    /// node's free space already counts it).
    pub reserved: u64,
}

/// Every node's [`Usage`] by the VMs in `vms`.
pub fn usage(vms: &[VmView]) -> BTreeMap<String, Usage> {
    let mut out: BTreeMap<String, Usage> = BTreeMap::new();
    for vm in vms {
        let Some(node) = &vm.status.node else {
            continue;
        };
        let u = out.entry(node.clone()).or_default();
        u.vms += 1;
        if vm.status.volume.is_none() {
            u.reserved = u.reserved.saturating_add(vm.spec.storage_size_bytes.0);
        }
    }
    out
}

/// Where a VM goes, or why nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Node(String),
    Unschedulable(String),
}

/// Picks a node for `spec` among `nodes` (see the module doc), or says what was missing.
pub fn place(spec: &VmSpec, nodes: &[Node], usage: &BTreeMap<String, Usage>) -> Placement {
    let backend = spec.storage_backend.as_str();
    let where_ = match &spec.dc {
        Some(dc) => format!("backend {backend} in {dc}"),
        None => format!("backend {backend}"),
    };
    let matching: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.approval == Approval::Approved)
        .filter(|n| n.report.storage.backend == Some(spec.storage_backend))
        .filter(|n| spec.dc.as_ref().is_none_or(|dc| &n.report.dc_id == dc))
        .collect();
    if matching.is_empty() {
        return Placement::Unschedulable(format!("no approved node with {where_}"));
    }
    let (usable, unusable): (Vec<&Node>, Vec<&Node>) = matching
        .into_iter()
        .partition(|n| n.status == NodeStatus::Ready && n.cordons.is_empty());
    if usable.is_empty() {
        let why: Vec<String> = unusable
            .iter()
            .map(|n| {
                let state = if n.status != NodeStatus::Ready {
                    n.status.to_string()
                } else {
                    "cordoned".to_string()
                };
                format!("{} {state}", n.node_id)
            })
            .collect();
        return Placement::Unschedulable(format!(
            "no Ready, uncordoned node with {where_} ({})",
            why.join(", ")
        ));
    }
    let want = spec.storage_size_bytes.0;
    let room = |n: &Node| -> Option<u64> {
        let taken = usage.get(&n.node_id).copied().unwrap_or_default();
        free_bytes(&n.report.storage).map(|f| f.saturating_sub(taken.reserved))
    };
    let best = usable
        .iter()
        .filter_map(|n| Some((*n, room(n)?)))
        .filter(|(_, room)| *room >= want)
        .min_by_key(|(n, room)| {
            let vms = usage.get(&n.node_id).map_or(0, |u| u.vms);
            (vms, Reverse(*room), n.node_id.clone())
        });
    if let Some((node, _)) = best {
        return Placement::Node(node.node_id.clone());
    }
    let largest = usable
        .iter()
        .filter_map(|n| Some((room(n)?, n.node_id.as_str())))
        .max_by_key(|(room, id)| (*room, Reverse(*id)));
    Placement::Unschedulable(match largest {
        Some((room, id)) => format!(
            "not enough space for {} on a node with {where_}: largest free {} on {id}",
            human_bytes(want),
            human_bytes(room)
        ),
        None => format!(
            "not enough space for {} on a node with {where_}: none reported its free space",
            human_bytes(want)
        ),
    })
}

/// How long a controller's record counts as fresh: three of its refreshes.
fn fresh_for() -> i64 {
    3 * crate::membership::REFRESH_INTERVAL.as_secs() as i64
}

/// Whether this controller is the one that places VMs now: the lowest id among itself and
/// the controllers whose `status.lastSeen` is fresh.
pub fn schedules_here(state: &AppState) -> bool {
    let me = &state.config.controller_id;
    let now = crate::api::now_unix();
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    state
        .store
        .list(Kind::Controller, &LabelSelector::default())
        .iter()
        .filter_map(|o| {
            let id = o.pointer("/metadata/name")?.as_str()?;
            let status: ControllerStatus = serde_json::from_value(o.get("status")?.clone()).ok()?;
            let seen = time::OffsetDateTime::parse(&status.last_seen, rfc3339).ok()?;
            (now - seen.unix_timestamp() <= fresh_for()).then(|| id.to_string())
        })
        .all(|id| &id >= me)
}

/// One pass: places every VM without a node (unless its deletion was asked for) and
/// keeps the `Pending` message of those that fit nowhere up to date. Writes nothing when
/// nothing changed, so its own writes do not keep it busy.
pub fn tick(state: &AppState) -> Result<(), StoreError> {
    if !schedules_here(state) {
        return Ok(());
    }
    let vms = all(&state.store);
    if vms.iter().all(|vm| vm.status.node.is_some()) {
        return Ok(());
    }
    let nodes: Vec<Node> = state
        .store
        .nodes()
        .into_iter()
        .map(|(id, record, beat)| node_view(state, id, record, beat))
        .collect();
    let mut usage = usage(&vms);
    for vm in &vms {
        if vm.status.node.is_some() {
            continue;
        }
        if vm.status.deletion_requested_at.is_some() {
            // Asked for deletion before it was placed (a race with the delete route).
            state.store.delete(Kind::Vm, &vm.name)?;
            continue;
        }
        match place(&vm.spec, &nodes, &usage) {
            Placement::Node(node) => {
                let u = usage.entry(node.clone()).or_default();
                u.vms += 1;
                u.reserved = u.reserved.saturating_add(vm.spec.storage_size_bytes.0);
                tracing::info!(vm = %vm.name, node = %node, "VM placed");
                write_status(
                    &state.store,
                    &vm.name,
                    &[
                        ("node", Some(json!(node))),
                        ("phase", Some(json!(VmPhase::Provisioning))),
                        ("message", None),
                        (
                            "events",
                            Some(with_event(
                                &vm.status.events,
                                "Scheduled",
                                format!("placed on node {node}"),
                            )),
                        ),
                    ],
                )?;
            }
            Placement::Unschedulable(why) => {
                if vm.status.phase == Some(VmPhase::Pending)
                    && vm.status.message.as_deref() == Some(why.as_str())
                {
                    continue;
                }
                tracing::info!(vm = %vm.name, "VM not placed: {why}");
                write_status(
                    &state.store,
                    &vm.name,
                    &[
                        ("phase", Some(json!(VmPhase::Pending))),
                        ("message", Some(json!(why))),
                        (
                            "events",
                            Some(with_event(&vm.status.events, "Unschedulable", why.clone())),
                        ),
                    ],
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcore_api::cluster::{
        CordonEntry, Cordons, NodeReport, PoolReport, VolumeGroupReport, VolumeMount,
    };

    const GIB: u64 = 1 << 30;

    fn node(id: &str, dc: &str, backend: StorageBackend, free: u64) -> Node {
        let mut storage = StorageReport {
            backend: Some(backend),
            ..Default::default()
        };
        match backend {
            StorageBackend::Filesystem => {
                storage.mounts = vec![
                    VolumeMount {
                        path: "/var/lib/kcore/volumes".into(),
                        size_bytes: None,
                        free_bytes: Some(free / 2),
                    },
                    VolumeMount {
                        path: "/var/lib/kcore/volumes1".into(),
                        size_bytes: None,
                        free_bytes: Some(free),
                    },
                ]
            }
            StorageBackend::Lvm => {
                storage.volume_group = Some(VolumeGroupReport {
                    name: "vg_kcore".into(),
                    free_bytes: Some(free),
                    ..Default::default()
                })
            }
            StorageBackend::Zfs => {
                storage.pool = Some(PoolReport {
                    name: "tank0".into(),
                    free_bytes: Some(free),
                    ..Default::default()
                })
            }
        }
        Node {
            node_id: id.into(),
            status: NodeStatus::Ready,
            approval: Approval::Approved,
            report: NodeReport {
                hostname: id.into(),
                dc_id: dc.into(),
                storage,
                ..Default::default()
            },
            registered_at: None,
            last_heartbeat: None,
            certificate: None,
            cordons: Cordons::default(),
        }
    }

    fn spec(backend: &str, size: &str, dc: Option<&str>) -> VmSpec {
        let mut v = json!({"storageBackend": backend, "storageSizeBytes": size});
        if let Some(dc) = dc {
            v["dc"] = json!(dc);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn free_space_is_read_per_backend() {
        let fs = node("a", "DC1", StorageBackend::Filesystem, 8 * GIB);
        assert_eq!(
            free_bytes(&fs.report.storage),
            Some(8 * GIB),
            "the emptiest mount"
        );
        let mut lvm = node("b", "DC1", StorageBackend::Lvm, 8 * GIB);
        assert_eq!(free_bytes(&lvm.report.storage), Some(8 * GIB));
        let vg = lvm.report.storage.volume_group.as_mut().unwrap();
        vg.thin_pool = Some("pool".into());
        vg.thin_pool_free_bytes = Some(3 * GIB);
        assert_eq!(
            free_bytes(&lvm.report.storage),
            Some(3 * GIB),
            "the pool's, not the VG's"
        );
        assert_eq!(free_bytes(&StorageReport::default()), None);
    }

    #[test]
    fn placement_by_backend_dc_space_and_least_used() {
        let nodes = vec![
            node("n1", "DC1", StorageBackend::Lvm, 100 * GIB),
            node("n2", "DC2", StorageBackend::Lvm, 10 * GIB),
            node("n3", "DC2", StorageBackend::Lvm, 50 * GIB),
            node("n4", "DC2", StorageBackend::Zfs, 500 * GIB),
        ];
        let none = BTreeMap::new();
        assert_eq!(
            place(&spec("lvm", "20G", Some("DC2")), &nodes, &none),
            Placement::Node("n3".into())
        );
        assert_eq!(
            place(&spec("lvm", "20G", None), &nodes, &none),
            Placement::Node("n1".into()),
            "most room among the equally used"
        );
        // n1 holds two VMs, n3 one: n3 is the less used even with less room.
        let used: BTreeMap<String, Usage> = [
            (
                "n1".to_string(),
                Usage {
                    vms: 2,
                    reserved: 0,
                },
            ),
            (
                "n3".to_string(),
                Usage {
                    vms: 1,
                    reserved: 0,
                },
            ),
        ]
        .into();
        assert_eq!(
            place(&spec("lvm", "20G", None), &nodes, &used),
            Placement::Node("n3".into())
        );
        // What placed VMs reserve is taken off the free space.
        let reserved: BTreeMap<String, Usage> = [(
            "n3".to_string(),
            Usage {
                vms: 1,
                reserved: 40 * GIB,
            },
        )]
        .into();
        assert_eq!(
            place(&spec("lvm", "20G", Some("DC2")), &nodes, &reserved),
            Placement::Unschedulable(
                "not enough space for 20.0 GiB on a node with backend lvm in DC2: largest free 10.0 GiB on n2".into()
            ),
            "n3 has 50 GiB free but 40 GiB reserved; a tie names the lower id"
        );
        assert_eq!(
            place(&spec("filesystem", "1G", Some("DC2")), &nodes, &none),
            Placement::Unschedulable("no approved node with backend filesystem in DC2".into())
        );
        assert_eq!(
            place(&spec("zfs", "1G", Some("DC1")), &nodes, &none),
            Placement::Unschedulable("no approved node with backend zfs in DC1".into())
        );
    }

    #[test]
    fn cordoned_not_ready_and_unapproved_nodes_take_nothing() {
        let mut a = node("a", "DC1", StorageBackend::Zfs, 100 * GIB);
        a.cordons.operator = Some(CordonEntry {
            by: "kcore://lab/admin/ops".into(),
            reason: String::new(),
            at: "2026-01-01T00:00:00Z".into(),
        });
        let mut b = node("b", "DC1", StorageBackend::Zfs, 100 * GIB);
        b.status = NodeStatus::NotReady;
        let mut c = node("c", "DC1", StorageBackend::Zfs, 100 * GIB);
        c.approval = Approval::Pending;
        c.status = NodeStatus::Pending;
        assert_eq!(
            place(&spec("zfs", "1G", None), &[a, b, c], &BTreeMap::new()),
            Placement::Unschedulable(
                "no Ready, uncordoned node with backend zfs (a cordoned, b NotReady)".into()
            )
        );
    }
}
