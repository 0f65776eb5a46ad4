//! kcore-agent against real block devices in the QEMU storage bed: `provision-disk` first
//! run / same id / changed id / a grown PV / a foreign VG left untouched / a refused
//! foreign PV / the retry marker. The agent binary built on this host (Debian bookworm,
//! like the guest) runs inside the guest; the assertions read what the payload recorded.

#![allow(clippy::unwrap_used)] // test helpers may unwrap, like the tests themselves

use std::fs;
use std::path::Path;
use std::time::Duration;

use kcore_storage_bed::testing::*;
use kcore_storage_bed::{BedOptions, Disk, Run};

/// The guest side: each provision run records its exit code, log, `vgs`/`lvs` JSON, the
/// stored id and the LV uuids under `$KCORE_RESULTS/<name>.*`.
const PROVISION_PAYLOAD: &str = r#"set -u
A=/payload/kcore-agent
R="$KCORE_RESULTS"
DATA=/dev/disk/by-id/virtio-prov-data
OTHER=/dev/disk/by-id/virtio-prov-other
THIRD=/dev/disk/by-id/virtio-prov-third
MARKERS=/run/kcore-markers
settle() { udevadm settle --timeout=30; }
# New partitions: re-read the table and let udev make the by-partlabel links.
reread() { settle; partprobe "$1" || true; udevadm trigger --subsystem-match=block; settle; }
record() { # name
  vgs --reportformat json --units b --nosuffix -o vg_name,vg_size,vg_free,pv_count,lv_count >"$R/$1.vgs.json" 2>/dev/null
  lvs --reportformat json --units b --nosuffix -o lv_name,vg_name,lv_size,lv_attr,lv_uuid >"$R/$1.lvs.json" 2>/dev/null
  if [ -e /dev/vg_kcore/kcore-node-id ]; then head -c 64 /dev/vg_kcore/kcore-node-id | tr -d '\0' >"$R/$1.id"; fi
  if [ -e "$MARKERS/provision-disk-vg_kcore.retry" ]; then cp "$MARKERS/provision-disk-vg_kcore.retry" "$R/$1.marker"; fi
  dd if=/dev/vg_other/keep bs=8 count=1 2>/dev/null >"$R/$1.other"
}
prov() { # name label vg node-id
  echo "== provision-disk $1"
  "$A" provision-disk --partition-label "$2" --volume-group "$3" --pool pool --node-id "$4" \
    --marker-dir "$MARKERS" >"$R/$1.log" 2>&1
  echo $? >"$R/$1.rc"
  cat "$R/$1.log"
  settle
  record "$1"
}

# A foreign VG with data on another disk: it must survive everything below.
pvcreate -q "$OTHER" && vgcreate -q vg_other "$OTHER" && lvcreate -q -y -L 8M -n keep vg_other
printf precious >/run/p && dd if=/run/p of=/dev/vg_other/keep conv=fsync 2>/dev/null

# The data partition: the first half of its disk, so it can grow later.
sgdisk -n1:0:+192M -c1:kcore-data "$DATA"; reread "$DATA"

prov missing no-such-label vg_kcore node-1
prov first kcore-data vg_kcore node-1
prov same kcore-data vg_kcore node-1
prov changed kcore-data vg_kcore node-2

# Grow the partition in place (same start, to the end of the disk).
vgchange -q -an vg_kcore
blockdev --getsize64 "$DATA-part1" >"$R/part.before"
sgdisk -d1 -n1:0:0 -c1:kcore-data "$DATA"
# The kernel must see the new size: partx resizes a known partition in place.
partx -u "$DATA" || partprobe "$DATA"; reread "$DATA"
blockdev --getsize64 "$DATA-part1" >"$R/part.after"
prov grown kcore-data vg_kcore node-2

# A partition that is a PV of another VG is refused, and that VG is left alone.
sgdisk -n1:0:0 -c1:kcore-foreign "$THIRD"; reread "$THIRD"
pvcreate -q "$THIRD-part1" && vgcreate -q vg_third "$THIRD-part1"
prov foreign kcore-foreign vg_kcore node-2
vgs --reportformat json -o vg_name,pv_count >"$R/foreign.after.json"
exit 0
"#;

fn read(out: &kcore_storage_bed::Outcome, name: &str) -> String {
    out.result(name)
        .unwrap_or_else(|e| panic!("{name}: {e}\n{}", out.serial_log))
}

