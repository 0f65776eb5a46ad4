//! `install/run`, `recovery-key` and `reboot` on a real install-mode agent (in-process,
//! 127.0.0.1, pinned self-signed TLS), through the stand-ins of `tests/support/install/`
//! (each says at its top what it checks and records; the real programs run in the
//! storage bed): the programs in order with their flags, step events and timings,
//! `/etc/kcore` read back by the agent's and the controller's own loaders, the claim
//! token, a failed step and its retry, key-file mode with `--run-controller`.

use super::install::*;
use super::support::*;
use kcore_api::install::{InstallCsr, InstallCsrRequest, InstallPlan, InstallSpec};

use kcore_api::install::{
    ControllerCredentials, InstallClaim, InstallCredentials, InstallRunRequest, InstallStep,
    RecoveryKey,
};

/// The install stand-ins (each says at its top what it records) as the agent's binaries,
/// recording into `<node>/install.log`; a file `<node>/fail/<program>` makes one fail.
pub fn stand_ins() -> serde_json::Value {
    let s = |p: &str| support(&format!("install/{p}"));
    json!({"binaries": {
        "disko": s("disko"), "nixos-install": s("nixos-install"),
        "cryptsetup": s("cryptsetup"), "systemd-cryptenroll": s("systemd-cryptenroll"),
        "umount": s("umount"), "sgdisk": s("sgdisk"), "vgchange": s("vgchange"),
        "zpool": s("zpool"), "systemctl": s("systemctl"),
    }})
}

pub async fn run_bed(tpm: bool) -> InstallBed {
    let node = Node::new();
    let sysfs = tempfile::tempdir().unwrap();
    if tpm {
        std::fs::create_dir_all(sysfs.path().join("class/tpm/tpm0")).unwrap();
    }
    let mut extra = stand_ins();
    merge(
        &mut extra,
        json!({"install": {
            "root": node.path("root"),
            "stateDir": node.path("install-state"),
            "systems": {
                "filesystem": "/nix/store/00000000000000000000000000000000-kcore-node-filesystem",
                "lvm": "/nix/store/00000000000000000000000000000000-kcore-node-lvm",
                "zfs": "/nix/store/00000000000000000000000000000000-kcore-node-zfs",
            },
            "keyfileSystems": {
                "filesystem": "/nix/store/00000000000000000000000000000000-kcore-node-filesystem-keyfile",
                "lvm": "/nix/store/00000000000000000000000000000000-kcore-node-lvm-keyfile",
            },
        }}),
    );
    let config = node.config("install", None, extra);
    std::fs::create_dir_all(node.path("fail")).unwrap();
    std::fs::create_dir_all(node.path("dev/dev/disk/by-id")).unwrap();
    let env = vec![(
        "KCORE_TEST_INSTALL_FAIL_DIR".to_string(),
        node.path("fail").display().to_string(),
    )];
    let dev_root = node.path("dev");
    start_install_agent(node, sysfs, config, Some(dev_root), env).await
}

