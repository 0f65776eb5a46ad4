//! VMs over HTTPS (issue 17): a real controller on 127.0.0.1 and nodes with their own node
//! certificates that register with storage reports (their capacity), heartbeat, read their
//! assignment and report their VMs. The scheduler, the Pending reasons, cordons, the
//! two-step delete and a node going away and coming back, as operators and nodes see them.

use kcore_api::cluster::{CordonEntry, CordonHolder, PoolReport, VolumeGroupReport, VolumeMount};
use kcore_api::resource::Deleted;
use kcore_api::rollout::Assignment;
use kcore_api::vm::{VmDesiredState, VmPhase, VmReport, VmReports, VmStatus, VmVolume};
use serde_json::{Value, json};

use crate::support::*;

const GIB: u64 = 1 << 30;

/// A node's report with `free` bytes for its backend.
fn with_free(host: &str, dc: &str, backend: StorageBackend, free: u64) -> NodeReport {
    let mut r = report(host, dc, Some(backend));
    match backend {
        StorageBackend::Filesystem => {
            r.storage.mounts = vec![VolumeMount {
                path: "/var/lib/kcore/volumes".into(),
                size_bytes: Some(free * 2),
                free_bytes: Some(free),
            }]
        }
        StorageBackend::Lvm => {
            r.storage.volume_group = Some(VolumeGroupReport {
                name: "vg_kcore".into(),
                size_bytes: Some(free * 2),
                free_bytes: Some(free),
                lv_prefix: "kcore-".into(),
                ..Default::default()
            })
        }
        StorageBackend::Zfs => {
            r.storage.pool = Some(PoolReport {
                name: "tank0".into(),
                size_bytes: Some(free * 2),
                free_bytes: Some(free),
                health: Some("ONLINE".into()),
                dataset_prefix: "kcore-".into(),
            })
        }
    }
    r
}

fn vm(name: &str, backend: &str, size: &str, dc: Option<&str>) -> Value {
    let mut spec = json!({"storageBackend": backend, "storageSizeBytes": size});
    if let Some(dc) = dc {
        spec["dc"] = json!(dc);
    }
    json!({"kind": "VM", "metadata": {"name": name}, "spec": spec})
}

async fn apply(admin: &Client, object: &Value) {
    let name = object["metadata"]["name"].as_str().unwrap();
    let _: Value = admin
        .put_json(&format!("/v1/vms/{name}"), object)
        .await
        .unwrap();
}

async fn status(admin: &Client, name: &str) -> VmStatus {
    let object: Value = admin.get_json(&format!("/v1/vms/{name}")).await.unwrap();
    serde_json::from_value(object.get("status").cloned().unwrap_or(json!({}))).unwrap()
}

/// Waits until VM `name`'s status satisfies `check`, and returns it.
async fn wait_status(
    admin: &Client,
    name: &str,
    what: &str,
    check: impl Fn(&VmStatus) -> bool,
) -> VmStatus {
    let mut last = VmStatus::default();
    for _ in 0..150 {
        // Not there yet (an apply on another controller still replicating) counts as not yet.
        if admin
            .get_json::<Value>(&format!("/v1/vms/{name}"))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        last = status(admin, name).await;
        if check(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {name}: {what}; last status {last:?}");
}

fn placed_on(node: &str) -> impl Fn(&VmStatus) -> bool + '_ {
    move |s| s.node.as_deref() == Some(node)
}

fn pending_with(reason: &str) -> impl Fn(&VmStatus) -> bool + '_ {
    move |s| s.phase == Some(VmPhase::Pending) && s.message.as_deref() == Some(reason)
}

