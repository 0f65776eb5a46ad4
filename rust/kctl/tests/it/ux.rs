//! kctl as people expect a kubectl-like tool to behave: shell completions, `version`
//! (client, and each controller's with a context), global flags under their own help
//! heading, `--kctl-config` (with `--kubeconfig` kept as a hidden alias).

use super::lab::{Lab, kctl, ok};
use super::support::text;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_scripts_for_bash_zsh_and_fish() {
    let home = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef kctl"),
        ("fish", "complete -c kctl"),
    ] {
        let script = ok(kctl(home.path(), &["completion", shell]).await);
        assert!(script.contains(marker), "{shell}: {script:.200}");
        // Generated from the real parser: subcommands and renamed flags are in it.
        assert!(
            script.contains("storage-class") || script.contains("describe"),
            "{shell}"
        );
        assert!(script.contains("kctl-config"), "{shell}");
    }
    let bad = kctl(home.path(), &["completion", "powershell"]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("bash, zsh or fish"), "{}", text(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_prints_the_client_and_with_a_context_each_controller() {
    let home = tempfile::tempdir().unwrap();
    let alone = ok(kctl(home.path(), &["version"]).await);
    assert_eq!(
        alone,
        format!("Client Version: {}\n", env!("CARGO_PKG_VERSION"))
    );

    let lab = Lab::start(false).await;
    let out = ok(kctl(lab.home(), &["version"]).await);
    assert!(
        out.contains(&format!(
            "Controller {}: {} (ctl1)",
            lab.addr,
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(kctl(lab.home(), &["version", "-o", "json"]).await)).unwrap();
    assert_eq!(json["client"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["controllers"][0]["server"], lab.addr.as_str());
    assert_eq!(
        json["controllers"][0]["version"]["component"],
        "kcore-controller"
    );
    assert_eq!(json["controllers"][0]["version"]["id"], "ctl1");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_groups_global_flags_and_kctl_config_replaces_kubeconfig() {
    let home = tempfile::tempdir().unwrap();
    let help = ok(kctl(home.path(), &["get", "--help"]).await);
    let (own, global) = help
        .split_once("Global options:")
        .unwrap_or_else(|| panic!("no Global options heading:\n{help}"));
    assert!(global.contains("--kctl-config"), "{help}");
    assert!(global.contains("--output"), "{help}");
    assert!(!own.contains("--kctl-config"), "{help}");
    assert!(
        !help.contains("--kubeconfig"),
        "the old name is hidden:\n{help}"
    );
    // Both names point kctl at a config file; the missing file is named.
    let missing = home.path().join("nowhere/config");
    for flag in ["--kctl-config", "--kubeconfig"] {
        let out = kctl(
            home.path(),
            &[flag, missing.to_str().unwrap(), "config", "current-context"],
        )
        .await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("nowhere/config"), "{}", text(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_sub_ca_and_node_approval_print_json_with_o_json() {
    let lab = Lab::start(true).await;
    let out = ok(kctl(lab.home(), &["-o", "json", "rotate", "sub-ca"]).await);
    let rotated: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rotated[0]["server"], lab.addr.as_str(), "{out}");
    assert_eq!(rotated[0]["installed"]["controllerId"], "ctl1", "{out}");
    assert!(
        rotated[0]["installed"]["certificate"]["serial"].is_string(),
        "{out}"
    );

    lab.join("node-a", "DC1", None).await;
    let out = ok(kctl(lab.home(), &["node", "approve", "node-a", "-o", "json"]).await);
    let node: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(node["nodeId"], "node-a", "{out}");
    assert_eq!(node["approval"], "Approved", "{out}");
    let out = ok(kctl(lab.home(), &["node", "reject", "node-a", "-o", "yaml"]).await);
    assert!(out.contains("approval: Rejected"), "{out}");
    lab.stop().await;
}

// Issue 15: every command that prints data prints JSON with -o json (and nothing else on
// stdout): each answer below must parse as one JSON document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_command_prints_json_with_o_json() {
    let lab = Lab::start(true).await;
    lab.join("node-a", "DC1", None).await;
    let manifest = lab.home().join("vm.yaml");
    std::fs::write(
        &manifest,
        "kind: VM\nmetadata: {name: web-1}\nspec: {storageBackend: lvm, storageSizeBytes: 1G}\n",
    )
    .unwrap();
    let manifest = manifest.to_str().unwrap();
    let commands: &[&[&str]] = &[
        &["version"],
        &["config", "get-contexts"],
        &["config", "current-context"],
        &["config", "use-context", "lab"],
        &["get", "nodes"],
        &["get", "node", "node-a"],
        &["describe", "node", "node-a"],
        &["get", "storage-class"],
        &["node", "approve", "node-a"],
        &["node", "cordon", "node-a"],
        &["node", "uncordon", "node-a"],
        &["node", "reject", "node-a"],
        &["apply", "-f", manifest],
        &["get", "vms"],
        &["get", "vm", "web-1"],
        &["describe", "vm", "web-1"],
        &["update", "cluster", "list"],
        &["delete", "vm", "web-1"],
        &["rotate", "sub-ca"],
    ];
    for args in commands {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let out = ok(kctl(lab.home(), &full).await);
        let value: Result<serde_json::Value, _> = serde_json::from_str(&out);
        assert!(value.is_ok(), "kctl {}: not JSON:\n{out}", args.join(" "));
    }
    // The `create` commands report what they made: identity, files and expiry.
    let path = |name: &str| lab.home().join(name).to_str().unwrap().to_string();
    let (key, csr, crt) = (path("n.key"), path("n.csr"), path("n.crt"));
    let creates: &[(&[&str], &str)] = &[
        (
            &[
                "create",
                "csr",
                "--node-id",
                "n-json",
                "--cluster",
                "lab",
                "--key-out",
                &key,
                "--csr-out",
                &csr,
                "--dns",
                "127.0.0.1",
            ],
            "kcore://lab/node/n-json",
        ),
        (
            &[
                "create",
                "node-cert",
                "--offline",
                "--node-id",
                "n-json",
                "--csr",
                &csr,
                "--out",
                &crt,
            ],
            "kcore://lab/node/n-json",
        ),
        (
            &[
                "create",
                "metrics-cert",
                "prom-json",
                "--offline",
                "--out",
                &path("m"),
            ],
            "kcore://lab/metrics/prom-json",
        ),
        (
            &[
                "create",
                "controller",
                "--address",
                "127.0.0.1:19999",
                "--out",
                &path("c"),
            ],
            "kcore://lab/controller/",
        ),
    ];
    for (args, identity) in creates {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let out = ok(kctl(lab.home(), &full).await);
        let value: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kctl {}: not JSON ({e}):\n{out}", args.join(" ")));
        assert!(
            value["identity"]
                .as_str()
                .unwrap_or("")
                .starts_with(identity),
            "kctl {}: {value:#}",
            args.join(" ")
        );
        let files = value["files"].as_object().expect("files");
        assert!(!files.is_empty(), "{value:#}");
        for file in files.values() {
            assert!(
                std::path::Path::new(file.as_str().unwrap()).exists(),
                "kctl {}: {file} does not exist",
                args.join(" ")
            );
        }
    }
    let current: serde_json::Value = serde_json::from_str(&ok(kctl(
        lab.home(),
        &["config", "current-context", "-o", "json"],
    )
    .await))
    .unwrap();
    assert_eq!(current["currentContext"], "lab");
    lab.stop().await;
}

/// On a terminal (a pseudo-terminal from util-linux's `script`), `-vv` log lines are
/// coloured; with `NO_COLOR` set they are plain, and so is clap's usage error. The first
/// half shows the check can see colour at all.
#[test]
fn no_color_turns_colour_off_on_a_terminal() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: util-linux `script` is not on PATH");
        return;
    }
    let kctl = env!("CARGO_BIN_EXE_kctl");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().to_string();
    drop(closed);
    let on_a_terminal = |no_color: bool, args: &str| {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &format!("{kctl} {args}"), "/dev/null"])
            .env("HOME", std::env::temp_dir())
            .env_remove("NO_COLOR");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let logs = format!("-vv node disks --node {dead} -k");
    let coloured = on_a_terminal(false, &logs);
    assert!(coloured.contains("DEBUG"), "{coloured}");
    assert!(
        coloured.contains("\x1b["),
        "colour on a terminal: {coloured:?}"
    );
    let plain = on_a_terminal(true, &logs);
    assert!(plain.contains("DEBUG"), "{plain}");
    assert!(!plain.contains("\x1b["), "NO_COLOR: {plain:?}");
    let usage = on_a_terminal(true, "node no-such-command");
    assert!(usage.contains("unrecognized subcommand"), "{usage}");
    assert!(!usage.contains("\x1b["), "NO_COLOR: {usage:?}");
}
