//! `kctl node install`: day 0, from a node booted from the live ISO (its agent in install
//! mode, `--node HOST:9091`, trusted with `-k` or `--fingerprint`) to an encrypted,
//! installed node that registers with the cluster after its reboot.
//!
//! The order (docs/kctl.md, docs/install.md; the wire types are `kcore_api::install`):
//! plan on the node -> print it -> refusals exit 1 -> `--dry-run` stops -> confirmation
//! ([`confirmation`]: type the hostname on a terminal, `--yes` otherwise) -> the node makes
//! its key(s) and CSR(s) -> a controller of the context signs them (admin routes
//! `/v1/certificates/node` and, with `--run-controller`, `/v1/certificates/controller`)
//! -> `install/run` with a random claim token, its steps streamed with timings ->
//! `install/recovery-key`, stored with the context ([`store_recovery_key`]) -> reboot.
//!
//! With `-k` kctl first learns the agent's certificate fingerprint from one handshake,
//! prints it, and pins it for every later request: the whole install talks to the one
//! agent it printed, even if another answers at the address in between.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use kcore_api::ErrorCode;
use kcore_api::cluster::{
    CertificateResponse, ControllerCertificateResponse, IssueControllerCertificateRequest,
    IssueNodeCertificateRequest, StorageBackend,
};
use kcore_api::install::{
    ControllerCredentials, DataDiskMode, InstallClaim, InstallCredentials, InstallCsr,
    InstallCsrRequest, InstallPlan, InstallRunRequest, InstallSpec, LuksChoice, RecoveryKey,
};
use kcore_api::inventory::{OperationEvent, OperationResult, OperationStarted, OperationStatus};

use crate::agent_client::{Trust, trust};
use crate::escape::escape;
use crate::exit::Refused;
use crate::global::GlobalArgs;
use crate::output::{OutputFormat, print_object};
use crate::remote::{Expected, Remote};
use crate::target::{ControllerTarget, NodeTarget};
use crate::views::install as view;

/// `kctl node install`. The node id is the `--node-id` of the node target (in install
/// mode there is no node certificate to check it against, so it names the node to make).
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// The OS disk (ESP + LUKS2 root), as /dev/sda or /dev/disk/by-id/...; the node
    /// resolves it to its by-id path before anything is rendered.
    #[arg(long = "os-disk", value_name = "DEVICE")]
    pub os_disk: String,

    /// A data disk for VM volumes; repeat for more, in order.
    #[arg(long = "data-disk", value_name = "DEVICE")]
    pub data_disks: Vec<String>,

    /// How several data disks combine: stripe (default) or mirror (zfs only). The
    /// operator guide's backend spelling (filesystem|lvm|zfs) is accepted too and means
    /// --storage-backend.
    #[arg(long = "data-disk-mode", value_name = "MODE", value_parser = parse_data_disk_mode)]
    pub data_disk_mode: Option<DataDiskModeArg>,

    /// The storage backend of the data disks: filesystem (default), lvm or zfs.
    #[arg(long = "storage-backend", value_name = "BACKEND")]
    pub storage_backend: Option<StorageBackend>,

    /// LVM volume group name (the node's default: vg_kcore; lvm only).
    #[arg(long = "lvm-vg-name", value_name = "NAME")]
    pub lvm_vg_name: Option<String>,

    /// Prefix of kcore's LVs (lvm only).
    #[arg(long = "lvm-lv-prefix", value_name = "PREFIX")]
    pub lvm_lv_prefix: Option<String>,

    /// ZFS pool name (the node's default: tank0; zfs only).
    #[arg(long = "zfs-pool-name", value_name = "NAME")]
    pub zfs_pool_name: Option<String>,

    /// ZFS dataset prefix for volumes (zfs only).
    #[arg(long = "zfs-dataset-prefix", value_name = "PREFIX")]
    pub zfs_dataset_prefix: Option<String>,

    /// A controller the installed node registers with, HOST:PORT; repeat for more.
    /// Default: the current context's controllers.
    #[arg(long = "join-controller", value_name = "HOST:PORT")]
    pub join_controllers: Vec<String>,

    /// The node also runs a controller: kctl has its certificate signed too; it fetches
    /// the sub-CA key from a peer after its first boot.
    #[arg(long = "run-controller")]
    pub run_controller: bool,

    /// The data centre the node belongs to.
    #[arg(long = "dc-id", value_name = "DC", default_value = "DC1")]
    pub dc_id: String,

    /// The installed node's hostname (the node's default: kcore-<first 8 of the node id>).
    #[arg(long = "hostname", value_name = "NAME")]
    pub hostname: Option<String>,

    /// Turn off the VXLAN overlay on the installed node.
    #[arg(long = "disable-vxlan")]
    pub disable_vxlan: bool,

    /// LUKS unlock of the OS disk: auto (default: tpm2 when the node has a TPM, else
    /// keyfile), tpm2 or keyfile.
    #[arg(long = "luks", value_name = "MODE", value_parser = parse_luks, default_value = "auto")]
    pub luks: LuksChoice,

    /// Keyfile mode: the separate device that holds the unlock key (never the
    /// unencrypted ESP); it is wiped.
    #[arg(long = "luks-key-device", value_name = "DEVICE")]
    pub luks_key_device: Option<String>,

    /// Do not ask: needed when stdin or stderr is not a terminal.
    #[arg(long = "yes", short = 'y')]
    pub yes: bool,

    /// Only show the plan (layout, disks to wipe, refusals); write nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,

    /// With --run-controller: the address other controllers and kctl dial for the new
    /// controller (default: the host of --node, port 9090).
    #[arg(long = "advertise-address", value_name = "HOST:PORT")]
    pub advertise_address: Option<String>,
}