/// Heartbeats `c` as `id` every 300 ms until the handle is dropped (aborted).
fn keep_beating(c: Client, id: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = beat(&c, id).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

#[tokio::test]
async fn vms_are_placed_by_backend_dc_and_free_space_and_say_why_not() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem();
    let admin = client(&ctl.url, trust, &cl.admin());
    let n1 = client(&ctl.url, trust, &cl.node("n1"));
    let n2 = client(&ctl.url, trust, &cl.node("n2"));
    let n3 = client(&ctl.url, trust, &cl.node("n3"));
    register(
        &n1,
        "n1",
        with_free("hv1", "DC1", StorageBackend::Lvm, 100 * GIB),
    )
    .await
    .unwrap();
    register(
        &n2,
        "n2",
        with_free("hv2", "DC2", StorageBackend::Lvm, 30 * GIB),
    )
    .await
    .unwrap();
    register(
        &n3,
        "n3",
        with_free("hv3", "DC2", StorageBackend::Zfs, 50 * GIB),
    )
    .await
    .unwrap();

    // Backend and DC: the only lvm node in DC2 is n2.
    apply(&admin, &vm("a", "lvm", "20G", Some("DC2"))).await;
    let a = wait_status(&admin, "a", "placed", placed_on("n2")).await;
    assert_eq!(a.phase, Some(VmPhase::Provisioning));
    assert_eq!(a.events.last().unwrap().reason, "Scheduled", "{a:?}");

    // Two VMs that together do not fit: a reserves 20 of n2's 30 GiB until n2 reports its
    // volume.
    apply(&admin, &vm("b", "lvm", "20G", Some("DC2"))).await;
    wait_status(
        &admin,
        "b",
        "pending for space",
        pending_with(
            "not enough space for 20.0 GiB on a node with backend lvm in DC2: largest free 10.0 GiB on n2",
        ),
    )
    .await;
    apply(&admin, &vm("c", "filesystem", "1G", Some("DC2"))).await;
    wait_status(
        &admin,
        "c",
        "pending for backend",
        pending_with("no approved node with backend filesystem in DC2"),
    )
    .await;
    assert_eq!(status(&admin, "b").await.node, None);

    // n2 grows (a new PV) and says so: b fits now, on the same node as a.
    let _: NodeAck = n2
        .post_json(
            "/v1/nodes/n2/heartbeat",
            &HeartbeatRequest {
                report: Some(with_free("hv2", "DC2", StorageBackend::Lvm, 60 * GIB)),
            },
        )
        .await
        .unwrap();
    wait_status(&admin, "b", "placed after growth", placed_on("n2")).await;

    // An operator's cordon keeps new VMs off n1 and names it; uncordon lets them in.
    let node: Node = admin
        .post_json("/v1/nodes/n1/cordon", &json!({"reason": "disk swap"}))
        .await
        .unwrap();
    assert_eq!(node.cordons.operator.as_ref().unwrap().reason, "disk swap");
    apply(&admin, &vm("d", "lvm", "50G", Some("DC1"))).await;
    wait_status(
        &admin,
        "d",
        "pending for the cordon",
        pending_with("no Ready, uncordoned node with backend lvm in DC1 (n1 cordoned)"),
    )
    .await;
    let node: Node = post(&admin, "/v1/nodes/n1/uncordon").await.unwrap();
    assert!(node.cordons.is_empty());
    wait_status(&admin, "d", "placed after uncordon", placed_on("n1")).await;
    ctl.stop().await;
}

#[tokio::test]
async fn cordon_routes_are_admin_only_and_keep_the_reason() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem();
    let admin = client(&ctl.url, trust, &cl.admin());
    let n1 = client(&ctl.url, trust, &cl.node("n1"));
    register(&n1, "n1", report("hv1", "DC1", Some(StorageBackend::Zfs)))
        .await
        .unwrap();
    let refused = n1
        .post_json::<_, Node>("/v1/nodes/n1/cordon", &json!({}))
        .await;
    assert_eq!(code(&refused.unwrap_err()), "FORBIDDEN_ROLE");
    let node: Node = post(&admin, "/v1/nodes/n1/cordon").await.unwrap();
    let entry = node.cordons.operator.unwrap();
    assert!(entry.by.contains("/admin/"), "{entry:?}");
    let listed: NodeList = admin.get_json("/v1/nodes").await.unwrap();
    assert!(listed.items[0].cordons.operator.is_some());
    let missing = post::<Node>(&admin, "/v1/nodes/nope/cordon").await;
    assert_eq!(code(&missing.unwrap_err()), "NODE_NOT_FOUND");
    let node: Node = post(&admin, "/v1/nodes/n1/uncordon").await.unwrap();
    assert!(node.cordons.is_empty());
    ctl.stop().await;
}

