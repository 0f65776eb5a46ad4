//! `kctl delete <KIND> NAME`: remove one object (`DELETE /v1/<plural>/<name>`); the
//! controller keeps a tombstone so the deletion replicates. `kctl delete node ID` removes
//! a node's record (the node can register again unless it was rejected). A placed VM is
//! not gone at once: its node removes its volume first (docs/vms.md), and kctl says so. Storage classes
//! are derived from nodes and cannot be deleted. `kctl delete controller ID` goes to the
//! controllers one at a time: the one being deleted refuses (`CONTROLLER_DELETES_ITSELF`),
//! and the next one does it.

use kcore_api::ErrorCode;
use kcore_api::resource::{Deleted, Kind};

use crate::controller_client::{client_for, connect, servers};
use crate::escape::escape;
use crate::exit::Refused;
use crate::get::name_arg;
use crate::global::GlobalArgs;
use crate::kinds::{self, Target};
use crate::output::print_object;
use crate::remote::{Expected, Remote};
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
        Target::SubCa => {
            return Err(Refused::new(
                ErrorCode::BadFlags,
                "a sub-CA is not deleted: `kctl revoke sub-ca SERIAL` revokes a retired one",
            )
            .into());
        }
    };
    let path = kinds::object_path(kind, name_arg(kind), &args.name)?;
    let deleted: Deleted = if kind == Kind::Controller {
        delete_controller(global, controllers, &path).await?
    } else {
        let (_, client) = connect(global, controllers)?;
        client.delete(&path).await?
    };
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

/// A controller does not delete itself (it would revoke the certificate it is answering
/// with), so the request goes to each controller in turn, without the usual failover,
/// until one that is not the one deleted answers. Other refusals end it at once.
async fn delete_controller(
    global: &GlobalArgs,
    target: &ControllerTarget,
    path: &str,
) -> anyhow::Result<Deleted> {
    let (ctx, _) = connect(global, target)?;
    let servers = servers(target, &ctx)?;
    let mut last = None;
    for server in &servers {
        let one = Remote::new(
            client_for(&ctx, std::slice::from_ref(server))?,
            Expected::Controller(ctx.clone()),
        );
        match one.delete::<Deleted>(path).await {
            Ok(deleted) => return Ok(deleted),
            Err(err) => {
                let refusal = err.chain().find_map(|c| c.downcast_ref::<Refused>());
                match refusal {
                    Some(r) if r.code != ErrorCode::ControllerDeletesItself.as_str() => {
                        return Err(err);
                    }
                    _ => {
                        tracing::debug!(%server, "trying the next controller: {err:#}");
                        last = Some(err);
                    }
                }
            }
        }
    }
    let tried = servers.join(", ");
    Err(match last {
        Some(err) => err.context(format!(
            "no other controller did it (tried {tried}); pass -s with a controller that is not the one deleted"
        )),
        None => anyhow::anyhow!("no controller to send the delete to"),
    })
}
