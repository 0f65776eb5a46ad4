//! `kctl disko render|validate|plan` as an operator runs them: exit codes (0 ok, 1 refused or
//! invalid, 2 usage), files written only when valid, plans against the fixture snapshots.
//! Tests that need nix-instantiate or the deep inputs print `SKIP: <why>` without them.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

const OS: &str = "/dev/disk/by-id/ata-Samsung_SSD_870_S4EWNX0R100001";
const D0: &str = "/dev/disk/by-id/ata-WDC_WD20EFRX_WD-WCC4M0000002";
const D1: &str = "/dev/disk/by-id/ata-WDC_WD20EFRX_WD-WCC4M0000003";

fn kctl() -> Command {
    let mut cmd = Command::cargo_bin("kctl").unwrap();
    cmd.env_remove("KCORE_CONFIG");
    cmd
}

fn have_nix() -> bool {
    let ok = std::process::Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: nix-instantiate is not installed (Debian: apt-get install nix-bin)");
    }
    ok
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kcore-disko/tests/fixtures")
        .join(format!("devices-{name}.json"))
}

fn render_to(dir: &Path, name: &str, data: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = kctl();
    cmd.args([
        "disko",
        "render",
        "--luks-mode",
        "tpm2",
        "--os-disk",
        OS,
        "--storage-backend",
        "filesystem",
    ]);
    for d in data {
        cmd.args(["--data-disk", d]);
    }
    cmd.arg("-O").arg(&path).assert().success();
    path
}

#[test]
fn render_prints_a_fragment_for_each_backend() {
    for backend in ["filesystem", "lvm", "zfs"] {
        kctl()
            .args([
                "disko",
                "render",
                "--luks-mode",
                "tpm2",
                "--os-disk",
                OS,
                "--data-disk",
                D0,
                "--storage-backend",
                backend,
            ])
            .args(match backend {
                "lvm" => &["--lvm-vg-name", "vg_test"][..],
                "zfs" => &["--zfs-pool-name", "tank9"][..],
                _ => &[][..],
            })
            .assert()
            .success()
            .stdout(predicate::str::starts_with("# Rendered by kcore-disko"))
            .stdout(predicate::str::contains(format!("device = \"{D0}\";")));
    }
    kctl()
        .args([
            "disko",
            "render",
            "--luks-mode",
            "tpm2",
            "--os-disk",
            OS,
            "--data-disk",
            D0,
            "--storage-backend",
            "lvm",
            "--lvm-vg-name",
            "vg_test",
        ])
        .assert()
        .stdout(predicate::str::contains("vg = \"vg_test\";"));
}

#[test]
fn adversarial_values_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.nix");
    let long = format!("/dev/{}", "x".repeat(300));
    let cases: Vec<(&str, String)> = vec![
        ("--os-disk", "/dev/sd\"a".into()),
        ("--os-disk", "/dev/${builtins.abort \"x\"}".into()),
        ("--os-disk", "/dev/a\nb".into()),
        ("--os-disk", "/dev/a b".into()),
        ("--os-disk", String::new()),
        ("--os-disk", long),
        ("--lvm-vg-name", "vg''${x}".into()),
        ("--lvm-vg-name", "vg\"; evil = \"".into()),
        ("--zfs-pool-name", "tank 0".into()),
    ];
    for (flag, value) in cases {
        let mut cmd = kctl();
        cmd.args(["disko", "render", "--data-disk", D0]);
        let backend = if flag == "--zfs-pool-name" {
            "zfs"
        } else {
            "lvm"
        };
        cmd.args(["--storage-backend", backend]);
        if flag != "--os-disk" {
            cmd.args(["--os-disk", OS]);
        }
        cmd.arg(flag).arg(&value).arg("-O").arg(&out);
        cmd.assert()
            .code(1)
            .stderr(predicate::str::contains("INVALID_SPEC"))
            .stderr(predicate::str::contains(match flag {
                "--os-disk" => "osDisk",
                "--lvm-vg-name" => "lvm.vgName",
                _ => "zfs.poolName",
            }));
        assert!(!out.exists(), "{flag} {value:?} wrote a file");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp files left behind"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    kctl()
        .args(["disko", "render", "--storage-backend", "filesystem"])
        .assert()
        .code(2);
    kctl()
        .args([
            "disko",
            "render",
            "--luks-mode",
            "tpm2",
            "--os-disk",
            OS,
            "--storage-backend",
            "btrfs",
        ])
        .assert()
        .code(2);
    kctl()
        .args(["disko", "plan", "-f", "x.nix"])
        .assert()
        .code(2);
}

