//! `kctl describe ...`: one node (storage backend, VG or pool, mounts, certificate, last
//! heartbeat, disks, NICs) or one storage class (its nodes), for people; `-o json|yaml`
//! prints the full object.

use clap::Subcommand;
use kcore_api::cluster::{Node, StorageClassDetail};

use crate::controller_client::connect;
use crate::global::GlobalArgs;
use crate::output::print_object;
use crate::paths;
use crate::target::ControllerTarget;
use crate::views::node::describe_node;
use crate::views::storage_class::describe_storage_class;

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
            print_object(&detail, global.output, || describe_storage_class(&detail))
        }
    }
}
