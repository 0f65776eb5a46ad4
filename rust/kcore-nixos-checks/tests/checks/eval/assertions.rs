//! What the module system refuses: every assertion on its bad combination, option types
//! (misspelt options, secrets in the store, bad names), and the documented options.

use super::*;

/// Each bad combination fails exactly its own assertion, and the message says how to fix it.
#[test]
fn every_assertion_fires_on_its_bad_combination() {
    let Some(h) = Harness::get("every_assertion_fires_on_its_bad_combination") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = StorageSpec::new("/dev/disk/by-id/nvme-os", vec![], Backend::Filesystem);
    let day2 = write_fragment(
        &dir,
        "data0.nix",
        &render_data_disk(&spec, "/dev/disk/by-id/ata-data0", 0).unwrap(),
    );
    let not_a_fragment = write_fragment(&dir, "bad.nix", "{ devices = { }; }");
    let lvm_layout = write_fragment(
        &dir,
        "lvm.nix",
        &render_fragment(&StorageSpec::new(
            "/dev/disk/by-id/nvme-os",
            vec!["/dev/disk/by-id/ata-data0".into()],
            Backend::Lvm,
        ))
        .unwrap(),
    );

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "day-2 fragments in installer-only mode",
            agent_config(json!({ "diskoFragments": [day2] })),
            "managementMode = \"controller-managed\"",
        ),
        (
            "a fragment without disko.devices",
            agent_config(json!({
                "diskoFragments": [not_a_fragment],
                "managementMode": "controller-managed"
            })),
            "must be `{ disko.devices = { ... }; }`",
        ),
        (
            "a layout rendered for LVM on a zfs node",
            agent_config(json!({ "backend": "zfs", "layout": lvm_layout })),
            "no fragment in kcore.storage.layout / diskoFragments declares it",
        ),
        (
            "a layout whose VG is not the configured one",
            agent_config(json!({
                "backend": "lvm", "layout": lvm_layout, "lvm": { "vgName": "vg_other" }
            })),
            "Set\nkcore.storage.lvm.vgName",
        ),
        (
            "managed agent without TLS",
            set(
                agent_config(json!({})),
                "services.kcore.agent.settings.tls",
                json!({}),
            ),
            "managed mode needs mTLS material",
        ),
        (
            "diskoSource without nixpkgsLib",
            set(
                agent_config(json!({})),
                "services.kcore.agent.settings.disko.diskoSource",
                json!("/nix/store/aaaa-source"),
            ),
            "go together",
        ),
        (
            "controller database outside its state directory",
            set(
                controller_config(),
                "services.kcore.controller.settings.databasePath",
                json!("/srv/kcore.sqlite"),
            ),
            "must be under /var/lib/kcore-controller/",
        ),
        (
            "controller on a privileged port",
            set(
                controller_config(),
                "services.kcore.controller.settings.listen",
                json!("0.0.0.0:443"),
            ),
            "Use a port >= 1024",
        ),
        (
            "key file on the ESP",
            encrypted(json!({ "unlock": "keyFile", "keyFile": "/boot/keys/root.key" })),
            "is on the unencrypted ESP",
        ),
        (
            "key file in initrd secrets",
            set(
                encrypted(json!({ "unlock": "keyFile", "keyFile": "/root.key" })),
                "boot.initrd.secrets",
                json!({ "/root.key": "/etc/secrets/root.key" }),
            ),
            "is on the unencrypted ESP",
        ),
        (
            "key file in the Nix store",
            encrypted(json!({
                "unlock": "keyFile",
                "keyFile": "/nix/store/0c8nvgrh4bnys3b1jgg4ggnrv40xcqr0-root.key"
            })),
            "is not a device",
        ),
        (
            "key file inside the encrypted root",
            encrypted(json!({ "unlock": "keyFile", "keyFile": "/etc/kcore/luks/root.key" })),
            "is not a device",
        ),
        (
            "TPM2 unlock with the boot editor on",
            set(
                encrypted(json!({})),
                "boot.loader.systemd-boot.editor",
                json!(true),
            ),
            "Remove the setting\nboot.loader.systemd-boot.editor = true",
        ),
        (
            "agent without a node id",
            set(
                agent_config(json!({})),
                "services.kcore.agent.settings.nodeId",
                Value::Null,
            ),
            "nodeConfig = \"runtime\" on a system installed by `kctl node install`",
        ),
        (
            "runtime agent with node-specific settings",
            set(
                agent_config(json!({})),
                "services.kcore.agent.nodeConfig",
                json!("runtime"),
            ),
            "Remove\nsettings.nodeId, settings.controllers and settings.tls.*",
        ),
        (
            "controller without its ids",
            set(
                controller_config(),
                "services.kcore.controller.settings.controllerId",
                Value::Null,
            ),
            "settings.controllerId and settings.clusterName are required",
        ),
    ];
    for (what, config, needle) in cases {
        let failed = h.failed_assertions(&config);
        assert_eq!(
            failed.len(),
            1,
            "{what}: expected exactly one failed assertion, got {failed:#?}"
        );
        assert!(
            failed[0].contains(needle),
            "{what}: message does not contain {needle:?}: {}",
            failed[0]
        );
    }
    // The fixed combinations evaluate cleanly (outputs() panics on a failed assertion).
    h.outputs(&agent_config(json!({ "backend": "zfs" })));
    h.outputs(&agent_config(
        json!({ "diskoFragments": [day2], "managementMode": "controller-managed" }),
    ));
    h.outputs(&encrypted(
        json!({ "unlock": "keyFile", "keyFile": "/dev/disk/by-id/usb-Key-0:0" }),
    ));
    h.outputs(&encrypted(json!({ "unlock": "keyFile" })));
    h.outputs(&agent_config(
        json!({ "backend": "lvm", "layout": lvm_layout }),
    ));
}

