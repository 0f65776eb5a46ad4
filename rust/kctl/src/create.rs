//! `kctl create ...`: a new cluster's PKI and context (`cluster`), a node's or scraper's
//! key and CSR (`csr`, run where the key is used), a node's first certificate from that
//! CSR (`node-cert`, signed by a controller's sub-CA), a Prometheus scraper's certificate
//! (`metrics-cert`, role `metrics`, docs/metrics.md), a VM from flags (`vm`,
//! [`crate::vm`]), and one more controller for an existing cluster (`controller`: its
//! certificate and controller.yaml, never the sub-CA key, which the controller fetches
//! from a peer over mTLS once it runs).

use kcore_api::ErrorCode;
use kcore_controller::ControllerConfig;
use kcore_controller::config::ControllerTls;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use kcore_api::cluster::{
    CertificateResponse, IssueMetricsCertificateRequest, IssueNodeCertificateRequest,
};
use kcore_pki::{Authority, Identity, Role};

use crate::context::{self, Context, KctlConfig};
use crate::controller_client;
use crate::exit::Refused;
use crate::global::GlobalArgs;
use crate::target::ControllerTarget;

/// Root CA: 10 years (it stays on the operator's machine).
pub const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Controllers' sub-CA: 5 years; `kctl rotate sub-ca` replaces it earlier.
pub const SUB_CA_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// Admin and controller certificates: 1 year.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which controllers to call.
    #[command(flatten, next_help_heading = "Controllers")]
    pub controllers: crate::target::ControllerTarget,
    #[command(subcommand)]
    pub command: CreateCommand,
}

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// Create a cluster: root CA (key stays here, mode 0600), the controllers' sub-CA,
    /// an admin certificate, one certificate and controller.yaml per controller, and a
    /// context named by --context that becomes the current one.
    Cluster(ClusterArgs),
    /// On a node: make its private key (mode 0600) and a CSR for its identity. Only the
    /// CSR leaves the node.
    Csr(CsrArgs),
    /// Have a controller sign a node's CSR (its first certificate) and write the chain.
    NodeCert(NodeCertArgs),
    /// A certificate for a Prometheus scraper (role `metrics`: it may call `GET /metrics`
    /// on controllers and agents and nothing else), signed by a controller's sub-CA.
    MetricsCert(MetricsCertArgs),
    /// Create (or update) a VM from flags: the same object `kctl apply -f` takes.
    Vm(crate::vm::CreateArgs),
    /// Prepare one more controller of the current context's cluster: its certificate
    /// (from --csr, so the key is made where it runs, or with a key made here), ca.crt,
    /// sub-ca.crt and a controller.yaml whose only peer is an existing controller. The
    /// sub-CA key is not written: the controller fetches it from that peer over mTLS after
    /// it starts. The others discover it from its record; kctl learns it after its next
    /// command.
    Controller(ControllerArgs),
}

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// The address other controllers and kctl dial (its advertiseAddress), HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub address: String,
    /// Its data centre (dcId).
    #[arg(long, value_name = "DC")]
    pub dc_id: Option<String>,
    /// A CSR made on the controller (`kctl create csr`-style, for
    /// kcore://<cluster>/controller/<ID>); without it kctl makes the key here (0600).
    #[arg(long, value_name = "FILE")]
    pub csr: Option<PathBuf>,
    /// Its id; default the first free ctlN under the context's controllers/ directory.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// The directory to write; default controllers/<ID> in the context's directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// A controller's address as HOST:PORT (port 9090 by convention); repeat for each.
    #[arg(long = "controller", value_name = "HOST:PORT", required = true)]
    pub controllers: Vec<String>,
    /// The cluster name in identities (kcore://<cluster>/...); defaults to the context name.
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CsrArgs {
    /// This node's id (the nodeId in node-agent.yaml), or the scraper's name with
    /// `--role metrics`.
    #[arg(long, visible_alias = "id", value_name = "ID")]
    pub node_id: String,
    /// Whom the key is for: `node` (an agent) or `metrics` (a Prometheus scraper, then
    /// signed with `kctl create metrics-cert ID --csr FILE`).
    #[arg(long, default_value = "node", value_parser = csr_role)]
    pub role: Role,
    /// The cluster name (the NAME of `kctl create cluster`'s identities).
    #[arg(long, value_name = "NAME")]
    pub cluster: String,
    /// Where to write the private key (mode 0600); refused if it exists.
    #[arg(long, value_name = "FILE")]
    pub key_out: PathBuf,
    /// Where to write the CSR (PEM), the file to hand to the operator.
    #[arg(long, value_name = "FILE")]
    pub csr_out: PathBuf,
    /// A DNS name or IP the agent is reached at; repeat. Default: this host's name,
    /// localhost and 127.0.0.1.
    #[arg(long = "dns", value_name = "NAME")]
    pub dns_names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct NodeCertArgs {
    /// The node's id; the CSR must be for exactly this identity.
    #[arg(long, value_name = "ID")]
    pub node_id: String,
    /// The node's CSR (from `kctl create csr` on the node).
    #[arg(long, value_name = "FILE")]
    pub csr: PathBuf,
    /// Where to write the certificate chain (the node's tls.certFile).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Also write the cluster's root CA certificate here (the node's tls.caFile).
    #[arg(long, value_name = "FILE")]
    pub ca_out: Option<PathBuf>,
    /// Sign with the context's own sub-CA key on this machine instead of asking a
    /// controller (before any controller runs, or air-gapped). Names in the CSR are kept;
    /// wildcards are refused as always.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, clap::Args)]
pub struct MetricsCertArgs {
    /// The scraper's name: the certificate speaks for kcore://<cluster>/metrics/NAME.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where to write NAME.crt, ca.crt and (without --csr) NAME.key.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// The scraper's CSR, made where the scraper runs (`kctl create csr --role metrics
    /// --id NAME ...`), so its key never leaves that machine. Without it the key is made
    /// here (mode 0600) and has to be copied to the scraper.
    #[arg(long, value_name = "FILE")]
    pub csr: Option<PathBuf>,
    /// Sign with the context's own sub-CA key on this machine instead of asking a
    /// controller (as `create node-cert --offline`).
    #[arg(long)]
    pub offline: bool,
}

/// `--role`: the roles whose keys are made apart from kctl (admin and controller keys
/// come from `create cluster`).
fn csr_role(value: &str) -> Result<Role, String> {
    match value.parse::<Role>()? {
        role @ (Role::Node | Role::Metrics) => Ok(role),
        other => Err(format!(
            "{other} keys come from `kctl create cluster`; use node or metrics"
        )),
    }
}

pub async fn run(
    args: Args,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    match args.command {
        CreateCommand::Cluster(a) => create_cluster(a, global),
        CreateCommand::Csr(a) => create_csr(a, global),
        CreateCommand::NodeCert(a) => create_node_cert(a, global, controllers).await,
        CreateCommand::MetricsCert(a) => create_metrics_cert(a, global, controllers).await,
        CreateCommand::Vm(a) => crate::vm::create(&a, global, controllers).await,
        CreateCommand::Controller(a) => create_controller(a, global),
    }
}

/// What a `create` command made, as `-o json|yaml` prints it: the identity, the files
/// written (by role: `certificate`, `key`, `csr`, `ca`, ...) and when the certificate ends.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    /// `cluster`, `controller`, `csr`, `node-cert` or `metrics-cert`.
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<String>,
    files: std::collections::BTreeMap<String, PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
}

impl Created {
    fn new(kind: &'static str) -> Created {
        Created {
            kind,
            ..Default::default()
        }
    }

    fn file(mut self, role: impl Into<String>, path: &Path) -> Created {
        self.files.insert(role.into(), path.to_path_buf());
        self
    }
}

fn write(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    kcore_pki::write_atomically(path, contents.as_bytes(), mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `HOST:PORT` split, with a clear error naming the flag.
fn split_host_port(flag: &str, value: &str) -> anyhow::Result<(String, u16)> {
    let bad = || {
        Refused::new(
            ErrorCode::InvalidAddress,
            format!("{flag} {value:?}: expected HOST:PORT, for example 10.0.0.5:9090"),
        )
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad().into());
    }
    Ok((host.to_string(), port))
}

/// The configuration of controller `id`: what kctl decides (identity, listen address,
/// peers, files under `dir`), and the controller's own defaults for the rest, taken by
/// decoding the required keys alone so no default is copied here.
fn controller_config(
    id: &str,
    cluster: &str,
    listen: SocketAddr,
    peers: &[String],
    dir: &Path,
) -> anyhow::Result<ControllerConfig> {
    let tls = ControllerTls {
        ca_file: dir.join("ca.crt"),
        cert_file: dir.join("controller.crt"),
        key_file: dir.join("controller.key"),
        sub_ca_cert_file: dir.join("sub-ca.crt"),
        sub_ca_key_file: dir.join("sub-ca.key"),
    };
    let required = serde_json::json!({"controllerId": id, "clusterName": cluster, "tls": tls});
    let mut config: ControllerConfig =
        serde_json::from_value(required).context("building controller.yaml")?;
    config.listen = listen;
    config.peers = peers.to_vec();
    config.database_path = dir.join("state.sqlite");
    Ok(config)
}

/// `config` as controller.yaml text, checked with the controller's own parser so kctl
/// never writes a file the controller would refuse.
fn controller_yaml(config: &ControllerConfig) -> anyhow::Result<String> {
    let text = serde_yaml_ng::to_string(config).context("writing controller.yaml")?;
    ControllerConfig::parse(&text, Path::new("controller.yaml"))
        .context("the controller.yaml kctl wrote does not parse back")?;
    Ok(text)
}

fn create_cluster(args: ClusterArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let name = global.context.clone().ok_or_else(|| {
        Refused::new(
            ErrorCode::NoContextName,
            "name the new context with --context NAME (it also becomes the cluster name)",
        )
    })?;
    let cluster = args.cluster_name.clone().unwrap_or_else(|| name.clone());
    Identity::new(&cluster, Role::Admin, "admin").map_err(|e| {
        Refused::new(
            ErrorCode::InvalidClusterName,
            format!("--cluster-name / --context: {e}"),
        )
    })?;
    let config_path = context::config_path(global)?;
    let mut config = KctlConfig::load(&config_path)?;
    let dir = context::context_dir(&config_path, &name);
    if dir.join("ca.key").exists() || config.find(&name).is_some() {
        return Err(Refused::new(
            ErrorCode::ContextExists,
            format!(
                "context {name:?} already exists ({}); pick another --context name (its root CA key is never overwritten)",
                dir.display()
            ),
        )
        .into());
    }
    let mut listens = Vec::new();
    for controller in &args.controllers {
        let (host, port) = split_host_port("--controller", controller)?;
        listens.push((host, port));
    }

    let root = Authority::new_root(&cluster, ROOT_VALIDITY).context("creating the root CA")?;
    let sub = root
        .new_sub_ca("controllers", SUB_CA_VALIDITY)
        .context("creating the controllers' sub-CA")?;
    let admin = root
        .issue(
            &Identity::new(&cluster, Role::Admin, "admin")?,
            &[],
            LEAF_VALIDITY,
        )
        .context("issuing the admin certificate")?;
    // Key files first, all 0600; the config is written last so a failure leaves no
    // context pointing at missing files.
    write(&dir.join("ca.key"), root.key_pem(), 0o600)?;
    write(&dir.join("ca.crt"), root.cert_pem(), 0o644)?;
    write(&dir.join("sub-ca.key"), sub.key_pem(), 0o600)?;
    write(&dir.join("sub-ca.crt"), sub.cert_pem(), 0o644)?;
    write(&dir.join("admin.key"), &admin.key_pem, 0o600)?;
    write(&dir.join("admin.crt"), &admin.cert_pem, 0o644)?;

    let mut controller_dirs = Vec::new();
    for (i, (host, port)) in listens.iter().enumerate() {
        let id = format!("ctl{}", i + 1);
        let cdir = dir.join("controllers").join(&id);
        let peers: Vec<String> = args
            .controllers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, c)| c.clone())
            .collect();
        let cert = sub
            .issue(
                &Identity::new(&cluster, Role::Controller, &id)?,
                std::slice::from_ref(host),
                LEAF_VALIDITY,
            )
            .with_context(|| format!("issuing the certificate of controller {id} ({host})"))?;
        write(&cdir.join("controller.key"), &cert.key_pem, 0o600)?;
        write(&cdir.join("controller.crt"), &cert.cert_pem, 0o644)?;
        write(&cdir.join("sub-ca.key"), sub.key_pem(), 0o600)?;
        write(&cdir.join("sub-ca.crt"), sub.cert_pem(), 0o644)?;
        write(&cdir.join("ca.crt"), root.cert_pem(), 0o644)?;
        // Listen on the given address when it is an IP, on every address otherwise.
        let listen = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, *port),
            Err(_) => SocketAddr::from(([0, 0, 0, 0], *port)),
        };
        let mut config = controller_config(&id, &cluster, listen, &peers, &cdir)?;
        // The address the operator named is the one other controllers dial (a host name
        // listens on 0.0.0.0, which must never be recorded for discovery).
        config.advertise_address = Some(args.controllers[i].clone());
        write(
            &cdir.join("controller.yaml"),
            &controller_yaml(&config)?,
            0o644,
        )?;
        controller_dirs.push((id, cdir));
    }

    config.upsert(Context {
        name: name.clone(),
        cluster: cluster.clone(),
        controllers: args.controllers.clone(),
        ca_file: dir.join("ca.crt"),
        ca_key_file: dir.join("ca.key"),
        cert_file: dir.join("admin.crt"),
        key_file: dir.join("admin.key"),
    });
    config.current_context = Some(name.clone());
    config.save(&config_path)?;

    let mut created = Created::new("cluster")
        .file("ca", &dir.join("ca.crt"))
        .file("caKey", &dir.join("ca.key"))
        .file("adminCertificate", &dir.join("admin.crt"))
        .file("kctlConfig", &config_path);
    created.identity = Some(format!("kcore://{cluster}"));
    created.context = Some(name.clone());
    for (id, cdir) in &controller_dirs {
        created = created.file(format!("controller/{id}"), cdir);
    }
    crate::output::print_object(&created, global.output, || {
        let mut text = format!(
            "cluster {cluster:?} created; context {name:?} is now current ({})\n",
            config_path.display()
        );
        text += &format!(
            "  root CA:  {} (key {}, mode 0600: keep it safe, offline if you can)\n",
            dir.join("ca.crt").display(),
            dir.join("ca.key").display()
        );
        text += &format!("  admin:    {}\n", dir.join("admin.crt").display());
        for (id, cdir) in &controller_dirs {
            text += &format!(
                "  {id}:     copy {} to the controller; start it with --config controller.yaml\n",
                cdir.display()
            );
        }
        text
    })
}

