//! The install path of issue 11 on real disks, real LUKS2 and a real swtpm in the storage
//! bed, through a real second boot (docs/storage-bed.md, "The install proof").
//!
//! - `nixos_install_stand_in_copies_a_nix_built_closure_into_the_root` (host, no QEMU): the
//!   `tests/support/nixos-install` stand-in copies a closure nix really built into a root's
//!   store and sets that root's system profile, with the flags the real one takes.
//! - `kctl_node_install_lvm_then_stage1_boot_registers_ready_and_recovers` (two boots):
//!   boot 1 runs a controller made by `kctl create cluster` (its state and kctl's context on
//!   a persistent disk), the install-mode agent and kctl on 127.0.0.1; `kctl node install`
//!   refuses the guest's root disk, a mounted disk and a disk with data without `--yes`
//!   (first and last MiB unchanged), then installs with `--storage-backend lvm --yes` a
//!   closure nix built in the guest holding this host's kcore-agent. Boot 2 (same disks, same
//!   swtpm state) plays stage 1: TPM-only unlock, mount, bind `/etc/kcore`, the installed
//!   agent (from the installed closure) in managed mode with the installed configuration, the
//!   controller from the kept state: `kctl get nodes -o json` shows the node Ready with
//!   backend lvm and DC1. Then PCR 7 is extended: TPM unlock is refused, and the recovery key
//!   kctl stored unlocks.
//!
//! The guest-side shell lives in `scripts.rs`.

// A test binary: an unwrap that fails is a failing test, helpers included.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kcore_disko::DeepInputs;
use kcore_disko::spec::{Backend, StorageSpec};
use kcore_nix::runner::{Invocation, Output, Program};
use kcore_storage_bed::testing::*;
use kcore_storage_bed::{Bed, BedOptions, Disk, Run};

mod scripts;
use scripts::*;

/// Runs a program through kcore-nix's runner (tests follow the same rule as the code).
fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let path = Path::new(program);
    let explicit = path.is_absolute().then_some(path);
    let p = Program::resolve(
        path.file_name().unwrap().to_str().unwrap(),
        explicit,
        "KCORE_TEST_UNUSED_PROGRAM",
    )
    .unwrap();
    let mut inv = Invocation::new(&p).args(args);
    for (k, v) in env {
        inv = inv.env(k, v);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(inv.output_unchecked())
        .unwrap()
}

