//! `kctl describe ...`: one node (storage backend, VG or pool, mounts, certificate, last
//! heartbeat, disks, NICs) or one storage class (its nodes), for people; `-o json|yaml`
//! prints the full object.

use std::fmt::Write as _;

use clap::Subcommand;
use kcore_api::cluster::{Node, StorageClassDetail};

use crate::controller_client::connect;
use crate::escape::escape as e;
use crate::get::age;
use crate::global::GlobalArgs;
use crate::output::print_object;
use crate::paths;
use crate::target::ControllerTarget;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DescribeCommand,
}

#[derive(Debug, Subcommand)]
pub enum DescribeCommand {
    /// A node in detail.
    Node {
        /// The node's id.
        id: String,
    },
    /// A storage class and the nodes in it.
    #[command(alias = "sc")]
    StorageClass {
        /// filesystem, lvm, zfs or unspecified.
        name: String,
    },
}

fn bytes(n: Option<u64>) -> String {
    match n {
        None => "?".into(),
        Some(n) => {
            let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
            let mut value = n as f64;
            let mut unit = 0;
            while value >= 1024.0 && unit + 1 < units.len() {
                value /= 1024.0;
                unit += 1;
            }
            if unit == 0 {
                format!("{n} B")
            } else {
                format!("{value:.1} {}", units[unit])
            }
        }
    }
}

/// The human-readable description of a node. Every value that came from the node or the
/// controller is escaped ([`crate::escape`]): a newline in a label cannot start a fake line.
pub fn describe_node(n: &Node) -> String {
    let mut out = String::new();
    let r = &n.report;
    let _ = writeln!(out, "Name:            {}", e(&n.node_id));
    let _ = writeln!(
        out,
        "Status:          {} (approval: {})",
        n.status,
        n.approval.as_str()
    );
    let _ = writeln!(out, "Hostname:        {}", e(&r.hostname));
    let _ = writeln!(out, "DC:              {}", e(&r.dc_id));
    let roles: Vec<String> = r
        .roles
        .iter()
        .map(|x| format!("{x:?}").to_lowercase())
        .collect();
    let _ = writeln!(
        out,
        "Roles:           {}",
        if roles.is_empty() {
            "<none>".into()
        } else {
            roles.join(", ")
        }
    );
    let labels: Vec<String> = r
        .labels
        .iter()
        .map(|(k, v)| format!("{}={}", e(k), e(v)))
        .collect();
    let _ = writeln!(
        out,
        "Labels:          {}",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join(", ")
        }
    );
    if let Some(addr) = &r.agent_address {
        // What the node says about itself; nothing checked it. An operator who passes it
        // to `kctl --node` still gets the agent's certificate checked, but should know.
        let _ = writeln!(
            out,
            "Agent address:   {} (reported by the node, not verified)",
            e(addr)
        );
    }
    let _ = writeln!(
        out,
        "Registered:      {}",
        e(n.registered_at.as_deref().unwrap_or("<unknown>"))
    );
    let _ = writeln!(
        out,
        "Last heartbeat:  {}",
        n.last_heartbeat
            .as_deref()
            .map(|t| format!("{} ({} ago)", e(t), age(t)))
            .unwrap_or_else(|| "<never>".into())
    );
    if let Some(system) = &r.system {
        let _ = writeln!(out, "System:");
        if let Some(g) = &system.current {
            let _ = writeln!(
                out,
                "  Generation:    {} ({}, made {})",
                g.number,
                e(&g.store_path),
                e(&g.created)
            );
        }
        if let Some(booted) = &system.booted {
            let _ = writeln!(out, "  Booted:        {}", e(booted));
        }
    }
    let _ = writeln!(out, "Storage:");
    let _ = writeln!(out, "  Backend:       {}", r.storage.class_name());
    if let Some(vg) = &r.storage.volume_group {
        let _ = writeln!(
            out,
            "  Volume group:  {} (size {}, free {}, LV prefix {:?})",
            e(&vg.name),
            bytes(vg.size_bytes),
            bytes(vg.free_bytes),
            vg.lv_prefix
        );
    }
    if let Some(pool) = &r.storage.pool {
        let _ = writeln!(
            out,
            "  Pool:          {} (size {}, free {}, health {}, dataset prefix {:?})",
            e(&pool.name),
            bytes(pool.size_bytes),
            bytes(pool.free_bytes),
            e(pool.health.as_deref().unwrap_or("?")),
            pool.dataset_prefix
        );
    }
    if r.storage.mounts.is_empty() {
        let _ = writeln!(out, "  Mounts:        <none>");
    } else {
        let _ = writeln!(out, "  Mounts:");
        for m in &r.storage.mounts {
            let _ = writeln!(
                out,
                "    {} (size {}, free {})",
                e(&m.path),
                bytes(m.size_bytes),
                bytes(m.free_bytes)
            );
        }
    }
    let _ = writeln!(out, "Certificate:");
    match &n.certificate {
        Some(c) => {
            let _ = writeln!(out, "  Serial:        {}", e(&c.serial));
            let _ = writeln!(out, "  Issuer:        {}", e(&c.issuer));
            let _ = writeln!(out, "  Not before:    {}", e(&c.not_before));
            let _ = writeln!(out, "  Not after:     {}", e(&c.not_after));
        }
        None => {
            let _ = writeln!(out, "  <none presented to this controller yet>");
        }
    }
    if let Some(problem) = &r.certificate_renewal_problem {
        // Reported by the node: it keeps its current certificate and retries later.
        let _ = writeln!(out, "  Renewal:       FAILING: {problem}");
    }
    let _ = writeln!(out, "Disks:           {}", r.disks.len());
    for d in &r.disks {
        let name = d
            .get("path")
            .or_else(|| d.get("name"))
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        let size = d.get("sizeBytes").and_then(|v| v.as_u64());
        let _ = writeln!(out, "  {} ({})", e(name), bytes(size));
    }
    let _ = writeln!(out, "NICs:            {}", r.nics.len());
    for nic in &r.nics {
        let name = nic.get("name").and_then(|v| v.as_str()).unwrap_or("?");
        let state = nic.get("state").and_then(|v| v.as_str()).unwrap_or("?");
        let _ = writeln!(out, "  {} ({})", e(name), e(state));
    }
    out
}

pub async fn run(
    args: Args,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    // Checked before connecting: nothing is sent for a bad name.
    match &args.command {
        DescribeCommand::Node { id } => paths::node_id("<ID>", id)?,
        DescribeCommand::StorageClass { name } => paths::storage_class(name)?,
    }
    let (_, client) = connect(global, controllers)?;
    match args.command {
        DescribeCommand::Node { id } => {
            let node: Node = client
                .get_json(&paths::path(&["v1", "nodes", &id])?)
                .await?;
            print_object(&node, global.output, || describe_node(&node))
        }
        DescribeCommand::StorageClass { name } => {
            let detail: StorageClassDetail = client
                .get_json(&paths::path(&["v1", "storage-classes", &name])?)
                .await?;
            print_object(&detail, global.output, || {
                let mut out = String::new();
                let _ = writeln!(out, "Name:   {}", e(&detail.class.name));
                let _ = writeln!(
                    out,
                    "Nodes:  {} ({} ready)",
                    detail.class.nodes, detail.class.ready_nodes
                );
                for n in &detail.nodes {
                    let _ = writeln!(
                        out,
                        "  {}  {}  {}  {}",
                        e(&n.node_id),
                        n.status,
                        e(&n.report.dc_id),
                        e(&n.report.hostname)
                    );
                }
                out
            })
        }
    }
}
