//! The agent's stable error codes (on top of kcore-net's generic ones). kctl maps the
//! refusals (nothing was changed) to exit code 1 and the failures to 3.

/// `installer-only` (or an unknown mode) refuses every disk apply.
pub const DISKO_INSTALLER_ONLY: &str = "DISKO_INSTALLER_ONLY";
/// `controller-managed` allows additive changes only.
pub const DESTRUCTIVE_CHANGE_REFUSED: &str = "DESTRUCTIVE_CHANGE_REFUSED";
/// The plan changed since the dry run whose hash was presented.
pub const PLAN_HASH_MISMATCH: &str = "PLAN_HASH_MISMATCH";
/// `apply: true` without `planHash`.
pub const PLAN_HASH_REQUIRED: &str = "PLAN_HASH_REQUIRED";
/// The fragment failed validation (levels 1-3); details list the findings.
pub const DISKO_INVALID: &str = "DISKO_INVALID";
/// The Nix configuration failed validation.
pub const NIX_INVALID: &str = "NIX_INVALID";
/// Evaluating the submitted layout or configuration ran past its wall-clock timeout or its
/// CPU-time bound (`evaluation.cpuLimitSeconds`) and was stopped (HTTP 422).
pub const EVAL_TIMEOUT: &str = "EVAL_TIMEOUT";
/// Evaluating the submitted layout or configuration needed more memory than its bound
/// (`evaluation.memoryLimitMiB`) and was stopped (HTTP 422).
pub const EVAL_MEMORY_LIMIT: &str = "EVAL_MEMORY_LIMIT";
/// Evaluating the submitted layout or configuration wrote more than 16 MiB of output (a
/// huge value, a flood of traces) and was stopped (HTTP 422).
pub const EVAL_OUTPUT_LIMIT: &str = "EVAL_OUTPUT_LIMIT";
/// `evaluation.maxConcurrent` evaluations are already running; nothing was done, try again
/// (HTTP 429).
pub const EVAL_BUSY: &str = "EVAL_BUSY";
/// A timeout of 0 or another unusable request value.
pub const BAD_REQUEST: &str = "BAD_REQUEST";
/// Another disk apply is running.
pub const DISK_APPLY_IN_PROGRESS: &str = "DISK_APPLY_IN_PROGRESS";
/// Another rebuild is running; it is not interrupted.
pub const REBUILD_IN_PROGRESS: &str = "REBUILD_IN_PROGRESS";
/// A program the operation needs is missing or failed to start.
pub const TOOL_UNAVAILABLE: &str = "TOOL_UNAVAILABLE";
/// The operation's command failed.
pub const COMMAND_FAILED: &str = "COMMAND_FAILED";
/// The operation's command ran past its timeout; its process group was killed.
pub const TIMED_OUT: &str = "TIMED_OUT";
/// Writing a file the operation owns failed.
pub const WRITE_FAILED: &str = "WRITE_FAILED";
/// Reading device state failed.
pub const INVENTORY_FAILED: &str = "INVENTORY_FAILED";
/// The agent stopped while the operation ran (found `running` in its saved result at the
/// next start). A rebuild's transient unit may still have finished on its own: its log
/// file says how.
pub const INTERRUPTED: &str = "INTERRUPTED";