/// What `--data-disk-mode` was given as: the layout, or the guide's backend spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDiskModeArg {
    Layout(DataDiskMode),
    Backend(StorageBackend),
}

fn parse_data_disk_mode(s: &str) -> Result<DataDiskModeArg, String> {
    match s {
        "stripe" => Ok(DataDiskModeArg::Layout(DataDiskMode::Stripe)),
        "mirror" => Ok(DataDiskModeArg::Layout(DataDiskMode::Mirror)),
        other => other.parse().map(DataDiskModeArg::Backend).map_err(|_| {
            "use stripe or mirror (or a backend: filesystem, lvm, zfs, which is --storage-backend)"
                .into()
        }),
    }
}

fn parse_luks(s: &str) -> Result<LuksChoice, String> {
    match s {
        "auto" => Ok(LuksChoice::Auto),
        "tpm2" => Ok(LuksChoice::Tpm2),
        "keyfile" => Ok(LuksChoice::Keyfile),
        _ => Err("use auto, tpm2 or keyfile".into()),
    }
}

/// What to do after the plan, before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// `--dry-run`: stop here.
    DryRun,
    /// `--yes`: go on without asking.
    Proceed,
    /// Ask on the terminal: the operator types this hostname.
    Ask(String),
    /// Not a terminal and no `--yes`: refuse.
    Refuse,
}

/// The confirmation rule: `--dry-run` always stops; `--yes` goes on; on a terminal the
/// operator types the node's hostname; anything else is refused (a script must say
/// `--yes`, never get a wipe by accident).
pub fn confirmation(dry_run: bool, yes: bool, terminal: bool, hostname: &str) -> Confirmation {
    match (dry_run, yes, terminal) {
        (true, _, _) => Confirmation::DryRun,
        (false, true, _) => Confirmation::Proceed,
        (false, false, true) => Confirmation::Ask(hostname.to_string()),
        (false, false, false) => Confirmation::Refuse,
    }
}

/// Whether the typed answer confirms: exactly the hostname, surrounding white space aside.
pub fn confirmed(typed: &str, hostname: &str) -> bool {
    typed.trim() == hostname
}

