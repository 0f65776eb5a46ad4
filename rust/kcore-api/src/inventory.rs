//! What a node reports about itself: disks, NICs and its storage backend's state. Produced
//! by the agent, stored by the controller, printed by kctl. Also the request/response
//! bodies of the agent's day-2 routes (`apply-disko`, `apply-nix`, operations), because
//! kctl and the agent must agree on them byte for byte.
//!
//! Every type is camelCase on the wire and only ever grows optional fields, so an older
//! controller can still read what a newer agent sends.

use serde::{Deserialize, Serialize};

/// One block device as `lsblk` sees it, with the agent's in-use verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// Kernel name, e.g. `sda`, `nvme0n1p1`.
    pub name: String,
    /// Device node, e.g. `/dev/sda`.
    pub path: String,
    /// A stable `/dev/disk/by-id/...` path when udev created one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Size in bytes.
    pub size_bytes: u64,
    /// lsblk's `TYPE`: `disk`, `part`, `lvm`, `crypt`, `rom`, `loop`, ...
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partlabel: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mountpoints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Disk>,
    /// True when the device (or anything on it) is mounted, swap, held, a pool member or
    /// carries data: a disk apply would refuse it.
    pub in_use: bool,
    /// Why it is in use, for people (`mounted at /`, `holder dm-0`, ...); absent when free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_use_reason: Option<String>,
}

/// `GET /v1/inventory/disks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskInventory {
    pub disks: Vec<Disk>,
    /// Whether the node has a TPM (`/sys/class/tpm/tpm0` exists), which decides LUKS mode
    /// `auto`; absent from agents that do not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<bool>,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Nic {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Operational state as the kernel reports it: `up`, `down`, `unknown`, ...
    pub state: String,
    /// Link speed in Mbit/s; absent when the driver does not report one (virtual links,
    /// links that are down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Addresses in CIDR form, e.g. `192.0.2.2/24`, `fd00::2/64`.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// `GET /v1/inventory/nics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NicInventory {
    pub nics: Vec<Nic>,
}

/// An LVM volume group (`vgs --reportformat json --units b`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeGroup {
    pub name: String,
    pub size_bytes: u64,
    pub free_bytes: u64,
    pub pv_count: u32,
    pub lv_count: u32,
}

/// An LVM logical volume (`lvs --reportformat json --units b`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogicalVolume {
    pub name: String,
    pub vg_name: String,
    pub size_bytes: u64,
    /// lvs' `lv_attr` string (first letter `t` = thin pool, `V` = thin volume).
    pub attr: String,
    /// The thin pool a thin volume lives in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Data usage of a thin pool or thin volume, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_percent: Option<String>,
}

/// LVM backend state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LvmView {
    /// The configured VG name (`storage.lvm.vgName`).
    pub vg_name: String,
    pub volume_groups: Vec<VolumeGroup>,
    pub logical_volumes: Vec<LogicalVolume>,
}

/// A ZFS pool (`zpool list -Hp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZfsPool {
    pub name: String,
    pub size_bytes: u64,
    pub allocated_bytes: u64,
    pub free_bytes: u64,
    /// `ONLINE`, `DEGRADED`, ...
    pub health: String,
}

/// A ZFS dataset (`zfs list -Hp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZfsDataset {
    pub name: String,
    pub used_bytes: u64,
    pub available_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<String>,
}

/// ZFS backend state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZfsView {
    /// The configured pool name (`storage.zfs.poolName`).
    pub pool_name: String,
    pub pools: Vec<ZfsPool>,
    pub datasets: Vec<ZfsDataset>,
    /// `zpool status <pool>` verbatim, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A mounted filesystem under `/var/lib/kcore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub fstype: String,
}