fn lvs(out: &kcore_storage_bed::Outcome, run: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&read(out, &format!("{run}.lvs.json"))).unwrap();
    v["report"][0]["lv"].as_array().cloned().unwrap_or_default()
}

fn lv<'a>(lvs: &'a [serde_json::Value], vg: &str, name: &str) -> Option<&'a serde_json::Value> {
    lvs.iter()
        .find(|l| l["vg_name"] == vg && l["lv_name"] == name)
}

fn size(v: &serde_json::Value) -> u64 {
    v["lv_size"]
        .as_str()
        .unwrap()
        .trim_end_matches('B')
        .parse()
        .unwrap()
}

#[test]
fn provision_disk_first_same_changed_grown_foreign_and_retry_marker() {
    let agent = workspace_binary("kcore-agent", "kcore-agent");
    let Some(bed) = bed_or_skip(BedOptions::default()) else {
        return;
    };
    let payload = tempfile::tempdir().unwrap();
    write_exec(&payload.path().join("run.sh"), PROVISION_PAYLOAD);
    fs::copy(&agent, payload.path().join("kcore-agent")).unwrap();
    let out = bed
        .run(&Run {
            disks: vec![
                Disk::new("prov-data", 384 << 20),
                Disk::new("prov-other", 64 << 20),
                Disk::new("prov-third", 64 << 20),
            ],
            tpm_state_dir: None,
            payload_dir: payload.path().to_owned(),
            timeout: Duration::from_secs(900),
        })
        .unwrap();
    eprintln!("guest run took {:.1}s", out.wall.as_secs_f64());
    assert_eq!(out.exit_code, 0, "{}", out.serial_log);

    // A missing partition fails at its step and leaves the retry marker...
    assert_ne!(read(&out, "missing.rc").trim(), "0");
    assert!(read(&out, "missing.log").contains("step resolve partition"));
    assert!(read(&out, "missing.marker").contains("resolve partition"));
    // ...which the next run clears.
    assert!(
        out.result("first.marker").is_err(),
        "marker not cleared:\n{}",
        out.serial_log
    );

    // First run: PV, VG, thin pool and the metadata LV with the id.
    assert_eq!(
        read(&out, "first.rc").trim(),
        "0",
        "{}",
        read(&out, "first.log")
    );
    assert_eq!(read(&out, "first.id").trim(), "kcore-node-id=node-1");
    let first = lvs(&out, "first");
    let pool = lv(&first, "vg_kcore", "pool").expect("thin pool");
    assert!(pool["lv_attr"].as_str().unwrap().starts_with('t'), "{pool}");
    assert!(lv(&first, "vg_kcore", "kcore-node-id").is_some());

    // Same id: nothing changes (same LVs, same uuids).
    assert_eq!(read(&out, "same.rc").trim(), "0");
    assert!(
        read(&out, "same.log").contains("nothing to do"),
        "{}",
        read(&out, "same.log")
    );
    let same = lvs(&out, "same");
    for name in ["pool", "kcore-node-id"] {
        assert_eq!(
            lv(&first, "vg_kcore", name).unwrap()["lv_uuid"],
            lv(&same, "vg_kcore", name).unwrap()["lv_uuid"],
            "{name} was recreated"
        );
    }

    // Changed id: our VG is reset and recreated with the new id.
    assert_eq!(
        read(&out, "changed.rc").trim(),
        "0",
        "{}",
        read(&out, "changed.log")
    );
    assert_eq!(read(&out, "changed.id").trim(), "kcore-node-id=node-2");
    let changed = lvs(&out, "changed");
    assert_ne!(
        lv(&first, "vg_kcore", "pool").unwrap()["lv_uuid"],
        lv(&changed, "vg_kcore", "pool").unwrap()["lv_uuid"]
    );

    // Grown PV: the pool is extended, the id kept.
    assert_eq!(
        read(&out, "grown.rc").trim(),
        "0",
        "{}",
        read(&out, "grown.log")
    );
    assert_eq!(read(&out, "grown.id").trim(), "kcore-node-id=node-2");
    let grown = lvs(&out, "grown");
    let (before, after) = (
        size(lv(&changed, "vg_kcore", "pool").unwrap()),
        size(lv(&grown, "vg_kcore", "pool").unwrap()),
    );
    assert!(
        after > before,
        "pool {before} -> {after} (partition {} -> {}): {}\n{}",
        read(&out, "part.before").trim(),
        read(&out, "part.after").trim(),
        read(&out, "grown.log"),
        out.serial_log
    );

    // The foreign VG and its data survived every run.
    for run in ["first", "same", "changed", "grown", "foreign"] {
        assert_eq!(
            read(&out, &format!("{run}.other")),
            "precious",
            "after {run}"
        );
        assert!(
            lv(&lvs(&out, run), "vg_other", "keep").is_some(),
            "after {run}"
        );
    }

    // A partition that belongs to another VG is refused and that VG is untouched.
    assert_ne!(read(&out, "foreign.rc").trim(), "0");
    assert!(
        read(&out, "foreign.log").contains("refusing"),
        "{}",
        read(&out, "foreign.log")
    );
    assert!(read(&out, "foreign.after.json").contains("vg_third"));
}

