//! The operator guide's commands, verbatim (README "Install (day 0)" and "Storage on day 2",
//! docs/storage.md): each example renders, validates (levels 1-2, and level 3 when the
//! deep inputs are set) and means what the guide says it means.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

const OS: &str = "/dev/disk/by-id/nvme-OS";
const D1: &str = "/dev/disk/by-id/nvme-D1";
const D2: &str = "/dev/disk/by-id/nvme-D2";

fn kctl() -> Command {
    let mut cmd = Command::cargo_bin("kctl").unwrap();
    cmd.env_remove("KCORE_CONFIG");
    cmd
}

/// `kctl disko render ARGS`; an OS disk's LUKS mode is tpm2 unless ARGS say otherwise (the
/// default, auto, would need a node to ask).
fn render(args: &[&str]) -> String {
    let mut cmd = kctl();
    cmd.args(["disko", "render"]);
    if !args
        .iter()
        .any(|a| *a == "--luks-mode" || *a == "--day2-index")
    {
        cmd.args(["--luks-mode", "tpm2"]);
    }
    let out = cmd.args(args).assert().success();
    String::from_utf8(out.get_output().stdout.clone()).unwrap()
}

/// Writes `text` to `dir/name` and validates it as the guide does; `--deep` too when the
/// disko source and nixpkgs lib are known. Without nix-instantiate: SKIP, and false.
fn validates(dir: &Path, name: &str, text: &str) -> bool {
    let ok = std::process::Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: validation needs nix-instantiate (Debian: apt-get install nix-bin)");
        return false;
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    kctl()
        .args(["disko", "validate", "-f"])
        .arg(&path)
        .assert()
        .success();
    if kcore_disko::DeepInputs::from_env().is_some() {
        kctl()
            .args(["disko", "validate", "--deep", "-f"])
            .arg(&path)
            .assert()
            .success()
            .stdout(predicate::str::contains("levels 1-3"));
    } else {
        eprintln!("SKIP: --deep needs KCORE_TEST_DISKO and KCORE_TEST_NIXPKGS_LIB");
    }
    true
}

#[test]
fn guide_zfs_example_with_a_trailing_slash_prefix_renders_and_validates() {
    let guide = render(&[
        "--os-disk",
        OS,
        "--data-disk",
        D1,
        "--storage-backend",
        "zfs",
        "--zfs-pool-name",
        "tank0",
        "--zfs-dataset-prefix",
        "kcore/",
    ]);
    // `kcore/` means "datasets under kcore": the same fragment as `kcore`.
    let plain = render(&[
        "--os-disk",
        OS,
        "--data-disk",
        D1,
        "--storage-backend",
        "zfs",
        "--zfs-dataset-prefix",
        "kcore",
    ]);
    assert_eq!(guide, plain);
    assert!(!guide.contains("kcore/\""), "{guide}");
    let dir = tempfile::tempdir().unwrap();
    validates(dir.path(), "zfs.nix", &guide);
    kctl()
        .args(["disko", "render", "--os-disk", OS, "--data-disk", D1])
        .args([
            "--storage-backend",
            "zfs",
            "--zfs-dataset-prefix",
            "kcore//",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("zfs.datasetPrefix"))
        .stderr(predicate::str::contains("empty component"));
}

#[test]
fn guide_lvm_and_filesystem_examples_render_and_validate() {
    let dir = tempfile::tempdir().unwrap();
    let lvm = render(&[
        "--os-disk",
        OS,
        "--data-disk",
        D1,
        "--data-disk",
        D2,
        "--storage-backend",
        "lvm",
    ]);
    assert!(lvm.contains("vg = \"vg_kcore\";"), "{lvm}");
    validates(dir.path(), "lvm.nix", &lvm);
    // The guide's --data-disk-mode is the data disks' storage mode, default filesystem.
    let fs = render(&["--os-disk", OS, "--data-disk", D1, "--data-disk", D2]);
    assert!(fs.contains("/var/lib/kcore/volumes1"), "{fs}");
    assert_eq!(
        fs,
        render(&[
            "--os-disk",
            OS,
            "--data-disk",
            D1,
            "--data-disk",
            D2,
            "--data-disk-mode",
            "filesystem"
        ])
    );
    validates(dir.path(), "fs.nix", &fs);
    assert_eq!(
        lvm,
        render(&[
            "--os-disk",
            OS,
            "--data-disk",
            D1,
            "--data-disk",
            D2,
            "--data-disk-mode",
            "lvm"
        ])
    );
}

#[test]
fn data_disk_mode_is_the_backend_and_stripe_or_mirror_is_the_layout() {
    let mirror = render(&[
        "--os-disk",
        OS,
        "--data-disk",
        D1,
        "--data-disk",
        D2,
        "--data-disk-mode",
        "zfs",
        "--data-disk-layout",
        "mirror",
    ]);
    assert!(mirror.contains("mode = \"mirror\";"), "{mirror}");
    kctl()
        .args(["disko", "render", "--os-disk", OS, "--data-disk", D1])
        .args(["--storage-backend", "lvm", "--data-disk-mode", "zfs"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("disagree"));
    kctl()
        .args(["disko", "render", "--os-disk", OS, "--data-disk", D1])
        .args(["--data-disk-mode", "stripe"])
        .assert()
        .code(2);
}

#[test]
fn backend_flags_with_another_backend_are_refused_not_ignored() {
    for (backend, flag, value, wanted) in [
        ("zfs", "--lvm-vg-name", "vg_x", "lvm"),
        ("filesystem", "--lvm-thin-pool", "thin", "lvm"),
        ("lvm", "--zfs-pool-name", "tank1", "zfs"),
        ("filesystem", "--zfs-dataset-prefix", "kcore/", "zfs"),
    ] {
        kctl()
            .args(["disko", "render", "--os-disk", OS, "--data-disk", D1])
            .args(["--storage-backend", backend, flag, value])
            .assert()
            .code(1)
            .stderr(predicate::str::contains(format!(
                "{flag} is only used with --storage-backend {wanted}"
            )));
    }
}

#[test]
fn day2_fragment_for_one_new_disk_needs_no_os_disk() {
    let day2 = render(&[
        "--data-disk",
        D2,
        "--storage-backend",
        "filesystem",
        "--day2-index",
        "2",
    ]);
    assert!(day2.contains(D2), "{day2}");
    assert!(day2.contains("/var/lib/kcore/volumes2"), "{day2}");
    assert!(!day2.contains("nvme-OS") && !day2.contains("ESP"), "{day2}");
    let dir = tempfile::tempdir().unwrap();
    validates(dir.path(), "day2.nix", &day2);
}
