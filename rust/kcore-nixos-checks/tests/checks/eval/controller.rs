//! The controller: its rendered file, its hardened unit, the firewall.

use super::*;

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
