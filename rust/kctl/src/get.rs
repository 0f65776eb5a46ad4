//! `kctl get ...`: nodes and storage classes as tables (`-o wide` for more columns) or
//! JSON / YAML.

use clap::Subcommand;
use kcore_api::ErrorCode;
use kcore_api::cluster::{Node, NodeList, StorageClass, StorageClassList};
use serde::Serialize;

use crate::controller_client::connect;
use crate::global::GlobalArgs;
use crate::output::{OutputFormat, Tabular, print, print_object};
use crate::paths;
use crate::target::ControllerTarget;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: GetCommand,
}

#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// List every node with its status, DC, storage backend and certificate expiry.
    #[command(alias = "no")]
    Nodes,
    /// One node, as a one-row table.
    Node {
        /// The node's id.
        id: String,
    },
    /// Storage classes (filesystem, lvm, zfs, unspecified) with node counts, or one.
    #[command(alias = "storage-classes", alias = "sc")]
    StorageClass {
        /// Only this class.
        name: Option<String>,
    },
}

/// Nodes as printed by `get nodes`.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Nodes(pub Vec<Node>);

/// The date part of an RFC 3339 timestamp (enough for a table).
fn date(ts: &str) -> String {
    ts.split('T').next().unwrap_or(ts).to_string()
}

/// `5s`, `3m`, `2h`, `4d` since an RFC 3339 timestamp.
pub fn age(ts: &str) -> String {
    let Ok(then) = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
    else {
        return "?".into();
    };
    let secs = (time::OffsetDateTime::now_utc() - then)
        .whole_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

impl Tabular for Nodes {
    fn headers(&self, wide: bool) -> Vec<String> {
        let mut h = vec![
            "NAME",
            "STATUS",
            "DC",
            "HOSTNAME",
            "STORAGE",
            "ROLES",
            "CERT-EXPIRES",
        ];
        if wide {
            h.extend(["LAST-HEARTBEAT", "AGE", "DISKS", "NICS", "LABELS"]);
        }
        h.into_iter().map(String::from).collect()
    }

    fn rows(&self, wide: bool) -> Vec<Vec<String>> {
        self.0
            .iter()
            .map(|n| {
                let roles: Vec<String> = n
                    .report
                    .roles
                    .iter()
                    .map(|r| {
                        serde_json::to_value(r)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default()
                    })
                    .collect();
                let mut row = vec![
                    n.node_id.clone(),
                    n.status.to_string(),
                    n.report.dc_id.clone(),
                    n.report.hostname.clone(),
                    n.report.storage.class_name().to_string(),
                    if roles.is_empty() {
                        "<none>".into()
                    } else {
                        roles.join(",")
                    },
                    {
                        let expires = n
                            .certificate
                            .as_ref()
                            .map(|c| date(&c.not_after))
                            .unwrap_or_else(|| "<unknown>".into());
                        // The node says its renewals fail: `describe node` says why.
                        if n.report.certificate_renewal_problem.is_some() {
                            format!("{expires} (renewal failing)")
                        } else {
                            expires
                        }
                    },
                ];
                if wide {
                    let labels: Vec<String> = n
                        .report
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    row.extend([
                        n.last_heartbeat
                            .as_deref()
                            .map(age)
                            .unwrap_or_else(|| "<never>".into()),
                        n.registered_at.as_deref().map(age).unwrap_or_default(),
                        n.report.disks.len().to_string(),
                        n.report.nics.len().to_string(),
                        if labels.is_empty() {
                            "<none>".into()
                        } else {
                            labels.join(",")
                        },
                    ]);
                }
                row
            })
            .collect()
    }
}

/// Storage classes as printed by `get storage-class`.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct StorageClasses(pub Vec<StorageClass>);

impl Tabular for StorageClasses {
    fn headers(&self, _wide: bool) -> Vec<String> {
        ["NAME", "NODES", "READY"].map(String::from).to_vec()
    }

    fn rows(&self, _wide: bool) -> Vec<Vec<String>> {
        self.0
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.nodes.to_string(),
                    c.ready_nodes.to_string(),
                ]
            })
            .collect()
    }
}

pub async fn run(
    args: Args,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    // Checked before connecting: nothing is sent for a bad id or name.
    match &args.command {
        GetCommand::Node { id } => paths::node_id("<ID>", id)?,
        GetCommand::StorageClass { name: Some(name) } => paths::storage_class(name)?,
        _ => {}
    }
    let (_, client) = connect(global, controllers)?;
    match args.command {
        GetCommand::Nodes => {
            let list: NodeList = client.get_json("/v1/nodes").await?;
            print(&Nodes(list.items), global.output)
        }
        GetCommand::Node { id } => {
            let node: Node = client
                .get_json(&paths::path(&["v1", "nodes", &id])?)
                .await?;
            match global.output {
                // One object, not a one-element list, for scripts.
                OutputFormat::Json | OutputFormat::Yaml => {
                    print_object(&node, global.output, String::new)
                }
                format => print(&Nodes(vec![node]), format),
            }
        }
        GetCommand::StorageClass { name } => {
            let list: StorageClassList = client.get_json("/v1/storage-classes").await?;
            let items = match name {
                Some(name) => {
                    let found: Vec<StorageClass> =
                        list.items.into_iter().filter(|c| c.name == name).collect();
                    if found.is_empty() {
                        // A known name this controller does not list (another version).
                        return Err(crate::exit::Refused::new(
                            ErrorCode::NoSuchStorageClass,
                            format!("the controller lists no storage class {name:?}"),
                        )
                        .into());
                    }
                    found
                }
                None => list.items,
            };
            print(&StorageClasses(items), global.output)
        }
    }
}
