//! `kind: ClusterUpdate`: a rollout of one pinned flake revision to a set of nodes (issue 12).
//!
//! camelCase like every kind, with the operator guide's snake_case keys (`flake_ref`,
//! `strategy_type`, ...) accepted as aliases so the manifests in the guide apply as written.
//! Unknown fields are refused. [`ClusterUpdateSpec::validate`] checks every field and names
//! its path; `flake_ref` + `flake_rev` must pin one commit, through kcore-nix's flake
//! helpers (the same code the agent uses to build the URL), so a `path:` ref, an indirect
//! ref or a short rev is refused here, before anything is stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resource::{Kind, KindSpec, Object, Status, label_key, label_value};
use crate::validate::{self, FieldError};

/// A ClusterUpdate object as stored and listed.
pub type ClusterUpdate = Object<ClusterUpdateSpec>;

/// `spec` of a ClusterUpdate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterUpdateSpec {
    pub target: Target,
    pub selector: Selector,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default, alias = "drain_vms")]
    pub drain_vms: bool,
    #[serde(default)]
    pub activation: Activation,
    #[serde(default, alias = "approval_policy")]
    pub approval_policy: ApprovalPolicy,
    /// The failure budget: the rollout halts when more nodes than this fail.
    #[serde(default, alias = "max_failures")]
    pub max_failures: u32,
}

/// `spec.target`: what the nodes move to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// A label for people (`0.4.0`); the revision is what is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(alias = "flake_ref")]
    pub flake_ref: String,
    #[serde(alias = "flake_rev")]
    pub flake_rev: String,
    /// The `nixosConfigurations` attribute; the node's hostname when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// `spec.selector`: exactly one of `allNodes`, `controllersOnly`, `nodeIds`, narrowed by
/// `labels` and `datacenters`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    #[serde(default, alias = "all_nodes", skip_serializing_if = "is_false")]
    pub all_nodes: bool,
    #[serde(default, alias = "controllers_only", skip_serializing_if = "is_false")]
    pub controllers_only: bool,
    #[serde(default, alias = "node_ids", skip_serializing_if = "Vec::is_empty")]
    pub node_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `spec.strategy.strategyType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyType {
    #[default]
    OneAtATime,
    Batch,
    Canary,
}

/// `spec.strategy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategy {
    #[serde(default, alias = "strategy_type")]
    pub strategy_type: StrategyType,
    /// Never more nodes than this between activation start and healthy.
    #[serde(default = "one", alias = "max_unavailable")]
    pub max_unavailable: u32,
    #[serde(default = "one", alias = "batch_size")]
    pub batch_size: u32,
    /// Nodes updated first under `canary`, which must be healthy before anything else starts.
    #[serde(default = "one", alias = "canary_count")]
    pub canary_count: u32,
}

fn one() -> u32 {
    1
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy {
            strategy_type: StrategyType::default(),
            max_unavailable: 1,
            batch_size: 1,
            canary_count: 1,
        }
    }
}

/// `spec.activation.mode`: `auto` is `switch` unless a reboot is needed, then `boot` and a
/// trial reboot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationMode {
    #[default]
    Auto,
    Switch,
    Boot,
    Test,
}

/// The default of `spec.activation.healthTimeoutSeconds`.
pub const DEFAULT_HEALTH_TIMEOUT_SECONDS: u64 = 300;
/// Timeouts are capped at an hour everywhere in kcore (DESIGN.md, Storage safety).
pub const MAX_HEALTH_TIMEOUT_SECONDS: u64 = 3600;

/// `spec.activation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Activation {
    #[serde(default)]
    pub mode: ActivationMode,
    #[serde(default = "default_health_timeout", alias = "health_timeout_seconds")]
    pub health_timeout_seconds: u64,
}

fn default_health_timeout() -> u64 {
    DEFAULT_HEALTH_TIMEOUT_SECONDS
}

impl Default for Activation {
    fn default() -> Self {
        Activation {
            mode: ActivationMode::default(),
            health_timeout_seconds: DEFAULT_HEALTH_TIMEOUT_SECONDS,
        }
    }
}

/// `spec.approvalPolicy`: `manual` waits for `kctl update cluster approve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalPolicy {
    #[default]
    Manual,
    Auto,
}

/// `status.phase` of a ClusterUpdate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterUpdatePhase {
    Pending,
    AwaitingApproval,
    RollingOut,
    Halted,
    Succeeded,
    Failed,
    Cancelled,
    RollingBack,
    RolledBack,
}

/// The phase of one node in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeUpdatePhase {
    Pending,
    Preparing,
    Prepared,
    Activating,
    Verifying,
    Succeeded,
    Failed,
    Reverted,
    Skipped,
    RolledBack,
}