/// `kctl create controller`: see [`CreateCommand::Controller`].
fn create_controller(args: ControllerArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let ctx = context::resolve(global)?;
    let (host, port) = split_host_port("--address", &args.address)?;
    kcore_api::controller::address("--address", &args.address)
        .map_err(|e| Refused::new(ErrorCode::InvalidAddress, e.to_string()))?;
    let Some(seed) = ctx.controllers.first().cloned() else {
        return Err(Refused::new(
            ErrorCode::NoControllers,
            format!(
                "context {:?} lists no controllers: the new controller needs an existing one as its peer",
                ctx.name
            ),
        )
        .into());
    };
    let ctx_dir = ctx
        .ca_key_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let id = match &args.id {
        Some(id) => id.clone(),
        None => (1..)
            .map(|n| format!("ctl{n}"))
            .find(|id| !ctx_dir.join("controllers").join(id).exists())
            .unwrap_or_else(|| "ctl1".into()),
    };
    let identity = Identity::new(&ctx.cluster, Role::Controller, &id)
        .map_err(|e| Refused::new(ErrorCode::InvalidIdentity, format!("--id {id:?}: {e}")))?;
    let cdir = args
        .out
        .clone()
        .unwrap_or_else(|| ctx_dir.join("controllers").join(&id));
    if cdir.join("controller.yaml").exists() {
        return Err(Refused::new(
            ErrorCode::ContextExists,
            format!(
                "{} already holds a controller.yaml; pick another --id or --out",
                cdir.display()
            ),
        )
        .into());
    }
    let read = |name: &str| {
        let path = ctx_dir.join(name);
        std::fs::read_to_string(&path)
            .with_context(|| format!("the context's {name} ({})", path.display()))
    };
    let sub = Authority::from_pem(&read("sub-ca.crt")?, &read("sub-ca.key")?)
        .context("loading the context's sub-CA")?;
    let chain_pem = match &args.csr {
        Some(csr) => {
            let csr_pem = std::fs::read_to_string(csr)
                .with_context(|| format!("cannot read the CSR {}", csr.display()))?;
            sub.sign_csr(&csr_pem, &identity, LEAF_VALIDITY)
                .with_context(|| {
                    format!("--csr {}: signing it as {}", csr.display(), identity.uri())
                })?
        }
        None => {
            let cert = sub
                .issue(&identity, std::slice::from_ref(&host), LEAF_VALIDITY)
                .with_context(|| format!("issuing the certificate of controller {id} ({host})"))?;
            write(&cdir.join("controller.key"), &cert.key_pem, 0o600)?;
            cert.cert_pem
        }
    };
    write(&cdir.join("controller.crt"), &chain_pem, 0o644)?;
    write(&cdir.join("sub-ca.crt"), sub.cert_pem(), 0o644)?;
    write(&cdir.join("ca.crt"), &read("ca.crt")?, 0o644)?;
    let listen = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => SocketAddr::from(([0, 0, 0, 0], port)),
    };
    let mut config = controller_config(
        &id,
        &ctx.cluster,
        listen,
        std::slice::from_ref(&seed),
        &cdir,
    )?;
    config.advertise_address = Some(args.address.clone());
    if let Some(dc) = &args.dc_id {
        config.dc_id = dc.clone();
    }
    write(
        &cdir.join("controller.yaml"),
        &controller_yaml(&config)?,
        0o644,
    )?;
    let mut created = Created::new("controller")
        .file("directory", &cdir)
        .file("config", &cdir.join("controller.yaml"));
    created.identity = Some(format!("kcore://{}/controller/{id}", ctx.cluster));
    crate::output::print_object(&created, global.output, || {
        format!(
            "controller {id} ({}) prepared in {}: copy it to the controller{} and start it with --config controller.yaml; it fetches the sub-CA key from {seed} and joins",
            args.address,
            cdir.display(),
            if args.csr.is_some() {
                ", next to the key its CSR was made with (tls.keyFile)"
            } else {
                ""
            }
        ) + "\n"
    })?;
    Ok(())
}

