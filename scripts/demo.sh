#!/usr/bin/env bash
# The README's first command: install what kcore needs, build it, and run the main job:
#   1. storage, offline: render a node's disko layout, validate it (deep through disko's
#      own types when its source is available), and plan a day-2 disk addition;
#   2. a local cluster on 127.0.0.1 with real mTLS: a controller and three agents that
#      register, one approved by hand, then `kctl get nodes` and `kctl get storage-class`.
# Everything the cluster writes lives in a temporary directory removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
# The QEMU storage bed is only needed by the test suite.
KCORE_SKIP_STORAGE_BED=1 scripts/install-deps.sh
source scripts/env.sh

echo "==> building kctl, kcore-controller, kcore-agent"
cargo build --quiet --manifest-path rust/Cargo.toml -p kctl -p kcore-controller -p kcore-agent --bins
export KCORE_BIN_DIR="$CARGO_TARGET_DIR/debug"

KCTL="$KCORE_BIN_DIR/kctl" scripts/demo-disko.sh
scripts/demo-cluster.sh
