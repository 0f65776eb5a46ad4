#!/usr/bin/env bash
# A fleet upgrade on 127.0.0.1 (docs/rollouts.md): a controller and five agents with real
# mutual TLS, each on a fake root installed from a local fleet flake (tests/support/fleet,
# no NixOS needed; the agents are the real agent library in the `fleet_agent` example,
# pointed at their fake roots). Then:
#   1. revision 2 for every node: `kctl update cluster plan`, `apply` (manual approval),
#      `approve`, `get` until it succeeded (batches of 2);
#   2. revision 3, in which node-3's activation fails: the one-at-a-time rollout halts,
#      node-3 reverts on its own, node-4 (prepared ahead) and node-5 are never activated, `get` shows why.
# Everything lives in a temporary directory removed on exit. KEEP=1 leaves the cluster
# running and prints the fleet repository, the kctl config and how to stop it.
#
# Needs nix (nix-build, nix-env, nix-instantiate), git and jq. Binaries: built with cargo
# unless KCORE_BIN_DIR points at kctl, kcore-controller, kcore-agent and
# examples/fleet_agent.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=scripts/env.sh
source "$here/env.sh"
# shellcheck source=scripts/demo-lib.sh
source "$here/demo-lib.sh"
kcore_binaries --example fleet_agent
fleet_agent_bin="$KCORE_BIN_DIR/examples/fleet_agent"
[[ -x "$fleet_agent_bin" ]] || { echo "error: $fleet_agent_bin is missing" >&2; exit 1; }
for tool in nix nix-env git jq; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not on PATH" >&2; exit 1; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/kcore-rollout-demo.XXXXXX")"
export KCORE_CONFIG="$work/kctl/config"
# Offline: the fleet's derivations exist only here.
export NIX_CONFIG="substituters ="
pids=()

