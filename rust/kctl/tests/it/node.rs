//! `kctl --node HOST:PORT node ...` against an in-process agent with real TLS: install
//! mode with `-k` and `--fingerprint`, managed mode with the context made by `kctl create
//! cluster`, apply-disko's plan-then-apply flow (through the disko stand-in, planned
//! against a fixture snapshot) and apply-nix (through the systemd-run / nixos-rebuild
//! stand-ins, which do a real `nix build`), with their exit codes.

use super::support::{assert_no_control, text};
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use kcore_agent::config::AgentConfig;
use kcore_agent::{Agent, RuntimeOptions};
use kcore_api::inventory::{DiskInventory, NicInventory, OperationResult};
use kcore_disko::BlockSnapshot;
use serde_json::json;

fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/support")
        .join(name)
}

async fn kctl(home: &Path, args: &[&str]) -> Output {
    let home = home.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::cargo_bin("kctl")
            .unwrap()
            .env("HOME", &home)
            .env_remove("KCORE_CONFIG")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn expect(out: &Output, code: i32) -> String {
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Running {
    addr: String,
    fingerprint: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

async fn start(config: AgentConfig, options: RuntimeOptions) -> Running {
    let agent = Agent::new(config, options).unwrap();
    let fingerprint = agent.fingerprint().map(str::to_string);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        agent
            .serve(listener, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        fingerprint,
        stop: Some(tx),
        task: Some(task),
    }
}

fn config(doc: serde_json::Value) -> AgentConfig {
    AgentConfig::parse(&doc.to_string(), Path::new("node-agent.yaml")).unwrap()
}

/// A managed-mode agent whose certificate comes from the CA of a cluster made with
/// `kctl create cluster`, so kctl's context credentials are what authenticates.
struct Managed {
    home: tempfile::TempDir,
    node: tempfile::TempDir,
    agent: Running,
}

impl Managed {
    async fn start(options: RuntimeOptions) -> Managed {
        let home = tempfile::tempdir().unwrap();
        let out = kctl(
            home.path(),
            &[
                "create",
                "cluster",
                "--controller",
                "127.0.0.1:9",
                "--context",
                "lab",
            ],
        )
        .await;
        expect(&out, 0);
        let ctx = home.path().join(".kcore/lab");
        let root = kcore_pki::Authority::from_pem(
            &std::fs::read_to_string(ctx.join("ca.crt")).unwrap(),
            &std::fs::read_to_string(ctx.join("ca.key")).unwrap(),
        )
        .unwrap();
        let node = tempfile::tempdir().unwrap();
        let leaf = root
            .issue(
                &kcore_pki::Identity::new("lab", kcore_pki::Role::Node, "node-1").unwrap(),
                &["127.0.0.1".into()],
                std::time::Duration::from_secs(86400),
            )
            .unwrap();
        let p = |rel: &str| node.path().join(rel);
        std::fs::write(p("node.crt"), &leaf.cert_pem).unwrap();
        std::fs::write(p("node.key"), &leaf.key_pem).unwrap();
        std::fs::create_dir_all(p("flake")).unwrap();
        std::fs::copy(support("test-flake/flake.nix"), p("flake/flake.nix")).unwrap();
        let cfg = config(json!({
            "nodeId": "node-1",
            "mode": "managed",
            "tls": {"caFile": ctx.join("ca.crt"), "certFile": p("node.crt"), "keyFile": p("node.key")},
            "disko": {"managementModeFile": p("mode"), "stateDir": p("disko")},
            "nix": {"configPath": p("flake/kcore-node.nix")},
            "binaries": {
                "disko": support("disko"),
                "systemdRun": support("systemd-run"),
                "nixosRebuild": support("nixos-rebuild"),
            },
        }));
        let mut options = options;
        options.extra_env.extend([
            (
                "KCORE_TEST_DISKO_LOG".to_string(),
                p("disko.log").display().to_string(),
            ),
            (
                "KCORE_TEST_FLAKE".to_string(),
                p("flake").display().to_string(),
            ),
            (
                "KCORE_SYSTEM_PROFILE".to_string(),
                p("profiles/system").display().to_string(),
            ),
        ]);
        options.system_profile = p("profiles/system");
        options.rebuild_log_dir = p("logs");
        let agent = start(cfg, options).await;
        Managed { home, node, agent }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.node.path().join(rel)
    }

    async fn kctl(&self, args: &[&str]) -> Output {
        let mut full = vec!["--node", self.agent.addr.as_str()];
        full.extend_from_slice(args);
        kctl(self.home.path(), &full).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_inventory_from_an_install_mode_agent_with_k_and_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start(
        config(json!({"nodeId": "live", "mode": "install",
            "disko": {"managementModeFile": dir.path().join("mode"), "stateDir": dir.path().join("disko")}})),
        RuntimeOptions::default(),
    )
    .await;
    let home = dir.path();
    let addr = agent.addr.clone();
    let fp = agent.fingerprint.clone().unwrap();

    let table = expect(
        &kctl(home, &["--node", &addr, "-k", "node", "nics"]).await,
        0,
    );
    let header = table.lines().next().unwrap();
    for col in ["NAME", "STATE", "MAC", "SPEED", "ADDRESSES"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("lo ") && l.contains("127.0.0.1/8")),
        "{table}"
    );

    let json = expect(
        &kctl(
            home,
            &[
                "--node",
                &addr,
                "--fingerprint",
                &fp,
                "-o",
                "json",
                "node",
                "disks",
            ],
        )
        .await,
        0,
    );
    let disks: DiskInventory = serde_json::from_str(&json).unwrap();
    assert!(!disks.disks.is_empty());
    let yaml = expect(
        &kctl(
            home,
            &[
                "--node",
                &addr,
                "--fingerprint",
                &fp,
                "-o",
                "yaml",
                "node",
                "nics",
            ],
        )
        .await,
        0,
    );
    let nics: NicInventory = serde_yaml_ng::from_str(&yaml).unwrap();
    assert!(nics.nics.iter().any(|n| n.name == "lo"));

    // A wrong pin is a failure (3); contradictory flags and a missing --node are refusals (1).
    let wrong = "00".repeat(32);
    let out = kctl(
        home,
        &["--node", &addr, "--fingerprint", &wrong, "node", "nics"],
    )
    .await;
    expect(&out, 3);
    let out = kctl(
        home,
        &["--node", &addr, "-k", "--fingerprint", &fp, "node", "nics"],
    )
    .await;
    expect(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("exclude each other"));
    expect(&kctl(home, &["-k", "node", "nics"]).await, 1);
    // Day-2 routes do not exist on an install-mode agent.
    let layout = dir.path().join("layout.nix");
    std::fs::write(&layout, "{ }").unwrap();
    let out = kctl(
        home,
        &[
            "--node",
            &addr,
            "-k",
            "node",
            "apply-nix",
            "-f",
            layout.to_str().unwrap(),
        ],
    )
    .await;
    expect(&out, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NOT_FOUND"),
        "{}",
        text(&out)
    );
    agent.stop().await;
}

const DATA_DISK: &str = r#"{
  disko.devices.disk.data1 = {
    type = "disk";
    device = "/dev/sdb";
    content = {
      type = "gpt";
      partitions.data = {
        size = "100%";
        content = { type = "filesystem"; format = "ext4"; mountpoint = "/var/lib/kcore/volumes1"; };
      };
    };
  };
}
"#;

fn fixture_snapshot() -> BlockSnapshot {
    let lsblk = include_str!("../../../kcore-agent/tests/fixtures/lsblk.json");
    BlockSnapshot {
        lsblk: serde_json::from_str(lsblk).unwrap(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_disko_shows_the_plan_then_applies_its_hash_with_disko_stand_in() {
    let lab = Managed::start(RuntimeOptions {
        block_snapshot: Some(fixture_snapshot()),
        ..RuntimeOptions::default()
    })
    .await;
    let layout = lab.path("layout.nix");
    std::fs::write(&layout, DATA_DISK).unwrap();
    let f = layout.to_str().unwrap();

    // installer-only (no mode file): the plan is shown, the refusal exits 1.
    let out = lab.kctl(&["node", "apply-disko", "-f", f, "--apply"]).await;
    let stdout = expect(&out, 1);
    assert!(
        stdout.contains("data1") && stdout.contains("/dev/sdb"),
        "{}",
        text(&out)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("DISKO_INSTALLER_ONLY"));
    assert!(!lab.path("disko.log").exists(), "disko never ran");

    std::fs::write(lab.path("mode"), "controller-managed\n").unwrap();
    let out = lab.kctl(&["node", "apply-disko", "-f", f]).await;
    let stdout = expect(&out, 0);
    assert!(stdout.contains("new-disk (additive)"), "{stdout}");
    assert!(stdout.contains("apply allowed"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("dry run: nothing was changed"));
    assert!(!lab.path("disko.log").exists(), "a dry run runs nothing");

    let out = lab
        .kctl(&[
            "-o",
            "json",
            "node",
            "apply-disko",
            "-f",
            f,
            "--apply",
            "--timeout-seconds",
            "7200",
        ])
        .await;
    let stdout = expect(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(timeout 3600 s)"), "{stderr}");
    assert!(
        stderr.contains("formatted and mounted"),
        "disko's output is shown: {stderr}"
    );
    let result: OperationResult = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result.kind, "apply-disko");
    let ran = std::fs::read_to_string(lab.path("disko.log")).unwrap();
    assert!(ran.starts_with("args: --mode format,mount"), "{ran}");
    assert_eq!(
        std::fs::read_to_string(lab.path("disko/data1.nix")).unwrap(),
        DATA_DISK
    );

    // The result can be fetched again by id.
    let again = expect(
        &lab.kctl(&["-o", "json", "node", "operation", &result.operation_id])
            .await,
        0,
    );
    let fetched: OperationResult = serde_json::from_str(&again).unwrap();
    assert_eq!(fetched, result);
    lab.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_nix_writes_and_rebuilds_with_nixos_rebuild_stand_in() {
    let lab = Managed::start(RuntimeOptions::default()).await;
    let file = lab.path("config.nix");
    let f = file.to_str().unwrap();

    std::fs::write(&file, "{ ... }: { networking.hostName = ; }").unwrap();
    let out = lab.kctl(&["node", "apply-nix", "-f", f]).await;
    expect(&out, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NIX_INVALID"),
        "{}",
        text(&out)
    );
    // Issue 15: errors name the file the operator passed, not the agent's work copy.
    let named = lab.path("hv1-module.nix");
    for (body, what) in [
        ("{ ... }: { networking.hostName = ; }", "parse"),
        ("throw \"boom\"\n", "evaluate"),
    ] {
        std::fs::write(&named, body).unwrap();
        let out = lab
            .kctl(&["node", "apply-nix", "-f", named.to_str().unwrap()])
            .await;
        expect(&out, 1);
        let err = String::from_utf8_lossy(&out.stderr);
        // Named once, in front, and never as the agent's work copy (`config.nix`).
        let name = named.display().to_string();
        assert!(
            err.contains(&format!("{name}: the configuration does not {what}")),
            "{err}"
        );
        assert_eq!(err.matches(name.as_str()).count(), 1, "{err}");
        assert!(
            !err.contains("config.nix") && !err.contains("kcore-nix-"),
            "{err}"
        );
    }
    // The parse report keeps each problem's line and column.
    std::fs::write(&named, "{ ... }: { networking.hostName = ; }").unwrap();
    let out = lab
        .kctl(&["node", "apply-nix", "-f", named.to_str().unwrap()])
        .await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\n  1:34: found TOKEN_SEMICOLON"),
        "{}",
        text(&out)
    );

    let module = "{ ... }: { networking.hostName = \"hv1\"; }\n";
    std::fs::write(&file, module).unwrap();
    let out = lab
        .kctl(&["node", "apply-nix", "-f", f, "--no-rebuild"])
        .await;
    let table = expect(&out, 0);
    assert!(table.contains("succeeded"), "{table}");
    assert_eq!(
        std::fs::read_to_string(lab.path("flake/kcore-node.nix")).unwrap(),
        module
    );
    assert!(!lab.path("profiles/system").exists(), "no rebuild ran");

    let out = lab
        .kctl(&["-o", "json", "node", "apply-nix", "-f", f])
        .await;
    let stdout = expect(&out, 0);
    let result: OperationResult = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result.generation.as_deref(), Some("1"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("==> nixos-rebuild switch"), "{stderr}");
    // Issue 15: in a pipe the progress is plain lines, no spinner redraws or escapes.
    assert!(
        !stderr.contains('\r') && !stderr.contains('\u{1b}'),
        "{stderr:?}"
    );

    // A build that fails is a failure: exit 3.
    std::fs::write(&file, "{ ... }: { } # KCORE_TEST_FAIL_BUILD\n").unwrap();
    let out = lab.kctl(&["node", "apply-nix", "-f", f]).await;
    expect(&out, 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("COMMAND_FAILED"),
        "{}",
        text(&out)
    );
    lab.agent.stop().await;
}

// D14: a wrong pin says "fingerprint mismatch: expected …, got …", without debug
// wrapping; both forms of the right pin work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fingerprint_mismatch_names_both_fingerprints_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let agent = install_agent(dir.path()).await;
    let home = dir.path();
    let addr = agent.addr.clone();
    let fp = agent.fingerprint.clone().unwrap();
    // The agent logs 64 lowercase hex digits; the colon form of docs/pki.md works too.
    assert_eq!(fp.len(), 64);
    assert!(
        fp.chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    );
    let colons = kcore_pki::display_fingerprint(&fp).unwrap();
    for pin in [&fp, &colons] {
        expect(
            &kctl(
                home,
                &["--node", &addr, "--fingerprint", pin, "node", "nics"],
            )
            .await,
            0,
        );
    }

    let wrong = "00".repeat(32);
    let out = kctl(
        home,
        &["--node", &addr, "--fingerprint", &wrong, "node", "nics"],
    )
    .await;
    expect(&out, 3);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("fingerprint mismatch: expected {wrong}, got {fp}")),
        "{err}"
    );
    assert!(!err.contains("Other("), "{err}");
    agent.stop().await;
}

/// An install-mode agent (self-signed certificate), for kctl to reach with `home`.
async fn install_agent(dir: &Path) -> Running {
    start(
        config(json!({"nodeId": "live", "mode": "install",
            "disko": {"managementModeFile": dir.join("mode"), "stateDir": dir.join("disko")}})),
        RuntimeOptions::default(),
    )
    .await
}

// D14: context mTLS against an install-mode agent: the hint names -k and --fingerprint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_mode_agent_reached_with_the_context_gets_the_k_and_fingerprint_hint() {
    let dir = tempfile::tempdir().unwrap();
    let agent = install_agent(dir.path()).await;
    let home = dir.path();
    let addr = agent.addr.clone();
    expect(
        &kctl(
            home,
            &[
                "create",
                "cluster",
                "--controller",
                "127.0.0.1:9",
                "--context",
                "lab",
            ],
        )
        .await,
        0,
    );
    let out = kctl(home, &["--node", &addr, "node", "nics"]).await;
    expect(&out, 3);
    let err = String::from_utf8_lossy(&out.stderr);
    let ca = home.join(".kcore/lab/ca.crt");
    assert!(
        err.contains("install mode")
            && err.contains(
                "the agent presents a self-signed certificate: pass --fingerprint from its console"
            )
            && err.contains("or -k")
            && err.contains(&ca.display().to_string()),
        "{err}"
    );
    // One server, one line: not "no server answered" (it answered, over TLS).
    assert!(!err.contains("no server answered"), "{err}");
    agent.stop().await;
}

// D14: -k against a managed-mode agent: it asks for a client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_against_a_managed_agent_says_to_drop_k() {
    let lab = Managed::start(RuntimeOptions::default()).await;
    let out = lab.kctl(&["-k", "node", "nics"]).await;
    expect(&out, 3);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("this agent requires a client certificate: use a context")
            && err.contains("managed mode")
            && err.contains("without -k"),
        "{err}"
    );
    lab.agent.stop().await;
}

