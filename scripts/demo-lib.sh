# Sourced by the demo scripts (demo-cluster.sh, demo-rollout.sh): the pieces they share.
# Expects `set -euo pipefail` and scripts/env.sh sourced.

# kcore_binaries [EXTRA CARGO ARGS...]: sets kctl_bin, controller_bin, agent_bin from
# KCORE_BIN_DIR, building them (and whatever the extra arguments name) with cargo when it
# is unset.
kcore_binaries() {
    local repo
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    if [[ -z "${KCORE_BIN_DIR:-}" ]]; then
        echo "==> building kctl, kcore-controller, kcore-agent $*"
        cargo build --quiet --manifest-path "$repo/rust/Cargo.toml" \
            -p kctl -p kcore-controller -p kcore-agent --bins "$@"
        KCORE_BIN_DIR="$CARGO_TARGET_DIR/debug"
    fi
    kctl_bin="$KCORE_BIN_DIR/kctl"
    controller_bin="$KCORE_BIN_DIR/kcore-controller"
    agent_bin="$KCORE_BIN_DIR/kcore-agent"
    for b in "$kctl_bin" "$controller_bin" "$agent_bin"; do
        [[ -x "$b" ]] || { echo "error: $b is missing (set KCORE_BIN_DIR)" >&2; exit 1; }
    done
}

# A free TCP port on 127.0.0.1 (nothing answers a connect on it).
free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    echo "error: no free port found" >&2
    return 1
}

# Waits until "$@" succeeds (up to ~20 s; WAIT_TRIES × 0.2 s).
wait_for() {
    for _ in $(seq 1 "${WAIT_TRIES:-100}"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "error: timed out waiting for: $*" >&2
    return 1
}

# The end of a demo that does not keep its cluster: stop every pid in the caller's `pids`
# array and wait for it, show the logs' last lines when the demo failed (exit status $1),
# and remove the caller's `$work` directory.
stop_and_clean() {
    local status=$1 pid
    for pid in "${pids[@]:-}"; do
        [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]:-}"; do
        [[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true
    done
    if [[ $status -ne 0 ]]; then
        echo "demo failed (exit $status); last log lines:" >&2
        tail -n 5 "$work"/*.log >&2 2>/dev/null || true
    fi
    rm -rf "$work"
}
