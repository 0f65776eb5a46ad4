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
    let (recs, _) = run_checked(bed, strategy, 2).await;
    // Two at a time at most (checked by run_checked), and two did run together (the
    // limit, not one-at-a-time).
    assert_eq!(max_unavailable(&recs), 2, "{recs:#?}");
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
    // n2, the next wave, was never started.
    assert_never_started(&cu, "n2");
    assert!(
        ["n3", "n4", "n5"].iter().all(|n| phases[*n] == "pending"),
        "{phases:?}"
    );
    let (recs, log) = bed.timeline("r1").await;
    assert_eq!(assigned_per_node(&recs).keys().collect::<Vec<_>>(), ["n1"]);
    assert_eq!(log.len(), 1, "{log:?}");
}

/// When `node`'s first record `what` was written.
fn when(recs: &[records::StepRecord], node: &str, what: &str) -> String {
    records::timeline::first(recs, node, what)
        .map(|r| r.at.clone())
        .unwrap_or_else(|| panic!("{node} has no {what} record: {recs:#?}"))
}

/// Runs `strategy` as rollout r1 on `bed` to its success, checks its timeline (`cap`, no
/// node assigned, told to prepare ahead or activated twice, each activated once), and
/// returns its records with the nodes that prepared ahead.
async fn run_checked(
    bed: Bed,
    strategy: Value,
    cap: usize,
) -> (Vec<records::StepRecord>, Vec<String>) {
    bed.apply(&rollout("r1", strategy, "auto", 0)).await;
    let cu = bed
        .wait_phase("r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    let (recs, log) = bed.timeline("r1").await;
    records::timeline::check(&recs, cap).unwrap_or_else(|e| panic!("{e}: {recs:#?}"));
    assert!(log.values().all(|n| *n == 1) && log.len() == 5, "{log:?}");
    let ahead = records::timeline::count_per_node(&recs, records::PREPARE_AHEAD);
    (recs, ahead.into_keys().collect())
}

#[tokio::test]
async fn the_next_wave_prepares_while_the_current_one_activates() {
    // Waves [n1 n2] [n3 n4] [n5]; a 1 s activation leaves the next wave time to prepare.
    let bed = Bed::with(&[], Duration::from_secs(1)).await;
    let strategy = json!({"strategyType": "batch", "batchSize": 2, "maxUnavailable": 2});
    let (recs, ahead) = run_checked(bed, strategy, 2).await;
    assert_eq!(ahead, ["n3", "n4", "n5"], "{recs:#?}");
    let waves: [(&[&str], &[&str]); 2] = [(&["n1", "n2"], &["n3", "n4"]), (&["n3", "n4"], &["n5"])];
    for (current, next) in waves {
        let activated: Vec<String> = current
            .iter()
            .map(|n| when(&recs, n, "activating"))
            .collect();
        let ended: Vec<String> = current
            .iter()
            .map(|n| when(&recs, n, "succeeded"))
            .collect();
        for n in next {
            let ahead = when(&recs, n, records::PREPARE_AHEAD);
            // Told once the current wave activates, prepared before it ends, and assigned
            // (taking its `maxUnavailable` slot) only after it ended.
            assert!(activated.iter().all(|a| *a <= ahead), "{n}: {recs:#?}");
            assert!(
                ended.iter().all(|e| when(&recs, n, "prepared") < *e),
                "{n}: {recs:#?}"
            );
            assert!(
                ended.iter().all(|e| *e <= when(&recs, n, "assigned")),
                "{n}: {recs:#?}"
            );
        }
    }
}

#[tokio::test]
async fn an_agent_without_the_prepare_ahead_capability_prepares_in_its_own_step() {
    // n2 plays an older agent: told `prepareOnly` it would activate before its turn.
    let bed = Bed::with_old_agents(&[], Duration::from_millis(500), &["n2"]).await;
    let (recs, ahead) = run_checked(bed, json!({"strategyType": "one-at-a-time"}), 1).await;
    assert_eq!(ahead, ["n3", "n4", "n5"], "{recs:#?}");
    // n2 prepared in its own step, after n1 ended.
    assert!(when(&recs, "n1", "succeeded") <= when(&recs, "n2", "preparing"));
}

#[tokio::test]
async fn nothing_prepares_ahead_of_the_canaries_ending() {
    // Waves [n1] (canary) [n2 n3] [n4 n5].
    let bed = Bed::with(&[], Duration::from_secs(1)).await;
    let strategy =
        json!({"strategyType": "canary", "canaryCount": 1, "batchSize": 2, "maxUnavailable": 2});
    let (recs, ahead) = run_checked(bed, strategy, 2).await;
    // The wave after the canary prepares in its own steps, after the canary ended.
    let canary_ended = when(&recs, "n1", "succeeded");
    assert_eq!(ahead, ["n4", "n5"], "{recs:#?}");
    for n in ["n2", "n3"] {
        assert!(
            canary_ended <= when(&recs, n, "preparing"),
            "{n} prepared before the canary ended: {recs:#?}"
        );
    }
    // After the canaries, the pipeline runs as in a batch.
    for n in ["n4", "n5"] {
        assert!(
            when(&recs, n, "prepared") < when(&recs, "n2", "succeeded"),
            "{n}: {recs:#?}"
        );
    }
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
