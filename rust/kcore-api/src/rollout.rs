//! The node-local half of a rollout step on the wire: what the agent's admin-only routes
//! `POST /v1/rollout/prepare` and `POST /v1/rollout/activate` take (both answer `202` with the
//! one `OperationStarted` shape and stream progress like every long operation), and the step
//! report `GET /v1/rollout/steps/{operationId}` returns, which carries what an
//! `OperationResult` has no room for: the built store path, the reboot verdict, the previous
//! generation, the phase (also across a trial reboot) and why a node reverted.
//!
//! The controller's `ClusterUpdate` engine drives the same calls later; the state machine is
//! written down in `docs/rollouts.md`. camelCase; fields only ever grow, optional.

use serde::{Deserialize, Serialize};

/// `POST /v1/rollout/prepare`: build the host's toplevel at a pinned revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrepareRequest {
    /// A flake reference kcore-nix can pin (`github:o/r`, `git+https://...`, `git+file:///...`).
    pub flake_ref: String,
    /// The full 40-hex commit the rollout moves to.
    pub flake_rev: String,
    /// The `nixosConfigurations` attribute; default: the node's `nodeId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// How an activation is applied (`ClusterUpdate.spec.activation.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ActivationMode {
    /// `switch`, unless kernel, initrd or kernel-modules differ from the booted system (or
    /// switch-to-configuration answers 100): then `boot` and a trial reboot.
    #[default]
    Auto,
    Switch,
    Boot,
    Test,
}

impl ActivationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivationMode::Auto => "auto",
            ActivationMode::Switch => "switch",
            ActivationMode::Boot => "boot",
            ActivationMode::Test => "test",
        }
    }
}

/// The longest health gate an activation may ask for.
pub const MAX_HEALTH_TIMEOUT_SECONDS: u64 = 3600;
/// The health gate when the request names none.
pub const DEFAULT_HEALTH_TIMEOUT_SECONDS: u64 = 300;

/// `POST /v1/rollout/activate`: make a prepared toplevel the running (or next boot's)
/// system, gate it on health, and revert on the node when the gate fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActivateRequest {
    /// The toplevel a prepare step reported (`/nix/store/...`).
    pub store_path: String,
    #[serde(default)]
    pub mode: ActivationMode,
    /// 1..=3600; default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout_seconds: Option<u64>,
}

/// A profile generation: `system-<number>-link` -> `storePath`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationRef {
    pub number: u64,
    pub store_path: String,
}

/// Where a step is (docs/rollouts.md has the transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepPhase {
    Preparing,
    Prepared,
    Activating,
    Verifying,
    /// A trial boot (or a revert's boot) was asked for; the gate runs after it.
    Rebooting,
    Succeeded,
    Failed,
    Reverted,
}

impl StepPhase {
    /// Whether nothing more happens to this step.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepPhase::Prepared | StepPhase::Succeeded | StepPhase::Failed | StepPhase::Reverted
        )
    }
}

/// Why a step did not succeed, as a stable code: the agent sets it in its step report, the
/// controller's engine copies it into the node's row (`NodeUpdateRow.code`) and sets its
/// own for what fails before a node runs anything; `kctl update cluster get` shows it.
/// The strings are stable (scripts match on them); the reason beside it is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepCode {
    /// Building the target toplevel failed (evaluation, build, missing host).
    PrepareFailed,
    /// Setting the profile or `switch-to-configuration` failed (exit 2, 4, a unit that
    /// did not run); the node reverted.
    ActivationFailed,
    /// The health gate did not pass within `healthTimeoutSeconds`; the node reverted.
    HealthTimeout,
    /// `systemctl is-system-running` said `degraded` (the failed units are reported); the
    /// node reverted.
    Degraded,
    /// After a trial boot the node did not come up on the new generation (the bootloader
    /// fell back, or it booted something else); it reverted.
    TrialBootFailed,
    /// Reverting failed too: the node may be on neither generation.
    RevertFailed,
    /// `drainVms`: the node's VMs were still running `healthTimeoutSeconds` after its
    /// cordon; its step was never assigned.
    DrainTimeout,
    /// Nothing to revert or roll back to: no previous generation was recorded.
    NoPreviousGeneration,
    /// A step failed for a reason without a code of its own (or its report came from an
    /// agent that sent none).
    StepFailed,
}

