//! apply-nix through the systemd-run, systemctl and nixos-rebuild stand-ins (a real `nix
//! build` of a local test flake): validation, writes, test then switch, one rebuild at a
//! time, results across a restart, timeouts that stop the unit.

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_nix_validates_writes_and_rebuilds_with_nixos_rebuild_stand_in() {
    let Some(bed) = nix_bed(None).await else {
        return;
    };
    let config_path = bed.node.path("flake/kcore-node.nix");

    // Invalid Nix is refused before anything is written.
    for (bad, what) in [
        ("{ ... }: { networking.hostName = ; }", "does not parse"),
        ("{ ... }: undefinedThing", "does not evaluate"),
        ("42", "must be a function"),
    ] {
        let err = bed
            .admin
            .post_json::<_, OperationStarted>("/v1/nix/apply", &nix_req(bad, false))
            .await
            .unwrap_err();
        assert_eq!(code(&err), "NIX_INVALID", "{bad}");
        assert!(err.to_string().contains(what), "{bad}: {err}");
    }
    assert!(!config_path.exists());

    // test, then switch, in transient units; the new generation is reported.
    let started: OperationStarted = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_A, false))
        .await
        .unwrap();
    let (events, result) = follow(&bed.admin, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    assert_eq!(result.generation.as_deref(), Some("1"));
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), MODULE_A);
    let steps: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            OperationEvent::Step { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(steps[1..], ["nixos-rebuild test", "nixos-rebuild switch"]);
    assert!(
        output_lines(&events)
            .iter()
            .any(|l| l.starts_with("building the system configuration (switch)")),
        "the unit's log is streamed: {events:?}"
    );
    let acts = bed.activations();
    assert_eq!(acts.len(), 2, "{acts:?}");
    let (test_path, switch_path) = (
        acts[0].strip_prefix("test ").unwrap(),
        acts[1].strip_prefix("switch ").unwrap(),
    );
    assert_eq!(test_path, switch_path, "switch activates what test built");
    assert_eq!(
        std::fs::read_to_string(test_path).unwrap().trim(),
        MODULE_A.trim()
    );

    // A second configuration: new generation, previous file kept as .bak.
    let started: OperationStarted = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_B, false))
        .await
        .unwrap();
    let (_, result) = follow(&bed.admin, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    assert_eq!(result.generation.as_deref(), Some("2"));
    let bak = bed.node.path("flake/kcore-node.nix.bak");
    assert_eq!(std::fs::read_to_string(&bak).unwrap(), MODULE_A);
    assert!(result.written.contains(&bak.display().to_string()));
    let acts = bed.activations();
    assert_eq!(acts.len(), 4);
    assert_ne!(acts[3], acts[1], "a different system was switched to");

    // --no-rebuild only writes.
    let result: OperationResult = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_A, true))
        .await
        .unwrap();
    assert_eq!(result.status, OperationStatus::Succeeded);
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), MODULE_A);
    assert_eq!(bed.activations().len(), 4, "no rebuild ran");
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_nix_failed_test_never_switches_with_nixos_rebuild_stand_in() {
    let Some(bed) = nix_bed(None).await else {
        return;
    };
    let failing = "{ ... }: { # KCORE_TEST_FAIL_BUILD\n}\n";
    let started: OperationStarted = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(failing, false))
        .await
        .unwrap();
    let (events, result) = follow(&bed.admin, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::Failed, "{result:?}");
    let err = result.error.unwrap();
    assert_eq!(err.code, "COMMAND_FAILED");
    assert!(
        err.message.contains("nixos-rebuild test"),
        "{}",
        err.message
    );
    assert!(
        output_lines(&events)
            .iter()
            .any(|l| l.contains("build failed on purpose")),
        "{events:?}"
    );
    assert!(bed.activations().is_empty(), "nothing was activated");
    assert_eq!(result.generation, None);
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_nix_runs_one_rebuild_at_a_time_with_nixos_rebuild_stand_in() {
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("open");
    let Some(bed) = nix_bed(Some(&gate)).await else {
        return;
    };
    let first: OperationStarted = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_A, false))
        .await
        .unwrap();
    // The first rebuild holds at the gate; a second request (rebuild or write-only) is
    // refused and changes nothing.
    for no_rebuild in [false, true] {
        let err = bed
            .admin
            .post_json::<_, OperationStarted>("/v1/nix/apply", &nix_req(MODULE_B, no_rebuild))
            .await
            .unwrap_err();
        assert_eq!(code(&err), "REBUILD_IN_PROGRESS");
    }
    let running: OperationResult = bed
        .admin
        .get_json(&format!("/v1/operations/{}", first.operation_id))
        .await
        .unwrap();
    assert_eq!(running.status, OperationStatus::Running);
    assert_eq!(
        std::fs::read_to_string(bed.node.path("flake/kcore-node.nix")).unwrap(),
        MODULE_A
    );
    std::fs::write(&gate, "").unwrap();
    let (_, result) = follow(&bed.admin, &first.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    // Afterwards the next one is accepted.
    let second: OperationStarted = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_B, false))
        .await
        .unwrap();
    let (_, result) = follow(&bed.admin, &second.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    assert_eq!(result.generation.as_deref(), Some("2"));
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_results_survive_an_agent_restart_with_nixos_rebuild_stand_in() {
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("open");
    let Some(bed) = nix_bed(Some(&gate)).await else {
        return;
    };
    // A write-only apply finishes in the request; a rebuild is then held at the gate, so
    // it is still running when the agent stops.
    let done: OperationResult = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_A, true))
        .await
        .unwrap();
    assert_eq!(done.status, OperationStatus::Succeeded);
    let cut: OperationStarted = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_B, false))
        .await
        .unwrap();
    let running: OperationResult = bed
        .admin
        .get_json(&format!("/v1/operations/{}", cut.operation_id))
        .await
        .unwrap();
    assert_eq!(running.status, OperationStatus::Running);
    // Its unit runs (the rebuild printed its first line), so it is the unit, not the
    // agent, that holds it.
    wait_for_result(&bed.admin, &cut.operation_id, "the gate", |r| {
        r.output_tail.iter().any(|l| l.starts_with("waiting for "))
    })
    .await;

    let bed = bed.restart().await;
    let again: OperationResult = bed
        .admin
        .get_json(&format!("/v1/operations/{}", done.operation_id))
        .await
        .unwrap();
    assert_eq!(again, done, "the finished result, as it was");
    // The rebuild's `test` unit outlived the first agent, as a real unit would: the new
    // agent re-attaches to it (it is not INTERRUPTED) and carries on with `switch`.
    let reattached: OperationResult = bed
        .admin
        .get_json(&format!("/v1/operations/{}", cut.operation_id))
        .await
        .unwrap();
    assert_eq!(
        reattached.status,
        OperationStatus::Running,
        "{reattached:?}"
    );
    assert_eq!(reattached.started_at, running.started_at);
    std::fs::write(&gate, "").unwrap();
    let (events, finished) = follow(&bed.admin, &cut.operation_id).await;
    assert_eq!(finished.status, OperationStatus::Succeeded, "{finished:?}");
    assert_eq!(finished.generation.as_deref(), Some("1"));
    let unit = format!(
        "kcore-apply-nix-{}-test",
        cut.operation_id.replace('-', "").get(..12).unwrap()
    );
    assert!(
        events.iter().any(
            |e| matches!(e, OperationEvent::Step { name } if *name == format!("re-attach to unit {unit}"))
        ),
        "{events:?}"
    );
    // The stream replays the unit's log from its start: the line printed before the restart.
    assert!(
        output_lines(&events)
            .iter()
            .any(|l| l.starts_with("waiting for ")),
        "{events:?}"
    );
    let acts = bed.activations();
    assert_eq!(acts.len(), 2, "test (re-attached), then switch: {acts:?}");
    // Saved as JSON beside the disko state directory.
    assert!(
        bed.node
            .path(&format!("operations/{}.json", done.operation_id))
            .is_file()
    );
    let err = bed
        .admin
        .get_json::<OperationResult>("/v1/operations/00000000-0000-0000-0000-000000000000")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NOT_FOUND");
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_nix_timeout_stops_the_unit_with_systemd_run_and_systemctl_stand_ins() {
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("never-opened");
    let Some(bed) = nix_bed_with(Some(&gate), |o| {
        o.rebuild_timeout = Duration::from_secs(3);
    })
    .await
    else {
        return;
    };
    let started: OperationStarted = bed
        .admin
        .post_json("/v1/nix/apply", &nix_req(MODULE_A, false))
        .await
        .unwrap();
    let (events, result) = follow(&bed.admin, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::TimedOut, "{result:?}");
    let err = result.error.unwrap();
    assert_eq!(err.code, "TIMED_OUT");
    assert_eq!(err.details["unitStopped"], true, "{err:?}");
    assert!(
        err.message.contains("its unit was stopped"),
        "{}",
        err.message
    );
    let unit = err.details["unit"].as_str().unwrap().to_string();
    assert!(unit.ends_with("-test"), "{unit}");
    let steps: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            OperationEvent::Step { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(steps.last(), Some(&format!("systemctl stop {unit}")));
    // The rebuild was really running (its first line reached the log) ...
    let waiting = output_lines(&events)
        .into_iter()
        .find(|l| l.starts_with("waiting for "))
        .unwrap_or_else(|| panic!("the rebuild never started: {events:?}"));
    let pid = waiting
        .rsplit_once("(pid ")
        .and_then(|(_, p)| p.strip_suffix(')'))
        .unwrap()
        .to_string();
    // ... and `stop` returned only after its processes were gone: nothing of it is left,
    // neither the stand-in nor a child carrying its environment.
    assert!(
        process_gone(&pid),
        "nixos-rebuild ({pid}) survived the stop"
    );
    let var = format!("KCORE_TEST_REBUILD_GATE={}", gate.display());
    assert_eq!(processes_with_env(&var), Vec::<String>::new(), "survivors");
    assert!(bed.activations().is_empty(), "nothing was activated");
    // A second stop finds no unit: the stand-in, like systemctl, says so.
    let again = std::process::Command::new(support("systemctl"))
        .args(["stop", &unit])
        .output()
        .unwrap();
    assert!(!again.status.success());
    bed.agent.stop().await;
}
