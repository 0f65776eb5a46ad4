//! `kctl delete <KIND> NAME`: remove one object (`DELETE /v1/<plural>/<name>`); the
//! controller keeps a tombstone so the deletion replicates. `kctl delete node ID` removes
//! a node's record (the node can register again unless it was rejected). A placed VM is
//! not gone at once: its node removes its volume first (docs/vms.md), and kctl says so. Storage classes
//! are derived from nodes and cannot be deleted.

use kcore_api::ErrorCode;
use kcore_api::resource::Deleted;

use crate::controller_client::connect;
use crate::escape::escape;
use crate::exit::Refused;
use crate::get::name_arg;
use crate::global::GlobalArgs;
use crate::kinds::{self, Target};
use crate::output::print_object;
use crate::target::ControllerTarget;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which controllers to call.
    #[command(flatten, next_help_heading = "Controllers")]
    pub controllers: crate::target::ControllerTarget,
    /// node, clusterupdate, vm or controller.
    #[arg(value_name = "KIND")]
    pub kind: String,
    /// The node's id or the object's metadata.name.
    #[arg(value_name = "NAME")]
    pub name: String,
}

pub async fn run(
    args: Args,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    let kind = match args.kind.parse::<Target>()? {
        Target::Kind(kind) => kind,
        Target::StorageClass => {
            return Err(Refused::new(
                ErrorCode::BadFlags,
                "storage classes are derived from the nodes in them and cannot be deleted",
            )
            .into());
        }
    };
    let path = kinds::object_path(kind, name_arg(kind), &args.name)?;
    let (_, client) = connect(global, controllers)?;
    let deleted: Deleted = client.delete(&path).await?;
    print_object(&deleted, global.output, || {
        let label = format!(
            "{}/{}",
            deleted.kind.as_str().to_ascii_lowercase(),
            escape(&deleted.name)
        );
        match &deleted.pending {
            // A placed VM: gone once its node confirms.
            Some(why) => format!("{label} deletion requested: {}\n", escape(why)),
            None => format!("{label} deleted\n"),
        }
    })
}
