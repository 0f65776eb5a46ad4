//! VMs end to end (issue 17): a real controller in-process on 127.0.0.1 and a real agent
//! (managed, filesystem backend) that registers, heartbeats its storage report and
//! long-polls its assignment. The operator's side is the admin mTLS client doing what kctl
//! does (`PUT /v1/vms/{name}` as `kctl apply`, `DELETE` as `kctl delete vm`); the guest is
//! `vm`'s boot sector under real QEMU (TCG) in a unit of the systemd-run stand-in, its image
//! served over HTTP from 127.0.0.1. What the test reads back is the controller's VM status
//! and the node's volume directory.

use kcore_api::cluster::{NodeList, NodeStatus};
use kcore_api::resource::Deleted;
use kcore_api::vm::{VmPhase, VmStatus};
use serde_json::Value;

use super::support::*;
use super::vm::{Rig, marker_on, name, poweroff_sector, stand_in_pid, stay_sector, tools_present};

/// The managed agent of node `node-1` on the filesystem backend, talking to `controller`;
/// the same directories each time, so a second start is the same node restarting.
async fn start_agent(node: &Node, pki: &Pki, controller: &str) -> Running {
    start(
        node.config(
            "managed",
            Some(pki),
            json!({
                "controllers": [controller],
                "heartbeatIntervalSeconds": 1,
                "storage": {
                    "backend": "filesystem",
                    "filesystemVolumeDir": node.path("volumes"),
                    "imageCacheDir": node.path("images"),
                },
                "vm": {
                    "stateDir": node.path("vms"),
                    "logDir": node.path("vmlogs"),
                    "accelerator": "tcg",
                    "stopTimeoutSeconds": 3,
                },
            }),
        ),
        RuntimeOptions {
            unit_result_helper: unit_result_helper(),
            ..RuntimeOptions::default()
        },
    )
    .await
}

/// The VM object as the controller has it; `None` once it is gone (404).
async fn vm_object(admin: &Client, vm: &str) -> Option<Value> {
    match admin.get_json::<Value>(&format!("/v1/vms/{vm}")).await {
        Ok(v) => Some(v),
        Err(err) if code(&err) == "NOT_FOUND" => None,
        Err(err) => panic!("GET /v1/vms/{vm}: {err}"),
    }
}

async fn apply(admin: &Client, object: &Value) {
    let name = object["metadata"]["name"].as_str().unwrap();
    let _: Value = admin
        .put_json(&format!("/v1/vms/{name}"), object)
        .await
        .unwrap();
}