impl InstallArgs {
    /// The spec to plan: flags, defaults (node id, controllers) filled in.
    pub fn spec(
        &self,
        cluster: &str,
        node_id: &str,
        context_controllers: &[String],
    ) -> anyhow::Result<InstallSpec> {
        let (backend, layout) = match (self.storage_backend, self.data_disk_mode) {
            (Some(a), Some(DataDiskModeArg::Backend(b))) if a != b => {
                return Err(Refused::new(
                    ErrorCode::BadFlags,
                    format!(
                        "--storage-backend {} and --data-disk-mode {} disagree: \
                         --data-disk-mode takes stripe or mirror; give the backend once",
                        a.as_str(),
                        b.as_str()
                    ),
                )
                .into());
            }
            (_, Some(DataDiskModeArg::Backend(b))) => (b, DataDiskMode::default()),
            (a, Some(DataDiskModeArg::Layout(l))) => (a.unwrap_or_default(), l),
            (a, None) => (a.unwrap_or_default(), DataDiskMode::default()),
        };
        let controllers = if self.join_controllers.is_empty() {
            context_controllers.to_vec()
        } else {
            self.join_controllers.clone()
        };
        if controllers.is_empty() {
            return Err(Refused::new(
                ErrorCode::NoControllers,
                "the node would join no controller: pass --join-controller HOST:9090, or use \
                 a context that lists controllers",
            )
            .into());
        }
        Ok(InstallSpec {
            cluster: cluster.to_string(),
            node_id: node_id.to_string(),
            hostname: self.hostname.clone(),
            dc_id: self.dc_id.clone(),
            controllers,
            os_disk: self.os_disk.clone(),
            data_disks: self.data_disks.clone(),
            data_disk_mode: layout,
            storage_backend: backend,
            lvm_vg_name: self.lvm_vg_name.clone(),
            lvm_lv_prefix: self.lvm_lv_prefix.clone(),
            zfs_pool_name: self.zfs_pool_name.clone(),
            zfs_dataset_prefix: self.zfs_dataset_prefix.clone(),
            luks: self.luks,
            luks_key_device: self.luks_key_device.clone(),
            run_controller: self.run_controller,
            disable_vxlan: self.disable_vxlan,
        })
    }
}

/// A new node id: a random UUID (v4).
pub fn new_node_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A claim token: 32 bytes from the kernel's random source as 64 hex characters (the
/// agent wants at least 32 characters).
pub fn claim_token() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the install's claim token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Where the recovery key of `node_id` is kept: `<context dir>/recovery/<nodeId>.luks-recovery-key.txt`.
pub fn recovery_key_path(context_dir: &Path, node_id: &str) -> PathBuf {
    context_dir
        .join("recovery")
        .join(format!("{node_id}.luks-recovery-key.txt"))
}

