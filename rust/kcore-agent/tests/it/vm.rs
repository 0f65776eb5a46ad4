//! The VM reconciler on this machine's filesystem backend, driven directly
//! (`kcore_agent::vm::reconcile`): real QEMU (TCG) guests in units started through the
//! systemd-run stand-in, images served over HTTP from 127.0.0.1, real files allocated with
//! fallocate. The guests are boot sectors assembled for these tests (source below): the
//! firmware (SeaBIOS) boots them from the VM's volume, they write a marker to the volume's
//! second sector with BIOS `int 13h` and then power off through the ACPI PM1a control
//! register (`poweroff`) or idle forever, ignoring the ACPI power button (`stay`).
//!
//! ```text
//! .code16                      # as --32; ld -m elf_i386 -Ttext 0x7c00 --oformat binary
//!   cli; xor %ax,%ax; mov %ax,%ds; mov %ax,%es; mov %ax,%ss; mov $0x7c00,%sp; sti
//!   mov $0x0301,%ax; mov $0x0002,%cx; xor %dh,%dh; mov $marker,%bx; int $0x13
//!   jc idle                    # `stay`: jmp idle
//!   mov $0x604,%dx; mov $0x2000,%ax; out %ax,%dx   # q35 PM1a_CNT: SLP_EN, S5
//! idle: hlt; jmp idle
//! marker: .ascii "KCORE-VM-MARKER: written by the guest from its boot sector\n"
//!   .org 510; .word 0xAA55
//! ```

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kcore_agent::config::{AcceleratorChoice, StorageConfig, VmConfig};
use kcore_agent::tools::Tools;
use kcore_agent::vm::{VmHost, reconcile};
use kcore_api::vm::{NodeVm, VmPhase, VmReport, VmReports};

use super::support::{json, support, unit_result_helper};

const MARKER: &[u8] = b"KCORE-VM-MARKER: written by the guest from its boot sector\n";

/// The boot sector that writes the marker and powers off.
pub(super) fn poweroff_sector() -> Vec<u8> {
    let mut s = vec![
        0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, 0xbc, 0x00, 0x7c, 0xfb, 0xb8, 0x01,
        0x03, 0xb9, 0x02, 0x00, 0x30, 0xf6, 0xbb, 0x26, 0x7c, 0xcd, 0x13, 0x72, 0x07, 0xba, 0x04,
        0x06, 0xb8, 0x00, 0x20, 0xef, 0xf4, 0xeb, 0xfd,
    ];
    s.extend_from_slice(MARKER);
    s.resize(510, 0);
    s.extend_from_slice(&[0x55, 0xaa]);
    s
}

/// The same, idling instead of powering off (`jc idle` became `jmp idle`: 0x72 -> 0xeb).
pub(super) fn stay_sector() -> Vec<u8> {
    let mut s = poweroff_sector();
    assert_eq!(s[26], 0x72);
    s[26] = 0xeb;
    s
}

pub(super) fn tools_present() -> bool {
    let ok = ["qemu-system-x86_64", "qemu-img"]
        .iter()
        .all(|t| which_on_path(t).is_some());
    if !ok {
        eprintln!("SKIP: qemu-system-x86_64 or qemu-img is not on PATH");
    }
    ok
}

fn which_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

/// Names unique to this test process, so runs never share a stand-in unit.
pub(super) fn name(base: &str) -> String {
    format!("{base}-{}", std::process::id())
}

pub(super) struct Rig {
    dir: tempfile::TempDir,
    host: VmHost,
    images: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>>,
    hits: Arc<AtomicUsize>,
    base_url: String,
}