async fn assignment(c: &Client, id: &str, wait: u64, known: &str) -> Assignment {
    c.get_json(&format!(
        "/v1/nodes/{id}/assignment?wait={wait}&known={known}"
    ))
    .await
    .unwrap()
}

#[tokio::test]
async fn a_node_sees_its_vms_reports_land_in_status_and_delete_waits_for_the_node() {
    let cl = Cluster::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (ctl, state) = Running::start_on_keeping_state(listener, cl.config(false));
    let trust = cl.root.cert_pem();
    let admin = client(&ctl.url, trust, &cl.admin());
    let n1 = client(&ctl.url, trust, &cl.node("n1"));
    let n2 = client(&ctl.url, trust, &cl.node("n2"));
    register(
        &n1,
        "n1",
        with_free("hv1", "DC1", StorageBackend::Zfs, 100 * GIB),
    )
    .await
    .unwrap();
    register(
        &n2,
        "n2",
        with_free("hv2", "DC1", StorageBackend::Lvm, 100 * GIB),
    )
    .await
    .unwrap();

    let empty = assignment(&n1, "n1", 0, "").await;
    assert!(empty.token.is_empty() && empty.vms.is_empty());
    apply(&admin, &vm("web", "zfs", "10G", None)).await;
    wait_status(&admin, "web", "placed", placed_on("n1")).await;
    let first = assignment(&n1, "n1", 0, "").await;
    assert_eq!(first.vms.len(), 1);
    let told = &first.vms[0];
    assert_eq!((told.name.as_str(), told.generation), ("web", 1));
    assert_eq!(told.desired, VmDesiredState::Running);
    assert_eq!(told.spec.storage_size_bytes.0, 10 * GIB);
    assert!(first.token.starts_with("vms:"), "{}", first.token);
    // Another node neither sees nor reads it.
    assert!(assignment(&n2, "n2", 0, "").await.vms.is_empty());
    let other = n2
        .get_json::<Assignment>("/v1/nodes/n1/assignment?wait=0")
        .await;
    assert_eq!(code(&other.unwrap_err()), "NOT_SELF");

    // A long-poll on the current token is answered when the VM changes: `kctl vm stop` is
    // `spec.running: false`, a new generation.
    let poll = {
        let n1 = n1.clone();
        let token = first.token.clone();
        tokio::spawn(async move { assignment(&n1, "n1", 30, &token).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut stopped = vm("web", "zfs", "10G", None);
    stopped["spec"]["running"] = json!(false);
    apply(&admin, &stopped).await;
    let second = poll.await.unwrap();
    assert_ne!(second.token, first.token);
    assert_eq!(second.vms[0].desired, VmDesiredState::Stopped);
    assert_eq!(second.vms[0].generation, 2);

    // A rollout draining the node (its own cordon) stops the node's VMs too.
    apply(&admin, &vm("web", "zfs", "10G", None)).await;
    assert_eq!(
        assignment(&n1, "n1", 0, "").await.vms[0].desired,
        VmDesiredState::Running
    );
    let drain = CordonEntry {
        by: "clusterupdate/release-1".into(),
        reason: "drainVms".into(),
        at: "2026-01-01T00:00:00Z".into(),
    };
    state
        .store
        .set_cordon("n1", CordonHolder::Rollout, Some(&drain))
        .unwrap();
    assert_eq!(
        kcore_controller::vm::drained(&state.store, "n1"),
        Ok(()),
        "Provisioning, never reported running: nothing to wait for"
    );
    assert_eq!(
        assignment(&n1, "n1", 0, "").await.vms[0].desired,
        VmDesiredState::Stopped
    );
    state
        .store
        .set_cordon("n1", CordonHolder::Rollout, None)
        .unwrap();

    // The node's report lands in status; another node's report about it is ignored.
    let volume = VmVolume {
        backend: StorageBackend::Zfs,
        path: "/dev/zvol/tank0/kcore-web".into(),
        size_bytes: 10 * GIB,
    };
    let reports = VmReports {
        vms: vec![VmReport {
            name: "web".into(),
            observed_generation: 3,
            phase: VmPhase::Running,
            volume: Some(volume.clone()),
            message: None,
        }],
        deleted: vec![],
    };
    let by_n2: Value = n2
        .post_json("/v1/nodes/n2/vms/report", &reports)
        .await
        .unwrap();
    assert_eq!(by_n2["ignored"], json!(["web"]));
    let spoofed = n2
        .post_json::<_, Value>("/v1/nodes/n1/vms/report", &reports)
        .await;
    assert_eq!(code(&spoofed.unwrap_err()), "NOT_SELF");
    let by_n1: Value = n1
        .post_json("/v1/nodes/n1/vms/report", &reports)
        .await
        .unwrap();
    assert_eq!(by_n1["recorded"], json!(["web"]));
    let s = status(&admin, "web").await;
    assert_eq!(
        (s.phase, s.volume.as_ref(), s.observed_generation),
        (Some(VmPhase::Running), Some(&volume), 3)
    );
    let reasons: Vec<&str> = s.events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["Scheduled", "PhaseChanged"], "{s:?}");
    // A rollout draining n1 waits while the guest is reported running.
    assert_eq!(
        kcore_controller::vm::drained(&state.store, "n1"),
        Err(vec!["web".to_string()])
    );

    // Delete of a placed VM: Deleting, the node is told Deleted, gone once it confirms.
    let deleted: Deleted = admin.delete("/v1/vms/web").await.unwrap();
    assert!(deleted.pending.is_some());
    assert_eq!(status(&admin, "web").await.phase, Some(VmPhase::Deleting));
    assert_eq!(
        assignment(&n1, "n1", 0, "").await.vms[0].desired,
        VmDesiredState::Deleted
    );
    // A report of the guest still running does not take it out of Deleting.
    let _: Value = n1
        .post_json("/v1/nodes/n1/vms/report", &reports)
        .await
        .unwrap();
    assert_eq!(status(&admin, "web").await.phase, Some(VmPhase::Deleting));
    let done: Value = n1
        .post_json(
            "/v1/nodes/n1/vms/report",
            &VmReports {
                vms: vec![],
                deleted: vec!["web".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(done["deleted"], json!(["web"]));
    let gone = admin.get_json::<Value>("/v1/vms/web").await;
    assert_eq!(code(&gone.unwrap_err()), "NOT_FOUND");
    let after = assignment(&n1, "n1", 0, "").await;
    assert!(after.vms.is_empty() && after.token.is_empty());

    // A VM that was never placed goes at once.
    apply(&admin, &vm("nowhere", "filesystem", "1G", None)).await;
    wait_status(&admin, "nowhere", "pending", |s| {
        s.phase == Some(VmPhase::Pending)
    })
    .await;
    let deleted: Deleted = admin.delete("/v1/vms/nowhere").await.unwrap();
    assert_eq!(deleted.pending, None);
    let gone = admin.get_json::<Value>("/v1/vms/nowhere").await;
    assert_eq!(code(&gone.unwrap_err()), "NOT_FOUND");
    ctl.stop().await;
}

#[tokio::test]
async fn a_node_that_goes_away_keeps_its_vms_and_gets_them_when_it_comes_back() {
    let cl = Cluster::new();
    let mut config = cl.config(false);
    config.heartbeat_timeout_seconds = 1;
    let ctl = Running::start(config).await;
    let trust = cl.root.cert_pem();
    let admin = client(&ctl.url, trust, &cl.admin());
    let n1 = client(&ctl.url, trust, &cl.node("n1"));
    let n2 = client(&ctl.url, trust, &cl.node("n2"));
    register(
        &n1,
        "n1",
        with_free("hv1", "DC1", StorageBackend::Zfs, 100 * GIB),
    )
    .await
    .unwrap();
    register(
        &n2,
        "n2",
        with_free("hv2", "DC1", StorageBackend::Zfs, 50 * GIB),
    )
    .await
    .unwrap();
    let beating = keep_beating(n2.clone(), "n2");
    let n1_beating = keep_beating(n1.clone(), "n1");

    apply(&admin, &vm("a", "zfs", "10G", None)).await;
    wait_status(&admin, "a", "placed on the roomier node", placed_on("n1")).await;

    // n1 goes away.
    n1_beating.abort();
    eventually("n1 NotReady", || async {
        let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
        node.status == NodeStatus::NotReady
    })
    .await;
    apply(&admin, &vm("b", "zfs", "10G", None)).await;
    wait_status(
        &admin,
        "b",
        "placed on the node that is there",
        placed_on("n2"),
    )
    .await;
    assert_eq!(
        status(&admin, "a").await.node.as_deref(),
        Some("n1"),
        "a NotReady node keeps its VMs: no second placement"
    );

    // n1 comes back: its first assignment answer has its VM.
    beat(&n1, "n1").await.unwrap();
    let back = assignment(&n1, "n1", 0, "").await;
    let names: Vec<&str> = back.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["a"]);
    assert_eq!(back.vms[0].desired, VmDesiredState::Running);
    beating.abort();
    ctl.stop().await;
}

#[tokio::test]
async fn of_two_controllers_only_the_lowest_id_places_and_both_see_the_placement() {
    let cl = Cluster::new();
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let (la, lb) = (bind().await, bind().await);
    let (a_addr, b_addr) = (
        la.local_addr().unwrap().to_string(),
        lb.local_addr().unwrap().to_string(),
    );
    let (a, a_state) =
        Running::start_on_keeping_state(la, cl.peer_config("ctl-a", false, vec![b_addr]));
    let (b, b_state) =
        Running::start_on_keeping_state(lb, cl.peer_config("ctl-b", false, vec![a_addr]));
    let trust = cl.root.cert_pem();
    let admin_a = client(&a.url, trust, &cl.admin());
    let admin_b = client(&b.url, trust, &cl.admin());
    // ctl-b must know ctl-a before it is asked anything, or it would be the lowest it knows.
    eventually("each controller to know the other", || async {
        admin_b
            .get_json::<Value>("/v1/controllers/ctl-a")
            .await
            .is_ok()
            && admin_a
                .get_json::<Value>("/v1/controllers/ctl-b")
                .await
                .is_ok()
    })
    .await;
    let n1 = client(&b.url, trust, &cl.node("n1"));
    register(
        &n1,
        "n1",
        with_free("hv1", "DC1", StorageBackend::Zfs, 100 * GIB),
    )
    .await
    .unwrap();
    let beating = keep_beating(n1.clone(), "n1");

    apply(&admin_b, &vm("web", "zfs", "10G", None)).await;
    wait_status(&admin_a, "web", "placed, seen on ctl-a", placed_on("n1")).await;
    wait_status(&admin_b, "web", "placed, seen on ctl-b", placed_on("n1")).await;
    let wrote_node = |ops: Vec<kcore_controller::store::Op>| {
        ops.iter()
            .any(|op| op.resource == "vm/web" && op.field == "status.node")
    };
    assert!(wrote_node(
        a_state.store.ops_since("ctl-a", "", 10_000).unwrap()
    ));
    assert!(
        !wrote_node(b_state.store.ops_since("ctl-b", "", 10_000).unwrap()),
        "ctl-b, not the lowest id, never placed"
    );
    // The node reads its VM from either controller.
    let on_b = assignment(&n1, "n1", 0, "").await;
    assert_eq!(on_b.vms.len(), 1);
    beating.abort();
    a.stop().await;
    b.stop().await;
}
