//! `POST /v1/install/run`: the install itself, one operation of kind `install` holding
//! the disk and system lanes, with one `step` event per [`InstallStep`] and the steps'
//! durations in `result.install`.
//!
//! Before anything runs the request is planned again ([`super::plan::prepare`] of the
//! spec the plan answered): a different hash is `409 PLAN_HASH_MISMATCH` (a disk or a
//! flag changed since the operator confirmed), a refusal `409 INSTALL_REFUSED`; the
//! certificates must be for the keys `install/csr` made (`400` naming the field).
//!
//! The steps ([`super::steps`] runs each program through kcore-nix's builders):
//! 1. `format`: a random install key (64 random bytes, hex, 0600 in `install.stateDir`)
//!    is the layout's `passwordFile`; `disko --mode destroy,format,mount
//!    --yes-wipe-all-disks --root-mountpoint <install.root> <layout>`.
//! 2. `install`: `nixos-install --system <closure> --root <root> --no-root-passwd
//!    --no-channel-copy` (nixpkgs `pkgs/by-name/ni/nixos-install/nixos-install.sh`: the
//!    closure is copied from the ISO's store, nothing is evaluated or downloaded).
//! 3. `enrol`: the recovery key slot (`systemd-cryptenroll --recovery-key`, its stdout is
//!    the key), then the TPM2 slot sealed to `install.tpm2Pcrs` and proven with
//!    `cryptsetup open --test-passphrase --token-only`, or the key device's partition
//!    (`kcore-luks-key`, 4096 random bytes) added and proven with the key file; then the
//!    install key's slot is removed and its file deleted.
//! 4. `write-config`: `/etc/kcore` on the new system ([`super::files`]).
//! 5. `done`: sync, `umount -R <root>`, the LUKS mapping closed, the VG deactivated or
//!    the pool exported, so the disks are clean for the reboot.
//!
//! A failed step is named in the result (`failedStep`, and the error message); what the
//! install mounted or opened is unmounted and closed so a retry can plan again, and the
//! agent keeps serving. The install runs in the agent's own process (not a transient
//! unit): on the live ISO nothing outlives the agent that matters, and a restarted agent
//! starts over with a new plan.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kcore_api::install::{
    InstallClaim, InstallOutcome, InstallRunRequest, InstallStep, RecoveryKey, StepTiming,
};
use kcore_api::inventory::OperationKind;
use kcore_api::{ApiError, ErrorCode};
use kcore_net::{ApiFailure, ApiJson};
use sha2::{Digest, Sha256};

use crate::install::plan::Prepared;
use crate::install::{Claim, lock};
use crate::ops::{OpError, OpHandle, Outcome};
use crate::server::AgentState;

/// Timeout of the whole install when the request names none.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 1800;
/// No install runs longer than this.
pub const MAX_TIMEOUT_SECONDS: u64 = 3600;
/// The shortest claim token accepted.
pub const MIN_CLAIM_TOKEN: usize = 32;
/// Where the installed system keeps its copy of the recovery key.
pub const RECOVERY_KEY_PATH: &str = "/etc/kcore/recovery/luks-recovery-key.txt";

/// Everything one install needs, checked.
pub struct Job {
    pub prepared: Prepared,
    pub request: InstallRunRequest,
    pub deadline: Instant,
}

impl Job {
    /// What is left of the install's timeout (never zero: a spent one times out at once).
    pub fn remaining(&self) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    }
}

