//! Long operations across agent restarts and lanes, through the disko, systemd-run and
//! systemctl stand-ins: a disk apply runs in a transient unit, so an agent restart neither
//! kills it nor loses its outcome (re-attached while it runs; its exit status read when it
//! ended while no agent was there), and the lanes refuse a second disk apply while letting
//! system work run beside it.

use super::support::*;

/// A disk apply held at `gate` until the test opens it, started under controller-managed.
async fn held_apply(bed: &DiskoBed) -> OperationStarted {
    bed.node.set_mode("controller-managed");
    let plan: DiskoPlanResponse = bed
        .admin
        .post_json("/v1/disko/apply", &dry(DATA_DISK))
        .await
        .unwrap();
    let started: OperationStarted = bed
        .admin
        .post_json("/v1/disko/apply", &apply(DATA_DISK, &plan.plan_hash, None))
        .await
        .unwrap();
    assert_eq!(started.kind, "apply-disko");
    // disko runs in its unit: its first line reached the unit's log and the stream.
    wait_for_result(&bed.admin, &started.operation_id, "the gate", |r| {
        r.output_tail.iter().any(|l| l.starts_with("waiting for "))
    })
    .await;
    started
}

fn gated(gate: &Path, more: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![(
        "KCORE_TEST_DISKO_GATE".to_string(),
        gate.display().to_string(),
    )];
    env.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn steps(events: &[OperationEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            OperationEvent::Step { name } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_during_a_disko_apply_re_attaches_to_its_unit_with_disko_stand_in() {
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("open");
    let bed = disko_bed(json!({}), gated(&gate, &[])).await;
    let started = held_apply(&bed).await;
    let id = started.operation_id.clone();

    // The agent stops and a new one starts on the same state directory; disko runs on.
    let bed = bed.restart().await;
    let reattached: OperationResult = bed
        .admin
        .get_json(&format!("/v1/operations/{id}"))
        .await
        .unwrap();
    assert_eq!(
        reattached.status,
        OperationStatus::Running,
        "{reattached:?}"
    );
    // The disk lane is the re-attached apply's: a second one is refused.
    let plan: DiskoPlanResponse = bed
        .admin
        .post_json("/v1/disko/apply", &dry(DATA_DISK))
        .await
        .unwrap();
    let err = bed
        .admin
        .post_json::<_, OperationStarted>(
            "/v1/disko/apply",
            &apply(DATA_DISK, &plan.plan_hash, None),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "DISK_APPLY_IN_PROGRESS");

    std::fs::write(&gate, "").unwrap();
    let (events, result) = follow(&bed.admin, &id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    let unit = format!(
        "kcore-apply-disko-{}-disko",
        id.replace('-', "").get(..12).unwrap()
    );
    assert_eq!(
        steps(&events),
        [
            format!("re-attach to unit {unit}"),
            "keep the applied fragment as data1.nix".to_string()
        ]
    );
    // The stream replays the unit's log from its start, then what came after the restart.
    let lines = output_lines(&events);
    let waited = lines.iter().position(|l| l.starts_with("waiting for "));
    let formatted = lines.iter().position(|l| l == "formatted and mounted");
    assert!(
        waited.is_some() && formatted.is_some() && waited < formatted,
        "{lines:?}"
    );
    // The new agent did what the first one would have: keep the applied fragment.
    let kept = bed.node.path("disko/data1.nix");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), DATA_DISK);
    assert!(result.written.contains(&kept.display().to_string()));
    // And the lane is free again.
    let plan: DiskoPlanResponse = bed
        .admin
        .post_json("/v1/disko/apply", &dry(DATA_DISK))
        .await
        .unwrap();
    assert!(plan.apply_allowed, "{:?}", plan.refusal);
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disko_unit_that_ended_while_the_agent_was_down_reports_its_exit_status_with_disko_stand_in()
 {
    for fail in [true, false] {
        let gate_dir = tempfile::tempdir().unwrap();
        let gate = gate_dir.path().join("open");
        let more: &[(&str, &str)] = if fail {
            &[("KCORE_TEST_DISKO_FAIL", "1")]
        } else {
            &[]
        };
        let bed = disko_bed(json!({}), gated(&gate, more)).await;
        let started = held_apply(&bed).await;
        let id = started.operation_id.clone();
        let stopped = bed.stop_agent().await;

        // No agent runs while disko finishes; its ExecStopPost leaves the status.
        std::fs::write(&gate, "").unwrap();
        let units = stopped.node.path(&format!("operations/units/{id}"));
        let status_written = || {
            std::fs::read_dir(&units)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".status.json"))
        };
        for _ in 0..600 {
            if status_written() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(status_written(), "the unit never ended");

        let bed = stopped.start_again().await;
        let (events, result) = follow(&bed.admin, &id).await;
        let kept = bed.node.path("disko/data1.nix");
        if fail {
            assert_eq!(result.status, OperationStatus::Failed, "{result:?}");
            let err = result.error.unwrap();
            assert_eq!(err.code, "COMMAND_FAILED");
            assert!(
                err.message.contains("exited with status 1"),
                "{}",
                err.message
            );
            assert_eq!(err.details["exitStatus"], "1");
            assert_eq!(err.details["serviceResult"], "exit-code");
            assert!(
                output_lines(&events).contains(&"disko stand-in: simulated failure".to_string()),
                "the unit's log is replayed: {events:?}"
            );
            assert!(!kept.exists(), "nothing kept after a failure");
        } else {
            assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
            assert!(output_lines(&events).contains(&"formatted and mounted".to_string()));
            assert_eq!(std::fs::read_to_string(&kept).unwrap(), DATA_DISK);
        }
        bed.agent.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_refuse_a_second_disk_apply_but_not_system_work_beside_it_with_disko_stand_in() {
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("open");
    let bed = disko_bed(json!({}), gated(&gate, &[])).await;
    let started = held_apply(&bed).await;
    let plan: DiskoPlanResponse = bed
        .admin
        .post_json("/v1/disko/apply", &dry(DATA_DISK))
        .await
        .unwrap();
    let err = bed
        .admin
        .post_json::<_, OperationStarted>(
            "/v1/disko/apply",
            &apply(DATA_DISK, &plan.plan_hash, None),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "DISK_APPLY_IN_PROGRESS");
    assert!(err.to_string().contains("another disk apply"), "{err}");

    // The system lane is separate: an apply-nix (write-only here; the rebuild tests need
    // nix) runs to its end while the disk apply is held.
    if which_nix().is_some() {
        std::fs::create_dir_all(bed.node.path("flake")).unwrap();
        let written: OperationResult = bed
            .admin
            .post_json("/v1/nix/apply", &nix_req(MODULE_A, true))
            .await
            .unwrap();
        assert_eq!(written.status, OperationStatus::Succeeded, "{written:?}");
        assert_eq!(written.kind, "apply-nix");
    } else {
        eprintln!("SKIP (apply-nix beside a disk apply): `nix` is not on PATH");
    }
    let running: OperationResult = bed
        .admin
        .get_json(&format!("/v1/operations/{}", started.operation_id))
        .await
        .unwrap();
    assert_eq!(running.status, OperationStatus::Running);

    std::fs::write(&gate, "").unwrap();
    let (_, result) = follow(&bed.admin, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    bed.agent.stop().await;
}

#[test]
fn unit_result_writes_what_systemd_gives_exec_stop_post() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("u.status.json");
    let ran = std::process::Command::new(unit_result_helper().unwrap())
        .args(["unit-result"])
        .arg(&file)
        .env("SERVICE_RESULT", "exit-code")
        .env("EXIT_CODE", "exited")
        .env("EXIT_STATUS", "2")
        .output()
        .unwrap();
    assert!(ran.status.success(), "{ran:?}");
    assert!(ran.stdout.is_empty(), "nothing reaches the unit's log");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        written,
        json!({"serviceResult": "exit-code", "exitCode": "exited", "exitStatus": "2"})
    );
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 1, "written atomically, no temporary file left");
}