// ---------------------------------------------------------------------------------------
// apply-disko through kctl and the agent, on real disks.
// ---------------------------------------------------------------------------------------

const NEW_DISK: &str = r#"{
  disko.devices.disk.data1 = {
    type = "disk";
    device = "/dev/disk/by-id/virtio-app-new";
    content = {
      type = "gpt";
      partitions.data = {
        size = "100%";
        content = { type = "filesystem"; format = "ext4"; mountpoint = "/var/lib/kcore/volumes1"; };
      };
    };
  };
}
"#;

/// The guest side: cluster credentials made offline by `kctl create cluster`, a node key
/// and CSR from `kctl create csr` signed with `kctl create node-cert --offline` (kctl
/// talks only to an agent that proves it is a node), the agent in managed mode, then
/// kctl's dry run, apply, and an apply on a mounted disk.
const APPLY_PAYLOAD: &str = r#"set -u
R="$KCORE_RESULTS"
K=/payload/kctl
NEW=/dev/disk/by-id/virtio-app-new
BUSY=/dev/disk/by-id/virtio-app-busy
export HOME=/root

# The bed's init leaves loopback down and the image has no iproute2: raise it by ioctl.
python3 -c '
import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH14s", b"lo", 0, bytes(14)))[:18])[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", flags | 1, bytes(14)))
'

mkfs.ext4 -q "$BUSY" && mkdir -p /srv/busy && mount "$BUSY" /srv/busy && echo keep >/srv/busy/data

"$K" create cluster --controller 127.0.0.1:9091 --context lab >"$R/create.log" 2>&1 || { cat "$R/create.log"; exit 1; }
P=/run/kcore-pki
mkdir -p "$P"
"$K" create csr --node-id bed-1 --cluster lab --key-out "$P/node.key" --csr-out "$P/node.csr" \
  --dns 127.0.0.1 --dns localhost >"$R/csr.log" 2>&1 || { cat "$R/csr.log"; exit 1; }
"$K" create node-cert --offline --node-id bed-1 --csr "$P/node.csr" --out "$P/node.crt" \
  --ca-out "$P/ca.crt" >"$R/cert.log" 2>&1 || { cat "$R/cert.log"; exit 1; }
echo controller-managed >/run/kcore-mode
cat >/run/agent.yaml <<YAML
nodeId: bed-1
mode: managed
listen: "127.0.0.1:9091"
tls: { caFile: $P/ca.crt, certFile: $P/node.crt, keyFile: $P/node.key }
disko: { managementModeFile: /run/kcore-mode, stateDir: /run/kcore-disko, diskoSource: /payload/disko, nixpkgsLib: /payload/nixpkgs-lib }
binaries: { disko: /payload/disko-from-lib, systemd-run: /payload/systemd-run, systemctl: /payload/systemctl }
YAML
KCORE_DISKO_SOURCE=/payload/disko KCORE_NIXPKGS_LIB=/payload/nixpkgs-lib \
  /payload/kcore-agent --config /run/agent.yaml >"$R/agent.log" 2>&1 &
for _ in $(seq 150); do "$K" --node 127.0.0.1:9091 node storage >/dev/null 2>&1 && break; sleep 0.2; done

kc() { # name args...
  name="$1"; shift
  "$K" --node 127.0.0.1:9091 "$@" >"$R/$name.out" 2>"$R/$name.err"
  echo $? >"$R/$name.rc"
  echo "== kctl $*"; cat "$R/$name.out" "$R/$name.err"
}
kc dry node apply-disko -f /payload/new.nix
kc apply node apply-disko -f /payload/new.nix --apply --timeout-seconds 7200
udevadm settle --timeout=30
findmnt -n -o SOURCE,FSTYPE /var/lib/kcore/volumes1 >"$R/mnt.txt" 2>&1
cp /run/kcore-disko/data1.nix "$R/kept.nix" 2>/dev/null
kc busy node apply-disko -f /payload/busy.nix --apply
cat /srv/busy/data >"$R/busy.data"
findmnt -n -o SOURCE /srv/busy >"$R/busy.mnt"
kc disks -o json node disks
exit 0
"#;

