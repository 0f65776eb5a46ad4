//! `kind: VM`: a guest on one node's storage backend (issue 17).
//!
//! Sizes (`storageSizeBytes`, `memoryBytes`) accept `"40G"`, `"40GiB"` or a number of bytes
//! and are read by the one size parser ([`crate::validate::parse_size`]); they are stored and
//! listed as numbers of bytes, so applying `"40G"` twice, or `"40G"` then `42949672960`, is
//! no change.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cluster::StorageBackend;
use crate::resource::{Kind, KindSpec, Object};
use crate::validate::{self, FieldError, Size};

/// A VM object as stored and listed.
pub type Vm = Object<VmSpec>;

/// A byte count written as a number or a human size (`40G`, `40GiB`); serialised as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a size such as \"40G\" or \"40GiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                if n == 0 {
                    return Err(E::custom("0 is zero; give a size greater than zero"));
                }
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map_err(|_| {
                        E::custom(format!("{n} is negative; give a size greater than zero"))
                    })
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                // The field name is left to the decoder's path, hence `detail()`.
                match validate::parse_size("size", s) {
                    Ok(Size::Bytes(n)) => Ok(ByteSize(n)),
                    Ok(_) => Err(E::custom(format!(
                        "{s:?} is a percentage; give an exact size such as 40G"
                    ))),
                    Err(e) => Err(E::custom(e.detail())),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The default of `spec.memoryBytes`: 1 GiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 1 << 30;
/// The only network until networks exist.
pub const DEFAULT_NETWORK: &str = "default";
/// The most vCPUs a spec may ask for (QEMU's `-smp` limit for the q35 machine is 288; kcore
/// keeps a round bound well inside it).
pub const MAX_CPUS: u32 = 256;

/// `spec` of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmSpec {
    /// Picks the storage class (and so the nodes it can run on).
    pub storage_backend: StorageBackend,
    pub storage_size_bytes: ByteSize,
    /// An `http(s)://` URL or an absolute path on the node; raw or qcow2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The image's expected SHA-256 (64 hex digits); the node refuses a download that
    /// differs. Absent: the node records the checksum it computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_sha256: Option<String>,
    #[serde(default = "one_cpu")]
    pub cpus: u32,
    #[serde(default = "default_memory")]
    pub memory_bytes: ByteSize,
    /// The data centre it must run in; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dc: Option<String>,
    #[serde(default = "default_network")]
    pub network: String,
    /// Whether the guest should run (`kctl vm start|stop` set it; the kubevirt way). Absent
    /// means true, and true is left out when written, so a manifest without it and the
    /// stored object agree.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub running: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn one_cpu() -> u32 {
    1
}

fn default_memory() -> ByteSize {
    ByteSize(DEFAULT_MEMORY_BYTES)
}

fn default_network() -> String {
    DEFAULT_NETWORK.to_string()
}

/// `status.phase` of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmPhase {
    Pending,
    Provisioning,
    Starting,
    Running,
    Stopped,
    Failed,
    Deleting,
}

impl VmPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            VmPhase::Pending => "Pending",
            VmPhase::Provisioning => "Provisioning",
            VmPhase::Starting => "Starting",
            VmPhase::Running => "Running",
            VmPhase::Stopped => "Stopped",
            VmPhase::Failed => "Failed",
            VmPhase::Deleting => "Deleting",
        }
    }
}

/// How many [`VmEvent`]s a VM keeps (the oldest go first).
pub const MAX_VM_EVENTS: usize = 20;

/// One thing that happened to a VM: a phase change, its placement, a deletion request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmEvent {
    /// RFC 3339.
    pub at: String,
    /// `Scheduled`, `Unschedulable`, `PhaseChanged`, `DeletionRequested`.
    pub reason: String,
    pub message: String,
}

/// `status` of a VM. The controllers write it, one top-level key per replicated field:
/// the scheduler `node`, `phase` (Pending, Provisioning), `message` and `events`; a node's
/// report `phase`, `volume`, `message`, `observedGeneration`; a delete `deletionRequestedAt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmStatus {
    /// The generation the node last acted on (from its report).
    #[serde(default)]
    pub observed_generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<VmPhase>,
    /// The node the VM is placed on; set once and never moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VmVolume>,
    /// Why it is `Pending` (what no node had), what failed, or what the node is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339; set by `kctl delete vm` on a placed VM: the node is told `Deleted` and
    /// the object goes when the node confirms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_requested_at: Option<String>,
    /// The newest [`MAX_VM_EVENTS`], oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<VmEvent>,
}

/// What the controller wants of one VM on the node it is placed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VmDesiredState {
    /// Volume present, guest running.
    Running,
    /// Volume kept, guest stopped (`kctl vm stop`, or a rollout draining the node).
    Stopped,
    /// Guest stopped and the volume the agent created removed; the agent then lists the
    /// VM in [`VmReports::deleted`] and the controller forgets it.
    Deleted,
}

/// One VM as its node is told about it: an entry of [`crate::rollout::Assignment::vms`],
/// the same long-poll that carries rollout steps (nodes are never dialled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeVm {
    pub name: String,
    /// The VM's `metadata.generation`; the agent reports the one it acted on.
    pub generation: u64,
    pub spec: VmSpec,
    pub desired: VmDesiredState,
}

/// Where a VM's disk lives on its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmVolume {
    pub backend: StorageBackend,
    /// A file under `/var/lib/kcore/volumes*`, `/dev/<vg>/<lv>` or `/dev/zvol/<pool>/<ds>`.
    pub path: String,
    pub size_bytes: u64,
}

