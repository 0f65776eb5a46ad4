//! The agent: its rendered file per backend, its unit (hardening and the relaxations
//! commented in the module), its PATH, the apply-nix config path.

use super::*;

/// The agent file every backend shares, with the backend's `storage` section.
fn expected_agent_yaml(storage: Value) -> Value {
    json!({
        "nodeId": "node-1",
        "dcId": "DC1",
        "listen": "0.0.0.0:9091",
        "mode": "managed",
        "controllers": ["ctl1:9090"],
        "tls": tls(),
        "storage": storage,
        "disko": {
            "managementModeFile": "/var/lib/kcore/disko-management-mode",
            "stateDir": "/var/lib/kcore/disko"
        },
        "nix": { "configPath": "/etc/nixos/kcore-node.nix" },
        "binaries": {
            "nix-instantiate": fake("nix", "nix-instantiate"),
            "nixos-rebuild": fake("nixos-rebuild", "nixos-rebuild"),
            "systemd-run": fake("systemd", "systemd-run"),
            "disko": fake("disko", "disko"),
            "lsblk": fake("util-linux", "lsblk"),
            "qemu-system-x86_64": fake("qemu_kvm", "qemu-system-x86_64"),
            "qemu-img": fake("qemu_kvm", "qemu-img"),
            // No systemd-boot here, so GRUB is on (the stubs follow grub.nix and systemd-boot.nix).
            "grub-reboot": format!("{FAKE_STORE}grub2/sbin/grub-reboot")
        }
    })
}

#[test]
fn agent_yaml_for_each_backend() {
    let Some(h) = Harness::get("agent_yaml_for_each_backend") else {
        return;
    };
    let defaults = json!({
        "backend": "filesystem",
        "filesystemVolumeDir": "/var/lib/kcore/volumes",
        "imageCacheDir": "/var/lib/kcore/images",
        "lvm": { "vgName": "vg_kcore", "lvPrefix": "kcore-" },
        "zfs": { "poolName": "tank0", "datasetPrefix": "kcore" }
    });
    let cases = [
        (json!({}), defaults.clone()),
        (
            json!({ "backend": "lvm", "lvm": { "vgName": "vg_fast", "lvPrefix": "vm-" } }),
            set(
                set(defaults.clone(), "backend", json!("lvm")),
                "lvm",
                json!({ "vgName": "vg_fast", "lvPrefix": "vm-" }),
            ),
        ),
        (
            json!({ "backend": "zfs", "zfs": { "poolName": "tank1", "datasetPrefix": "vms" },
                    "imageCacheDir": "/srv/images" }),
            set(
                set(
                    set(defaults.clone(), "backend", json!("zfs")),
                    "zfs",
                    json!({ "poolName": "tank1", "datasetPrefix": "vms" }),
                ),
                "imageCacheDir",
                json!("/srv/images"),
            ),
        ),
    ];
    for (storage, want_storage) in cases {
        let out = h.outputs(&agent_config(storage.clone()));
        assert_eq!(
            rendered(&out, "agentConfig"),
            expected_agent_yaml(want_storage),
            "kcore.storage = {storage}"
        );
        assert_eq!(out["controllerConfig"], Value::Null);
    }
}

#[test]
fn agent_yaml_keeps_freeform_keys_and_drops_nulls() {
    let Some(h) = Harness::get("agent_yaml_keeps_freeform_keys_and_drops_nulls") else {
        return;
    };
    let config = set(
        set(
            agent_config(json!({})),
            "services.kcore.agent.settings.dcId",
            Value::Null,
        ),
        "services.kcore.agent.settings.heartbeatIntervalSeconds",
        json!(30),
    );
    let config = set(
        set(
            config,
            "services.kcore.agent.settings.labels",
            json!({ "rack": "r1" }),
        ),
        "services.kcore.agent.settings.disko.diskoSource",
        json!("/nix/store/aaaa-source"),
    );
    let config = set(
        config,
        "services.kcore.agent.settings.disko.nixpkgsLib",
        json!("/nix/store/bbbb-source/lib"),
    );
    let yaml = rendered(&h.outputs(&config), "agentConfig");
    assert_eq!(yaml["heartbeatIntervalSeconds"], json!(30));
    assert_eq!(yaml["labels"], json!({ "rack": "r1" }));
    assert!(
        yaml.get("dcId").is_none(),
        "null dcId must be left out: {yaml}"
    );
    assert_eq!(
        yaml["disko"],
        json!({
            "managementModeFile": "/var/lib/kcore/disko-management-mode",
            "stateDir": "/var/lib/kcore/disko",
            "diskoSource": "/nix/store/aaaa-source",
            "nixpkgsLib": "/nix/store/bbbb-source/lib"
        })
    );
}

