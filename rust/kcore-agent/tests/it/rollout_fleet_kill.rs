//! Rollouts whose agents or controllers are killed with SIGKILL mid-rollout (issue 12: "agent
//! killed -9 mid-activation and restarted; controller killed -9 mid-rollout and restarted
//! (resumes); owner controller lost with a second controller taking over"), on the bed of
//! `rollout_fleet_bed` with the killed parts as OS processes (`rollout_proc`): five agent
//! processes on the real fleet flake, the controllers as processes too where one is killed.
//! A gate in the chosen node's switch-to-configuration holds its activation open, so the
//! kill lands while that step is `activating` without relying on timing (or, for the node
//! after it, while that node has prepared ahead and waits for its turn). Each test ends with
//! [`Bed::finish`]'s timeline check (`maxUnavailable`, no node assigned or activated twice),
//! and each node's stand-in log shows exactly one activation.

use kcore_api::rollout::StepPhase;
use kcore_controller::rollout::records;

use crate::rollout_fleet_bed::*;

/// The bed in `shape`, installed at r1 with r2 to roll out, `gated`'s
/// switch-to-configuration held until the returned gate file exists (its directory must
/// outlive the test's steps: the stand-in gives up once it is gone). `None`: SKIP.
async fn gated_bed(
    gated: &str,
    shape: Shape,
) -> Option<(Bed, String, std::path::PathBuf, tempfile::TempDir)> {
    let (fleet, r1, r2) = revisions(None)?;
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("open");
    let bed = Bed::with(fleet, &r1, Some((gated, &gate)), shape).await;
    Some((bed, r2, gate, gates))
}

/// Every node runs r2's system, switched to exactly once.
fn each_activated_once(bed: &Bed, r2: &str) {
    for id in NODES {
        let new = expected(bed, r2, id);
        let node = bed.node(id);
        assert_eq!(node.link("run/current-system"), new, "{id}");
        assert_eq!(node.link("nix/var/nix/profiles/system"), new, "{id}");
        assert_eq!(
            node.log("activations"),
            [format!("switch {}", new.display())],
            "{id} activated exactly once"
        );
    }
}

/// Waits until `id`'s step report says `activating` and its switch-to-configuration runs
/// (held at its gate).
async fn until_step_activating(bed: &Bed, id: &str) {
    bed.until_activating(id).await;
    bed.until(&format!("{id}'s step activating"), |bed| async move {
        bed.try_step_report(id)
            .filter(|r| r.phase == StepPhase::Activating)
            .map(|_| ())
    })
    .await;
}

/// Waits until `id` runs `new` (its switch-to-configuration went through).
async fn until_switched(bed: &Bed, id: &str, new: &Path) {
    bed.until(&format!("{id} switched"), |bed| async move {
        (system_link(bed.node(id), "run/current-system").as_deref() == Some(new)).then_some(())
    })
    .await;
}

