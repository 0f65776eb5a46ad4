//! The storage bed's tests: real block devices, LUKS2, TPM2, LVM and ZFS inside a QEMU
//! guest (see docs/storage-bed.md). One binary; each test takes the harness's run lock, so
//! guests boot one at a time.

// A test binary: an unwrap that fails is a failing test, helpers included.
#![allow(clippy::unwrap_used)]

use std::fs;

use std::time::{Duration, Instant};

use kcore_storage_bed::testing::*;
use kcore_storage_bed::{BedOptions, Disk, Run};

fn payload(script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_exec(&dir.path().join("run.sh"), script);
    dir
}

#[test]
fn guest_boots_and_sees_disks_by_serial() {
    let Some(bed) = bed_or_skip(BedOptions::default()) else {
        return;
    };
    let p = payload(
        "set -eu\nlsblk --json -b -o NAME,SIZE,SERIAL,TYPE > \"$KCORE_RESULTS/lsblk.json\"\n\
         ls /dev/disk/by-id/ > \"$KCORE_RESULTS/by-id.txt\"\n",
    );
    let out = bed
        .run(&Run {
            disks: vec![Disk::new("data-a", 64 << 20), Disk::new("data-b", 96 << 20)],
            tpm_state_dir: None,
            payload_dir: p.path().to_owned(),
            timeout: Duration::from_secs(300),
        })
        .unwrap();
    eprintln!(
        "boot to userspace {:?}s, run wall {:.1}s",
        out.userspace_at_secs,
        out.wall.as_secs_f64()
    );
    assert_eq!(out.exit_code, 0, "{}", out.serial_log);
    let v: serde_json::Value = serde_json::from_str(&out.result("lsblk.json").unwrap()).unwrap();
    let devs = v["blockdevices"].as_array().unwrap();
    let size_of = |serial: &str| {
        devs.iter()
            .find(|d| d["serial"] == serial)
            .and_then(|d| d["size"].as_u64())
    };
    assert_eq!(size_of("data-a"), Some(64 << 20), "{v}");
    assert_eq!(size_of("data-b"), Some(96 << 20), "{v}");
    let by_id = out.result("by-id.txt").unwrap();
    assert!(by_id.contains("virtio-data-a"), "{by_id}");
}

/// Test-only LUKS2 key derivation: argon2id costs ~9 s per keyslot operation under TCG.
const FAST_PBKDF: &str = "--pbkdf pbkdf2 --pbkdf-force-iterations 1000";

/// Shell helpers every payload gets: `step NAME CMD...` records CMD's exit code as
/// `$KCORE_RESULTS/NAME` and never aborts the script, so one run reports every step.
const STEP_SH: &str = r#"
step() { local name="$1"; shift; "$@"; local rc=$?; echo "$rc" >"$KCORE_RESULTS/$name"; echo "step $name -> $rc"; return 0; }
"#;