/// What the stand-ins recorded, without the plans' `zpool status -P` reads.
pub fn log(bed: &InstallBed) -> Vec<String> {
    std::fs::read_to_string(bed.node.path("install.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| *l != "zpool status -P")
        .map(str::to_string)
        .collect()
}

pub const CLAIM: &str = "claim-0123456789abcdef0123456789abcdef";

/// plan, CSR(s), a controller's signature (the test's CA), the run request.
pub async fn confirmed(
    bed: &InstallBed,
    pki: &Pki,
    spec: &InstallSpec,
) -> (InstallPlan, InstallRunRequest) {
    let plan: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", spec)
        .await
        .unwrap();
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    let csr = |role: &str| InstallCsrRequest {
        cluster: "lab".into(),
        role: role.into(),
        id: plan.spec.node_id.clone(),
        dns_names: vec![plan.spec.hostname.clone().unwrap()],
    };
    let node_csr: InstallCsr = bed
        .client
        .post_json("/v1/install/csr", &csr("node"))
        .await
        .unwrap();
    let sign = |csr: &InstallCsr, role: Role| {
        let identity = Identity::new("lab", role, &plan.spec.node_id).unwrap();
        pki.root.sign_csr(&csr.csr_pem, &identity, DAY).unwrap()
    };
    let controller = if plan.spec.run_controller {
        let ctl_csr: InstallCsr = bed
            .client
            .post_json("/v1/install/csr", &csr("controller"))
            .await
            .unwrap();
        Some(ControllerCredentials {
            chain_pem: sign(&ctl_csr, Role::Controller),
            sub_ca_pem: pki
                .root
                .new_sub_ca("sub-1", DAY)
                .unwrap()
                .cert_pem()
                .to_string(),
            advertise_address: "10.0.0.7:9090".into(),
            peers: vec!["10.0.0.1:9090".into()],
        })
    } else {
        None
    };
    let request = InstallRunRequest {
        spec: plan.spec.clone(),
        plan_hash: plan.plan_hash.clone(),
        credentials: InstallCredentials {
            ca_pem: pki.root.cert_pem().to_string(),
            node_chain_pem: sign(&node_csr, Role::Node),
            controller,
        },
        claim_token: CLAIM.into(),
        timeout_seconds: Some(120),
    };
    (plan, request)
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_run_through_stand_ins_formats_installs_enrols_tpm2_writes_etc_kcore_and_reboots() {
    let bed = run_bed(true).await;
    let pki = Pki::new();
    let (plan, request) = confirmed(&bed, &pki, &spec("/dev/sdb", &["/dev/sdc"])).await;

    // Refusals before anything runs.
    let mut short = request.clone();
    short.claim_token = "short".into();
    let err = bed
        .client
        .post_json::<_, OperationStarted>("/v1/install/run", &short)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_FIELD");
    assert!(err.to_string().contains("claimToken"), "{err}");
    let mut stale = request.clone();
    stale.plan_hash = format!("sha256:{}", "0".repeat(64));
    let err = bed
        .client
        .post_json::<_, OperationStarted>("/v1/install/run", &stale)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "PLAN_HASH_MISMATCH");
    let mut foreign = request.clone();
    foreign.credentials.node_chain_pem = pki.leaf(Role::Node, &plan.spec.node_id).cert_pem;
    let err = bed
        .client
        .post_json::<_, OperationStarted>("/v1/install/run", &foreign)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_FIELD");
    assert!(
        err.to_string().contains("credentials.nodeChainPem"),
        "{err}"
    );
    let mut other_ca = request.clone();
    other_ca.credentials.ca_pem = Pki::new().root.cert_pem().to_string();
    let err = bed
        .client
        .post_json::<_, OperationStarted>("/v1/install/run", &other_ca)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("credentials.nodeChainPem"),
        "{err}"
    );
    assert!(log(&bed).is_empty(), "{:?}", log(&bed));

    let started: OperationStarted = bed
        .client
        .post_json("/v1/install/run", &request)
        .await
        .unwrap();
    assert_eq!(started.kind, kcore_api::inventory::OperationKind::Install);
    // Not finished yet or finished: the claim is checked first.
    let wrong = InstallClaim {
        operation_id: started.operation_id.clone(),
        claim_token: "x".repeat(40),
    };
    let err = bed
        .client
        .post_json::<_, RecoveryKey>("/v1/install/recovery-key", &wrong)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INSTALL_CLAIM_MISMATCH");
    let (events, result) = follow(&bed.client, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    let steps: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            OperationEvent::Step { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        ["format", "install", "enrol", "write-config", "done"]
    );
    let outcome = result.install.clone().unwrap();
    let timed: Vec<InstallStep> = outcome.steps.iter().map(|t| t.step).collect();
    assert_eq!(
        timed,
        [
            InstallStep::Format,
            InstallStep::Install,
            InstallStep::Enrol,
            InstallStep::WriteConfig,
            InstallStep::Done
        ]
    );
    assert!(outcome.steps.iter().all(|t| t.seconds >= 0.0));
    assert_eq!(outcome.failed_step, None);
    let luks = format!("{}-part2", by_id("BLANK1"));
    assert_eq!(outcome.luks_device.as_deref(), Some(luks.as_str()));

    // The programs, in order, with the flags the real ones take.
    let root = bed.node.path("root");
    let key = bed.node.path("install-state/install.key");
    let k = key.display();
    let r = root.display();
    let layout = bed.node.path("install-state/layout.nix");
    assert_eq!(
        log(&bed),
        [
            format!(
                "disko --mode destroy,format,mount --yes-wipe-all-disks --root-mountpoint {r} {}",
                layout.display()
            ),
            format!(
                "nixos-install --system {} --root {r} --no-root-passwd --no-channel-copy",
                plan.system
            ),
            format!("systemd-cryptenroll --unlock-key-file={k} --recovery-key {luks}"),
            format!(
                "systemd-cryptenroll --unlock-key-file={k} --tpm2-device=auto --tpm2-pcrs=0+2+7 {luks}"
            ),
            format!("cryptsetup open --test-passphrase --token-only {luks}"),
            format!("cryptsetup luksRemoveKey --key-file {k} {luks}"),
            format!("umount -R {r}"),
            "cryptsetup close crypted".to_string(),
            "vgchange -an vg_kcore".to_string(),
        ]
    );
    assert!(!key.exists(), "the install key is deleted");
    assert_eq!(
        std::fs::read_link(root.join("nix/var/nix/profiles/system")).unwrap(),
        Path::new(&plan.system)
    );

    // /etc/kcore on the new system.
    let etc = root.join("etc/kcore");
    for (rel, mode) in [
        ("node-agent.yaml", 0o644),
        ("tls/ca.crt", 0o644),
        ("tls/node.crt", 0o644),
        ("tls/node.key", 0o600),
        ("disko-management-mode", 0o644),
        ("recovery/luks-recovery-key.txt", 0o400),
        ("install.json", 0o644),
    ] {
        assert_eq!(mode_of(&etc.join(rel)), mode, "{rel}");
    }
    assert_eq!(mode_of(&etc.join("recovery")), 0o700);
    assert_eq!(mode_of(&etc.join("tls")), 0o755);
    assert!(!etc.join("controller.yaml").exists());
    assert_eq!(
        std::fs::read_to_string(etc.join("disko-management-mode")).unwrap(),
        "installer-only\n"
    );
    // node-agent.yaml, read by the agent's own loader, alone and over a --defaults file.
    let installed = AgentConfig::load(&etc.join("node-agent.yaml")).unwrap();
    assert_eq!(installed.node_id, plan.spec.node_id);
    assert_eq!(installed.mode, kcore_agent::config::Mode::Managed);
    assert_eq!(installed.hostname.as_deref(), Some("kcore-3f2a9c1e"));
    assert_eq!(installed.controllers, ["10.0.0.1:9090"]);
    assert_eq!(installed.storage.backend, kcore_agent::config::Backend::Lvm);
    assert_eq!(installed.storage.lvm.vg_name, "vg_kcore");
    let tls = installed.tls.clone().unwrap();
    assert_eq!(tls.key_file, Path::new("/etc/kcore/tls/node.key"));
    let defaults = bed.node.path("defaults.yaml");
    std::fs::write(
        &defaults,
        "binaries: { disko: /nix/store/x-disko/bin/disko }\nheartbeatIntervalSeconds: 5\ndcId: IGNORED\n",
    )
    .unwrap();
    let layered = AgentConfig::load_layered(Some(&defaults), &etc.join("node-agent.yaml")).unwrap();
    assert_eq!(layered.heartbeat_interval_seconds, 5);
    assert_eq!(layered.dc_id, "DC1", "the node's file wins");
    assert_eq!(
        layered.binaries.get("disko"),
        Some(Path::new("/nix/store/x-disko/bin/disko"))
    );
    // The node key is the one the CSR was made with.
    let creds = kcore_pki::Credentials {
        ca_pem: std::fs::read_to_string(etc.join("tls/ca.crt")).unwrap(),
        cert_pem: std::fs::read_to_string(etc.join("tls/node.crt")).unwrap(),
        key_pem: std::fs::read_to_string(etc.join("tls/node.key")).unwrap(),
    };
    assert!(creds.key_matches().unwrap());
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(etc.join("install.json")).unwrap()).unwrap();
    assert_eq!(record["planHash"], json!(plan.plan_hash));
    assert_eq!(record["luksMode"], "tpm2");
    assert_eq!(record["tpm2Pcrs"], json!([0, 2, 7]));
    assert_eq!(record["luksDevice"], json!(luks));
    assert_eq!(record["vxlan"], true, "no --disable-vxlan: {record}");

    // The recovery key, for the claim token only, the same as the installed copy.
    let claim = InstallClaim {
        operation_id: started.operation_id.clone(),
        claim_token: CLAIM.into(),
    };
    let recovery: RecoveryKey = bed
        .client
        .post_json("/v1/install/recovery-key", &claim)
        .await
        .unwrap();
    assert_eq!(
        recovery.recovery_key,
        "cbdefghi-jklnrtuv-cbdefghi-jklnrtuv-cbdefghi-jklnrtuv-cbdefghi-jklnrtuv"
    );
    assert_eq!(recovery.luks_device, luks);
    assert_eq!(
        recovery.path_on_node,
        "/etc/kcore/recovery/luks-recovery-key.txt"
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("recovery/luks-recovery-key.txt")).unwrap(),
        format!("{}\n", recovery.recovery_key)
    );
    assert!(
        !std::fs::read_to_string(etc.join("install.json"))
            .unwrap()
            .contains(&recovery.recovery_key)
    );
    // Reboot: answered first, then `systemctl reboot`.
    let err = bed
        .client
        .post_json::<_, serde_json::Value>("/v1/install/reboot", &wrong)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INSTALL_CLAIM_MISMATCH");
    let answer: serde_json::Value = bed
        .client
        .post_json("/v1/install/reboot", &claim)
        .await
        .unwrap();
    assert_eq!(answer, json!({"rebooting": true}));
    let waited = std::time::Instant::now();
    while !log(&bed).contains(&"systemctl reboot".to_string()) {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "{:?}",
            log(&bed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_failure_names_the_step_releases_the_disks_keeps_serving_and_a_retry_works() {
    let bed = run_bed(true).await;
    let pki = Pki::new();
    let (_, request) = confirmed(&bed, &pki, &spec("/dev/sdb", &["/dev/sdc"])).await;
    let marker = bed.node.path("fail/nixos-install");
    std::fs::write(&marker, "").unwrap();
    let started: OperationStarted = bed
        .client
        .post_json("/v1/install/run", &request)
        .await
        .unwrap();
    let (events, result) = follow(&bed.client, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::Failed);
    let outcome = result.install.clone().unwrap();
    assert_eq!(outcome.failed_step, Some(InstallStep::Install));
    assert_eq!(outcome.steps.len(), 1, "format finished, install did not");
    let error = result.error.clone().unwrap();
    assert!(
        error.message.contains("install step install failed"),
        "{}",
        error.message
    );
    assert!(
        output_lines(&events)
            .iter()
            .any(|l| l.contains("simulated failure")),
        "the failing program's output is streamed"
    );
    let r = bed.node.path("root").display().to_string();
    let after: Vec<String> = log(&bed).into_iter().skip(2).collect();
    assert_eq!(
        after,
        [
            format!("umount -R {r}"),
            "cryptsetup close crypted".to_string(),
            "vgchange -an vg_kcore".to_string(),
        ],
        "released after the failure, nothing enrolled"
    );
    // No recovery key for a failed install, and the agent still serves.
    let claim = InstallClaim {
        operation_id: started.operation_id.clone(),
        claim_token: CLAIM.into(),
    };
    let err = bed
        .client
        .post_json::<_, RecoveryKey>("/v1/install/recovery-key", &claim)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INSTALL_NOT_FINISHED");
    let health: serde_json::Value = bed.client.get_json("/v1/health").await.unwrap();
    assert_eq!(health["mode"], "install");
    // The retry: plan again (same disks, same hash), run, succeed.
    std::fs::remove_file(&marker).unwrap();
    let again: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", &request.spec)
        .await
        .unwrap();
    assert_eq!(again.plan_hash, request.plan_hash);
    let started: OperationStarted = bed
        .client
        .post_json("/v1/install/run", &request)
        .await
        .unwrap();
    let (_, result) = follow(&bed.client, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_run_keyfile_mode_and_run_controller_write_the_key_device_and_controller_yaml() {
    let bed = run_bed(false).await;
    let pki = Pki::new();
    let mut wanted = spec("/dev/sdb", &[]);
    wanted.storage_backend = kcore_api::cluster::StorageBackend::Filesystem;
    wanted.luks_key_device = Some("/dev/sde".into());
    wanted.run_controller = true;
    wanted.disable_vxlan = true;
    // The key partition sgdisk makes appears where the agent opens it (udev's link).
    let part = bed
        .node
        .path("dev/dev/disk/by-id/ata-QEMU_HARDDISK_KEY1-part1");
    std::fs::write(&part, b"").unwrap();
    let (plan, request) = confirmed(&bed, &pki, &wanted).await;
    assert_eq!(plan.spec.luks, kcore_api::install::LuksChoice::Keyfile);
    let mut no_controller = request.clone();
    no_controller.credentials.controller = None;
    let err = bed
        .client
        .post_json::<_, OperationStarted>("/v1/install/run", &no_controller)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("credentials.controller"), "{err}");
    let started: OperationStarted = bed
        .client
        .post_json("/v1/install/run", &request)
        .await
        .unwrap();
    let (_, result) = follow(&bed.client, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    let luks = format!("{}-part2", by_id("BLANK1"));
    let key_part = format!("{}-part1", by_id("KEY1"));
    let k = bed
        .node
        .path("install-state/install.key")
        .display()
        .to_string();
    let log = log(&bed);
    for line in [
        format!(
            "sgdisk --zap-all --new=1:0:0 --change-name=1:kcore-luks-key {}",
            by_id("KEY1")
        ),
        format!("cryptsetup luksAddKey --key-file {k} --new-keyfile-size 4096 {luks} {key_part}"),
        format!(
            "cryptsetup open --test-passphrase --key-file {key_part} --keyfile-size 4096 {luks}"
        ),
        format!("cryptsetup luksRemoveKey --key-file {k} {luks}"),
    ] {
        assert!(log.contains(&line), "{line} in {log:?}");
    }
    // The key-file system is the one installed: its initrd reads the key partition.
    let system = "/nix/store/00000000000000000000000000000000-kcore-node-filesystem-keyfile";
    assert_eq!(plan.system, system);
    assert!(
        log.iter()
            .any(|l| l.starts_with(&format!("nixos-install --system {system} "))),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.contains("tpm2")), "{log:?}");
    assert!(
        !log.iter()
            .any(|l| l.starts_with("vgchange") || l.starts_with("zpool"))
    );
    assert_eq!(
        std::fs::read(&part).unwrap().len(),
        4096,
        "the key on the key device"
    );
    let etc = bed.node.path("root/etc/kcore");
    // controller.yaml, read by kcore-controller's own loader.
    let controller =
        kcore_controller::ControllerConfig::load(&etc.join("controller.yaml")).unwrap();
    assert_eq!(controller.controller_id, plan.spec.node_id);
    assert_eq!(controller.cluster_name, "lab");
    assert_eq!(controller.dc_id, "DC1");
    assert_eq!(controller.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(
        controller.advertise_address.as_deref(),
        Some("10.0.0.7:9090")
    );
    assert_eq!(controller.peers, ["10.0.0.1:9090"]);
    assert_eq!(
        controller.tls.sub_ca_key_file,
        Path::new("/var/lib/kcore-controller/sub-ca.key")
    );
    assert_eq!(mode_of(&etc.join("controller/controller.key")), 0o600);
    assert!(etc.join("controller/sub-ca.crt").exists());
    assert!(
        !bed.node
            .path("root/var/lib/kcore-controller/sub-ca.key")
            .exists()
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(etc.join("install.json")).unwrap()).unwrap();
    assert_eq!(record["luksMode"], "keyfile");
    assert_eq!(record["system"], system);
    assert_eq!(record["vxlan"], false, "--disable-vxlan: {record}");
    bed.agent.stop().await;
}

/// The prebuilt zfs closure is shared by every node: the pool the operator named reaches its
/// `kcore-zfs-import.service` through `/etc/kcore/zfs-pools` (modules/storage.nix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_run_zfs_writes_the_spec_pool_name_to_etc_kcore_zfs_pools() {
    let bed = run_bed(true).await;
    let pki = Pki::new();
    let mut wanted = spec("/dev/sdb", &["/dev/sdc"]);
    wanted.storage_backend = kcore_api::cluster::StorageBackend::Zfs;
    wanted.zfs_pool_name = Some("vmpool7".into());
    let (plan, request) = confirmed(&bed, &pki, &wanted).await;
    let started: OperationStarted = bed
        .client
        .post_json("/v1/install/run", &request)
        .await
        .unwrap();
    let (_, result) = follow(&bed.client, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    assert_eq!(
        plan.system,
        "/nix/store/00000000000000000000000000000000-kcore-node-zfs"
    );
    let pools = bed.node.path("root/etc/kcore/zfs-pools");
    assert_eq!(std::fs::read_to_string(&pools).unwrap(), "vmpool7\n");
    assert_eq!(mode_of(&pools), 0o644);
    let installed = AgentConfig::load(&bed.node.path("root/etc/kcore/node-agent.yaml")).unwrap();
    assert_eq!(installed.storage.backend, kcore_agent::config::Backend::Zfs);
    assert_eq!(installed.storage.zfs.pool_name, "vmpool7");
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_run_while_one_runs_is_refused_and_plans_still_answer() {
    let bed = run_bed(true).await;
    let pki = Pki::new();
    let (_, request) = confirmed(&bed, &pki, &spec("/dev/sdb", &["/dev/sdc"])).await;
    let hold = bed.node.path("fail/hold-disko");
    std::fs::write(&hold, "").unwrap();
    let started: OperationStarted = bed
        .client
        .post_json("/v1/install/run", &request)
        .await
        .unwrap();
    let waited = std::time::Instant::now();
    while !log(&bed).iter().any(|l| l.starts_with("disko ")) {
        assert!(waited.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = bed
        .client
        .post_json::<_, OperationStarted>("/v1/install/run", &request)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "DISK_APPLY_IN_PROGRESS", "{err}");
    let _: InstallPlan = bed
        .client
        .post_json("/v1/install/plan", &request.spec)
        .await
        .unwrap();
    std::fs::remove_file(&hold).unwrap();
    let (_, result) = follow(&bed.client, &started.operation_id).await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");
    bed.agent.stop().await;
}