#[test]
fn agent_unit_runs_the_rendered_file_with_commented_relaxations() {
    let Some(h) = Harness::get("agent_unit_runs_the_rendered_file_with_commented_relaxations")
    else {
        return;
    };
    let out = h.outputs(&agent_config(json!({ "backend": "zfs" })));
    let unit = &out["units"]["kcore-agent"];
    let sc = &unit["serviceConfig"];
    assert_eq!(
        sc["ExecStart"],
        json!(format!(
            "{FAKE_STORE}kcore/bin/kcore-agent --config /etc/kcore/node-agent.yaml"
        ))
    );
    for (key, want) in [
        ("NoNewPrivileges", json!(true)),
        ("RestrictSUIDSGID", json!(true)),
        ("RestrictNamespaces", json!(true)),
        ("LockPersonality", json!(true)),
        ("SystemCallArchitectures", json!("native")),
        ("UMask", json!("0022")),
        // apply-nix's rebuild units append to /var/log/kcore-agent/<unit>.log.
        ("LogsDirectory", json!("kcore-agent")),
    ] {
        assert_eq!(sc[key], want, "kcore-agent {key}");
    }
    // Root, no private mount namespace (disko's mounts must reach the host; every path the
    // agent writes stays writable), and block devices created at run time stay reachable.
    for absent in AGENT_RELAXED {
        assert!(
            sc.get(absent).is_none(),
            "kcore-agent must not set {absent}: {sc}"
        );
    }
    assert_eq!(unit["wantedBy"], json!(["multi-user.target"]));
    // Children's builds go through the daemon (RestrictNamespaces= would break local builds).
    // No NIX_PATH: disko's wrapper sets its own nixpkgs.
    assert_eq!(unit["environment"], json!({ "NIX_REMOTE": "daemon" }));
    // ZFS backend: the zfs tools are on the unit's PATH next to disko's and nix's tools.
    assert_eq!(
        unit["path"],
        json!([AGENT_PATH.as_slice(), &["zfs"]].concat())
    );
}

/// Unit settings the agent's unit leaves unset on purpose, each with a comment in
/// modules/agent.nix saying why.
const AGENT_RELAXED: [&str; 14] = [
    "User",
    "DynamicUser",
    "CapabilityBoundingSet",
    "DevicePolicy",
    "DeviceAllow",
    "PrivateDevices",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateMounts",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "ProtectKernelModules",
    "MemoryDenyWriteExecute",
];

/// The agent unit's PATH on every backend (package names of fake-pkgs.nix).
const AGENT_PATH: [&str; 7] = [
    "disko",
    "util-linux",
    "lvm2",
    "cryptsetup",
    "iproute2",
    "nix",
    "nixos-rebuild",
];

#[test]
fn agent_path_has_the_backend_tools_and_thin_tools_only_with_thin_pools() {
    let Some(h) =
        Harness::get("agent_path_has_the_backend_tools_and_thin_tools_only_with_thin_pools")
    else {
        return;
    };
    // Filesystem backend: the common tools only.
    assert_eq!(agent_path(&h.outputs(&agent_config(json!({})))), AGENT_PATH);
    // LVM without a thin pool: lvm2 is there already, no thin tools.
    let lvm = h.outputs(&agent_config(json!({ "backend": "lvm" })));
    assert_eq!(lvm["lvmThin"], json!(false));
    assert_eq!(agent_path(&lvm), AGENT_PATH);
    // LVM with thin provisioning: nixpkgs' lvm.nix thin support, which points lvm.conf at
    // the thin tools for every lvm command; nothing added to the agent's PATH.
    let thin = h.outputs(&agent_config(
        json!({ "backend": "lvm", "lvm": { "thinProvisioning": true } }),
    ));
    assert_eq!(thin["lvmThin"], json!(true));
    assert_eq!(agent_path(&thin), AGENT_PATH);
}

/// Each relaxation of the agent's unit is explained where it is made: the module's comment
/// block names every setting the unit leaves unset on purpose.
#[test]
fn agent_unit_relaxations_are_commented_in_the_module() {
    if !crate::support::have_repo("agent_unit_relaxations_are_commented_in_the_module") {
        return;
    }
    let path = crate::support::repo_root().join("modules/agent.nix");
    let text = std::fs::read_to_string(&path).unwrap();
    let comments: String = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for setting in AGENT_RELAXED
        .iter()
        .filter(|s| !matches!(**s, "User" | "DynamicUser"))
        .chain(&["LogsDirectory"])
    {
        assert!(
            comments.contains(setting),
            "modules/agent.nix has no comment on {setting}"
        );
    }
    assert!(
        comments.contains("runs as root"),
        "no comment on running as root"
    );
}

#[test]
fn apply_nix_config_path_is_rendered_and_never_in_the_store() {
    let Some(h) = Harness::get("apply_nix_config_path_is_rendered_and_never_in_the_store") else {
        return;
    };
    let config = set(
        agent_config(json!({})),
        "services.kcore.agent.settings.nix.configPath",
        json!("/etc/nixos/hosts/hv1/kcore-node.nix"),
    );
    let yaml = rendered(&h.outputs(&config), "agentConfig");
    assert_eq!(
        yaml["nix"],
        json!({ "configPath": "/etc/nixos/hosts/hv1/kcore-node.nix" })
    );
    // The store is read-only: apply-nix could never write there.
    let err = h.eval_error(&set(
        agent_config(json!({})),
        "services.kcore.agent.settings.nix.configPath",
        json!("/nix/store/0c8nvgrh4bnys3b1jgg4ggnrv40xcqr0-kcore-node.nix"),
    ));
    assert!(
        err.contains("services.kcore.agent.settings.nix.configPath"),
        "{err}"
    );
}
