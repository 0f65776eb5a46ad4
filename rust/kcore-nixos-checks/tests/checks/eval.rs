//! The modules evaluated through `tests/eval/eval.nix`: rendered agent and controller
//! configuration per backend, units and their hardening, merged disko devices (fragments
//! rendered by kcore-disko), runtime support per backend, and every assertion on the bad
//! combination it exists for.

use kcore_disko::spec::{Backend, ThinPoolSpec};
use kcore_disko::{StorageSpec, render_data_disk, render_fragment};
use serde_json::{Value, json};

use crate::support::{FAKE_STORE, Harness, rendered};

const TLS: &str = r#"{"caFile":"/var/lib/kcore/pki/ca.crt","certFile":"/var/lib/kcore/pki/node.crt","keyFile":"/var/lib/kcore/pki/node.key"}"#;

fn tls() -> Value {
    serde_json::from_str(TLS).unwrap()
}

/// A managed agent with mTLS and the given `kcore.storage`.
pub fn agent_config(storage: Value) -> Value {
    json!({
        "services": { "kcore": { "agent": {
            "enable": true,
            "settings": { "nodeId": "node-1", "dcId": "DC1", "controllers": ["ctl1:9090"], "tls": tls() }
        }}},
        "kcore": { "storage": storage },
        "networking": { "hostId": "8425e349" }
    })
}

/// Sets `value` at a dotted `path` of a configuration.
fn set(mut config: Value, path: &str, value: Value) -> Value {
    let mut at = &mut config;
    for key in path.split('.') {
        if at.get(key).is_none() {
            at[key] = json!({});
        }
        at = &mut at[key];
    }
    *at = value;
    config
}

fn fake(pkg: &str, bin: &str) -> String {
    format!("{FAKE_STORE}{pkg}/bin/{bin}")
}

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
            "lsblk": fake("util-linux", "lsblk")
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

