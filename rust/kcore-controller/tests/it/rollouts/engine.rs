//! Scheduling: one-at-a-time, batch limits on the timeline, the failure budget, manual
//! approval and cancel, a controller restart mid-rollout.

use super::*;

#[tokio::test]
async fn rollout_one_at_a_time_updates_every_node_once() {
    let bed = Bed::new(&[]).await;
    bed.apply(&rollout(
        "r1",
        json!({"strategyType": "one-at-a-time"}),
        "auto",
        0,
    ))
    .await;
    let cu = bed
        .wait_phase("r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    assert!(
        node_phases(&cu).values().all(|p| p == "succeeded"),
        "{cu:#}"
    );
    let phases: Vec<&str> = cu["status"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["pending", "rolling_out", "succeeded"]);
    let (recs, log) = bed.timeline("r1").await;
    assert_eq!(max_unavailable(&recs), 1);
    assert!(
        assigned_per_node(&recs).values().all(|n| *n == 1),
        "{recs:#?}"
    );
    assert_eq!(log.len(), 5);
    assert!(log.values().all(|n| *n == 1), "{log:?}");
}

#[tokio::test]
async fn rollout_batch_keeps_max_unavailable_on_the_timeline() {
    let bed = Bed::new(&[]).await;
    let strategy = json!({"strategyType": "batch", "batchSize": 3, "maxUnavailable": 2});
    bed.apply(&rollout("r1", strategy, "auto", 0)).await;
    let cu = bed
        .wait_phase("r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    let (recs, log) = bed.timeline("r1").await;
    // Two at a time at most, and two did run together (the limit, not one-at-a-time).
    assert_eq!(max_unavailable(&recs), 2, "{recs:#?}");
    assert!(log.values().all(|n| *n == 1) && log.len() == 5, "{log:?}");
}

#[tokio::test]
async fn rollout_halts_when_a_node_reverts_over_the_failure_budget() {
    // n1 is first in node order and reverts: nothing else starts.
    let bed = Bed::new(&["n1"]).await;
    bed.apply(&rollout(
        "r1",
        json!({"strategyType": "one-at-a-time"}),
        "auto",
        0,
    ))
    .await;
    let cu = bed
        .wait_phase("r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "halted", "{cu:#}");
    let message = cu["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("n1: activation script failed (exit 2)"),
        "{message}"
    );
    let phases = node_phases(&cu);
    assert_eq!(phases["n1"], "reverted");
    // The agent's code is the row's; rows of nodes that did not fail carry none.
    assert_eq!(row_of(&cu, "n1")["code"], "ACTIVATION_FAILED", "{cu:#}");
    assert!(row_of(&cu, "n2").get("code").is_none(), "{cu:#}");
    assert!(
        ["n2", "n3", "n4", "n5"]
            .iter()
            .all(|n| phases[*n] == "pending"),
        "{phases:?}"
    );
    let (recs, log) = bed.timeline("r1").await;
    assert_eq!(assigned_per_node(&recs).keys().collect::<Vec<_>>(), ["n1"]);
    assert_eq!(log.len(), 1, "{log:?}");
}

#[tokio::test]
async fn rollout_waits_for_manual_approval_and_cancel_stops_new_steps() {
    let bed = Bed::new(&[]).await;
    bed.apply(&rollout(
        "r1",
        json!({"strategyType": "one-at-a-time"}),
        "manual",
        0,
    ))
    .await;
    let cu = bed.wait_phase("r1", &["awaiting_approval"]).await;
    assert!(cu["status"].get("nodes").is_none(), "{cu:#}");
    // Approving starts it; cancelling after the first node began stops the rest.
    let _: Value = post(&bed.admin, "/v1/clusterupdates/r1/approve")
        .await
        .unwrap();
    let admin = &bed.admin;
    eventually("a first node activating", || async {
        let cu: Value = admin.get_json("/v1/clusterupdates/r1").await.unwrap();
        cu["status"]["nodes"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["phase"] != "pending"))
    })
    .await;
    let _: Value = post(&bed.admin, "/v1/clusterupdates/r1/cancel")
        .await
        .unwrap();
    let cu = bed.wait_phase("r1", &["cancelled"]).await;
    assert!(cu["status"]["approvedAt"].is_string() && cu["status"]["cancelledAt"].is_string());
    // Nothing was assigned after the cancel: the rows the engine wrote as it cancelled
    // name every node it had started, and at least one node never started.
    let started = cu["status"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["startedAt"].is_string())
        .count();
    let (recs, _) = bed.timeline("r1").await;
    assert_eq!(assigned_per_node(&recs).len(), started, "{recs:#?}");
    assert!(started < NODES.len());
}

#[tokio::test]
async fn rollout_resumes_after_a_controller_restart_without_activating_twice() {
    let mut bed = Bed::new(&[]).await;
    bed.apply(&rollout(
        "r1",
        json!({"strategyType": "one-at-a-time"}),
        "auto",
        0,
    ))
    .await;
    let admin = &bed.admin;
    eventually("two nodes done", || async {
        let cu: Value = admin.get_json("/v1/clusterupdates/r1").await.unwrap();
        cu["status"]["nodes"]
            .as_array()
            .is_some_and(|rows| rows.iter().filter(|r| r["phase"] == "succeeded").count() >= 2)
    })
    .await;
    // Stop it and start it again on the same port and database: the nodes keep polling
    // and reporting (retrying while it is down).
    bed.ctl.take().unwrap().stop().await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", bed.port))
        .await
        .unwrap();
    bed.ctl = Some(Running::start_on(listener, bed.cl.config(false)));
    let cu = bed
        .wait_phase("r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    let (recs, log) = bed.timeline("r1").await;
    assert!(
        assigned_per_node(&recs).values().all(|n| *n == 1) && assigned_per_node(&recs).len() == 5,
        "{recs:#?}"
    );
    assert!(log.values().all(|n| *n == 1) && log.len() == 5, "{log:?}");
    assert_eq!(max_unavailable(&recs), 1);
}