fn default_dns_names() -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    names.push("localhost".into());
    names.push("127.0.0.1".into());
    names.dedup();
    names
}

fn create_csr(args: CsrArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let identity = Identity::new(&args.cluster, args.role, &args.node_id).map_err(|e| {
        Refused::new(
            ErrorCode::InvalidIdentity,
            format!("--cluster / --node-id: {e}"),
        )
    })?;
    if args.key_out.exists() {
        return Err(Refused::new(
            ErrorCode::KeyExists,
            format!(
                "{} exists; refusing to replace a node key (move it away first if you mean it)",
                args.key_out.display()
            ),
        )
        .into());
    }
    // A scraper is only ever a client: its certificate names no host.
    let names = if args.role == Role::Metrics {
        Vec::new()
    } else if args.dns_names.is_empty() {
        default_dns_names()
    } else {
        args.dns_names.clone()
    };
    let (key_pem, csr_pem) =
        kcore_pki::generate_csr(&identity, &names).context("creating the key and CSR")?;
    write(&args.key_out, &key_pem, 0o600)?;
    write(&args.csr_out, &csr_pem, 0o644)?;
    let mut created = Created::new("csr")
        .file("key", &args.key_out)
        .file("csr", &args.csr_out);
    created.identity = Some(identity.uri());
    crate::output::print_object(&created, global.output, || {
        if args.role == Role::Metrics {
            return format!(
                "key {} (0600) and CSR {} for {}; have the operator run `kctl create metrics-cert {} --csr FILE`\n",
                args.key_out.display(),
                args.csr_out.display(),
                identity.uri(),
                args.node_id
            );
        }
        format!(
            "key {} (0600) and CSR {} for {} ({}); have the operator run `kctl create node-cert --node-id {} --csr FILE --out FILE`\n",
            args.key_out.display(),
            args.csr_out.display(),
            identity.uri(),
            names.join(", "),
            args.node_id
        )
    })
}