/// The common part of a ClusterUpdate's `status`.
pub type ClusterUpdateStatusCommon = Status<ClusterUpdatePhase>;

impl ClusterUpdatePhase {
    /// Whether the engine schedules nothing more for the rollout.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ClusterUpdatePhase::Halted
                | ClusterUpdatePhase::Succeeded
                | ClusterUpdatePhase::Failed
                | ClusterUpdatePhase::Cancelled
                | ClusterUpdatePhase::RolledBack
        )
    }

    /// Whether a rollback may start from this phase: the rollout started and is not
    /// (being) rolled back already. `rolling_out` counts: its steps in flight end first.
    pub fn can_roll_back(self) -> bool {
        matches!(
            self,
            ClusterUpdatePhase::RollingOut
                | ClusterUpdatePhase::Halted
                | ClusterUpdatePhase::Succeeded
                | ClusterUpdatePhase::Failed
                | ClusterUpdatePhase::Cancelled
        )
    }
}

/// `status.owner`: the controller that schedules the rollout, under a lease
/// (docs/controller.md, "Kinds written by one owner").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutOwner {
    pub controller_id: String,
    /// +1 at every takeover; steps and reports carry it.
    pub epoch: u64,
    /// Unix seconds; another controller may take over after it (plus the clock bound).
    pub lease_until: i64,
}

/// One row of `status.nodes`: where one node is in the rollout, derived from its step
/// records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeUpdateRow {
    pub node_id: String,
    pub phase: NodeUpdatePhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The generation before the update (what a revert returned to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<crate::rollout::GenerationRef>,
    /// The system profile's generation when the step ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<crate::rollout::GenerationRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The stable code of `reason` when the node's step did not succeed (`HEALTH_TIMEOUT`,
    /// `DRAIN_TIMEOUT`, ...; `STEP_FAILED` when the report named none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<crate::rollout::StepCode>,
    /// When the node's rollback step started (`kctl update cluster rollback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_started_at: Option<String>,
    /// When the node's rollback step ended (`rolled_back`, or `failed` with `reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_finished_at: Option<String>,
}

/// One entry of `status.history`: a phase the rollout entered and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseChange {
    pub phase: ClusterUpdatePhase,
    /// RFC 3339 with microseconds.
    pub at: String,
}

/// `status` of a ClusterUpdate. The engine's owner writes `phase`, `owner`, `targets`,
/// `nodes`, `history`, `message`; operators' approve, cancel and rollback write
/// `approvedAt`, `cancelledAt` and `rollbackAt` (separate fields, so last-writer-wins never
/// mixes the two writers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterUpdateStatus {
    #[serde(default)]
    pub observed_generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterUpdatePhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<RolloutOwner>,
    /// The nodes chosen when the rollout started, in the order they are updated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeUpdateRow>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<PhaseChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<String>,
    /// When an operator asked for the rollback (`POST /v1/clusterupdates/{name}/rollback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_at: Option<String>,
}

/// `POST /v1/clusterupdates/plan` (admin): what the controller would do with a
/// ClusterUpdate manifest, changing nothing: the nodes its selector names with why each is
/// or is not a target, and the waves in order. The node-side facts (host attribute, paths,
/// reboot verdict) come from each target's agent ([`crate::rollout::HostPlan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterUpdatePlan {
    pub name: String,
    /// The targets, in the order they would be updated.
    pub targets: Vec<String>,
    /// The waves (canaries first, then batches), each starting when the one before ended.
    pub waves: Vec<Vec<String>>,
    /// At most this many nodes between activation start and healthy.
    pub max_unavailable: usize,
    /// Every node the selector's ids, labels and datacenters name, targets or not.
    pub nodes: Vec<PlanNode>,
}

/// One node of a [`ClusterUpdatePlan`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanNode {
    pub node_id: String,
    /// Heartbeat within the controller's `heartbeatTimeoutSeconds`.
    pub ready: bool,
    pub approved: bool,
    /// Where the node's agent listens (from its report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_address: Option<String>,
    /// Another rollout with a step in flight on this node (it would wait for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_rollout: Option<String>,
    /// A target: Ready and approved.
    pub target: bool,
}

/// A [`kcore_nix::flake::FlakeError`] as a field error: its message carries the problem,
/// then `; ` and the fix.
fn flake_error(field: &str, value: &str, err: &kcore_nix::flake::FlakeError) -> FieldError {
    let text = err.to_string();
    let (problem, fix) = text.split_once("; ").unwrap_or((text.as_str(), ""));
    FieldError::new(field, value, format!("is refused: {problem}"), fix)
}

