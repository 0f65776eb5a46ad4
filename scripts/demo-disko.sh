#!/usr/bin/env bash
# kcore's storage main job, offline: render a node's storage spec into disko fragments,
# validate them (deep, through disko's own types, when the disko source and nixpkgs lib are
# known), and plan adding a data disk against recorded block-device snapshots.
#
# Run from the repository root: scripts/demo-disko.sh
# KCTL=path/to/kctl uses a built binary instead of `cargo run`.
# Deep validation inputs: KCORE_DISKO / KCORE_NIXPKGS_LIB (or KCORE_TEST_*, or the
# ~/.cache/kcore/test-inputs fallback); without them level 3 is skipped and said so.
set -euo pipefail

cd "$(dirname "$0")/.."
if [[ -n "${KCTL:-}" ]]; then
  kctl=("$KCTL")
else
  kctl=(cargo run -q --manifest-path rust/Cargo.toml -p kctl --)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "render the installed layout and the day-2 layout (examples/storage/node-*.yaml)"
"${kctl[@]}" disko render --spec examples/storage/node-current.yaml -O "$work/current.nix"
"${kctl[@]}" disko render --spec examples/storage/node-new.yaml -O "$work/new.nix"
diff -u "$work/current.nix" "$work/new.nix" || true

step "validate the new fragment"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/kcore/test-inputs"
if [[ -d "${KCORE_DISKO:-${KCORE_TEST_DISKO:-$cache/disko}}" &&
      -d "${KCORE_NIXPKGS_LIB:-${KCORE_TEST_NIXPKGS_LIB:-$cache/nixpkgs-lib}}" ]]; then
  "${kctl[@]}" disko validate -f "$work/new.nix" --deep
  step "the first lines of disko's create script for it"
  "${kctl[@]}" disko validate -f "$work/new.nix" --deep --print-create-script | head -n 25
else
  echo "SKIP: level 3 (no disko source / nixpkgs lib); levels 1-2 only"
  "${kctl[@]}" disko validate -f "$work/new.nix"
fi

step "plan: add the disk on a machine where it is blank (examples/storage/devices-blank.json)"
"${kctl[@]}" -o wide disko plan -f "$work/new.nix" --current "$work/current.nix" \
  --devices examples/storage/devices-blank.json

step "plan: the same on a machine where that disk is an active LVM PV (devices-holders.json)"
set +e
"${kctl[@]}" disko plan -f "$work/new.nix" --current "$work/current.nix" \
  --devices examples/storage/devices-holders.json
code=$?
set -e
if [[ $code -ne 1 ]]; then
  echo "expected the plan to be refused with exit code 1, got $code" >&2
  exit 1
fi
echo "(refused as expected: exit code $code)"