cleanup() {
    local status=$?
    if [[ "${KEEP:-0}" == 1 && $status -eq 0 ]]; then
        echo
        echo "KEEP=1: the controller and five agents run on (pids ${pids[*]})"
        echo "fleet repository: $work/fleet   (commit a revision, then apply a ClusterUpdate naming it)"
        printf 'kctl config:      export KCORE_CONFIG=%q\n' "$KCORE_CONFIG"
        echo "rollouts:         $work/*.yaml; kctl update cluster list"
        echo "stop it with:     kill ${pids[*]} && rm -rf '$work'"
        return
    fi
    stop_and_clean "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kctl() { "$kctl_bin" "$@"; }
git_fleet() { git -C "$work/fleet" -c user.email=demo@kcore.test -c user.name=demo "$@"; }
nodes=(node-1 node-2 node-3 node-4 node-5)

# commit_revision LABEL [FAILING_NODE]: every node's host file at this revision; its rev.
commit_revision() {
    local label=$1 failing=${2:-} id activate
    for id in "${nodes[@]}"; do
        activate=ok
        [[ "$id" == "$failing" ]] && activate=fail
        printf '{"activate": "%s", "health": "ok", "kernel": "6.6.1", "seconds": 1, "label": "%s"}\n' \
            "$activate" "$label" >"$work/fleet/hosts/$id.json"
    done
    git_fleet add -A
    git_fleet commit -q -m "$label"
    git_fleet rev-parse HEAD
}

echo "==> the fleet flake: $work/fleet"
mkdir -p "$work/fleet/hosts"
cp "$repo/tests/support/fleet/flake.nix" "$repo/tests/support/fleet/switch-to-configuration" "$work/fleet/"
git_fleet init -q
r1="$(commit_revision r1)"

ctl_addr="127.0.0.1:$(free_port)"
echo "==> kctl create cluster --controller $ctl_addr --context demo"
kctl create cluster --controller "$ctl_addr" --context demo >/dev/null
"$controller_bin" --config "$work/kctl/demo/controllers/ctl1/controller.yaml" >"$work/controller.log" 2>&1 &
pids+=("$!")
wait_for kctl get storage-class

# node ID: key and CSR on the node, its certificate, the fake root installed at r1, the
# agent started.
node() {
    local id=$1 dir="$work/nodes/$1" port top
    port="$(free_port)"
    mkdir -p "$dir/state"
    kctl create csr --node-id "$id" --cluster demo --key-out "$dir/node.key" \
        --csr-out "$dir/node.csr" --dns localhost --dns 127.0.0.1 >/dev/null
    kctl create node-cert --node-id "$id" --csr "$dir/node.csr" \
        --out "$dir/node.crt" --ca-out "$dir/ca.crt" >/dev/null
    nix --extra-experimental-features 'nix-command flakes' build --out-link "$dir/installed" \
        "git+file://$work/fleet?rev=$r1#nixosConfigurations.$id.config.system.build.toplevel"
    top="$(readlink -f "$dir/installed")"
    "$fleet_agent_bin" install "$dir/root" "$top" "$dir/bin"
    cat >"$dir/node-agent.yaml" <<YAML
nodeId: $id
dcId: DC1
listen: "127.0.0.1:$port"
mode: managed
controllers: ["$ctl_addr"]
heartbeatIntervalSeconds: 1
tls: { caFile: $dir/ca.crt, certFile: $dir/node.crt, keyFile: $dir/node.key }
disko: { managementModeFile: $dir/state/disko-management-mode, stateDir: $dir/state/disko }
nix: { configPath: $dir/state/kcore-node.nix }
binaries:
  systemctl: $dir/bin/systemctl
  bootctl: $dir/bin/bootctl
  systemdRun: $repo/tests/support/systemd-run
YAML
    "$fleet_agent_bin" serve "$dir/node-agent.yaml" "$dir/root" "$agent_bin" >"$work/agent-$id.log" 2>&1 &
    pids+=("$!")
}

echo "==> five nodes installed at ${r1:0:12}, agents started"
for id in "${nodes[@]}"; do node "$id"; done
for id in "${nodes[@]}"; do
    wait_for bash -c "'$kctl_bin' get node $id | grep -q ' Ready '"
done
kctl get nodes

# rollout NAME REV STRATEGY APPROVAL: a ClusterUpdate file; its path.
rollout() {
    cat >"$work/$1.yaml" <<YAML
kind: ClusterUpdate
metadata: { name: $1 }
spec:
  target: { version: "$1", flake_ref: "git+file://$work/fleet", flake_rev: "$2" }
  selector: { all_nodes: true }
  strategy: $3
  activation: { mode: auto, health_timeout_seconds: 10 }
  approval_policy: $4
  max_failures: 0
YAML
    echo "$work/$1.yaml"
}

# phase NAME: the rollout's phase.
phase() { kctl update cluster get "$1" -o json 2>/dev/null | jq -r '.status.phase // "new"'; }

# until_phase NAME PHASE...: waits (at most 2 minutes) for one of the phases.
until_phase() {
    local name=$1 now
    shift
    for _ in $(seq 1 600); do
        now="$(phase "$name" || true)"
        for want in "$@"; do [[ "$now" == "$want" ]] && return 0; done
        sleep 0.2
    done
    echo "error: $name never reached $* (it is $now)" >&2
    return 1
}

r2="$(commit_revision r2)"
u1="$(rollout release-r2 "$r2" '{ strategy_type: batch, batch_size: 2, max_unavailable: 2 }' manual)"
echo
echo "==> kctl update cluster plan -f $u1"
kctl update cluster plan -f "$u1"
echo
echo "==> kctl update cluster apply -f $u1 (approvalPolicy manual)"
kctl update cluster apply -f "$u1"
until_phase release-r2 awaiting_approval
kctl update cluster get release-r2
echo
echo "==> kctl update cluster approve release-r2"
kctl update cluster approve release-r2 >/dev/null
until_phase release-r2 succeeded halted failed
kctl update cluster get release-r2

r3="$(commit_revision r3 node-3)"
u2="$(rollout release-r3 "$r3" '{ strategy_type: one-at-a-time }' auto)"
echo
echo "==> revision ${r3:0:12}: node-3's activation fails; kctl update cluster apply -f $u2"
kctl update cluster apply -f "$u2"
until_phase release-r3 halted succeeded failed
echo
echo "==> kctl update cluster get release-r3 (exit 1: halted)"
kctl update cluster get release-r3 || echo "(exit $?)"

# What the nodes run now, from their fake roots: node-3 back on r2, node-4/5 never moved.
echo
echo "==> each node's /run/current-system"
for id in "${nodes[@]}"; do
    printf '%s\t%s\n' "$id" "$(jq -r .label "$(readlink -f "$work/nodes/$id/root/run/current-system")/host.json")"
done
[[ "$(phase release-r3)" == halted ]]
[[ "$(jq -r .label "$(readlink -f "$work/nodes/node-3/root/run/current-system")/host.json")" == r2 ]]
[[ "$(jq -r .label "$(readlink -f "$work/nodes/node-5/root/run/current-system")/host.json")" == r2 ]]
echo "demo-rollout: ok"
