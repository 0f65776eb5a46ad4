//! Day 0: the bodies of the install-mode agent's routes, shared by the agent on the live
//! ISO and `kctl node install` (docs/install.md walks through them).
//!
//! The flow, one request each, over TLS pinned to the live ISO's self-signed certificate:
//! 1. `POST /v1/install/plan` with an [`InstallSpec`]: the agent resolves the disks to
//!    their by-id paths, fills in the defaults, renders and validates the layout, plans it
//!    against its live disks and answers an [`InstallPlan`]: every disk that will be wiped
//!    (identity, size, current content) and every refusal. Nothing is written.
//! 2. `POST /v1/install/csr` ([`InstallCsrRequest`]), once for the node identity and, with
//!    `runController`, once for the controller identity: the agent makes the key (it never
//!    leaves the node) and answers the CSR. kctl has a controller sign it (admin routes
//!    `POST /v1/certificates/node` and `/v1/certificates/controller`).
//! 3. `POST /v1/install/run` ([`InstallRunRequest`]: the spec the plan returned, the plan's
//!    hash, the signed certificates and CA, a claim token chosen by kctl) answers `202` with
//!    an operation of kind `install`; its stream has one `step` event per [`InstallStep`].
//! 4. `POST /v1/install/recovery-key` ([`InstallClaim`]): the LUKS recovery key the
//!    install made, for the caller that holds the claim token (kctl stores it, 0600).
//! 5. `POST /v1/install/reboot` ([`InstallClaim`]): reboot into the installed system.
//!
//! Nothing secret travels to the node: certificates and the CA are public, the claim token
//! only proves that whoever asks for the recovery key is whoever started the install.

use serde::{Deserialize, Serialize};

use crate::cluster::StorageBackend;

/// How several data disks are combined (the storage spec's `dataDiskMode`,
/// `--data-disk-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataDiskMode {
    /// Each disk adds capacity (separate filesystems, PVs of one VG, or a striped pool).
    #[default]
    Stripe,
    /// The disks mirror each other (ZFS only: `mode = "mirror"`).
    Mirror,
}

/// The LUKS mode an operator asks for (`--luks`, `kctl disko render --luks-mode`): `auto`,
/// the default, is tpm2 on a node that has a TPM and keyfile on one that has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LuksChoice {
    #[default]
    Auto,
    Tpm2,
    Keyfile,
}

/// LUKS unlock mode of the OS disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LuksMode {
    /// Unlock with the TPM (`tpm2-device=auto`); enrolled at install.
    #[default]
    Tpm2,
    /// Unlock with a key file that lives outside the unencrypted ESP.
    Keyfile,
}

impl LuksMode {
    /// The name the spec and `--luks-mode` use.
    pub fn as_str(self) -> &'static str {
        match self {
            LuksMode::Tpm2 => "tpm2",
            LuksMode::Keyfile => "keyfile",
        }
    }
}

impl LuksChoice {
    /// The mode to render. `has_tpm` is what the node's inventory reports (`tpm`), `None`
    /// when no node was asked or it did not say: then `auto` cannot be decided, and the
    /// error says what to pass instead. One function, so kctl and the agent decide alike.
    pub fn resolve(self, has_tpm: Option<bool>) -> Result<LuksMode, String> {
        match (self, has_tpm) {
            (LuksChoice::Tpm2, _) => Ok(LuksMode::Tpm2),
            (LuksChoice::Keyfile, _) => Ok(LuksMode::Keyfile),
            (LuksChoice::Auto, Some(true)) => Ok(LuksMode::Tpm2),
            (LuksChoice::Auto, Some(false)) => Ok(LuksMode::Keyfile),
            (LuksChoice::Auto, None) => Err(
                "luks mode auto (the default) is tpm2 on a node with a TPM and keyfile on one \
                 without, and it is not known whether this node has one: pass --node \
                 HOST:9091 so kctl asks the node, or --luks-mode tpm2|keyfile"
                    .into(),
            ),
        }
    }
}

