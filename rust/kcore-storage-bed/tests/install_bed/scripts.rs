//! The guest-side shell of the install proof: the closure derivation nix builds in the
//! guest, and the payload scripts of each boot (`kctl node install` against the install-mode agent with its refusals, and boot 2's
//! stage 1 with the PCR change). Kept apart from the assertions in `main.rs`.

use kcore_disko::spec::{Backend, StorageSpec};

/// The node system the tests install: a derivation with builder `/bin/sh` (no nixpkgs on
/// these machines; the bed runs nix without a sandbox) holding the agent binary at
/// `bin/kcore-agent`, as the prebuilt node systems on the ISO hold theirs.
pub const CLOSURE_NIX: &str = r#"{ agent }:
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
pub const NIX_BUILD_OPTS: &[&str] = &[
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

pub const OS_DISK: &str = "/dev/disk/by-id/virtio-os";
pub const DATA_DISK: &str = "/dev/disk/by-id/virtio-data0";
/// The LUKS partition as the installed system names it (generic, so one prebuilt closure
/// fits every node): disko's partlabel `disk-<attr>-<partition>`.
pub const LUKS_DEV: &str = "/dev/disk/by-partlabel/disk-os-root";
pub const NODE_ID: &str = "bed-node-1";

/// Shell helpers for every payload: `step NAME CMD...` records CMD's exit code as
/// `$KCORE_RESULTS/NAME` and never aborts the script, so one run reports every step; `lo_up`
/// raises loopback (the bed's init leaves it down and the image has no iproute2).
pub const COMMON_SH: &str = r#"
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
pub fn nix_opts() -> String {
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

/// Boot 2: stage 1 played by the payload, then the node and the kept controller, then the
/// PCR change and the recovery key. No key is in the payload until the recovery step.
pub fn boot2_script(spec: &StorageSpec) -> String {
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

/// Plays `systemctl reboot` for the install-mode agent's `install/reboot`: records that the
/// reboot was asked for (the bed's boot 2 is the reboot).
pub const REBOOT_SYSTEMCTL: &str = "#!/bin/sh\n# Test payload only: records the agent's `systemctl reboot`; the bed's next boot is the reboot.\necho \"$*\" >>\"$KCORE_RESULTS/systemctl-calls\"\n";

/// Boot 1 of the whole path: the controller, the install-mode agent and kctl on 127.0.0.1;
/// the refusals first (nothing written to a refused disk), then `kctl node install`.
pub fn kctl_install_script(backend: Backend, with_refusals: bool) -> String {
    let refusals = if with_refusals { REFUSALS_SH } else { "" };
    format!(
        r#"set -u
{COMMON_SH}
lo_up
step state-mkfs mkfs.ext4 -q -L ctl-state "$STATE"
mkdir -p /state && mount "$STATE" /state && mkdir -p "$HOME"
step create-cluster "$K" create cluster --controller 127.0.0.1:9090 --context lab
step controller-boot1 start_controller
mark() {{ echo "== $* (uptime $(cut -d' ' -f1 /proc/uptime))"; }}
mark nix-build
SYS=$(nix-build --no-out-link {nix_opts} /payload/closure.nix --arg agent /payload/kcore-agent 2>"$R/nix-build.log")
echo "$SYS" >"$R/system"
mark "system $SYS"
# Install mode without diskoSource: the plan validates levels 1-2 here (level 3 evaluates
# all of disko under TCG for every plan; the layout tests of bed.rs cover it).
cat >/run/install-agent.yaml <<YAML
nodeId: live
mode: install
listen: "127.0.0.1:9091"
binaries: {{ disko: /payload/disko-from-lib, nixos-install: /payload/nixos-install, systemctl: /payload/reboot-systemctl }}
install: {{ root: /mnt, stateDir: /run/kcore-install, systems: {{ filesystem: $SYS, lvm: $SYS, zfs: $SYS }} }}
YAML
KCORE_DISKO_SOURCE=/payload/disko KCORE_NIXPKGS_LIB=/payload/nixpkgs-lib \
  /payload/kcore-agent --config /run/install-agent.yaml >"$R/install-agent.log" 2>&1 &
mark agent-started
port_open() {{ exec 3<>/dev/tcp/127.0.0.1/9091; }}
wait_for 60 port_open
echo $? >"$R/agent-up"
mark agent-answers

sums() {{ # device -> sha256 of its first and last MiB
  local d="$1" mib
  mib=$(( $(blockdev --getsize64 "$d") / 1048576 ))
  {{ dd if="$d" bs=1M count=1 status=none; dd if="$d" bs=1M skip=$((mib - 1)) count=1 status=none; }} | sha256sum | cut -d' ' -f1
}}
refuse() {{ # name device extra-flags...
  local name="$1" dev="$2"; shift 2
  sums "$dev" >"$R/$name-sum-before"
  mark "refusal $name"
  timeout 300 "$K" node install --node 127.0.0.1:9091 -k --os-disk "$dev" --storage-backend filesystem "$@" \
    </dev/null >"$R/$name.out" 2>"$R/$name.err"
  echo $? >"$R/$name.rc"
  cat "$R/$name.err"
  sums "$dev" >"$R/$name-sum-after"
}}
{refusals}
mark install
timeout 900 "$K" node install --node 127.0.0.1:9091 -k --os-disk {os} --data-disk {data} \
  --storage-backend {backend} --node-id {node} --yes </dev/null >"$R/install.out" 2>"$R/install.err"
echo $? >"$R/install"
mark "install done rc=$(cat "$R/install")"
cat "$R/install.out" "$R/install.err"
tail -n 30 "$R/install-agent.log"
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
        refusals = refusals,
    )
}

/// The refusals of `kctl node install`, run before the install (disks `busy` and `dirty`
/// attached): the guest's root disk, a mounted disk, a disk with data without `--yes`.
const REFUSALS_SH: &str = r#"ROOTDISK=/dev/disk/by-id/virtio-kcore-root
BUSY=/dev/disk/by-id/virtio-busy
DIRTY=/dev/disk/by-id/virtio-dirty
# Read-only, as bed.rs's use-mnt: a read-write fresh ext4 rewrites its own superblock and
# group descriptors (journal commits, the kernel's lazy inode-table init) while it stays
# mounted, which the unchanged-bytes check would blame on the install (CI saw it once).
mkfs.ext4 -q "$BUSY" && mkdir -p /srv/busy && mount -o ro "$BUSY" /srv/busy
# A disk with data: a GPT with one partition (the plan lists it as a wipe).
sgdisk -q -n1:0:0 "$DIRTY"; udevadm settle
# The live root changes under its own filesystem's writes (superblock, journal): frozen while
# it is checked, so the sums show what the install did to it, which must be nothing.
sync; fsfreeze -f /
refuse root "$ROOTDISK" --yes
fsfreeze -u /
refuse mounted "$BUSY" --yes
refuse dirty "$DIRTY"
"#;