async fn create_node_cert(
    args: NodeCertArgs,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    crate::paths::node_id("--node-id", &args.node_id)?;
    let csr_pem = std::fs::read_to_string(&args.csr)
        .with_context(|| format!("cannot read the CSR {}", args.csr.display()))?;
    let (ctx, signed) = if args.offline {
        let ctx = crate::context::resolve(global)?;
        let identity =
            kcore_pki::Identity::new(&ctx.cluster, kcore_pki::Role::Node, &args.node_id)?;
        let signed = sign_offline(&ctx, &csr_pem, &identity, kcore_pki::NODE_CERT_VALIDITY)
            .with_context(|| format!("signing the CSR of node {:?}", args.node_id))?;
        (ctx, signed)
    } else {
        let (ctx, client) = controller_client::connect(global, controllers)?;
        let signed: CertificateResponse = client
            .post_json(
                "/v1/certificates/node",
                &IssueNodeCertificateRequest {
                    node_id: args.node_id.clone(),
                    csr_pem,
                },
            )
            .await
            .with_context(|| format!("signing the CSR of node {:?}", args.node_id))?;
        (ctx, (signed.chain_pem, signed.certificate.not_after))
    };
    let (chain_pem, not_after) = signed;
    write(&args.out, &chain_pem, 0o644)?;
    if let Some(ca_out) = &args.ca_out {
        let ca = std::fs::read_to_string(&ctx.ca_file)
            .with_context(|| format!("cannot read {}", ctx.ca_file.display()))?;
        write(ca_out, &ca, 0o644)?;
    }
    let mut created = Created::new("node-cert").file("certificate", &args.out);
    if let Some(ca_out) = &args.ca_out {
        created = created.file("ca", ca_out);
    }
    created.identity = Some(format!("kcore://{}/node/{}", ctx.cluster, args.node_id));
    created.expires = Some(not_after.clone());
    crate::output::print_object(&created, global.output, || {
        format!(
            "certificate for node {:?} written to {} (expires {})\n",
            args.node_id,
            args.out.display(),
            crate::escape::escape(&not_after)
        )
    })
}