#[test]
fn tpm2_enrolled_luks_unlocks_without_key_refuses_after_pcr7_change_and_recovery_key_works() {
    let Some(bed) = bed_or_skip(BedOptions::default()) else {
        return;
    };
    let keep = tempfile::tempdir().unwrap();
    let tpm = keep.path().join("tpm");
    let disk = Disk::persistent("tpm-luks", 64 << 20, &keep.path().join("luks.img"));
    let dev = "/dev/disk/by-id/virtio-tpm-luks";

    // Boot 1: LUKS2 with a bootstrap passphrase, a recovery key, a TPM2 token bound to
    // PCR 7; then the passphrase slot is wiped so only the TPM and the recovery key remain.
    let enroll = payload(&format!(
        r#"set -u
{STEP_SH}
printf bootstrap >/run/pass
step format cryptsetup luksFormat --batch-mode --type luks2 {FAST_PBKDF} --key-file /run/pass {dev}
step open cryptsetup open --key-file /run/pass {dev} vol
step mkfs mkfs.ext4 -q /dev/mapper/vol
mkdir -p /mnt/vol && mount /dev/mapper/vol /mnt/vol && echo kept >/mnt/vol/marker && umount /mnt/vol
cryptsetup close vol
export PASSWORD=bootstrap
systemd-cryptenroll --recovery-key {dev} >"$KCORE_RESULTS/recovery-key"
echo "$?" >"$KCORE_RESULTS/recovery-enroll"
step tpm-enroll systemd-cryptenroll --tpm2-device=auto --tpm2-pcrs=7 --wipe-slot=password {dev}
unset PASSWORD
cryptsetup luksDump --dump-json-metadata {dev} >"$KCORE_RESULTS/luks.json"
step bootstrap-refused cryptsetup open --test-passphrase --token-ignore --key-file /run/pass {dev}
"#
    ));
    let t = Instant::now();
    let run1 = Run {
        disks: vec![disk.clone()],
        tpm_state_dir: Some(tpm.clone()),
        payload_dir: enroll.path().to_owned(),
        timeout: Duration::from_secs(600),
    };
    let out = bed.run(&run1).unwrap();
    eprintln!("tpm boot 1 (enroll): {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(out.exit_code, 0, "{}", out.serial_log);
    for s in ["format", "open", "mkfs", "recovery-enroll", "tpm-enroll"] {
        assert_eq!(result_code(&out, s), 0, "step {s}\n{}", out.serial_log);
    }
    assert_ne!(
        result_code(&out, "bootstrap-refused"),
        0,
        "the bootstrap passphrase must be gone\n{}\n{}",
        out.result("luks.json").unwrap_or_default(),
        out.serial_log
    );
    let meta: serde_json::Value = serde_json::from_str(&out.result("luks.json").unwrap()).unwrap();
    let token_types: Vec<&str> = meta["tokens"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|t| t["type"].as_str())
        .collect();
    assert!(token_types.contains(&"systemd-tpm2"), "{meta}");
    assert!(token_types.contains(&"systemd-recovery"), "{meta}");
    let recovery = out.result("recovery-key").unwrap();
    let recovery = recovery
        .lines()
        .map(str::trim)
        .find(|l| l.len() > 40 && l.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .unwrap_or_else(|| panic!("no recovery key in {recovery:?}"))
        .to_owned();

    // Boot 2: same disk, same swtpm state, and no key anywhere in the payload until the
    // recovery step.
    let unlock = payload(&format!(
        r#"set -u
{STEP_SH}
mkdir -p /mnt/vol
check_marker() {{ mount /dev/mapper/vol /mnt/vol && grep -qx kept /mnt/vol/marker; local rc=$?; umount /mnt/vol; return $rc; }}
step token-unlock cryptsetup open --token-only {dev} vol
step marker check_marker
cryptsetup close vol
tpm2_pcrread sha256:7 >"$KCORE_RESULTS/pcr7-before"
step extend tpm2_pcrextend 7:sha256=0000000000000000000000000000000000000000000000000000000000000001
tpm2_pcrread sha256:7 >"$KCORE_RESULTS/pcr7-after"
step token-after-extend cryptsetup open --token-only {dev} vol
cryptsetup close vol 2>/dev/null
step recovery-unlock cryptsetup open --key-file ./recovery-key {dev} vol
step marker-after-recovery check_marker
cryptsetup close vol
"#
    ));
    fs::write(unlock.path().join("recovery-key"), &recovery).unwrap();
    let t = Instant::now();
    let out = bed
        .run(&Run {
            payload_dir: unlock.path().to_owned(),
            ..run1
        })
        .unwrap();
    eprintln!("tpm boot 2 (unlock): {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(out.exit_code, 0, "{}", out.serial_log);
    assert_eq!(result_code(&out, "token-unlock"), 0, "{}", out.serial_log);
    assert_eq!(result_code(&out, "marker"), 0, "{}", out.serial_log);
    assert_eq!(result_code(&out, "extend"), 0, "{}", out.serial_log);
    assert_ne!(
        out.result("pcr7-before").unwrap(),
        out.result("pcr7-after").unwrap()
    );
    assert_ne!(
        result_code(&out, "token-after-extend"),
        0,
        "TPM unlock must be refused once PCR 7 changed\n{}",
        out.serial_log
    );
    assert_eq!(
        result_code(&out, "recovery-unlock"),
        0,
        "{}",
        out.serial_log
    );
    assert_eq!(result_code(&out, "marker-after-recovery"), 0);
}

// ---------------------------------------------------------------------------------------
// 1. Layouts rendered by kcore-disko, deep-evaluated on the host, run in the guest.
// ---------------------------------------------------------------------------------------

use kcore_disko::spec::{Backend, PbkdfSpec, PbkdfType, StorageSpec};
use kcore_disko::{DeepInputs, DeepOutput};

const OS_DISK: &str = "/dev/disk/by-id/virtio-os";
const DATA0: &str = "/dev/disk/by-id/virtio-data0";
const DATA1: &str = "/dev/disk/by-id/virtio-data1";

/// Test-only LUKS2 key derivation for the layout specs (see [`FAST_PBKDF`]), set through
/// the spec's own `luks.pbkdf` option so the fragment under test is exactly what kcore renders.
fn fast_luks(spec: &mut StorageSpec) {
    spec.luks.pbkdf = Some(PbkdfSpec {
        kind: PbkdfType::Pbkdf2,
        iterations: Some(1000),
        memory_kib: None,
    });
}

/// Guest-side helpers: record the storage state under a name (lsblk tree with identities,
/// mounts, LVM and ZFS reports) so the host can compare states and check them against the spec.
const STATE_SH: &str = r#"
state() {
  local n="$1"
  lsblk --json --bytes -o NAME,KNAME,PKNAME,TYPE,FSTYPE,UUID,PARTUUID,PARTLABEL,SIZE,SERIAL,MOUNTPOINTS >"$KCORE_RESULTS/$n-lsblk.json"
  lsblk --json --bytes -o NAME,TYPE,FSTYPE,UUID,PARTUUID,PARTLABEL,SIZE >"$KCORE_RESULTS/$n-ids.json"
  findmnt --json -o TARGET,SOURCE,FSTYPE >"$KCORE_RESULTS/$n-findmnt.json"
  if command -v vgs >/dev/null; then
    vgs --reportformat json -o vg_name,vg_uuid,pv_count,lv_count 2>/dev/null >"$KCORE_RESULTS/$n-vgs.json"
    pvs --reportformat json -o pv_name,vg_name,pv_uuid 2>/dev/null >"$KCORE_RESULTS/$n-pvs.json"
  fi
  if command -v zpool >/dev/null; then
    zpool list -H -o name,guid,health 2>/dev/null >"$KCORE_RESULTS/$n-zpool.txt"
    zpool status -P 2>/dev/null >"$KCORE_RESULTS/$n-zpool-status.txt"
    zfs list -H -o name,guid,mountpoint 2>/dev/null >"$KCORE_RESULTS/$n-zfs.txt"
  fi
}
close_all() {
  umount -R /mnt
  if command -v zpool >/dev/null; then zpool export -a; fi
  if command -v vgchange >/dev/null; then vgchange -an >/dev/null; fi
  for n in $(lsblk -ln -o NAME,TYPE | while read -r name type; do [ "$type" = crypt ] && echo "$name"; done); do
    cryptsetup close "$n"
  done
}
"#;

/// Renders the spec's fragment and evaluates it through disko's own types to its create and
/// mount scripts. `None`: inputs missing.
fn deep_scripts(spec: &StorageSpec) -> Option<DeepOutput> {
    let Some(inputs) = DeepInputs::from_env() else {
        eprintln!(
            "SKIP: disko source / nixpkgs lib not found (KCORE_TEST_DISKO, KCORE_TEST_NIXPKGS_LIB)"
        );
        return None;
    };
    let fragment = kcore_disko::render_fragment(spec).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fragment.nix");
    fs::write(&path, fragment).unwrap();
    let t = Instant::now();
    let evaluator = kcore_disko::eval::Evaluator::new(None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(evaluator.level3(&path, &inputs)).unwrap();
    eprintln!(
        "deep evaluation ({}) {:.2}s",
        spec.backend.as_str(),
        t.elapsed().as_secs_f64()
    );
    Some(out)
}

fn json(out: &kcore_storage_bed::Outcome, name: &str) -> serde_json::Value {
    let text = out.result(name).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"))
}

/// A plan kctl printed with `-o json`: the typed plan of the wire (`kcore_api::plan`).
fn typed_plan(out: &kcore_storage_bed::Outcome, name: &str) -> kcore_disko::plan::Plan {
    let text = out.result(name).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"))
}

fn without_partuuids(mut v: serde_json::Value) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("partuuid");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

fn disk_by_serial<'a>(v: &'a serde_json::Value, serial: &str) -> &'a serde_json::Value {
    v["blockdevices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["serial"] == serial)
        .unwrap_or_else(|| panic!("no disk with serial {serial} in {v}"))
}

fn children(d: &serde_json::Value) -> Vec<serde_json::Value> {
    d["children"].as_array().cloned().unwrap_or_default()
}

fn mountpoints(n: &serde_json::Value) -> Vec<String> {
    n["mountpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(String::from))
        .collect()
}

fn layout_test(backend: Backend) {
    let Some(bed) = bed_or_skip(BedOptions {
        zfs: backend == Backend::Zfs,
    }) else {
        return;
    };
    let mut spec = StorageSpec::new(OS_DISK, vec![DATA0.into(), DATA1.into()], backend);
    fast_luks(&mut spec);
    assert!(spec.validate().is_empty(), "{:?}", spec.validate());
    let Some(scripts) = deep_scripts(&spec) else {
        return;
    };
    assert!(
        scripts.create.contains("--pbkdf-force-iterations"),
        "the fast key derivation is missing from the create script:\n{}",
        scripts.create
    );
    let p = payload(&format!(
        r#"set -u
{STEP_SH}
{STATE_SH}
# The OS disk is formatted with the install-time key (LUKS mode tpm2: TPM enrolled on first boot).
printf 'bed-install-key' >{install_key}
step create1 bash -e ./create.sh
step mount1 bash -e ./mount.sh
state after-create
echo kept-root >/mnt/marker
{write_volumes}
sync
step close close_all
step remount bash -e ./mount.sh
step marker-root grep -qx kept-root /mnt/marker
{check_volumes}
state before-create2
step create2 bash -e ./create.sh
state after-create2
step marker-root-after-create2 grep -qx kept-root /mnt/marker
"#,
        install_key = spec.luks.install_key_file,
        write_volumes = if backend == Backend::Filesystem {
            "echo kept-0 >/mnt/var/lib/kcore/volumes/marker; echo kept-1 >/mnt/var/lib/kcore/volumes1/marker"
        } else {
            ""
        },
        check_volumes = if backend == Backend::Filesystem {
            "step marker-volumes grep -qx kept-0 /mnt/var/lib/kcore/volumes/marker\nstep marker-volumes1 grep -qx kept-1 /mnt/var/lib/kcore/volumes1/marker"
        } else {
            ""
        },
    ));
    fs::write(p.path().join("create.sh"), &scripts.create).unwrap();
    fs::write(p.path().join("mount.sh"), &scripts.mount).unwrap();
    let t = Instant::now();
    let out = bed
        .run(&Run {
            disks: vec![
                Disk::new("os", 2 << 30),
                Disk::new("data0", 1 << 30),
                Disk::new("data1", 1 << 30),
            ],
            tpm_state_dir: None,
            payload_dir: p.path().to_owned(),
            timeout: Duration::from_secs(900),
        })
        .unwrap();
    eprintln!(
        "layout {} guest run {:.1}s",
        backend.as_str(),
        t.elapsed().as_secs_f64()
    );
    let log = &out.serial_log;
    for s in ["create1", "mount1", "close", "remount", "marker-root"] {
        assert_eq!(result_code(&out, s), 0, "step {s}\n{log}");
    }

    // The tree matches the spec: OS disk = ESP (vfat, /boot) + LUKS2 holding ext4 on /.
    let tree = json(&out, "after-create-lsblk.json");
    let os = disk_by_serial(&tree, "os");
    let os_parts = children(os);
    assert_eq!(os_parts.len(), 2, "{os}");
    assert_eq!(os_parts[0]["fstype"], "vfat", "{os}");
    assert_eq!(mountpoints(&os_parts[0]), vec!["/mnt/boot"], "{os}");
    assert_eq!(os_parts[1]["fstype"], "crypto_LUKS", "{os}");
    let luks = children(&os_parts[1]);
    assert_eq!(luks.len(), 1, "{os}");
    assert_eq!(luks[0]["type"], "crypt");
    assert_eq!(luks[0]["name"], "crypted");
    assert_eq!(luks[0]["fstype"], "ext4");
    assert_eq!(mountpoints(&luks[0]), vec!["/mnt"]);

    let data: Vec<&serde_json::Value> = ["data0", "data1"]
        .iter()
        .map(|s| disk_by_serial(&tree, s))
        .collect();
    for d in &data {
        assert_eq!(children(d).len(), 1, "one partition per data disk: {d}");
    }
    match backend {
        Backend::Filesystem => {
            for (i, d) in data.iter().enumerate() {
                let part = &children(d)[0];
                assert_eq!(part["fstype"], "ext4", "{d}");
                let want = format!("/mnt{}", StorageSpec::volume_dir(i));
                assert_eq!(mountpoints(part), vec![want], "{d}");
            }
            assert_eq!(result_code(&out, "marker-volumes"), 0, "{log}");
            assert_eq!(result_code(&out, "marker-volumes1"), 0, "{log}");
        }
        Backend::Lvm => {
            for d in &data {
                assert_eq!(children(d)[0]["fstype"], "LVM2_member", "{d}");
            }
            let vgs = json(&out, "after-create-vgs.json");
            let vg = &vgs["report"][0]["vg"];
            let vg = vg
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["vg_name"] == spec.lvm.vg_name.as_str())
                .unwrap_or_else(|| panic!("no VG {} in {vgs}", spec.lvm.vg_name));
            assert_eq!(vg["pv_count"], "2", "{vgs}");
            let pvs = json(&out, "after-create-pvs.json");
            let in_vg = pvs["report"][0]["pv"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["vg_name"] == spec.lvm.vg_name.as_str())
                .count();
            assert_eq!(in_vg, 2, "{pvs}");
        }
        Backend::Zfs => {
            for d in &data {
                assert_eq!(children(d)[0]["fstype"], "zfs_member", "{d}");
            }
            let pools = out.result("after-create-zpool.txt").unwrap();
            assert!(
                pools
                    .lines()
                    .any(|l| l.starts_with(&format!("{}\t", spec.zfs.pool_name))
                        && l.ends_with("\tONLINE")),
                "{pools}"
            );
            let status = out.result("after-create-zpool-status.txt").unwrap();
            // disko adds the members by partlabel.
            for d in &data {
                let label = children(d)[0]["partlabel"].as_str().unwrap().to_owned();
                assert!(status.contains(&label), "{label} not in pool:\n{status}");
            }
            let datasets = out.result("after-create-zfs.txt").unwrap();
            let ds = format!("{}/{}", spec.zfs.pool_name, spec.zfs.dataset_prefix);
            assert!(
                datasets
                    .lines()
                    .any(|l| l.starts_with(&format!("{ds}\t")) && l.ends_with("\tnone")),
                "{datasets}"
            );
        }
    }

    // Running create again changes nothing: same partitions, filesystems, UUIDs, VG and
    // pool identities, and the written files survive.
    assert_eq!(result_code(&out, "create2"), 0, "{log}");
    assert_eq!(result_code(&out, "marker-root-after-create2"), 0, "{log}");
    // disko's create re-runs `sgdisk --partition-guid=N:R` on partitions that exist, so
    // PARTUUIDs are re-randomised (measured here; disko and kcore address partitions by
    // partlabel, so nothing depends on them). Everything else must be identical.
    let (before, after) = (
        json(&out, "before-create2-ids.json"),
        json(&out, "after-create2-ids.json"),
    );
    if before != after {
        eprintln!("note: the second create changed PARTUUIDs (disko randomises them)");
    }
    assert_eq!(without_partuuids(before), without_partuuids(after));
    assert_eq!(
        json(&out, "before-create2-findmnt.json"),
        json(&out, "after-create2-findmnt.json")
    );
    for f in ["vgs.json", "zpool.txt", "zfs.txt"] {
        let (a, b) = (
            out.result(&format!("before-create2-{f}")),
            out.result(&format!("after-create2-{f}")),
        );
        if let (Ok(a), Ok(b)) = (a, b) {
            assert_eq!(a, b, "{f} changed by the second create");
        }
    }
}

#[test]
fn layout_filesystem_backend_with_luks_os_disk() {
    layout_test(Backend::Filesystem);
}

#[test]
fn layout_lvm_backend_with_luks_os_disk() {
    layout_test(Backend::Lvm);
}

#[test]
fn layout_zfs_backend_with_luks_os_disk() {
    layout_test(Backend::Zfs);
}

// ---------------------------------------------------------------------------------------
// 2. `kctl disko plan --live` against in-use disks made real in the guest.
// ---------------------------------------------------------------------------------------

/// Each in-use condition: disk serial, the guest commands that make it real, the refusal code.
const IN_USE: &[(&str, &str, &str)] = &[
    (
        "use-mnt",
        // Read-only: a read-write ext4 rewrites its own superblock and inode tables
        // (journal commits, lazy inode-table init) inside the first MiB while it stays
        // mounted, which the unchanged-bytes check would blame on kctl.
        "mkfs.ext4 -q $D && mkdir -p /srv/use-mnt && mount -o ro $D /srv/use-mnt",
        "TARGET_MOUNTED",
    ),
    ("use-swap", "mkswap -q $D && swapon $D", "TARGET_SWAP"),
    (
        "use-luks",
        "printf k >/run/k && cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /run/k $D && cryptsetup open --key-file /run/k $D inuse",
        "TARGET_HAS_HOLDERS",
    ),
    (
        "use-pv",
        "pvcreate -q $D && vgcreate -q vg_other $D && lvcreate -q -L 8M -n lv0 vg_other",
        "TARGET_HAS_HOLDERS",
    ),
    (
        "use-zfs",
        "zpool create -f pool_other $D",
        "TARGET_ZFS_MEMBER",
    ),
    (
        "use-part",
        "sgdisk -n1:0:0 $D && partprobe $D && udevadm settle; P=\"$(readlink -f $D)1\"; for i in $(seq 50); do [ -b $P ] && break; blockdev --rereadpt $D; sleep 0.2; done; mkfs.ext4 -q $P",
        "TARGET_HAS_DATA",
    ),
];

#[test]
fn plan_live_refuses_in_use_disks_without_touching_them_and_applies_a_new_disk() {
    let kctl = workspace_binary("kctl", "kctl");
    // The ZFS image: one of the conditions is a ZFS pool member.
    let Some(bed) = bed_or_skip(BedOptions { zfs: true }) else {
        return;
    };
    let Some(inputs) = DeepInputs::from_env() else {
        eprintln!(
            "SKIP: disko source / nixpkgs lib not found (KCORE_TEST_DISKO, KCORE_TEST_NIXPKGS_LIB)"
        );
        return;
    };
    let spec = StorageSpec::new(OS_DISK, vec![DATA0.into()], Backend::Filesystem);
    let p = payload("");
    fs::copy(&kctl, p.path().join("kctl")).unwrap();

    let mut script = format!("set -u\n{STEP_SH}\n");
    script.push_str(
        r#"
sums() { # device -> sha256 of its first and last MiB
  local d="$1" mib
  mib=$(( $(blockdev --getsize64 "$d") / 1048576 ))
  { dd if="$d" bs=1M count=1 status=none; dd if="$d" bs=1M skip=$((mib - 1)) count=1 status=none; } | sha256sum | cut -d' ' -f1
}
plan() { # name device
  sums "$2" >"$KCORE_RESULTS/$1-sum-before"
  ./kctl -o json disko plan -f "frag-$1.nix" --live >"$KCORE_RESULTS/$1-plan.json" 2>"$KCORE_RESULTS/$1-plan.err"
  echo $? >"$KCORE_RESULTS/$1-plan-rc"
  sums "$2" >"$KCORE_RESULTS/$1-sum-after"
}
"#,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut disks = Vec::new();
    for (serial, make, _) in IN_USE {
        let dev = format!("/dev/disk/by-id/virtio-{serial}");
        let frag = kcore_disko::render_data_disk(&spec, &dev, 2).unwrap();
        fs::write(p.path().join(format!("frag-{serial}.nix")), frag).unwrap();
        script.push_str(&format!(
            "export D={dev}\nstep {serial}-setup bash -ec '{make}' \n"
        ));
        disks.push(Disk::new(serial, 256 << 20));
    }
    script.push_str("udevadm settle\n");
    for (serial, _, _) in IN_USE {
        script.push_str(&format!("plan {serial} /dev/disk/by-id/virtio-{serial}\n"));
    }
    // The additive case: a blank disk planned, then applied with disko's own scripts.
    let new_dev = "/dev/disk/by-id/virtio-new-disk";
    let new_frag = kcore_disko::render_data_disk(&spec, new_dev, 2).unwrap();
    let frag_path = p.path().join("frag-new-disk.nix");
    fs::write(&frag_path, &new_frag).unwrap();
    let evaluator = kcore_disko::eval::Evaluator::new(None).unwrap();
    let deep = rt.block_on(evaluator.level3(&frag_path, &inputs)).unwrap();
    fs::write(p.path().join("create.sh"), &deep.create).unwrap();
    fs::write(p.path().join("mount.sh"), &deep.mount).unwrap();
    disks.push(Disk::new("new-disk", 256 << 20));
    script.push_str(&format!(
        r#"plan new-disk {new_dev}
step apply-create bash -e ./create.sh
step apply-mount bash -e ./mount.sh
findmnt --json -o TARGET,SOURCE,FSTYPE >"$KCORE_RESULTS/new-disk-findmnt.json"
lsblk --json -o NAME,SERIAL,FSTYPE,MOUNTPOINTS >"$KCORE_RESULTS/new-disk-lsblk.json"
"#
    ));
    write_exec(&p.path().join("run.sh"), &script);

    let t = Instant::now();
    let out = bed
        .run(&Run {
            disks,
            tpm_state_dir: None,
            payload_dir: p.path().to_owned(),
            timeout: Duration::from_secs(900),
        })
        .unwrap();
    eprintln!("in-use guest run {:.1}s", t.elapsed().as_secs_f64());
    let log = &out.serial_log;
    assert_eq!(out.exit_code, 0, "{log}");
    for (serial, _, code) in IN_USE {
        assert_eq!(
            result_code(&out, &format!("{serial}-setup")),
            0,
            "{serial}\n{log}"
        );
        let rc = result_code(&out, &format!("{serial}-plan-rc"));
        let err = out.result(&format!("{serial}-plan.err")).unwrap();
        assert_eq!(rc, 1, "{serial}: kctl must refuse (exit 1): {err}\n{log}");
        let plan = typed_plan(&out, &format!("{serial}-plan.json"));
        let codes: Vec<&str> = plan
            .refusals()
            .into_iter()
            .map(|(_, r)| r.code.as_str())
            .collect();
        assert!(
            codes.contains(code),
            "{serial}: expected {code}, got {codes:?}\n{plan:?}"
        );
        assert!(err.contains(code), "{serial}: stderr names the code: {err}");
        assert_eq!(
            out.result(&format!("{serial}-sum-before")).unwrap(),
            out.result(&format!("{serial}-sum-after")).unwrap(),
            "{serial}: first/last MiB changed"
        );
    }
    let rc = result_code(&out, "new-disk-plan-rc");
    let err = out.result("new-disk-plan.err").unwrap();
    assert_eq!(rc, 0, "a blank new disk is plannable: {err}");
    let plan = typed_plan(&out, "new-disk-plan.json");
    assert_eq!(
        plan.class,
        kcore_disko::plan::ChangeClass::Additive,
        "{plan:?}"
    );
    assert_eq!(result_code(&out, "apply-create"), 0, "{log}");
    assert_eq!(result_code(&out, "apply-mount"), 0, "{log}");
    let mounts = out.result("new-disk-findmnt.json").unwrap();
    assert!(
        mounts.contains("/mnt/var/lib/kcore/volumes2"),
        "new disk mounted at volumes2: {mounts}"
    );
}