// Issue 15: a managed agent that is not the node --node-id names: both identities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_agent_with_another_identity_names_what_was_expected_and_got() {
    let lab = Managed::start(RuntimeOptions::default()).await;
    let ok = lab.kctl(&["--node-id", "node-1", "node", "nics"]).await;
    expect(&ok, 0);
    let out = lab.kctl(&["--node-id", "node-2", "node", "nics"]).await;
    expect(&out, 3);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kcore://lab/node/node-1") && err.contains("kcore://lab/node/node-2"),
        "{err}"
    );
    assert!(err.contains("hint: ") && err.contains("--node"), "{err}");
    assert!(!err.contains("Other("), "{err}");
    lab.agent.stop().await;
}

// D9: what an agent reports (inventory) and its error messages are printed escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_inventory_and_agent_errors_are_printed_escaped() {
    let mut snapshot = fixture_snapshot();
    let disk = &mut snapshot.lsblk.blockdevices[0];
    disk.model = Some("QEMU\u{1b}]0;pwned\u{7}".into());
    disk.serial = Some("QM\u{1b}[2J\u{9b}1m".into());
    let lab = Managed::start(RuntimeOptions {
        block_snapshot: Some(snapshot),
        ..RuntimeOptions::default()
    })
    .await;
    for args in [
        &["node", "disks", "-o", "wide"][..],
        &["node", "disks", "-o", "json"],
        &["node", "disks", "-o", "yaml"],
    ] {
        let out = lab.kctl(args).await;
        expect(&out, 0);
        assert_no_control(&format!("kctl {args:?}"), &out.stdout);
    }
    let wide = expect(&lab.kctl(&["node", "disks", "-o", "wide"]).await, 0);
    assert!(wide.contains("QEMU\\u{1b}]0;pwned\\u{7}"), "{wide}");
    let json_out = expect(&lab.kctl(&["node", "disks", "-o", "json"]).await, 0);
    let inv: DiskInventory = serde_json::from_str(&json_out).unwrap();
    assert_eq!(
        inv.disks[0].model.as_deref(),
        Some("QEMU\u{1b}]0;pwned\u{7}")
    );

    // A refusal whose message quotes the node's tools (Nix's `throw`) keeps it escaped.
    let file = lab.path("config.nix");
    // (Nix drops ESC sequences from its messages itself, not C1 controls or DEL.)
    std::fs::write(&file, "throw \"x\u{9b}31my\u{7f}z\"\n").unwrap();
    let out = lab
        .kctl(&["node", "apply-nix", "-f", file.to_str().unwrap()])
        .await;
    expect(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NIX_INVALID"), "{}", text(&out));
    assert_no_control("kctl node apply-nix (stderr)", &out.stderr);
    // It was quoted (so the check above could fail), escaped.
    assert!(err.contains("x\\u{9b}31my\\u{7f}z"), "{err}");
    lab.agent.stop().await;
}

