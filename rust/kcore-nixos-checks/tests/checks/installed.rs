//! The systems `kctl node install` puts on a node (hosts/installed-{filesystem,lvm,zfs} with
//! TPM2 unlock, hosts/installed-{filesystem,lvm,zfs}-keyfile with the key device) and the
//! installer ISO that carries them: generic closures whose node-specific values are the
//! runtime files the install writes (docs/nixos.md "Installed systems"). The agent runs
//! `--defaults <store file> --config /etc/kcore/node-agent.yaml`; the controller is in every
//! closure but only starts where /etc/kcore/controller.yaml exists; every device is a disko
//! partition label; the ISO's install-mode agent names each backend's closure per LUKS mode.

use serde_json::{Value, json};

use crate::support::{FAKE_STORE, Harness, rendered};

const BACKENDS: [&str; 3] = ["filesystem", "lvm", "zfs"];

#[test]
fn installed_systems_read_the_installers_runtime_files() {
    let Some(h) = Harness::get("installed_systems_read_the_installers_runtime_files") else {
        return;
    };
    let hosts = h.hosts(&json!({}));
    let variants = BACKENDS.iter().flat_map(|b| [(*b, false), (*b, true)]);
    for (backend, keyfile) in variants {
        let host = if keyfile {
            format!("installed-{backend}-keyfile")
        } else {
            format!("installed-{backend}")
        };
        let out = &hosts[&host];
        assert_eq!(out["failed"], json!([]), "{host}");

        // The agent: the installer's file, over this closure's defaults.
        let agent = &out["units"]["kcore-agent"];
        let defaults = format!("{FAKE_STORE}node-agent-defaults.yaml");
        assert_eq!(
            agent["serviceConfig"]["ExecStart"],
            json!(format!(
                "{FAKE_STORE}kcore-0.1.0/bin/kcore-agent --defaults {defaults} --config /etc/kcore/node-agent.yaml"
            )),
            "{host}"
        );
        assert_eq!(
            agent["unitConfig"]["ConditionPathExists"],
            json!("/etc/kcore/node-agent.yaml"),
            "{host}"
        );
        assert_eq!(
            out["agentConfig"],
            Value::Null,
            "{host}: no /etc file from Nix"
        );
        let d = rendered(out, "agentDefaults");
        for key in ["nodeId", "tls", "controllers"] {
            // `controllers: []` is replaced by the file's list (lists replace, the file wins).
            if key == "controllers" {
                assert_eq!(d[key], json!([]), "{host}");
            } else {
                assert!(d.get(key).is_none(), "{host}: {key} in the defaults: {d}");
            }
        }
        assert_eq!(d["mode"], json!("managed"), "{host}");
        assert_eq!(d["storage"]["backend"], json!(backend), "{host}");
        assert_eq!(
            d["disko"]["managementModeFile"],
            json!("/etc/kcore/disko-management-mode"),
            "{host}: the file the installer writes"
        );
        let path = crate::eval::agent_path(out);
        assert_eq!(path.iter().any(|p| p == "zfs"), backend == "zfs", "{host}");

        // The controller: in the closure, started only with the installer's file, as the
        // static user that owns the installer's certificate directory.
        let ctl = &out["units"]["kcore-controller"];
        assert_eq!(
            ctl["unitConfig"]["ConditionPathExists"],
            json!("/etc/kcore/controller.yaml"),
            "{host}"
        );
        assert_eq!(ctl["serviceConfig"]["User"], json!("kcore-controller"));
        assert!(ctl["serviceConfig"].get("DynamicUser").is_none(), "{host}");
        assert!(
            ctl["serviceConfig"].get("LoadCredential").is_none(),
            "{host}"
        );
        assert_eq!(
            ctl["serviceConfig"]["ReadWritePaths"],
            json!(["/etc/kcore/controller"])
        );
        assert_eq!(out["controllerConfig"], Value::Null, "{host}");
        assert_eq!(
            out["users"]["kcore-controller"],
            json!({ "isSystemUser": true, "group": "kcore-controller" })
        );
        assert!(
            out["tmpfiles"].as_array().unwrap().contains(&json!(
                "Z /etc/kcore/controller - kcore-controller kcore-controller -"
            )),
            "{host}"
        );
        assert_eq!(out["allowedTCPPorts"], json!([9090, 9091]), "{host}");

        // Devices by partition label, the same on every node; TPM2 (or the key device's
        // partition) with the editor off.
        let luks = &out["luks"]["crypted"];
        assert_eq!(
            luks["device"],
            json!("/dev/disk/by-partlabel/disk-os-root"),
            "{host}"
        );
        if keyfile {
            // The partition the install-mode agent makes on --luks-key-device, no TPM wait.
            assert_eq!(
                luks["keyFile"],
                json!("/dev/disk/by-partlabel/kcore-luks-key"),
                "{host}"
            );
            assert_eq!(luks["keyFileSize"], json!(4096), "{host}");
            assert_eq!(luks["crypttabExtraOpts"], json!([]), "{host}");
        } else {
            assert_eq!(luks["keyFile"], Value::Null, "{host}");
            assert_eq!(
                luks["crypttabExtraOpts"],
                json!(["tpm2-device=auto"]),
                "{host}"
            );
            assert_eq!(out["initrdSystemd"], json!(true), "{host}");
        }
        assert_eq!(out["systemdBootEditor"], json!(false));
        let fs = &out["fileSystems"];
        assert_eq!(fs["/"]["device"], json!("/dev/mapper/crypted"));
        assert_eq!(
            fs["/boot"]["device"],
            json!("/dev/disk/by-partlabel/disk-os-ESP")
        );
        let volumes = &fs["/var/lib/kcore/volumes"];
        if backend == "filesystem" {
            assert_eq!(
                volumes["device"],
                json!("/dev/disk/by-partlabel/disk-data0-volumes")
            );
            assert!(
                volumes["options"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("nofail"))
            );
            assert_eq!(
                fs["/var/lib/kcore/volumes1"]["device"],
                json!("/dev/disk/by-partlabel/disk-data1-volumes")
            );
        } else {
            assert_eq!(*volumes, Value::Null, "{host}: no volume mounts");
        }
        let modules = out["initrdModules"].as_array().unwrap();
        assert!(
            modules.contains(&json!("nvme")),
            "{host}: all-hardware profile"
        );
    }
}

