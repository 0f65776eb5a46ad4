//! Rollback of an updated or halted rollout, its refusals, and spec changes after start.

use super::*;

/// The HTTP status of an answered error (0 when there was no answer).
fn http_status(err: &ClientError) -> u16 {
    match err {
        ClientError::Api { status, .. } => status.as_u16(),
        _ => 0,
    }
}

#[tokio::test]
async fn rollout_rollback_returns_every_updated_node_in_reverse_order_under_the_batch_limits() {
    let bed = Bed::new(&[]).await;
    let strategy = json!({"strategyType": "batch", "batchSize": 2, "maxUnavailable": 2});
    bed.apply(&rollout("r1", strategy, "auto", 0)).await;
    let cu = bed
        .wait_phase("r1", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(cu["status"]["phase"], "succeeded", "{cu:#}");
    let cu = rollback(&bed, "r1").await.unwrap();
    assert!(cu["status"]["rollbackAt"].is_string(), "{cu:#}");
    let cu = bed.wait_phase("r1", &["rolled_back", "failed"]).await;
    assert_eq!(cu["status"]["phase"], "rolled_back", "{cu:#}");
    for row in cu["status"]["nodes"].as_array().unwrap() {
        let id = row["nodeId"].as_str().unwrap();
        assert_eq!(row["phase"], "rolled_back", "{row:#}");
        // Generation before the update, and the one the rollback made (the old system).
        assert_eq!(row["previous"]["number"], 1, "{row:#}");
        assert_eq!(row["generation"]["number"], 3, "{row:#}");
        assert_eq!(
            row["generation"]["storePath"],
            format!("/nix/store/{id}-old-system")
        );
        assert!(row["startedAt"].is_string() && row["finishedAt"].is_string());
        assert!(row["rollbackStartedAt"].is_string() && row["rollbackFinishedAt"].is_string());
    }
    let phases: Vec<&str> = cu["status"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "pending",
            "rolling_out",
            "succeeded",
            "rolling_back",
            "rolled_back"
        ]
    );
    let rolled: Vec<(String, String)> = bed.log.rollbacks.lock().unwrap().clone();
    let (recs, log) = bed.timeline("r1").await;
    // Each node's previous system was activated, once.
    assert_eq!(rolled.len(), 5, "{rolled:?}");
    for (id, path) in &rolled {
        assert_eq!(path, &format!("/nix/store/{id}-old-system"));
    }
    // Reverse order in waves of two: {n5, n4}, {n3, n2}, {n1}, each wave after the last.
    let mut back: Vec<&records::StepRecord> = recs
        .iter()
        .filter(|r| r.seq == records::ROLLBACK_SEQ && r.what == records::ASSIGNED)
        .collect();
    back.sort_by(|a, b| a.at.cmp(&b.at));
    let order: Vec<&str> = back.iter().map(|r| r.node.as_str()).collect();
    let waves: Vec<Vec<&str>> = order
        .chunks(2)
        .map(|w| {
            let mut w = w.to_vec();
            w.sort();
            w
        })
        .collect();
    assert_eq!(waves, [vec!["n4", "n5"], vec!["n2", "n3"], vec!["n1"]]);
    assert!(max_unavailable(&of_seq(&recs, records::ROLLBACK_SEQ)) <= 2);
    assert!(max_unavailable(&of_seq(&recs, records::UPDATE_SEQ)) <= 2);
    for seq in [records::UPDATE_SEQ, records::ROLLBACK_SEQ] {
        let per = assigned_per_node(&of_seq(&recs, seq));
        assert!(per.len() == 5 && per.values().all(|n| *n == 1), "{per:?}");
    }
    assert!(log.values().all(|n| *n == 1) && log.len() == 5, "{log:?}");
}