impl Rig {
    pub(super) async fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let volumes = dir.path().join("volumes");
        std::fs::create_dir_all(&volumes).unwrap();
        let binaries = serde_json::from_value(json!({
            "systemd-run": support("systemd-run"),
            "systemctl": support("systemctl"),
        }))
        .unwrap();
        let host = VmHost {
            storage: StorageConfig {
                filesystem_volume_dir: volumes,
                image_cache_dir: dir.path().join("images"),
                ..StorageConfig::default()
            },
            vm: VmConfig {
                state_dir: dir.path().join("vms"),
                log_dir: dir.path().join("logs"),
                // These hosts are paravirtualised; KVM aborts or crawls (docs/storage-bed.md).
                accelerator: AcceleratorChoice::Tcg,
                stop_timeout_seconds: 3,
                image_max_bytes: 64 << 20,
                download_timeout_seconds: 60,
            },
            tools: Tools::new(binaries),
            extra_env: Vec::new(),
            unit_result_helper: unit_result_helper(),
        };
        let images: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>> =
            Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let (i, h) = (images.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/{file}",
            axum::routing::get(
                move |axum::extract::Path(file): axum::extract::Path<String>| {
                    let (i, h) = (i.clone(), h.clone());
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        match i.lock().unwrap().get(&file) {
                            Some(b) => Ok(b.clone()),
                            None => Err(axum::http::StatusCode::NOT_FOUND),
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Rig {
            dir,
            host,
            images,
            hits,
            base_url,
        }
    }

    /// A raw image of `size` bytes starting with `sector`, served as `file`; `qcow2`
    /// converts it first (the agent converts it back into the volume).
    pub(super) fn serve(&self, file: &str, sector: &[u8], size: u64, qcow2: bool) -> String {
        let raw = self.dir.path().join(format!("{file}.src.raw"));
        let mut bytes = sector.to_vec();
        bytes.resize(size as usize, 0);
        std::fs::write(&raw, &bytes).unwrap();
        let served = if qcow2 {
            let out = self.dir.path().join(format!("{file}.src.qcow2"));
            let st = std::process::Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(&raw)
                .arg(&out)
                .status()
                .unwrap();
            assert!(st.success());
            std::fs::read(out).unwrap()
        } else {
            bytes
        };
        self.images.lock().unwrap().insert(file.into(), served);
        format!("{}/{file}", self.base_url)
    }

    fn volume(&self, vm: &str) -> PathBuf {
        self.host
            .storage
            .filesystem_volume_dir
            .join(format!("{vm}.raw"))
    }

    async fn pass(&self, desired: &[NodeVm]) -> (VmReports, Vec<VmReports>) {
        let seen = std::sync::Mutex::new(Vec::new());
        let sink = |r: &VmReports| seen.lock().unwrap().push(r.clone());
        let last = reconcile(&self.host, desired, &sink).await;
        (last, seen.into_inner().unwrap())
    }

    async fn report(&self, vm: &NodeVm) -> VmReport {
        let (r, _) = self.pass(std::slice::from_ref(vm)).await;
        let found = r.vms.iter().find(|x| x.name == vm.name).cloned();
        found.unwrap_or_else(|| panic!("no report for {}: {r:?}", vm.name))
    }
}

fn node_vm(name: &str, generation: u64, desired: &str, spec: serde_json::Value) -> NodeVm {
    let mut s =
        json!({ "storageBackend": "filesystem", "storageSizeBytes": "4M", "memoryBytes": "64M" });
    super::support::merge(&mut s, spec);
    serde_json::from_value(json!({
        "name": name, "generation": generation, "desired": desired, "spec": s,
    }))
    .unwrap()
}

pub(super) fn stand_in_pid(vm: &str) -> Option<String> {
    let dir = std::env::var_os("TMPDIR").map_or(PathBuf::from("/tmp"), PathBuf::from);
    std::fs::read_to_string(
        dir.join("kcore-systemd-stand-in")
            .join(format!("kcore-vm-{vm}.pid")),
    )
    .ok()
}

pub(super) fn marker_on(volume: &Path) -> bool {
    let bytes = std::fs::read(volume).unwrap();
    bytes[512..512 + MARKER.len()] == *MARKER
}

/// Re-runs the reconciler until `vm` reports `phase` (bounded: 120 passes, 250 ms apart).
async fn until_phase(rig: &Rig, vm: &NodeVm, phase: VmPhase) -> VmReport {
    let mut last = None;
    for _ in 0..120 {
        let r = rig.report(vm).await;
        if r.phase == phase {
            return r;
        }
        last = Some(r);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{} never reached {phase:?}: {last:?}", vm.name);
}

#[tokio::test]
async fn vm_image_from_127_0_0_1_boots_under_qemu_with_systemd_run_stand_in_and_its_marker_is_on_the_volume()
 {
    if !tools_present() {
        return;
    }
    let rig = Rig::new().await;
    let url = rig.serve("guest.qcow2", &poweroff_sector(), 1 << 20, true);
    let a = name("boot-a");
    let vm = node_vm(&a, 1, "running", json!({ "image": url }));
    let (last, seen) = rig.pass(std::slice::from_ref(&vm)).await;
    let r = &last.vms[0];
    assert!(
        matches!(r.phase, VmPhase::Running | VmPhase::Stopped),
        "started: {r:?}"
    );
    let phases: Vec<VmPhase> = seen.iter().map(|s| s.vms[0].phase).collect();
    assert!(
        phases.contains(&VmPhase::Provisioning) && phases.contains(&VmPhase::Starting),
        "{phases:?}"
    );
    let notes: Vec<String> = seen
        .iter()
        .filter_map(|s| s.vms[0].message.clone())
        .collect();
    assert!(
        notes
            .iter()
            .any(|m| m.starts_with("downloading ") && m.contains('%')),
        "download progress is reported: {notes:?}"
    );
    let volume = rig.volume(&a);
    assert_eq!(
        r.volume.as_ref().unwrap().path,
        volume.display().to_string()
    );
    assert_eq!(r.volume.as_ref().unwrap().size_bytes, 4 << 20);

    // The guest powers itself off; it is then reported Stopped and not started again.
    let stopped = until_phase(&rig, &vm, VmPhase::Stopped).await;
    assert!(
        stopped
            .message
            .as_deref()
            .unwrap_or("")
            .contains("powered off by itself"),
        "{stopped:?}"
    );
    assert!(
        marker_on(&volume),
        "the guest wrote its marker to the volume"
    );
    let meta = std::fs::metadata(&volume).unwrap();
    assert_eq!(meta.len(), 4 << 20, "exactly the requested size");
    assert!(
        meta.blocks() * 512 >= 4 << 20,
        "preallocated, not sparse: {} blocks",
        meta.blocks()
    );
    assert_eq!(
        rig.report(&vm).await.phase,
        VmPhase::Stopped,
        "not restarted"
    );
    assert_eq!(stand_in_pid(&a), None, "no unit left");

    // The node booted again (another boot id in the record): the guest is started again
    // and writes its marker again.
    let record_file = rig.host.vm.state_dir.join(format!("{a}.json"));
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_file).unwrap()).unwrap();
    assert_eq!(record["started"]["generation"], 1);
    record["started"]["bootId"] = json!("an-earlier-boot");
    std::fs::write(&record_file, record.to_string()).unwrap();
    let mut volume_bytes = std::fs::read(&volume).unwrap();
    volume_bytes[512..512 + MARKER.len()].fill(0);
    std::fs::write(&volume, &volume_bytes).unwrap();
    let r = rig.report(&vm).await;
    assert!(
        matches!(r.phase, VmPhase::Running | VmPhase::Stopped),
        "started again: {r:?}"
    );
    until_phase(&rig, &vm, VmPhase::Stopped).await;
    assert!(marker_on(&volume), "the guest ran again after the new boot");

    // A second VM of the same image uses the cache: no second download.
    let hits = rig.hits.load(Ordering::SeqCst);
    let b = name("boot-b");
    let vm_b = node_vm(&b, 1, "stopped", json!({ "image": url }));
    let r = rig.report(&vm_b).await;
    assert_eq!(r.phase, VmPhase::Stopped, "{r:?}");
    assert_eq!(
        rig.hits.load(Ordering::SeqCst),
        hits,
        "the cached image was reused"
    );
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(rig.host.vm.state_dir.join(format!("{b}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(record["volume"]["imageSha256"].as_str().unwrap().len(), 64);

    // Delete removes exactly its volume.
    let (last, _) = rig
        .pass(&[node_vm(&a, 2, "deleted", json!({ "image": url }))])
        .await;
    assert_eq!(last.deleted, vec![a.clone()]);
    assert!(!volume.exists() && rig.volume(&b).exists());
    assert!(!rig.host.vm.state_dir.join(format!("{a}.json")).exists());
}

#[tokio::test]
async fn a_running_guest_survives_an_agent_restart_refuses_a_resize_and_is_killed_when_it_ignores_acpi_with_systemd_run_stand_in()
 {
    if !tools_present() {
        return;
    }
    let rig = Rig::new().await;
    let url = rig.serve("stay.raw", &stay_sector(), 1 << 20, false);
    let s = name("stay");
    let vm = node_vm(&s, 1, "running", json!({ "image": url }));
    let r = rig.report(&vm).await;
    assert_eq!(r.phase, VmPhase::Running, "{r:?}");
    let pid = stand_in_pid(&s).expect("the guest's unit runs");

    // An agent that starts again (a new host, same configuration) finds the guest running
    // and leaves it alone.
    let restarted = VmHost { ..rig.host.clone() };
    let (again, _) = {
        let sink = |_: &VmReports| {};
        (
            reconcile(&restarted, std::slice::from_ref(&vm), &sink).await,
            (),
        )
    };
    assert_eq!(again.vms[0].phase, VmPhase::Running);
    assert_eq!(
        stand_in_pid(&s).as_deref(),
        Some(pid.as_str()),
        "not started twice"
    );

    // A bigger volume is refused while the guest runs.
    let bigger = node_vm(
        &s,
        2,
        "running",
        json!({ "image": url, "storageSizeBytes": "8M" }),
    );
    let r = rig.report(&bigger).await;
    assert_eq!(r.phase, VmPhase::Running);
    assert!(
        r.message
            .as_deref()
            .unwrap_or("")
            .contains("refused while the guest runs"),
        "{r:?}"
    );
    assert_eq!(std::fs::metadata(rig.volume(&s)).unwrap().len(), 4 << 20);

    // Stopped: the guest ignores the ACPI request, so its unit is stopped after the bound;
    // then the resize is applied.
    let stop = node_vm(
        &s,
        3,
        "stopped",
        json!({ "image": url, "storageSizeBytes": "8M" }),
    );
    let r = rig.report(&stop).await;
    assert_eq!(r.phase, VmPhase::Stopped, "{r:?}");
    assert!(
        r.message
            .as_deref()
            .unwrap_or("")
            .contains("did not power off"),
        "{r:?}"
    );
    assert_eq!(stand_in_pid(&s), None);
    assert!(super::support::process_gone(pid.trim()));
    let meta = std::fs::metadata(rig.volume(&s)).unwrap();
    assert_eq!(meta.len(), 8 << 20, "grown once stopped");
    assert!(
        meta.blocks() * 512 >= 8 << 20,
        "the new part is allocated too"
    );
    assert!(marker_on(&rig.volume(&s)), "the data stays");
    let smaller = node_vm(
        &s,
        4,
        "stopped",
        json!({ "image": url, "storageSizeBytes": "4M" }),
    );
    let r = rig.report(&smaller).await;
    assert!(
        r.message
            .as_deref()
            .unwrap_or("")
            .contains("volumes only grow"),
        "{r:?}"
    );
    assert_eq!(std::fs::metadata(rig.volume(&s)).unwrap().len(), 8 << 20);

    // Stopped by the agent, then wanted running again under the same generation: started
    // (only a guest that ended by itself waits for a new generation).
    let again = node_vm(
        &s,
        4,
        "running",
        json!({ "image": url, "storageSizeBytes": "8M" }),
    );
    assert_eq!(rig.report(&again).await.phase, VmPhase::Running);
    assert!(stand_in_pid(&s).is_some());
    let (last, _) = rig
        .pass(&[node_vm(&s, 5, "deleted", json!({ "image": url }))])
        .await;
    assert_eq!(last.deleted, vec![s.clone()]);
    assert_eq!(
        stand_in_pid(&s),
        None,
        "the guest is stopped before its volume goes"
    );
    assert!(!rig.volume(&s).exists());
}

#[tokio::test]
async fn create_is_idempotent_foreign_volumes_are_untouched_and_failed_creates_leave_nothing() {
    if !tools_present() {
        return;
    }
    let rig = Rig::new().await;
    let once = name("once");
    let vm = node_vm(&once, 1, "stopped", json!({}));
    assert_eq!(rig.report(&vm).await.phase, VmPhase::Stopped);
    let ino = std::fs::metadata(rig.volume(&once)).unwrap().ino();
    assert_eq!(rig.report(&vm).await.phase, VmPhase::Stopped);
    assert_eq!(
        std::fs::metadata(rig.volume(&once)).unwrap().ino(),
        ino,
        "same volume"
    );
    let files = std::fs::read_dir(&rig.host.storage.filesystem_volume_dir)
        .unwrap()
        .count();
    assert_eq!(files, 1);

    // A volume the agent did not create: refused, never changed, never deleted.
    let foreign = name("foreign");
    std::fs::write(rig.volume(&foreign), b"someone else's").unwrap();
    let r = rig
        .report(&node_vm(&foreign, 1, "running", json!({})))
        .await;
    assert_eq!(r.phase, VmPhase::Failed);
    assert!(r.message.as_deref().unwrap().contains("no record"), "{r:?}");
    let (last, _) = rig
        .pass(&[node_vm(&foreign, 2, "deleted", json!({}))])
        .await;
    assert_eq!(last.deleted, vec![foreign.clone()]);
    assert_eq!(
        std::fs::read(rig.volume(&foreign)).unwrap(),
        b"someone else's"
    );

    // A download that fails (404), a checksum that differs, an image larger than the volume:
    // the volume made for it is removed, and the same generation is not tried again.
    for (i, spec) in [
        json!({ "image": format!("{}/missing.raw", rig.base_url) }),
        json!({ "image": rig.serve("sum.raw", &poweroff_sector(), 1 << 20, false),
                "imageSha256": "0".repeat(64) }),
        json!({ "image": rig.serve("big.raw", &poweroff_sector(), 8 << 20, false) }),
    ]
    .into_iter()
    .enumerate()
    {
        let n = name(&format!("fail{i}"));
        let vm = node_vm(&n, 1, "running", spec);
        let r = rig.report(&vm).await;
        assert_eq!(r.phase, VmPhase::Failed, "{r:?}");
        assert!(
            !rig.volume(&n).exists(),
            "{n}: the partial volume was removed"
        );
        let hits = rig.hits.load(Ordering::SeqCst);
        let r2 = rig.report(&vm).await;
        assert_eq!(r2.phase, VmPhase::Failed);
        assert!(r2.message.unwrap().contains("not tried again"));
        assert_eq!(rig.hits.load(Ordering::SeqCst), hits, "no new download");
        assert!(!rig.volume(&n).exists());
    }
    let r = rig
        .report(&node_vm(
            &name("fail0"),
            1,
            "running",
            json!({ "image": format!("{}/missing.raw", rig.base_url) }),
        ))
        .await;
    assert!(r.message.unwrap().contains("404"));

    // Not enough space: the largest free space is named.
    let huge = node_vm(
        &name("huge"),
        1,
        "stopped",
        json!({ "storageSizeBytes": "1000000G" }),
    );
    let r = rig.report(&huge).await;
    assert_eq!(r.phase, VmPhase::Failed);
    assert!(r.message.unwrap().contains("largest free space"));

    // A guest that cannot start (QEMU exits at once): Failed, and not started again on the
    // next pass for the same generation.
    let counter = rig.dir.path().join("starts");
    let failing = rig.dir.path().join("failing-qemu");
    std::fs::write(
        &failing,
        format!("#!/bin/sh\necho start >>{}\nexit 1\n", counter.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &failing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut broken = rig.host.clone();
    broken.tools = Tools::new(
        serde_json::from_value(json!({
            "systemd-run": support("systemd-run"),
            "systemctl": support("systemctl"),
            "qemu-system-x86_64": failing,
        }))
        .unwrap(),
    );
    let nostart = node_vm(&name("nostart"), 1, "running", json!({}));
    let sink = |_: &VmReports| {};
    let r = reconcile(&broken, std::slice::from_ref(&nostart), &sink).await;
    assert_eq!(r.vms[0].phase, VmPhase::Failed, "{r:?}");
    assert!(
        r.vms[0]
            .message
            .as_deref()
            .unwrap()
            .contains("ended right after it started")
    );
    let r = reconcile(&broken, std::slice::from_ref(&nostart), &sink).await;
    assert_eq!(r.vms[0].phase, VmPhase::Failed, "{r:?}");
    assert!(
        r.vms[0]
            .message
            .as_deref()
            .unwrap()
            .contains("exit-code exited 1"),
        "reported from the unit's end: {r:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        1,
        "not started again for the same generation"
    );

    // A name that is not a resource name: refused before anything runs.
    let bad = node_vm("Bad_Name", 1, "running", json!({}));
    let r = rig.report(&bad).await;
    assert!(r.message.unwrap().contains("metadata.name"));
    assert!(!rig.volume("Bad_Name").exists());
}

#[tokio::test]
async fn the_assignment_loop_hands_its_vms_to_the_reconciler_and_posts_the_reports_to_a_controller_stand_in()
 {
    use super::support::{Node, Pki, Role};
    if !tools_present() {
        return;
    }
    let pki = Pki::new();
    let node = Node::new();
    let looped = name("looped");
    let vm = node_vm(&looped, 7, "stopped", json!({}));
    let answers = [
        (
            "/v1/nodes/node-1/assignment".to_string(),
            json!({ "token": "t1", "vms": [vm] }),
        ),
        ("/v1/nodes/node-1/vms/report".to_string(), json!({})),
    ]
    .into_iter()
    .collect();
    let controller = kcore_net::testing::RecordingServer::start(
        pki.root.cert_pem(),
        &pki.leaf(Role::Controller, "ctl1"),
        answers,
    )
    .await
    .unwrap();
    std::fs::create_dir_all(node.path("volumes")).unwrap();
    let config = node.config(
        "install",
        None,
        json!({
            "storage": { "filesystemVolumeDir": node.path("volumes"), "imageCacheDir": node.path("images") },
            "vm": { "stateDir": node.path("vms"), "logDir": node.path("vmlogs"), "accelerator": "tcg" },
        }),
    );
    let options = kcore_agent::RuntimeOptions {
        unit_result_helper: unit_result_helper(),
        ..kcore_agent::RuntimeOptions::default()
    };
    let agent = kcore_agent::Agent::new(config, options).unwrap();
    let state = agent.state().clone();
    let client = kcore_net::Client::new(
        vec![controller.url()],
        pki.client_tls(&pki.leaf(Role::Node, "node-1")),
        kcore_net::ClientOptions::default(),
    )
    .unwrap();
    let (_clients_tx, clients_rx) = tokio::sync::watch::channel(Some(client));
    let task = tokio::spawn(kcore_agent::rollout::assignment::run(
        state.clone(),
        clients_rx,
        Duration::from_secs(5),
    ));
    let mut posted = None;
    for _ in 0..100 {
        posted = controller.requests().into_iter().find(|r| {
            r.starts_with("POST /v1/nodes/node-1/vms/report ") && r.contains("\"Stopped\"")
        });
        if posted.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    state.stopping.send_replace(true);
    task.await.unwrap();
    let posted = posted.expect("the VM's report reached the controller");
    let body: VmReports = serde_json::from_str(posted.splitn(3, ' ').nth(2).unwrap()).unwrap();
    let r = &body.vms[0];
    assert_eq!(
        (r.name.as_str(), r.observed_generation),
        (looped.as_str(), 7)
    );
    let path = node.path("volumes").join(format!("{looped}.raw"));
    assert_eq!(r.volume.as_ref().unwrap().path, path.display().to_string());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 << 20);
}
