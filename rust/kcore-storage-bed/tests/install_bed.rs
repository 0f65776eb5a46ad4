//! The install path of issue 11 on real disks, real LUKS2 and a real swtpm in the storage
//! bed, through a real second boot (docs/storage-bed.md, "The install proof").
//!
//! - `nixos_install_stand_in_copies_a_nix_built_closure_into_the_root` (host, no QEMU): the
//!   `tests/support/nixos-install` stand-in copies a closure nix really built into a root's
//!   store and sets that root's system profile, with the flags the real one takes.
//! - `installed_lvm_node_unlocks_with_the_tpm_registers_and_recovers_after_a_pcr_change`
//!   (two boots): boot 1 installs the way the install contract's steps say (disko's own
//!   scripts for kcore-disko's layout, a random install key, the stand-in installing a closure
//!   nix builds in the guest that holds this host's kcore-agent, recovery key and TPM2 enrolment
//!   on PCRs 0+2+7, the install key's slot removed, `/etc/kcore` written), with a controller
//!   made by `kctl create cluster` whose state lives on a persistent disk; boot 2 (same disks,
//!   same swtpm state) plays stage 1: TPM-only unlock, mount, bind `/etc/kcore`, the installed
//!   agent from the installed closure in managed mode with the installed configuration, the
//!   controller from the kept state; `kctl get nodes -o json` shows the node Ready with backend
//!   lvm and its DC. Then PCR 7 is extended: TPM unlock is refused and the recovery key
//!   returned at install time unlocks.

// A test binary: an unwrap that fails is a failing test, helpers included.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kcore_disko::spec::{Backend, PbkdfSpec, PbkdfType, StorageSpec};
use kcore_disko::{DeepInputs, DeepOutput};
use kcore_nix::runner::{Invocation, Output, Program};
use kcore_storage_bed::{Bed, BedError, BedOptions, Disk, Outcome, Run};

/// Prepares the bed, or prints `SKIP:` and returns `None` when the host cannot run it.
fn bed(opts: BedOptions) -> Option<Bed> {
    let t = Instant::now();
    match Bed::ensure(opts) {
        Ok(b) => {
            eprintln!("bed ready ({opts:?}) in {:.1}s", t.elapsed().as_secs_f64());
            Some(b)
        }
        Err(BedError::Unavailable(why)) => {
            eprintln!("SKIP: {why}");
            None
        }
        Err(e) => panic!("preparing the storage bed failed: {e}"),
    }
}

fn write_exec(path: &Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/support")
        .join(name)
}

/// A binary of this workspace next to this test binary (`target/debug/deps/install_bed-*`).
fn workspace_binary(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .unwrap();
    assert!(
        bin.is_file(),
        "{} missing: build it first: cargo build -p {package}",
        bin.display()
    );
    bin
}

fn result_code(out: &Outcome, name: &str) -> i32 {
    out.result(name)
        .unwrap_or_else(|e| panic!("{e}\nserial log:\n{}", out.serial_log))
        .trim()
        .parse()
        .unwrap()
}

/// Runs a program through kcore-nix's runner (tests follow the same rule as the code).
fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let path = Path::new(program);
    let explicit = path.is_absolute().then_some(path);
    let p = Program::resolve(
        path.file_name().unwrap().to_str().unwrap(),
        explicit,
        "KCORE_TEST_UNUSED_PROGRAM",
    )
    .unwrap();
    let mut inv = Invocation::new(&p).args(args);
    for (k, v) in env {
        inv = inv.env(k, v);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(inv.output_unchecked())
        .unwrap()
}

/// The node system the tests install: a derivation with builder `/bin/sh` (no nixpkgs on
/// these machines; the bed runs nix without a sandbox) holding the agent binary at
/// `bin/kcore-agent`, as the prebuilt node systems on the ISO hold theirs.
const CLOSURE_NIX: &str = r#"{ agent }:
derivation {
  name = "kcore-bed-node-system";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir -p $out/bin && /bin/cp $agent $out/bin/kcore-agent && /bin/chmod 0555 $out/bin/kcore-agent && /bin/echo kcore-bed >$out/kcore-system" ];
  inherit agent;
}
"#;

/// Options that let nix build as root without a daemon, build users or a sandbox (the bed's
/// guest and a bare host both have none), and never reach for a binary cache.
const NIX_BUILD_OPTS: &[&str] = &[
    "--option",
    "sandbox",
    "false",
    "--option",
    "build-users-group",
    "",
    "--option",
    "substituters",
    "",
];

