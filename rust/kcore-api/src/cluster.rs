//! Cluster resources and API types: node registration, heartbeats, status and approval,
//! certificates, storage classes.
//!
//! These are the JSON bodies of the controller's `/v1` routes (see `docs/controller.md`
//! for the route table). Keys are camelCase on the wire; timestamps are RFC 3339 strings in
//! UTC so `kctl -o json` output is readable without conversion.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a node runs: the node agent, a controller, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Agent,
    Controller,
}

/// The storage backend a node runs for VM volumes (the one type: storage specs, agent
/// configuration, node reports and storage classes all use it).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// One ext4 filesystem per data disk, volumes are files.
    #[default]
    Filesystem,
    /// The data disks are PVs of one volume group, volumes are LVs.
    Lvm,
    /// The data disks form one ZFS pool, volumes are zvols.
    Zfs,
}

impl std::str::FromStr for StorageBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "filesystem" => Ok(Self::Filesystem),
            "lvm" => Ok(Self::Lvm),
            "zfs" => Ok(Self::Zfs),
            other => Err(format!(
                "unknown storage backend {other:?}: use filesystem, lvm or zfs"
            )),
        }
    }
}

impl StorageBackend {
    /// Every backend, in the order `kctl get storage-class` lists them.
    pub const ALL: [StorageBackend; 3] = [Self::Filesystem, Self::Lvm, Self::Zfs];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filesystem => "filesystem",
            Self::Lvm => "lvm",
            Self::Zfs => "zfs",
        }
    }
}

/// The storage class name for nodes that did not report a backend.
pub const UNSPECIFIED_STORAGE_CLASS: &str = "unspecified";

/// Capacity of an LVM volume group as the node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeGroupReport {
    pub name: String,
    /// `None` when the node could not read it (no LVM tools, VG missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// Prefix of the logical volumes kcore creates in it.
    #[serde(default)]
    pub lv_prefix: String,
    /// The thin pool kcore creates its LVs in, when the node has one (linear LVs otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thin_pool: Option<String>,
    /// Free data space of that thin pool (its size times `100 - data_percent`); what the
    /// scheduler counts instead of the VG's free space when a pool is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thin_pool_free_bytes: Option<u64>,
}

/// Capacity and health of a ZFS pool as the node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolReport {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// `zpool` health (`ONLINE`, `DEGRADED`, ...) when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    #[serde(default)]
    pub dataset_prefix: String,
}

/// A directory holding VM volumes or images, with its filesystem's capacity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
}

/// The node's storage backend and its inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageReport {
    /// `None`: the node did not say (counted as storage class `unspecified`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<StorageBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_group: Option<VolumeGroupReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolReport>,
    #[serde(default)]
    pub mounts: Vec<VolumeMount>,
}

impl StorageReport {
    /// The storage class this node belongs to.
    pub fn class_name(&self) -> &'static str {
        self.backend
            .map(StorageBackend::as_str)
            .unwrap_or(UNSPECIFIED_STORAGE_CLASS)
    }
}

/// What a node says about itself when it registers (and, optionally, on heartbeats).
///
/// `disks` and `nics` are the agent's inventory records passed through as JSON, so the
/// controller stores whatever the agent's inventory module reports without a lock-step
/// schema change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub hostname: String,
    pub dc_id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub roles: Vec<NodeRole>,
    #[serde(default)]
    pub storage: StorageReport,
    #[serde(default)]
    pub disks: Vec<serde_json::Value>,
    #[serde(default)]
    pub nics: Vec<serde_json::Value>,
    /// The agent's address as `HOST:PORT` (what `kctl --node` should use), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_address: Option<String>,
    /// The node's NixOS generations (absent when the agent cannot read them, e.g. not NixOS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemReport>,
    /// Why the node's last certificate renewal did not produce a usable certificate
    /// (it keeps its current one and retries later); absent when renewal is fine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_renewal_problem: Option<String>,
    /// What this agent understands beyond what every agent does, so the controller sends
    /// nothing an older agent would misread: [`crate::rollout::CAPABILITY_PREPARE_AHEAD`]
    /// (a `prepareOnly` step, which an agent without it would run as a whole step, and
    /// activate). Empty from an agent older than the first capability.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// One generation of the system profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationReport {
    pub number: u64,
    pub store_path: String,
    /// RFC 3339, when the generation was made.
    pub created: String,
}

