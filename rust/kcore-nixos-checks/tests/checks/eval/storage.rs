//! kcore.storage: the management-mode file, disko fragments merged into disko.devices,
//! ZFS runtime support, nothing unless enabled, a layout without a disko module.

use super::*;

#[test]
fn management_mode_file_is_created_never_overwritten() {
    let Some(h) = Harness::get("management_mode_file_is_created_never_overwritten") else {
        return;
    };
    let mode_rule = |out: &Value| -> Vec<String> {
        out["tmpfiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .filter(|r| r.contains("disko-management-mode"))
            .collect()
    };
    // `f` (create if missing, never truncate), content installer-only by default.
    let out = h.outputs(&agent_config(json!({})));
    assert_eq!(
        mode_rule(&out),
        vec!["f /var/lib/kcore/disko-management-mode 0644 root root - installer-only"]
    );
    let out = h.outputs(&agent_config(
        json!({ "managementMode": "controller-managed" }),
    ));
    assert_eq!(
        mode_rule(&out),
        vec!["f /var/lib/kcore/disko-management-mode 0644 root root - controller-managed"]
    );
}

/// The devices a fragment declares, evaluated on its own by the harness's Nix.
fn fragment_devices(h: &Harness, path: &str) -> Value {
    let out = h.outputs(&json!({
        "kcore": { "storage": { "layout": path } },
        "networking": { "hostId": "8425e349" }
    }));
    out["diskoDevices"].clone()
}

#[test]
fn kcore_disko_fragments_merge_into_disko_devices() {
    let Some(h) = Harness::get("kcore_disko_fragments_merge_into_disko_devices") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = StorageSpec::new(
        "/dev/disk/by-id/nvme-os",
        vec!["/dev/disk/by-id/ata-data0".into()],
        Backend::Lvm,
    );
    spec.lvm.thin_pool = Some(ThinPoolSpec {
        name: "thinpool".into(),
        size: "90%".into(),
    });
    let layout = write_fragment(&dir, "layout.nix", &render_fragment(&spec).unwrap());
    let day2 = write_fragment(
        &dir,
        "data1.nix",
        &render_data_disk(&spec, "/dev/disk/by-id/ata-data1", 1).unwrap(),
    );

    let out = h.outputs(&agent_config(json!({
        "backend": "lvm",
        "layout": layout,
        "diskoFragments": [day2],
        "managementMode": "controller-managed"
    })));
    let merged = &out["diskoDevices"];
    let disks = merged["disk"].as_object().unwrap();
    let mut names: Vec<&str> = disks.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, vec!["data0", "data1", "os"]);
    assert_eq!(
        merged["disk"]["data1"]["device"],
        json!("/dev/disk/by-id/ata-data1")
    );
    // Merging changes nothing the fragments said: each device equals the fragment's own.
    let alone_layout = fragment_devices(&h, &layout);
    for (name, dev) in alone_layout["disk"].as_object().unwrap() {
        assert_eq!(&merged["disk"][name], dev, "disk {name}");
    }
    assert_eq!(merged["lvm_vg"], alone_layout["lvm_vg"]);
    // The thin pool in the layout turns nixpkgs' thin support on (lvm.nix installs the tools
    // and points lvm.conf at them); kcore adds them nowhere itself.
    assert_eq!(out["lvmThin"], json!(true));
    assert!(
        !agent_path(&out).contains(&"thin-provisioning-tools".to_string()),
        "{out}"
    );
    assert!(
        !out["systemPackages"]
            .as_array()
            .unwrap()
            .contains(&json!("thin-provisioning-tools")),
        "{out}"
    );
}

#[test]
fn zfs_backend_enables_zfs_and_imports_the_pool() {
    let Some(h) = Harness::get("zfs_backend_enables_zfs_and_imports_the_pool") else {
        return;
    };
    let out = h.outputs(&agent_config(
        json!({ "backend": "zfs", "zfs": { "poolName": "tank1" } }),
    ));
    assert_eq!(out["supportedFilesystems"], json!({ "zfs": true }));
    assert_eq!(out["zfsExtraPools"], json!(["tank1"]));
    // Configured in Nix: the pool by name, not the installer's runtime file.
    assert_eq!(out["units"]["kcore-zfs-import"], Value::Null);
    assert_eq!(out["zfsImportScript"], Value::Null);
    assert_eq!(out["lvmThin"], json!(false));

    let fs = h.outputs(&agent_config(json!({})));
    assert_eq!(fs["supportedFilesystems"], json!({}));
    assert_eq!(fs["zfsExtraPools"], json!([]));
}

/// kcore.storage is off unless enabled (the agent enables it in managed mode): a controller
/// or an install-mode ISO gets no volume directories, no management-mode file, no ZFS.
#[test]
fn storage_runtime_only_when_enabled() {
    let Some(h) = Harness::get("storage_runtime_only_when_enabled") else {
        return;
    };
    let ctl = h.outputs(&set(
        controller_config(),
        "kcore.storage.backend",
        json!("zfs"),
    ));
    assert_eq!(ctl["tmpfiles"], json!([]));
    assert_eq!(ctl["zfsExtraPools"], json!([]));
    let mut iso = agent_config(json!({}));
    iso["services"]["kcore"]["agent"]["settings"]["mode"] = json!("install");
    iso["services"]["kcore"]["agent"]["settings"]["tls"] = json!({});
    assert_eq!(h.outputs(&iso)["tmpfiles"], json!([]));
    // Managed agent: on, with its state under /var/lib/kcore.
    let node = h.outputs(&agent_config(json!({})));
    let rules = node["tmpfiles"].as_array().unwrap();
    assert!(
        rules.contains(&json!("d /var/lib/kcore 0755 root root -")),
        "{rules:?}"
    );
    assert!(
        !rules.iter().any(|r| r.as_str().unwrap().contains("/etc/")),
        "{rules:?}"
    );
}

/// A layout needs a disko module, whichever the consumer imports; without one the
/// assertion says how to add it (instead of "The option `disko' does not exist").
#[test]
fn a_layout_without_a_disko_module_is_refused_with_the_fix() {
    let Some(h) = Harness::get("a_layout_without_a_disko_module_is_refused_with_the_fix") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = StorageSpec::new("/dev/disk/by-id/nvme-os", vec![], Backend::Filesystem);
    let layout = write_fragment(&dir, "layout.nix", &render_fragment(&spec).unwrap());
    let config = json!({ "kcore": { "storage": { "layout": layout } } });
    let failed = h.failed_assertions_without_disko(&config);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(
        failed[0].contains("no disko NixOS module is imported"),
        "{}",
        failed[0]
    );
    assert!(failed[0].contains("follows"), "{}", failed[0]);
    // Without a layout, no disko module is needed at all.
    assert_eq!(
        h.failed_assertions_without_disko(&agent_config(json!({}))),
        Vec::<String>::new()
    );
    // With one, the layout lands in disko.devices.
    assert!(h.failed_assertions(&config).is_empty());
}