/// An install-mode agent whose sysfs is `sysfs` (with or without class/tpm/tpm0).
async fn install_agent_with_sysfs(dir: &Path, sysfs: &Path) -> Running {
    start(
        config(json!({"nodeId": "live", "mode": "install",
            "disko": {"managementModeFile": dir.join("mode"), "stateDir": dir.join("disko")}})),
        RuntimeOptions {
            sysfs_root: sysfs.to_path_buf(),
            ..RuntimeOptions::default()
        },
    )
    .await
}

// Issue 15: LUKS mode auto (the default) asks the node's inventory: tpm2 where
// /sys/class/tpm/tpm0 exists, keyfile (with the default key file) where it does not;
// without --node it refuses and says what to pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn luks_mode_auto_is_tpm2_on_a_node_with_a_tpm_and_keyfile_without() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    for (has_tpm, want) in [
        (true, "crypttabExtraOpts = [ \"tpm2-device=auto\" ]"),
        (false, "/etc/kcore/luks/root.key"),
    ] {
        let sysfs = tempfile::tempdir().unwrap();
        if has_tpm {
            std::fs::create_dir_all(sysfs.path().join("class/tpm/tpm0")).unwrap();
        }
        let agent = install_agent_with_sysfs(dir.path(), sysfs.path()).await;
        let disks = expect(
            &kctl(
                home,
                &["--node", &agent.addr, "-k", "-o", "json", "node", "disks"],
            )
            .await,
            0,
        );
        let disks: serde_json::Value = serde_json::from_str(&disks).unwrap();
        assert_eq!(disks["tpm"], has_tpm, "{disks}");
        let out = kctl(
            home,
            &[
                "--node",
                &agent.addr,
                "-k",
                "disko",
                "render",
                "--os-disk",
                "/dev/sda",
            ],
        )
        .await;
        let fragment = expect(&out, 0);
        assert!(fragment.contains(want), "tpm {has_tpm}: {fragment}");
        let mode = if has_tpm { "tpm2" } else { "keyfile" };
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("so {mode}")),
            "{}",
            text(&out)
        );
        // An explicit mode stands whatever the node has.
        let other = if has_tpm { "keyfile" } else { "tpm2" };
        let out = kctl(
            home,
            &[
                "disko",
                "render",
                "--os-disk",
                "/dev/sda",
                "--luks-mode",
                other,
                "--node",
                &agent.addr,
                "-k",
            ],
        )
        .await;
        assert!(
            !expect(&out, 0).contains(want),
            "--luks-mode {other} on a node with tpm {has_tpm}"
        );
        agent.stop().await;
    }
    let out = kctl(home, &["disko", "render", "--os-disk", "/dev/sda"]).await;
    expect(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("luks mode auto") && err.contains("--node") && err.contains("tpm2|keyfile"),
        "{err}"
    );
}
