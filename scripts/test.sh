#!/usr/bin/env bash
# The whole test suite: installs what it needs, then formatting, lints, every Rust test
# (unit, in-process TLS servers, offline Nix evaluation, the QEMU storage bed) and a
# parse of every .nix file. Ends with one line "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== cargo fmt --check"
cargo fmt --manifest-path rust/Cargo.toml --all -- --check
echo "== cargo clippy"
cargo clippy --manifest-path rust/Cargo.toml --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
# --nocapture so each test's "SKIP: <why>" line reaches the log to be counted.
set +e
cargo test --manifest-path rust/Cargo.toml --workspace --no-fail-fast -- --nocapture 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# A test that printed SKIP returned early: libtest counted it as passed, we count it as skipped.
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } } END { print p+0, f+0 }' "$log")
skipped=$(grep -c '^SKIP: ' "$log" || true)
echo "== skipped tests"
grep '^SKIP: ' "$log" | sort | uniq -c || echo "none"
echo "$((passed - skipped)) passed, $failed failed, $skipped skipped"
exit "$status"
