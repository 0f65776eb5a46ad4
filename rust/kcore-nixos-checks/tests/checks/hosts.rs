//! The example hosts: each `hosts/<name>/disko.nix` is exactly what kcore-disko renders from
//! the host's `storage.json` (so the Rust renderer and the Nix hosts cannot drift), and each
//! `nixosConfigurations.<name>`, as the flake exports it (tests/eval/flake-outputs.nix,
//! `select = hosts`), evaluates with no failed assertion, its agent configured for the
//! backend its layout was rendered for; operators can log in, host ids are unique, the boot
//! editor is off, the installer's image name is kcore's.
//!
//! `KCORE_UPDATE_HOSTS=1 cargo test -p kcore-nixos-checks hosts` rewrites the disko.nix files
//! from storage.json (and the apply-disko VM test's fragment) after a deliberate renderer or
//! spec change.

use kcore_disko::{StorageSpec, render_fragment};
use serde_json::{Value, json};

use crate::support::{Harness, have_repo, rendered, repo_root};

/// Hosts with a storage spec (the installer ISO has none: it installs the others).
const HOSTS: [&str; 4] = ["hv-lvm", "hv-zfs", "node", "controller"];

/// Hosts an operator logs into with `kcore.hosts.operatorSshKeys` (the ISO too).
const SSH_HOSTS: [&str; 5] = ["hv-lvm", "hv-zfs", "node", "controller", "installer"];

fn spec_of(host: &str) -> StorageSpec {
    let path = repo_root().join("hosts").join(host).join("storage.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn host_layouts_are_what_kcore_disko_renders() {
    if !have_repo("host_layouts_are_what_kcore_disko_renders") {
        return;
    }
    let update = std::env::var_os("KCORE_UPDATE_HOSTS").is_some();
    for host in HOSTS {
        let spec = spec_of(host);
        let want = render_fragment(&spec).unwrap_or_else(|e| panic!("hosts/{host}: {e}"));
        let path = repo_root().join("hosts").join(host).join("disko.nix");
        if update {
            std::fs::write(&path, &want).unwrap();
            eprintln!("updated {}", path.display());
            continue;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (create it with KCORE_UPDATE_HOSTS=1 cargo test -p kcore-nixos-checks hosts)",
                path.display()
            )
        });
        assert!(
            have == want,
            "hosts/{host}/disko.nix differs from kcore-disko's rendering of storage.json; \
             rerun with KCORE_UPDATE_HOSTS=1 if the change is deliberate.\n--- have\n{have}\n--- want\n{want}"
        );
    }
}

/// The day-2 fragment the apply-disko VM test applies: the generic node's second data disk.
#[test]
fn vm_test_fragment_is_what_kcore_disko_renders() {
    if !have_repo("vm_test_fragment_is_what_kcore_disko_renders") {
        return;
    }
    let spec = spec_of("node");
    let want = kcore_disko::render_data_disk(&spec, "/dev/vdb", 1).unwrap();
    let path = repo_root().join("tests/vm/fixtures/data1.nix");
    if std::env::var_os("KCORE_UPDATE_HOSTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (KCORE_UPDATE_HOSTS=1 creates it)", path.display()));
    assert!(
        have == want,
        "tests/vm/fixtures/data1.nix differs from kcore-disko's rendering; rerun with \
         KCORE_UPDATE_HOSTS=1 if the change is deliberate.\n--- have\n{have}\n--- want\n{want}"
    );
}

