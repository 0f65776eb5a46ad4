//! What a rollout step keeps on disk, under `<operations>/rollout/` (beside the operation
//! results, written atomically like them):
//!
//! - `<operationId>.json`: the step's [`StepReport`], rewritten at every phase change, so
//!   `GET /v1/rollout/steps/{id}` answers after an agent restart or a reboot too.
//! - `<operationId>.system`: a prepare's `nix build` result link, a GC root that keeps the
//!   prepared closure until it is activated.
//! - `activation.json`: the one [`ActivationRecord`] of this node, written before anything
//!   changes the system and kept until the activation has ended (succeeded or reverted). It
//!   is what an agent starting after a (trial or revert) boot finds and finishes, and what
//!   refuses a second activation while a trial boot is pending (after deploy-rs'
//!   `activate.rs`: persist the intent, activate, wait for confirmation, else roll back).

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use kcore_api::ErrorCode;
use kcore_api::rollout::{GenerationRef, StepCode, StepPhase, StepReport};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ops::OpError;

/// Bumped after every report [`save_report`] wrote, so the assignment loop's follower sends
/// a new phase as soon as it is saved instead of at its next look (issue 12: the looks every
/// 200 ms cost up to 0.6 s per step, one wait per phase). Process-wide, as `save_report`
/// knows only the directory: a second agent in the same process (the tests' rigs) costs its
/// followers one extra read of their own report, nothing else.
static SAVED: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// Changes after each report saved from now on (any operation's: read yours to see).
pub fn reports_saved() -> watch::Receiver<u64> {
    SAVED.subscribe()
}

/// The rollout directory under the operations directory.
pub fn dir(ops_dir: &Path) -> PathBuf {
    ops_dir.join("rollout")
}

fn report_file(ops_dir: &Path, id: &str) -> Option<PathBuf> {
    // Ids are uuids this agent made; anything else names no file.
    let safe = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    safe.then(|| dir(ops_dir).join(format!("{id}.json")))
}

/// The prepare's result link for operation `id`.
pub fn system_link(ops_dir: &Path, id: &str) -> PathBuf {
    dir(ops_dir).join(format!("{id}.system"))
}

fn write_failed(path: &Path, e: std::io::Error) -> OpError {
    OpError::failed(
        ErrorCode::WriteFailed,
        format!("cannot write {}: {e}", path.display()),
    )
}

/// A new report for operation `id` in `phase`.
pub fn new_report(id: &str, phase: StepPhase) -> StepReport {
    StepReport {
        operation_id: id.to_string(),
        phase,
        updated_at: crate::ops::now_rfc3339(),
        store_path: None,
        reboot_required: None,
        reboot_reasons: Vec::new(),
        goal: None,
        previous: None,
        generation: None,
        reason: None,
        code: None,
        failed_units: Vec::new(),
        reboots: 0,
    }
}

/// Save `report` (stamped now).
pub fn save_report(ops_dir: &Path, report: &mut StepReport) -> Result<(), OpError> {
    report.updated_at = crate::ops::now_rfc3339();
    let Some(file) = report_file(ops_dir, &report.operation_id) else {
        return Err(OpError::failed(
            ErrorCode::Internal,
            format!("no report file for id {:?}", report.operation_id),
        ));
    };
    let json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other);
    json.and_then(|j| crate::fsutil::write_atomic(&file, &j))
        .map_err(|e| write_failed(&file, e))?;
    SAVED.send_modify(|n| *n = n.wrapping_add(1));
    Ok(())
}

/// The saved report of operation `id`.
pub fn load_report(ops_dir: &Path, id: &str) -> Option<StepReport> {
    let bytes = std::fs::read(report_file(ops_dir, id)?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Where an activation is, as far as surviving a restart or a reboot needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecordPhase {
    /// The profile and switch-to-configuration steps (in a unit) and the health gate.
    Activating,
    /// A trial boot of the new generation was asked for (one-shot entry, old default).
    TrialBoot,
    /// The trial failed; a boot back into the previous generation was asked for.
    RevertBoot,
}

/// The activation in progress on this node (at most one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivationRecord {
    /// The `rollout-activate` operation whose report this activation updates.
    pub operation_id: String,
    pub store_path: PathBuf,
    /// switch-to-configuration's action (`switch`, `boot`, `test`).
    pub goal: String,
    pub previous: Option<GenerationRef>,
    /// The new system's generation (absent for `test`, which leaves the profile alone).
    pub generation: Option<GenerationRef>,
    pub health_timeout_seconds: u64,
    pub phase: RecordPhase,
    /// Unix seconds: a trial boot that has not passed its gate by then is reverted.
    pub deadline: u64,
    /// Why a revert boot was asked for.
    pub reason: Option<String>,
    /// The stable code of `reason`, copied into every report of this activation (absent in
    /// a record an older agent wrote).
    #[serde(default)]
    pub code: Option<StepCode>,
    pub failed_units: Vec<String>,
    pub reboots: u32,
}

fn record_file(ops_dir: &Path) -> PathBuf {
    dir(ops_dir).join("activation.json")
}

impl ActivationRecord {
    pub fn save(&self, ops_dir: &Path) -> Result<(), OpError> {
        let file = record_file(ops_dir);
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other);
        json.and_then(|j| crate::fsutil::write_atomic(&file, &j))
            .map_err(|e| write_failed(&file, e))
    }

    /// This node's record, if an activation has not ended. An unreadable one is logged and
    /// counts as present (`Err`), so nothing starts over an activation it cannot read.
    pub fn load(ops_dir: &Path) -> Result<Option<ActivationRecord>, String> {
        let file = record_file(ops_dir);
        match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{} is unreadable: {e}", file.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", file.display())),
        }
    }

    /// The activation has ended: nothing is left to finish after a restart.
    pub fn clear(ops_dir: &Path) -> Result<(), OpError> {
        let file = record_file(ops_dir);
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(write_failed(&file, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_and_the_record_round_trip_and_the_record_clears() {
        let dir = tempfile::tempdir().unwrap();
        let id = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let mut report = new_report(id, StepPhase::Preparing);
        save_report(dir.path(), &mut report).unwrap();
        assert_eq!(load_report(dir.path(), id), Some(report));
        assert_eq!(load_report(dir.path(), "../x"), None);
        let record = ActivationRecord {
            operation_id: id.into(),
            store_path: "/nix/store/x".into(),
            goal: "boot".into(),
            previous: None,
            generation: None,
            health_timeout_seconds: 5,
            phase: RecordPhase::TrialBoot,
            deadline: 1,
            reason: None,
            code: Some(StepCode::HealthTimeout),
            failed_units: vec![],
            reboots: 1,
        };
        assert_eq!(ActivationRecord::load(dir.path()), Ok(None));
        record.save(dir.path()).unwrap();
        assert_eq!(ActivationRecord::load(dir.path()), Ok(Some(record)));
        ActivationRecord::clear(dir.path()).unwrap();
        assert_eq!(ActivationRecord::load(dir.path()), Ok(None));
        std::fs::write(dir.path().join("rollout/activation.json"), "{").unwrap();
        assert!(ActivationRecord::load(dir.path()).is_err());
    }
}