/// Writes the recovery key next to the context's credentials: the directory 0700 (also
/// when it exists: it holds nothing but keys), the file 0600, temp file + rename so a
/// crash never leaves half a key.
pub fn store_recovery_key(context_dir: &Path, key: &RecoveryKey) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let path = recovery_key_path(context_dir, &key.node_id);
    let dir = path.parent().unwrap_or(context_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} 0700", dir.display()))?;
    let text = format!("{}\n", key.recovery_key.trim());
    kcore_pki::write_atomically(&path, text.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The install-mode agent's certificate fingerprint, from one TLS handshake that accepts
/// any certificate (`-k`): printed, then pinned for the rest of the install.
pub fn learn_fingerprint(node: &str) -> anyhow::Result<String> {
    use std::net::ToSocketAddrs as _;
    let host_port = node
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let host = match host_port.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => host_port.clone(),
    };
    let addr = host_port
        .to_socket_addrs()
        .with_context(|| format!("--node {node}: cannot resolve it"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--node {node}: no address"))?;
    let config = std::sync::Arc::new(kcore_pki::client_config_insecure()?);
    let name = rustls::pki_types::ServerName::try_from(host)
        .with_context(|| format!("--node {node}: not a host name"))?;
    let mut conn = rustls::ClientConnection::new(config, name)?;
    let mut sock = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .with_context(|| {
            format!("cannot reach the node agent at --node {node}: is it booted from the live ISO and listening?")
        })?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .with_context(|| format!("--node {node}: TLS handshake"))?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| anyhow::anyhow!("--node {node}: the agent showed no certificate"))?;
    Ok(kcore_pki::fingerprint_sha256(leaf.as_ref()))
}

/// A client pinned to `fingerprint`.
fn pinned_client(node: &str, fingerprint: &str) -> anyhow::Result<Remote> {
    let tls = kcore_pki::client_config_pinned(fingerprint)
        .with_context(|| format!("--fingerprint {fingerprint:?}"))?;
    let client = kcore_net::Client::new(
        vec![kcore_net::https_url(node)],
        tls,
        crate::agent_client::options(),
    )?;
    Ok(Remote::new(
        client,
        Expected::PinnedAgent(fingerprint.to_string()),
    ))
}

/// An error reaching the agent that is not the agent's answer names `--node`.
fn name_the_node(err: anyhow::Error, node: &str) -> anyhow::Error {
    if err.chain().any(|c| c.is::<Refused>()) || err.to_string().contains("--fingerprint") {
        return err;
    }
    err.context(format!(
        "cannot reach the node agent at --node {node}: is the node booted from the live ISO, \
         and is HOST:PORT right (agents listen on 9091)?"
    ))
}

pub async fn run(
    args: InstallArgs,
    global: &GlobalArgs,
    target: &NodeTarget,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    let node = target.node.clone().ok_or_else(|| {
        Refused::new(
            ErrorCode::NoNode,
            "kctl node install talks to the node's install-mode agent: pass --node HOST:9091",
        )
    })?;
    let fingerprint = match trust(target)? {
        Trust::Pinned(fp) => kcore_pki::normalise_fingerprint(&fp)
            .map_err(|e| Refused::new(ErrorCode::BadFlags, format!("--fingerprint {fp:?}: {e}")))?,
        Trust::Insecure => {
            let at = node.clone();
            // A blocking handshake of a few seconds at most, off the runtime's threads.
            let fp = tokio::task::spawn_blocking(move || learn_fingerprint(&at)).await??;
            eprintln!(
                "accepted the agent's certificate at {node} without verifying it (-k): \
                 fingerprint {fp}; compare it with the node's console, and pin it next time \
                 with --fingerprint {fp}"
            );
            fp
        }
        Trust::Context => {
            return Err(Refused::new(
                ErrorCode::BadFlags,
                "kctl node install talks to an install-mode agent, which has no cluster \
                 certificate yet: pass --fingerprint SHA256 (from the node's console) or -k",
            )
            .into());
        }
    };
    let ctx = crate::context::resolve(global)?;
    let node_id = target.node_id.clone().unwrap_or_else(new_node_id);
    let spec = args.spec(&ctx.cluster, &node_id, &ctx.controllers)?;
    let agent = pinned_client(&node, &fingerprint)?;

    let plan: InstallPlan = agent
        .post_json("/v1/install/plan", &spec)
        .await
        .map_err(|e| name_the_node(e, &node))?;
    let show_layout = args.dry_run || global.verbose > 0;
    // `-o json|yaml` keeps stdout one document: the plan on a dry run, else the install's
    // result; the plan a person confirms is then shown on stderr.
    let data = matches!(global.output, OutputFormat::Json | OutputFormat::Yaml);
    if data && !args.dry_run {
        eprint!("{}", view::plan_text(&plan, show_layout));
    } else {
        print_object(&plan, global.output, || view::plan_text(&plan, show_layout))?;
    }
    if !plan.refusals.is_empty() {
        return Err(view::refusal(&plan).into());
    }
    let hostname = plan.spec.hostname.clone().unwrap_or_default();
    let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    match confirmation(args.dry_run, args.yes, terminal, &hostname) {
        Confirmation::DryRun => {
            eprintln!(
                "dry run: nothing was written. Install with the same flags and --yes (or \
                 confirm on a terminal); node id {}",
                escape(&plan.spec.node_id)
            );
            return Ok(());
        }
        Confirmation::Refuse => {
            return Err(Refused::new(
                ErrorCode::BadFlags,
                "the install wipes the disks listed above and stdin is not a terminal to \
                 confirm on: pass --yes to install without asking",
            )
            .into());
        }
        Confirmation::Ask(name) => {
            eprint!(
                "This wipes every disk listed above. Type the node's hostname ({}) to install: ",
                escape(&name)
            );
            std::io::stderr().flush().ok();
            let mut typed = String::new();
            std::io::stdin().lock().read_line(&mut typed)?;
            if !confirmed(&typed, &name) {
                return Err(Refused::new(
                    ErrorCode::BadFlags,
                    format!(
                        "not confirmed: {:?} is not the hostname {name:?}; nothing was written",
                        typed.trim()
                    ),
                )
                .into());
            }
        }
        Confirmation::Proceed => {}
    }

    let credentials = credentials(&agent, &plan, &node, &args, global, controllers).await?;
    let claim = claim_token()?;
    let started: OperationStarted = agent
        .post_json(
            "/v1/install/run",
            &InstallRunRequest {
                spec: plan.spec.clone(),
                plan_hash: plan.plan_hash.clone(),
                credentials,
                claim_token: claim.clone(),
                timeout_seconds: None,
            },
        )
        .await?;
    eprintln!(
        "installing {} on {} as operation {}",
        escape(&plan.system),
        escape(&node),
        escape(&started.operation_id)
    );
    let result = follow_steps(&agent, &started.operation_id).await?;
    if data {
        print_object(&result, global.output, String::new)?;
    }
    if result.status != OperationStatus::Succeeded {
        return Err(anyhow::anyhow!(view::failure_text(&result)));
    }
    let claim = InstallClaim {
        operation_id: started.operation_id.clone(),
        claim_token: claim,
    };
    let key: RecoveryKey = agent.post_json("/v1/install/recovery-key", &claim).await?;
    let config_path = crate::context::config_path(global)?;
    let dir = crate::context::context_dir(&config_path, &ctx.name);
    let stored = store_recovery_key(&dir, &key)?;
    eprintln!(
        "LUKS recovery key of {} stored in {} (0600); keep a copy off this machine: it \
         opens the disk when the TPM or key device cannot",
        escape(&key.luks_device),
        stored.display()
    );
    let _: serde_json::Value = agent.post_json("/v1/install/reboot", &claim).await?;
    eprintln!(
        "node {} rebooting; it registers with {}; `kctl get nodes`",
        escape(&plan.spec.node_id),
        plan.spec.controllers.join(", ")
    );
    Ok(())
}

/// CSRs made on the node, signed by a controller of the context: the node's, and with
/// `--run-controller` the controller's.
async fn credentials(
    agent: &Remote,
    plan: &InstallPlan,
    node: &str,
    args: &InstallArgs,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<InstallCredentials> {
    let spec = &plan.spec;
    let (ctx, signer) = crate::controller_client::connect(global, controllers)?;
    let ca_pem = std::fs::read_to_string(&ctx.ca_file)
        .with_context(|| format!("the context's CA {}", ctx.ca_file.display()))?;
    let csr: InstallCsr = agent
        .post_json(
            "/v1/install/csr",
            &InstallCsrRequest {
                cluster: spec.cluster.clone(),
                role: "node".into(),
                id: spec.node_id.clone(),
                dns_names: Vec::new(),
            },
        )
        .await?;
    let node_cert: CertificateResponse = signer
        .post_json(
            "/v1/certificates/node",
            &IssueNodeCertificateRequest {
                node_id: spec.node_id.clone(),
                csr_pem: csr.csr_pem,
            },
        )
        .await
        .context("a controller signing the node's CSR")?;
    let controller = if spec.run_controller {
        let advertise = args
            .advertise_address
            .clone()
            .unwrap_or_else(|| format!("{}:9090", view::host_of(node)));
        let csr: InstallCsr = agent
            .post_json(
                "/v1/install/csr",
                &InstallCsrRequest {
                    cluster: spec.cluster.clone(),
                    role: "controller".into(),
                    id: spec.node_id.clone(),
                    dns_names: vec![view::host_of(&advertise)],
                },
            )
            .await?;
        let signed: ControllerCertificateResponse = signer
            .post_json(
                "/v1/certificates/controller",
                &IssueControllerCertificateRequest {
                    controller_id: spec.node_id.clone(),
                    csr_pem: csr.csr_pem,
                },
            )
            .await
            .context("a controller signing the new controller's CSR")?;
        Some(ControllerCredentials {
            chain_pem: signed.chain_pem,
            sub_ca_pem: signed.sub_ca_pem,
            advertise_address: advertise,
            peers: spec.controllers.clone(),
        })
    } else {
        None
    };
    Ok(InstallCredentials {
        ca_pem,
        node_chain_pem: node_cert.chain_pem,
        controller,
    })
}

/// Follows the install's stream: each step as it starts, and how long the one before took.
async fn follow_steps(agent: &Remote, id: &str) -> anyhow::Result<OperationResult> {
    let stream = crate::paths::path(&["v1", "operations", id, "stream"])?;
    let mut current: Option<(String, Instant)> = None;
    let mut last = None;
    let streamed = agent
        .stream_ndjson::<(), OperationEvent, _>(&stream, None, |event| match event {
            OperationEvent::Step { name } => {
                if let Some((prev, at)) = current.take() {
                    eprintln!(
                        "    {} took {:.1} s",
                        escape(&prev),
                        at.elapsed().as_secs_f64()
                    );
                }
                eprintln!("==> {}", escape(&name));
                current = Some((name, Instant::now()));
            }
            OperationEvent::Output { line, .. } => eprintln!("    {}", escape(&line)),
            OperationEvent::Started { .. } => {}
            OperationEvent::Finished { result } => last = Some(*result),
        })
        .await;
    if let Err(err) = streamed {
        return Err(err.context(format!(
            "lost the install's progress stream; it keeps running on the node: `kctl node \
             operation {} --follow` with the same --node and --fingerprint",
            escape(id)
        )));
    }
    let result = match last {
        Some(result) => result,
        None => {
            agent
                .get_json(&crate::paths::path(&["v1", "operations", id])?)
                .await?
        }
    };
    eprint!("{}", view::timings_text(&result));
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: InstallArgs,
    }

    fn parse(extra: &[&str]) -> Result<InstallArgs, clap::Error> {
        let mut argv = vec!["install", "--os-disk", "/dev/sda"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn every_flag_reaches_the_spec() {
        let args = parse(&[
            "--data-disk",
            "/dev/sdb",
            "--data-disk",
            "/dev/disk/by-id/nvme-x",
            "--data-disk-mode",
            "mirror",
            "--storage-backend",
            "zfs",
            "--lvm-vg-name",
            "vg1",
            "--lvm-lv-prefix",
            "p-",
            "--zfs-pool-name",
            "tank9",
            "--zfs-dataset-prefix",
            "vols",
            "--join-controller",
            "10.0.0.1:9090",
            "--join-controller",
            "10.0.0.2:9090",
            "--run-controller",
            "--dc-id",
            "DC7",
            "--hostname",
            "hv9",
            "--disable-vxlan",
            "--luks",
            "keyfile",
            "--luks-key-device",
            "/dev/sdz",
            "--yes",
            "--dry-run",
            "--advertise-address",
            "10.0.0.9:9090",
        ])
        .unwrap();
        assert!(args.yes && args.dry_run);
        let spec = args.spec("lab", "n1", &["ctx:9090".into()]).unwrap();
        assert_eq!(
            spec,
            InstallSpec {
                cluster: "lab".into(),
                node_id: "n1".into(),
                hostname: Some("hv9".into()),
                dc_id: "DC7".into(),
                controllers: vec!["10.0.0.1:9090".into(), "10.0.0.2:9090".into()],
                os_disk: "/dev/sda".into(),
                data_disks: vec!["/dev/sdb".into(), "/dev/disk/by-id/nvme-x".into()],
                data_disk_mode: DataDiskMode::Mirror,
                storage_backend: StorageBackend::Zfs,
                lvm_vg_name: Some("vg1".into()),
                lvm_lv_prefix: Some("p-".into()),
                zfs_pool_name: Some("tank9".into()),
                zfs_dataset_prefix: Some("vols".into()),
                luks: LuksChoice::Keyfile,
                luks_key_device: Some("/dev/sdz".into()),
                run_controller: true,
                disable_vxlan: true,
            }
        );
        assert_eq!(args.advertise_address.as_deref(), Some("10.0.0.9:9090"));
    }

    #[test]
    fn defaults_are_dc1_auto_luks_and_the_contexts_controllers() {
        let args = parse(&[]).unwrap();
        let spec = args.spec("lab", "n1", &["c1:9090".into()]).unwrap();
        assert_eq!(spec.dc_id, "DC1");
        assert_eq!(spec.luks, LuksChoice::Auto);
        assert_eq!(spec.controllers, ["c1:9090"]);
        assert_eq!(spec.storage_backend, StorageBackend::Filesystem);
        assert_eq!(spec.data_disk_mode, DataDiskMode::Stripe);
        assert!(!args.yes && !args.dry_run && !spec.run_controller);
        let err = args.spec("lab", "n1", &[]).unwrap_err().to_string();
        assert!(err.contains("--join-controller"), "{err}");
        // --os-disk is required.
        let err = Cli::try_parse_from(["install"]).err().unwrap().to_string();
        assert!(err.contains("--os-disk"), "{err}");
    }

    #[test]
    fn data_disk_mode_takes_a_layout_or_the_guides_backend_spelling() {
        let spec = |extra: &[&str]| parse(extra).unwrap().spec("lab", "n", &["c:1".into()]);
        let s = spec(&["--data-disk-mode", "lvm"]).unwrap();
        assert_eq!(s.storage_backend, StorageBackend::Lvm);
        assert_eq!(s.data_disk_mode, DataDiskMode::Stripe);
        let s = spec(&["--data-disk-mode", "zfs", "--storage-backend", "zfs"]).unwrap();
        assert_eq!(s.storage_backend, StorageBackend::Zfs);
        let err = spec(&["--data-disk-mode", "lvm", "--storage-backend", "zfs"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--data-disk-mode"), "{err}");
        let err = parse(&["--data-disk-mode", "raid5"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("stripe or mirror"), "{err}");
        let err = parse(&["--luks", "tpm"]).err().unwrap().to_string();
        assert!(err.contains("auto, tpm2 or keyfile"), "{err}");
    }

    #[test]
    fn the_confirmation_rule() {
        use Confirmation::*;
        for (dry, yes, tty, want) in [
            (true, false, false, DryRun),
            (true, true, true, DryRun),
            (false, true, false, Proceed),
            (false, true, true, Proceed),
            (false, false, true, Ask("hv1".into())),
            (false, false, false, Refuse),
        ] {
            assert_eq!(
                confirmation(dry, yes, tty, "hv1"),
                want,
                "{dry} {yes} {tty}"
            );
        }
        assert!(confirmed("hv1\n", "hv1"));
        assert!(confirmed("  hv1  ", "hv1"));
        assert!(!confirmed("HV1", "hv1"));
        assert!(!confirmed("yes", "hv1"));
        assert!(!confirmed("", "hv1"));
    }

    #[test]
    fn ids_and_claim_tokens_are_fresh_and_long_enough() {
        let a = new_node_id();
        assert!(uuid::Uuid::parse_str(&a).is_ok(), "{a}");
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 4);
        assert_ne!(a, new_node_id());
        let t = claim_token().unwrap();
        assert_eq!(t.len(), 64);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(t, claim_token().unwrap());
    }

    #[test]
    fn the_recovery_key_is_stored_0600_in_a_0700_directory() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("lab");
        std::fs::create_dir_all(ctx.join("recovery")).unwrap();
        std::fs::set_permissions(ctx.join("recovery"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let key = RecoveryKey {
            node_id: "n1".into(),
            luks_device: "/dev/disk/by-id/x-part2".into(),
            recovery_key: "aaaa-bbbb\n".into(),
            path_on_node: "/etc/kcore/recovery/luks-recovery-key.txt".into(),
        };
        let path = store_recovery_key(&ctx, &key).unwrap();
        assert_eq!(path, ctx.join("recovery/n1.luks-recovery-key.txt"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "aaaa-bbbb\n");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&ctx.join("recovery")), 0o700);
        // A second install of the same id replaces the key; no temp file is left.
        let again = RecoveryKey {
            recovery_key: "cccc".into(),
            ..key
        };
        store_recovery_key(&ctx, &again).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "cccc\n");
        let names: Vec<_> = std::fs::read_dir(ctx.join("recovery"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