#[tokio::test]
async fn rollout_rollback_of_a_halted_rollout_returns_only_the_nodes_it_updated() {
    // n3 reverts: n1 and n2 were updated, n4 and n5 never started.
    let bed = Bed::new(&["n3"]).await;
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
    rollback(&bed, "r1").await.unwrap();
    let cu = bed.wait_phase("r1", &["rolled_back", "failed"]).await;
    assert_eq!(cu["status"]["phase"], "rolled_back", "{cu:#}");
    let phases = node_phases(&cu);
    assert_eq!(phases["n1"], "rolled_back");
    assert_eq!(phases["n2"], "rolled_back");
    assert_eq!(
        phases["n3"], "reverted",
        "reverted on its own, nothing to undo"
    );
    // Neither n4 (which may have prepared ahead while n3 activated) nor n5 was started.
    assert_never_started(&cu, "n4");
    assert_eq!(phases["n5"], "pending");
    let rolled: Vec<String> = bed
        .log
        .rollbacks
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(rolled, ["n2", "n1"], "reverse order, one at a time");
    let (recs, _) = bed.timeline("r1").await;
    assert_eq!(max_unavailable(&of_seq(&recs, records::ROLLBACK_SEQ)), 1);
}

#[tokio::test]
async fn rollout_rollback_is_refused_before_any_node_started() {
    let bed = Bed::new(&[]).await;
    bed.apply(&rollout(
        "r1",
        json!({"strategyType": "one-at-a-time"}),
        "manual",
        0,
    ))
    .await;
    bed.wait_phase("r1", &["awaiting_approval"]).await;
    let err = rollback(&bed, "r1").await.unwrap_err();
    assert_eq!(http_status(&err), 409, "{err}");
    assert!(
        err.to_string()
            .contains("nothing to roll back; cancel it instead"),
        "{err}"
    );
    let cu = bed.get("r1").await;
    assert!(cu["status"].get("rollbackAt").is_none(), "{cu:#}");
    let err = rollback(&bed, "nope").await.unwrap_err();
    assert_eq!(http_status(&err), 404, "{err}");
}

#[tokio::test]
async fn rollout_spec_change_is_refused_once_it_started_but_an_unchanged_apply_is_fine() {
    let bed = Bed::with(&[], Duration::from_secs(1)).await;
    let original = rollout("r1", json!({"strategyType": "one-at-a-time"}), "manual", 0);
    let mut changed = original.clone();
    changed["spec"]["target"]["flakeRev"] = json!("89abcdef0123456789abcdef0123456789abcdef");
    bed.apply(&original).await;
    bed.wait_phase("r1", &["awaiting_approval"]).await;
    // Not started yet: a change is taken (and changed back).
    bed.apply(&changed).await;
    bed.apply(&original).await;
    let _: Value = post(&bed.admin, "/v1/clusterupdates/r1/approve")
        .await
        .unwrap();
    bed.wait_phase("r1", &["rolling_out"]).await;
    let admin = &bed.admin;
    let put = |body: Value| async move {
        admin
            .put_json::<_, Value>("/v1/clusterupdates/r1", &body)
            .await
    };
    // The same document again: idempotent, nothing changes.
    let same = put(original.clone()).await.unwrap();
    assert_eq!(same["changes"], json!([]), "{same:#}");
    let err = put(changed.clone()).await.unwrap_err();
    assert_eq!(http_status(&err), 409, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("is rolling_out") && text.contains("kctl update cluster cancel r1"),
        "{text}"
    );
    // A dry run is refused the same way.
    let dry = bed
        .admin
        .put_json::<_, Value>("/v1/clusterupdates/r1?dryRun=server", &changed)
        .await
        .unwrap_err();
    assert_eq!(http_status(&dry), 409, "{dry}");
    let _: Value = post(&bed.admin, "/v1/clusterupdates/r1/cancel")
        .await
        .unwrap();
    bed.wait_phase("r1", &["cancelled"]).await;
    let err = put(changed).await.unwrap_err();
    assert!(err.to_string().contains("under a new name"), "{err}");
    let cu = bed.get("r1").await;
    assert_eq!(
        cu["spec"]["target"]["flakeRev"], REV,
        "the stored spec kept"
    );
}
