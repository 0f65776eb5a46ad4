//! Install mode's day 0 (docs/agent.md, "Install mode"; the wire types are
//! `kcore_api::install`): the agent on the live ISO plans an install against its own
//! disks, makes the node's (and controller's) keys and CSRs, formats, installs and enrols
//! the LUKS keys, writes `/etc/kcore` on the new system, and reboots into it.
//!
//! - [`config`]: the configuration's `install:` section.
//! - [`plan`]: `POST /v1/install/plan` (resolution, defaults, render, validate, plan).
//! - [`csr`]: `POST /v1/install/csr` (keys made and kept on the node).
//! - [`run`]: `POST /v1/install/run` (the operation), `recovery-key` and `reboot`;
//!   [`steps`] runs each step's programs, [`files`] writes `/etc/kcore`.
//!
//! What the install remembers between requests lives in [`InstallState`], in memory only:
//! the live ISO has nothing to persist to, and a rebooted ISO starts over.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use kcore_api::install::{InstallCsrRequest, InstallSpec};
use kcore_net::{ApiFailure, ApiJson};

use crate::server::AgentState;

pub mod config;
pub mod csr;
pub mod files;
pub mod plan;
pub mod run;
pub mod steps;

/// A key `install/csr` made: where it is kept and the public key its certificate must
/// carry.
#[derive(Debug, Clone)]
pub struct MadeKey {
    pub identity: String,
    pub key_file: std::path::PathBuf,
}

/// What one install operation left for `recovery-key` and `reboot`.
#[derive(Clone)]
pub struct Claim {
    /// SHA-256 of the claim token (the token itself is not kept).
    pub token_sha256: [u8; 32],
    /// Set when the install succeeded.
    pub recovery: Option<kcore_api::install::RecoveryKey>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("finished", &self.recovery.is_some())
            .finish()
    }
}

/// The install's memory between requests.
#[derive(Debug, Default)]
pub struct InstallState {
    /// By role (`node`, `controller`): the last key `install/csr` made.
    pub keys: Mutex<BTreeMap<String, MadeKey>>,
    /// By operation id.
    pub claims: Mutex<BTreeMap<String, Claim>>,
    /// The hostname of the last plan, added to every CSR's DNS names.
    pub hostname: Mutex<Option<String>>,
}

/// A poisoned lock only means a panic elsewhere; the maps stay usable.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `dir` as a directory only root reads (0700): the install's secrets live in it.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

pub async fn plan_route(
    State(state): State<Arc<AgentState>>,
    ApiJson(spec): ApiJson<InstallSpec>,
) -> Result<Response, ApiFailure> {
    let prepared = plan::prepare(&state, spec).await?;
    *lock(&state.install.hostname) = prepared.plan.spec.hostname.clone();
    Ok(Json(prepared.plan).into_response())
}

pub async fn csr_route(
    State(state): State<Arc<AgentState>>,
    ApiJson(req): ApiJson<InstallCsrRequest>,
) -> Result<Response, ApiFailure> {
    let answer = csr::make(&state, req)?;
    Ok(Json(answer).into_response())
}
