//! The VM commands against an in-process controller with real mutual TLS and a node
//! registered by the agent's own registration code: `kctl apply -f` with the operator
//! guide's VM manifest as written, `create vm` from flags, `get vms`, `describe vm`,
//! `vm stop|start`, and `delete vm` of a placed and of a never-placed VM.

use super::lab::{Lab, kctl, ok};
use super::support::text;

use kcore_api::cluster::{NodeReport, StorageBackend, StorageReport, VolumeMount};
use serde_json::Value;

/// The operator guide's manifest, as written.
const GUIDE: &str = r#"kind: VM
metadata: { name: my-vm, labels: {} }
spec:
  storageBackend: filesystem        # filesystem | lvm | zfs; picks the storage class
  storageSizeBytes: "40G"           # or a number of bytes; the operator guide's flag takes bytes
  image: https://images.example.invalid/debian-12.qcow2
  cpus: 1
  memoryBytes: "1G"
  dc: DC2                           # optional
  network: default                  # recorded; only "default" is accepted until networks exist
"#;

async fn vm_json(lab: &Lab, name: &str) -> Value {
    serde_json::from_str(&ok(
        kctl(lab.home(), &["get", "vm", name, "-o", "json"]).await
    ))
    .unwrap()
}

/// Polls `get vm NAME` until `check` holds (bounded: 10 s).
async fn wait_vm(lab: &Lab, name: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..50 {
        last = vm_json(lab, name).await;
        if check(&last) {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("timed out on vm {name}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_manifest_and_the_vm_commands() {
    let lab = Lab::start(false).await;
    let report = NodeReport {
        hostname: "hv-2".into(),
        dc_id: "DC2".into(),
        storage: StorageReport {
            backend: Some(StorageBackend::Filesystem),
            mounts: vec![VolumeMount {
                path: "/var/lib/kcore/volumes".into(),
                size_bytes: Some(200 << 30),
                free_bytes: Some(100 << 30),
            }],
            ..Default::default()
        },
        ..Default::default()
    };
    lab.join_with("node-2", report).await;

    let file = lab.home().join("vm.yaml");
    std::fs::write(&file, GUIDE).unwrap();
    let out = ok(kctl(lab.home(), &["apply", "-f", file.to_str().unwrap()]).await);
    assert_eq!(out, "vm/my-vm created\n");
    let placed = wait_vm(&lab, "my-vm", |v| v["status"]["node"] == "node-2").await;
    assert_eq!(placed["spec"]["storageSizeBytes"], 40u64 << 30);
    assert_eq!(placed["status"]["phase"], "Provisioning");

    // The same VM from flags is the same object: no change.
    let same = [
        "create",
        "vm",
        "my-vm",
        "--storage-backend",
        "filesystem",
        "--storage-size-bytes",
        "42949672960",
        "--dc",
        "DC2",
        "--image",
        "https://images.example.invalid/debian-12.qcow2",
    ];
    assert_eq!(ok(kctl(lab.home(), &same).await), "vm/my-vm unchanged\n");
    // One that fits nowhere stays Pending and says why.
    let big = [
        "create",
        "vm",
        "big",
        "--storage-backend",
        "filesystem",
        "--storage-size-bytes",
        "1TiB",
        "--cpus",
        "2",
        "--memory",
        "2GiB",
    ];
    assert_eq!(ok(kctl(lab.home(), &big).await), "vm/big created\n");
    let pending = wait_vm(&lab, "big", |v| v["status"]["phase"] == "Pending").await;
    let why = pending["status"]["message"].as_str().unwrap();
    assert!(
        why.starts_with("not enough space for 1.0 TiB") && why.ends_with("on node-2"),
        "{why}"
    );
    // A bad flag is named and nothing is sent.
    let bad = kctl(
        lab.home(),
        &[
            "create",
            "vm",
            "x",
            "--storage-backend",
            "lvm",
            "--storage-size-bytes",
            "40GB",
        ],
    )
    .await;
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("(--storage-size-bytes)"),
        "{}",
        text(&bad)
    );

    let table = ok(kctl(lab.home(), &["get", "vms"]).await);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "NODE", "BACKEND", "SIZE", "DC", "AGE"]
    );
    let row = table.lines().find(|l| l.starts_with("my-vm")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..7],
        [
            "my-vm",
            "Provisioning",
            "node-2",
            "filesystem",
            "40.0",
            "GiB",
            "DC2"
        ]
    );
    let wide = ok(kctl(lab.home(), &["get", "vms", "-o", "wide"]).await);
    assert!(wide.contains("VOLUME") && wide.contains("MEMORY"), "{wide}");
    let described = ok(kctl(lab.home(), &["describe", "vm", "my-vm"]).await);
    assert!(
        described.contains("Node:        node-2")
            && described.contains("Scheduled")
            && described.contains("Size:        40.0 GiB"),
        "{described}"
    );

    // stop / start: spec.running, a new generation each time.
    assert_eq!(
        ok(kctl(lab.home(), &["vm", "stop", "my-vm"]).await),
        "vm/my-vm configured\n"
    );
    let stopped = vm_json(&lab, "my-vm").await;
    assert_eq!(
        (
            stopped["spec"]["running"].clone(),
            stopped["metadata"]["generation"].clone()
        ),
        (false.into(), 2.into())
    );
    ok(kctl(lab.home(), &["vm", "start", "my-vm"]).await);
    let started = vm_json(&lab, "my-vm").await;
    assert!(started["spec"].get("running").is_none());
    assert_eq!(started["metadata"]["generation"], 3);

    // Delete: the never-placed one goes at once, the placed one waits for its node.
    assert_eq!(
        ok(kctl(lab.home(), &["delete", "vm", "big"]).await),
        "vm/big deleted\n"
    );
    let out = ok(kctl(lab.home(), &["delete", "vm", "my-vm"]).await);
    assert!(out.starts_with("vm/my-vm deletion requested: "), "{out}");
    assert_eq!(vm_json(&lab, "my-vm").await["status"]["phase"], "Deleting");
    lab.stop().await;
}
