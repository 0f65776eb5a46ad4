//! VMs from flags: `kctl create vm NAME --storage-backend B --storage-size-bytes N ...`
//! builds the same `kind: VM` document `kctl apply -f` would read and sends it the same
//! way ([`crate::apply::apply_documents`]); `kctl vm start|stop NAME` sets the VM's
//! `spec.running` (absent means true) on the stored object and applies it back.
//! Listing, describing and deleting are the generic `get/describe/delete vm`.

use clap::Subcommand;
use kcore_api::ErrorCode;
use kcore_api::resource::{Kind, ObjectError};
use serde_json::{Value, json};

use crate::apply::apply_documents;
use crate::controller_client::connect;
use crate::documents::{self, Document};
use crate::exit::Refused;
use crate::global::GlobalArgs;
use crate::kinds;
use crate::target::ControllerTarget;

/// `kctl create vm`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The VM's name (its metadata.name: a DNS label).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// filesystem, lvm or zfs: the storage class, and so the nodes it can run on.
    #[arg(long, value_name = "BACKEND")]
    pub storage_backend: String,
    /// The volume's size: a number of bytes, or 40G / 40GiB (the same units everywhere).
    #[arg(long, value_name = "SIZE")]
    pub storage_size_bytes: String,
    /// The data centre it must run in; any when left out.
    #[arg(long, value_name = "DC")]
    pub dc: Option<String>,
    /// The disk image: an http(s) URL or an absolute path on the node (raw or qcow2).
    #[arg(long, value_name = "URL")]
    pub image: Option<String>,
    /// The network; only `default` exists until networks do.
    #[arg(long, value_name = "NAME", default_value = kcore_api::vm::DEFAULT_NETWORK)]
    pub network: String,
    /// Virtual CPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,
    /// Memory: a number of bytes, or 1G / 1GiB.
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    pub memory: String,
}

/// Which flag sets which field, so a refusal names what the operator typed.
const FLAGS: [(&str, &str); 8] = [
    ("metadata.name", "NAME"),
    ("spec.storageBackend", "--storage-backend"),
    ("spec.storageSizeBytes", "--storage-size-bytes"),
    ("spec.dc", "--dc"),
    ("spec.image", "--image"),
    ("spec.network", "--network"),
    ("spec.cpus", "--cpus"),
    ("spec.memoryBytes", "--memory"),
];

fn refused(source: &str, err: &ObjectError) -> Refused {
    let flag = FLAGS
        .iter()
        .find(|(path, _)| *path == err.path())
        .map_or(String::new(), |(_, flag)| format!(" ({flag})"));
    Refused::new(ErrorCode::InvalidField, format!("{source}: {err}{flag}"))
}

impl CreateArgs {
    /// The `kind: VM` document these flags describe, checked like a file's.
    pub fn document(&self) -> Result<Document, Refused> {
        let mut spec = json!({
            "storageBackend": self.storage_backend,
            "storageSizeBytes": self.storage_size_bytes,
            "network": self.network,
            "cpus": self.cpus,
            "memoryBytes": self.memory,
        });
        if let Some(dc) = &self.dc {
            spec["dc"] = json!(dc);
        }
        if let Some(image) = &self.image {
            spec["image"] = json!(image);
        }
        let body = json!({"kind": "VM", "metadata": {"name": self.name}, "spec": spec});
        let source = "kctl create vm";
        documents::from_value(source, 1, body).map_err(|e| refused(source, &e))
    }
}

/// `kctl create vm ...`: the document from the flags, applied.
pub async fn create(
    args: &CreateArgs,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    let doc = args.document()?;
    let (_, client) = connect(global, controllers)?;
    apply_documents(&client, &[doc], None, global).await
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which controllers to call.
    #[command(flatten, next_help_heading = "Controllers")]
    pub controllers: crate::target::ControllerTarget,
    #[command(subcommand)]
    pub command: VmCommand,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Start the VM's guest (spec.running: true); its node starts it.
    Start(NameArg),
    /// Stop the VM's guest (spec.running: false); its node shuts it down cleanly and
    /// keeps its volume.
    Stop(NameArg),
}