/// The option types catch what assertions cannot: misspelt options, secrets in the store,
/// invalid names.
#[test]
fn types_refuse_misspelt_options_store_secrets_and_bad_names() {
    let Some(h) = Harness::get("types_refuse_misspelt_options_store_secrets_and_bad_names") else {
        return;
    };
    let misspelt = set(
        agent_config(json!({})),
        "kcore.storage.bakend",
        json!("lvm"),
    );
    let err = h.eval_error(&misspelt);
    assert!(
        err.contains("kcore.storage.bakend") && err.contains("does not exist"),
        "{err}"
    );

    let store_key = set(
        agent_config(json!({})),
        "services.kcore.agent.settings.tls.keyFile",
        // A well-formed store path: lib only recognises real store path hashes.
        json!("/nix/store/0c8nvgrh4bnys3b1jgg4ggnrv40xcqr0-node.key"),
    );
    let err = h.eval_error(&store_key);
    assert!(err.contains("not in the Nix store"), "{err}");

    let bad_id = set(
        agent_config(json!({})),
        "services.kcore.agent.settings.nodeId",
        json!("Node_1"),
    );
    let err = h.eval_error(&bad_id);
    assert!(err.contains("nodeId"), "{err}");

    // Paths that end up in unit settings and tmpfiles lines admit no blanks or `%` specifiers.
    let err = h.eval_error(&encrypted(json!({ "device": "/dev/disk/by-label/os %i" })));
    assert!(err.contains("kcore.diskEncryption.device"), "{err}");

    let bad_backend = agent_config(json!({ "backend": "btrfs" }));
    let err = h.eval_error(&bad_backend);
    assert!(err.contains("kcore.storage.backend"), "{err}");
}

/// What the NixOS manual would show: every kcore option documented, and the options without
/// a default exactly the keys the daemons require (docs/configuration.md) plus the LUKS device.
#[test]
fn options_are_documented_and_only_required_keys_lack_defaults() {
    let Some(h) = Harness::get("options_are_documented_and_only_required_keys_lack_defaults")
    else {
        return;
    };
    let opts = h.options();
    assert!(
        opts.len() > 40,
        "too few kcore options found: {}",
        opts.len()
    );
    for o in &opts {
        let desc = o["description"].as_str().unwrap_or_default();
        assert!(desc.trim().len() > 10, "{} has no description", o["name"]);
    }
    let mut required: Vec<&str> = opts
        .iter()
        .filter(|o| o["hasDefault"] == json!(false))
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    required.sort();
    // The ids an agent or controller needs in `settings` mode are asserted (they are
    // left unset in `runtime` mode), so every option has a default.
    assert_eq!(required, Vec::<&str>::new());
    for name in [
        "services.kcore.agent.settings",
        "services.kcore.controller.settings",
    ] {
        let o = opts.iter().find(|o| o["name"] == json!(name)).unwrap();
        assert_eq!(o["hasExample"], json!(true), "{name} has no example");
    }
}