impl StepCode {
    /// The stable code as printed (`HEALTH_TIMEOUT`).
    pub fn as_str(self) -> &'static str {
        match self {
            StepCode::PrepareFailed => "PREPARE_FAILED",
            StepCode::ActivationFailed => "ACTIVATION_FAILED",
            StepCode::HealthTimeout => "HEALTH_TIMEOUT",
            StepCode::Degraded => "DEGRADED",
            StepCode::TrialBootFailed => "TRIAL_BOOT_FAILED",
            StepCode::RevertFailed => "REVERT_FAILED",
            StepCode::DrainTimeout => "DRAIN_TIMEOUT",
            StepCode::NoPreviousGeneration => "NO_PREVIOUS_GENERATION",
            StepCode::StepFailed => "STEP_FAILED",
        }
    }
}

impl std::fmt::Display for StepCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /v1/rollout/steps/{operationId}`: one prepare or activation on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    pub operation_id: String,
    pub phase: StepPhase,
    /// RFC 3339, the last change.
    pub updated_at: String,
    /// The toplevel built (prepare) or activated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_path: Option<String>,
    /// Whether kernel, initrd or kernel-modules differ from `/run/booted-system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_required: Option<bool>,
    /// Which of them differ.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reboot_reasons: Vec<String>,
    /// The switch-to-configuration action used (`switch`, `boot`, `test`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    /// The generation before the activation: what a revert returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<GenerationRef>,
    /// The system profile's generation when the step ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationRef>,
    /// Why the step failed or reverted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The stable code of `reason` (absent in a report of an agent that sends none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<StepCode>,
    /// Units `systemctl` reported failed (a degraded system).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_units: Vec<String>,
    /// Reboots this activation asked for (at most a trial boot and one revert boot).
    #[serde(default)]
    pub reboots: u32,
}

impl StepReport {
    /// What a prepare alone reports: `preparing`, `prepared`, or `failed` with
    /// `PREPARE_FAILED` (a node preparing ahead reports nothing else before its step is
    /// assigned).
    pub fn is_of_a_prepare(&self) -> bool {
        match self.phase {
            StepPhase::Preparing | StepPhase::Prepared => true,
            StepPhase::Failed => self.code == Some(StepCode::PrepareFailed),
            _ => false,
        }
    }
}

/// The node capability (`NodeReport::capabilities`) of an agent that runs a `prepareOnly`
/// step as a prepare alone (docs/rollouts.md, "Preparing ahead"). The engine prepares
/// ahead only the nodes that report it.
pub const CAPABILITY_PREPARE_AHEAD: &str = "prepare-ahead";

/// One step the controller's engine assigned to a node (`GET /v1/nodes/{id}/assignment`):
/// prepare the target, then activate it. `epoch` is the rollout owner's current epoch; a
/// report carries it back and an agent refuses an assignment older than the newest epoch
/// it has seen (docs/controller.md, "Kinds written by one owner").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedStep {
    /// The ClusterUpdate's name.
    pub rollout: String,
    pub epoch: u64,
    /// The step's number for this node in this rollout (1 for the update itself).
    pub seq: u64,
    pub prepare: PrepareRequest,
    pub mode: ActivationMode,
    pub health_timeout_seconds: u64,
    /// Set for a rollback step: activate this toplevel (the node's recorded previous
    /// generation, still on the node under its profile link) instead of preparing
    /// `prepare`; nothing is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_path: Option<String>,
    /// Only prepare (build or fetch the closure, report `preparing` and `prepared`), do not
    /// activate: the owner prepares the next wave while the current one activates
    /// (docs/rollouts.md, "Preparing ahead"). The same step comes again without it when the
    /// node's turn comes; its prepare is then over and the activation starts at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prepare_only: bool,
}

