//! Rollouts end to end (issue 12) on the bed of `rollout_fleet_bed`: a real controller
//! in-process on 127.0.0.1 and five real agents on the real fleet flake, one test per
//! strategy and failure. What each node did is read back from its fake root (profile,
//! `run/current-system`, the boot loader state, the stand-ins' logs), the rollout's outcome
//! from the controller, and every test ends with [`Bed::finish`] (the timeline checker:
//! `maxUnavailable`, no node assigned or activated twice). The tests that kill a process
//! are in `rollout_fleet_kill`. Names say `with_fleet_flake`: they need `tests/support`.

use kcore_controller::rollout::records;

use crate::rollout_fleet_bed::*;

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_one_at_a_time_moves_five_real_agents_each_activated_once_with_fleet_flake() {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    bed.apply("u1", &r2).await;
    let done = bed.wait_done("u1").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    for id in NODES {
        let new = expected(&bed, &r2, id);
        let node = bed.node(id);
        assert_eq!(node.link("nix/var/nix/profiles/system"), new, "{id}");
        assert_eq!(node.link("run/current-system"), new, "{id}");
        assert_eq!(
            node.log("activations"),
            [format!("switch {}", new.display())],
            "{id} activated exactly once"
        );
    }
    let recs = bed.finish(&[("u1", 1)]).await;
    // Every node after the first prepared ahead (docs/rollouts.md, "Preparing ahead"):
    // told while the node before it activated, reporting its prepare, and activating only
    // once its own step was assigned.
    let first =
        |node: &str, what: &str| records::timeline::first(&recs, node, what).map(|r| r.at.clone());
    for (i, id) in NODES.iter().enumerate() {
        let ahead = first(id, records::PREPARE_AHEAD);
        assert_eq!(ahead.is_some(), i > 0, "{id}: {recs:#?}");
        let assigned = first(id, records::ASSIGNED).unwrap();
        assert!(
            first(id, "activating").unwrap() > assigned,
            "{id}: {recs:#?}"
        );
        if let Some(ahead) = ahead {
            let before = first(NODES[i - 1], "activating").unwrap();
            assert!(
                before <= ahead,
                "{id} told before {} activated",
                NODES[i - 1]
            );
            assert!(first(id, "prepared").is_some(), "{id}: {recs:#?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_a_failing_activation_halts_and_that_node_is_reverted_with_fleet_flake() {
    let Some((fleet, r1, r2)) = revisions(Some("node-2")) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    let installed = bed.node("node-2").link("run/current-system");
    bed.apply("u2", &r2).await;
    let done = bed.wait_done("u2").await;
    assert_eq!(done["status"]["phase"], "halted", "{done:#}");
    let failed = bed.node("node-2");
    assert_eq!(failed.link("run/current-system"), installed, "reverted");
    assert_eq!(failed.link("nix/var/nix/profiles/system"), installed);
    // One at a time: the nodes after the failed one never started.
    let started = bed.started();
    assert!(started.contains(&"node-2"), "{started:?}");
    assert_eq!(started.len(), 2, "halted after the failure: {started:?}");
    bed.finish(&[("u2", 1)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_an_agent_restarted_mid_step_reattaches_and_the_rollout_succeeds_with_fleet_flake()
 {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("open");
    let mut bed = Bed::new(fleet, &r1, Some(("node-3", &gate))).await;
    bed.apply("u3", &r2).await;
    // node-3's switch-to-configuration has started (it logged) and waits at the gate.
    bed.until_activating("node-3").await;
    let i = Bed::index("node-3");
    bed.nodes[i].stop().await;
    bed.nodes[i].start().await;
    std::fs::write(&gate, "").unwrap();
    let done = bed.wait_done("u3").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    for id in NODES {
        let new = expected(&bed, &r2, id);
        assert_eq!(bed.node(id).link("run/current-system"), new, "{id}");
        assert_eq!(
            bed.node(id).log("activations"),
            [format!("switch {}", new.display())],
            "{id} activated exactly once"
        );
    }
    bed.finish(&[("u3", 1)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_batch_and_canary_move_every_node_once_within_max_unavailable_with_fleet_flake()
 {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let r3 = fleet.commit(&hosts("r3", None));
    let bed = Bed::new(fleet, &r1, None).await;
    let batch = json!({"strategyType": "batch", "batchSize": 3, "maxUnavailable": 2});
    bed.apply_spec("batch", spec(&bed.fleet, &r2, batch, "auto", 0))
        .await;
    let done = bed.wait_done("batch").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    let canary =
        json!({"strategyType": "canary", "canaryCount": 1, "batchSize": 4, "maxUnavailable": 4});
    bed.apply_spec("canary", spec(&bed.fleet, &r3, canary, "auto", 0))
        .await;
    let done = bed.wait_done("canary").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    for id in NODES {
        let (two, three) = (expected(&bed, &r2, id), expected(&bed, &r3, id));
        assert_eq!(bed.node(id).link("run/current-system"), three, "{id}");
        assert_eq!(
            bed.node(id).log("activations"),
            [
                format!("switch {}", two.display()),
                format!("switch {}", three.display())
            ],
            "{id}: one activation per rollout"
        );
    }
    let canary_recs = bed.finish(&[("canary", 4), ("batch", 2)]).await;
    // The canary's step ended before any other node was assigned.
    let at = |node: &str, what: &str| {
        canary_recs
            .iter()
            .find(|r| r.node == node && r.what == what)
            .map(|r| r.at.clone())
            .unwrap()
    };
    for id in &NODES[1..] {
        assert!(
            at("node-1", "succeeded") <= at(id, records::ASSIGNED),
            "{id} started before the canary ended"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_a_host_missing_at_the_rev_fails_prepare_and_halts_a_batch_with_fleet_flake()
{
    let Some((fleet, r1, r2)) = revisions_with(|id, file| {
        if id == "node-3" {
            *file = Value::Null;
        }
    }) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    let installed = bed.node("node-3").link("run/current-system");
    let batch = json!({"strategyType": "batch", "batchSize": 2, "maxUnavailable": 2});
    bed.apply_spec("p", spec(&bed.fleet, &r2, batch, "auto", 0))
        .await;
    let done = bed.wait_done("p").await;
    assert_eq!(done["status"]["phase"], "halted", "{done:#}");
    let failed = row(&done, "node-3");
    assert_eq!(failed["phase"], "failed", "{done:#}");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("nix build failed"), "{reason}");
    // Nothing changed on node-3; the third batch (node-5) never started.
    assert_eq!(bed.node("node-3").link("run/current-system"), installed);
    assert!(bed.node("node-3").log("activations").is_empty());
    assert!(!bed.started().contains(&"node-5"), "{:?}", bed.started());
    assert_eq!(row(&done, "node-5")["phase"], "pending");
    bed.finish(&[("p", 2)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_a_degraded_canary_reverts_and_halts_before_the_rest_with_fleet_flake() {
    let Some((fleet, r1, r2)) = revisions_with(|id, file| {
        if id == "node-1" {
            file["health"] = json!("degraded");
        }
    }) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    let installed = bed.node("node-1").link("run/current-system");
    // A canary that fails halts even with failures to spare.
    let canary =
        json!({"strategyType": "canary", "canaryCount": 1, "batchSize": 2, "maxUnavailable": 2});
    bed.apply_spec("d", spec(&bed.fleet, &r2, canary, "auto", 3))
        .await;
    let done = bed.wait_done("d").await;
    assert_eq!(done["status"]["phase"], "halted", "{done:#}");
    assert_eq!(row(&done, "node-1")["phase"], "reverted", "{done:#}");
    let report = bed.step_report("node-1");
    assert_eq!(report.failed_units, ["kcore-fleet-probe.service"]);
    assert!(report.reason.unwrap().contains("degraded"));
    assert_eq!(bed.node("node-1").link("run/current-system"), installed);
    assert_eq!(bed.started(), ["node-1"]);
    bed.finish(&[("d", 2)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_health_that_never_arrives_reverts_one_node_within_the_failure_budget_with_fleet_flake()
 {
    let Some((fleet, r1, r2)) = revisions_with(|id, file| {
        if id == "node-4" {
            file["health"] = json!("never");
        }
    }) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    let installed = bed.node("node-4").link("run/current-system");
    let batch = json!({"strategyType": "batch", "batchSize": 5, "maxUnavailable": 5});
    bed.apply_spec("h", spec(&bed.fleet, &r2, batch, "auto", 1))
        .await;
    let done = bed.wait_done("h").await;
    // One failure is within maxFailures 1: the rollout ends succeeded with node-4 reverted.
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    let reverted = row(&done, "node-4");
    assert_eq!(reverted["phase"], "reverted", "{done:#}");
    let reason = reverted["reason"].as_str().unwrap();
    assert!(reason.contains("not healthy within 3 s"), "{reason}");
    assert_eq!(bed.node("node-4").link("run/current-system"), installed);
    for id in ["node-1", "node-2", "node-3", "node-5"] {
        assert_eq!(row(&done, id)["phase"], "succeeded", "{id}");
        assert_eq!(
            bed.node(id).link("run/current-system"),
            expected(&bed, &r2, id)
        );
    }
    bed.finish(&[("h", 5)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_a_kernel_change_is_a_trial_boot_kept_when_healthy_and_reverted_when_not_with_fleet_flake()
 {
    let Some((fleet, r1, r2)) = revisions_with(|id, file| match id {
        "node-1" => file["kernel"] = json!("6.12.1"),
        "node-2" => {
            file["kernel"] = json!("6.12.1");
            file["health"] = json!("never");
        }
        _ => {}
    }) else {
        return;
    };
    let mut bed = Bed::new(fleet, &r1, None).await;
    let installed = bed.node("node-2").link("run/current-system");
    // As on a real node, `systemctl reboot` does not return before the agent is stopped:
    // the activation never records its end, and the agent after the boot re-attaches it.
    for id in ["node-1", "node-2"] {
        std::fs::write(bed.node(id).root("run/kcore-stand-in/reboot-blocks"), "").unwrap();
    }
    let batch = json!({"strategyType": "batch", "batchSize": 5, "maxUnavailable": 5});
    bed.apply_spec("k", spec(&bed.fleet, &r2, batch, "auto", 1))
        .await;
    let done = bed.drive_reboots("k").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    // node-1: booted once into the new kernel, healthy, now the default entry.
    let new = expected(&bed, &r2, "node-1");
    let one = bed.node("node-1");
    assert_eq!(row(&done, "node-1")["phase"], "succeeded", "{done:#}");
    assert_eq!(one.link("run/booted-system"), new);
    assert_eq!(one.log("activations"), [format!("boot {}", new.display())]);
    assert_eq!(one.log("reboots").len(), 1);
    assert_eq!(
        one.efi("LoaderEntryDefault").as_deref(),
        Some("nixos-generation-2.conf")
    );
    // node-2: the trial boot never became healthy: the previous generation back, booted
    // by exactly one more reboot.
    let two = bed.node("node-2");
    assert_eq!(row(&done, "node-2")["phase"], "reverted", "{done:#}");
    assert_eq!(two.link("run/booted-system"), installed);
    assert_eq!(two.link("nix/var/nix/profiles/system"), installed);
    assert_eq!(
        two.log("reboots").len(),
        2,
        "one trial boot, one revert boot: {:?} {:?}",
        two.log("bootctl"),
        two.log("activations")
    );
    assert_eq!(
        two.efi("LoaderEntryDefault").as_deref(),
        Some("nixos-generation-1.conf")
    );
    // The others switched without a reboot.
    for id in ["node-3", "node-4", "node-5"] {
        assert!(bed.node(id).log("reboots").is_empty(), "{id}");
    }
    bed.finish(&[("k", 5)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_cancel_lets_the_node_mid_activation_finish_and_starts_no_other_with_fleet_flake()
 {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("open");
    let bed = Bed::new(fleet, &r1, Some(("node-2", &gate))).await;
    bed.apply("c", &r2).await;
    bed.until_activating("node-2").await;
    let _: Value = bed
        .admin
        .post_json("/v1/clusterupdates/c/cancel", &json!({}))
        .await
        .unwrap();
    let done = bed.wait_phase("c", &["cancelled"]).await;
    std::fs::write(&gate, "").unwrap();
    // node-2 finishes its step on its own; nothing after it starts.
    let new = expected(&bed, &r2, "node-2");
    bed.until("node-2 on the new system", |bed| {
        let new = new.clone();
        async move { (bed.node("node-2").link("run/current-system") == new).then_some(()) }
    })
    .await;
    assert_eq!(bed.started(), ["node-1", "node-2"], "{done:#}");
    bed.finish(&[("c", 1)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_manual_approval_holds_every_node_until_approved_with_fleet_flake() {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    let canary =
        json!({"strategyType": "canary", "canaryCount": 2, "batchSize": 3, "maxUnavailable": 3});
    bed.apply_spec("m", spec(&bed.fleet, &r2, canary, "manual", 0))
        .await;
    bed.wait_phase("m", &["awaiting_approval"]).await;
    // Held: a heartbeat round later still nothing started.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(bed.started().is_empty(), "{:?}", bed.started());
    assert_eq!(
        bed.get("m").await.unwrap()["status"]["phase"],
        "awaiting_approval"
    );
    let _: Value = bed
        .admin
        .post_json("/v1/clusterupdates/m/approve", &json!({}))
        .await
        .unwrap();
    let done = bed.wait_done("m").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    assert_eq!(bed.started().len(), 5);
    bed.finish(&[("m", 3)]).await;
}

/// node-1 hosts the controller: its switch restarts the controller's unit. The test stops
/// the controller while node-1's switch-to-configuration runs and starts it again after,
/// as systemd would; node-1's health gate waits for a controller to answer, the engine
/// carries on from its database, and no node runs twice.
#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_the_controllers_own_node_restarts_it_mid_step_and_the_rollout_resumes_with_fleet_flake()
 {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("open");
    let mut bed = Bed::new(fleet, &r1, Some(("node-1", &gate))).await;
    // Time enough for the controller to come back before node-1's gate gives up.
    let mut own = spec(&bed.fleet, &r2, one_at_a_time(), "auto", 0);
    own["activation"]["healthTimeoutSeconds"] = json!(60);
    bed.apply_spec("own", own).await;
    bed.until_activating("node-1").await;
    bed.stop_controller().await;
    std::fs::write(&gate, "").unwrap();
    // The new system is in place but the gate has not passed: no controller answers.
    let new = expected(&bed, &r2, "node-1");
    bed.until("node-1 switched", |bed| {
        let new = new.clone();
        async move {
            (system_link(bed.node("node-1"), "run/current-system") == Some(new)).then_some(())
        }
    })
    .await;
    bed.start_controller(None).await;
    let done = bed.wait_done("own").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    for id in NODES {
        let new = expected(&bed, &r2, id);
        assert_eq!(bed.node(id).link("run/current-system"), new, "{id}");
        assert_eq!(
            bed.node(id).log("activations"),
            [format!("switch {}", new.display())],
            "{id} activated exactly once"
        );
    }
    bed.finish(&[("own", 1)]).await;
}

/// The health gate's third condition: a node that cannot reach a controller after its
/// switch is not healthy, and reverts on its own (the report waits for the controller).
#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_a_controller_unreachable_during_verify_reverts_the_node_with_fleet_flake() {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("open");
    let mut bed = Bed::new(fleet, &r1, Some(("node-1", &gate))).await;
    let installed = bed.node("node-1").link("run/current-system");
    bed.apply("unreach", &r2).await;
    bed.until_activating("node-1").await;
    bed.stop_controller().await;
    std::fs::write(&gate, "").unwrap();
    // The revert's switch is the stand-in's second call.
    bed.until("node-1 reverted", |bed| {
        let installed = installed.clone();
        async move {
            (bed.node("node-1").log("activations").len() == 2
                && system_link(bed.node("node-1"), "run/current-system") == Some(installed))
            .then_some(())
        }
    })
    .await;
    let report = bed
        .until("the revert reported on the node", |bed| async move {
            let r = bed.step_report("node-1");
            (r.phase == kcore_api::rollout::StepPhase::Reverted).then_some(r)
        })
        .await;
    let reason = report.reason.unwrap();
    assert!(
        reason.contains("not healthy within 3 s") && reason.contains("cannot reach a controller"),
        "{reason}"
    );
    // Back online, the controller learns of the revert and halts the rollout.
    bed.start_controller(None).await;
    let done = bed.wait_done("unreach").await;
    assert_eq!(done["status"]["phase"], "halted", "{done:#}");
    assert_eq!(row(&done, "node-1")["phase"], "reverted");
    assert_eq!(bed.started(), ["node-1"]);
    bed.finish(&[("unreach", 1)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_rollback_returns_five_real_agents_to_their_installed_generation_in_reverse_with_fleet_flake()
 {
    let Some((fleet, r1, r2)) = revisions(None) else {
        return;
    };
    let bed = Bed::new(fleet, &r1, None).await;
    let installed: Vec<PathBuf> = NODES
        .iter()
        .map(|id| bed.node(id).link("run/current-system"))
        .collect();
    bed.apply("u4", &r2).await;
    let done = bed
        .wait_phase("u4", &["succeeded", "halted", "failed"])
        .await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    let _: Value = bed
        .admin
        .post_json("/v1/clusterupdates/u4/rollback", &json!({}))
        .await
        .unwrap();
    let back = bed.wait_phase("u4", &["rolled_back", "failed"]).await;
    assert_eq!(back["status"]["phase"], "rolled_back", "{back:#}");
    let rows = back["status"]["nodes"].as_array().unwrap();
    for (i, id) in NODES.iter().enumerate() {
        let new = expected(&bed, &r2, id);
        let node = bed.node(id);
        // The installed system runs again, through the profile (a new generation).
        assert_eq!(node.link("run/current-system"), installed[i], "{id}");
        assert_eq!(
            node.link("nix/var/nix/profiles/system"),
            installed[i],
            "{id}"
        );
        assert_eq!(
            node.log("activations"),
            [
                format!("switch {}", new.display()),
                format!("switch {}", installed[i].display())
            ],
            "{id}: updated once, rolled back once"
        );
        let row = &rows[i];
        assert_eq!(row["phase"], "rolled_back", "{row:#}");
        assert_eq!(
            row["previous"]["storePath"],
            installed[i].display().to_string(),
            "{row:#}"
        );
        assert_eq!(
            row["generation"]["storePath"],
            installed[i].display().to_string(),
            "{row:#}"
        );
    }
    // Reverse order, one at a time: each rollback started after the one before it ended.
    let mut spans: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["nodeId"].as_str().unwrap(),
                r["rollbackStartedAt"].as_str().unwrap(),
                r["rollbackFinishedAt"].as_str().unwrap(),
            )
        })
        .collect();
    spans.sort_by_key(|(_, started, _)| *started);
    let order: Vec<&str> = spans.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(order, ["node-5", "node-4", "node-3", "node-2", "node-1"]);
    assert!(spans.windows(2).all(|w| w[0].2 <= w[1].1), "{spans:?}");
    bed.finish(&[("u4", 1)]).await;
}