/// What the operator asked to install, as `kctl node install` sends it. The agent's
/// [`InstallPlan::spec`] is the same value with the disks resolved to by-id paths and
/// every default filled in; `install/run` must send that one back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallSpec {
    /// The cluster name of kctl's context: the CSRs' identities are
    /// `kcore://<cluster>/<role>/<nodeId>`.
    pub cluster: String,
    /// `--node-id` (kctl generates a UUID when it is not given).
    pub node_id: String,
    /// `--hostname`; the agent fills in `kcore-<first 8 characters of nodeId>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `--dc-id` (default `DC1`).
    pub dc_id: String,
    /// `--join-controller` (default: the context's controllers), `HOST:PORT` each.
    pub controllers: Vec<String>,
    /// `--os-disk`: `/dev/sda` or `/dev/disk/by-id/...`.
    pub os_disk: String,
    /// `--data-disk`, in order.
    #[serde(default)]
    pub data_disks: Vec<String>,
    /// `--data-disk-mode`.
    #[serde(default)]
    pub data_disk_mode: DataDiskMode,
    /// `--storage-backend`.
    #[serde(default)]
    pub storage_backend: StorageBackend,
    /// `--lvm-vg-name` (agent default `vg_kcore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm_vg_name: Option<String>,
    /// `--lvm-lv-prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm_lv_prefix: Option<String>,
    /// `--zfs-pool-name` (agent default `tank0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zfs_pool_name: Option<String>,
    /// `--zfs-dataset-prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zfs_dataset_prefix: Option<String>,
    /// `--luks`; the plan's spec holds the resolved mode (never `auto`).
    #[serde(default)]
    pub luks: LuksChoice,
    /// `--luks-key-device`: key-file mode keeps the unlock key on this separate device
    /// (never on the unencrypted ESP); required for `keyfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub luks_key_device: Option<String>,
    /// `--run-controller`: the node also runs a controller.
    #[serde(default)]
    pub run_controller: bool,
    /// `--disable-vxlan`.
    #[serde(default)]
    pub disable_vxlan: bool,
}

/// What a disk that will be wiped holds now, for the operator deciding whether to go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WipedDisk {
    /// What it becomes: `os`, `data` or `luks-key`.
    pub role: String,
    /// The path the operator gave.
    pub given: String,
    /// The by-id path the layout uses.
    pub by_id: String,
    /// Kernel device (`/dev/sdb`).
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub size_bytes: u64,
    /// Its current content, in words (`gpt partition table`, `ext4 filesystem on sdb1`);
    /// empty when the disk is blank.
    #[serde(default)]
    pub content: Vec<String>,
}

/// One refused disk: nothing is written to it, and the install cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallRefusal {
    /// The path the operator gave.
    pub device: String,
    /// The stable code (`TARGET_IS_OS_DISK`, `TARGET_MOUNTED`, ...).
    pub code: crate::ErrorCode,
    pub message: String,
}

/// The answer of `POST /v1/install/plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallPlan {
    /// The request with disks resolved to by-id paths and the defaults filled in (the LUKS
    /// mode resolved, the hostname set): what `install/run` must send.
    pub spec: InstallSpec,
    /// Whether the node has a TPM (`/sys/class/tpm/tpm0`), which decided `--luks auto`.
    pub tpm: bool,
    /// The rendered disko layout (Nix source).
    pub layout: String,
    /// Validation levels that ran on the node (`parse`, `eval`, `deep`).
    pub validated: Vec<String>,
    /// The plan of the layout against the node's disks.
    pub plan: crate::plan::Plan,
    /// Every disk the install wipes.
    pub wipes: Vec<WipedDisk>,
    /// Every disk it refuses; non-empty means `install/run` is refused.
    pub refusals: Vec<InstallRefusal>,
    /// The hash `install/run` must present: over the plan and the spec, so a changed disk
    /// or a changed flag is refused.
    pub plan_hash: String,
    /// The system closure that will be installed (from the ISO, per backend).
    pub system: String,
}

/// `POST /v1/install/csr`: make a key on the node and answer its CSR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallCsrRequest {
    pub cluster: String,
    /// `node` or `controller`.
    pub role: String,
    pub id: String,
    /// DNS names for the certificate (the node's hostname is always added).
    #[serde(default)]
    pub dns_names: Vec<String>,
}

/// The answer of `POST /v1/install/csr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallCsr {
    /// `kcore://<cluster>/<role>/<id>`.
    pub identity: String,
    pub csr_pem: String,
}

/// The controller's side of `--run-controller`: its signed certificate and where it joins.
/// The sub-CA key is not here: the new controller fetches it from a peer after it boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerCredentials {
    /// Leaf then sub-CA (PEM), signed for `kcore://<cluster>/controller/<nodeId>`.
    pub chain_pem: String,
    /// The sub-CA certificate (PEM), `tls.subCaCertFile`.
    pub sub_ca_pem: String,
    /// The address other controllers and kctl dial, `HOST:PORT` (`advertiseAddress`).
    pub advertise_address: String,
    /// Existing controllers to join and fetch the sub-CA key from.
    pub peers: Vec<String>,
}