#[test]
fn apply_disko_formats_a_new_disk_and_refuses_a_mounted_one_with_disko_from_lib_stand_in() {
    let (agent, kctl) = (
        workspace_binary("kcore-agent", "kcore-agent"),
        workspace_binary("kctl", "kctl"),
    );
    let Some(deep) = kcore_disko::DeepInputs::from_env() else {
        eprintln!(
            "SKIP: KCORE_TEST_DISKO / KCORE_TEST_NIXPKGS_LIB not set and no cached test inputs"
        );
        return;
    };
    let Some(bed) = bed_or_skip(BedOptions::default()) else {
        return;
    };
    let payload = tempfile::tempdir().unwrap();
    let p = payload.path();
    write_exec(&p.join("run.sh"), APPLY_PAYLOAD);
    fs::copy(&agent, p.join("kcore-agent")).unwrap();
    fs::copy(&kctl, p.join("kctl")).unwrap();
    let stand_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/disko-from-lib");
    fs::copy(&stand_in, p.join("disko-from-lib")).unwrap();
    // The agent runs disko in a transient unit; the guest has no systemd as PID 1, so the
    // systemd-run and systemctl stand-ins play its part (tests/support).
    for unit_tool in ["systemd-run", "systemctl"] {
        let tool = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/support")
            .join(unit_tool);
        fs::copy(&tool, p.join(unit_tool)).unwrap();
    }
    copy_dir(&deep.disko, &p.join("disko"));
    copy_dir(&deep.nixpkgs_lib, &p.join("nixpkgs-lib"));
    fs::write(p.join("new.nix"), NEW_DISK).unwrap();
    fs::write(
        p.join("busy.nix"),
        NEW_DISK
            .replace("app-new", "app-busy")
            .replace("data1", "busy1")
            .replace("volumes1", "volumes2"),
    )
    .unwrap();
    let out = bed
        .run(&Run {
            disks: vec![
                Disk::new("app-new", 256 << 20),
                Disk::new("app-busy", 64 << 20),
            ],
            tpm_state_dir: None,
            payload_dir: p.to_owned(),
            timeout: Duration::from_secs(900),
        })
        .unwrap();
    eprintln!("guest run took {:.1}s", out.wall.as_secs_f64());
    assert_eq!(out.exit_code, 0, "{}", out.serial_log);
    let log = || {
        format!(
            "{}\nagent log:\n{}",
            out.serial_log,
            read(&out, "agent.log")
        )
    };

    // The dry run validated deeply, planned the blank disk as additive, changed nothing.
    assert_eq!(read(&out, "dry.rc").trim(), "0", "{}", log());
    let dry = read(&out, "dry.out");
    assert!(
        dry.contains("new-disk (additive)") && dry.contains("apply allowed"),
        "{dry}"
    );
    assert!(dry.contains("parse, eval, deep"), "{dry}");

    // The apply ran disko's scripts with the capped timeout: the disk is partitioned,
    // formatted and mounted where the fragment says, and the fragment is kept.
    assert_eq!(read(&out, "apply.rc").trim(), "0", "{}", log());
    assert!(read(&out, "apply.err").contains("(timeout 3600 s)"));
    let mnt = read(&out, "mnt.txt");
    assert!(mnt.contains("ext4"), "{mnt}\n{}", log());
    assert_eq!(read(&out, "kept.nix"), NEW_DISK);

    // A mounted disk is refused (exit 1) and left as it was.
    assert_eq!(read(&out, "busy.rc").trim(), "1", "{}", log());
    assert!(
        read(&out, "busy.err").contains("TARGET_MOUNTED"),
        "{}",
        read(&out, "busy.err")
    );
    assert_eq!(read(&out, "busy.data").trim(), "keep");
    assert!(!read(&out, "busy.mnt").trim().is_empty());

    // The inventory now shows the new partition mounted (in use) with its label.
    let disks: serde_json::Value = serde_json::from_str(&read(&out, "disks.out")).unwrap();
    let text = disks.to_string();
    assert!(text.contains("/var/lib/kcore/volumes1"), "{text}");
    assert!(text.contains("virtio-app-new"), "{text}");
}
