#!/usr/bin/env bash
# Builds (or finds in the cache) the storage-bed guest: a Debian bookworm minbase rootfs as
# a raw ext4 image plus the kernel and initrd to boot it with `qemu -kernel/-initrd`.
#
#   build-image.sh          base image (LVM, LUKS2, TPM2 tools)
#   build-image.sh --zfs    base + OpenZFS 2.3 from bookworm-backports contrib, built by dkms
#
# Prints the image directory (root.img, vmlinuz, initrd.img, packages.txt) as the last line
# of stdout; progress goes to stderr. The cache key hashes this script, the guest init and
# common.sh (which hold the package lists), so any change rebuilds. Builds happen in a
# temporary directory that is renamed into place at the end: an interrupted build never
# leaves a half-written cache entry.
#
# No loop devices or device-mapper on the host: the image is made with `mkfs.ext4 -d`.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=common.sh
. "$here/common.sh"

zfs=0
case "${1:-}" in
  --zfs) zfs=1 ;;
  "") ;;
  *) echo "usage: $0 [--zfs]" >&2; exit 2 ;;
esac

# Guest packages. Everything disko's generated create/mount scripts call for the
# filesystem and LVM backends, LUKS2 with TPM2 tokens, and the harness's own needs.
# Installed with apt in the finished rootfs, not by debootstrap (whose configure pass fails
# on nix-bin's perl dependencies): nix-bin, because `kctl disko plan --live` evaluates the
# fragment (level 2) with nix-instantiate on the machine whose disks it inspects.
late_packages=(nix-bin)
base_packages=(
  linux-image-cloud-amd64 initramfs-tools kmod systemd udev util-linux
  lvm2 thin-provisioning-tools cryptsetup cryptsetup-bin gdisk parted
  e2fsprogs dosfstools xfsprogs tpm2-tools libtss2-tcti-device0 jq procps
  zstd
)
# ZFS from bookworm-backports contrib (bookworm's 2.1 lacks `zfs set -u`, which disko uses);
# headers are pinned to the installed kernel version below.
zfs_packages=(zfs-dkms zfsutils-linux build-essential dkms)

cache="$(bed_cache_root)"
mkdir -p "$cache"
key="$(cat "$here/build-image.sh" "$here/guest-init.sh" "$here/common.sh" | sha256sum | cut -c1-16)"
base_dir="$cache/base-$key"
zfs_dir="$cache/zfs-$key"

log() { echo "build-image: $*" >&2; }

want_dir="$base_dir"
[ "$zfs" -eq 0 ] || want_dir="$zfs_dir"
# Entries appear only complete (rename), so a hit needs no lock: a base-image user does not
# wait for a ZFS build running in another process.
if [ -f "$want_dir/root.img" ]; then
  echo "$want_dir"
  exit 0
fi
# Building: hold the cache lock for the rest of the script, two builds would race.
exec 9>"$cache/.build.lock"
flock 9

