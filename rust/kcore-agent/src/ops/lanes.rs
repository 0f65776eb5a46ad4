//! Lanes: what must not run twice at once on a node. Each long operation kind takes a fixed
//! set of lanes for its whole run; a lane held by another operation refuses the request at
//! once (never queued) with that lane's stable code, and nothing is done.
//!
//! | lane | kinds | busy |
//! |---|---|---|
//! | `disk` | `apply-disko` (later: install, which formats) | `409 DISK_APPLY_IN_PROGRESS` |
//! | `system` | `apply-nix` (later: install, rollout prepare/activate) | `409 REBUILD_IN_PROGRESS` |
//!
//! The two lanes are independent: a disk apply and a rebuild may run at the same time. A
//! day-2 disko apply formats and mounts new devices only (the plan refuses anything in use),
//! and a rebuild activates the configuration in `/etc/nixos`, which does not read the
//! agent's applied fragments; neither changes what the other reads. A kind that does both
//! (install) takes both lanes.

use axum::http::StatusCode;
use kcore_api::ErrorCode;
use kcore_api::inventory::OperationKind;
use kcore_net::ApiFailure;
use std::sync::Arc;

/// One exclusive lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Partitioning, formatting, mounting.
    Disk,
    /// Building and activating a system.
    System,
}

impl Lane {
    /// The lanes `kind` holds while it runs.
    pub fn of(kind: OperationKind) -> &'static [Lane] {
        match kind {
            OperationKind::ApplyDisko => &[Lane::Disk],
            OperationKind::ApplyNix
            | OperationKind::RolloutPrepare
            | OperationKind::RolloutActivate
            | OperationKind::RolloutVerify => &[Lane::System],
            // An install formats the disks and then installs a system.
            OperationKind::Install => &[Lane::Disk, Lane::System],
        }
    }

    fn busy(self) -> ApiFailure {
        let (code, message) = match self {
            Lane::Disk => (
                ErrorCode::DiskApplyInProgress,
                "another disk apply is running on this node; wait for it to finish",
            ),
            Lane::System => (
                ErrorCode::RebuildInProgress,
                "a rebuild is running on this node; it was not interrupted. Fetch its result with \
                 `kctl node operation ID` and try again when it has finished",
            ),
        };
        ApiFailure::with_status(StatusCode::CONFLICT, code, message)
    }
}

/// The node's lanes.
#[derive(Debug, Default)]
pub struct Lanes {
    disk: Arc<tokio::sync::Mutex<()>>,
    system: Arc<tokio::sync::Mutex<()>>,
}

/// Held lanes; dropping it releases them.
#[derive(Debug)]
pub struct LaneGuard {
    _held: Vec<tokio::sync::OwnedMutexGuard<()>>,
}

impl Lanes {
    /// Take every lane of `kind`, or none: the first busy one is the refusal.
    pub fn take(&self, kind: OperationKind) -> Result<LaneGuard, ApiFailure> {
        let mut held = Vec::new();
        // A fixed order (the order of `Lane::of`), and `try_lock`: no waiting, no deadlock.
        for lane in Lane::of(kind) {
            let mutex = match lane {
                Lane::Disk => &self.disk,
                Lane::System => &self.system,
            };
            held.push(mutex.clone().try_lock_owned().map_err(|_| lane.busy())?);
        }
        Ok(LaneGuard { _held: held })
    }

    /// A guard holding nothing (tests of the operation store).
    pub fn none() -> LaneGuard {
        LaneGuard { _held: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_is_exclusive_and_lanes_are_independent() {
        let lanes = Lanes::default();
        let disk = lanes.take(OperationKind::ApplyDisko).unwrap();
        let err = lanes.take(OperationKind::ApplyDisko).unwrap_err();
        assert_eq!(err.error.code, "DISK_APPLY_IN_PROGRESS");
        assert_eq!(err.status, StatusCode::CONFLICT);
        let system = lanes.take(OperationKind::ApplyNix).unwrap();
        assert_eq!(
            lanes.take(OperationKind::ApplyNix).unwrap_err().error.code,
            "REBUILD_IN_PROGRESS"
        );
        drop(disk);
        drop(system);
        assert!(lanes.take(OperationKind::ApplyDisko).is_ok());
    }
}
