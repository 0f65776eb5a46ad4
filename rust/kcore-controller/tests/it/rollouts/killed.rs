//! Real controller processes killed with SIGKILL mid-rollout: a restart resumes, a second
//! controller takes over the lease; neither activates a node twice.

use super::*;

fn auto_one_at_a_time(name: &str) -> Value {
    rollout(name, json!({"strategyType": "one-at-a-time"}), "auto", 0)
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_controller_process_killed_9_mid_rollout_and_restarted_resumes_without_activating_twice()
 {
    let mut bed = ProcBed::new(&["ctl1"], Duration::from_millis(500)).await;
    let _: Value = bed.admins[0]
        .put_json("/v1/clusterupdates/r1", &auto_one_at_a_time("r1"))
        .await
        .unwrap();
    let bed_ref = &bed;
    eventually("two nodes done", || async {
        bed_ref.succeeded(0, "r1").await >= 2
    })
    .await;
    bed.procs[0].take().unwrap().kill9();
    bed.procs[0] = Some(Proc::start(&bed.cl, &bed.configs[0]));
    let cu = bed
        .wait_phase(0, "r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    // The restarted controller is the same owner, under the same epoch.
    assert_eq!(cu["status"]["owner"]["controllerId"], "ctl1");
    assert_eq!(cu["status"]["owner"]["epoch"], 1);
    let (recs, log) = bed.timeline(0, "r1");
    let per = assigned_per_node(&recs);
    assert!(per.len() == 5 && per.values().all(|n| *n == 1), "{recs:#?}");
    assert!(log.len() == 5 && log.values().all(|n| *n == 1), "{log:?}");
    assert_eq!(max_unavailable(&recs), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_owner_controller_killed_9_is_taken_over_by_a_second_controller_after_its_lease() {
    // 1.5 s activations: the kill lands mid-rollout even with ctl2 a pull (1 s) behind.
    let mut bed = ProcBed::new(&["ctl1", "ctl2"], Duration::from_millis(1500)).await;
    let _: Value = bed.admins[0]
        .put_json("/v1/clusterupdates/r1", &auto_one_at_a_time("r1"))
        .await
        .unwrap();
    let bed_ref = &bed;
    // ctl1 owns it (applied there); wait until ctl2 has replicated two finished nodes, so
    // the test kills the owner mid-rollout with its peer caught up on what it did.
    eventually("ctl2 sees two nodes done", || async {
        bed_ref.succeeded(1, "r1").await >= 2
    })
    .await;
    let before = bed.wait_phase(1, "r1", &["rolling_out"]).await;
    assert_eq!(
        before["status"]["owner"]["controllerId"], "ctl1",
        "{before:#}"
    );
    bed.procs[0].take().unwrap().kill9();
    // The nodes fail over to ctl2; ctl2 takes the rollout when ctl1's lease lapses.
    let cu = bed
        .wait_phase(1, "r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    assert_eq!(cu["status"]["owner"]["controllerId"], "ctl2", "{cu:#}");
    assert_eq!(cu["status"]["owner"]["epoch"], 2, "{cu:#}");
    let (recs, log) = bed.timeline(1, "r1");
    let per = assigned_per_node(&recs);
    assert!(per.len() == 5 && per.values().all(|n| *n == 1), "{recs:#?}");
    // Some nodes were assigned by the deposed owner and some by the new one.
    assert_eq!(records::assigned_by(&recs), ["ctl1", "ctl2"], "{recs:#?}");
    assert!(log.len() == 5 && log.values().all(|n| *n == 1), "{log:?}");
    assert_eq!(max_unavailable(&recs), 1, "{recs:#?}");
}