fn check_credentials(state: &AgentState, req: &InstallRunRequest) -> Result<(), ApiFailure> {
    let creds = &req.credentials;
    let chained = |field: &str, chain: &str| -> Result<(), ApiFailure> {
        kcore_pki::verify_client_chain(&creds.ca_pem, chain)
            .map(|_| ())
            .map_err(|e| {
                ApiFailure::invalid_field(
                    field,
                    format!("does not chain to credentials.caPem (the cluster CA): {e}"),
                )
            })
    };
    let keyed = |field: &str, role: &str, chain: &str| -> Result<(), ApiFailure> {
        match crate::install::csr::matches_key(state, role, chain) {
            Ok(true) => Ok(()),
            Ok(false) => Err(ApiFailure::invalid_field(
                field,
                format!(
                    "is not for the {role} key this node made: sign the CSR of the last \
                     POST /v1/install/csr with role {role}"
                ),
            )),
            Err(e) => Err(ApiFailure::invalid_field(field, e)),
        }
    };
    kcore_pki::certs_from_pem(&creds.ca_pem)
        .map_err(|e| ApiFailure::invalid_field("credentials.caPem", e.to_string()))?;
    chained("credentials.nodeChainPem", &creds.node_chain_pem)?;
    keyed("credentials.nodeChainPem", "node", &creds.node_chain_pem)?;
    match (&creds.controller, req.spec.run_controller) {
        (Some(c), true) => {
            chained("credentials.controller.chainPem", &c.chain_pem)?;
            keyed(
                "credentials.controller.chainPem",
                "controller",
                &c.chain_pem,
            )?;
            kcore_pki::certs_from_pem(&c.sub_ca_pem).map_err(|e| {
                ApiFailure::invalid_field("credentials.controller.subCaPem", e.to_string())
            })?;
            kcore_api::controller::address(
                "credentials.controller.advertiseAddress",
                &c.advertise_address,
            )
            .map_err(|e| {
                ApiFailure::invalid_field("credentials.controller.advertiseAddress", e.to_string())
            })?;
        }
        (None, true) => {
            return Err(ApiFailure::invalid_field(
                "credentials.controller",
                "runController is set: the controller's certificate (signed for the CSR of \
                 role controller) is needed",
            ));
        }
        (Some(_), false) => {
            return Err(ApiFailure::invalid_field(
                "credentials.controller",
                "given, but runController is not set: drop it, or plan with --run-controller",
            ));
        }
        (None, false) => {}
    }
    Ok(())
}

/// The route: check, re-plan, start.
pub async fn run_route(
    State(state): State<Arc<AgentState>>,
    ApiJson(req): ApiJson<InstallRunRequest>,
) -> Result<Response, ApiFailure> {
    if req.claim_token.chars().count() < MIN_CLAIM_TOKEN {
        return Err(ApiFailure::invalid_field(
            "claimToken",
            format!("must be at least {MIN_CLAIM_TOKEN} random characters (kctl makes one)"),
        ));
    }
    let timeout = match req.timeout_seconds {
        None => DEFAULT_TIMEOUT_SECONDS,
        Some(0) => {
            return Err(ApiFailure::invalid_field(
                "timeoutSeconds",
                format!(
                    "must be at least 1 (the default is {DEFAULT_TIMEOUT_SECONDS}, the \
                     maximum {MAX_TIMEOUT_SECONDS})"
                ),
            ));
        }
        Some(n) => n.min(MAX_TIMEOUT_SECONDS),
    };
    let prepared = super::plan::prepare(&state, req.spec.clone()).await?;
    if prepared.plan.plan_hash != req.plan_hash {
        return Err(ApiFailure {
            status: StatusCode::CONFLICT,
            error: ApiError::new(
                ErrorCode::PlanHashMismatch,
                "the install plan changed since it was confirmed (a disk or a setting \
                 differs): plan again and review the new plan",
            )
            .with_details(serde_json::json!({
                "presented": req.plan_hash,
                "current": prepared.plan.plan_hash,
                "plan": prepared.plan,
            })),
        });
    }
    if !prepared.plan.refusals.is_empty() {
        return Err(super::plan::refused(&prepared.plan));
    }
    check_credentials(&state, &req)?;
    let guard = state.lanes.take(OperationKind::Install)?;
    let op = state
        .ops
        .start(OperationKind::Install, Some(timeout), guard);
    lock(&state.install.claims).insert(
        op.id.clone(),
        Claim {
            token_sha256: Sha256::digest(req.claim_token.as_bytes()).into(),
            recovery: None,
        },
    );
    tracing::info!(
        operation = %op.id,
        plan = %prepared.plan.plan_hash,
        node = %req.spec.node_id,
        "install accepted"
    );
    let job = Job {
        prepared,
        request: req,
        deadline: Instant::now() + Duration::from_secs(timeout),
    };
    let started = op.spawn(move |op| async move { run(state, op, job).await });
    Ok((StatusCode::ACCEPTED, Json(started)).into_response())
}