/// `GET /v1/inventory/storage`: the storage view behind `kctl describe node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageView {
    /// `filesystem`, `lvm` or `zfs` (from the agent's configuration).
    pub backend: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm: Option<LvmView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zfs: Option<ZfsView>,
    pub mounts: Vec<Mount>,
    /// Parts of the view that could not be collected (a missing tool, a failing command):
    /// reported instead of failing the whole request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `POST /v1/disko/apply` body. Without `apply` it is a dry run; with it, `planHash`
/// must be the hash of the plan the operator saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyDiskoRequest {
    /// The disko fragment (Nix source).
    pub layout: String,
    #[serde(default)]
    pub apply: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_hash: Option<String>,
    /// Requested timeout; the agent caps it at 3600 and defaults to 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// The dry-run answer of `POST /v1/disko/apply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskoPlanResponse {
    /// The plan as kcore-disko produced it (targets, actions, refusals).
    pub plan: crate::plan::Plan,
    /// The hash `--apply` must present.
    pub plan_hash: String,
    /// Validation levels that ran (`parse`, `eval`, `deep`).
    pub validated: Vec<String>,
    /// The management mode read for this request.
    pub management_mode: String,
    /// Whether an apply of this plan would be allowed right now, and if not, why.
    pub apply_allowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<crate::ApiError>,
}

/// `POST /v1/nix/apply` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyNixRequest {
    /// The NixOS module to write to `nix.configPath`.
    pub config: String,
    /// Only write the file; do not run `nixos-rebuild`.
    #[serde(default)]
    pub no_rebuild: bool,
}

/// What a long operation does. The wire spellings are the ones the agent has always used
/// (`apply-disko`, `apply-nix`); a new long operation (install, a rollout step) is a new
/// variant here, so kctl and the controller learn of it from the type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::EnumIter)]
pub enum OperationKind {
    /// `POST /v1/disko/apply` with `apply`: disko format,mount of a day-2 fragment.
    #[serde(rename = "apply-disko")]
    ApplyDisko,
    /// `POST /v1/nix/apply`: write the node's module, then `nixos-rebuild test` and `switch`.
    #[serde(rename = "apply-nix")]
    ApplyNix,
    /// `POST /v1/rollout/prepare`: `nix build` of a pinned flake's toplevel (`crate::rollout`).
    #[serde(rename = "rollout-prepare")]
    RolloutPrepare,
    /// `POST /v1/rollout/activate`: profile, switch-to-configuration, health gate, revert.
    #[serde(rename = "rollout-activate")]
    RolloutActivate,
    /// Started by the agent after a (trial or revert) boot an activation asked for: the
    /// health gate of the booted system, then the new default or the revert.
    #[serde(rename = "rollout-verify")]
    RolloutVerify,
    /// `POST /v1/install/run` on the live ISO: format, install, enrol, write-config
    /// ([`crate::install`]).
    #[serde(rename = "install")]
    Install,
}

impl OperationKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::ApplyDisko => "apply-disko",
            OperationKind::ApplyNix => "apply-nix",
            OperationKind::RolloutPrepare => "rollout-prepare",
            OperationKind::RolloutActivate => "rollout-activate",
            OperationKind::RolloutVerify => "rollout-verify",
            OperationKind::Install => "install",
        }
    }
}

impl std::fmt::Display for OperationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// So callers that held the kind as text (`result.kind == "apply-disko"`) keep working.
impl PartialEq<&str> for OperationKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The one `202 Accepted` answer of every request that started a long operation: its id,
/// its kind and the effective settings. Progress is `GET /v1/operations/{id}/stream`, the
/// result `GET /v1/operations/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStarted {
    pub operation_id: String,
    pub kind: OperationKind,
    /// The timeout the agent will actually enforce (after the 3600 s cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_timeout_seconds: Option<u64>,
}

/// One NDJSON line of `GET /v1/operations/{id}/stream`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "event")]
pub enum OperationEvent {
    /// The operation began: what it runs and with which timeout.
    Started {
        operation_id: String,
        kind: OperationKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        effective_timeout_seconds: Option<u64>,
    },
    /// A step began (e.g. `nixos-rebuild test`).
    Step { name: String },
    /// One line of a subprocess' output.
    Output { stream: String, line: String },
    /// The final event: the operation's result.
    Finished { result: Box<OperationResult> },
}

