#!/usr/bin/env bash
# A local kcore cluster on 127.0.0.1 with real mutual TLS:
#   kctl create cluster -> one controller -> three agents (node-1 DC1 filesystem,
#   node-2 DC1 lvm, node-3 DC2 zfs), each enrolled from a CSR made "on the node".
#   node-1 and node-2 are auto-approved; the controller is then restarted with
#   requireManualApproval (its state survives the restart), node-3 waits as Pending
#   and is approved with `kctl node approve`.
# Everything lives in a temporary directory that is removed on exit (KEEP=1 keeps it
# and leaves the daemons running; the script then prints how to stop them).
#
# Binaries: built with cargo unless KCORE_BIN_DIR points at kctl, kcore-controller and
# kcore-agent.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
source "$here/env.sh"

# shellcheck source=scripts/demo-lib.sh
source "$here/demo-lib.sh"
kcore_binaries

work="$(mktemp -d "${TMPDIR:-/tmp}/kcore-demo.XXXXXX")"
# kctl keeps its config and the cluster's PKI here instead of ~/.kcore.
export KCORE_CONFIG="$work/kctl/config"
pids=()

cleanup() {
    local status=$?
    if [[ "${KEEP:-0}" == 1 ]]; then
        # Only the daemons still alive: the first controller was stopped on purpose.
        local live=()
        for pid in "${pids[@]:-}"; do
            [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && live+=("$pid")
        done
        echo
        echo "KEEP=1: daemons still running (pids ${live[*]:-none}), files in $work"
        echo "use kctl against it with:"
        printf 'export KCORE_CONFIG=%q\n' "$KCORE_CONFIG"
        echo "stop it with: kill ${live[*]:-} && rm -rf '$work'"
        return
    fi
    stop_and_clean "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kctl() { "$kctl_bin" "$@"; }

ctl_port="$(free_port)"
ctl_addr="127.0.0.1:$ctl_port"

echo "==> kctl create cluster --controller $ctl_addr --context demo"
kctl create cluster --controller "$ctl_addr" --context demo
ctl_dir="$work/kctl/demo/controllers/ctl1"

start_controller() {
    "$controller_bin" --config "$ctl_dir/controller.yaml" >>"$work/controller.log" 2>&1 &
    pids+=("$!")
    controller_pid=$!
    wait_for kctl get storage-class
}

echo "==> starting the controller (auto-approval)"
start_controller

# enroll ID DC BACKEND: key + CSR on the node, certificate from the controller, config,
# agent started.
enroll() {
    local id=$1 dc=$2 backend=$3 dir="$work/nodes/$1" port
    port="$(free_port)"
    mkdir -p "$dir/state" "$dir/volumes"
    kctl create csr --node-id "$id" --cluster demo \
        --key-out "$dir/node.key" --csr-out "$dir/node.csr" --dns localhost --dns 127.0.0.1 >/dev/null
    kctl create node-cert --node-id "$id" --csr "$dir/node.csr" \
        --out "$dir/node.crt" --ca-out "$dir/ca.crt"
    echo "installer-only" >"$dir/state/disko-management-mode"
    cat >"$dir/node-agent.yaml" <<EOF
nodeId: $id
dcId: $dc
hostname: $id.demo
labels: { demo: "true" }
listen: "127.0.0.1:$port"
mode: managed
controllers: ["$ctl_addr"]
heartbeatIntervalSeconds: 2
tls:
  caFile: $dir/ca.crt
  certFile: $dir/node.crt
  keyFile: $dir/node.key
storage:
  backend: $backend
  filesystemVolumeDir: $dir/volumes
disko:
  managementModeFile: $dir/state/disko-management-mode
  stateDir: $dir/state/disko
nix:
  configPath: $dir/state/kcore-node.nix
EOF
    "$agent_bin" --config "$dir/node-agent.yaml" >"$work/agent-$id.log" 2>&1 &
    pids+=("$!")
    wait_for kctl get node "$id"
}

echo "==> enrolling node-1 (DC1, filesystem) and node-2 (DC1, lvm)"
enroll node-1 DC1 filesystem
enroll node-2 DC1 lvm

echo "==> restarting the controller with requireManualApproval: true (state is kept)"
kill "$controller_pid"
wait "$controller_pid" 2>/dev/null || true
sed -i 's/^requireManualApproval: false$/requireManualApproval: true/' "$ctl_dir/controller.yaml"
start_controller

echo "==> enrolling node-3 (DC2, zfs): it waits for approval"
enroll node-3 DC2 zfs
echo
kctl get nodes
echo
echo "==> kctl node approve node-3"
kctl node approve node-3
# The node's next heartbeat (every 2 s) makes it Ready.
wait_for bash -c "'$kctl_bin' get node node-3 | grep -q ' Ready '"

echo
echo "==> kctl get nodes -o wide"
kctl get nodes -o wide
echo
echo "==> kctl get storage-class"
kctl get storage-class
echo
echo "==> kctl describe storage-class lvm"
kctl describe storage-class lvm
echo
echo "==> kctl describe node node-2"
kctl describe node node-2
