//! `kcore-agent provision-disk` as the operator guide runs it (an init container's
//! environment): the guide's names for the node id, and the failure message that names
//! the retry marker, and plain (uncoloured) log lines in a pipe. The partition label does not exist on this machine, so the run stops
//! at its first step, before any LVM command; the LVM flow itself runs in the storage bed.

use std::process::{Command, Output};

const LABEL: &str = "kcore-it-no-such-partition-label";

fn provision(env: &[(&str, &str)], args: &[&str], marker_dir: &std::path::Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kcore-agent"));
    cmd.arg("provision-disk")
        .args(args)
        .env_remove("NODE_ID")
        .env_remove("SATELLITE_ID")
        .env("PARTITION_LABEL", LABEL)
        .env("VOLUME_GROUP", "vg_it")
        .env("POOL", "thinpool")
        .env("MARKER_DIR", marker_dir)
        .env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn provision_disk_accepts_the_guides_satellite_id_and_names_its_retry_marker() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("provision-disk-vg_it.retry");
    for (env, args) in [
        (&[("SATELLITE_ID", "node-7")][..], &[][..]),
        (&[][..], &["--satellite-id", "node-7"][..]),
        (&[("NODE_ID", "node-7")][..], &[][..]),
    ] {
        let out = provision(env, args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        // It got past argument parsing to the first step.
        assert!(
            stderr.contains("step resolve partition"),
            "{env:?} {args:?}: {stderr}"
        );
        let shown = marker.display().to_string();
        assert!(
            stderr.contains(&format!("retry marker left at {shown}")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("`rm {shown}` clears it")),
            "{stderr}"
        );
        assert!(marker.exists());
        // stderr is a pipe here: plain text, no ANSI colour, even without NO_COLOR.
        assert!(!stderr.contains('\u{1b}'), "colour in a pipe: {stderr:?}");
    }
    let out = provision(&[], &[], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--satellite-id") && stderr.contains("SATELLITE_ID"),
        "{stderr}"
    );
}