/// The PATH of the agent's unit in `outputs`, as package names.
pub fn agent_path(out: &Value) -> Vec<String> {
    out["units"]["kcore-agent"]["path"]
        .as_array()
        .unwrap_or_else(|| panic!("no kcore-agent unit: {out}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

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

pub fn controller_config() -> Value {
    json!({ "services": { "kcore": { "controller": {
        "enable": true,
        "settings": {
            "controllerId": "ctl1", "clusterName": "lab", "dcId": "DC1",
            "peers": ["ctl2:9090"], "requireManualApproval": true, "heartbeatTimeoutSeconds": 45
        }
    }}}})
}

#[test]
fn controller_yaml_and_hardened_unit() {
    let Some(h) = Harness::get("controller_yaml_and_hardened_unit") else {
        return;
    };
    let out = h.outputs(&controller_config());
    let creds = "/run/credentials/kcore-controller.service";
    let pki = "/var/lib/kcore-controller/pki";
    assert_eq!(
        rendered(&out, "controllerConfig"),
        json!({
            "controllerId": "ctl1",
            "clusterName": "lab",
            "dcId": "DC1",
            "listen": "0.0.0.0:9090",
            "requireManualApproval": true,
            "peers": ["ctl2:9090"],
            "heartbeatTimeoutSeconds": 45,
            "databasePath": "/var/lib/kcore-controller/state.sqlite",
            "tls": {
                "caFile": format!("{creds}/ca-bundle.crt"),
                "certFile": format!("{creds}/controller.crt"),
                "keyFile": format!("{creds}/controller.key"),
                "subCaCertFile": format!("{pki}/sub-ca.crt"),
                "subCaKeyFile": format!("{pki}/sub-ca.key")
            }
        })
    );
    assert_eq!(out["agentConfig"], Value::Null);
    let sc = &out["units"]["kcore-controller"]["serviceConfig"];
    assert_eq!(
        sc["ExecStart"],
        json!(format!(
            "{FAKE_STORE}kcore/bin/kcore-controller --config /etc/kcore/controller.yaml"
        ))
    );
    // The operator's keys (root-owned anywhere) reach the dynamic user as credentials.
    let src = "/var/lib/kcore/controller-pki";
    let mut creds_loaded: Vec<String> = sc["LoadCredential"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    creds_loaded.sort();
    assert_eq!(
        creds_loaded,
        [
            "ca-bundle.crt",
            "controller.crt",
            "controller.key",
            "sub-ca.crt",
            "sub-ca.key"
        ]
        .map(|n| format!("{n}:{src}/{n}"))
    );
    // The sub-CA (rewritten by `kctl rotate sub-ca`) is seeded into the state dir, never
    // overwritten.
    let pre: Vec<&str> = sc["ExecStartPre"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        pre,
        [
            format!("{} -p -m 0700 {pki} {pki}", fake("coreutils", "mkdir")),
            format!(
                "{} '--update=none' {creds}/sub-ca.key {pki}/sub-ca.key",
                fake("coreutils", "cp")
            ),
            format!(
                "{} '--update=none' {creds}/sub-ca.crt {pki}/sub-ca.crt",
                fake("coreutils", "cp")
            ),
        ]
    );
    // Once seeded, the initial sub-CA may leave the host: null drops its credential and copy.
    let seeded = set(
        controller_config(),
        "services.kcore.controller.credentials",
        json!({ "subCaCertFile": null, "subCaKeyFile": null }),
    );
    let sc2 = &h.outputs(&seeded)["units"]["kcore-controller"]["serviceConfig"];
    assert_eq!(
        sc2["LoadCredential"],
        json!(
            ["ca-bundle.crt", "controller.crt", "controller.key"].map(|n| format!("{n}:{src}/{n}"))
        )
    );
    assert_eq!(sc2["ExecStartPre"].as_array().unwrap().len(), 1, "{sc2}");
    for (key, want) in [
        ("DynamicUser", json!(true)),
        ("StateDirectory", json!("kcore-controller")),
        ("StateDirectoryMode", json!("0700")),
        ("LimitNOFILE", json!(65536)),
        ("CapabilityBoundingSet", json!("")),
        ("AmbientCapabilities", json!("")),
        ("ProtectSystem", json!("strict")),
        ("PrivateTmp", json!(true)),
        ("PrivateDevices", json!(true)),
        ("NoNewPrivileges", json!(true)),
        ("MemoryDenyWriteExecute", json!(true)),
        ("UMask", json!("0077")),
        (
            "SystemCallFilter",
            json!(["@system-service", "~@privileged", "~@resources"]),
        ),
    ] {
        assert_eq!(sc[key], want, "kcore-controller {key}");
    }
    // Firewall stays closed unless asked.
    assert_eq!(out["allowedTCPPorts"], json!([]));
}

#[test]
fn open_firewall_opens_the_listen_port() {
    let Some(h) = Harness::get("open_firewall_opens_the_listen_port") else {
        return;
    };
    let config = set(
        set(
            agent_config(json!({})),
            "services.kcore.agent.openFirewall",
            json!(true),
        ),
        "services.kcore.agent.settings.listen",
        json!("[::]:9443"),
    );
    let config = set(
        set(
            config,
            "services.kcore.controller",
            controller_config()["services"]["kcore"]["controller"].clone(),
        ),
        "services.kcore.controller.openFirewall",
        json!(true),
    );
    let mut ports: Vec<u64> = h.outputs(&config)["allowedTCPPorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    ports.sort();
    assert_eq!(ports, vec![9090, 9443]);
}

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

/// Writes rendered fragments as files, as the agent keeps them under /var/lib/kcore/disko.
fn write_fragment(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
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
    assert_eq!(out["lvmThin"], json!(false));

    let fs = h.outputs(&agent_config(json!({})));
    assert_eq!(fs["supportedFilesystems"], json!({}));
    assert_eq!(fs["zfsExtraPools"], json!([]));
}

fn encrypted(extra: Value) -> Value {
    let mut enc = json!({ "enable": true, "device": "/dev/disk/by-partlabel/disk-os-root" });
    for (k, v) in extra.as_object().unwrap() {
        enc[k] = v.clone();
    }
    json!({ "kcore": { "diskEncryption": enc } })
}

#[test]
fn tpm2_unlock_uses_systemd_initrd_and_first_boot_enrollment() {
    let Some(h) = Harness::get("tpm2_unlock_uses_systemd_initrd_and_first_boot_enrollment") else {
        return;
    };
    let out = h.outputs(&encrypted(json!({})));
    assert_eq!(out["initrdSystemd"], json!(true));
    assert_eq!(
        out["luks"]["crypted"],
        json!({
            "device": "/dev/disk/by-partlabel/disk-os-root",
            "crypttabExtraOpts": ["tpm2-device=auto"],
            "keyFile": null,
            "allowDiscards": false
        })
    );
    let unit = &out["units"]["kcore-tpm2-enroll"];
    assert_eq!(
        unit["unitConfig"]["ConditionPathExists"],
        json!("/var/lib/kcore/luks-temporary.key")
    );
    assert_eq!(unit["serviceConfig"]["Type"], json!("oneshot"));
    assert_eq!(unit["after"], json!(["cryptsetup.target", "tpm2.target"]));
    assert_eq!(
        unit["serviceConfig"]["ExecStart"],
        json!(format!("{FAKE_STORE}kcore-tpm2-enroll"))
    );
    let script = out["tpm2EnrollScript"].as_str().unwrap();
    let cryptsetup = fake("cryptsetup", "cryptsetup");
    // Order: prove the temporary key still opens the volume; enroll the PCR-bound slot;
    // prove the TPM2 token alone opens it; only then drop the key's slot; the file last.
    let steps = [
        format!("if {cryptsetup} open --test-passphrase --key-file=\"$tmp\" \"$dev\"; then"),
        format!(
            "{} --unlock-key-file=\"$tmp\" --tpm2-device=auto",
            fake("systemd", "systemd-cryptenroll")
        ),
        "--tpm2-pcrs=7 --wipe-slot=tpm2 \"$dev\"".to_string(),
        format!(
            "{cryptsetup} open --test-passphrase --token-only --token-type systemd-tpm2 \"$dev\""
        ),
        format!("{cryptsetup} luksRemoveKey --key-file=\"$tmp\" \"$dev\""),
        "fi".to_string(),
        "rm --force -- \"$tmp\"".to_string(),
    ];
    let mut at = 0;
    for step in &steps {
        let found = script[at..]
            .find(step.as_str())
            .unwrap_or_else(|| panic!("step {step:?} missing or out of order in:\n{script}"));
        at += found + step.len();
    }
    assert!(
        script.contains("tmp=/var/lib/kcore/luks-temporary.key\n"),
        "{script}"
    );
    assert!(
        script.contains("dev=/dev/disk/by-partlabel/disk-os-root\n"),
        "{script}"
    );
    let tmpfiles: Vec<&str> = out["tmpfiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(tmpfiles.contains(&"d /etc/kcore/recovery 0700 root root -"));
    assert!(tmpfiles.contains(&"z /etc/kcore/recovery/luks-recovery-key.txt 0400 root root -"));
}

#[test]
fn key_file_unlock_has_no_tpm_enrollment() {
    let Some(h) = Harness::get("key_file_unlock_has_no_tpm_enrollment") else {
        return;
    };
    let out = h.outputs(&encrypted(json!({
        "unlock": "keyFile",
        "keyFile": "/dev/disk/by-id/usb-Key-0:0"
    })));
    assert_eq!(
        out["luks"]["crypted"]["keyFile"],
        json!("/dev/disk/by-id/usb-Key-0:0")
    );
    assert_eq!(out["luks"]["crypted"]["crypttabExtraOpts"], json!([]));
    assert_eq!(out["units"]["kcore-tpm2-enroll"], Value::Null);
    assert_eq!(out["initrdSystemd"], json!(false));
}

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
            "is in the Nix store",
        ),
        (
            "key-file unlock without a key file",
            encrypted(json!({ "unlock": "keyFile" })),
            "needs kcore.diskEncryption.keyFile",
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
    assert_eq!(
        required,
        [
            "kcore.diskEncryption.device",
            "services.kcore.agent.settings.nodeId",
            "services.kcore.controller.settings.clusterName",
            "services.kcore.controller.settings.controllerId",
        ]
    );
    for name in [
        "services.kcore.agent.settings",
        "services.kcore.controller.settings",
    ] {
        let o = opts.iter().find(|o| o["name"] == json!(name)).unwrap();
        assert_eq!(o["hasExample"], json!(true), "{name} has no example");
    }
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
