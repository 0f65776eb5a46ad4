# Shared helpers for the storage-bed scripts (sourced, not executed).
# shellcheck shell=bash

bed_cache_root() {
  printf '%s\n' "${XDG_CACHE_HOME:-$HOME/.cache}/kcore/storage-bed"
}

# The Debian mirror the host is configured with (deb822 `URIs:` or one-line `deb` entries),
# so the bed never hard-codes another host.
bed_debian_mirror() {
  local m
  m="$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | grep -Eo 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)"
  m="${m%/}"
  if [ -z "$m" ]; then
    echo "storage-bed: no Debian mirror found in /etc/apt/sources.list(.d); configure one" >&2
    return 1
  fi
  printf '%s\n' "$m"
}

bed_security_mirror() {
  local s
  s="$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | grep -Eo 'https?://[^ ]+/debian-security/?' | head -n1 || true)"
  s="${s%/}"
  if [ -z "$s" ]; then
    s="$(bed_debian_mirror)-security"
  fi
  printf '%s\n' "$s"
}

# sources.list content for bookworm + updates + security + backports, main and contrib.
bed_sources_list() {
  local mirror security
  mirror="$(bed_debian_mirror)"
  security="$(bed_security_mirror)"
  cat <<SRC
deb $mirror bookworm main contrib
deb $mirror bookworm-updates main contrib
deb $mirror bookworm-backports main contrib
deb $security bookworm-security main contrib
SRC
}
