//! `kctl describe <KIND> NAME`: one object for people. A node shows its storage backend,
//! VG or pool, mounts, certificate, last heartbeat, disks and NICs; a storage class its
//! nodes; a stored kind (ClusterUpdate, VM, ...) its metadata, spec and status.
//! `-o json|yaml` prints the full object.

use kcore_api::ErrorCode;
use kcore_api::cluster::{Node, StorageClassDetail};
use kcore_api::resource::Kind;

use crate::controller_client::connect;
use crate::exit::Refused;
use crate::get::name_arg;
use crate::global::GlobalArgs;
use crate::kinds::{self, Target};
use crate::output::print_object;
use crate::paths;
use crate::target::ControllerTarget;
use crate::views::node::describe_node;
use crate::views::resource::describe;
use crate::views::storage_class::describe_storage_class;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which controllers to call.
    #[command(flatten, next_help_heading = "Controllers")]
    pub controllers: crate::target::ControllerTarget,
    /// node, clusterupdate, vm, controller, or storage-class (sc).
    #[arg(value_name = "KIND")]
    pub kind: String,
    /// The node's id, the object's metadata.name, or the storage class (filesystem, lvm,
    /// zfs or unspecified).
    #[arg(value_name = "NAME")]
    pub name: String,
}

pub async fn run(
    args: Args,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    // Checked before connecting: nothing is sent for a bad kind or name.
    let target: Target = args.kind.parse()?;
    let path = match target {
        Target::Kind(kind) => kinds::object_path(kind, name_arg(kind), &args.name)?,
        Target::StorageClass => {
            paths::storage_class(&args.name)?;
            paths::path(&["v1", "storage-classes", &args.name])?
        }
        Target::SubCa => {
            return Err(Refused::new(
                ErrorCode::BadFlags,
                "sub-CAs are listed, not described: `kctl get sub-cas` (-o yaml for every field)",
            )
            .into());
        }
    };
    let (_, client) = connect(global, controllers)?;
    match target {
        Target::Kind(Kind::Node) => {
            let node: Node = client.get_json(&path).await?;
            print_object(&node, global.output, || describe_node(&node))
        }
        Target::Kind(Kind::Vm) => {
            let object: serde_json::Value = client.get_json(&path).await?;
            print_object(&object, global.output, || {
                crate::views::vm::describe(&object)
            })
        }
        Target::Kind(_) => {
            let object: serde_json::Value = client.get_json(&path).await?;
            print_object(&object, global.output, || describe(&object))
        }
        Target::StorageClass => {
            let detail: StorageClassDetail = client.get_json(&path).await?;
            print_object(&detail, global.output, || describe_storage_class(&detail))
        }
        // Refused before connecting.
        Target::SubCa => Ok(()),
    }
}