/// Certificates for the installed system: all public.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallCredentials {
    /// The cluster root CA (PEM).
    pub ca_pem: String,
    /// The node certificate chain (PEM) for the key of the node CSR.
    pub node_chain_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerCredentials>,
}

/// `POST /v1/install/run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallRunRequest {
    /// [`InstallPlan::spec`], unchanged.
    pub spec: InstallSpec,
    /// [`InstallPlan::plan_hash`] of the plan the operator confirmed.
    pub plan_hash: String,
    pub credentials: InstallCredentials,
    /// At least 32 random characters chosen by kctl; `recovery-key` and `reboot` need it.
    pub claim_token: String,
    /// Requested timeout for the whole install; capped at 3600 s (default 1800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// The steps of an install, in order, as the operation's `step` events name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::EnumIter)]
#[serde(rename_all = "kebab-case")]
pub enum InstallStep {
    /// disko: partition, LUKS2-format the OS disk with a random install key, mkfs, mount
    /// under `/mnt`.
    Format,
    /// `nixos-install --system <closure> --no-root-passwd --no-channel-copy --root /mnt`.
    Install,
    /// The recovery key slot, then the TPM2 (or key-file) slot; the install key's slot is
    /// removed.
    Enrol,
    /// `/etc/kcore` on the installed system: node-agent.yaml, certificates and key, the
    /// management mode, the recovery key (0400).
    WriteConfig,
    /// Everything unmounted and closed; ready to reboot.
    Done,
}

impl InstallStep {
    /// The wire spelling (`write-config`).
    pub fn as_str(self) -> &'static str {
        match self {
            InstallStep::Format => "format",
            InstallStep::Install => "install",
            InstallStep::Enrol => "enrol",
            InstallStep::WriteConfig => "write-config",
            InstallStep::Done => "done",
        }
    }
}

/// How long one step took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepTiming {
    pub step: InstallStep,
    pub seconds: f64,
}

/// What an install operation's result carries besides the common fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallOutcome {
    /// The steps that finished, with their durations.
    #[serde(default)]
    pub steps: Vec<StepTiming>,
    /// The step that failed, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<InstallStep>,
    /// The LUKS2 partition of the OS disk (by-id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub luks_device: Option<String>,
    /// The system closure installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

/// `POST /v1/install/recovery-key` and `POST /v1/install/reboot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallClaim {
    pub operation_id: String,
    pub claim_token: String,
}

/// The answer of `POST /v1/install/recovery-key`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryKey {
    pub node_id: String,
    /// The LUKS2 partition it opens (by-id).
    pub luks_device: String,
    /// The key, as `cryptsetup open` and `systemd-cryptsetup` take it.
    pub recovery_key: String,
    /// Where the installed system keeps its copy.
    pub path_on_node: String,
}

/// Never print the key by accident.
impl std::fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryKey")
            .field("node_id", &self.node_id)
            .field("luks_device", &self.luks_device)
            .field("recovery_key", &"<redacted>")
            .field("path_on_node", &self.path_on_node)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_camel_case_and_refuses_unknown_keys() {
        let spec: InstallSpec = serde_json::from_value(serde_json::json!({
            "cluster": "c1", "nodeId": "n1", "dcId": "DC1", "controllers": ["10.0.0.1:9090"],
            "osDisk": "/dev/sda", "storageBackend": "lvm", "luks": "auto",
        }))
        .unwrap();
        assert_eq!(spec.storage_backend, StorageBackend::Lvm);
        assert_eq!(spec.luks, LuksChoice::Auto);
        let err = serde_json::from_value::<InstallSpec>(serde_json::json!({
            "cluster": "c1", "nodeId": "n1", "dcId": "DC1", "controllers": [],
            "osDisk": "/dev/sda", "osdisk": "/dev/sdb",
        }))
        .unwrap_err();
        assert!(err.to_string().contains("osdisk"), "{err}");
    }

    #[test]
    fn steps_have_their_wire_names_in_order() {
        use strum::IntoEnumIterator;
        let names: Vec<String> = InstallStep::iter()
            .map(|s| {
                serde_json::to_value(s)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            names,
            ["format", "install", "enrol", "write-config", "done"]
        );
        for s in InstallStep::iter() {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn recovery_key_debug_is_redacted() {
        let key = RecoveryKey {
            node_id: "n1".into(),
            luks_device: "/dev/disk/by-id/x-part2".into(),
            recovery_key: "secret-words".into(),
            path_on_node: "/etc/kcore/recovery/luks-recovery-key.txt".into(),
        };
        assert!(!format!("{key:?}").contains("secret-words"));
    }
}