async fn run(state: Arc<AgentState>, op: OpHandle, job: Job) -> Result<Outcome, OpError> {
    let mut outcome = InstallOutcome {
        luks_device: Some(job.prepared.luks_device.clone()),
        system: Some(job.prepared.plan.system.clone()),
        ..Default::default()
    };
    let mut ctx = super::steps::Ctx::new(&state, &op, &job);
    let mut failed = None;
    let mut formatted = false;
    for step in [
        InstallStep::Format,
        InstallStep::Install,
        InstallStep::Enrol,
        InstallStep::WriteConfig,
        InstallStep::Done,
    ] {
        op.step(step.as_str());
        let started = Instant::now();
        formatted |= step == InstallStep::Format;
        let done = ctx.run(step).await;
        match done {
            Ok(()) => {
                outcome.steps.push(StepTiming {
                    step,
                    seconds: started.elapsed().as_secs_f64(),
                });
                op.update(|r| r.install = Some(outcome.clone()));
            }
            Err(mut err) => {
                if let Some(e) = err.error_mut() {
                    e.message = format!("install step {} failed: {}", step.as_str(), e.message);
                }
                failed = Some((step, err));
                break;
            }
        }
    }
    if let Some((step, err)) = failed {
        outcome.failed_step = Some(step);
        op.update(|r| r.install = Some(outcome.clone()));
        if formatted {
            ctx.release().await;
        }
        return Err(err);
    }
    let recovery = ctx.recovery_key.clone().unwrap_or_default();
    if let Some(claim) = lock(&state.install.claims).get_mut(&op.id) {
        claim.recovery = Some(RecoveryKey {
            node_id: job.request.spec.node_id.clone(),
            luks_device: job.prepared.luks_device.clone(),
            recovery_key: recovery,
            path_on_node: RECOVERY_KEY_PATH.into(),
        });
    }
    Ok(Outcome {
        written: ctx.written.clone(),
        generation: None,
    })
}

/// The claim of `claim.operation_id` if the token is its token: `403
/// INSTALL_CLAIM_MISMATCH` otherwise (an unknown operation too, so the answer does not
/// tell which operations exist), `409 INSTALL_NOT_FINISHED` before the install succeeded.
fn claimed(state: &AgentState, claim: &InstallClaim) -> Result<RecoveryKey, ApiFailure> {
    let digest: [u8; 32] = Sha256::digest(claim.claim_token.as_bytes()).into();
    let claims = lock(&state.install.claims);
    let found = claims.get(&claim.operation_id);
    let Some(found) = found.filter(|c| c.token_sha256 == digest) else {
        return Err(ApiFailure::new(
            ErrorCode::InstallClaimMismatch,
            "no install operation with this id was started with this claim token",
        ));
    };
    found.recovery.clone().ok_or_else(|| {
        ApiFailure::new(
            ErrorCode::InstallNotFinished,
            format!(
                "install {} has not succeeded (GET /v1/operations/{} says where it is)",
                claim.operation_id, claim.operation_id
            ),
        )
    })
}

/// `POST /v1/install/recovery-key`.
pub async fn recovery_key_route(
    State(state): State<Arc<AgentState>>,
    ApiJson(claim): ApiJson<InstallClaim>,
) -> Result<Response, ApiFailure> {
    let key = claimed(&state, &claim)?;
    tracing::info!(operation = %claim.operation_id, "install: recovery key handed out");
    Ok(Json(key).into_response())
}

/// How long after answering `install/reboot` the reboot starts (so the answer gets out).
pub const REBOOT_DELAY: Duration = Duration::from_secs(1);

/// `POST /v1/install/reboot`.
pub async fn reboot_route(
    State(state): State<Arc<AgentState>>,
    ApiJson(claim): ApiJson<InstallClaim>,
) -> Result<Response, ApiFailure> {
    claimed(&state, &claim)?;
    let program = state
        .tools
        .resolve(kcore_nix::programs::SYSTEMCTL)
        .map_err(|e| ApiFailure::new(ErrorCode::ToolUnavailable, e.to_string()))?;
    tracing::warn!(operation = %claim.operation_id, "install: rebooting into the installed system");
    let env = state.options.extra_env.clone();
    tokio::spawn(async move {
        tokio::time::sleep(REBOOT_DELAY).await;
        let mut inv = kcore_nix::commands::SystemState::Reboot.invocation(&program);
        for (k, v) in &env {
            inv = inv.env(k, v);
        }
        if let Err(e) = inv.timeout(Duration::from_secs(60)).output().await {
            tracing::error!(error = %e, "install: systemctl reboot failed");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "rebooting": true })),
    )
        .into_response())
}
