//! `POST /v1/install/csr`: the node's (and, with `--run-controller`, the controller's)
//! private key is made here on the node and never leaves it; the answer is its CSR for
//! `kcore://<cluster>/<role>/<id>`, which kctl has a controller sign. The key is kept
//! 0600 under `install.stateDir` (a tmpfs on the ISO) as `<role>.key` until the install
//! writes it to the new system; a second call for the same role makes a new key and
//! replaces the first, so only the certificate for the newest CSR is accepted. The
//! hostname of the last `install/plan` is always among the CSR's DNS names.

use std::path::PathBuf;

use kcore_api::ErrorCode;
use kcore_api::install::{InstallCsr, InstallCsrRequest};
use kcore_net::ApiFailure;
use kcore_pki::{Identity, Role};

use crate::install::{MadeKey, lock};
use crate::server::AgentState;

/// The file the key of `role` is kept in.
pub fn key_path(state: &AgentState, role: &str) -> PathBuf {
    state.config.install.state_dir.join(format!("{role}.key"))
}

/// Make the key and the CSR for one role.
pub fn make(state: &AgentState, req: InstallCsrRequest) -> Result<InstallCsr, ApiFailure> {
    let role = match req.role.as_str() {
        "node" => Role::Node,
        "controller" => Role::Controller,
        other => {
            return Err(ApiFailure::invalid_field(
                "role",
                format!("{other:?}: the install makes keys for `node` and `controller` only"),
            ));
        }
    };
    kcore_api::validate::node_id("id", &req.id)
        .map_err(|e| ApiFailure::invalid_field("id", e.to_string()))?;
    let identity = Identity::new(&req.cluster, role, &req.id)
        .map_err(|e| ApiFailure::invalid_field("cluster", e.to_string()))?;
    let mut names = req.dns_names.clone();
    for (i, n) in names.iter().enumerate() {
        kcore_api::report_limits::hostname(&format!("dnsNames[{i}]"), n)
            .map_err(|e| ApiFailure::invalid_field(&format!("dnsNames[{i}]"), e.to_string()))?;
    }
    // The node's hostname (from the last plan) is always one of the names.
    names.extend(lock(&state.install.hostname).clone());
    names.sort();
    names.dedup();
    let (key_pem, csr_pem) = kcore_pki::generate_csr(&identity, &names)
        .map_err(|e| ApiFailure::internal(format!("cannot make the key: {e}")))?;
    let dir = &state.config.install.state_dir;
    let keep = || -> std::io::Result<PathBuf> {
        crate::install::private_dir(dir)?;
        let path = key_path(state, &req.role);
        kcore_pki::write_atomically(&path, key_pem.as_bytes(), 0o600)?;
        Ok(path)
    };
    let key_file = keep().map_err(|e| {
        ApiFailure::new(
            ErrorCode::WriteFailed,
            format!(
                "cannot keep the key under install.stateDir {}: {e}",
                dir.display()
            ),
        )
    })?;
    lock(&state.install.keys).insert(
        req.role.clone(),
        MadeKey {
            identity: identity.uri(),
            key_file,
        },
    );
    tracing::info!(identity = %identity.uri(), "install: made a key and its CSR");
    Ok(InstallCsr {
        identity: identity.uri(),
        csr_pem,
    })
}

/// Whether the certificate chain `chain_pem` was issued for the key kept for `role`.
pub fn matches_key(state: &AgentState, role: &str, chain_pem: &str) -> Result<bool, String> {
    let made = lock(&state.install.keys)
        .get(role)
        .cloned()
        .ok_or_else(|| {
            format!("no {role} key was made: call POST /v1/install/csr with role {role} first")
        })?;
    let key_pem = std::fs::read_to_string(&made.key_file)
        .map_err(|e| format!("cannot read {}: {e}", made.key_file.display()))?;
    let creds = kcore_pki::Credentials {
        ca_pem: String::new(),
        cert_pem: chain_pem.to_string(),
        key_pem,
    };
    let identity = creds.identity().map_err(|e| e.to_string())?;
    if identity.uri() != made.identity {
        return Err(format!(
            "the certificate is for {}, the CSR was for {}",
            identity.uri(),
            made.identity
        ));
    }
    creds.key_matches().map_err(|e| e.to_string())
}