#[test]
fn nixos_install_stand_in_copies_a_nix_built_closure_into_the_root() {
    if Program::resolve("nix-build", None, "KCORE_TEST_UNUSED_PROGRAM").is_err() {
        eprintln!("SKIP: nix-build not on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_exec(&d.join("agent"), "#!/bin/sh\necho installed-agent\n");
    fs::write(d.join("closure.nix"), CLOSURE_NIX).unwrap();
    let mut args = vec!["--no-out-link"];
    args.extend(NIX_BUILD_OPTS);
    let closure = d.join("closure.nix");
    let agent = d.join("agent");
    args.extend([
        closure.to_str().unwrap(),
        "--arg",
        "agent",
        agent.to_str().unwrap(),
    ]);
    let built = run("nix-build", &args, &[]);
    assert!(built.status.success(), "{}", built.stderr_lossy());
    let system = built.stdout_lossy().trim().to_owned();
    assert!(system.starts_with("/nix/store/"), "{system}");

    let root = d.join("root");
    fs::create_dir(&root).unwrap();
    let stand_in = support("nixos-install");
    let stand_in = stand_in.to_str().unwrap();
    let root_s = root.to_str().unwrap();
    let out = run(
        stand_in,
        &[
            "--system",
            &system,
            "--no-root-passwd",
            "--no-channel-copy",
            "--root",
            root_s,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", out.stderr_lossy());

    // The profile points at the closure, and the closure is in the ROOT's store: its binary
    // runs from there, and the root's own nix database knows the path.
    let profile = root.join("nix/var/nix/profiles/system");
    let target = fs::read_link(root.join("nix/var/nix/profiles/system-1-link")).unwrap();
    assert_eq!(target, Path::new(&system));
    assert!(fs::symlink_metadata(&profile).unwrap().is_symlink());
    let in_root = root.join(system.trim_start_matches('/'));
    let ran = run(in_root.join("bin/kcore-agent").to_str().unwrap(), &[], &[]);
    assert_eq!(ran.stdout_lossy().trim(), "installed-agent");
    let valid = run(
        "nix-store",
        &["--store", root_s, "--check-validity", &system],
        &[],
    );
    assert!(valid.status.success(), "{}", valid.stderr_lossy());
    assert!(root.join("etc/NIXOS").is_file());

    // Flags it does not know, and a missing closure, are refused with the flag named.
    let bad = run(stand_in, &["--root", root_s, "--flake", "x"], &[]);
    assert!(!bad.status.success());
    assert!(
        bad.stderr_lossy().contains("--flake"),
        "{}",
        bad.stderr_lossy()
    );
    let none = run(stand_in, &["--root", root_s], &[]);
    assert!(!none.status.success());
    assert!(
        none.stderr_lossy().contains("--system"),
        "{}",
        none.stderr_lossy()
    );
    let missing = d.join("missing");
    let gone = run(
        stand_in,
        &["--system", &system, "--root", missing.to_str().unwrap()],
        &[],
    );
    assert!(!gone.status.success());
    assert!(gone.stderr_lossy().contains("doesn't exist"));
}

// ---------------------------------------------------------------------------------------
// The two-boot proof.
// ---------------------------------------------------------------------------------------

fn node_entry(nodes: &serde_json::Value) -> Option<serde_json::Value> {
    let list = nodes
        .as_array()
        .cloned()
        .or_else(|| nodes["items"].as_array().cloned())
        .unwrap_or_default();
    list.into_iter().find(|n| n["nodeId"] == NODE_ID)
}

/// The workspace binaries a boot copies into its payload.
struct Bins {
    agent: PathBuf,
    kctl: PathBuf,
    controller: PathBuf,
}

/// Boot 2 after an install (`run1`'s disks and swtpm state): stage 1, the installed agent
/// Ready with the kept controller, then the PCR change and the recovery key.
fn boot2(bed: &Bed, run1: Run, spec: &StorageSpec, bins: &Bins, system: &str, recovery: &str) {
    let backend = spec.backend;
    let (agent, kctl, controller) = (&bins.agent, &bins.kctl, &bins.controller);
    let p2 = tempfile::tempdir().unwrap();
    let p = p2.path();
    write_exec(&p.join("run.sh"), &boot2_script(spec));
    for (bin, name) in [(&kctl, "kctl"), (&controller, "kcore-controller")] {
        fs::copy(bin, p.join(name)).unwrap();
    }
    // Only for the comparison with what the installed root holds (`cmp`), never run.
    fs::copy(agent, p.join("kcore-agent")).unwrap();
    fs::write(p.join("recovery-key"), recovery).unwrap();
    let out = bed
        .run(&Run {
            payload_dir: p.to_owned(),
            ..run1
        })
        .unwrap();
    eprintln!("stage-1 boot 2: {:.1}s", out.wall.as_secs_f64());
    let log = &out.serial_log;
    let agent_log = out.result("agent.log").unwrap_or_default();
    let ctl_log = out.result("controller.log").unwrap_or_default();
    assert_eq!(out.exit_code, 0, "{log}");
    for s in [
        "tpm-unlock",
        "mount-root",
        "data-up",
        "bind-etc",
        "controller",
    ] {
        assert_eq!(result_code(&out, s), 0, "boot 2 step {s}\n{log}");
    }
    assert_eq!(out.result("profile").unwrap().trim(), system);
    assert_eq!(out.result("agent-is-installed").unwrap().trim(), "0");
    assert_eq!(
        out.result("installed-recovery-key").unwrap().trim(),
        recovery
    );
    assert_eq!(out.result("recovery-mode").unwrap().trim(), "400");
    assert_eq!(
        result_code(&out, "node-ready"),
        0,
        "node not Ready\nnodes: {}\n{}\nagent:\n{agent_log}\ncontroller:\n{ctl_log}\n{log}",
        out.result("nodes.json").unwrap_or_default(),
        out.result("nodes.err").unwrap_or_default()
    );
    let nodes: serde_json::Value =
        serde_json::from_str(&out.result("nodes.json").unwrap()).unwrap();
    let node = node_entry(&nodes).unwrap_or_else(|| panic!("{NODE_ID} not in {nodes}"));
    assert_eq!(node["status"], "Ready", "{node}");
    assert_eq!(node["report"]["dcId"], "DC1", "{node}");
    assert_eq!(
        node["report"]["storage"]["backend"],
        backend.as_str(),
        "{node}"
    );

    // After the PCR change: TPM refused, the recovery key unlocks, the installed system is there.
    assert_eq!(result_code(&out, "extend"), 0, "{log}");
    assert_ne!(
        out.result("pcr7-before").unwrap(),
        out.result("pcr7-after").unwrap()
    );
    assert_ne!(
        result_code(&out, "tpm-after-extend"),
        0,
        "TPM unlock must be refused\n{log}"
    );
    assert_eq!(result_code(&out, "recovery-unlock"), 0, "{log}");
    assert_eq!(result_code(&out, "recovery-mount"), 0, "{log}");
    assert_eq!(out.result("after-recovery-agent").unwrap().trim(), "0");
}

// ---------------------------------------------------------------------------------------
// The whole path: kctl node install against the install-mode agent, then stage 1.
// ---------------------------------------------------------------------------------------

#[test]
fn kctl_node_install_lvm_then_stage1_boot_registers_ready_and_recovers() {
    kctl_install_and_boot(Backend::Lvm, true);
}

#[test]
fn kctl_node_install_filesystem_then_stage1_boot_registers_ready_and_recovers() {
    kctl_install_and_boot(Backend::Filesystem, false);
}

#[test]
fn kctl_node_install_zfs_then_stage1_boot_registers_ready_and_recovers() {
    kctl_install_and_boot(Backend::Zfs, false);
}

/// Boot 1: `kctl node install` with `backend` (the refusals first when `with_refusals`);
/// then [`boot2`].
fn kctl_install_and_boot(backend: Backend, with_refusals: bool) {
    let agent = workspace_binary("kcore-agent", "kcore-agent");
    let kctl = workspace_binary("kctl", "kctl");
    let controller = workspace_binary("kcore-controller", "kcore-controller");
    let Some(inputs) = DeepInputs::from_env() else {
        eprintln!(
            "SKIP: disko source / nixpkgs lib not found (KCORE_TEST_DISKO, KCORE_TEST_NIXPKGS_LIB)"
        );
        return;
    };
    let Some(bed) = bed_or_skip(BedOptions {
        zfs: backend == Backend::Zfs,
    }) else {
        return;
    };
    let keep = tempfile::tempdir().unwrap();
    let persistent = vec![
        Disk::persistent("os", 2 << 30, &keep.path().join("os.img")),
        Disk::persistent("data0", 1 << 30, &keep.path().join("data0.img")),
        Disk::persistent("ctl-state", 256 << 20, &keep.path().join("state.img")),
    ];
    let mut disks = persistent.clone();
    if with_refusals {
        disks.push(Disk::new("busy", 64 << 20));
        disks.push(Disk::new("dirty", 64 << 20));
    }
    let tpm = keep.path().join("tpm");

    let p1 = tempfile::tempdir().unwrap();
    let p = p1.path();
    write_exec(
        &p.join("run.sh"),
        &kctl_install_script(backend, with_refusals),
    );
    write_exec(&p.join("reboot-systemctl"), REBOOT_SYSTEMCTL);
    fs::write(p.join("closure.nix"), CLOSURE_NIX).unwrap();
    for (bin, name) in [
        (&agent, "kcore-agent"),
        (&kctl, "kctl"),
        (&controller, "kcore-controller"),
    ] {
        fs::copy(bin, p.join(name)).unwrap();
    }
    for tool in ["nixos-install", "disko-from-lib"] {
        fs::copy(support(tool), p.join(tool)).unwrap();
    }
    copy_dir(&inputs.disko, &p.join("disko"));
    copy_dir(&inputs.nixpkgs_lib, &p.join("nixpkgs-lib"));
    let out = bed
        .run(&Run {
            disks,
            tpm_state_dir: Some(tpm.clone()),
            payload_dir: p.to_owned(),
            timeout: Duration::from_secs(1500),
        })
        .unwrap();
    eprintln!("kctl node install boot 1: {:.1}s", out.wall.as_secs_f64());
    let log = &out.serial_log;
    let agent_log = out.result("install-agent.log").unwrap_or_default();
    assert_eq!(out.exit_code, 0, "{log}");
    for s in ["state-mkfs", "create-cluster", "controller-boot1"] {
        assert_eq!(result_code(&out, s), 0, "boot 1 step {s}\n{log}");
    }
    assert_eq!(
        result_code(&out, "install"),
        0,
        "kctl node install failed:\n{}\n{}\nagent:\n{agent_log}\n{log}",
        out.result("install.out").unwrap_or_default(),
        out.result("install.err").unwrap_or_default()
    );
    // The refusals: exit 1, the reason named, nothing written to the disk.
    let refusals: &[(&str, &str)] = if with_refusals {
        &[
            ("root", "TARGET_IS_OS_DISK"),
            ("mounted", "TARGET_MOUNTED"),
            ("dirty", "--yes"),
        ]
    } else {
        &[]
    };
    for (name, code) in refusals {
        let err = out.result(&format!("{name}.err")).unwrap_or_default();
        assert_eq!(
            result_code(&out, &format!("{name}.rc")),
            1,
            "{name}: kctl must refuse: {err}\n{}\nagent:\n{agent_log}",
            out.result(&format!("{name}.out")).unwrap_or_default()
        );
        assert!(err.contains(code), "{name}: expected {code} in: {err}");
        assert_eq!(
            out.result(&format!("{name}-sum-before")).unwrap(),
            out.result(&format!("{name}-sum-after")).unwrap(),
            "{name}: first/last MiB changed"
        );
    }
    let printed = out.result("install.out").unwrap() + &out.result("install.err").unwrap();
    for step in ["format", "install", "enrol", "write-config", "done"] {
        assert!(printed.contains(step), "step {step} not printed: {printed}");
    }
    assert!(
        out.result("systemctl-calls")
            .unwrap_or_default()
            .contains("reboot"),
        "install/reboot did not run systemctl reboot\nagent:\n{agent_log}"
    );
    assert_eq!(out.result("recovery-file-mode").unwrap().trim(), "600");
    assert_eq!(out.result("recovery-dir-mode").unwrap().trim(), "700");
    let meta: serde_json::Value = serde_json::from_str(&out.result("luks.json").unwrap()).unwrap();
    let tokens: Vec<&str> = meta["tokens"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|t| t["type"].as_str())
        .collect();
    assert!(tokens.contains(&"systemd-tpm2"), "{meta}");
    assert!(tokens.contains(&"systemd-recovery"), "{meta}");
    assert_eq!(
        meta["keyslots"].as_object().unwrap().len(),
        2,
        "install key slot left: {meta}"
    );
    let system = out.result("system").unwrap().trim().to_owned();
    let recovery = out.result("recovery-key").unwrap().trim().to_owned();
    assert_eq!(recovery.len(), 71, "recovery key {recovery:?}");

    // Boot 2 and the PCR change, as for the hand-made install.
    let spec = StorageSpec::new(OS_DISK, vec![DATA_DISK.into()], backend);
    let run1 = Run {
        disks: persistent,
        tpm_state_dir: Some(tpm),
        payload_dir: p.to_owned(),
        timeout: Duration::from_secs(1200),
    };
    let bins = Bins {
        agent,
        kctl,
        controller,
    };
    boot2(&bed, run1, &spec, &bins, &system, &recovery);
}