#[test]
fn hosts_evaluate_with_their_backend() {
    let Some(h) = Harness::get("hosts_evaluate_with_their_backend") else {
        return;
    };
    for host in HOSTS {
        let spec = spec_of(host);
        let out = h.host_outputs(host);

        assert_eq!(out["failed"], json!([]), "hosts/{host}");
        let mut disks: Vec<String> = out["diskoDevices"]["disk"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        disks.sort();
        let mut want: Vec<String> = (0..spec.data_disks.len())
            .map(kcore_disko::render::data_disk_attr)
            .collect();
        want.push("os".into());
        want.sort();
        assert_eq!(disks, want, "hosts/{host}: disko disks");

        if host == "controller" {
            let yaml = rendered(&out, "controllerConfig");
            assert_eq!(yaml["clusterName"], json!("lab"));
            assert_eq!(out["units"]["kcore-agent"], Value::Null);
        } else {
            let yaml = rendered(&out, "agentConfig");
            assert_eq!(
                yaml["storage"]["backend"],
                json!(spec.backend.as_str()),
                "hosts/{host}: the agent's backend is the layout's"
            );
            assert!(yaml["nodeId"].is_string(), "hosts/{host}");
            assert_eq!(out["allowedTCPPorts"], json!([9091]), "hosts/{host}");
            // The agent's PATH carries the tools of the host's backend: zfs on a zfs host,
            // the thin tools where the layout has a thin pool.
            let path = crate::eval::agent_path(&out);
            for tool in ["disko", "lvm2", "nix", "nixos-rebuild"] {
                assert!(
                    path.iter().any(|p| p == tool),
                    "hosts/{host}: {tool} in {path:?}"
                );
            }
            assert_eq!(
                path.iter().any(|p| p == "zfs"),
                spec.backend.as_str() == "zfs",
                "hosts/{host}: zfs in {path:?}"
            );
            assert_eq!(
                out["lvmThin"],
                json!(spec.lvm.thin_pool.is_some()),
                "hosts/{host}: nixpkgs' lvm thin support exactly with a thin pool"
            );
            // nixpkgs' lvm.nix provides the thin tools (lvm.conf); not kcore's PATH.
            assert!(
                !path.iter().any(|p| p == "thin-provisioning-tools"),
                "hosts/{host}: thin tools in {path:?}"
            );
            assert_eq!(
                out["units"]["kcore-agent"]["serviceConfig"]["LogsDirectory"],
                json!("kcore-agent"),
                "hosts/{host}"
            );
        }
        // Every host has a LUKS2 root unlocked by the TPM.
        assert_eq!(
            out["luks"]["crypted"]["device"],
            json!("/dev/disk/by-partlabel/disk-os-root"),
            "hosts/{host}"
        );
        assert_eq!(out["initrdSystemd"], json!(true), "hosts/{host}");
    }
}

/// Example hosts an operator can log into: key-only root SSH from `kcore.hosts.operatorSshKeys`,
/// and a warning when no key is set.
#[test]
fn example_hosts_take_operator_ssh_keys() {
    let Some(h) = Harness::get("example_hosts_take_operator_ssh_keys") else {
        return;
    };
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKcoreTestKeyOnly ops@example.org";
    let with_keys = h.hosts(&json!({ "kcore": { "hosts": { "operatorSshKeys": [key] } } }));
    let without = h.hosts(&json!({}));
    for host in SSH_HOSTS {
        let out = &with_keys[host];
        assert_eq!(out["rootKeys"], json!([key]), "hosts/{host}");
        assert_eq!(out["ssh"]["enable"], json!(true), "hosts/{host}");
        assert_eq!(
            out["ssh"]["PasswordAuthentication"],
            json!(false),
            "hosts/{host}"
        );
        assert_eq!(
            out["ssh"]["PermitRootLogin"],
            json!("prohibit-password"),
            "hosts/{host}"
        );
        assert_eq!(out["warnings"], json!([]), "hosts/{host}");
        let warnings = without[host]["warnings"].as_array().unwrap();
        assert!(
            warnings.iter().any(|w| w
                .as_str()
                .unwrap()
                .contains("kcore.hosts.operatorSshKeys is empty")),
            "hosts/{host}: {warnings:?}"
        );
    }
}

/// Each example host has its own `networking.hostId`, none of them nixpkgs' installer
/// default (profiles/base.nix `8425e349`), which every live ISO has.
#[test]
fn example_hosts_have_unique_host_ids() {
    let Some(h) = Harness::get("example_hosts_have_unique_host_ids") else {
        return;
    };
    let hosts = h.hosts(&json!({}));
    let mut ids: Vec<String> = HOSTS
        .iter()
        .map(|host| {
            hosts[*host]["hostId"]
                .as_str()
                .unwrap_or_else(|| panic!("hosts/{host} has no networking.hostId"))
                .to_string()
        })
        .collect();
    assert!(!ids.iter().any(|i| i == "8425e349"), "{ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), HOSTS.len(), "host ids are not unique: {ids:?}");
}

/// The boot menu editor would let the console edit the kernel command line, which PCR 7
/// does not measure (nixpkgs' default is true).
#[test]
fn tpm_unlocked_hosts_disable_the_boot_editor() {
    let Some(h) = Harness::get("tpm_unlocked_hosts_disable_the_boot_editor") else {
        return;
    };
    let hosts = h.hosts(&json!({}));
    for host in HOSTS {
        assert_eq!(
            hosts[host]["systemdBootEditor"],
            json!(false),
            "hosts/{host}"
        );
    }
}

/// hosts/node uses virtio disks: nixpkgs' qemu-guest profile puts virtio_blk in its initrd.
#[test]
fn the_virtio_node_has_the_qemu_guest_profile() {
    let Some(h) = Harness::get("the_virtio_node_has_the_qemu_guest_profile") else {
        return;
    };
    let node = h.host_outputs("node");
    let modules = node["initrdModules"].as_array().unwrap();
    for m in ["virtio_pci", "virtio_blk"] {
        assert!(modules.contains(&json!(m)), "{m} not in {modules:?}");
    }
}

/// The installer evaluates against iso-image.nix's own `image.baseName` (normal priority,
/// with `isoImage.isoBaseName` its renamed alias): kcore's name wins without a conflict or a
/// rename warning, and the ISO carries the generic node and the inputs.
#[test]
fn installer_sets_its_image_name_over_iso_image() {
    let Some(h) = Harness::get("installer_sets_its_image_name_over_iso_image") else {
        return;
    };
    let iso = h.host_outputs("installer");
    assert_eq!(iso["imageBaseName"], json!("kcore-installer"));
    assert_eq!(iso["failed"], json!([]));
    // No rename warning (isoImage.isoBaseName); only the one about unset operator keys.
    let warnings = iso["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("kcore.hosts.operatorSshKeys is empty"),
        "{warnings:?}"
    );
    // The six prebuilt systems (TPM2 and key-file) and the two inputs (installed::*).
    assert_eq!(iso["storeContents"], json!(8));
    let yaml = rendered(&iso, "agentConfig");
    assert_eq!(yaml["mode"], json!("install"));
    // kctl comes with the agent's package once; nixos-install is listed by the host.
    let pkgs = iso["systemPackages"].as_array().unwrap();
    assert_eq!(
        pkgs.iter()
            .filter(|p| p.as_str().unwrap().starts_with("kcore-"))
            .count(),
        1,
        "{pkgs:?}"
    );
    assert!(pkgs.contains(&json!("nixos-install-tools")), "{pkgs:?}");
}
