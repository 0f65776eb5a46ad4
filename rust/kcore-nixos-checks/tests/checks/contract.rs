//! The files the modules render are accepted by the daemons' own configuration parsers
//! (serde with `deny_unknown_fields` and their validation), so a key the module writes that
//! a daemon does not know fails here, not at a node's boot.

use std::path::Path;

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