/// The agent's account of one VM it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmReport {
    pub name: String,
    /// The [`NodeVm::generation`] this report answers.
    pub observed_generation: u64,
    pub phase: VmPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VmVolume>,
    /// What went wrong (phase `Failed`) or what is happening (image download progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /v1/nodes/{id}/vms/report`: the node's VMs as they are, and the ones it removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmReports {
    #[serde(default)]
    pub vms: Vec<VmReport>,
    /// VMs told `Deleted` whose guest is stopped and volume removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
}

fn image(field: &str, value: &str) -> Result<(), FieldError> {
    let fix = "give an http:// or https:// URL, or an absolute path on the node";
    if let Some(c) = value.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(FieldError::new(
            field,
            value,
            format!("contains {c:?}"),
            fix,
        ));
    }
    let url_rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match url_rest {
        Some(rest) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            if host.is_empty() {
                return Err(FieldError::new(field, value, "has no host", fix));
            }
        }
        None if value.starts_with('/') => {
            if value.split('/').any(|part| part == "..") {
                return Err(FieldError::new(
                    field,
                    value,
                    "contains a '..' component",
                    "give the image's path without '..'",
                ));
            }
        }
        None => {
            return Err(FieldError::new(
                field,
                value,
                "is neither an http(s) URL nor an absolute path",
                fix,
            ));
        }
    }
    Ok(())
}

impl KindSpec for VmSpec {
    const KIND: Kind = Kind::Vm;

    fn validate(&self) -> Result<(), FieldError> {
        if let Some(img) = &self.image {
            image("spec.image", img)?;
        }
        if let Some(sum) = &self.image_sha256 {
            if self.image.is_none() {
                return Err(FieldError::new(
                    "spec.imageSha256",
                    sum,
                    "is set without spec.image",
                    "set spec.image too, or leave imageSha256 out",
                ));
            }
            if sum.len() != 64 || !sum.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(FieldError::new(
                    "spec.imageSha256",
                    sum,
                    "is not 64 hexadecimal digits",
                    "give the image's SHA-256 as `sha256sum` prints it",
                ));
            }
        }
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(FieldError::new(
                "spec.cpus",
                &self.cpus.to_string(),
                format!("is outside 1..{MAX_CPUS}"),
                "give the number of virtual CPUs, e.g. 2",
            ));
        }
        if let Some(dc) = &self.dc {
            validate::dc_id("spec.dc", dc)?;
        }
        if self.network != DEFAULT_NETWORK {
            return Err(FieldError::new(
                "spec.network",
                &self.network,
                "is not a network kcore has",
                "use network: default (the only one until networks exist), or leave it out",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{ObjectError, decode_object};

    fn parse(yaml: &str) -> Result<Vm, ObjectError> {
        let value: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
        decode_object::<VmSpec>(value)
    }

    const GUIDE: &str = r#"kind: VM
metadata: { name: my-vm, labels: {} }
spec:
  storageBackend: filesystem
  storageSizeBytes: "40G"
  image: https://images.example.invalid/debian.qcow2
  cpus: 1
  memoryBytes: "1G"
  dc: DC2
  network: default
"#;

    #[test]
    fn the_guide_manifest_parses_and_sizes_become_bytes() {
        let vm = parse(GUIDE).unwrap();
        assert_eq!(vm.spec.storage_size_bytes, ByteSize(40 << 30));
        assert_eq!(vm.spec.memory_bytes, ByteSize(1 << 30));
        assert_eq!(vm.spec.storage_backend, StorageBackend::Filesystem);
        let json = serde_json::to_value(&vm).unwrap();
        assert_eq!(json["spec"]["storageSizeBytes"], 40u64 << 30);
        for same in ["\"40GiB\"", "42949672960", "\"42949672960\""] {
            let vm2 = parse(&GUIDE.replace("\"40G\"", same)).unwrap();
            assert_eq!(vm2.spec.storage_size_bytes, ByteSize(40 << 30), "{same}");
        }
        let minimal =
            "kind: VM\nmetadata: {name: a}\nspec: {storageBackend: zfs, storageSizeBytes: 1M}\n";
        let vm = parse(minimal).unwrap();
        assert_eq!((vm.spec.cpus, vm.spec.network.as_str()), (1, "default"));
    }

    #[test]
    fn bad_values_name_their_field() {
        for (from, to, path) in [
            ("\"40G\"", "\"40GB\"", "spec.storageSizeBytes"),
            ("\"40G\"", "\"50%\"", "spec.storageSizeBytes"),
            ("\"40G\"", "0", "spec.storageSizeBytes"),
            ("\"1G\"", "\"1.5G\"", "spec.memoryBytes"),
            ("filesystem", "nfs", "spec.storageBackend"),
            ("network: default", "network: lan", "spec.network"),
            ("cpus: 1", "cpus: 0", "spec.cpus"),
            ("dc: DC2", "dc: \"D C\"", "spec.dc"),
            (
                "https://images.example.invalid/debian.qcow2",
                "debian.qcow2",
                "spec.image",
            ),
            (
                "https://images.example.invalid/debian.qcow2",
                "/srv/../etc/shadow",
                "spec.image",
            ),
            ("cpus: 1", "cpu: 1", "spec.cpu"),
            ("cpus: 1", "cpus: 1\n  imageSha256: abc", "spec.imageSha256"),
            ("my-vm", "My_VM", "metadata.name"),
        ] {
            let err = parse(&GUIDE.replace(from, to)).unwrap_err();
            assert_eq!(err.path(), path, "{to}: {err}");
            assert!(err.to_string().starts_with(path), "{err}");
        }
        let err = parse(&GUIDE.replace("\"40G\"", "\"40GB\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("40GiB"), "the fix is in the message: {err}");
    }
}