/// What the node runs and will boot: the profile's current generation and the system
/// that was booted (`/run/booted-system`). They differ after `boot` or `test` activations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<GenerationReport>,
    /// The store path of the booted system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booted: Option<String>,
}

/// `POST /v1/nodes/{id}/register`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    pub report: NodeReport,
}

/// `POST /v1/nodes/{id}/heartbeat`. A fresh report is optional: inventory changes rarely.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<NodeReport>,
}

/// Answer to register and heartbeat: the node's status as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAck {
    pub node_id: String,
    pub status: NodeStatus,
    /// The controller that answered.
    pub controller_id: String,
    /// The certificate the node presented was issued by a retired sub-CA: renew now,
    /// not when it nears its expiry, so the old sub-CA can be revoked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub renew_certificate: bool,
}

/// Whether an operator (or auto-approval) admitted the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Approval {
    Approved,
    Pending,
    Rejected,
}

impl Approval {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "Approved",
            Self::Pending => "Pending",
            Self::Rejected => "Rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Approved" => Some(Self::Approved),
            "Pending" => Some(Self::Pending),
            "Rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// A node's status: approval first, then liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::EnumIter)]
pub enum NodeStatus {
    /// Approved and heartbeating.
    Ready,
    /// Approved but no heartbeat within `heartbeatTimeoutSeconds`.
    NotReady,
    /// Registered, waiting for `kctl node approve`.
    Pending,
    /// Refused by an operator; it cannot register again under this id.
    Rejected,
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ready => "Ready",
            Self::NotReady => "NotReady",
            Self::Pending => "Pending",
            Self::Rejected => "Rejected",
        })
    }
}

/// The certificate a node holds, as recorded when a controller issued it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    /// Serial number, hex.
    pub serial: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// The subject of the CA that signed it.
    pub issuer: String,
    /// Serial of the CA that signed it, when the certificate was presented with its chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_serial: Option<String>,
}

/// A node as the controller knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub node_id: String,
    pub status: NodeStatus,
    pub approval: Approval,
    pub report: NodeReport,
    /// RFC 3339; when the node first registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<String>,
    /// RFC 3339; the last heartbeat this controller received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateInfo>,
    /// Who keeps the node from taking new VMs; empty when it is schedulable.
    #[serde(default, skip_serializing_if = "Cordons::is_empty")]
    pub cordons: Cordons,
}

/// Why a node takes no new VMs. Two holders, each its own replicated field, so a rollout
/// that uncordons its node never lifts an operator's cordon (and the other way round).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cordons {
    /// `kctl node cordon ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<CordonEntry>,
    /// A rollout with `drainVms: true`, while it updates this node (a node is in at most
    /// one rollout at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<CordonEntry>,
}

impl Cordons {
    pub fn is_empty(&self) -> bool {
        self.operator.is_none() && self.rollout.is_none()
    }

    pub fn get(&self, holder: CordonHolder) -> Option<&CordonEntry> {
        match holder {
            CordonHolder::Operator => self.operator.as_ref(),
            CordonHolder::Rollout => self.rollout.as_ref(),
        }
    }
}

/// One holder of a node's cordon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CordonHolder {
    Operator,
    Rollout,
}

impl CordonHolder {
    /// The field name under `cordon.` in the node's record.
    pub fn as_str(self) -> &'static str {
        match self {
            CordonHolder::Operator => "operator",
            CordonHolder::Rollout => "rollout",
        }
    }
}

/// Who set a cordon, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CordonEntry {
    /// The admin certificate's URI, or `clusterupdate/<name>`.
    pub by: String,
    #[serde(default)]
    pub reason: String,
    /// RFC 3339.
    pub at: String,
}

/// `POST /v1/nodes/{id}/cordon` (the body is optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CordonRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeList {
    pub items: Vec<Node>,
}

/// `POST /v1/nodes/{id}/renew` and `POST /v1/certificates/node`: a PEM CSR made on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsrRequest {
    pub csr_pem: String,
}

