//! VM volumes on real LVM in the QEMU storage bed (issue 17): the agent built on this host
//! runs `kcore-agent vm-reconcile` in the guest, once per step, with a desired list written
//! by this test, as the assignment loop would hand it over. The guest has no QEMU, so the
//! "running guest" is `tests/support/qemu-system-x86_64`, a stand-in that holds its volume
//! open in a unit of the systemd-run stand-in; real QEMU guests (and image import) are
//! shown on the host in kcore-agent's `tests/it/vm.rs`. The assertions read the reports and
//! the `lvs` JSON the payload recorded after each step.

#![allow(clippy::unwrap_used)] // test helpers may unwrap, like the tests themselves

use std::fs;

use std::time::Duration;

use kcore_storage_bed::testing::*;
use kcore_storage_bed::{BedOptions, Disk, Outcome, Run};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

fn vm(name: &str, generation: u64, desired: &str, size: u64, extra: Value) -> Value {
    let mut spec =
        json!({ "storageBackend": "lvm", "storageSizeBytes": size, "memoryBytes": "64M" });
    if let (Value::Object(s), Value::Object(e)) = (&mut spec, extra) {
        s.extend(e);
    }
    json!({ "name": name, "generation": generation, "desired": desired, "spec": spec })
}

/// Each step: `vm-reconcile` with `<step>.json`, its reports, exit code and the LVs after.
const PAYLOAD: &str = r#"set -u
A=/payload/kcore-agent
R="$KCORE_RESULTS"
DISK=/dev/disk/by-id/virtio-vm-lvm
LIN=/dev/disk/by-id/virtio-vm-linear
export TMPDIR=/run/tmp; mkdir -p "$TMPDIR"
pvcreate -q "$DISK" && vgcreate -q vg_kcore "$DISK"
lvcreate -q -y --type thin-pool -L 128M -n thinpool vg_kcore
# Someone else's LVs in the same VG: a plain one with data, and one named like a VM's.
lvcreate -q -y -L 8M -n foreign vg_kcore
printf precious >/run/p && dd if=/run/p of=/dev/vg_kcore/foreign conv=fsync 2>/dev/null
lvcreate -q -y -V 8M --thinpool vg_kcore/thinpool -n kcore-taken
pvcreate -q "$LIN" && vgcreate -q vg_linear "$LIN"
for vg in vg_kcore vg_linear; do
  cat >"/run/$vg.yaml" <<EOF
nodeId: bed
mode: install
storage: { backend: lvm, lvm: { vgName: $vg, lvPrefix: kcore- }, imageCacheDir: /run/images }
vm: { stateDir: /run/vms-$vg, logDir: /run/vmlogs, stopTimeoutSeconds: 2, accelerator: tcg }
binaries: { systemd-run: /payload/systemd-run, systemctl: /payload/systemctl, qemu-system-x86_64: /payload/qemu-system-x86_64 }
EOF
done
step() { # name vg
  echo "== vm-reconcile $1"
  "$A" --config "/run/$2.yaml" vm-reconcile "/payload/$1.json" >"$R/$1.out" 2>"$R/$1.err"
  echo $? >"$R/$1.rc"
  cat "$R/$1.out" "$R/$1.err"
  udevadm settle --timeout=30
  lvs --reportformat json --units b --nosuffix -o lv_name,vg_name,lv_size,lv_attr,pool_lv,lv_uuid >"$R/$1.lvs.json" 2>/dev/null
}
for s in create again resize-running stop-resize taken failed delete; do step "$s" vg_kcore; done
step linear vg_linear
step linear-delete vg_linear
dd if=/dev/vg_kcore/foreign bs=8 count=1 2>/dev/null >"$R/foreign.data"
exit 0
"#;

fn read(out: &Outcome, name: &str) -> String {
    out.result(name)
        .unwrap_or_else(|e| panic!("{name}: {e}\n{}", out.serial_log))
}

