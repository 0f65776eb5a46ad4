#!/usr/bin/env bash
# Installs everything kcore's build, demo and tests need on a fresh Debian bookworm
# machine (run as root). Idempotent: packages already present are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Nix evaluates layouts and modules offline; jq is used by the demo and the test bed.
apt_packages=(nix-bin jq ca-certificates)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The storage test bed (QEMU, swtpm, debootstrap) keeps its own apt state.
if [ "${KCORE_SKIP_STORAGE_BED:-0}" != 1 ]; then
  tests/storage-bed/setup-host.sh
fi

command -v cargo >/dev/null || {
  echo "install-deps: cargo not found: install the Rust toolchain (rustup) first" >&2
  exit 1
}

# deadnix, the Nix linter kcore-nixos-checks runs over every .nix file (lint::*); from
# crates.io, not packaged for Debian bookworm. Skipped when already installed.
if ! command -v deadnix >/dev/null; then
  echo "install-deps: installing deadnix from crates.io" >&2
  cargo install deadnix --locked --version 1.3.1
fi