#[test]
fn the_installer_carries_each_backends_system_and_its_tools() {
    let Some(h) = Harness::get("the_installer_carries_each_backends_system_and_its_tools") else {
        return;
    };
    let iso = h.host_outputs("installer");
    assert_eq!(iso["failed"], json!([]));
    let yaml = rendered(&iso, "agentConfig");
    assert_eq!(yaml["mode"], json!("install"));
    for backend in BACKENDS {
        // The fake toplevel is named after the system's host name, one per backend and
        // LUKS mode: TPM2 systems in `systems`, key-file systems in `keyfileSystems`.
        assert_eq!(
            yaml["install"]["systems"][backend],
            json!(format!("{FAKE_STORE}nixos-system-kcore-node-{backend}")),
            "{yaml}"
        );
        assert_eq!(
            yaml["install"]["keyfileSystems"][backend],
            json!(format!(
                "{FAKE_STORE}nixos-system-kcore-node-{backend}-keyfile"
            )),
            "{yaml}"
        );
    }
    assert_eq!(yaml["install"]["tpm2Pcrs"], json!([0, 2, 7]));
    for (tool, path) in [
        ("nixos-install", "nixos-install-tools/bin/nixos-install"),
        ("cryptsetup", "cryptsetup/bin/cryptsetup"),
        ("sgdisk", "gptfdisk/bin/sgdisk"),
        ("systemctl", "systemd/bin/systemctl"),
        ("systemd-cryptenroll", "systemd/bin/systemd-cryptenroll"),
        ("umount", "util-linux/bin/umount"),
        ("vgchange", "lvm2/bin/vgchange"),
        ("zpool", "zfs/bin/zpool"),
        ("disko", "disko/bin/disko"),
    ] {
        assert_eq!(
            yaml["binaries"][tool],
            json!(format!("{FAKE_STORE}{path}")),
            "{tool}"
        );
    }
    let pkgs = iso["systemPackages"].as_array().unwrap();
    for p in ["disko", "nixos-install-tools"] {
        assert!(pkgs.contains(&json!(p)), "{p} not in {pkgs:?}");
    }
    // kctl: the kcore package (kctl, kcore-agent, kcore-controller).
    assert!(
        pkgs.iter()
            .any(|p| p.as_str().unwrap().starts_with("kcore-")),
        "{pkgs:?}"
    );
    assert_eq!(
        iso["etc"]["kcore/flake"],
        Value::Null,
        "the flake source is a store path, not a text file"
    );
}

/// `nix build .#installer-iso` evaluates (iso-image.nix's stand-in) and the image holds the
/// six prebuilt systems (TPM2 and key-file) and the flake's inputs.
#[test]
fn the_installer_iso_evaluates_with_the_prebuilt_systems() {
    let Some(h) = Harness::get("the_installer_iso_evaluates_with_the_prebuilt_systems") else {
        return;
    };
    let out = h.flake_outputs(&json!({}));
    let iso = &out["installerIso"];
    assert_eq!(iso["name"], json!("kcore-installer.iso"));
    let contents: Vec<String> = serde_json::from_str(iso["text"].as_str().unwrap()).unwrap();
    let mut want: Vec<String> = BACKENDS
        .iter()
        .map(|b| format!("{FAKE_STORE}nixos-system-kcore-node-{b}"))
        .chain(
            BACKENDS
                .iter()
                .map(|b| format!("{FAKE_STORE}nixos-system-kcore-node-{b}-keyfile")),
        )
        .collect();
    want.push(out["paths"]["nixpkgs"].as_str().unwrap().to_string());
    want.push(out["paths"]["disko"].as_str().unwrap().to_string());
    assert_eq!(contents, want);
}

