#!/bin/bash
# PID 1 of the storage-bed guest (installed as /sbin/kcore-bed-init, booted with init=).
#
# It brings up just enough of a system for storage tools (proc/sys/dev, udev for the
# /dev/disk/by-id links and LVM/cryptsetup's udev sync, device-mapper and ZFS modules),
# unpacks the payload tar from the read-only disk with serial kcore-payload, runs its
# run.sh, and writes everything
# the payload put in $KCORE_RESULTS as a tar onto the disk with serial kcore-results.
# The harness reads "KCORE-BED: exit=<n>" from the serial console; no systemd as PID 1
# keeps boot-to-payload short under TCG.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8

log() { echo "KCORE-BED: $*" >/dev/console; }

# The initramfs moves /proc, /sys, /dev and /run over; mount only what is missing.
mnt() { # type target [options]
  mountpoint -q "$2" 2>/dev/null || mount -t "$1" ${3:+-o "$3"} "$1" "$2"
}
mnt proc /proc
mnt sysfs /sys
mnt devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp
mnt devpts /dev/pts
mnt tmpfs /dev/shm
mnt tmpfs /run mode=0755
mnt tmpfs /tmp
mount -o remount,rw / 2>/dev/null || true
mkdir -p /run/lock /run/cryptsetup /run/lvm
log "userspace uptime=$(cut -d' ' -f1 /proc/uptime)"

for m in dm_mod dm_crypt dm_thin_pool dm_snapshot loop tpm_tis; do
  modprobe "$m" 2>/dev/null || true
done
if [ -d "/lib/modules/$(uname -r)/updates/dkms" ]; then
  modprobe zfs || log "modprobe zfs failed"
fi

/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add --type=subsystems
udevadm trigger --action=add --type=devices
udevadm settle --timeout=60
log "udev settled uptime=$(cut -d' ' -f1 /proc/uptime)"

results_dev=/dev/disk/by-id/virtio-kcore-results
# Not fw_cfg: Linux reads fw_cfg files byte by byte through an I/O port, which under TCG
# did not get through 64 MiB in 10 minutes. A read-only virtio disk reads at disk speed.
payload_src=/dev/disk/by-id/virtio-kcore-payload
export KCORE_RESULTS=/run/kcore-results
mkdir -p /payload "$KCORE_RESULTS"

rc=125
if [ -r "$payload_src" ] && tar -xf "$payload_src" -C /payload; then
  log "payload unpacked uptime=$(cut -d' ' -f1 /proc/uptime)"
  cd /payload || exit 1
  # The payload's output goes to the serial console (the harness keeps it as the log).
  bash ./run.sh </dev/null >/dev/console 2>&1
  rc=$?
else
  log "no payload at $payload_src"
fi
echo "$rc" >"$KCORE_RESULTS/exit-code"
sync
if [ -b "$results_dev" ]; then
  tar -cf "$results_dev" -C "$KCORE_RESULTS" . || log "writing results failed"
else
  log "no results disk $results_dev"
fi
sync
log "exit=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
echo o >/proc/sysrq-trigger 2>/dev/null
poweroff -f