fn reports(out: &Outcome, step: &str) -> Value {
    let text = read(out, &format!("{step}.out"));
    assert_eq!(
        read(out, &format!("{step}.rc")).trim(),
        "0",
        "{step}: {}",
        read(out, &format!("{step}.err"))
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{step}: {e}: {text}"))
}

fn report<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["vms"]
        .as_array()
        .and_then(|v| v.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("no report for {name}: {r}"))
}

fn lvs(out: &Outcome, step: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&read(out, &format!("{step}.lvs.json"))).unwrap();
    v["report"][0]["lv"].as_array().cloned().unwrap_or_default()
}

fn lv<'a>(lvs: &'a [Value], vg: &str, name: &str) -> Option<&'a Value> {
    lvs.iter()
        .find(|l| l["vg_name"] == vg && l["lv_name"] == name)
}

fn size(v: &Value) -> u64 {
    v["lv_size"].as_str().unwrap().parse().unwrap()
}

#[test]
fn lvm_vm_volumes_create_once_refuse_a_resize_while_running_delete_exactly_theirs_and_leave_nothing_after_a_failed_create_with_qemu_and_systemd_run_stand_ins()
 {
    let agent = workspace_binary("kcore-agent", "kcore-agent");
    let Some(bed) = bed_or_skip(BedOptions::default()) else {
        return;
    };
    let payload = tempfile::tempdir().unwrap();
    let p = payload.path();
    write_exec(&p.join("run.sh"), PAYLOAD);
    fs::copy(&agent, p.join("kcore-agent")).unwrap();
    for s in ["systemd-run", "systemctl", "qemu-system-x86_64"] {
        fs::copy(support(s), p.join(s)).unwrap();
    }
    let steps = [
        (
            "create",
            json!([
                vm("vm1", 1, "running", 16 * MIB, json!({})),
                vm("vm2", 1, "stopped", 16 * MIB, json!({}))
            ]),
        ),
        (
            "again",
            json!([
                vm("vm1", 1, "running", 16 * MIB, json!({})),
                vm("vm2", 1, "stopped", 16 * MIB, json!({}))
            ]),
        ),
        (
            "resize-running",
            json!([vm("vm1", 2, "running", 32 * MIB, json!({}))]),
        ),
        (
            "stop-resize",
            json!([vm("vm1", 3, "stopped", 32 * MIB, json!({}))]),
        ),
        (
            "taken",
            json!([vm("taken", 1, "running", 8 * MIB, json!({}))]),
        ),
        (
            "failed",
            json!([vm(
                "vm3",
                1,
                "running",
                8 * MIB,
                json!({ "image": "/payload/no-such-image.raw" })
            )]),
        ),
        (
            "delete",
            json!([
                vm("vm1", 4, "deleted", 32 * MIB, json!({})),
                vm("vm2", 2, "deleted", 16 * MIB, json!({})),
                vm("taken", 2, "deleted", 8 * MIB, json!({})),
                vm("vm3", 2, "deleted", 8 * MIB, json!({}))
            ]),
        ),
        (
            "linear",
            json!([vm("vm4", 1, "stopped", 8 * MIB, json!({}))]),
        ),
        (
            "linear-delete",
            json!([vm("vm4", 2, "deleted", 8 * MIB, json!({}))]),
        ),
    ];
    for (name, list) in &steps {
        fs::write(p.join(format!("{name}.json")), list.to_string()).unwrap();
    }
    let out = bed
        .run(&Run {
            disks: vec![
                Disk::new("vm-lvm", 256 << 20),
                Disk::new("vm-linear", 64 << 20),
            ],
            tpm_state_dir: None,
            payload_dir: p.to_owned(),
            timeout: Duration::from_secs(900),
        })
        .unwrap();
    eprintln!("guest run took {:.1}s", out.wall.as_secs_f64());
    assert_eq!(out.exit_code, 0, "{}", out.serial_log);

    // Create: thin LVs <lvPrefix><vm> of exactly the size, in the VG's only thin pool.
    let r = reports(&out, "create");
    assert_eq!(report(&r, "vm1")["phase"], "Running", "{r}");
    assert_eq!(
        report(&r, "vm1")["volume"]["path"],
        "/dev/vg_kcore/kcore-vm1"
    );
    assert_eq!(report(&r, "vm2")["phase"], "Stopped", "{r}");
    let created = lvs(&out, "create");
    for name in ["kcore-vm1", "kcore-vm2"] {
        let l = lv(&created, "vg_kcore", name).unwrap_or_else(|| panic!("{name}: {created:?}"));
        assert_eq!(size(l), 16 * MIB);
        assert_eq!(l["pool_lv"], "thinpool");
        assert!(l["lv_attr"].as_str().unwrap().starts_with('V'), "thin: {l}");
    }

    // The same list again: the same volumes (same uuids), the guest not restarted.
    let r = reports(&out, "again");
    assert_eq!(report(&r, "vm1")["phase"], "Running");
    let again = lvs(&out, "again");
    assert_eq!(again.len(), created.len());
    for name in ["kcore-vm1", "kcore-vm2"] {
        assert_eq!(
            lv(&created, "vg_kcore", name).unwrap()["lv_uuid"],
            lv(&again, "vg_kcore", name).unwrap()["lv_uuid"],
            "{name} was recreated"
        );
    }

    // A bigger size while the guest runs: refused, the LV keeps its size.
    let r = reports(&out, "resize-running");
    let vm1 = report(&r, "vm1");
    assert_eq!(vm1["phase"], "Running");
    assert!(
        vm1["message"]
            .as_str()
            .unwrap()
            .contains("refused while the guest runs"),
        "{vm1}"
    );
    assert_eq!(
        size(lv(&lvs(&out, "resize-running"), "vg_kcore", "kcore-vm1").unwrap()),
        16 * MIB
    );
    // Stopped (the stand-in ignores the ACPI request, so its unit is stopped): then grown.
    let r = reports(&out, "stop-resize");
    assert_eq!(report(&r, "vm1")["phase"], "Stopped", "{r}");
    assert_eq!(
        size(lv(&lvs(&out, "stop-resize"), "vg_kcore", "kcore-vm1").unwrap()),
        32 * MIB
    );

    // An LV with a VM's name that the agent did not create: refused and untouched.
    let r = reports(&out, "taken");
    let taken = report(&r, "taken");
    assert_eq!(taken["phase"], "Failed");
    assert!(
        taken["message"].as_str().unwrap().contains("no record"),
        "{taken}"
    );

    // A create that fails after its LV was made (the image cannot be read): no LV left.
    let r = reports(&out, "failed");
    assert_eq!(report(&r, "vm3")["phase"], "Failed", "{r}");
    assert!(lv(&lvs(&out, "failed"), "vg_kcore", "kcore-vm3").is_none());
    // The image step (qemu-img, absent in the guest) comes after the LV was created.
    let msg = report(&r, "vm3")["message"].as_str().unwrap().to_string();
    assert!(msg.contains("qemu-img"), "failed at the image step: {msg}");

    // Delete: exactly the agent's LVs go; the foreign ones and the pool stay, with data.
    let r = reports(&out, "delete");
    let mut deleted: Vec<&str> = r["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    deleted.sort_unstable();
    assert_eq!(deleted, ["taken", "vm1", "vm2", "vm3"]);
    let after = lvs(&out, "delete");
    for gone in ["kcore-vm1", "kcore-vm2", "kcore-vm3"] {
        assert!(
            lv(&after, "vg_kcore", gone).is_none(),
            "{gone} left over: {after:?}"
        );
    }
    for kept in ["foreign", "kcore-taken", "thinpool"] {
        assert!(
            lv(&after, "vg_kcore", kept).is_some(),
            "{kept} was removed: {after:?}"
        );
    }
    assert_eq!(read(&out, "foreign.data"), "precious");

    // A VG without a thin pool: a linear LV, deleted again.
    let r = reports(&out, "linear");
    assert_eq!(report(&r, "vm4")["phase"], "Stopped", "{r}");
    let l = lvs(&out, "linear");
    let vm4 = lv(&l, "vg_linear", "kcore-vm4").unwrap();
    assert!(
        vm4["lv_attr"].as_str().unwrap().starts_with('-'),
        "linear: {vm4}"
    );
    assert_eq!(size(vm4), 8 * MIB);
    reports(&out, "linear-delete");
    assert!(lv(&lvs(&out, "linear-delete"), "vg_linear", "kcore-vm4").is_none());
}

/// The ZFS steps: a pool on one disk with the layout's `tank0/kcore` dataset, someone
/// else's zvols beside the agent's (one with data, one named like a VM's).
const ZFS_PAYLOAD: &str = r#"set -u
A=/payload/kcore-agent
R="$KCORE_RESULTS"
export TMPDIR=/run/tmp; mkdir -p "$TMPDIR"
zpool create -f tank0 /dev/disk/by-id/virtio-vm-zfs
zfs create -o mountpoint=none tank0/kcore
zfs create -V 8M tank0/kcore/taken
zfs create -V 8M tank0/foreign
udevadm settle --timeout=30
printf precious >/run/p && dd if=/run/p of=/dev/zvol/tank0/foreign conv=fsync 2>/dev/null
cat >/run/zfs.yaml <<END
nodeId: bed
mode: install
storage: { backend: zfs, zfs: { poolName: tank0, datasetPrefix: kcore }, imageCacheDir: /run/images }
vm: { stateDir: /run/vms-zfs, logDir: /run/vmlogs, stopTimeoutSeconds: 2, accelerator: tcg }
binaries: { systemd-run: /payload/systemd-run, systemctl: /payload/systemctl, qemu-system-x86_64: /payload/qemu-system-x86_64 }
END
for s in create again resize-running stop-resize taken failed delete; do
  echo "== vm-reconcile $s"
  "$A" --config /run/zfs.yaml vm-reconcile "/payload/$s.json" >"$R/$s.out" 2>"$R/$s.err"
  echo $? >"$R/$s.rc"
  cat "$R/$s.out" "$R/$s.err"
  udevadm settle --timeout=30
  zfs list -H -p -o name,volsize,guid -t volume >"$R/$s.zfs.txt" 2>&1
done
dd if=/dev/zvol/tank0/foreign bs=8 count=1 2>/dev/null >"$R/foreign.data"
exit 0
"#;

/// `name -> (volsize, guid)` of the zvols after a step.
fn zvols(out: &Outcome, step: &str) -> std::collections::BTreeMap<String, (u64, String)> {
    read(out, &format!("{step}.zfs.txt"))
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('\t');
            let (name, size, guid) = (cols.next()?, cols.next()?, cols.next()?);
            Some((name.to_string(), (size.parse().ok()?, guid.to_string())))
        })
        .collect()
}

