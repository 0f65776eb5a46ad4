//! The operation store: replay, bounds, persistence, and finishing through `run`.

use super::*;
use futures::StreamExt;
use kcore_api::inventory::OperationKind;

#[tokio::test]
async fn stream_replays_from_the_start_and_ends_after_finish() {
    let ops = Operations::default();
    let op = ops.start(OperationKind::ApplyDisko, Some(300), Lanes::none());
    op.step("disko");
    op.output("stdout", "line 1");
    let stream = ops.stream(&op.id).unwrap();
    let op2 = op.clone();
    let writer = tokio::spawn(async move {
        op2.output("stderr", "line 2");
        op2.finish(OperationStatus::Succeeded, None);
    });
    let events: Vec<OperationEvent> = stream.collect().await;
    writer.await.unwrap();
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(matches!(events[0], OperationEvent::Started { .. }));
    assert!(
        matches!(&events[4], OperationEvent::Finished { result } if result.status == OperationStatus::Succeeded)
    );
    let result = ops.result(&op.id).unwrap();
    assert_eq!(result.output_tail, vec!["line 1", "line 2"]);
    // Replay after the end.
    let again: Vec<OperationEvent> = ops.stream(&op.id).unwrap().collect().await;
    assert_eq!(again, events);
    assert!(ops.result("nope").is_none());
}

#[tokio::test]
async fn replay_is_bounded_but_steps_and_the_result_are_kept() {
    let ops = Operations::default();
    let op = ops.start(OperationKind::ApplyNix, None, Lanes::none());
    for i in 0..MAX_EVENTS + 10 {
        op.output("log", format!("line {i}"));
    }
    op.step("after the flood");
    op.finish(OperationStatus::Succeeded, None);
    let events: Vec<OperationEvent> = ops.stream(&op.id).unwrap().collect().await;
    assert_eq!(
        events.len(),
        MAX_EVENTS + 3,
        "cap + notice + step + finished"
    );
    assert!(
        matches!(&events[MAX_EVENTS], OperationEvent::Output { stream, .. } if stream == "agent")
    );
    assert!(matches!(
        &events[MAX_EVENTS + 1],
        OperationEvent::Step { .. }
    ));
    let tail = ops.result(&op.id).unwrap().output_tail;
    assert_eq!(
        tail.last().map(String::as_str),
        Some(format!("line {}", MAX_EVENTS + 9).as_str())
    );
}

#[test]
fn saved_results_survive_and_running_ones_come_back_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let ops = Operations::persistent(dir.path().to_path_buf());
    let done = ops.start(OperationKind::ApplyDisko, Some(300), Lanes::none());
    done.output("stdout", "formatted");
    done.finish(OperationStatus::Succeeded, None);
    let cut = ops.start(OperationKind::ApplyNix, None, Lanes::none());
    cut.step("nixos-rebuild test");
    // The agent "dies" here: `cut` never finishes.
    drop(ops);

    let again = Operations::persistent(dir.path().to_path_buf());
    let result = again.result(&done.id).unwrap();
    assert_eq!(result.status, OperationStatus::Succeeded);
    assert_eq!(result.output_tail, vec!["formatted"]);
    assert_eq!(result.effective_timeout_seconds, Some(300));
    let result = again.result(&cut.id).unwrap();
    assert_eq!(result.status, OperationStatus::Failed);
    assert!(result.error.unwrap().is(ErrorCode::Interrupted));
    // Saved as interrupted: a third start does not decide it again.
    let saved: OperationResult = serde_json::from_slice(
        &std::fs::read(dir.path().join(format!("{}.json", cut.id))).unwrap(),
    )
    .unwrap();
    assert_eq!(saved.status, OperationStatus::Failed);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[tokio::test]
async fn a_loaded_operation_streams_started_and_finished() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let ops = Operations::persistent(dir.path().to_path_buf());
        let op = ops.start(OperationKind::ApplyNix, None, Lanes::none());
        op.finish(
            OperationStatus::TimedOut,
            Some(ApiError::new(ErrorCode::TimedOut, "slow")),
        );
        op.id
    };
    let ops = Operations::persistent(dir.path().to_path_buf());
    let events: Vec<OperationEvent> = ops.stream(&id).unwrap().collect().await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        matches!(&events[1], OperationEvent::Finished { result } if result.status == OperationStatus::TimedOut)
    );
}

#[test]
fn only_the_newest_are_kept_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let ops = Operations::persistent(dir.path().to_path_buf());
    let mut ids = Vec::new();
    for _ in 0..KEEP + 5 {
        let op = ops.start(OperationKind::ApplyNix, None, Lanes::none());
        op.finish(OperationStatus::Succeeded, None);
        ids.push(op.id);
    }
    let count = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(count, KEEP);
    assert!(ops.result(&ids[0]).is_none());
    assert!(!dir.path().join(format!("{}.json", ids[4])).exists());
    assert!(dir.path().join(format!("{}.json", ids[5])).exists());
    // Files beyond KEEP found at start (another agent's leftovers) are pruned too,
    // oldest first by start time.
    let extra = OperationResult {
        operation_id: "00000000-0000-0000-0000-000000000000".into(),
        kind: OperationKind::ApplyNix,
        status: OperationStatus::Succeeded,
        started_at: "2000-01-01T00:00:00Z".into(),
        finished_at: None,
        effective_timeout_seconds: None,
        error: None,
        generation: None,
        written: Vec::new(),
        output_tail: Vec::new(),
        install: None,
    };
    let extra_file = dir.path().join(format!("{}.json", extra.operation_id));
    std::fs::write(&extra_file, serde_json::to_vec(&extra).unwrap()).unwrap();
    let again = Operations::persistent(dir.path().to_path_buf());
    assert!(!extra_file.exists());
    assert!(again.result(&extra.operation_id).is_none());
    assert!(again.result(&ids[KEEP + 4]).is_some());
}

