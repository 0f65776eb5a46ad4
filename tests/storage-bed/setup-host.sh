#!/usr/bin/env bash
# Installs the host packages the storage test bed needs (QEMU, debootstrap, swtpm, jq).
#
# Why a private apt state: the host's qemu-utils already comes from bookworm-backports, so
# qemu-system-x86 must come from backports too (bookworm's 7.2 conflicts with it), and the
# system's apt configuration must stay untouched. The private sources/lists/archives live
# under the bed's cache directory; only dpkg's own database is shared (it has to be).
#
# Idempotent and non-interactive; exits in well under a second when everything is present.
set -euo pipefail

need_bins=(qemu-system-x86_64 debootstrap swtpm swtpm_setup jq mkfs.ext4 qemu-img)
missing=()
for b in "${need_bins[@]}"; do
  command -v "$b" >/dev/null 2>&1 || missing+=("$b")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup-host: all host tools present"
  exit 0
fi
echo "setup-host: missing ${missing[*]}; installing"

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-host: must run as root to install packages (missing: ${missing[*]})" >&2
  exit 1
fi

# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
cache_root="$(bed_cache_root)"
apt_dir="$cache_root/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/cache"

bed_sources_list >"$apt_dir/sources.list.tmp"
mv "$apt_dir/sources.list.tmp" "$apt_dir/sources.list"

apt_opts=(
  -o "Dir::Etc::sourcelist=$apt_dir/sources.list"
  -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir/cache"
  -o "Dir::Cache::archives=$apt_dir/archives"
  -o "APT::Get::List-Cleanup=0"
  # The private archive dir belongs to root, not _apt.
  -o "APT::Sandbox::User=root"
)
export DEBIAN_FRONTEND=noninteractive
apt-get "${apt_opts[@]}" update -q
# qemu-system-x86 from backports to match the host's qemu-utils; the rest from bookworm.
apt-get "${apt_opts[@]}" install -y -q --no-install-recommends \
  -t bookworm-backports qemu-system-x86
apt-get "${apt_opts[@]}" install -y -q --no-install-recommends \
  debootstrap swtpm swtpm-tools jq e2fsprogs qemu-utils

for b in "${need_bins[@]}"; do
  command -v "$b" >/dev/null 2>&1 || { echo "setup-host: $b still missing after install" >&2; exit 1; }
done
echo "setup-host: done"
