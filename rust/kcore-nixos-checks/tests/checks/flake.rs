//! The flake's `outputs` evaluated offline with stand-in inputs (tests/eval/flake-outputs.nix):
//! every output the design lists exists, hosts and VM tests are discovered from the tree, the
//! package reads the workspace, and the glue hands the modules this flake's kcore package and
//! the disko and nixpkgs store paths.

use serde_json::{Value, json};

use crate::support::{FAKE_STORE, Harness, repo_root};

fn names_in(dir: &str, want_dirs: bool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join(dir))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir() == want_dirs)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

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
        ["default", "installer-iso", "kcore"]
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