/// Signs `csr_pem` for `identity` with the context's own sub-CA key on this machine
/// (`--offline`: before any controller runs, or air-gapped). Returns the chain and its
/// expiry (RFC 3339).
fn sign_offline(
    ctx: &Context,
    csr_pem: &str,
    identity: &Identity,
    validity: Duration,
) -> anyhow::Result<(String, String)> {
    let dir = ctx
        .ca_key_file
        .parent()
        .unwrap_or(std::path::Path::new("."));
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path)
            .with_context(|| format!("--offline needs the context's {name} ({})", path.display()))
    };
    let sub = kcore_pki::Authority::from_pem(&read("sub-ca.crt")?, &read("sub-ca.key")?)
        .context("loading the context's sub-CA")?;
    let chain_pem = sub.sign_csr(csr_pem, identity, validity)?;
    let not_after = kcore_pki::not_after(&chain_pem)?;
    let not_after = not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| not_after.to_string());
    Ok((chain_pem, not_after))
}

async fn create_metrics_cert(
    args: MetricsCertArgs,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    let ctx = crate::context::resolve(global)?;
    let identity = Identity::new(&ctx.cluster, Role::Metrics, &args.name)
        .map_err(|e| Refused::new(ErrorCode::InvalidIdentity, format!("NAME: {e}")))?;
    let key_path = args.out.join(format!("{}.key", args.name));
    let cert_path = args.out.join(format!("{}.crt", args.name));
    let ca_path = args.out.join("ca.crt");
    // With --csr the key stays where the scraper runs; without, it is made here.
    let (csr_pem, key_pem) = match &args.csr {
        Some(csr) => (
            std::fs::read_to_string(csr)
                .with_context(|| format!("cannot read the CSR {}", csr.display()))?,
            None,
        ),
        None => {
            if key_path.exists() {
                return Err(Refused::new(
                    ErrorCode::KeyExists,
                    format!(
                        "{} exists; refusing to replace a scraper key (move it away, or pass --csr with a CSR made for it)",
                        key_path.display()
                    ),
                )
                .into());
            }
            let (key_pem, csr_pem) =
                kcore_pki::generate_csr(&identity, &[]).context("creating the key and CSR")?;
            (csr_pem, Some(key_pem))
        }
    };
    let signed = if args.offline {
        sign_offline(&ctx, &csr_pem, &identity, kcore_pki::METRICS_CERT_VALIDITY)
    } else {
        let (_, client) = controller_client::connect(global, controllers)?;
        let request = IssueMetricsCertificateRequest {
            name: args.name.clone(),
            csr_pem,
        };
        client
            .post_json::<_, CertificateResponse>("/v1/certificates/metrics", &request)
            .await
            .map(|signed| (signed.chain_pem, signed.certificate.not_after))
    };
    let (chain_pem, not_after) =
        signed.with_context(|| format!("signing the CSR of {}", identity.uri()))?;
    if let Some(key_pem) = &key_pem {
        write(&key_path, key_pem, 0o600)?;
    }
    write(&cert_path, &chain_pem, 0o644)?;
    let ca = std::fs::read_to_string(&ctx.ca_file)
        .with_context(|| format!("cannot read {}", ctx.ca_file.display()))?;
    write(&ca_path, &ca, 0o644)?;
    let mut created = Created::new("metrics-cert")
        .file("certificate", &cert_path)
        .file("ca", &ca_path);
    if key_pem.is_some() {
        created = created.file("key", &key_path);
    }
    created.identity = Some(identity.uri());
    created.expires = Some(not_after.clone());
    crate::output::print_object(&created, global.output, || {
        let mut text = format!(
            "certificate for {} written to {} (expires {}); CA {}\n",
            identity.uri(),
            cert_path.display(),
            crate::escape::escape(&not_after),
            ca_path.display()
        );
        if key_pem.is_some() {
            text += &format!(
                "  key {} (0600): copy it to the scraper with the certificate\n",
                key_path.display()
            );
        }
        text += "  Prometheus: scheme https, tls_config { ca_file, cert_file, key_file } with these files (docs/metrics.md)\n";
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parsing_names_the_flag() {
        assert_eq!(
            split_host_port("--controller", "10.0.0.5:9090").unwrap(),
            ("10.0.0.5".into(), 9090)
        );
        assert_eq!(
            split_host_port("--controller", "[::1]:9090").unwrap(),
            ("::1".into(), 9090)
        );
        let err = split_host_port("--controller", "ctl1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--controller"), "{err}");
    }

    #[test]
    fn controller_yaml_is_accepted_by_the_controller() {
        let peers = vec!["10.0.0.6:9090".to_string()];
        let config = controller_config(
            "ctl1",
            "lab",
            "127.0.0.1:9090".parse().unwrap(),
            &peers,
            Path::new("/x y/ctl1"),
        )
        .unwrap();
        let text = controller_yaml(&config).unwrap();
        let config =
            kcore_controller::ControllerConfig::parse(&text, Path::new("controller.yaml")).unwrap();
        assert_eq!(
            config.tls.key_file,
            PathBuf::from("/x y/ctl1/controller.key")
        );
        assert_eq!(config.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(config.peers, peers);
        assert_eq!(
            config.database_path,
            PathBuf::from("/x y/ctl1/state.sqlite")
        );
        // The controller's defaults, not copies of them.
        assert_eq!(config.heartbeat_timeout_seconds, 45);
        assert!(!config.require_manual_approval);
    }

    #[test]
    fn controller_yaml_round_trips_every_field() {
        // Every field away from its default, so a field that is not written (or written
        // under another name) comes back different.
        let config = ControllerConfig {
            controller_id: "ctl-2".into(),
            cluster_name: "lab-b".into(),
            dc_id: "DC2".into(),
            listen: "[::1]:9443".parse().unwrap(),
            require_manual_approval: true,
            peers: vec!["10.0.0.5:9090".into(), "ctl3.example:9090".into()],
            heartbeat_timeout_seconds: 90,
            database_path: PathBuf::from("/srv/\"quoted\" dir/state.sqlite"),
            max_clock_skew_seconds: 5,
            advertise_address: Some("ctl2.example:9443".into()),
            compaction: kcore_controller::config::CompactionConfig {
                interval_seconds: 7,
                retention_seconds: 8,
                tombstone_lifetime_seconds: 9,
                snapshot_page_rows: 10,
            },
            tls: ControllerTls {
                ca_file: "/k/ca: x.crt".into(),
                cert_file: "/k/c.crt".into(),
                key_file: "/k/c.key".into(),
                sub_ca_cert_file: "/k/s.crt".into(),
                sub_ca_key_file: "/k/s.key".into(),
            },
            connections: kcore_net::ConnectionLimits {
                max_connections: Some(7),
                max_connections_per_peer: Some(3),
                handshake_timeout_seconds: Some(11),
                first_request_timeout_seconds: Some(12),
                idle_timeout_seconds: Some(13),
                body_timeout_seconds: Some(14),
            },
        };
        let text = controller_yaml(&config).unwrap();
        let back = ControllerConfig::parse(&text, Path::new("controller.yaml")).unwrap();
        assert_eq!(back, config, "{text}");
        for key in [
            "requireManualApproval:",
            "maxClockSkewSeconds:",
            "subCaKeyFile:",
            "maxConnectionsPerPeer:",
            "advertiseAddress:",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
    }
}