/// `kctl delete vm`, then waits (bounded, 60 s) until the node confirmed and the object went.
async fn delete_and_wait_gone(admin: &Client, vm: &str) {
    let deleted: Deleted = admin.delete(&format!("/v1/vms/{vm}")).await.unwrap();
    assert!(
        deleted.pending.is_some(),
        "placed, so it waits for the node: {deleted:?}"
    );
    for _ in 0..600 {
        if vm_object(admin, vm).await.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{vm}: the object is still there after the delete");
}

fn with_running(manifest: &Value, running: bool) -> Value {
    let mut m = manifest.clone();
    m["spec"]["running"] = json!(running);
    m
}

fn status_of(object: &Value) -> VmStatus {
    serde_json::from_value(object.get("status").cloned().unwrap_or(json!({}))).unwrap()
}

/// Polls the VM's status until `check` holds (every 100 ms, at most 2 minutes: a bounded
/// wait for a state; TCG guests boot slowly on a busy machine).
async fn until_status(
    admin: &Client,
    vm: &str,
    what: &str,
    check: impl Fn(&VmStatus) -> bool,
) -> VmStatus {
    let mut last = None;
    for _ in 0..1200 {
        if let Some(object) = vm_object(admin, vm).await {
            let s = status_of(&object);
            if check(&s) {
                return s;
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{vm} never: {what}; last status {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_applied_to_a_real_controller_is_placed_run_and_deleted_by_a_real_agent_with_systemd_run_stand_in()
 {
    if !tools_present() {
        return;
    }
    let pki = Pki::new();
    let ctl = real_controller(&pki).await;
    let admin = Client::new(
        vec![format!("https://{}", ctl.addr)],
        pki.client_tls(&pki.leaf(Role::Admin, "alice")),
        ClientOptions::default(),
    )
    .unwrap();

    let node = Node::new();
    let volumes = node.path("volumes");
    std::fs::create_dir_all(&volumes).unwrap();
    let agent = start_agent(&node, &pki, &ctl.addr).await;
    for _ in 0..600 {
        let list: NodeList = admin.get_json("/v1/nodes").await.unwrap();
        if list.items.iter().any(|n| n.status == NodeStatus::Ready) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A second VM file next to ours that the agent did not create: the delete leaves it.
    let foreign = volumes.join("someone-else.raw");
    std::fs::write(&foreign, b"not kcore's").unwrap();

    let images = Rig::new().await;
    let url = images.serve("guest.qcow2", &poweroff_sector(), 1 << 20, true);
    let vm = name("e2e");
    let manifest = json!({
        "kind": "VM",
        "metadata": {"name": vm},
        "spec": {
            "storageBackend": "filesystem",
            "storageSizeBytes": "4M",
            "image": url,
            "cpus": 1,
            "memoryBytes": "64M",
            "network": "default",
        },
    });
    let _: Value = admin
        .put_json(&format!("/v1/vms/{vm}"), &manifest)
        .await
        .unwrap();

    // Placed on the node, provisioned, started; the guest writes its marker and powers off.
    let stopped = until_status(&admin, &vm, "Stopped after running", |s| {
        s.phase == Some(VmPhase::Stopped) && s.observed_generation == 1
    })
    .await;
    assert_eq!(stopped.node.as_deref(), Some("node-1"), "{stopped:?}");
    let path = volumes.join(format!("{vm}.raw"));
    let volume = stopped
        .volume
        .clone()
        .expect("the node reported its volume");
    assert_eq!(volume.path, path.display().to_string());
    assert_eq!(volume.size_bytes, 4 << 20);
    assert!(marker_on(&path), "the guest wrote its marker to the volume");
    let phases: Vec<&str> = stopped
        .events
        .iter()
        .filter(|e| e.reason == "PhaseChanged")
        .filter_map(|e| e.message.split(" on node ").next())
        .collect();
    let running = phases.iter().position(|p| *p == "Running");
    let last_stopped = phases.iter().rposition(|p| *p == "Stopped");
    eprintln!("phases reported: {phases:?}");
    assert!(
        running.is_some() && running < last_stopped,
        "Running, then Stopped: {phases:?} ({stopped:?})"
    );
    assert!(
        stopped
            .events
            .iter()
            .any(|e| e.reason == "Scheduled" && e.message.contains("node-1")),
        "{stopped:?}"
    );

    // `kctl vm stop` then `kctl vm start`: `spec.running` in an apply, a new generation
    // each. Stopped at generation 2; started again at 3, the guest runs (its marker, wiped
    // here while it is stopped, is back) and powers off again.
    apply(&admin, &with_running(&manifest, false)).await;
    until_status(&admin, &vm, "Stopped at generation 2", |s| {
        s.phase == Some(VmPhase::Stopped) && s.observed_generation == 2
    })
    .await;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[512..1024].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    assert!(!marker_on(&path));
    apply(&admin, &with_running(&manifest, true)).await;
    let again = until_status(&admin, &vm, "run and stop again at generation 3", |s| {
        s.phase == Some(VmPhase::Stopped)
            && s.observed_generation == 3
            && s.events
                .last()
                .is_some_and(|e| e.message.starts_with("Stopped"))
            && s.events
                .iter()
                .filter(|e| e.message.starts_with("Running"))
                .count()
                == 2
    })
    .await;
    assert!(marker_on(&path), "the guest ran again: {again:?}");
    assert_eq!(again.volume, Some(volume), "the same volume");

    // A second VM on the node whose guest idles and ignores ACPI: Running on the
    // controller; `running: false` makes the agent stop it (killed after
    // `stopTimeoutSeconds`), `true` starts it again.
    let idle = name("e2e-idle");
    let idle_manifest = json!({
        "kind": "VM",
        "metadata": {"name": idle},
        "spec": {
            "storageBackend": "filesystem",
            "storageSizeBytes": "4M",
            "image": images.serve("idle.raw", &stay_sector(), 1 << 20, false),
            "memoryBytes": "64M",
        },
    });
    apply(&admin, &idle_manifest).await;
    let running = until_status(&admin, &idle, "Running", |s| {
        s.phase == Some(VmPhase::Running) && s.observed_generation == 1
    })
    .await;
    assert_eq!(running.node.as_deref(), Some("node-1"));
    assert!(stand_in_pid(&idle).is_some(), "its unit runs");
    apply(&admin, &with_running(&idle_manifest, false)).await;
    let stopped = until_status(&admin, &idle, "Stopped by the agent", |s| {
        s.phase == Some(VmPhase::Stopped) && s.observed_generation == 2
    })
    .await;
    assert!(
        stopped
            .message
            .as_deref()
            .unwrap_or("")
            .contains("did not power off"),
        "{stopped:?}"
    );
    assert_eq!(stand_in_pid(&idle), None);
    apply(&admin, &with_running(&idle_manifest, true)).await;
    until_status(&admin, &idle, "Running again", |s| {
        s.phase == Some(VmPhase::Running) && s.observed_generation == 3
    })
    .await;
    let idle_path = volumes.join(format!("{idle}.raw"));

    // The agent restarts while the guest runs: the new agent finds the guest's unit and
    // leaves it (same process), and acts on the next generation (an extra CPU, which a
    // running guest takes at its next start).
    let pid = stand_in_pid(&idle).expect("its unit runs");
    agent.stop().await;
    let agent = start_agent(&node, &pki, &ctl.addr).await;
    let mut more_cpus = idle_manifest.clone();
    more_cpus["spec"]["cpus"] = json!(2);
    apply(&admin, &more_cpus).await;
    until_status(
        &admin,
        &idle,
        "generation 4 seen by the restarted agent",
        |s| s.phase == Some(VmPhase::Running) && s.observed_generation == 4,
    )
    .await;
    assert_eq!(
        stand_in_pid(&idle).as_deref(),
        Some(pid.as_str()),
        "not started twice"
    );

    // Delete of the stopped VM: the node removes exactly its volume; the running one, its
    // file and the foreign file stay.
    delete_and_wait_gone(&admin, &vm).await;
    assert!(!path.exists(), "its volume was removed");
    assert!(!node.path("vms").join(format!("{vm}.json")).exists());
    assert!(idle_path.exists());
    assert_eq!(std::fs::read(&foreign).unwrap(), b"not kcore's");
    assert_eq!(
        status_of(&vm_object(&admin, &idle).await.unwrap()).phase,
        Some(VmPhase::Running)
    );

    // Delete of the running VM: its guest is stopped before its volume goes.
    delete_and_wait_gone(&admin, &idle).await;
    assert_eq!(stand_in_pid(&idle), None, "no unit left");
    assert!(!idle_path.exists());
    assert_eq!(std::fs::read(&foreign).unwrap(), b"not kcore's");

    agent.stop().await;
    let _ = ctl.stop.send(());
    ctl.task.await.unwrap().unwrap();
}
