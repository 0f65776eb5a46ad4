//! The example hosts: each `hosts/<name>/disko.nix` is exactly what kcore-disko renders from
//! the host's `storage.json` (so the Rust renderer and the Nix hosts cannot drift), and each
//! host evaluates through the harness with no failed assertion, its agent configured for the
//! backend its layout was rendered for.
//!
//! `KCORE_UPDATE_HOSTS=1 cargo test -p kcore-nixos-checks hosts` rewrites the disko.nix files
//! from storage.json (and the apply-disko VM test's fragment) after a deliberate renderer or
//! spec change.

use kcore_disko::{StorageSpec, render_fragment};
use serde_json::{Value, json};

use crate::support::{Harness, have_repo, rendered, repo_root};

/// Hosts with a storage spec (the installer ISO has none: it installs the others).
const HOSTS: [&str; 4] = ["hv-lvm", "hv-zfs", "node", "controller"];

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
            if spec.lvm.thin_pool.is_some() {
                assert_eq!(out["lvmThin"], json!(true), "hosts/{host}");
            }
            assert_eq!(
                path.iter().any(|p| p == "thin-provisioning-tools"),
                out["lvmThin"] == json!(true),
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