#[test]
fn nixos_install_stand_in_copies_a_nix_built_closure_into_the_root() {
    if Program::resolve("nix-build", None, "KCORE_TEST_UNUSED_PROGRAM").is_err() {
        eprintln!("SKIP: nix-build not on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_exec(&d.join("agent"), "#!/bin/sh\necho installed-agent\n");
    fs::write(d.join("closure.nix"), CLOSURE_NIX).unwrap();
    let mut args = vec!["--no-out-link"];
    args.extend(NIX_BUILD_OPTS);
    let closure = d.join("closure.nix");
    let agent = d.join("agent");
    args.extend([
        closure.to_str().unwrap(),
        "--arg",
        "agent",
        agent.to_str().unwrap(),
    ]);
    let built = run("nix-build", &args, &[]);
    assert!(built.status.success(), "{}", built.stderr_lossy());
    let system = built.stdout_lossy().trim().to_owned();
    assert!(system.starts_with("/nix/store/"), "{system}");

    let root = d.join("root");
    fs::create_dir(&root).unwrap();
    let stand_in = support("nixos-install");
    let stand_in = stand_in.to_str().unwrap();
    let root_s = root.to_str().unwrap();
    let out = run(
        stand_in,
        &[
            "--system",
            &system,
            "--no-root-passwd",
            "--no-channel-copy",
            "--root",
            root_s,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr_lossy());

    // The profile points at the closure, and the closure is in the ROOT's store: its binary
    // runs from there, and the root's own nix database knows the path.
    let profile = root.join("nix/var/nix/profiles/system");
    let target = fs::read_link(root.join("nix/var/nix/profiles/system-1-link")).unwrap();
    assert_eq!(target, Path::new(&system));
    assert!(fs::symlink_metadata(&profile).unwrap().is_symlink());
    let in_root = root.join(system.trim_start_matches('/'));
    let ran = run(in_root.join("bin/kcore-agent").to_str().unwrap(), &[], &[]);
    assert_eq!(ran.stdout_lossy().trim(), "installed-agent");
    let valid = run(
        "nix-store",
        &["--store", root_s, "--check-validity", &system],
        &[],
    );
    assert!(valid.status.success(), "{}", valid.stderr_lossy());
    assert!(root.join("etc/NIXOS").is_file());

    // Flags it does not know, and a missing closure, are refused with the flag named.
    let bad = run(stand_in, &["--root", root_s, "--flake", "x"], &[]);
    assert!(!bad.status.success());
    assert!(
        bad.stderr_lossy().contains("--flake"),
        "{}",
        bad.stderr_lossy()
    );
    let none = run(stand_in, &["--root", root_s], &[]);
    assert!(!none.status.success());
    assert!(
        none.stderr_lossy().contains("--system"),
        "{}",
        none.stderr_lossy()
    );
    let missing = d.join("missing");
    let gone = run(
        stand_in,
        &["--system", &system, "--root", missing.to_str().unwrap()],
        &[],
    );
    assert!(!gone.status.success());
    assert!(gone.stderr_lossy().contains("doesn't exist"));
}

// ---------------------------------------------------------------------------------------
// The two-boot proof.
// ---------------------------------------------------------------------------------------

const OS_DISK: &str = "/dev/disk/by-id/virtio-os";
const DATA_DISK: &str = "/dev/disk/by-id/virtio-data0";
/// The LUKS partition as the installed system names it (generic, so one prebuilt closure
/// fits every node): disko's partlabel `disk-<attr>-<partition>`.
const LUKS_DEV: &str = "/dev/disk/by-partlabel/disk-os-root";
const NODE_ID: &str = "bed-node-1";

/// Shell helpers for every payload: `step NAME CMD...` records CMD's exit code as
/// `$KCORE_RESULTS/NAME` and never aborts the script, so one run reports every step; `lo_up`
/// raises loopback (the bed's init leaves it down and the image has no iproute2).
const COMMON_SH: &str = r#"
step() { local name="$1"; shift; "$@"; local rc=$?; echo "$rc" >"$KCORE_RESULTS/$name"; echo "step $name -> $rc"; return 0; }
lo_up() {
python3 -c '
import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH14s", b"lo", 0, bytes(14)))[:18])[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", flags | 1, bytes(14)))
'
}
K=/payload/kctl
R="$KCORE_RESULTS"
# The controller's state and kctl's context live on their own disk, kept across boots.
STATE=/dev/disk/by-id/virtio-ctl-state
export HOME=/state/home
CTL_PID='' AGENT_PID=''
wait_for() { # seconds cmd...
  local n=$(( $1 * 5 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
start_controller() {
  local cfg
  cfg=$(ls "$HOME"/.kcore/*/controllers/ctl1/controller.yaml 2>/dev/null | head -n1)
  [ -n "$cfg" ] || { echo "no controller.yaml under $HOME/.kcore"; return 1; }
  /payload/kcore-controller --config "$cfg" >>"$R/controller.log" 2>&1 &
  CTL_PID=$!
  wait_for 60 "$K" get nodes
}
"#;

/// [`NIX_BUILD_OPTS`] as shell words.
fn nix_opts() -> String {
    NIX_BUILD_OPTS
        .iter()
        .map(|o| {
            if o.is_empty() {
                "''".to_owned()
            } else {
                (*o).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Boot 1: the install, step by step as the install contract lists them.
fn install_script(spec: &StorageSpec) -> String {
    format!(
        r#"set -u
{COMMON_SH}
lo_up
step state-mkfs mkfs.ext4 -q -L ctl-state "$STATE"
mkdir -p /state && mount "$STATE" /state && mkdir -p "$HOME"
step create-cluster "$K" create cluster --controller 127.0.0.1:9090 --context lab
step controller-boot1 start_controller
"$K" -o json get nodes >"$R/nodes-boot1.json" 2>&1

# The node system: built by nix here, from the closure derivation and this host's agent.
SYS=$(nix-build --no-out-link {nix_opts} /payload/closure.nix --arg agent /payload/kcore-agent 2>"$R/nix-build.log")
echo "$SYS" >"$R/system"

# format: a random install key (64 random bytes, hex) is the passwordFile disko reads.
KEY={install_key}
head -c 64 /dev/urandom | od -An -v -tx1 | tr -d ' \n' >"$KEY"; chmod 0600 "$KEY"
step format bash -e ./create.sh
step mount bash -e ./mount.sh
udevadm settle --timeout=30
# install
step install /payload/nixos-install --system "$SYS" --no-root-passwd --no-channel-copy --root /mnt
# enrol: recovery key (stdout), TPM2 on PCRs 0+2+7 proven token-only, install key slot removed.
systemd-cryptenroll --recovery-key --unlock-key-file="$KEY" {luks} >"$R/recovery-key.out" 2>"$R/recovery-key.err"
echo $? >"$R/enrol-recovery"
step enrol-tpm systemd-cryptenroll --unlock-key-file="$KEY" --tpm2-device=auto --tpm2-pcrs=0+2+7 {luks}
step tpm-proven cryptsetup open --test-passphrase --token-only {luks}
step remove-install-key cryptsetup luksRemoveKey --key-file "$KEY" {luks}
step install-key-refused cryptsetup open --test-passphrase --token-ignore --key-file "$KEY" {luks}
rm -f "$KEY"
cryptsetup luksDump --dump-json-metadata {luks} >"$R/luks.json"
# write-config (the node key and CSR are made here and signed by the cluster's sub-CA, as
# the controller's node-certificate route does; nothing secret travels).
E=/mnt/etc/kcore
mkdir -p "$E/tls" && install -d -m 0700 "$E/recovery"
step csr "$K" create csr --node-id {node} --cluster lab --key-out "$E/tls/node.key" --csr-out /run/node.csr --dns 127.0.0.1 --dns localhost
step cert "$K" create node-cert --offline --node-id {node} --csr /run/node.csr --out "$E/tls/node.crt" --ca-out "$E/tls/ca.crt"
chmod 0600 "$E/tls/node.key"
grep -Eo '[a-z]{{8}}(-[a-z]{{8}}){{7}}' "$R/recovery-key.out" | head -n1 >"$E/recovery/luks-recovery-key.txt"
chmod 0400 "$E/recovery/luks-recovery-key.txt"
cp "$E/recovery/luks-recovery-key.txt" "$R/recovery-key"
echo installer-only >"$E/disko-management-mode"
cat >"$E/node-agent.yaml" <<YAML
nodeId: {node}
dcId: DC1
hostname: kcore-bed-node
mode: managed
controllers: ["127.0.0.1:9090"]
labels: {{}}
tls: {{caFile: /etc/kcore/tls/ca.crt, certFile: /etc/kcore/tls/node.crt, keyFile: /etc/kcore/tls/node.key}}
storage: {{backend: {backend}, lvm: {{vgName: {vg}, lvPrefix: {lv_prefix}}}, zfs: {{poolName: {pool}, datasetPrefix: {ds_prefix}}}}}
disko: {{managementModeFile: /etc/kcore/disko-management-mode, stateDir: /var/lib/kcore/disko}}
YAML
printf '{{"nodeId":"{node}","system":"%s","luksMode":"tpm2","tpm2Pcrs":[0,2,7],"luksDevice":"{luks}"}}\n' "$SYS" >"$E/install.json"
# done: sync, unmount, close.
sync
step umount umount -R /mnt
vgchange -an >/dev/null
if command -v zpool >/dev/null; then zpool export -a; fi
step close cryptsetup close crypted
lsblk --json -o NAME,SERIAL,FSTYPE,PARTLABEL,MOUNTPOINTS >"$R/lsblk-boot1.json"
[ -n "$CTL_PID" ] && kill "$CTL_PID"; wait
umount /state
exit 0
"#,
        nix_opts = nix_opts(),
        install_key = spec.luks.install_key_file,
        luks = LUKS_DEV,
        node = NODE_ID,
        backend = spec.backend.as_str(),
        vg = spec.lvm.vg_name,
        lv_prefix = spec.lvm.lv_prefix,
        pool = spec.zfs.pool_name,
        ds_prefix = spec.zfs.dataset_prefix,
    )
}

/// Boot 2: stage 1 played by the payload, then the node and the kept controller, then the
/// PCR change and the recovery key. No key is in the payload until the recovery step.
fn boot2_script(spec: &StorageSpec) -> String {
    // What the installed system's own mounts and imports do for the data disk.
    let (data_up, data_down) = match spec.backend {
        Backend::Filesystem => (
            format!(
                "mkdir -p {v} && mount {DATA_DISK}-part1 {v}",
                v = StorageSpec::volume_dir(0)
            ),
            format!("umount {}", StorageSpec::volume_dir(0)),
        ),
        Backend::Lvm => (
            format!("vgchange -ay {}", spec.lvm.vg_name),
            "vgchange -an".to_owned(),
        ),
        Backend::Zfs => (
            format!("zpool import -N {}", spec.zfs.pool_name),
            format!("zpool export {}", spec.zfs.pool_name),
        ),
    };
    format!(
        r#"set -u
{COMMON_SH}
lo_up
mkdir -p /state && mount "$STATE" /state
# stage 1: unlock with the TPM only, mount the root, bring up the data VG, bind /etc/kcore.
step tpm-unlock cryptsetup open --token-only {luks} crypted
mkdir -p /sysroot
step mount-root mount /dev/mapper/crypted /sysroot
step data-up {data_up}
mkdir -p /etc/kcore /var/lib/kcore
step bind-etc mount --bind /sysroot/etc/kcore /etc/kcore
SYS=$(readlink /sysroot/nix/var/nix/profiles/system-1-link)
echo "$SYS" >"$R/profile"
AGENT="/sysroot$SYS/bin/kcore-agent"
cmp "$AGENT" /payload/kcore-agent; echo $? >"$R/agent-is-installed"
cp /etc/kcore/recovery/luks-recovery-key.txt "$R/installed-recovery-key"
stat -c %a /etc/kcore/recovery/luks-recovery-key.txt >"$R/recovery-mode"
# The controller from the kept state, the installed agent from the installed closure.
step controller start_controller
"$AGENT" --config /etc/kcore/node-agent.yaml >"$R/agent.log" 2>&1 &
AGENT_PID=$!
ready() {{ "$K" -o json get nodes >"$R/nodes.json" 2>"$R/nodes.err" && grep -q '"Ready"' "$R/nodes.json"; }}
step node-ready wait_for 120 ready
"$K" -o json get nodes >"$R/nodes.json" 2>"$R/nodes.err"
for pid in $AGENT_PID $CTL_PID; do kill "$pid"; done; wait
umount /etc/kcore
{data_down}
umount /sysroot
cryptsetup close crypted
umount /state
# A PCR change: the TPM refuses, the recovery key kctl's side kept unlocks.
tpm2_pcrread sha256:7 >"$R/pcr7-before"
step extend tpm2_pcrextend 7:sha256=0000000000000000000000000000000000000000000000000000000000000001
tpm2_pcrread sha256:7 >"$R/pcr7-after"
step tpm-after-extend cryptsetup open --token-only {luks} crypted
cryptsetup close crypted 2>/dev/null
step recovery-unlock cryptsetup open --key-file /payload/recovery-key {luks} crypted
step recovery-mount mount -o ro /dev/mapper/crypted /sysroot
test -e "/sysroot$SYS/bin/kcore-agent"; echo $? >"$R/after-recovery-agent"
umount /sysroot; cryptsetup close crypted
exit 0
"#,
        luks = LUKS_DEV,
    )
}

fn deep(spec: &StorageSpec) -> Option<DeepOutput> {
    let Some(inputs) = DeepInputs::from_env() else {
        eprintln!(
            "SKIP: disko source / nixpkgs lib not found (KCORE_TEST_DISKO, KCORE_TEST_NIXPKGS_LIB)"
        );
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fragment.nix");
    fs::write(&path, kcore_disko::render_fragment(spec).unwrap()).unwrap();
    let evaluator = kcore_disko::eval::Evaluator::new(None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Some(rt.block_on(evaluator.level3(&path, &inputs)).unwrap())
}

fn node_entry(nodes: &serde_json::Value) -> Option<serde_json::Value> {
    let list = nodes
        .as_array()
        .cloned()
        .or_else(|| nodes["items"].as_array().cloned())
        .unwrap_or_default();
    list.into_iter().find(|n| n["nodeId"] == NODE_ID)
}

#[test]
fn installed_lvm_node_unlocks_with_the_tpm_registers_and_recovers_after_a_pcr_change() {
    install_and_boot(Backend::Lvm);
}

#[test]
fn installed_filesystem_node_unlocks_with_the_tpm_registers_and_recovers_after_a_pcr_change() {
    install_and_boot(Backend::Filesystem);
}

/// Boot 1 installs a node with `backend`, boot 2 plays stage 1, runs it, changes PCR 7.
fn install_and_boot(backend: Backend) {
    let agent = workspace_binary("kcore-agent", "kcore-agent");
    let kctl = workspace_binary("kctl", "kctl");
    let controller = workspace_binary("kcore-controller", "kcore-controller");
    let mut spec = StorageSpec::new(OS_DISK, vec![DATA_DISK.into()], backend);
    // Test-only key derivation (argon2id costs ~9 s per keyslot operation under TCG).
    spec.luks.pbkdf = Some(PbkdfSpec {
        kind: PbkdfType::Pbkdf2,
        iterations: Some(1000),
        memory_kib: None,
    });
    let Some(scripts) = deep(&spec) else {
        return;
    };
    let Some(bed) = bed(BedOptions {
        zfs: backend == Backend::Zfs,
    }) else {
        return;
    };
    let keep = tempfile::tempdir().unwrap();
    let disks = vec![
        Disk::persistent("os", 2 << 30, &keep.path().join("os.img")),
        Disk::persistent("data0", 1 << 30, &keep.path().join("data0.img")),
        Disk::persistent("ctl-state", 256 << 20, &keep.path().join("state.img")),
    ];
    let tpm = keep.path().join("tpm");

    let p1 = tempfile::tempdir().unwrap();
    let p = p1.path();
    write_exec(&p.join("run.sh"), &install_script(&spec));
    fs::write(p.join("create.sh"), &scripts.create).unwrap();
    fs::write(p.join("mount.sh"), &scripts.mount).unwrap();
    fs::write(p.join("closure.nix"), CLOSURE_NIX).unwrap();
    for (bin, name) in [
        (&agent, "kcore-agent"),
        (&kctl, "kctl"),
        (&controller, "kcore-controller"),
    ] {
        fs::copy(bin, p.join(name)).unwrap();
    }
    fs::copy(support("nixos-install"), p.join("nixos-install")).unwrap();
    let run1 = Run {
        disks,
        tpm_state_dir: Some(tpm),
        payload_dir: p.to_owned(),
        timeout: Duration::from_secs(1200),
    };
    let out = bed.run(&run1).unwrap();
    eprintln!("install boot 1: {:.1}s", out.wall.as_secs_f64());
    let log = &out.serial_log;
    assert_eq!(out.exit_code, 0, "{log}");
    for s in [
        "state-mkfs",
        "create-cluster",
        "controller-boot1",
        "format",
        "mount",
        "install",
        "enrol-recovery",
        "enrol-tpm",
        "tpm-proven",
        "remove-install-key",
        "csr",
        "cert",
        "umount",
        "close",
    ] {
        assert_eq!(result_code(&out, s), 0, "boot 1 step {s}\n{log}");
    }
    assert_ne!(
        result_code(&out, "install-key-refused"),
        0,
        "the install key must no longer open the volume\n{log}"
    );
    let system = out.result("system").unwrap().trim().to_owned();
    assert!(
        system.starts_with("/nix/store/") && system.ends_with("-kcore-bed-node-system"),
        "{system}: {}",
        out.result("nix-build.log").unwrap_or_default()
    );
    // Only the TPM2 token and the recovery key remain: the install key's slot is gone.
    let meta: serde_json::Value = serde_json::from_str(&out.result("luks.json").unwrap()).unwrap();
    let tokens: Vec<&str> = meta["tokens"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|t| t["type"].as_str())
        .collect();
    assert!(tokens.contains(&"systemd-tpm2"), "{meta}");
    assert!(tokens.contains(&"systemd-recovery"), "{meta}");
    assert_eq!(meta["keyslots"].as_object().unwrap().len(), 2, "{meta}");
    let tpm_token = meta["tokens"]
        .as_object()
        .unwrap()
        .values()
        .find(|t| t["type"] == "systemd-tpm2")
        .unwrap();
    assert_eq!(
        tpm_token["tpm2-pcrs"],
        serde_json::json!([0, 2, 7]),
        "{meta}"
    );
    // The recovery key, as kctl keeps it beside its context.
    let recovery = out.result("recovery-key").unwrap().trim().to_owned();
    assert_eq!(recovery.len(), 71, "recovery key {recovery:?}");

    // Boot 2: same disks, same swtpm state.
    let bins = Bins {
        agent,
        kctl,
        controller,
    };
    boot2(&bed, run1, &spec, &bins, &system, &recovery);
}

/// The workspace binaries a boot copies into its payload.
struct Bins {
    agent: PathBuf,
    kctl: PathBuf,
    controller: PathBuf,
}

/// Boot 2 after an install (`run1`'s disks and swtpm state): stage 1, the installed agent
/// Ready with the kept controller, then the PCR change and the recovery key.
fn boot2(bed: &Bed, run1: Run, spec: &StorageSpec, bins: &Bins, system: &str, recovery: &str) {
    let backend = spec.backend;
    let (agent, kctl, controller) = (&bins.agent, &bins.kctl, &bins.controller);
    let p2 = tempfile::tempdir().unwrap();
    let p = p2.path();
    write_exec(&p.join("run.sh"), &boot2_script(spec));
    for (bin, name) in [(&kctl, "kctl"), (&controller, "kcore-controller")] {
        fs::copy(bin, p.join(name)).unwrap();
    }
    // Only for the comparison with what the installed root holds (`cmp`), never run.
    fs::copy(agent, p.join("kcore-agent")).unwrap();
    fs::write(p.join("recovery-key"), recovery).unwrap();
    let out = bed
        .run(&Run {
            payload_dir: p.to_owned(),
            ..run1
        })
        .unwrap();
    eprintln!("stage-1 boot 2: {:.1}s", out.wall.as_secs_f64());
    let log = &out.serial_log;
    let agent_log = out.result("agent.log").unwrap_or_default();
    let ctl_log = out.result("controller.log").unwrap_or_default();
    assert_eq!(out.exit_code, 0, "{log}");
    for s in [
        "tpm-unlock",
        "mount-root",
        "data-up",
        "bind-etc",
        "controller",
    ] {
        assert_eq!(result_code(&out, s), 0, "boot 2 step {s}\n{log}");
    }
    assert_eq!(out.result("profile").unwrap().trim(), system);
    assert_eq!(out.result("agent-is-installed").unwrap().trim(), "0");
    assert_eq!(
        out.result("installed-recovery-key").unwrap().trim(),
        recovery
    );
    assert_eq!(out.result("recovery-mode").unwrap().trim(), "400");
    assert_eq!(
        result_code(&out, "node-ready"),
        0,
        "node not Ready\nnodes: {}\n{}\nagent:\n{agent_log}\ncontroller:\n{ctl_log}\n{log}",
        out.result("nodes.json").unwrap_or_default(),
        out.result("nodes.err").unwrap_or_default()
    );
    let nodes: serde_json::Value =
        serde_json::from_str(&out.result("nodes.json").unwrap()).unwrap();
    let node = node_entry(&nodes).unwrap_or_else(|| panic!("{NODE_ID} not in {nodes}"));
    assert_eq!(node["status"], "Ready", "{node}");
    assert_eq!(node["report"]["dcId"], "DC1", "{node}");
    assert_eq!(
        node["report"]["storage"]["backend"],
        backend.as_str(),
        "{node}"
    );

    // After the PCR change: TPM refused, the recovery key unlocks, the installed system is there.
    assert_eq!(result_code(&out, "extend"), 0, "{log}");
    assert_ne!(
        out.result("pcr7-before").unwrap(),
        out.result("pcr7-after").unwrap()
    );
    assert_ne!(
        result_code(&out, "tpm-after-extend"),
        0,
        "TPM unlock must be refused\n{log}"
    );
    assert_eq!(result_code(&out, "recovery-unlock"), 0, "{log}");
    assert_eq!(result_code(&out, "recovery-mount"), 0, "{log}");
    assert_eq!(out.result("after-recovery-agent").unwrap().trim(), "0");
}

// ---------------------------------------------------------------------------------------
// The whole path: kctl node install against the install-mode agent, then stage 1.
// ---------------------------------------------------------------------------------------

/// Plays `systemctl reboot` for the install-mode agent's `install/reboot`: records that the
/// reboot was asked for (the bed's boot 2 is the reboot).
const REBOOT_SYSTEMCTL: &str = "#!/bin/sh\n# Test payload only: records the agent's `systemctl reboot`; the bed's next boot is the reboot.\necho \"$*\" >>\"$KCORE_RESULTS/systemctl-calls\"\n";

/// Boot 1 of the whole path: the controller, the install-mode agent and kctl on 127.0.0.1;
/// the refusals first (nothing written to a refused disk), then `kctl node install`.
fn kctl_install_script(backend: Backend) -> String {
    format!(
        r#"set -u
{COMMON_SH}
lo_up
step state-mkfs mkfs.ext4 -q -L ctl-state "$STATE"
mkdir -p /state && mount "$STATE" /state && mkdir -p "$HOME"
step create-cluster "$K" create cluster --controller 127.0.0.1:9090 --context lab
step controller-boot1 start_controller
SYS=$(nix-build --no-out-link {nix_opts} /payload/closure.nix --arg agent /payload/kcore-agent 2>"$R/nix-build.log")
echo "$SYS" >"$R/system"
cat >/run/install-agent.yaml <<YAML
nodeId: live
mode: install
listen: "127.0.0.1:9091"
disko: {{ diskoSource: /payload/disko, nixpkgsLib: /payload/nixpkgs-lib }}
binaries: {{ disko: /payload/disko-from-lib, nixos-install: /payload/nixos-install, systemctl: /payload/reboot-systemctl }}
install: {{ root: /mnt, stateDir: /run/kcore-install, systems: {{ {backend}: $SYS }} }}
YAML
KCORE_DISKO_SOURCE=/payload/disko KCORE_NIXPKGS_LIB=/payload/nixpkgs-lib \
  /payload/kcore-agent --config /run/install-agent.yaml >"$R/install-agent.log" 2>&1 &
wait_for 60 "$K" node install --node 127.0.0.1:9091 -k --os-disk {os} --dry-run --yes

sums() {{ # device -> sha256 of its first and last MiB
  local d="$1" mib
  mib=$(( $(blockdev --getsize64 "$d") / 1048576 ))
  {{ dd if="$d" bs=1M count=1 status=none; dd if="$d" bs=1M skip=$((mib - 1)) count=1 status=none; }} | sha256sum | cut -d' ' -f1
}}
refuse() {{ # name device extra-flags...
  local name="$1" dev="$2"; shift 2
  sums "$dev" >"$R/$name-sum-before"
  "$K" node install --node 127.0.0.1:9091 -k --os-disk "$dev" --storage-backend {backend} "$@" \
    </dev/null >"$R/$name.out" 2>"$R/$name.err"
  echo $? >"$R/$name.rc"
  sums "$dev" >"$R/$name-sum-after"
}}
ROOTDISK=/dev/disk/by-id/virtio-kcore-root
BUSY=/dev/disk/by-id/virtio-busy
DIRTY=/dev/disk/by-id/virtio-dirty
mkfs.ext4 -q "$BUSY" && mkdir -p /srv/busy && mount "$BUSY" /srv/busy
sgdisk -q -n1:0:0 "$DIRTY" && udevadm settle && mkfs.ext4 -q "$DIRTY-part1" && udevadm settle
refuse root "$ROOTDISK" --yes
refuse mounted "$BUSY" --yes
refuse dirty "$DIRTY"

"$K" node install --node 127.0.0.1:9091 -k --os-disk {os} --data-disk {data} \
  --storage-backend {backend} --node-id {node} --yes </dev/null >"$R/install.out" 2>"$R/install.err"
echo $? >"$R/install"
cat "$R/install.out" "$R/install.err"
cp "$HOME"/.kcore/lab/recovery/{node}.luks-recovery-key.txt "$R/recovery-key"
stat -c %a "$HOME"/.kcore/lab/recovery/{node}.luks-recovery-key.txt >"$R/recovery-file-mode"
stat -c %a "$HOME"/.kcore/lab/recovery >"$R/recovery-dir-mode"
sleep 3
cryptsetup luksDump --dump-json-metadata {luks} >"$R/luks.json"
lsblk --json -o NAME,SERIAL,FSTYPE,PARTLABEL,MOUNTPOINTS >"$R/lsblk-boot1.json"
for pid in $CTL_PID; do kill "$pid"; done
sleep 1; sync
umount /state
exit 0
"#,
        nix_opts = nix_opts(),
        backend = backend.as_str(),
        os = OS_DISK,
        data = DATA_DISK,
        luks = LUKS_DEV,
        node = NODE_ID,
    )
}

#[test]
fn kctl_node_install_lvm_then_stage1_boot_registers_ready_and_recovers() {
    let backend = Backend::Lvm;
    let agent = workspace_binary("kcore-agent", "kcore-agent");
    let kctl = workspace_binary("kctl", "kctl");
    let controller = workspace_binary("kcore-controller", "kcore-controller");
    let Some(inputs) = DeepInputs::from_env() else {
        eprintln!(
            "SKIP: disko source / nixpkgs lib not found (KCORE_TEST_DISKO, KCORE_TEST_NIXPKGS_LIB)"
        );
        return;
    };
    let Some(bed) = bed(BedOptions {
        zfs: backend == Backend::Zfs,
    }) else {
        return;
    };
    let keep = tempfile::tempdir().unwrap();
    let persistent = vec![
        Disk::persistent("os", 2 << 30, &keep.path().join("os.img")),
        Disk::persistent("data0", 1 << 30, &keep.path().join("data0.img")),
        Disk::persistent("ctl-state", 256 << 20, &keep.path().join("state.img")),
    ];
    let mut disks = persistent.clone();
    disks.push(Disk::new("busy", 64 << 20));
    disks.push(Disk::new("dirty", 64 << 20));
    let tpm = keep.path().join("tpm");

    let p1 = tempfile::tempdir().unwrap();
    let p = p1.path();
    write_exec(&p.join("run.sh"), &kctl_install_script(backend));
    write_exec(&p.join("reboot-systemctl"), REBOOT_SYSTEMCTL);
    fs::write(p.join("closure.nix"), CLOSURE_NIX).unwrap();
    for (bin, name) in [
        (&agent, "kcore-agent"),
        (&kctl, "kctl"),
        (&controller, "kcore-controller"),
    ] {
        fs::copy(bin, p.join(name)).unwrap();
    }
    for tool in ["nixos-install", "disko-from-lib"] {
        fs::copy(support(tool), p.join(tool)).unwrap();
    }
    copy_dir(&inputs.disko, &p.join("disko"));
    copy_dir(&inputs.nixpkgs_lib, &p.join("nixpkgs-lib"));
    let out = bed
        .run(&Run {
            disks,
            tpm_state_dir: Some(tpm.clone()),
            payload_dir: p.to_owned(),
            timeout: Duration::from_secs(1500),
        })
        .unwrap();
    eprintln!("kctl node install boot 1: {:.1}s", out.wall.as_secs_f64());
    let log = &out.serial_log;
    let agent_log = out.result("install-agent.log").unwrap_or_default();
    assert_eq!(out.exit_code, 0, "{log}");
    for s in ["state-mkfs", "create-cluster", "controller-boot1"] {
        assert_eq!(result_code(&out, s), 0, "boot 1 step {s}\n{log}");
    }
    // The refusals: exit 1, the reason named, nothing written to the disk.
    for (name, code) in [
        ("root", "TARGET_IS_OS_DISK"),
        ("mounted", "TARGET_MOUNTED"),
        ("dirty", "--yes"),
    ] {
        let err = out.result(&format!("{name}.err")).unwrap_or_default();
        assert_eq!(
            result_code(&out, &format!("{name}.rc")),
            1,
            "{name}: kctl must refuse: {err}\n{}\nagent:\n{agent_log}",
            out.result(&format!("{name}.out")).unwrap_or_default()
        );
        assert!(err.contains(code), "{name}: expected {code} in: {err}");
        assert_eq!(
            out.result(&format!("{name}-sum-before")).unwrap(),
            out.result(&format!("{name}-sum-after")).unwrap(),
            "{name}: first/last MiB changed"
        );
    }
    assert_eq!(
        result_code(&out, "install"),
        0,
        "kctl node install failed:\n{}\n{}\nagent:\n{agent_log}\n{log}",
        out.result("install.out").unwrap_or_default(),
        out.result("install.err").unwrap_or_default()
    );
    let printed = out.result("install.out").unwrap() + &out.result("install.err").unwrap();
    for step in ["format", "install", "enrol", "write-config", "done"] {
        assert!(printed.contains(step), "step {step} not printed: {printed}");
    }
    assert!(
        out.result("systemctl-calls")
            .unwrap_or_default()
            .contains("reboot"),
        "install/reboot did not run systemctl reboot\nagent:\n{agent_log}"
    );
    assert_eq!(out.result("recovery-file-mode").unwrap().trim(), "600");
    assert_eq!(out.result("recovery-dir-mode").unwrap().trim(), "700");
    let meta: serde_json::Value = serde_json::from_str(&out.result("luks.json").unwrap()).unwrap();
    let tokens: Vec<&str> = meta["tokens"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|t| t["type"].as_str())
        .collect();
    assert!(tokens.contains(&"systemd-tpm2"), "{meta}");
    assert!(tokens.contains(&"systemd-recovery"), "{meta}");
    assert_eq!(
        meta["keyslots"].as_object().unwrap().len(),
        2,
        "install key slot left: {meta}"
    );
    let system = out.result("system").unwrap().trim().to_owned();
    let recovery = out.result("recovery-key").unwrap().trim().to_owned();
    assert_eq!(recovery.len(), 71, "recovery key {recovery:?}");

    // Boot 2 and the PCR change, as for the hand-made install.
    let spec = StorageSpec::new(OS_DISK, vec![DATA_DISK.into()], backend);
    let run1 = Run {
        disks: persistent,
        tpm_state_dir: Some(tpm),
        payload_dir: p.to_owned(),
        timeout: Duration::from_secs(1200),
    };
    let bins = Bins {
        agent,
        kctl,
        controller,
    };
    boot2(&bed, run1, &spec, &bins, &system, &recovery);
}

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(src).unwrap().flatten() {
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        if from.is_dir() {
            copy_dir(&from, &to);
        } else {
            fs::copy(&from, &to).unwrap();
        }
    }
}
