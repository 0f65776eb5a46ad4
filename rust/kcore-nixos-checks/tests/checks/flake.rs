//! The flake's `outputs` evaluated offline with stand-in inputs (tests/eval/flake-outputs.nix):
//! every output the design lists exists, hosts and VM tests are discovered from the tree, the
//! package reads the workspace, the glue hands the modules this flake's kcore package and
//! the disko and nixpkgs store paths, and every `nixosModules.*` evaluates alone and in every
//! combination with the others.

use serde_json::{Value, json};

use crate::support::{FAKE_STORE, Harness, names_in};

fn sorted(v: &Value) -> Vec<String> {
    let mut names: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn flake_outputs_are_complete_and_wired() {
    let Some(h) = Harness::get("flake_outputs_are_complete_and_wired") else {
        return;
    };
    let out = h.flake_outputs(&json!({
        "services": { "kcore": { "agent": {
            "enable": true, "settings": { "nodeId": "iso", "mode": "install" }
        }}}
    }));

    assert_eq!(
        sorted(&out["nixosModules"]),
        [
            "agent",
            "controller",
            "default",
            "diskEncryption",
            "storage"
        ]
    );
    let hosts = names_in("hosts", true);
    assert!(hosts.contains(&"installer".to_string()), "{hosts:?}");
    assert_eq!(sorted(&out["nixosConfigurations"]), hosts);
    assert_eq!(
        sorted(&out["packages"]["x86_64-linux"]),
        ["default", "installer-iso", "kcore", "provision-disk-image"]
    );
    // hosts/installer is x86_64: no ISO under another system's packages.
    assert_eq!(
        sorted(&out["packages"]["aarch64-linux"]),
        ["default", "kcore", "provision-disk-image"]
    );
    assert_eq!(out["overlay"], json!(["kcore"]));

    // Checks: the package, formatting, every host and every VM test (lib.nix is a helper).
    let mut want: Vec<String> = vec!["formatting".into(), "kcore".into()];
    want.extend(hosts.iter().map(|h| format!("host-{h}")));
    want.extend(
        names_in("tests/vm", false)
            .iter()
            .filter(|f| f.ends_with(".nix") && f.as_str() != "lib.nix")
            .map(|f| format!("vm-{}", f.trim_end_matches(".nix"))),
    );
    want.sort();
    // The key-file prebuilt systems are hosts too, so each is a check of its own.
    for b in ["filesystem", "lvm", "zfs"] {
        assert!(
            want.contains(&format!("host-installed-{b}-keyfile")),
            "{want:?}"
        );
    }
    assert_eq!(sorted(&out["checks"]["x86_64-linux"]), want);
    assert_eq!(
        sorted(&out["checks"]["aarch64-linux"]),
        ["formatting", "kcore"]
    );

    // The package: the workspace's version, its Cargo.lock, kctl as main program.
    let pkg = &out["package"];
    assert_eq!(pkg["pname"], json!("kcore"));
    assert_eq!(pkg["version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(pkg["mainProgram"], json!("kctl"));
    let lock = pkg["lockFile"].as_str().unwrap();
    assert!(
        lock.ends_with("/rust/Cargo.lock") && std::path::Path::new(lock).is_file(),
        "{lock}"
    );

    // The glue: this flake's kcore, disko's source and nixpkgs' lib reach the agent.
    let paths = &out["paths"];
    let agent: Value = serde_json::from_str(out["agentConfig"].as_str().unwrap()).unwrap();
    assert_eq!(agent["disko"]["diskoSource"], paths["disko"]);
    assert_eq!(
        agent["disko"]["nixpkgsLib"],
        json!(format!("{}/lib", paths["nixpkgs"].as_str().unwrap()))
    );
    assert_eq!(
        agent["binaries"]["disko"],
        json!(format!("{FAKE_STORE}disko/bin/disko"))
    );
    assert_eq!(
        out["agentExecStart"],
        json!(format!(
            "{}/bin/kcore-agent --config /etc/kcore/node-agent.yaml",
            paths["kcore"].as_str().unwrap()
        ))
    );
    // Install mode without TLS: no empty `tls` section for the agent to choke on.
    assert!(agent.get("tls").is_none(), "{agent}");
    assert_eq!(agent["mode"], json!("install"));
}

/// Every non-empty combination of `nixosModules` (each alone, all together, any mix) evaluates
/// with nixpkgs' module system, each present service turned on; the glue defines each package
/// once however many kcore modules are imported.
#[test]
fn every_module_alone_and_in_every_combination_evaluates() {
    let Some(h) = Harness::get("every_module_alone_and_in_every_combination_evaluates") else {
        return;
    };
    let combos = match h.flake("modules", &json!({}), "") {
        Ok(Value::Array(c)) => c,
        other => panic!("module combinations: {other:?}"),
    };
    assert_eq!(combos.len(), 31, "2^5 - 1 combinations of five modules");
    let version = env!("CARGO_PKG_VERSION");
    let mut broken = Vec::new();
    for combo in &combos {
        let names: Vec<&str> = combo["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        if combo["success"] != json!(true) {
            // Evaluate it again without tryEval to report its error.
            let err = h
                .flake("modules", &json!({}), &names.join(","))
                .unwrap_err();
            broken.push(format!("{names:?}:\n{err}"));
            continue;
        }
        let v = &combo["value"];
        assert_eq!(v["failed"], json!([]), "{names:?}");
        let has = |m: &str| names.contains(&m) || names.contains(&"default");
        let want_pkg = |on: bool| {
            if on {
                json!(format!("kcore-{version}"))
            } else {
                Value::Null
            }
        };
        assert_eq!(v["agentPackage"], want_pkg(has("agent")), "{names:?}");
        assert_eq!(
            v["controllerPackage"],
            want_pkg(has("controller")),
            "{names:?}"
        );
        // The TPM2 is enrolled at install: no first-boot unit in any combination; the
        // recovery key's directory rule comes with the module.
        assert!(v["units"].get("kcore-tpm2-enroll").is_none(), "{names:?}");
        assert_eq!(
            v["tmpfiles"]
                .as_array()
                .unwrap()
                .contains(&json!("d /etc/kcore/recovery 0700 root root -")),
            has("diskEncryption"),
            "{names:?}"
        );
        let storage = has("storage") || has("agent");
        let rules = v["tmpfiles"].as_array().unwrap();
        assert_eq!(
            rules
                .iter()
                .any(|r| r.as_str().unwrap().contains("disko-management-mode")),
            storage,
            "{names:?}: {rules:?}"
        );
    }
    assert!(
        broken.is_empty(),
        "combinations that do not evaluate:\n{}",
        broken.join("\n")
    );
}
