//! `drainVms`: cordons around each step, a step assigned only once its VM stopped, a VM
//! that never stops, and the drain around a rollback step.

use super::*;

#[tokio::test]
async fn rollout_drain_vms_cordons_each_node_during_its_step_only() {
    let bed = Bed::with(&[], Duration::from_millis(800)).await;
    // An operator's cordon on n4 is not the rollout's to lift.
    let _: Value = bed
        .admin
        .post_json("/v1/nodes/n4/cordon", &json!({"reason": "disk swap"}))
        .await
        .unwrap();
    let mut body = rollout("r1", json!({"strategyType": "one-at-a-time"}), "auto", 0);
    body["spec"]["drainVms"] = json!(true);
    bed.apply(&body).await;
    // Watch the nodes while it runs: which were seen cordoned by the rollout, and how many
    // at once (bounded: 600 polls of 50 ms).
    let mut seen = std::collections::BTreeSet::new();
    let mut most = 0;
    for _ in 0..600 {
        let list: NodeList = bed.admin.get_json("/v1/nodes").await.unwrap();
        let now: Vec<String> = list
            .items
            .iter()
            .filter(|n| {
                n.cordons
                    .rollout
                    .as_ref()
                    .is_some_and(|c| c.by == "clusterupdate/r1")
            })
            .map(|n| n.node_id.clone())
            .collect();
        most = most.max(now.len());
        seen.extend(now);
        let cu = bed.get("r1").await;
        if cu["status"]["phase"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bed.get("r1").await["status"]["phase"], "succeeded");
    assert!(
        !seen.is_empty(),
        "no node was ever seen cordoned by the rollout"
    );
    assert_eq!(most, 1, "one at a time: one node cordoned at once");
    // Every cordon of the rollout is lifted once its step ended; n4's operator cordon stays.
    let admin = &bed.admin;
    eventually("rollout cordons lifted", || async {
        let list: NodeList = admin.get_json("/v1/nodes").await.unwrap();
        list.items.iter().all(|n| n.cordons.rollout.is_none())
    })
    .await;
    let list: NodeList = bed.admin.get_json("/v1/nodes").await.unwrap();
    let n4 = list.items.iter().find(|n| n.node_id == "n4").unwrap();
    assert_eq!(
        n4.cordons.operator.as_ref().map(|c| c.reason.as_str()),
        Some("disk swap")
    );
}

/// Applies VM `name` (1 GiB, filesystem) and waits until a stand-in reports it running;
/// the node it was placed on.
async fn running_vm(bed: &Bed, name: &str) -> String {
    let vm = json!({"kind": "VM", "metadata": {"name": name},
        "spec": {"storageBackend": "filesystem", "storageSizeBytes": "1G"}});
    let _: Value = bed
        .admin
        .put_json(&format!("/v1/vms/{name}"), &vm)
        .await
        .unwrap();
    let mut last = Value::Null;
    for _ in 0..100 {
        last = bed
            .admin
            .get_json(&format!("/v1/vms/{name}"))
            .await
            .unwrap();
        if last["status"]["phase"] == "Running"
            && let Some(node) = last["status"]["node"].as_str()
        {
            return node.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never reported Running: {last:#}");
}

/// A `drainVms` rollout over the five stand-ins in one batch with `maxUnavailable` 1: a
/// single wave, so only the slot count keeps a second node from starting while one drains.
fn drain_rollout(name: &str, health_timeout: u64, max_failures: u32) -> Value {
    let mut body = rollout(
        name,
        json!({"strategyType": "batch", "batchSize": 5, "maxUnavailable": 1}),
        "auto",
        max_failures,
    );
    body["spec"]["drainVms"] = json!(true);
    body["spec"]["activation"] = json!({"healthTimeoutSeconds": health_timeout});
    body
}

#[tokio::test]
async fn rollout_drain_vms_assigns_a_step_only_once_its_vm_stopped_and_starts_it_again_after() {
    let bed = Bed::new(&[]).await;
    let host = running_vm(&bed, "web").await;
    bed.apply(&drain_rollout("r1", 60, 0)).await;
    // While the guest shuts down the node's row says it is draining (bounded: 300 polls).
    let mut seen_draining = false;
    for _ in 0..300 {
        let cu = bed.get("r1").await;
        let reason = row_of(&cu, &host)["reason"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if reason == "draining: waiting for VM(s) web to stop" {
            seen_draining = true;
            break;
        }
        if cu["status"]["phase"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_draining, "{host}'s row never said it was draining");
    bed.wait_phase("r1", &["succeeded"]).await;
    // The VM is told Running again once the step ended, and the stand-in says so.
    let admin = &bed.admin;
    eventually("web running again", || async {
        let vm: Value = admin.get_json("/v1/vms/web").await.unwrap();
        vm["status"]["phase"] == "Running"
    })
    .await;
    assert_eq!(
        bed.log.events_of(&host),
        [
            "web Running",
            "web Stopped",
            "step 1",
            "end 1",
            "web Running"
        ],
        "on {host}"
    );
    let stopped_at = bed.log.event_at(&host, "web Stopped", 0).unwrap();
    // Nodes without VMs are drained at once: they all ran their step, with no VM event.
    for n in NODES.iter().filter(|n| **n != host) {
        assert_eq!(bed.log.events_of(n), ["step 1", "end 1"], "on {n}");
    }
    let (recs, log) = bed.timeline("r1").await;
    records::timeline::check(&recs, 1).unwrap();
    assert!(
        log.values().all(|n| *n == 1) && log.len() == NODES.len(),
        "{log:?}"
    );
    let assigned = recs
        .iter()
        .find(|r| r.node == host && r.what == records::ASSIGNED)
        .unwrap();
    // Assigned after the guest was reported stopped: its stop report was sent first.
    assert!(
        assigned.at > stopped_at,
        "{host} assigned at {} before its VM stopped at {stopped_at}",
        assigned.at
    );
    // A draining node takes the one slot: while its guest shut down no other node had a
    // step in flight.
    for n in NODES.iter().filter(|n| **n != host) {
        let at = |what: &str| {
            recs.iter()
                .find(|r| r.node == *n && r.what == what)
                .map(|r| r.at.clone())
                .unwrap()
        };
        let (start, end) = (at(records::ASSIGNED), at("succeeded"));
        assert!(
            !(start < stopped_at && stopped_at < end),
            "{n} was in flight ({start} .. {end}) while {host} drained ({stopped_at})"
        );
    }
}

#[tokio::test]
async fn rollout_drain_vms_fails_the_step_of_a_node_whose_vm_never_stops() {
    let bed = Bed::new(&[]).await;
    bed.log.vms_never_stop.store(true, Ordering::SeqCst);
    let host = running_vm(&bed, "web").await;
    // One failure allowed: the other nodes go on after the drain timed out.
    bed.apply(&drain_rollout("r1", 2, 1)).await;
    let cu = bed.wait_phase("r1", &["succeeded", "halted"]).await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    let row = row_of(&cu, &host);
    assert_eq!(row["phase"], "failed", "{row:#}");
    assert_eq!(row["code"], "DRAIN_TIMEOUT", "{row:#}");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("drainVms: VM(s) web still running 2 s after the node was cordoned"),
        "{reason}"
    );
    // The cordon is lifted after the failed step, so the VM is wanted Running again.
    let admin = &bed.admin;
    eventually("rollout cordons lifted", || async {
        let list: NodeList = admin.get_json("/v1/nodes").await.unwrap();
        list.items.iter().all(|n| n.cordons.rollout.is_none())
    })
    .await;
    assert_eq!(bed.log.events_of(&host), ["web Running"], "never stepped");
    let (recs, log) = bed.timeline("r1").await;
    records::timeline::check(&recs, 1).unwrap();
    // Never assigned and never activated; every other node was, once.
    let per = assigned_per_node(&recs);
    assert!(
        !per.contains_key(&host) && !log.contains_key(&host),
        "{per:?} {log:?}"
    );
    assert_eq!(per.len(), NODES.len() - 1, "{per:?}");
    assert!(per.values().all(|n| *n == 1));
}

#[tokio::test]
async fn rollout_drain_vms_on_rollback_cordons_the_node_and_stops_its_vm_around_the_rollback_step()
{
    let bed = Bed::new(&[]).await;
    let host = running_vm(&bed, "web").await;
    bed.apply(&drain_rollout("r1", 60, 0)).await;
    bed.wait_phase("r1", &["succeeded"]).await;
    let admin = &bed.admin;
    let vm_running = || async {
        let vm: Value = admin.get_json("/v1/vms/web").await.unwrap();
        vm["status"]["phase"] == "Running"
    };
    eventually("web running again after the update", vm_running).await;
    rollback(&bed, "r1").await.unwrap();
    // While the guest shuts down for the rollback step, the node is cordoned by the
    // rollout and its row says it drains (bounded: 300 polls of 20 ms).
    let mut seen_draining = false;
    for _ in 0..300 {
        let cu = bed.get("r1").await;
        let list: NodeList = admin.get_json("/v1/nodes").await.unwrap();
        let cordoned = list.items.iter().any(|n| {
            n.node_id == host
                && n.cordons
                    .rollout
                    .as_ref()
                    .is_some_and(|c| c.by == "clusterupdate/r1")
        });
        if cordoned && row_of(&cu, &host)["reason"] == "draining: waiting for VM(s) web to stop" {
            seen_draining = true;
            break;
        }
        if cu["status"]["phase"] == "rolled_back" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen_draining,
        "{host} was never seen draining for its rollback"
    );
    let cu = bed.wait_phase("r1", &["rolled_back", "failed"]).await;
    assert_eq!(cu["status"]["phase"], "rolled_back", "{cu:#}");
    assert_eq!(row_of(&cu, &host)["phase"], "rolled_back", "{cu:#}");
    eventually("web running again after the rollback", vm_running).await;
    eventually("rollout cordons lifted", || async {
        let list: NodeList = admin.get_json("/v1/nodes").await.unwrap();
        list.items.iter().all(|n| n.cordons.rollout.is_none())
    })
    .await;
    // Stopped before each step, started again after it: the update's and the rollback's.
    assert_eq!(
        bed.log.events_of(&host),
        [
            "web Running",
            "web Stopped",
            "step 1",
            "end 1",
            "web Running",
            "web Stopped",
            "step 2",
            "end 2",
            "web Running"
        ],
        "on {host}"
    );
    let second_stop = bed.log.event_at(&host, "web Stopped", 1).unwrap();
    let (recs, _) = bed.timeline("r1").await;
    records::timeline::check(&recs, 1).unwrap();
    let back = of_seq(&recs, records::ROLLBACK_SEQ);
    let assigned = back
        .iter()
        .find(|r| r.node == host && r.what == records::ASSIGNED)
        .unwrap();
    // The rollback step was assigned only after the guest was reported stopped.
    assert!(
        assigned.at > second_stop,
        "{host}'s rollback assigned at {} before its VM stopped at {second_stop}",
        assigned.at
    );
    // Every node was rolled back once.
    assert_eq!(assigned_per_node(&back).len(), NODES.len(), "{back:#?}");
    assert!(assigned_per_node(&back).values().all(|n| *n == 1));
}