#[derive(Debug, clap::Args)]
pub struct NameArg {
    /// The VM's name.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// The stored object with `spec.running` set, as a document to apply: metadata (name,
/// labels) and spec as stored, status and generation left to the server.
pub fn with_running(stored: &Value, running: bool) -> Result<Document, Refused> {
    let mut metadata =
        json!({"name": stored.pointer("/metadata/name").cloned().unwrap_or_default()});
    if let Some(labels) = stored.pointer("/metadata/labels") {
        metadata["labels"] = labels.clone();
    }
    let mut spec = stored.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["running"] = json!(running);
    let body = json!({"kind": "VM", "metadata": metadata, "spec": spec});
    let source = if running {
        "kctl vm start"
    } else {
        "kctl vm stop"
    };
    documents::from_value(source, 1, body).map_err(|e| refused(source, &e))
}

pub async fn run(
    args: Args,
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    let (name, running) = match &args.command {
        VmCommand::Start(a) => (&a.name, true),
        VmCommand::Stop(a) => (&a.name, false),
    };
    let path = kinds::object_path(Kind::Vm, "NAME", name)?;
    let (_, client) = connect(global, controllers)?;
    let stored: Value = client.get_json(&path).await?;
    let doc = with_running(&stored, running)?;
    apply_documents(&client, &[doc], None, global).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(size: &str) -> CreateArgs {
        CreateArgs {
            name: "my-vm".into(),
            storage_backend: "filesystem".into(),
            storage_size_bytes: size.into(),
            dc: Some("DC2".into()),
            image: None,
            network: "default".into(),
            cpus: 1,
            memory: "1G".into(),
        }
    }

    #[test]
    fn flags_make_the_same_document_as_the_guide_manifest() {
        let guide = "kind: VM\nmetadata: { name: my-vm, labels: {} }\nspec:\n  storageBackend: filesystem\n  storageSizeBytes: \"40G\"\n  cpus: 1\n  memoryBytes: \"1G\"\n  dc: DC2\n  network: default\n";
        let from_file = documents::parse("vm.yaml", guide).unwrap().remove(0);
        for size in ["40G", "40GiB", "42949672960"] {
            assert_eq!(
                args(size).document().unwrap().body,
                from_file.body,
                "{size}"
            );
        }
    }

    #[test]
    fn a_bad_flag_is_named() {
        let err = args("40GB").document().unwrap_err();
        assert!(
            err.message.contains("spec.storageSizeBytes")
                && err.message.contains("(--storage-size-bytes)"),
            "{}",
            err.message
        );
        let mut bad = args("1G");
        bad.storage_backend = "nfs".into();
        assert!(
            bad.document()
                .unwrap_err()
                .message
                .contains("(--storage-backend)")
        );
        let mut bad = args("1G");
        bad.memory = "lots".into();
        assert!(bad.document().unwrap_err().message.contains("(--memory)"));
    }

    #[test]
    fn start_and_stop_change_only_running() {
        let stored = json!({
            "kind": "VM",
            "metadata": {"name": "web", "generation": 3, "labels": {"tier": "web"}},
            "spec": {"storageBackend": "zfs", "storageSizeBytes": 1073741824u64, "cpus": 2,
                     "memoryBytes": 1073741824u64, "network": "default"},
            "status": {"phase": "Running", "node": "n1"},
        });
        let stop = with_running(&stored, false).unwrap().body;
        assert_eq!(stop["spec"]["running"], false);
        assert_eq!(stop["spec"]["cpus"], 2);
        assert_eq!(stop["metadata"]["labels"]["tier"], "web");
        assert!(stop.get("status").is_none());
        let start = with_running(&stop, true).unwrap().body;
        assert!(
            start["spec"].get("running").is_none(),
            "true is the default, left out"
        );
    }
}