/// `POST /v1/certificates/node` (admin): issue a node's first certificate from its CSR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssueNodeCertificateRequest {
    pub node_id: String,
    pub csr_pem: String,
}

/// `POST /v1/certificates/metrics` (admin): a Prometheus scraper's certificate
/// (`kcore://<cluster>/metrics/<name>`) from the CSR made where the scraper runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssueMetricsCertificateRequest {
    pub name: String,
    pub csr_pem: String,
}

/// `POST /v1/certificates/controller` (admin; `kctl node install --run-controller`): a new
/// controller's certificate (`kcore://<cluster>/controller/<controllerId>`) from the CSR
/// made on the node it will run on. The sub-CA key is not part of the answer: the new
/// controller fetches it from a peer over mTLS after its first start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssueControllerCertificateRequest {
    pub controller_id: String,
    pub csr_pem: String,
}

/// The answer of `POST /v1/certificates/controller`: the chain (leaf then sub-CA), what
/// the leaf is, and the sub-CA certificate the new controller writes as
/// `tls.subCaCertFile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerCertificateResponse {
    pub chain_pem: String,
    pub certificate: CertificateInfo,
    pub sub_ca_pem: String,
}

/// A signed certificate: the leaf followed by the CA that signed it (PEM), ready to be
/// written as the node's `certFile` and presented as a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateResponse {
    pub chain_pem: String,
    pub certificate: CertificateInfo,
}

/// `PUT /v1/pki/sub-ca` (admin, `kctl rotate sub-ca`): the controllers' new signing CA,
/// issued by the root CA on the operator's machine. It travels only inside mTLS to
/// controllers and is written with mode 0600.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallSubCa {
    pub certificate_pem: String,
    pub key_pem: String,
    /// Install a sub-CA that ends before a node certificate issued now would (`kctl
    /// rotate sub-ca --allow-short`); refused otherwise, since every node would then
    /// renew early and all at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_short: bool,
}

impl std::fmt::Debug for InstallSubCa {
    // The key is a secret: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallSubCa")
            .field("certificate_pem", &self.certificate_pem)
            .field("key_pem", &"<redacted>")
            .field("allow_short", &self.allow_short)
            .finish()
    }
}

/// Answer to `PUT /v1/pki/sub-ca`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubCaInstalled {
    pub controller_id: String,
    pub certificate: CertificateInfo,
}

/// One row of `GET /v1/storage-classes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageClass {
    /// `filesystem`, `lvm`, `zfs` or `unspecified`.
    pub name: String,
    /// Approved nodes reporting this backend (pending and rejected nodes offer no storage).
    pub nodes: usize,
    /// Of those, the `Ready` ones.
    pub ready_nodes: usize,
}

/// `GET /v1/storage-classes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageClassList {
    pub items: Vec<StorageClass>,
}

/// `GET /v1/storage-classes/{name}`: the class and its nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageClassDetail {
    pub class: StorageClass,
    pub nodes: Vec<Node>,
}

/// Every storage class name `kctl` accepts, in listing order.
pub fn storage_class_names() -> [&'static str; 4] {
    [
        StorageBackend::Filesystem.as_str(),
        StorageBackend::Lvm.as_str(),
        StorageBackend::Zfs.as_str(),
        UNSPECIFIED_STORAGE_CLASS,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_is_camel_case_and_missing_backend_is_unspecified() {
        let report: NodeReport = serde_json::from_value(serde_json::json!({
            "hostname": "hv1", "dcId": "DC1", "storage": {"mounts": []}
        }))
        .unwrap();
        assert_eq!(report.dc_id, "DC1");
        assert_eq!(report.storage.class_name(), "unspecified");
        let lvm = StorageReport {
            backend: Some(StorageBackend::Lvm),
            ..Default::default()
        };
        assert_eq!(lvm.class_name(), "lvm");
        let json = serde_json::to_value(&lvm).unwrap();
        assert_eq!(json["backend"], "lvm");
    }

    #[test]
    fn approval_round_trips_through_text() {
        for a in [Approval::Approved, Approval::Pending, Approval::Rejected] {
            assert_eq!(Approval::parse(a.as_str()), Some(a));
        }
        assert_eq!(Approval::parse("approved"), None);
    }
}