#[test]
fn validate_reports_level_and_position() {
    if !have_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = render_to(dir.path(), "good.nix", &[D0, D1]);
    kctl()
        .args(["disko", "validate", "-f"])
        .arg(&good)
        .assert()
        .success()
        .stdout(predicate::str::contains("ext4 on /var/lib/kcore/volumes1"));
    kctl()
        .args(["-o", "json", "disko", "validate", "-f"])
        .arg(&good)
        .assert()
        .success()
        .stdout(predicate::str::contains("\"valid\": true"));

    let text = std::fs::read_to_string(&good).unwrap();
    let broken = dir.path().join("broken.nix");
    std::fs::write(
        &broken,
        text.replacen("size = \"512M\";", "size = \"512M\"", 1),
    )
    .unwrap();
    kctl()
        .args(["disko", "validate", "-f"])
        .arg(&broken)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("INVALID_FRAGMENT"))
        // The file once, in front; each finding with its line.
        .stderr(predicate::str::contains(format!(
            "{} is not a valid disko fragment:\nlevel 1: line 15:",
            broken.display()
        )))
        .stderr(predicate::str::contains("broken.nix").count(1));

    let misspelt = dir.path().join("misspelt.nix");
    std::fs::write(&misspelt, text.replacen("format = \"vfat\";", "", 1)).unwrap();
    kctl()
        .args(["disko", "validate", "-f"])
        .arg(&misspelt)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "disko.devices.disk.os.content.partitions.ESP.content.format",
        ));
}

#[test]
fn validate_deep_prints_the_create_script() {
    if !have_nix() {
        return;
    }
    if kcore_disko::DeepInputs::from_env().is_none() {
        eprintln!("SKIP: --deep needs KCORE_TEST_DISKO and KCORE_TEST_NIXPKGS_LIB");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = render_to(dir.path(), "good.nix", &[D0]);
    kctl()
        .args(["disko", "validate", "--deep", "--print-create-script", "-f"])
        .arg(&good)
        .assert()
        .success()
        .stdout(predicate::str::contains("sgdisk"))
        .stdout(predicate::str::contains("cryptsetup"))
        .stdout(predicate::str::contains("mkfs.ext4"));
}

#[test]
fn plan_prints_hash_and_refuses_unsafe_targets() {
    if !have_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cur = render_to(dir.path(), "cur.nix", &[D0]);
    let new = render_to(dir.path(), "new.nix", &[D0, D1]);
    let ok = kctl()
        .args(["disko", "plan", "-f"])
        .arg(&new)
        .arg("--current")
        .arg(&cur)
        .arg("--devices")
        .arg(fixture("blank"))
        .assert()
        .success()
        .stdout(predicate::str::contains("new-disk"))
        .stdout(predicate::str::contains("WD-WCC4M0000003"))
        .stdout(predicate::str::contains("class: additive"))
        .stdout(predicate::str::is_match("plan hash: sha256:[0-9a-f]{64}").unwrap());
    let table = String::from_utf8(ok.get_output().stdout.clone()).unwrap();
    let json = kctl()
        .args(["-o", "json", "disko", "plan", "-f"])
        .arg(&new)
        .arg("--current")
        .arg(&cur)
        .arg("--devices")
        .arg(fixture("blank"))
        .assert()
        .success();
    let plan: serde_json::Value = serde_json::from_slice(&json.get_output().stdout).unwrap();
    let hash = plan["hash"].as_str().unwrap();
    assert!(table.contains(hash), "table and JSON show different hashes");

    kctl()
        .args(["disko", "plan", "-f"])
        .arg(&new)
        .arg("--current")
        .arg(&cur)
        .arg("--devices")
        .arg(fixture("holders"))
        .assert()
        .code(1)
        .stdout(predicate::str::contains("TARGET_HAS_HOLDERS"))
        .stderr(predicate::str::contains("TARGET_HAS_HOLDERS"));
}

#[test]
fn validate_takes_fragments_that_are_functions_of_lib() {
    if !have_nix() {
        return;
    }
    let Some(inputs) = kcore_disko::DeepInputs::from_env() else {
        eprintln!("SKIP: needs the disko source (its example/with-lib.nix) and nixpkgs lib");
        return;
    };
    let example = inputs.disko.join("example/with-lib.nix");
    kctl()
        .args(["disko", "validate", "-f"])
        .arg(&example)
        .assert()
        .success()
        .stdout(predicate::str::contains("levels 1-2"));
    kctl()
        .args(["disko", "validate", "--deep", "-f"])
        .arg(&example)
        .assert()
        .success()
        .stdout(predicate::str::contains("levels 1-3"));
}