/// Terminal state of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::EnumIter)]
#[serde(rename_all = "camelCase")]
pub enum OperationStatus {
    Running,
    Succeeded,
    Failed,
    TimedOut,
}

impl OperationStatus {
    /// The wire spelling (`timedOut`), also the `outcome` label of `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::Running => "running",
            OperationStatus::Succeeded => "succeeded",
            OperationStatus::Failed => "failed",
            OperationStatus::TimedOut => "timedOut",
        }
    }
}

/// `GET /v1/operations/{id}`: the result, fetchable again after the stream ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationResult {
    pub operation_id: String,
    pub kind: OperationKind,
    pub status: OperationStatus,
    /// RFC 3339 timestamps.
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_timeout_seconds: Option<u64>,
    /// A failure's error, with a stable code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::ApiError>,
    /// apply-nix: the system generation after the switch (the `/nix/var/nix/profiles/system`
    /// link target or the built toplevel path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    /// Files the operation wrote (the applied fragment, the configuration) and their backups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written: Vec<String>,
    /// The last lines of output, so a result fetched later still says what happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_tail: Vec<String>,
    /// install: the steps with their durations, the failed step, the LUKS device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<crate::install::InstallOutcome>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_is_camel_case_with_type_and_omits_empty_fields() {
        let disk = Disk {
            name: "sda".into(),
            path: "/dev/sda".into(),
            by_id: Some("/dev/disk/by-id/ata-X_1".into()),
            model: None,
            serial: Some("S1".into()),
            size_bytes: 1024,
            kind: "disk".into(),
            fstype: None,
            partlabel: None,
            mountpoints: vec![],
            children: vec![],
            in_use: false,
            in_use_reason: None,
        };
        let json = serde_json::to_value(&disk).unwrap();
        assert_eq!(json["byId"], "/dev/disk/by-id/ata-X_1");
        assert_eq!(json["sizeBytes"], 1024);
        assert_eq!(json["type"], "disk");
        assert_eq!(json["inUse"], false);
        assert!(json.get("model").is_none());
        assert!(json.get("children").is_none());
        let back: Disk = serde_json::from_value(json).unwrap();
        assert_eq!(back, disk);
    }

    #[test]
    fn operation_events_are_tagged() {
        let ev = OperationEvent::Output {
            stream: "stdout".into(),
            line: "hello".into(),
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(
            json,
            r#"{"event":"output","stream":"stdout","line":"hello"}"#
        );
    }

    #[test]
    fn operation_kinds_keep_their_wire_spellings() {
        for (kind, text) in [
            (OperationKind::ApplyDisko, "apply-disko"),
            (OperationKind::ApplyNix, "apply-nix"),
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), text);
            assert_eq!(kind.as_str(), text);
            assert_eq!(kind, text);
            let back: OperationKind = serde_json::from_value(text.into()).unwrap();
            assert_eq!(back, kind);
        }
        assert!(serde_json::from_str::<OperationKind>(r#""apply_disko""#).is_err());
        let started = OperationStarted {
            operation_id: "op-1".into(),
            kind: OperationKind::ApplyDisko,
            effective_timeout_seconds: Some(300),
        };
        assert_eq!(
            serde_json::to_value(&started).unwrap(),
            serde_json::json!({"operationId": "op-1", "kind": "apply-disko", "effectiveTimeoutSeconds": 300})
        );
    }

    #[test]
    fn apply_request_rejects_unknown_fields() {
        let err = serde_json::from_str::<ApplyDiskoRequest>(r#"{"layout":"{}","aply":true}"#)
            .unwrap_err();
        assert!(err.to_string().contains("aply"), "{err}");
    }
}