#[test]
fn the_directory_sits_beside_the_disko_state_dir() {
    let config = AgentConfig::parse(
        "nodeId: a\nmode: install\ndisko: { stateDir: /var/lib/kcore/disko }\n",
        Path::new("node-agent.yaml"),
    )
    .unwrap();
    assert_eq!(dir_for(&config), Path::new("/var/lib/kcore/operations"));
}

#[tokio::test]
async fn run_finishes_from_the_work_result_and_releases_the_lanes() {
    let lanes = Lanes::default();
    let ops = Operations::default();
    let op = ops.start(
        OperationKind::ApplyDisko,
        None,
        lanes.take(OperationKind::ApplyDisko).unwrap(),
    );
    assert!(
        lanes.take(OperationKind::ApplyDisko).is_err(),
        "held while running"
    );
    let result = op
        .run(|op| async move {
            op.output("stdout", "done");
            Ok(Outcome {
                written: vec!["/var/lib/kcore/disko/a.nix".into()],
                generation: Some("7".into()),
            })
        })
        .await;
    assert_eq!(result.status, OperationStatus::Succeeded);
    assert_eq!(result.written, ["/var/lib/kcore/disko/a.nix"]);
    assert_eq!(result.generation.as_deref(), Some("7"));
    assert!(result.finished_at.is_some());
    assert!(lanes.take(OperationKind::ApplyDisko).is_ok(), "released");

    let failed = ops
        .start(OperationKind::ApplyNix, None, Lanes::none())
        .run(|_| async { Err(OpError::failed(ErrorCode::CommandFailed, "boom")) })
        .await;
    assert_eq!(failed.status, OperationStatus::Failed);
    assert!(failed.error.unwrap().is(ErrorCode::CommandFailed));
}

#[tokio::test]
async fn a_detached_operation_stays_running_and_is_re_attachable_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ops = Operations::persistent(dir.path().to_path_buf());
    let lanes = Lanes::default();
    let op = ops.start(
        OperationKind::ApplyDisko,
        Some(60),
        lanes.take(OperationKind::ApplyDisko).unwrap(),
    );
    let id = op.id.clone();
    let record = unit::UnitRecord::new(
        dir.path(),
        dir.path(),
        &id,
        "kcore-apply-disko-x-disko",
        std::time::Duration::from_secs(60),
        serde_json::json!({}),
    );
    std::fs::create_dir_all(dir.path().join("units").join(&id)).unwrap();
    std::fs::write(
        dir.path().join("units").join(&id).join("unit.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    let result = op.run(|_| async { Err(OpError::Detached) }).await;
    assert_eq!(result.status, OperationStatus::Running, "nothing decided");
    assert!(
        lanes.take(OperationKind::ApplyDisko).is_ok(),
        "lanes released"
    );
    drop(ops);

    let again = Operations::persistent(dir.path().to_path_buf());
    assert_eq!(again.result(&id).unwrap().status, OperationStatus::Running);
    assert_eq!(again.take_detached(), vec![id.clone()]);
    assert!(again.take_detached().is_empty(), "handed out once");
    let op = again.handle(&id, Lanes::none()).unwrap();
    op.run(|_| async { Ok(Outcome::default()) }).await;
    assert_eq!(
        again.result(&id).unwrap().status,
        OperationStatus::Succeeded
    );
    assert!(
        again.handle(&id, Lanes::none()).is_none(),
        "finished: no handle"
    );
}

/// What the assignment loop waits on between a prepare's final report and the activation:
/// `finished` returns only once the operation ended, and its lanes are free by then (a
/// waiter that took them right away would otherwise meet a `409`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_returns_when_the_operation_ends_with_its_lanes_already_free() {
    let lanes = Arc::new(Lanes::default());
    let ops = Arc::new(Operations::default());
    let op = ops.start(
        OperationKind::RolloutPrepare,
        None,
        lanes.take(OperationKind::RolloutPrepare).unwrap(),
    );
    let id = op.id.clone();
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(op.run(|_| async move {
        let _ = wait.await;
        Ok(Outcome::default())
    }));
    let waiter = {
        let (ops, id, lanes) = (ops.clone(), id.clone(), lanes.clone());
        tokio::spawn(async move {
            ops.finished(&id).await;
            // Taken the moment `finished` returns, as the assignment loop does.
            lanes.take(OperationKind::RolloutActivate).is_ok()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "returned while the operation ran");
    go.send(()).unwrap();
    assert!(waiter.await.unwrap(), "the lane was still held");
    running.await.unwrap();
    // Unknown or already ended: at once.
    ops.finished(&id).await;
    ops.finished("nope").await;
}
