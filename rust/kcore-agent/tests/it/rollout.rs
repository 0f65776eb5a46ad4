//! Rollout steps on one node (`/v1/rollout/*`), a real agent on 127.0.0.1 with mTLS against
//! the real fleet flake (`rollout_rig`): prepare builds for real with `nix build`, every
//! activation runs the fleet's switch-to-configuration stand-in in a unit of the
//! systemd-run stand-in, and the revert and trial-boot decisions are read back from the
//! fake root (profile generations, `run/*-system`, the boot loader state, the stand-ins'
//! logs). Names say `with_fleet_flake`: they need `tests/support`.

use kcore_api::rollout::{StepCode, StepPhase};

use crate::rollout_rig::{Fleet, FleetNode, host};
use crate::support::*;

fn generation_count(node: &FleetNode) -> usize {
    std::fs::read_dir(node.root("nix/var/nix/profiles"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("-link"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_prepare_builds_the_pinned_host_and_fails_for_a_missing_one_with_fleet_flake() {
    let Some(fleet) = Fleet::new() else { return };
    let r1 = fleet.commit(&[("node-1", host("ok", "ok", "6.6.1", "r1"))]);
    let r2 = fleet.commit(&[("node-1", host("ok", "ok", "6.6.1", "r2"))]);
    let r3 = fleet.commit(&[("node-1", host("ok", "ok", "6.12.0", "r3"))]);
    let r4 = fleet.commit(&[("node-2", host("ok", "ok", "6.6.1", "r4"))]);
    let node = FleetNode::new(&fleet, &r1, None, None).await;

    let (result, report) = node.prepare(&fleet, &r2).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    let expected = fleet.build(&r2, "node-1", &node.node.path("expected-r2"));
    assert_eq!(report.phase, StepPhase::Prepared);
    assert_eq!(
        report.store_path.as_deref(),
        Some(expected.to_str().unwrap())
    );
    assert_eq!(
        report.reboot_required,
        Some(false),
        "same kernel: {report:?}"
    );
    // Nothing changed on the node.
    assert_eq!(generation_count(&node), 1);
    assert!(node.log("activations").is_empty());

    let (_, report) = node.prepare(&fleet, &r3).await;
    assert_eq!(report.reboot_required, Some(true));
    assert_eq!(
        report.reboot_reasons,
        ["kernel", "initrd", "kernel-modules"]
    );

    let (result, report) = node.prepare(&fleet, &r4).await;
    assert_eq!(result.status, OperationStatus::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.code, "COMMAND_FAILED");
    assert!(error.message.contains("node-1"), "{}", error.message);
    assert_eq!(report.phase, StepPhase::Failed);
    assert_eq!(report.code, Some(StepCode::PrepareFailed));
    assert!(report.reason.unwrap().contains("nix build failed"));

    let err = node
        .admin()
        .post_json::<_, OperationStarted>(
            "/v1/rollout/prepare",
            &json!({"flakeRef": fleet.flake_ref(), "flakeRev": "abc"}),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_FIELD");
    assert!(err.to_string().contains("flakeRev"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_activate_switches_to_a_new_generation_with_fleet_flake() {
    let Some(fleet) = Fleet::new() else { return };
    let r1 = fleet.commit(&[("node-1", host("ok", "ok", "6.6.1", "r1"))]);
    let r2 = fleet.commit(&[("node-1", host("ok", "ok", "6.6.1", "r2"))]);
    let node = FleetNode::new(&fleet, &r1, None, None).await;
    let old = node.link("run/current-system");
    let (_, prepared) = node.prepare(&fleet, &r2).await;
    let new = PathBuf::from(prepared.store_path.unwrap());

    let id = node.activate(&new, "auto", 30).await;
    let (events, result) = follow(node.admin(), &id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    assert_eq!(result.generation.as_deref(), Some("2"));
    let report = node.step(&id).await;
    assert_eq!(report.phase, StepPhase::Succeeded);
    assert_eq!(report.goal.as_deref(), Some("switch"));
    assert_eq!(
        report.previous.unwrap().store_path,
        old.display().to_string()
    );
    assert_eq!(node.link("run/current-system"), new);
    assert_eq!(node.link("nix/var/nix/profiles/system"), new);
    assert_eq!(generation_count(&node), 2);
    assert_eq!(
        node.log("activations"),
        [format!("switch {}", new.display())]
    );
    assert!(
        output_lines(&events)
            .iter()
            .any(|l| l.contains("health gate passed"))
    );

    // A path that is no system is refused, naming the field.
    let err = node
        .admin()
        .post_json::<_, OperationStarted>("/v1/rollout/activate", &json!({"storePath": "/tmp"}))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_FIELD");
    assert!(err.to_string().contains("storePath"), "{err}");
}

/// Activate r2 (whose host file is `r2_host`) on a node at r1; the finished result and
/// the node.
async fn activate_r2(
    r2_host: serde_json::Value,
    timeout: u64,
) -> Option<(FleetNode, OperationResult, PathBuf, PathBuf)> {
    let fleet = Fleet::new()?;
    let r1 = fleet.commit(&[("node-1", host("ok", "ok", "6.6.1", "r1"))]);
    let r2 = fleet.commit(&[("node-1", r2_host)]);
    let node = FleetNode::new(&fleet, &r1, None, None).await;
    let old = node.link("run/current-system");
    let (_, prepared) = node.prepare(&fleet, &r2).await;
    let new = PathBuf::from(prepared.store_path.unwrap());
    let id = node.activate(&new, "auto", timeout).await;
    let (_, result) = follow(node.admin(), &id).await;
    Some((node, result, old, new))
}

fn assert_reverted(node: &FleetNode, result: &OperationResult, old: &Path, new: &Path) {
    assert_eq!(result.status, OperationStatus::Failed);
    assert_eq!(
        result.error.as_ref().unwrap().code,
        "REVERTED",
        "{result:?}"
    );
    assert_eq!(node.link("run/current-system"), old);
    // The previous system is back as a new generation (`--set <prev>`).
    assert_eq!(node.link("nix/var/nix/profiles/system"), old);
    assert_eq!(generation_count(node), 3);
    assert_eq!(
        node.log("activations"),
        [
            format!("switch {}", new.display()),
            format!("switch {}", old.display())
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_activation_failure_reverts_to_the_previous_generation_with_fleet_flake() {
    let Some((node, result, old, new)) = activate_r2(host("fail", "ok", "6.6.1", "r2"), 30).await
    else {
        return;
    };
    assert_reverted(&node, &result, &old, &new);
    let report = node.step(&result.operation_id).await;
    assert_eq!(report.phase, StepPhase::Reverted);
    assert_eq!(report.code, Some(StepCode::ActivationFailed));
    assert!(report.reason.unwrap().contains("exited 2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_degraded_system_reverts_and_names_the_failed_units_with_fleet_flake() {
    let Some((node, result, old, new)) =
        activate_r2(host("ok", "degraded", "6.6.1", "r2"), 30).await
    else {
        return;
    };
    assert_reverted(&node, &result, &old, &new);
    let report = node.step(&result.operation_id).await;
    assert_eq!(report.phase, StepPhase::Reverted);
    assert_eq!(report.failed_units, ["kcore-fleet-probe.service"]);
    assert_eq!(report.code, Some(StepCode::Degraded));
    assert!(report.reason.unwrap().contains("degraded"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_health_that_never_arrives_reverts_after_the_timeout_with_fleet_flake() {
    let Some((node, result, old, new)) = activate_r2(host("ok", "never", "6.6.1", "r2"), 1).await
    else {
        return;
    };
    assert_reverted(&node, &result, &old, &new);
    let report = node.step(&result.operation_id).await;
    assert_eq!(report.code, Some(StepCode::HealthTimeout));
    let reason = report.reason.unwrap();
    assert!(reason.contains("not healthy within 1 s"), "{reason}");
    assert!(reason.contains("starting"), "{reason}");
}

/// A kernel change: `auto` is a boot with a trial reboot; the activation ends asking for it.
async fn trial_boot(r2_health: &str) -> Option<(FleetNode, String, PathBuf, PathBuf)> {
    let (mut node, id, old, new) = trial_boot_asked(r2_health).await?;
    let booted = node.reboot().await;
    assert_eq!(booted, new, "the one-shot entry boots the new generation");
    Some((node, id, old, new))
}

async fn trial_boot_asked(r2_health: &str) -> Option<(FleetNode, String, PathBuf, PathBuf)> {
    let fleet = Fleet::new()?;
    let r1 = fleet.commit(&[("node-1", host("ok", "ok", "6.6.1", "r1"))]);
    let r2 = fleet.commit(&[("node-1", host("ok", r2_health, "6.12.0", "r2"))]);
    let node = FleetNode::new(&fleet, &r1, None, None).await;
    let old = node.link("run/current-system");
    let (_, prepared) = node.prepare(&fleet, &r2).await;
    assert_eq!(prepared.reboot_required, Some(true));
    let new = PathBuf::from(prepared.store_path.unwrap());
    let id = node.activate(&new, "auto", 5).await;
    let (_, result) = follow(node.admin(), &id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    let report = node.step(&id).await;
    assert_eq!(
        (report.phase, report.goal.as_deref(), report.reboots),
        (StepPhase::Rebooting, Some("boot"), 1)
    );
    // Booted once; the old generation stays the default; nothing activated now.
    assert_eq!(
        node.efi("LoaderEntryOneShot").as_deref(),
        Some("nixos-generation-2.conf")
    );
    assert_eq!(
        node.efi("LoaderEntryDefault").as_deref(),
        Some("nixos-generation-1.conf")
    );
    assert_eq!(node.link("run/current-system"), old);
    assert_eq!(node.log("activations"), [format!("boot {}", new.display())]);
    assert_eq!(node.log("reboots").len(), 1);
    Some((node, id, old, new))
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_kernel_change_boots_a_trial_and_a_healthy_one_becomes_the_default_with_fleet_flake()
 {
    let Some((node, id, _old, new)) = trial_boot("ok").await else {
        return;
    };
    let report = node.wait_phase(&id, StepPhase::Succeeded).await;
    assert_eq!(
        report.generation.unwrap().store_path,
        new.display().to_string()
    );
    assert_eq!(
        node.efi("LoaderEntryDefault").as_deref(),
        Some("nixos-generation-2.conf")
    );
    assert_eq!(node.log("reboots").len(), 1);
    // The activation record is gone: a new activation is accepted.
    let again = node.activate(&new, "switch", 5).await;
    let (_, result) = follow(node.admin(), &again).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_kernel_change_unhealthy_after_the_trial_boot_reverts_with_one_reboot_with_fleet_flake()
 {
    let Some((mut node, id, old, _new)) = trial_boot("degraded").await else {
        return;
    };
    // The agent asks for the revert boot after it saved why (a real reboot ends it there).
    for _ in 0..600 {
        if node.log("reboots").len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = node.step(&id).await;
    assert_eq!(report.phase, StepPhase::Rebooting);
    assert_eq!(report.reboots, 2, "{report:?}");
    assert_eq!(report.failed_units, ["kcore-fleet-probe.service"]);
    assert_eq!(node.log("reboots").len(), 2);
    assert_eq!(
        node.efi("LoaderEntryDefault").as_deref(),
        Some("nixos-generation-1.conf")
    );
    assert_eq!(node.link("nix/var/nix/profiles/system"), old);
    let booted = node.reboot().await;
    assert_eq!(booted, old);
    let report = node.wait_phase(&id, StepPhase::Reverted).await;
    assert_eq!(report.code, Some(StepCode::Degraded));
    assert!(report.reason.unwrap().contains("degraded"));
    // At most one revert reboot: none after it.
    assert_eq!(node.log("reboots").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_agent_restart_mid_activation_reattaches_without_a_second_activation_with_fleet_flake()
 {
    let Some(fleet) = Fleet::new() else { return };
    let r1 = fleet.commit(&[("node-1", host("ok", "ok", "6.6.1", "r1"))]);
    let r2 = fleet.commit(&[("node-1", host("ok", "ok", "6.6.1", "r2"))]);
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("open");
    let mut node = FleetNode::new(&fleet, &r1, Some(&gate), None).await;
    let (_, prepared) = node.prepare(&fleet, &r2).await;
    let new = PathBuf::from(prepared.store_path.unwrap());
    let id = node.activate(&new, "switch", 30).await;
    // The stand-in logged the activation and waits at the gate.
    for _ in 0..600 {
        if !node.log("activations").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        node.log("activations"),
        [format!("switch {}", new.display())]
    );
    node.stop().await;
    node.start().await;
    // Re-attached: the system lane is held, a second activation is refused.
    let err = node
        .admin()
        .post_json::<_, OperationStarted>("/v1/rollout/activate", &json!({"storePath": new}))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "REBUILD_IN_PROGRESS");
    std::fs::write(&gate, "").unwrap();
    let (events, result) = follow(node.admin(), &id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    assert!(events.iter().any(
        |e| matches!(e, OperationEvent::Step { name } if name.starts_with("re-attach to unit"))
    ));
    assert_eq!(node.link("run/current-system"), new);
    assert_eq!(
        node.log("activations"),
        [format!("switch {}", new.display())],
        "activated once"
    );
    assert_eq!(node.step(&id).await.phase, StepPhase::Succeeded);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_a_trial_entry_that_never_comes_up_falls_back_and_reverts_with_fleet_flake() {
    let Some((mut node, id, old, _new)) = trial_boot_asked("ok").await else {
        return;
    };
    let booted = node.reboot_failing_oneshot().await;
    assert_eq!(
        booted, old,
        "the old default boots after the failed one-shot"
    );
    let report = node.wait_phase(&id, StepPhase::Reverted).await;
    assert_eq!(report.code, Some(StepCode::TrialBootFailed));
    assert!(report.reason.unwrap().contains("did not come up"));
    assert_eq!(node.link("nix/var/nix/profiles/system"), old);
    assert_eq!(
        node.efi("LoaderEntryDefault").as_deref(),
        Some("nixos-generation-1.conf")
    );
    // Back on the old system already: no revert reboot.
    assert_eq!(node.log("reboots").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_switch_answered_100_falls_back_to_a_trial_boot_with_fleet_flake() {
    let Some(fleet) = Fleet::new() else { return };
    let r1 = fleet.commit(&[("node-1", host("ok", "ok", "6.6.1", "r1"))]);
    // Same kernel, a new init: only switch-to-configuration can tell (exit 100).
    let mut r2_host = host("ok", "ok", "6.6.1", "r2");
    r2_host["init"] = json!("systemd 2");
    let r2 = fleet.commit(&[("node-1", r2_host)]);
    let node = FleetNode::new(&fleet, &r1, None, None).await;
    let (_, prepared) = node.prepare(&fleet, &r2).await;
    assert_eq!(prepared.reboot_required, Some(false));
    let new = PathBuf::from(prepared.store_path.unwrap());
    let id = node.activate(&new, "auto", 5).await;
    let (events, result) = follow(node.admin(), &id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    assert!(
        output_lines(&events)
            .iter()
            .any(|l| l.contains("exited 100"))
    );
    let report = node.step(&id).await;
    assert_eq!(
        (report.phase, report.goal.as_deref()),
        (StepPhase::Rebooting, Some("boot"))
    );
    assert_eq!(
        node.log("activations"),
        [
            format!("switch {}", new.display()),
            format!("boot {}", new.display())
        ]
    );
    assert_eq!(
        node.efi("LoaderEntryOneShot").as_deref(),
        Some("nixos-generation-2.conf")
    );
}

/// nixpkgs' switch inhibitors: r2 changes the value of an inhibitor r1 has too, so its
/// switch-to-configuration refuses `switch` ("Pre-switch checks failed", exit 1, as the
/// stand-in models it). Even asked for `switch`, the agent goes to `boot` and a trial
/// boot, which passes the gate and becomes the default.
#[tokio::test(flavor = "multi_thread")]
async fn rollout_a_switch_inhibitor_that_changed_turns_the_switch_into_a_trial_boot_with_fleet_flake()
 {
    let Some(fleet) = Fleet::new() else { return };
    let mut r1_host = host("ok", "ok", "6.6.1", "r1");
    r1_host["inhibitors"] = json!({"dbus": "dbus-1.14", "systemd": "257"});
    let r1 = fleet.commit(&[("node-1", r1_host)]);
    let mut r2_host = host("ok", "ok", "6.6.1", "r2");
    r2_host["inhibitors"] = json!({"dbus": "dbus-1.16", "systemd": "257", "new": "x"});
    let r2 = fleet.commit(&[("node-1", r2_host)]);
    let mut node = FleetNode::new(&fleet, &r1, None, None).await;
    let (_, prepared) = node.prepare(&fleet, &r2).await;
    assert_eq!(prepared.reboot_required, Some(true), "{prepared:?}");
    assert_eq!(prepared.reboot_reasons, ["switch-inhibitors"]);
    let new = PathBuf::from(prepared.store_path.unwrap());
    // The stand-in refuses the switch as nixpkgs would: what the agent must not run.
    let refused = std::process::Command::new(new.join("bin/switch-to-configuration"))
        .arg("switch")
        .env("KCORE_FAKE_ROOT", node.root(""))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Pre-switch checks failed"));
    std::fs::remove_file(node.root("var/log/kcore-fleet/activations")).unwrap();

    let id = node.activate(&new, "switch", 5).await;
    let (_, result) = follow(node.admin(), &id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    let report = node.step(&id).await;
    assert_eq!(
        (report.phase, report.goal.as_deref()),
        (StepPhase::Rebooting, Some("boot"))
    );
    assert_eq!(node.log("activations"), [format!("boot {}", new.display())]);
    assert_eq!(node.reboot().await, new);
    let report = node.wait_phase(&id, StepPhase::Succeeded).await;
    assert_eq!(report.reboots, 1);
    assert_eq!(
        node.efi("LoaderEntryDefault").as_deref(),
        Some("nixos-generation-2.conf")
    );
}

/// `POST /v1/rollout/plan`: evaluated on the node, nothing built or changed. The target
/// toplevel of a revision nobody built is named, and still absent from the store after.
#[tokio::test(flavor = "multi_thread")]
async fn rollout_plan_evaluates_the_host_paths_and_reboot_verdict_without_building_with_fleet_flake()
 {
    let Some(fleet) = Fleet::new() else { return };
    let r1 = fleet.commit(&[("node-1", host("ok", "ok", "6.6.1", "r1"))]);
    // Labels unique to this test run, so no earlier run built these.
    let unique = format!("plan-{}", std::process::id());
    let r2 = fleet.commit(&[("node-1", host("ok", "ok", "6.6.1", &unique))]);
    let r3 = fleet.commit(&[("node-1", host("ok", "ok", &format!("6.12-{unique}"), "r3"))]);
    let r4 = fleet.commit(&[("node-2", host("ok", "ok", "6.6.1", "r4"))]);
    let node = FleetNode::new(&fleet, &r1, None, None).await;
    let plan = |rev: String| {
        let body = json!({"flakeRef": fleet.flake_ref(), "flakeRev": rev});
        let admin = node.admin().clone();
        async move {
            admin
                .post_json::<_, kcore_api::rollout::HostPlan>("/v1/rollout/plan", &body)
                .await
                .unwrap()
        }
    };
    let installed = node.link("run/current-system");

    let same = plan(r2.clone()).await;
    assert!(same.host_exists && same.error.is_none(), "{same:?}");
    assert_eq!(same.host, "node-1");
    assert_eq!(same.current_system.as_deref(), installed.to_str());
    assert_eq!(same.reboot_required, Some(false), "{same:?}");
    let target = PathBuf::from(same.target_system.clone().unwrap());
    assert!(
        !target.exists(),
        "evaluated, not built: {}",
        target.display()
    );
    assert!(!same.up_to_date);
    // What nix build makes of it is the path the plan named.
    assert_eq!(fleet.build(&r2, "node-1", &node.node.path("r2")), target);

    let kernel = plan(r3).await;
    assert_eq!(kernel.reboot_required, Some(true));
    assert_eq!(
        kernel.reboot_reasons,
        ["kernel", "initrd", "kernel-modules"]
    );
    assert!(!Path::new(kernel.target_system.as_deref().unwrap()).exists());

    let missing = plan(r4).await;
    assert!(!missing.host_exists);
    assert_eq!(missing.hosts, ["node-2"]);

    let current = plan(r1).await;
    assert!(current.up_to_date, "{current:?}");
    // Nothing changed on the node.
    assert_eq!(generation_count(&node), 1);
    assert!(node.log("activations").is_empty());

    let err = node
        .admin()
        .post_json::<_, kcore_api::rollout::HostPlan>(
            "/v1/rollout/plan",
            &json!({"flakeRef": "path:/etc/nixos", "flakeRev": r2}),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_FIELD");
    assert!(err.to_string().contains("flakeRef"), "{err}");
}

/// What a GRUB node's grub.cfg boots by default ("NixOS - Default") and its grubenv's
/// one-shot `next_entry`.
fn grub_state(node: &FleetNode) -> (PathBuf, String) {
    let cfg = std::fs::read_to_string(node.root("boot/grub/grub.cfg")).unwrap();
    let mut lines = cfg
        .lines()
        .skip_while(|l| l.trim() != "menuentry \"NixOS - Default\" {");
    let init = lines
        .nth(1)
        .unwrap()
        .split_whitespace()
        .find_map(|w| w.strip_prefix("init="))
        .unwrap()
        .to_string();
    let next = std::fs::read_to_string(node.root("boot/grub/grubenv"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("next_entry=").map(str::to_string))
        .unwrap_or_default();
    (PathBuf::from(init.strip_suffix("/init").unwrap()), next)
}

/// A node that boots with GRUB (nixpkgs' install-grub.pl layout, as the stand-in writes
/// it): a kernel change is a trial boot through `grub-reboot` with the previous system
/// installed as "NixOS - Default" again; healthy, the new one becomes the default; a later
/// unhealthy one is reverted with one more reboot into the default.
#[tokio::test(flavor = "multi_thread")]
async fn rollout_grub_trial_boots_use_grub_reboot_and_keep_the_old_default_until_healthy_with_fleet_flake()
 {
    let Some(fleet) = Fleet::new() else { return };
    let r1 = fleet.commit(&[("node-1", host("ok", "ok", "6.6.1", "r1"))]);
    let r2 = fleet.commit(&[("node-1", host("ok", "ok", "6.12.0", "r2"))]);
    let r3 = fleet.commit(&[("node-1", host("ok", "never", "6.13.0", "r3"))]);
    let mut node = FleetNode::new_grub(&fleet, &r1).await;
    let old = node.link("run/current-system");
    assert_eq!(grub_state(&node), (old.clone(), String::new()));

    let (_, prepared) = node.prepare(&fleet, &r2).await;
    let new = PathBuf::from(prepared.store_path.unwrap());
    let id = node.activate(&new, "auto", 5).await;
    let (_, result) = follow(node.admin(), &id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    // The old system is the default again; generation 2 is booted once.
    let (default, next) = grub_state(&node);
    assert_eq!(default, old);
    assert!(
        next.starts_with("NixOS - All configurations>NixOS - Configuration 2 ("),
        "{next}"
    );
    assert!(
        node.efi("LoaderEntryOneShot").is_none(),
        "no bootctl on GRUB"
    );
    assert_eq!(node.reboot().await, new);
    let report = node.wait_phase(&id, StepPhase::Succeeded).await;
    assert_eq!(report.reboots, 1);
    assert_eq!(grub_state(&node), (new.clone(), String::new()));

    let (_, prepared) = node.prepare(&fleet, &r3).await;
    let bad = PathBuf::from(prepared.store_path.unwrap());
    let id = node.activate(&bad, "auto", 2).await;
    follow(node.admin(), &id).await;
    assert_eq!(grub_state(&node).0, new, "r2 stays the default");
    assert_eq!(node.reboot().await, bad);
    // Never healthy: the gate gives up after 2 s and asks for the revert boot.
    for _ in 0..300 {
        if node.log("reboots").len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.log("reboots").len(), 3, "trial 1, trial 2, its revert");
    assert_eq!(grub_state(&node), (new.clone(), String::new()));
    assert_eq!(node.reboot().await, new);
    let report = node.wait_phase(&id, StepPhase::Reverted).await;
    assert_eq!(report.reboots, 2);
    assert_eq!(node.link("nix/var/nix/profiles/system"), new);
}

/// A client of node-1 (its node certificate from `pki`) to the controller stand-in `url`.
fn node1_client(pki: &crate::support::Pki, url: String) -> kcore_net::Client {
    kcore_net::Client::new(
        vec![url],
        pki.client_tls(&pki.leaf(crate::support::Role::Node, "node-1")),
        kcore_net::ClientOptions::default(),
    )
    .unwrap()
}

/// Whether `done` comes true within `looks` looks, 100 ms apart.
async fn true_within(looks: u32, done: impl Fn() -> bool) -> bool {
    for _ in 0..looks {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    done()
}

/// The assignment loop polls through the newest client the registration loop handed it:
/// when the registration loop rebuilds its session (credentials reloaded from disk after
/// they could not be read, a new client with the certificate now on disk), the long poll
/// moves to that client instead of keeping the first one. Two controller stand-ins with
/// real mutual TLS: each client goes to one, so which one is polled shows which client is
/// used.
#[tokio::test(flavor = "multi_thread")]
async fn the_assignment_loop_polls_with_the_newest_client_the_registration_loop_made() {
    use crate::support::{Node, Pki, Role};
    let pki = Pki::new();
    let node = Node::new();
    let answers = || {
        [(
            "/v1/nodes/node-1/assignment".to_string(),
            serde_json::json!({ "token": "" }),
        )]
        .into_iter()
        .collect()
    };
    let (ctl1, ctl2) = (
        pki.leaf(Role::Controller, "ctl1"),
        pki.leaf(Role::Controller, "ctl2"),
    );
    let start =
        |leaf| kcore_net::testing::RecordingServer::start(pki.root.cert_pem(), leaf, answers());
    let (first, second) = (start(&ctl1).await.unwrap(), start(&ctl2).await.unwrap());
    let config = node.config(
        "install",
        None,
        serde_json::json!({
            "storage": { "filesystemVolumeDir": node.path("volumes"), "imageCacheDir": node.path("images") },
        }),
    );
    let agent = kcore_agent::Agent::new(config, kcore_agent::RuntimeOptions::default()).unwrap();
    let state = agent.state().clone();
    let client = |url: String| node1_client(&pki, url);
    let (clients, rx) = tokio::sync::watch::channel(Some(client(first.url())));
    let task = tokio::spawn(kcore_agent::rollout::assignment::run(
        state.clone(),
        rx,
        std::time::Duration::from_secs(1),
    ));
    let polled = |server: &kcore_net::testing::RecordingServer| {
        server
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /v1/nodes/node-1/assignment"))
    };
    assert!(
        true_within(100, || polled(&first)).await,
        "the first client never polled"
    );
    clients.send_replace(Some(client(second.url())));
    let moved = true_within(100, || polled(&second)).await;
    state.stopping.send_replace(true);
    task.await.unwrap();
    assert!(moved, "the loop kept polling with the first client");
}

/// A refused report of a `prepareOnly` step leaves the step open: controller stand-in A
/// tells node-1 to prepare ahead and answers every report `404` (what a peer that has not
/// replicated the `prepare-ahead` record yet answers); then B, reached through a new client
/// as after a failover, assigns the same step (same rollout, epoch and seq). The agent
/// activates the system it prepared for A, once, and reports the step to B. Before the
/// fix the refusal closed the step, B's assignment was ignored, and the rollout would have
/// waited for node-1 for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_report_while_preparing_ahead_leaves_the_step_open_for_its_assignment_with_fleet_flake()
 {
    use crate::support::Role;
    let Some(fleet) = Fleet::new() else { return };
    let r1 = fleet.commit(&[("node-1", host("ok", "ok", "6.6.1", "r1"))]);
    let r2 = fleet.commit(&[("node-1", host("ok", "ok", "6.6.1", "r2"))]);
    let node = FleetNode::installed(&fleet, &r1, None, None);
    let step = |prepare_only: bool| {
        json!({
            "rollout": "u1", "epoch": 1, "seq": 1,
            "prepare": {"flakeRef": fleet.flake_ref(), "flakeRev": r2},
            "mode": "switch", "healthTimeoutSeconds": 30, "prepareOnly": prepare_only,
        })
    };
    let assignment = "/v1/nodes/node-1/assignment".to_string();
    let report = format!("{assignment}/report");
    let refusing = [
        (
            assignment.clone(),
            json!({"token": "u1:1:1:prepare", "step": step(true)}),
        ),
        (
            report.clone(),
            json!({"$status": 404, "$body": {"error": {"code": "NOT_FOUND", "message": "rollout \"u1\" assigned node \"node-1\" no step 1"}}}),
        ),
    ];
    let assigning = [
        (
            assignment.clone(),
            json!({"token": "u1:1:1", "step": step(false)}),
        ),
        (report.clone(), json!({"recorded": true})),
    ];
    let pki = &node.pki;
    let start = |leaf, answers: [(String, serde_json::Value); 2]| {
        kcore_net::testing::RecordingServer::start(
            pki.root.cert_pem(),
            leaf,
            answers.into_iter().collect(),
        )
    };
    let (ctl_a, ctl_b) = (
        pki.leaf(Role::Controller, "a"),
        pki.leaf(Role::Controller, "b"),
    );
    let a = start(&ctl_a, refusing).await.unwrap();
    let b = start(&ctl_b, assigning).await.unwrap();
    let config = node.node.config("managed", Some(pki), node.extra.clone());
    let agent = kcore_agent::Agent::new(config, node.options.clone()).unwrap();
    let state = agent.state().clone();
    let client = |url: String| node1_client(pki, url);
    let (clients, rx) = tokio::sync::watch::channel(Some(client(a.url())));
    let task = tokio::spawn(kcore_agent::rollout::assignment::run(
        state.clone(),
        rx,
        std::time::Duration::from_secs(1),
    ));
    let reported = |server: &kcore_net::testing::RecordingServer, phase: &str| {
        let needle = format!("\"phase\":\"{phase}\"");
        server.requests().iter().any(|r| {
            r.starts_with("POST /v1/nodes/node-1/assignment/report") && r.contains(&needle)
        })
    };
    assert!(
        true_within(300, || reported(&a, "preparing")).await,
        "node-1 never reported its prepare to A: {:?}",
        a.requests()
    );
    clients.send_replace(Some(client(b.url())));
    let succeeded = true_within(300, || reported(&b, "succeeded")).await;
    state.stopping.send_replace(true);
    task.await.unwrap();
    assert!(succeeded, "B's assignment was not run: {:?}", b.requests());
    let new = fleet.build(&r2, "node-1", &node.node.path("expected-r2"));
    assert_eq!(node.link("run/current-system"), new);
    assert_eq!(
        node.log("activations"),
        [format!("switch {}", new.display())]
    );
    assert_eq!(node.built_systems().len(), 1, "prepared once");
}