#[test]
fn zfs_vm_volumes_create_once_refuse_a_resize_while_running_delete_exactly_theirs_and_leave_nothing_after_a_failed_create_with_qemu_and_systemd_run_stand_ins()
 {
    let agent = workspace_binary("kcore-agent", "kcore-agent");
    let Some(bed) = bed_or_skip(BedOptions { zfs: true }) else {
        return;
    };
    let payload = tempfile::tempdir().unwrap();
    let p = payload.path();
    write_exec(&p.join("run.sh"), ZFS_PAYLOAD);
    fs::copy(&agent, p.join("kcore-agent")).unwrap();
    for s in ["systemd-run", "systemctl", "qemu-system-x86_64"] {
        fs::copy(support(s), p.join(s)).unwrap();
    }
    let zvm = |name: &str, generation: u64, desired: &str, size: u64, extra: Value| {
        let mut v = vm(name, generation, desired, size, extra);
        v["spec"]["storageBackend"] = json!("zfs");
        v
    };
    let steps = [
        (
            "create",
            json!([
                zvm("vm1", 1, "running", 16 * MIB, json!({})),
                zvm("vm2", 1, "stopped", 16 * MIB, json!({}))
            ]),
        ),
        (
            "again",
            json!([
                zvm("vm1", 1, "running", 16 * MIB, json!({})),
                zvm("vm2", 1, "stopped", 16 * MIB, json!({}))
            ]),
        ),
        (
            "resize-running",
            json!([zvm("vm1", 2, "running", 32 * MIB, json!({}))]),
        ),
        (
            "stop-resize",
            json!([zvm("vm1", 3, "stopped", 32 * MIB, json!({}))]),
        ),
        (
            "taken",
            json!([zvm("taken", 1, "running", 8 * MIB, json!({}))]),
        ),
        (
            "failed",
            json!([zvm(
                "vm3",
                1,
                "running",
                8 * MIB,
                json!({ "image": "/payload/no-such-image.raw" })
            )]),
        ),
        (
            "delete",
            json!([
                zvm("vm1", 4, "deleted", 32 * MIB, json!({})),
                zvm("vm2", 2, "deleted", 16 * MIB, json!({})),
                zvm("taken", 2, "deleted", 8 * MIB, json!({})),
                zvm("vm3", 2, "deleted", 8 * MIB, json!({}))
            ]),
        ),
    ];
    for (name, list) in &steps {
        fs::write(p.join(format!("{name}.json")), list.to_string()).unwrap();
    }
    let out = bed
        .run(&Run {
            disks: vec![Disk::new("vm-zfs", 256 << 20)],
            tpm_state_dir: None,
            payload_dir: p.to_owned(),
            timeout: Duration::from_secs(900),
        })
        .unwrap();
    eprintln!("guest run took {:.1}s", out.wall.as_secs_f64());
    assert_eq!(out.exit_code, 0, "{}", out.serial_log);

    let r = reports(&out, "create");
    assert_eq!(report(&r, "vm1")["phase"], "Running", "{r}");
    assert_eq!(
        report(&r, "vm1")["volume"]["path"],
        "/dev/zvol/tank0/kcore/vm1"
    );
    assert_eq!(report(&r, "vm2")["phase"], "Stopped", "{r}");
    let created = zvols(&out, "create");
    for name in ["tank0/kcore/vm1", "tank0/kcore/vm2"] {
        assert_eq!(
            created.get(name).map(|v| v.0),
            Some(16 * MIB),
            "{name}: {created:?}"
        );
    }
    let again = zvols(&out, "again");
    assert_eq!(again, created, "the same zvols (same guids), nothing new");
    assert_eq!(report(&reports(&out, "again"), "vm1")["phase"], "Running");

    let r = reports(&out, "resize-running");
    let vm1 = report(&r, "vm1");
    assert!(
        vm1["message"]
            .as_str()
            .unwrap()
            .contains("refused while the guest runs"),
        "{vm1}"
    );
    assert_eq!(zvols(&out, "resize-running")["tank0/kcore/vm1"].0, 16 * MIB);
    assert_eq!(
        report(&reports(&out, "stop-resize"), "vm1")["phase"],
        "Stopped"
    );
    assert_eq!(zvols(&out, "stop-resize")["tank0/kcore/vm1"].0, 32 * MIB);

    let r = reports(&out, "taken");
    assert_eq!(report(&r, "taken")["phase"], "Failed");
    assert!(
        report(&r, "taken")["message"]
            .as_str()
            .unwrap()
            .contains("no record")
    );

    let r = reports(&out, "failed");
    let msg = report(&r, "vm3")["message"].as_str().unwrap().to_string();
    assert!(msg.contains("qemu-img"), "failed at the image step: {msg}");
    assert!(!zvols(&out, "failed").contains_key("tank0/kcore/vm3"));

    let r = reports(&out, "delete");
    assert_eq!(r["deleted"].as_array().unwrap().len(), 4, "{r}");
    let after = zvols(&out, "delete");
    let names: Vec<&str> = after.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["tank0/foreign", "tank0/kcore/taken"],
        "exactly the agent's went"
    );
    assert_eq!(after["tank0/kcore/taken"], created["tank0/kcore/taken"]);
    assert_eq!(read(&out, "foreign.data"), "precious");
}