make_image() { # rootfs_dir out_dir
  local rootfs="$1" out="$2" kver size_mb
  kver="$(basename "$(ls -d "$rootfs"/lib/modules/* | sort -V | tail -n1)")"
  cp "$rootfs/boot/vmlinuz-$kver" "$out/vmlinuz"
  cp "$rootfs/boot/initrd.img-$kver" "$out/initrd.img"
  echo "$kver" >"$out/kernel-version"
  size_mb=$(( $(du -sm "$rootfs" | cut -f1) * 12 / 10 + 512 ))
  truncate -s "${size_mb}M" "$out/root.img"
  mkfs.ext4 -q -F -L kcore-bed-root -d "$rootfs" "$out/root.img"
  chroot "$rootfs" dpkg-query -W -f '${Package} ${Version}\n' >"$out/packages.txt"
}

chroot_mounts() { # rootfs
  mount -t proc proc "$1/proc"
  mount -t sysfs sysfs "$1/sys"
  mount --bind /dev "$1/dev"
  mount --bind /dev/pts "$1/dev/pts"
}
chroot_umounts() { # rootfs
  umount "$1/dev/pts" "$1/dev" "$1/sys" "$1/proc" 2>/dev/null || true
}

build_base() {
  local tmp start
  start=$(date +%s)
  tmp="$(mktemp -d "$cache/.tmp-base-XXXXXX")"
  trap 'chroot_umounts "$tmp/rootfs"; rm -rf "$tmp"' EXIT
  log "debootstrap bookworm (minbase) into $tmp/rootfs"
  local inc
  inc="$(IFS=,; echo "${base_packages[*]}")"
  debootstrap --variant=minbase --include="$inc" --components=main \
    bookworm "$tmp/rootfs" "$(bed_debian_mirror)" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -n 40 "$tmp/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
  local r="$tmp/rootfs"
  install -m 0755 "$here/guest-init.sh" "$r/sbin/kcore-bed-init"
  echo kcore-bed >"$r/etc/hostname"
  : >"$r/etc/fstab"
  bed_sources_list >"$r/etc/apt/sources.list"
  chroot_mounts "$r"
  if ! chroot "$r" env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends "$@"' sh \
    "${late_packages[@]}" >"$tmp/apt.log" 2>&1; then
    tail -n 40 "$tmp/apt.log" >&2
    log "installing ${late_packages[*]} failed"
    exit 1
  fi
  chroot "$r" apt-get clean
  chroot_umounts "$r"
  rm -f "$tmp/apt.log"
  rm -rf "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"*
  make_image "$r" "$tmp"
  rm -f "$tmp/debootstrap.log"
  log "base image built in $(( $(date +%s) - start ))s"
  # The rootfs stays next to the image: the ZFS variant starts from a copy of it.
  mv "$tmp" "$base_dir"
  trap - EXIT
}

build_zfs() {
  local tmp start kver r
  start=$(date +%s)
  tmp="$(mktemp -d "$cache/.tmp-zfs-XXXXXX")"
  r="$tmp/rootfs"
  trap 'chroot_umounts "$r"; rm -rf "$tmp"' EXIT
  log "copying base rootfs for the ZFS variant"
  cp -a "$base_dir/rootfs" "$r"
  kver="$(cat "$base_dir/kernel-version")"
  chroot_mounts "$r"
  log "installing ${zfs_packages[*]} linux-headers-$kver (dkms build, several minutes)"
  if ! chroot "$r" env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends "$@"' sh \
    -t bookworm-backports "linux-headers-$kver" "${zfs_packages[@]}" >"$tmp/apt.log" 2>&1; then
    tail -n 60 "$tmp/apt.log" >&2
    log "installing ZFS failed"
    exit 1
  fi
  if ! ls "$r/lib/modules/$kver/updates/dkms/"zfs.ko* >/dev/null 2>&1; then
    tail -n 60 "$tmp/apt.log" >&2
    log "dkms did not produce zfs.ko for $kver"
    exit 1
  fi
  chroot "$r" apt-get clean
  rm -rf "$r/var/lib/apt/lists/"* "$tmp/apt.log"
  chroot_umounts "$r"
  make_image "$r" "$tmp"
  # The ZFS rootfs is not kept: nothing is derived from it.
  rm -rf "$r"
  log "zfs image built in $(( $(date +%s) - start ))s"
  mv "$tmp" "$zfs_dir"
  trap - EXIT
}

# Old cache entries (other keys) are removed once a new one is complete: each is ~1 GB.
prune() { # kind keep_dir
  local d
  for d in "$cache/$1"-*; do
    [ "$d" = "$2" ] || [ ! -d "$d" ] || { log "removing old cache entry $d"; rm -rf "$d"; }
  done
}

if [ ! -f "$base_dir/root.img" ]; then
  build_base
  prune base "$base_dir"
fi
if [ "$zfs" -eq 1 ]; then
  if [ ! -f "$zfs_dir/root.img" ]; then
    build_zfs
    prune zfs "$zfs_dir"
  fi
  echo "$zfs_dir"
else
  echo "$base_dir"
fi
