//! Harness for the QEMU storage test bed (`tests/storage-bed/`): boots a Debian guest with
//! virtual disks (optionally a swtpm TPM2 and ZFS), runs a payload, returns its results.
