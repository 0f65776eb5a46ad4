//! The storage bed's tests: real block devices, LUKS2, TPM2, LVM and ZFS inside a QEMU
//! guest (see docs/storage-bed.md). One binary; each test takes the harness's run lock, so
//! guests boot one at a time.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use kcore_storage_bed::{Bed, BedError, BedOptions, Disk, Run};

/// Prepares the bed, or prints `SKIP:` and returns `None` when the host cannot run it.
fn bed(opts: BedOptions) -> Option<Bed> {
    let t = Instant::now();
    match Bed::ensure(opts) {
        Ok(b) => {
            eprintln!("bed ready ({opts:?}) in {:.1}s", t.elapsed().as_secs_f64());
            Some(b)
        }
        Err(BedError::Unavailable(why)) => {
            eprintln!("SKIP: {why}");
            None
        }
        Err(e) => panic!("preparing the storage bed failed: {e}"),
    }
}

fn payload(script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_exec(&dir.path().join("run.sh"), script);
    dir
}

fn write_exec(path: &Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn guest_boots_and_sees_disks_by_serial() {
    let Some(bed) = bed(BedOptions::default()) else {
        return;
    };
    let p = payload(
        "set -eu\nlsblk --json -b -o NAME,SIZE,SERIAL,TYPE > \"$KCORE_RESULTS/lsblk.json\"\n\
         ls /dev/disk/by-id/ > \"$KCORE_RESULTS/by-id.txt\"\n",
    );
    let out = bed
        .run(&Run {
            disks: vec![Disk::new("data-a", 64 << 20), Disk::new("data-b", 96 << 20)],
            tpm_state_dir: None,
            payload_dir: p.path().to_owned(),
            timeout: Duration::from_secs(300),
        })
        .unwrap();
    eprintln!(
        "boot to userspace {:?}s, run wall {:.1}s",
        out.userspace_at_secs,
        out.wall.as_secs_f64()
    );
    assert_eq!(out.exit_code, 0, "{}", out.serial_log);
    let v: serde_json::Value = serde_json::from_str(&out.result("lsblk.json").unwrap()).unwrap();
    let devs = v["blockdevices"].as_array().unwrap();
    let size_of = |serial: &str| {
        devs.iter()
            .find(|d| d["serial"] == serial)
            .and_then(|d| d["size"].as_u64())
    };
    assert_eq!(size_of("data-a"), Some(64 << 20), "{v}");
    assert_eq!(size_of("data-b"), Some(96 << 20), "{v}");
    let by_id = out.result("by-id.txt").unwrap();
    assert!(by_id.contains("virtio-data-a"), "{by_id}");
}
