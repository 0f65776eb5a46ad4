//! The files the modules render are accepted by the daemons' own configuration parsers
//! (serde with `deny_unknown_fields` and their validation), so a key the module writes that
//! a daemon does not know fails here, not at a node's boot.

use std::path::Path;

use kcore_agent::config::Backend;
use serde_json::json;

use crate::eval::{agent_config, controller_config};
use crate::support::Harness;

fn agent_text(out: &serde_json::Value) -> String {
    out["agentConfig"].as_str().unwrap().to_string()
}

#[test]
fn kcore_agent_accepts_the_rendered_agent_yaml() {
    let Some(h) = Harness::get("kcore_agent_accepts_the_rendered_agent_yaml") else {
        return;
    };
    let path = Path::new("/etc/kcore/node-agent.yaml");
    let parse = |text: &str, what: &str| {
        kcore_agent::config::AgentConfig::parse(text, path)
            .unwrap_or_else(|e| panic!("kcore-agent refuses the file of {what}: {e}\n{text}"))
    };

    // Each backend, as kcore.storage renders it.
    for (storage, backend) in [
        (json!({}), "filesystem"),
        (
            json!({ "backend": "lvm", "lvm": { "vgName": "vg_fast" } }),
            "lvm",
        ),
        (
            json!({ "backend": "zfs", "zfs": { "poolName": "tank1" } }),
            "zfs",
        ),
    ] {
        let text = agent_text(&h.outputs(&agent_config(storage)));
        let parsed = parse(&text, backend);
        assert_eq!(parsed.storage.backend.as_str(), backend);
        assert_eq!(parsed.node_id, "node-1");
        assert_eq!(parsed.dc_id, "DC1");
        assert!(parsed.tls.is_some());
        assert!(parsed.binaries.get("disko").is_some());
    }

    // Install mode (the ISO) without TLS, and the example hosts.
    let mut install = agent_config(json!({}));
    let settings = &mut install["services"]["kcore"]["agent"]["settings"];
    settings["mode"] = json!("install");
    settings["tls"] = json!({});
    let parsed = parse(&agent_text(&h.outputs(&install)), "install mode");
    assert!(parsed.tls.is_none());
    for host in ["hv-lvm", "hv-zfs", "node"] {
        parse(&agent_text(&h.host_outputs(host)), host);
    }
    // The ISO's file (hosts/installer), `install:` section and the install-mode binaries
    // included, as kcore-agent reads it.
    let iso = parse(&agent_text(&h.host_outputs("installer")), "hosts/installer");
    assert_eq!(iso.mode, kcore_agent::config::Mode::Install);
    assert_eq!(iso.install.tpm2_pcrs, [0, 2, 7]);
    for backend in [Backend::Filesystem, Backend::Lvm, Backend::Zfs] {
        let system = iso.install.systems.get(backend);
        assert!(
            system.is_some_and(|p| p.starts_with("/nix/store/")),
            "install.systems.{backend:?}: {system:?}"
        );
        let keyfile = iso.install.keyfile_systems.get(backend);
        assert!(
            keyfile.is_some_and(|p| p.starts_with("/nix/store/")),
            "install.keyfileSystems.{backend:?}: {keyfile:?}"
        );
        assert_ne!(keyfile, system, "{backend:?}: one system per LUKS mode");
    }
    for tool in [
        "cryptsetup",
        "systemd-cryptenroll",
        "nixos-install",
        "sgdisk",
        "umount",
        "vgchange",
        "zpool",
        "systemctl",
        "disko",
    ] {
        assert!(iso.binaries.get(tool).is_some(), "binaries.{tool}");
    }

    // Teeth: a freeform key the agent does not know passes the module but not the agent.
    let mut config = agent_config(json!({}));
    config["services"]["kcore"]["agent"]["settings"]["heartbeatIntervalSecs"] = json!(5);
    let text = agent_text(&h.outputs(&config));
    let err = kcore_agent::config::AgentConfig::parse(&text, path)
        .expect_err("a misspelt key must be refused by kcore-agent");
    assert!(err.to_string().contains("heartbeatIntervalSecs"), "{err}");
}

fn controller_text(out: &serde_json::Value) -> String {
    out["controllerConfig"].as_str().unwrap().to_string()
}

#[test]
fn kcore_controller_accepts_the_rendered_controller_yaml() {
    let Some(h) = Harness::get("kcore_controller_accepts_the_rendered_controller_yaml") else {
        return;
    };
    let path = Path::new("/etc/kcore/controller.yaml");

    let text = controller_text(&h.outputs(&controller_config()));
    let parsed = kcore_controller::ControllerConfig::parse(&text, path)
        .unwrap_or_else(|e| panic!("kcore-controller refuses the rendered file: {e}\n{text}"));
    assert_eq!(parsed.controller_id, "ctl1");
    assert_eq!(parsed.cluster_name, "lab");
    assert_eq!(parsed.dc_id, "DC1");
    assert!(parsed.require_manual_approval);
    assert_eq!(parsed.peers, vec!["ctl2:9090".to_string()]);
    assert_eq!(parsed.listen.port(), 9090);
    assert_eq!(
        parsed.tls.sub_ca_key_file,
        Path::new("/var/lib/kcore-controller/pki/sub-ca.key")
    );

    // The example host's file too.
    let text = controller_text(&h.host_outputs("controller"));
    kcore_controller::ControllerConfig::parse(&text, path)
        .unwrap_or_else(|e| panic!("hosts/controller: {e}\n{text}"));

    // And the check has teeth: a freeform key the controller does not know passes the
    // module (RFC 42) but not the daemon.
    let mut config = controller_config();
    config["services"]["kcore"]["controller"]["settings"]["requireManualAproval"] = json!(true);
    let text = controller_text(&h.outputs(&config));
    let err = kcore_controller::ControllerConfig::parse(&text, path)
        .expect_err("a misspelt key must be refused by kcore-controller");
    assert!(err.to_string().contains("requireManualAproval"), "{err}");
}