/// `kctl node install --zfs-pool-name NAME` makes pool NAME and writes it to
/// /etc/kcore/zfs-pools: the prebuilt zfs systems (runtime files) import what that file names
/// with kcore-zfs-import.service, not a pool fixed at build time; a node configured in Nix
/// (hosts/hv-zfs) keeps its pool in `boot.zfs.extraPools`.
#[test]
fn installed_zfs_systems_import_the_pools_the_installer_names() {
    let Some(h) = Harness::get("installed_zfs_systems_import_the_pools_the_installer_names") else {
        return;
    };
    let hosts = h.hosts(&json!({}));
    let mut script = None;
    for host in ["installed-zfs", "installed-zfs-keyfile"] {
        let out = &hosts[host];
        assert_eq!(out["failed"], json!([]), "{host}");
        assert_eq!(out["zfsExtraPools"], json!([]), "{host}: no static pool");
        let unit = &out["units"]["kcore-zfs-import"];
        assert_eq!(
            unit["unitConfig"],
            json!({ "DefaultDependencies": "no", "ConditionPathExists": "/etc/kcore/zfs-pools" }),
            "{host}"
        );
        assert_eq!(unit["serviceConfig"]["Type"], json!("oneshot"), "{host}");
        assert_eq!(unit["serviceConfig"]["RemainAfterExit"], json!(true));
        assert_eq!(unit["requires"], json!(["systemd-udev-settle.service"]));
        let before = unit["before"].as_array().unwrap();
        for u in [
            "kcore-agent.service",
            "zfs-mount.service",
            "zfs-import.target",
        ] {
            assert!(before.contains(&json!(u)), "{host}: before {u}: {before:?}");
        }
        assert!(
            unit["wantedBy"]
                .as_array()
                .unwrap()
                .contains(&json!("zfs-import.target"))
        );
        script = Some(out["zfsImportScript"].as_str().unwrap().to_string());
    }
    for host in ["installed-lvm", "installed-filesystem"] {
        assert_eq!(
            hosts[host]["units"]["kcore-zfs-import"],
            Value::Null,
            "{host}"
        );
    }
    let hv = &hosts["hv-zfs"];
    assert_eq!(hv["failed"], json!([]));
    assert_eq!(hv["zfsExtraPools"], json!(["tank0"]));
    assert_eq!(hv["units"]["kcore-zfs-import"], Value::Null);

    run_import_script(&script.unwrap());
}

/// The import script itself, with bash and the `zpool` stand-in of tests/support: valid
/// names not yet imported are imported `-N -d /dev/disk/by-id`, imported ones skipped,
/// names outside ZFS's rules never reach zpool and fail the unit.
fn run_import_script(text: &str) {
    let Ok(bash) = kcore_nix::Program::resolve("bash", None, "KCORE_BASH") else {
        eprintln!("SKIP: the import script: no bash");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let stand_in = crate::support::repo_root().join("rust/kcore-nixos-checks/tests/support/zpool");
    let zpool = format!("{FAKE_STORE}zfs/bin/zpool");
    // lib.escapeShellArg quotes only what needs it: a store path and this file do not.
    assert!(text.contains(&format!("zpool={zpool}\n")), "{text}");
    assert!(text.contains("pools=/etc/kcore/zfs-pools\n"), "{text}");
    let run = |pools: &str| {
        let file = dir.path().join("zfs-pools");
        let log = dir.path().join("zpool.log");
        std::fs::write(&file, pools).unwrap();
        let _ = std::fs::remove_file(&log);
        let body = text
            .replace(&zpool, &stand_in.display().to_string())
            .replace("/etc/kcore/zfs-pools", &file.display().to_string());
        let script = dir.path().join("import.sh");
        let env = format!(
            "export KCORE_TEST_ZPOOL_LOG='{}' KCORE_TEST_ZPOOL_IMPORTED=already\n",
            log.display()
        );
        std::fs::write(&script, format!("{env}{body}")).unwrap();
        let out = crate::support::run(&bash, &[script.display().to_string()]).unwrap();
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        (out, calls)
    };
    let (out, calls) = run("vmpool7\nalready\n");
    assert!(out.status.success(), "{}", out.stderr_lossy());
    assert_eq!(
        calls,
        "list vmpool7\nimport -N -d /dev/disk/by-id vmpool7\nlist already\n"
    );
    let (out, calls) = run("bad;touch x\n-f\nmirror0\nc0t0d0\n0pool\n\ntank_1\n");
    assert!(!out.status.success());
    let err = out.stderr_lossy();
    assert!(err.contains("invalid pool name 'bad;touch x'"), "{err}");
    assert!(err.contains("'mirror0' is a name ZFS reserves"), "{err}");
    assert!(err.contains("'c0t0d0' is a name ZFS reserves"), "{err}");
    assert!(err.contains("invalid pool name '-f'"), "{err}");
    assert_eq!(calls, "list tank_1\nimport -N -d /dev/disk/by-id tank_1\n");
}
