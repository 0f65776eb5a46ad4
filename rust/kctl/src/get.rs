//! `kctl get ...`: nodes and storage classes as tables (`-o wide` for more columns) or
//! JSON / YAML.

use clap::Subcommand;
use kcore_api::ErrorCode;
use kcore_api::cluster::{Node, NodeList, StorageClass, StorageClassList};

use crate::controller_client::connect;
use crate::global::GlobalArgs;
use crate::output::{OutputFormat, print, print_object};
use crate::paths;
use crate::target::ControllerTarget;
use crate::views::node::Nodes;
use crate::views::storage_class::StorageClasses;

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