/// An installed system (hosts/installed-*): its `--defaults` file under a node-agent.yaml of
/// the shape the installer writes (the install contract, step write-config), read by
/// kcore-agent's own layered loader (`AgentConfig::load_layered`, what `--defaults FILE
/// --config FILE` runs), is a configuration the agent accepts, with the node's values winning.
#[test]
fn kcore_agent_accepts_the_installed_defaults_under_the_installers_file() {
    let Some(h) =
        Harness::get("kcore_agent_accepts_the_installed_defaults_under_the_installers_file")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hosts = h.hosts(&json!({}));
    for backend in ["filesystem", "lvm", "zfs"] {
        let host = &hosts[&format!("installed-{backend}")];
        let defaults = dir
            .path()
            .join(format!("installed-{backend}-defaults.yaml"));
        std::fs::write(&defaults, host["agentDefaults"].as_str().unwrap()).unwrap();
        let installer = dir.path().join("node-agent.yaml");
        std::fs::write(
            &installer,
            format!(
                r#"nodeId: 3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b
dcId: DC2
hostname: hv1
mode: managed
controllers: ["10.0.0.5:9090", "10.0.0.6:9090"]
labels: {{}}
tls:
  caFile: /etc/kcore/tls/ca.crt
  certFile: /etc/kcore/tls/node.crt
  keyFile: /etc/kcore/tls/node.key
storage:
  backend: {backend}
  lvm: {{ vgName: vg_fast, lvPrefix: kcore- }}
  zfs: {{ poolName: tank0, datasetPrefix: kcore }}
disko: {{ managementModeFile: /etc/kcore/disko-management-mode }}
"#
            ),
        )
        .unwrap();
        let parsed = kcore_agent::config::AgentConfig::load_layered(Some(&defaults), &installer)
            .unwrap_or_else(|e| panic!("installed-{backend}: kcore-agent refuses {e}"));
        assert_eq!(parsed.node_id, "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b");
        assert_eq!(parsed.dc_id, "DC2");
        assert_eq!(parsed.storage.backend.as_str(), backend);
        assert!(parsed.tls.is_some());
        // The closure's store paths come through from the defaults.
        assert!(
            parsed.binaries.get("disko").is_some(),
            "installed-{backend}"
        );
        // The installer's list replaces the defaults' empty one; its names win.
        assert_eq!(parsed.controllers, ["10.0.0.5:9090", "10.0.0.6:9090"]);
        assert_eq!(parsed.storage.lvm.vg_name, "vg_fast", "the file wins");
        // Teeth: a key the agent does not know, in the defaults, is refused naming both
        // files (a module key the agent lacks fails here, not at a node's boot).
        let mut bad: serde_json::Value =
            serde_yaml_ng::from_str(host["agentDefaults"].as_str().unwrap()).unwrap();
        bad["heartbeatIntervalSecs"] = json!(5);
        std::fs::write(&defaults, serde_json::to_string(&bad).unwrap()).unwrap();
        let err = kcore_agent::config::AgentConfig::load_layered(Some(&defaults), &installer)
            .expect_err("an unknown key in --defaults must be refused")
            .to_string();
        assert!(
            err.contains("heartbeatIntervalSecs") && err.contains("over --defaults"),
            "{err}"
        );
    }
}

/// A controller.yaml of the shape `kctl node install --run-controller` writes (the install
/// contract) is accepted by kcore-controller, and every path in it is one the runtime-mode
/// unit of the installed systems can use: certificates and key in the directory the unit's
/// user owns and may write, the fetched sub-CA key and the database in its StateDirectory.
#[test]
fn the_installers_controller_yaml_fits_the_runtime_unit() {
    let Some(h) = Harness::get("the_installers_controller_yaml_fits_the_runtime_unit") else {
        return;
    };
    let text = r#"
controllerId: 3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b
clusterName: lab
dcId: DC1
listen: 0.0.0.0:9090
advertiseAddress: 10.0.0.6:9090
peers: ["10.0.0.5:9090"]
tls:
  caFile: /etc/kcore/controller/ca.crt
  certFile: /etc/kcore/controller/controller.crt
  keyFile: /etc/kcore/controller/controller.key
  subCaCertFile: /etc/kcore/controller/sub-ca.crt
  subCaKeyFile: /var/lib/kcore-controller/sub-ca.key
"#;
    let parsed =
        kcore_controller::ControllerConfig::parse(text, Path::new("/etc/kcore/controller.yaml"))
            .unwrap_or_else(|e| panic!("kcore-controller refuses the installer's file: {e}"));
    let host = h.host_outputs("installed-lvm");
    let unit = &host["units"]["kcore-controller"]["serviceConfig"];
    let writable = unit["ReadWritePaths"][0].as_str().unwrap();
    let state = format!("/var/lib/{}", unit["StateDirectory"].as_str().unwrap());
    for file in [
        &parsed.tls.ca_file,
        &parsed.tls.cert_file,
        &parsed.tls.key_file,
        &parsed.tls.sub_ca_cert_file,
    ] {
        assert_eq!(file.parent().unwrap(), Path::new(writable), "{file:?}");
    }
    assert_eq!(
        parsed.tls.sub_ca_key_file.parent().unwrap(),
        Path::new(&state)
    );
    assert!(
        parsed.database_path.starts_with(&state),
        "{:?}",
        parsed.database_path
    );
    assert_eq!(parsed.listen.port(), 9090);
}
