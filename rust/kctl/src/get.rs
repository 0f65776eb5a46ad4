//! `kctl get <KIND> [NAME] [-l SELECTOR]`: a list or one object of any kind, as a table
//! (`-o wide` for more columns) or JSON / YAML. Nodes and storage classes keep their own
//! routes and tables (`get nodes`, `get node ID`, `get storage-class [NAME]`); the stored
//! kinds (ClusterUpdate, VM, ...) go through the generic `/v1/<plural>` routes.

use kcore_api::ErrorCode;
use kcore_api::cluster::{Node, NodeList, StorageClass, StorageClassList};
use kcore_api::resource::{Kind, LabelSelector, ResourceList};

use crate::controller_client::connect;
use crate::exit::Refused;
use crate::global::GlobalArgs;
use crate::kinds::{self, Target};
use crate::output::{OutputFormat, print, print_object};
use crate::paths;
use crate::remote::Remote;
use crate::target::ControllerTarget;
use crate::views::node::Nodes;
use crate::views::resource::Objects;
use crate::views::storage_class::StorageClasses;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which controllers to call.
    #[command(flatten, next_help_heading = "Controllers")]
    pub controllers: crate::target::ControllerTarget,
    /// What to list: nodes (no), clusterupdates, vms, controllers, or storage-class (sc);
    /// singular or plural, any case.
    #[arg(value_name = "KIND")]
    pub kind: String,
    /// Only this object (a node's id, an object's metadata.name, a storage class).
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Only objects whose labels match, e.g. `tier=web,rack!=a,gpu,!spare` (every
    /// requirement must hold).
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// With `get controllers`: exit 1 naming every peer of the answering controller that
    /// is not Healthy or lags more than --max-lag-seconds (for scripts and monitoring).
    #[arg(long)]
    pub require_healthy: bool,
    /// The lag `--require-healthy` allows, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30,
        requires = "require_healthy"
    )]
    pub max_lag_seconds: u64,
}

/// `-l` parsed with kcore-api's selector syntax; refused together with a NAME.
pub fn selector(args: &Args) -> Result<Option<LabelSelector>, Refused> {
    let Some(text) = &args.selector else {
        return Ok(None);
    };
    if args.name.is_some() {
        return Err(Refused::new(
            ErrorCode::BadFlags,
            "-l selects from a list: give either NAME or -l, not both",
        ));
    }
    text.parse()
        .map(Some)
        .map_err(|e| Refused::new(ErrorCode::InvalidField, format!("-l {e}")))
}

/// The argument name used in errors about NAME, as `get node` has always said it.
pub fn name_arg(kind: Kind) -> &'static str {
    if kind == Kind::Node { "<ID>" } else { "<NAME>" }
}

pub async fn run(
    args: Args,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    // Checked before connecting: nothing is sent for a bad kind, name or selector.
    let target: Target = args.kind.parse()?;
    let selector = selector(&args)?;
    let path = match (target, &args.name) {
        (Target::Kind(kind), Some(name)) => Some(kinds::object_path(kind, name_arg(kind), name)?),
        (Target::StorageClass, Some(name)) => {
            paths::storage_class(name)?;
            None
        }
        _ => None,
    };
    if target == Target::SubCa && (selector.is_some() || args.name.is_some()) {
        return Err(Refused::new(
            ErrorCode::BadFlags,
            "sub-CAs are listed whole: drop the name and -l (`kctl get sub-cas`)",
        )
        .into());
    }
    if target == Target::StorageClass && selector.is_some() {
        return Err(Refused::new(
            ErrorCode::BadFlags,
            "storage classes have no labels: drop -l (select nodes with `kctl get nodes -l`)",
        )
        .into());
    }
    if args.require_healthy
        && !(target == Target::Kind(Kind::Controller) && path.is_none() && selector.is_none())
    {
        return Err(Refused::new(
            ErrorCode::BadFlags,
            "--require-healthy goes with `kctl get controllers` (the whole list, no NAME or -l)",
        )
        .into());
    }
    let (_, client) = connect(global, controllers)?;
    match (target, path) {
        (Target::Kind(Kind::Controller), None) if selector.is_none() => {
            let bound = args
                .require_healthy
                .then_some(crate::controllers::HealthBound {
                    max_lag_seconds: args.max_lag_seconds,
                });
            crate::controllers::get(&client, global, bound).await
        }
        (Target::Kind(Kind::Node), None) => {
            let list: NodeList = client.get_json("/v1/nodes").await?;
            // The node routes keep their shape: the selector is applied here, to the
            // labels each node reports.
            let items = list
                .items
                .into_iter()
                .filter(|n| {
                    selector
                        .as_ref()
                        .is_none_or(|s| s.matches(&n.report.labels))
                })
                .collect();
            print(&Nodes(items), global.output)
        }
        (Target::Kind(Kind::Node), Some(path)) => {
            let node: Node = client.get_json(&path).await?;
            match global.output {
                // One object, not a one-element list, for scripts.
                OutputFormat::Json | OutputFormat::Yaml => {
                    print_object(&node, global.output, String::new)
                }
                format => print(&Nodes(vec![node]), format),
            }
        }
        // Validated above; sent as typed, the controller parses it with the same code.
        (Target::Kind(kind), path) => {
            get_objects(&client, kind, path, args.selector.as_deref(), global).await
        }
        (Target::StorageClass, _) => storage_classes(&client, args.name, global.output).await,
        (Target::SubCa, _) => {
            let list: Vec<kcore_api::controller::SubCaUse> =
                client.get_json("/v1/pki/sub-cas").await?;
            print(&crate::views::sub_ca::SubCas(list), global.output)
        }
    }
}

/// A stored kind: the list (with the selector sent as `labelSelector`), or one object.
async fn get_objects(
    client: &Remote,
    kind: Kind,
    path: Option<String>,
    selector: Option<&str>,
    global: &GlobalArgs,
) -> anyhow::Result<()> {
    match path {
        Some(path) => {
            let object: serde_json::Value = client.get_json(&path).await?;
            match global.output {
                OutputFormat::Json | OutputFormat::Yaml => {
                    print_object(&object, global.output, String::new)
                }
                format => print(&Objects::new(kind, vec![object]), format),
            }
        }
        None => {
            let mut list_path = kinds::list_path(kind);
            if let Some(text) = selector {
                list_path = paths::with_query(&list_path, "labelSelector", text);
            }
            let list: ResourceList = client.get_json(&list_path).await?;
            print(&Objects::new(kind, list.items), global.output)
        }
    }
}

async fn storage_classes(
    client: &Remote,
    name: Option<String>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let list: StorageClassList = client.get_json("/v1/storage-classes").await?;
    let items = match name {
        Some(name) => {
            let found: Vec<StorageClass> =
                list.items.into_iter().filter(|c| c.name == name).collect();
            if found.is_empty() {
                // A known name this controller does not list (another version).
                return Err(Refused::new(
                    ErrorCode::NoSuchStorageClass,
                    format!("the controller lists no storage class {name:?}"),
                )
                .into());
            }
            found
        }
        None => list.items,
    };
    print(&StorageClasses(items), format)
}