/// `GET /v1/nodes/{id}/assignment?wait=SECONDS&known=TOKEN`: the step this node should run
/// now, if any. The answer comes at once when `token` differs from `known`, otherwise when
/// it changes or `wait` ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// Changes whenever `step` or `vms` change (`rollout:epoch:seq` plus a digest of the
    /// VMs); empty when there is nothing to do.
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<AssignedStep>,
    /// Every VM placed on this node, with what the controller wants of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<crate::vm::NodeVm>,
}

/// `POST /v1/nodes/{id}/assignment/report`: a step's progress. Refused with `409` when
/// `epoch` is not the rollout owner's current epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignmentReport {
    pub rollout: String,
    pub epoch: u64,
    pub seq: u64,
    pub report: StepReport,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_camel_case_and_refuse_unknown_keys() {
        let req: ActivateRequest = serde_json::from_str(
            r#"{"storePath": "/nix/store/x-system", "mode": "boot", "healthTimeoutSeconds": 5}"#,
        )
        .unwrap();
        assert_eq!(req.mode, ActivationMode::Boot);
        assert_eq!(req.health_timeout_seconds, Some(5));
        let defaulted: ActivateRequest =
            serde_json::from_str(r#"{"storePath": "/nix/store/x-system"}"#).unwrap();
        assert_eq!(defaulted.mode, ActivationMode::Auto);
        let err = serde_json::from_str::<PrepareRequest>(
            r#"{"flakeRef": "github:o/r", "flakeRev": "x", "hots": "a"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("hots"), "{err}");
    }

    #[test]
    fn a_report_names_its_phase_in_camel_case() {
        let report = StepReport {
            operation_id: "1".into(),
            phase: StepPhase::Reverted,
            updated_at: "2026-01-01T00:00:00Z".into(),
            store_path: None,
            reboot_required: Some(true),
            reboot_reasons: vec!["kernel".into()],
            goal: Some("boot".into()),
            previous: None,
            generation: None,
            reason: Some("degraded".into()),
            code: Some(StepCode::Degraded),
            failed_units: vec![],
            reboots: 2,
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["phase"], "reverted");
        assert_eq!(json["code"], "DEGRADED");
        assert_eq!(json["rebootRequired"], true);
        assert!(StepPhase::Reverted.is_final() && !StepPhase::Rebooting.is_final());
    }

    #[test]
    fn step_codes_are_stable_strings_and_an_old_report_without_one_decodes() {
        for code in [
            StepCode::PrepareFailed,
            StepCode::ActivationFailed,
            StepCode::HealthTimeout,
            StepCode::Degraded,
            StepCode::TrialBootFailed,
            StepCode::RevertFailed,
            StepCode::DrainTimeout,
            StepCode::NoPreviousGeneration,
            StepCode::StepFailed,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        let old: StepReport = serde_json::from_str(
            r#"{"operationId": "1", "phase": "failed", "updatedAt": "2026-01-01T00:00:00Z", "reason": "x"}"#,
        )
        .unwrap();
        assert_eq!(old.code, None);
    }
}

/// `POST /v1/rollout/plan {flakeRef, flakeRev, host?}` (agent, admin): what `kctl update
/// cluster plan` learns from one node, evaluated there without building anything.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPlan {
    /// The `nixosConfigurations` attribute evaluated (the request's, else the node id).
    pub host: String,
    pub host_exists: bool,
    /// The flake's hosts, when `host` is not one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// `/run/current-system` and `/run/booted-system` as they resolve now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booted_system: Option<String>,
    /// The target toplevel's store path (evaluated, not built).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_system: Option<String>,
    /// The target is what runs already.
    #[serde(default)]
    pub up_to_date: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_required: Option<bool>,
    /// `kernel`, `initrd`, `kernel-modules` (against `/run/booted-system`),
    /// `switch-inhibitors` (against `/run/current-system`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reboot_reasons: Vec<String>,
    /// Why the evaluation failed (then nothing else is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
