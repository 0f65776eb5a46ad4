//! `kctl node install` as the real binary against a REAL install-mode agent (in-process,
//! self-signed TLS on 127.0.0.1) and a REAL controller of a cluster made by `kctl create
//! cluster` ([`Lab`]): the node target's errors (no --node, unreachable, wrong
//! --fingerprint, context trust), `-k` printing the fingerprint it accepted; then the
//! whole flow ([`Bed`]): dry run, the confirmation rule without a terminal, refusals,
//! install with step timings, recovery key, reboot, `--run-controller`, a failed step.
//! Only the programs that cannot run here are stand-ins (tests/support/install/, each
//! says so at its top); the disks are a block snapshot fixture.

use std::path::Path;

use kcore_agent::config::AgentConfig;
use kcore_agent::{Agent, RuntimeOptions};
use serde_json::json;

use super::lab::{Lab, kctl};
use super::support::text;

/// A running install-mode agent.
struct Live {
    addr: String,
    fingerprint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Live {
    async fn start(dir: &Path) -> Live {
        let doc = json!({"nodeId": "live", "mode": "install",
            "disko": {"managementModeFile": dir.join("mode"), "stateDir": dir.join("disko")}});
        Live::start_with(doc, RuntimeOptions::default()).await
    }

    async fn start_with(doc: serde_json::Value, options: RuntimeOptions) -> Live {
        let config = AgentConfig::parse(&doc.to_string(), Path::new("node-agent.yaml")).unwrap();
        let agent = Agent::new(config, options).unwrap();
        let fingerprint = agent.fingerprint().unwrap().to_string();
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
        Live {
            addr,
            fingerprint,
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_target_errors_name_the_flag_to_fix() {
    let lab = Lab::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let live = Live::start(dir.path()).await;

    // No --node.
    let out = kctl(
        lab.home(),
        &["node", "install", "--os-disk", "/dev/sda", "--yes"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("--node HOST:9091"), "{}", text(&out));

    // The context's mTLS cannot reach an install-mode agent: -k or --fingerprint.
    let out = kctl(
        lab.home(),
        &[
            "node",
            "install",
            "--node",
            &live.addr,
            "--os-disk",
            "/dev/sda",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("--fingerprint SHA256"),
        "{}",
        text(&out)
    );

    // Nothing listens there: the error names --node, with -k and with --fingerprint.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    for trust in [vec!["-k"], vec!["--fingerprint", live.fingerprint.as_str()]] {
        let mut args = vec!["node", "install", "--node", closed.as_str()];
        args.extend(trust.iter().copied());
        args.extend(["--os-disk", "/dev/sda", "--yes"]);
        let out = kctl(lab.home(), &args).await;
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("cannot reach the node agent at --node {closed}")),
            "{trust:?}: {err}"
        );
    }

    // A wrong pin: the error names --fingerprint and shows the fingerprint seen.
    let wrong = "ab".repeat(32);
    let out = kctl(
        lab.home(),
        &[
            "node",
            "install",
            "--node",
            &live.addr,
            "--fingerprint",
            &wrong,
            "--os-disk",
            "/dev/sda",
            "--yes",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("--fingerprint"), "{err}");
    assert!(
        err.contains(&format!("expected {wrong}, got {}", live.fingerprint)),
        "{err}"
    );
    live.stop().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_prints_the_fingerprint_it_accepted() {
    let lab = Lab::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let live = Live::start(dir.path()).await;
    let out = kctl(
        lab.home(),
        &[
            "node",
            "install",
            "--node",
            &live.addr,
            "-k",
            "--os-disk",
            "/dev/sda",
            "--dry-run",
        ],
    )
    .await;
    let err = stderr(&out);
    assert!(
        err.contains(&format!("fingerprint {}", live.fingerprint)),
        "{}",
        text(&out)
    );
    assert!(
        err.contains(&format!("--fingerprint {}", live.fingerprint)),
        "{err}"
    );
    live.stop().await;
    lab.stop().await;
}

// ---- the whole flow, through H1's stand-ins for the programs that cannot run here
// (tests/support/install/: disko, nixos-install, cryptsetup, systemd-cryptenroll, umount,
// sgdisk, vgchange, zpool, systemctl; each says so at its top). Disks are a block snapshot
// fixture: this machine has no spare disk (the storage bed has real ones).

/// The node's disks: the live system on sda, blank sdb and sde, sdc with an old ext4,
/// sdd mounted at /srv.
fn snapshot() -> kcore_disko::BlockSnapshot {
    let disk = |name: &str, serial: &str| {
        json!({"name": name, "kname": name, "path": format!("/dev/{name}"), "type": "disk",
               "size": 10u64 << 30, "serial": serial, "model": "QEMU HARDDISK"})
    };
    let part = |name: &str, extra: serde_json::Value| {
        let mut p = json!({"name": name, "kname": name, "path": format!("/dev/{name}"),
                           "type": "part", "size": 9u64 << 30});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    let mut sda = disk("sda", "OS1");
    sda["pttype"] = json!("gpt");
    sda["children"] = json!([part(
        "sda1",
        json!({"fstype": "ext4", "mountpoints": ["/"]})
    )]);
    let sdb = disk("sdb", "BLANK1");
    let sde = disk("sde", "BLANK2");
    let mut sdc = disk("sdc", "OLD1");
    sdc["pttype"] = json!("gpt");
    sdc["children"] = json!([part("sdc1", json!({"fstype": "ext4"}))]);
    let mut sdd = disk("sdd", "MNT1");
    sdd["children"] = json!([part(
        "sdd1",
        json!({"fstype": "xfs", "mountpoints": ["/srv"]})
    )]);
    let mut links = serde_json::Map::new();
    for (name, serial) in [
        ("sda", "OS1"),
        ("sdb", "BLANK1"),
        ("sdc", "OLD1"),
        ("sdd", "MNT1"),
        ("sde", "BLANK2"),
    ] {
        links.insert(by_id(serial), json!(format!("/dev/{name}")));
    }
    serde_json::from_value(json!({
        "lsblk": {"blockdevices": [sda, sdb, sdc, sdd, sde]},
        "links": links,
    }))
    .unwrap()
}

fn by_id(serial: &str) -> String {
    format!("/dev/disk/by-id/ata-QEMU_HARDDISK_{serial}")
}

fn install_support(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/support/install")
        .join(name)
}

/// A cluster (controller + context) and a live node: an install-mode agent over
/// [`snapshot`] with a TPM, the install stand-ins recording into `<node>/install.log`.
struct Bed {
    lab: Lab,
    node: tempfile::TempDir,
    _sysfs: tempfile::TempDir,
    live: Live,
}

impl Bed {
    async fn start() -> Bed {
        let lab = Lab::start(false).await;
        let node = tempfile::tempdir().unwrap();
        let sysfs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(sysfs.path().join("class/tpm/tpm0")).unwrap();
        let p = |rel: &str| node.path().join(rel);
        std::fs::create_dir_all(p("fail")).unwrap();
        std::fs::create_dir_all(p("dev/dev/disk/by-id")).unwrap();
        let s = |name: &str| install_support(name);
        let doc = json!({"nodeId": "live", "mode": "install",
        "disko": {"managementModeFile": p("mode"), "stateDir": p("disko")},
        "install": {
            "root": p("root"),
            "stateDir": p("install-state"),
            "systems": {
                "filesystem": "/nix/store/00000000000000000000000000000000-kcore-node-filesystem",
                "lvm": "/nix/store/00000000000000000000000000000000-kcore-node-lvm",
                "zfs": "/nix/store/00000000000000000000000000000000-kcore-node-zfs",
            },
        },
        "binaries": {
            "disko": s("disko"), "nixos-install": s("nixos-install"),
            "cryptsetup": s("cryptsetup"), "systemd-cryptenroll": s("systemd-cryptenroll"),
            "umount": s("umount"), "sgdisk": s("sgdisk"), "vgchange": s("vgchange"),
            "zpool": s("zpool"), "systemctl": s("systemctl"),
        }});
        let options = RuntimeOptions {
            block_snapshot: Some(snapshot()),
            sysfs_root: sysfs.path().to_path_buf(),
            dev_root: p("dev"),
            rebuild_log_dir: p("logs"),
            extra_env: vec![
                (
                    "KCORE_TEST_INSTALL_LOG".into(),
                    p("install.log").display().to_string(),
                ),
                (
                    "KCORE_TEST_INSTALL_FAIL_DIR".into(),
                    p("fail").display().to_string(),
                ),
            ],
            ..RuntimeOptions::default()
        };
        let live = Live::start_with(doc, options).await;
        Bed {
            lab,
            node,
            _sysfs: sysfs,
            live,
        }
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.node.path().join(rel)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("install.log")).unwrap_or_default()
    }

    /// The programs that ran other than the plan's read-only queries (`zpool status`):
    /// empty means nothing was written.
    fn writers(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| !l.starts_with("zpool status"))
            .map(str::to_string)
            .collect()
    }

    /// `kctl node install --node <live> --fingerprint <its> --node-id ID ARGS`.
    async fn install(&self, args: &[&str]) -> std::process::Output {
        let mut full = vec![
            "node",
            "install",
            "--node",
            self.live.addr.as_str(),
            "--fingerprint",
            self.live.fingerprint.as_str(),
            "--node-id",
            NODE_ID,
        ];
        full.extend_from_slice(args);
        kctl(self.lab.home(), &full).await
    }

    async fn stop(self) {
        self.live.stop().await;
        self.lab.stop().await;
    }
}

const NODE_ID: &str = "3f2a9c1e-7b4d-4e8a-9f00-123456789abc";

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_plan_and_writes_nothing_and_no_terminal_needs_yes() {
    let bed = Bed::start().await;
    let args = [
        "--os-disk",
        "/dev/sdb",
        "--data-disk",
        "/dev/sdc",
        "--storage-backend",
        "lvm",
    ];
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let out = bed.install(&dry).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Resolved by id, with the wipe's content and the layout.
    assert!(
        stdout.contains(&format!("/dev/sdb -> {}", by_id("BLANK1"))),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("/dev/sdc -> {}", by_id("OLD1"))),
        "{stdout}"
    );
    assert!(stdout.contains("now holds: "), "{stdout}");
    assert!(stdout.contains("kcore-3f2a9c1e"), "{stdout}");
    assert!(stdout.contains("layout:"), "{stdout}");
    assert!(
        stdout.contains(&format!("\"{}\"", by_id("BLANK1"))),
        "{stdout}"
    );
    assert!(
        stderr(&out).contains("dry run: nothing was written"),
        "{}",
        text(&out)
    );
    // The same with -k: the fingerprint kctl accepted is printed, then pinned.
    let mut k = vec!["node", "install", "--node", bed.live.addr.as_str(), "-k"];
    k.extend_from_slice(&dry);
    let out = kctl(bed.lab.home(), &k).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr(&out).contains(&format!("fingerprint {}", bed.live.fingerprint)),
        "{}",
        text(&out)
    );
    // Non-interactive without --yes: refused, naming --yes.
    let out = bed.install(&args).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("pass --yes"), "{}", text(&out));
    // Neither wrote anything: no program ran, no root, no recovery key.
    assert_eq!(bed.writers(), Vec::<String>::new(), "programs ran");
    assert!(!bed.path("root/etc").exists());
    assert!(!bed.lab.ctx_dir.join("recovery").exists());
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_disk_exits_1_with_its_code_and_nothing_runs() {
    let bed = Bed::start().await;
    for (args, code) in [
        (vec!["--os-disk", "/dev/sda", "--yes"], "TARGET_IS_OS_DISK"),
        (
            vec!["--os-disk", "/dev/sdb", "--data-disk", "/dev/sdd", "--yes"],
            "TARGET_MOUNTED",
        ),
        // Key-file mode needs a key device: the key never goes on the unencrypted ESP.
        (
            vec!["--os-disk", "/dev/sdb", "--luks", "keyfile", "--yes"],
            "INSTALL_REFUSED",
        ),
    ] {
        let out = bed.install(&args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(stdout_or_err(&out).contains("REFUSED"), "{}", text(&out));
        assert!(stderr(&out).contains(code), "{args:?}: {}", text(&out));
    }
    assert_eq!(bed.writers(), Vec::<String>::new(), "programs ran");
    bed.stop().await;
}

fn stdout_or_err(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yes_installs_streams_steps_stores_the_recovery_key_and_reboots() {
    let bed = Bed::start().await;
    let out = bed
        .install(&[
            "--os-disk",
            "/dev/sdb",
            "--data-disk",
            "/dev/sdc",
            "--storage-backend",
            "lvm",
            "--dc-id",
            "DC2",
            "--yes",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = stderr(&out);
    // Each step as it starts, the time of the one before, the agent's own timings.
    for step in ["format", "install", "enrol", "write-config", "done"] {
        assert!(err.contains(&format!("==> {step}")), "{step}: {err}");
    }
    assert!(err.contains("    format took "), "{err}");
    assert!(err.contains("  write-config "), "{err}");
    // The recovery key: with the context, 0600 in a 0700 directory, path printed.
    let key = bed
        .lab
        .ctx_dir
        .join(format!("recovery/{NODE_ID}.luks-recovery-key.txt"));
    assert!(err.contains(&key.display().to_string()), "{err}");
    assert_eq!(mode_of(&key), 0o600);
    assert_eq!(mode_of(key.parent().unwrap()), 0o700);
    let stored = std::fs::read_to_string(&key).unwrap();
    let on_node =
        std::fs::read_to_string(bed.path("root/etc/kcore/recovery/luks-recovery-key.txt")).unwrap();
    assert_eq!(stored.trim(), on_node.trim());
    assert_eq!(stored.trim().len(), 71, "{stored}");
    // The node's config names what the flags said; its certificate is the cluster's.
    let yaml = std::fs::read_to_string(bed.path("root/etc/kcore/node-agent.yaml")).unwrap();
    assert!(yaml.contains(NODE_ID) && yaml.contains("DC2"), "{yaml}");
    assert!(
        yaml.contains(&bed.lab.addr),
        "joins the context's controller: {yaml}"
    );
    let chain = std::fs::read_to_string(bed.path("root/etc/kcore/tls/node.crt")).unwrap();
    let leaf = &kcore_pki::certs_from_pem(&chain).unwrap()[0];
    assert_eq!(
        kcore_pki::identity_of(leaf).unwrap().uri(),
        format!("kcore://lab/node/{NODE_ID}")
    );
    assert_eq!(
        std::fs::read_to_string(bed.path("root/etc/kcore/tls/ca.crt")).unwrap(),
        std::fs::read_to_string(bed.lab.ctx_dir.join("ca.crt")).unwrap()
    );
    assert!(
        err.contains(&format!(
            "node {NODE_ID} rebooting; it registers with {}",
            bed.lab.addr
        )),
        "{err}"
    );
    // The reboot runs a moment after the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !bed.log().contains("systemctl reboot") {
        assert!(
            std::time::Instant::now() < deadline,
            "no reboot: {}",
            bed.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_controller_has_the_controller_csr_signed_by_the_new_route() {
    let bed = Bed::start().await;
    let out = bed
        .install(&[
            "--os-disk",
            "/dev/sdb",
            "--run-controller",
            "--advertise-address",
            "127.0.0.1:9190",
            "--yes",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let chain =
        std::fs::read_to_string(bed.path("root/etc/kcore/controller/controller.crt")).unwrap();
    let leaf = &kcore_pki::certs_from_pem(&chain).unwrap()[0];
    assert_eq!(
        kcore_pki::identity_of(leaf).unwrap().uri(),
        format!("kcore://lab/controller/{NODE_ID}")
    );
    // Signed by the running controller's sub-CA, which the answer carried.
    let sub = std::fs::read_to_string(bed.lab.ctx_dir.join("sub-ca.crt")).unwrap();
    assert!(chain.ends_with(&sub), "chain ends with the sub-CA");
    assert_eq!(
        std::fs::read_to_string(bed.path("root/etc/kcore/controller/sub-ca.crt")).unwrap(),
        sub
    );
    // The controller's own loader reads what was written: this id and cluster, the
    // advertised address, the context's controller as the peer to fetch the sub-CA key from.
    let config =
        kcore_controller::ControllerConfig::load(&bed.path("root/etc/kcore/controller.yaml"))
            .unwrap();
    assert_eq!(config.controller_id, NODE_ID);
    assert_eq!(config.cluster_name, "lab");
    assert_eq!(config.advertise_address.as_deref(), Some("127.0.0.1:9190"));
    assert_eq!(config.peers, std::slice::from_ref(&bed.lab.addr));
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_exits_3_naming_it_and_the_agent_keeps_serving() {
    let bed = Bed::start().await;
    std::fs::write(bed.path("fail/nixos-install"), "").unwrap();
    let args = ["--os-disk", "/dev/sdb", "--yes"];
    let out = bed.install(&args).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        stderr(&out).contains("failed at step install"),
        "{}",
        text(&out)
    );
    assert!(!bed.lab.ctx_dir.join("recovery").exists());
    // A retry plans again and installs.
    std::fs::remove_file(bed.path("fail/nixos-install")).unwrap();
    let out = bed.install(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    bed.stop().await;
}

/// On a terminal (a pseudo-terminal from util-linux's `script`, fed the typed line),
/// kctl asks for the node's hostname: a wrong answer writes nothing, the right one
/// installs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_operator_types_the_hostname() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: util-linux `script` is not on PATH");
        return;
    }
    let bed = Bed::start().await;
    let on_a_terminal = |typed: &'static str| {
        let command = format!(
            "{} node install --node {} --fingerprint {} --node-id {NODE_ID} --os-disk /dev/sdb",
            env!("CARGO_BIN_EXE_kctl"),
            bed.live.addr,
            bed.live.fingerprint
        );
        let home = bed.lab.home().to_path_buf();
        async move {
            tokio::task::spawn_blocking(move || {
                use std::io::Write as _;
                let mut child = std::process::Command::new("script")
                    .args(["-qec", &command, "/dev/null"])
                    .env("HOME", &home)
                    .env_remove("KCORE_CONFIG")
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut stdin = child.stdin.take().unwrap();
                // After the question is up, so the line is not echoed before the plan.
                std::thread::sleep(std::time::Duration::from_secs(2));
                stdin.write_all(typed.as_bytes()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(300));
                drop(stdin);
                child.wait_with_output().unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = on_a_terminal("kcore-wrong\n").await;
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        shown.contains("Type the node's hostname (kcore-3f2a9c1e)"),
        "{shown}"
    );
    assert!(shown.contains("not confirmed"), "{shown}");
    assert_eq!(bed.writers(), Vec::<String>::new(), "programs ran");
    let out = on_a_terminal("kcore-3f2a9c1e\n").await;
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("==> done"), "{shown}");
    bed.stop().await;
}

/// The zfs flags reach the node: the layout mirrors the two data disks into the named
/// pool, and the installed configuration names the pool, dataset prefix and hostname.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zfs_mirror_flags_reach_the_layout_and_the_installed_config() {
    let bed = Bed::start().await;
    let args = [
        "--os-disk",
        "/dev/sdb",
        "--data-disk",
        "/dev/sdc",
        "--data-disk",
        "/dev/sde",
        "--storage-backend",
        "zfs",
        "--data-disk-mode",
        "mirror",
        "--zfs-pool-name",
        "tank9",
        "--zfs-dataset-prefix",
        "vols",
        "--hostname",
        "hv9",
        "--dc-id",
        "DC3",
    ];
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let out = bed.install(&dry).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(plan.contains("storage zfs"), "{plan}");
    assert!(plan.contains("mirror"), "{plan}");
    assert!(plan.contains("tank9"), "{plan}");
    assert!(plan.contains("-kcore-node-zfs"), "{plan}");
    let mut yes = args.to_vec();
    yes.push("--yes");
    let out = bed.install(&yes).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let yaml = std::fs::read_to_string(bed.path("root/etc/kcore/node-agent.yaml")).unwrap();
    for want in ["tank9", "vols", "hv9", "DC3", "zfs"] {
        assert!(yaml.contains(want), "{want}: {yaml}");
    }
    bed.stop().await;
}