/// node-3's agent process is SIGKILLed while its step is `activating`, and started again:
/// `unit_done_first`, after its transient unit (a session of its own, as systemd's) finished
/// the switch with no agent there (the new agent finds the unit's result); otherwise while
/// the unit still waits at its gate (the new agent re-attaches to it). Either way it runs the
/// health gate and reports, and the rollout succeeds with node-3 activated once.
async fn agent_killed_9_mid_activation(name: &str, unit_done_first: bool) {
    let shape = Shape {
        agent_processes: true,
        ..Shape::default()
    };
    let Some((mut bed, r2, gate, _gates)) = gated_bed("node-3", shape).await else {
        return;
    };
    bed.apply(name, &r2).await;
    until_step_activating(&bed, "node-3").await;
    let i = Bed::index("node-3");
    bed.nodes[i].kill9();
    let new = expected(&bed, &r2, "node-3");
    if unit_done_first {
        std::fs::write(&gate, "").unwrap();
        until_switched(&bed, "node-3", &new).await;
        bed.nodes[i].start_process().await;
    } else {
        bed.nodes[i].start_process().await;
        assert_eq!(bed.step_report("node-3").phase, StepPhase::Activating);
        std::fs::write(&gate, "").unwrap();
    }
    let done = bed.wait_done(name).await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    assert_eq!(row(&done, "node-3")["phase"], "succeeded", "{done:#}");
    each_activated_once(&bed, &r2);
    bed.finish(&[(name, 1)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_an_agent_process_killed_9_mid_activation_is_restarted_and_the_rollout_succeeds_with_fleet_flake()
 {
    agent_killed_9_mid_activation("kill-agent", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_an_agent_process_killed_9_mid_activation_restarted_while_its_unit_runs_reattaches_with_fleet_flake()
 {
    agent_killed_9_mid_activation("kill-agent-reattach", false).await;
}

/// The controller process is SIGKILLed while the second batch (node-3, node-4) activates,
/// node-3 held at its gate; started again on the same database and port it resumes: the
/// rollout finishes under the same owner and epoch, every node activated once, none
/// skipped.
#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_the_controller_process_killed_9_mid_rollout_resumes_with_real_agents_with_fleet_flake()
 {
    let shape = Shape {
        controller_processes: true,
        agent_processes: true,
        ..Shape::default()
    };
    let Some((mut bed, r2, gate, _gates)) = gated_bed("node-3", shape).await else {
        return;
    };
    let batch = json!({"strategyType": "batch", "batchSize": 2, "maxUnavailable": 2});
    let mut s = spec(&bed.fleet, &r2, batch, "auto", 0);
    // node-3's health gate needs a controller: time enough for the restart.
    s["activation"]["healthTimeoutSeconds"] = json!(60);
    bed.apply_spec("kill-ctl", s).await;
    until_step_activating(&bed, "node-3").await;
    bed.kill9_controller(0);
    std::fs::write(&gate, "").unwrap();
    let new = expected(&bed, &r2, "node-3");
    until_switched(&bed, "node-3", &new).await;
    bed.start_controller_on(0, None).await;
    let done = bed.wait_done("kill-ctl").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    // The restarted controller is the same owner, under the same epoch.
    assert_eq!(done["status"]["owner"]["controllerId"], "ctl1", "{done:#}");
    assert_eq!(done["status"]["owner"]["epoch"], 1, "{done:#}");
    for id in NODES {
        assert_eq!(row(&done, id)["phase"], "succeeded", "{id}: {done:#}");
    }
    each_activated_once(&bed, &r2);
    bed.finish(&[("kill-ctl", 2)]).await;
}

/// Two replicating controller processes; the agents know both. The rollout's owner ctl1 is
/// SIGKILLed while node-3 activates (ctl2 having replicated two finished nodes); the agents
/// fail over to ctl2, which takes the rollout over once ctl1's 30 s lease (+ the 1 s clock
/// bound) lapsed and finishes it: some nodes assigned by each, every one activated once.
#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_the_owner_controller_killed_9_is_taken_over_by_a_second_controller_with_fleet_flake()
 {
    let shape = Shape {
        controllers: 2,
        controller_processes: true,
        agent_processes: true,
    };
    let Some((mut bed, r2, gate, _gates)) = gated_bed("node-3", shape).await else {
        return;
    };
    let mut s = spec(&bed.fleet, &r2, one_at_a_time(), "auto", 0);
    // node-3's health gate needs a controller: time enough for the failover.
    s["activation"]["healthTimeoutSeconds"] = json!(60);
    bed.apply_spec("takeover", s).await;
    until_step_activating(&bed, "node-3").await;
    bed.until(
        "ctl2 sees two nodes done, ctl1 the owner",
        |bed| async move {
            let cu = bed.get_on(1, "takeover").await?;
            let done = cu["status"]["nodes"]
                .as_array()?
                .iter()
                .filter(|r| r["phase"] == "succeeded")
                .count();
            (done >= 2 && cu["status"]["owner"]["controllerId"] == "ctl1").then_some(())
        },
    )
    .await;
    bed.kill9_controller(0);
    std::fs::write(&gate, "").unwrap();
    let done = bed.wait_done_on(1, "takeover").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    assert_eq!(done["status"]["owner"]["controllerId"], "ctl2", "{done:#}");
    assert_eq!(done["status"]["owner"]["epoch"], 2, "{done:#}");
    each_activated_once(&bed, &r2);
    let recs = bed.finish_on(1, &[("takeover", 1)]).await;
    // Some nodes were assigned by the deposed owner and some by the new one.
    assert_eq!(records::assigned_by(&recs), ["ctl1", "ctl2"], "{recs:#?}");
}

/// node-3 prepares ahead while node-2 activates (held at its gate); node-3's agent process
/// is SIGKILLed after its prepare reported `prepared`, and started again. When its turn
/// comes it activates the system it prepared before the kill: one prepare (one built
/// system link in its operations directory), one activation.
#[tokio::test(flavor = "multi_thread")]
async fn rollout_fleet_an_agent_killed_9_after_preparing_ahead_activates_what_it_prepared_with_fleet_flake()
 {
    let shape = Shape {
        agent_processes: true,
        ..Shape::default()
    };
    let Some((mut bed, r2, gate, _gates)) = gated_bed("node-2", shape).await else {
        return;
    };
    bed.apply("ahead-kill", &r2).await;
    until_step_activating(&bed, "node-2").await;
    bed.until("node-3 prepared ahead", |bed| async move {
        let cu = bed.get("ahead-kill").await?;
        let r = row(&cu, "node-3");
        (r["phase"] == "prepared" && r.get("startedAt").is_none()).then_some(())
    })
    .await;
    let i = Bed::index("node-3");
    bed.nodes[i].kill9();
    bed.nodes[i].start_process().await;
    std::fs::write(&gate, "").unwrap();
    let done = bed.wait_done("ahead-kill").await;
    assert_eq!(done["status"]["phase"], "succeeded", "{done:#}");
    each_activated_once(&bed, &r2);
    let built = bed.node("node-3").built_systems();
    assert_eq!(built.len(), 1, "node-3 prepared once: {built:?}");
    bed.finish(&[("ahead-kill", 1)]).await;
}