fn positive(field: &str, n: u32) -> Result<(), FieldError> {
    if n == 0 {
        return Err(FieldError::new(field, "0", "is zero", "give at least 1"));
    }
    Ok(())
}

impl KindSpec for ClusterUpdateSpec {
    const KIND: Kind = Kind::ClusterUpdate;

    fn validate(&self) -> Result<(), FieldError> {
        let t = &self.target;
        if let Some(version) = &t.version
            && (version.is_empty() || version.len() > 128 || version.chars().any(char::is_control))
        {
            return Err(FieldError::new(
                "spec.target.version",
                version,
                "is empty, over 128 bytes or contains control characters",
                "give a short label such as 0.4.0, or leave it out",
            ));
        }
        kcore_nix::flake::check_rev(&t.flake_rev)
            .map_err(|e| flake_error("spec.target.flakeRev", &t.flake_rev, &e))?;
        let pinned = kcore_nix::flake::pinned_flake_url(&t.flake_ref, &t.flake_rev)
            .map_err(|e| flake_error("spec.target.flakeRef", &t.flake_ref, &e))?;
        if let Some(host) = &t.host {
            kcore_nix::flake::toplevel_installable(&pinned, host)
                .map_err(|e| flake_error("spec.target.host", host, &e))?;
        }

        let s = &self.selector;
        let chosen = [s.all_nodes, s.controllers_only, !s.node_ids.is_empty()]
            .iter()
            .filter(|b| **b)
            .count();
        if chosen != 1 {
            return Err(FieldError::new(
                "spec.selector",
                &format!("{chosen} of allNodes, controllersOnly, nodeIds"),
                "must choose exactly one set of nodes",
                "set one of allNodes: true, controllersOnly: true or nodeIds: [...] (narrow it with labels and datacenters)",
            ));
        }
        for (i, id) in s.node_ids.iter().enumerate() {
            validate::node_id(&format!("spec.selector.nodeIds[{i}]"), id)?;
        }
        for (key, value) in &s.labels {
            let field = format!("spec.selector.labels.{key}");
            label_key(&field, key)?;
            label_value(&field, value)?;
        }
        for (i, dc) in s.datacenters.iter().enumerate() {
            validate::dc_id(&format!("spec.selector.datacenters[{i}]"), dc)?;
        }

        let st = &self.strategy;
        positive("spec.strategy.maxUnavailable", st.max_unavailable)?;
        positive("spec.strategy.batchSize", st.batch_size)?;
        positive("spec.strategy.canaryCount", st.canary_count)?;
        if st.strategy_type == StrategyType::OneAtATime && st.batch_size != 1 {
            return Err(FieldError::new(
                "spec.strategy.batchSize",
                &st.batch_size.to_string(),
                "is more than 1 with strategyType one-at-a-time",
                "set strategyType: batch, or leave batchSize out",
            ));
        }

        let timeout = self.activation.health_timeout_seconds;
        if timeout == 0 || timeout > MAX_HEALTH_TIMEOUT_SECONDS {
            return Err(FieldError::new(
                "spec.activation.healthTimeoutSeconds",
                &timeout.to_string(),
                "is outside 1..3600",
                "give the seconds a node has to become healthy, at most 3600",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{ObjectError, decode_object};

    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    /// The operator guide's manifest, snake_case keys and all.
    fn guide_yaml() -> String {
        format!(
            "kind: ClusterUpdate
metadata: {{ name: release-0-4-0 }}
spec:
  target: {{ version: \"0.4.0\", flake_ref: github:kcorehypervisor/kcore, flake_rev: \"{REV}\" }}
  selector: {{ all_nodes: true }}
  strategy: {{ strategy_type: one-at-a-time, max_unavailable: 1, batch_size: 1, canary_count: 1 }}
  drain_vms: false
  activation: {{ mode: auto, health_timeout_seconds: 300 }}
  approval_policy: manual
  max_failures: 0
"
        )
    }

    fn parse(yaml: &str) -> Result<ClusterUpdate, ObjectError> {
        let value: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
        decode_object::<ClusterUpdateSpec>(value)
    }

    #[test]
    fn the_guide_manifest_parses_and_serialises_in_camel_case() {
        let cu = parse(&guide_yaml()).unwrap();
        assert_eq!(cu.metadata.name, "release-0-4-0");
        assert_eq!(cu.spec.target.flake_rev, REV);
        assert!(cu.spec.selector.all_nodes);
        assert_eq!(cu.spec.approval_policy, ApprovalPolicy::Manual);
        let json = serde_json::to_value(&cu).unwrap();
        assert_eq!(
            json["spec"]["target"]["flakeRef"],
            "github:kcorehypervisor/kcore"
        );
        assert_eq!(json["spec"]["strategy"]["strategyType"], "one-at-a-time");
        assert_eq!(json["spec"]["activation"]["healthTimeoutSeconds"], 300);
        // And the camelCase form reads back to the same object.
        let again = decode_object::<ClusterUpdateSpec>(json).unwrap();
        assert_eq!(again, cu);
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let yaml = guide_yaml().replace("batch_size: 1", "batchSzie: 2");
        let err = parse(&yaml).unwrap_err();
        assert_eq!(err.path(), "spec.strategy.batchSzie", "{err}");
        assert!(
            err.to_string()
                .starts_with("spec.strategy.batchSzie: unknown field"),
            "{err}"
        );
    }

    #[test]
    fn unpinned_local_and_short_refs_are_refused_naming_the_field() {
        for (from, to, field) in [
            (REV, "0123456", "spec.target.flakeRev"),
            (REV, &REV.to_uppercase(), "spec.target.flakeRev"),
            (
                "github:kcorehypervisor/kcore",
                "path:/srv/fleet",
                "spec.target.flakeRef",
            ),
            (
                "github:kcorehypervisor/kcore",
                "nixpkgs",
                "spec.target.flakeRef",
            ),
            (
                "github:kcorehypervisor/kcore",
                "https://x.invalid/f.tar.gz",
                "spec.target.flakeRef",
            ),
        ] {
            let err = parse(&guide_yaml().replace(from, to)).unwrap_err();
            assert_eq!(err.path(), field, "{to}: {err}");
            assert!(err.to_string().contains(to), "{err}");
        }
        let err =
            parse(&guide_yaml().replace("flake_rev:", "host: \"a.b\", flake_rev:")).unwrap_err();
        assert_eq!(err.path(), "spec.target.host", "{err}");
    }

    #[test]
    fn values_are_checked_field_by_field() {
        // A decode error names the key as the document spells it (an alias stays an alias);
        // a validation error names the canonical camelCase path.
        let cases = [
            (
                "{ all_nodes: true }",
                "{ all_nodes: true, node_ids: [a] }",
                "spec.selector",
            ),
            ("{ all_nodes: true }", "{ }", "spec.selector"),
            (
                "{ all_nodes: true }",
                "{ node_ids: [Bad_Id] }",
                "spec.selector.nodeIds[0]",
            ),
            (
                "{ all_nodes: true }",
                "{ all_nodes: true, datacenters: [\"a b\"] }",
                "spec.selector.datacenters[0]",
            ),
            (
                "max_unavailable: 1",
                "max_unavailable: 0",
                "spec.strategy.maxUnavailable",
            ),
            ("batch_size: 1", "batch_size: 3", "spec.strategy.batchSize"),
            (
                "health_timeout_seconds: 300",
                "health_timeout_seconds: 7200",
                "spec.activation.healthTimeoutSeconds",
            ),
            ("mode: auto", "mode: reboot", "spec.activation.mode"),
            (
                "approval_policy: manual",
                "approval_policy: later",
                "spec.approval_policy",
            ),
            ("max_failures: 0", "max_failures: -1", "spec.max_failures"),
        ];
        for (from, to, path) in cases {
            let err = parse(&guide_yaml().replace(from, to)).unwrap_err();
            assert_eq!(err.path(), path, "{to}: {err}");
        }
        // A batch of three is fine under the batch strategy.
        let yaml = guide_yaml()
            .replace("one-at-a-time", "batch")
            .replace("batch_size: 1", "batch_size: 3");
        assert_eq!(parse(&yaml).unwrap().spec.strategy.batch_size, 3);
    }

    #[test]
    fn a_document_of_another_kind_is_refused_for_its_kind() {
        let yaml = "kind: VM\nmetadata: {name: x}\nspec: {storageBackend: lvm}\n";
        let err = parse(yaml).unwrap_err();
        assert_eq!(err.path(), "kind", "{err}");
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let yaml = format!(
            "kind: ClusterUpdate\nmetadata: {{name: r}}\nspec:\n  target: {{flakeRef: \"git+https://h.invalid/f.git\", flakeRev: \"{REV}\"}}\n  selector: {{nodeIds: [n1]}}\n"
        );
        let cu = parse(&yaml).unwrap();
        assert_eq!(cu.spec.strategy, Strategy::default());
        assert_eq!(cu.spec.activation.health_timeout_seconds, 300);
        assert_eq!(cu.spec.approval_policy, ApprovalPolicy::Manual);
        let phase: ClusterUpdatePhase = serde_json::from_str("\"awaiting_approval\"").unwrap();
        assert_eq!(phase, ClusterUpdatePhase::AwaitingApproval);
    }
}
