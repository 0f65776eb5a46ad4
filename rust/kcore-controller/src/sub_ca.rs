//! Retiring and revoking sub-CAs (issue 13: "rotated-out sub-CAs" are revocations too).
//!
//! - **Retire.** When `PUT /v1/pki/sub-ca` (`kctl rotate sub-ca`) replaces the sub-CA a
//!   controller signs with, the old one is recorded as retired ([`SUB_CAS`], one field per
//!   serial, replicated like any operation). Certificates it issued keep working.
//! - **Move off it.** The controller issues itself a new certificate from the new sub-CA
//!   (same identity and names, key made here) and swaps it into its TLS server and peer
//!   clients ([`reissue_own_certificate`], `AppState::credentials_changed`). A node that
//!   heartbeats with a certificate from a retired sub-CA is told to renew at once
//!   (`NodeAck.renewCertificate`), and its renewal is signed by the current sub-CA.
//! - **Revoke.** `POST /v1/pki/sub-cas/{serial}/revoke` (`kctl revoke sub-ca`) adds the
//!   sub-CA's serial to the replicated revocation list (`pki/revoked`, the one that deleted
//!   controllers use); every controller then refuses every certificate whose presented
//!   chain holds it (kcore-net checks the chain, not only the leaf). Refused for a sub-CA
//!   a controller still signs with, and, unless `force`, while any node or controller
//!   still holds a certificate it issued ([`uses`] names them).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use kcore_api::ErrorCode;
use kcore_api::controller::{RetiredSubCa, Revocation, SubCaUse};
use kcore_api::resource::{Kind, LabelSelector};
use kcore_net::ApiFailure;
use kcore_pki::Authority;
use serde_json::Value;

use crate::api::{AppState, internal, rfc3339};
use crate::membership::{REVOKED, normal};
use crate::store::StoreError;

/// The record holding one field per retired sub-CA serial.
pub const SUB_CAS: &str = "pki/sub-cas";

/// Every retired sub-CA by serial.
pub fn retired(state: &AppState) -> BTreeMap<String, RetiredSubCa> {
    state
        .store
        .fields(SUB_CAS)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(serial, value)| Some((normal(&serial), serde_json::from_value(value).ok()?)))
        .collect()
}

/// Whether `serial` is a retired sub-CA (asked at every heartbeat: a key lookup, no
/// decoding; serials are stored normalised).
pub fn is_retired(state: &AppState, serial: &str) -> bool {
    state
        .store
        .fields(SUB_CAS)
        .is_some_and(|fields| fields.contains_key(&normal(serial)))
}

/// Records that `old` was replaced by `new` on this controller (nothing when equal).
pub fn retire(state: &AppState, old: &str, new: &str) -> Result<(), StoreError> {
    if normal(old) == normal(new) {
        return Ok(());
    }
    let record = RetiredSubCa {
        retired_at: rfc3339(time::OffsetDateTime::now_utc()),
        replaced_by: normal(new),
        retired_by: state.config.controller_id.clone(),
    };
    let text = serde_json::to_string(&record).map_err(|source| StoreError::Encode {
        what: "retired sub-CA".into(),
        source,
    })?;
    state
        .store
        .write_local(&[(SUB_CAS.to_string(), normal(old), Some(text))])?;
    Ok(())
}

/// Issues this controller a new certificate from `signer` with the identity and names of
/// the one in `tls.certFile`, for the same span of validity, and writes key then
/// certificate (each atomically). Returns the new serial; the caller then notifies
/// `credentials_changed` so the TLS server and peer clients load it.
pub fn reissue_own_certificate(state: &AppState, signer: &Authority) -> Result<String, String> {
    let tls = &state.config.tls;
    let what = format!("tls.certFile {}", tls.cert_file.display());
    let current = kcore_pki::read_pem_file("tls.certFile", &tls.cert_file)
        .map_err(|e| format!("{what}: {e}"))?;
    let certs = kcore_pki::certs_from_pem(&current).map_err(|e| format!("{what}: {e}"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| format!("{what} holds no certificate"))?;
    let identity = kcore_pki::identity_of(leaf).map_err(|e| format!("{what}: {e}"))?;
    let names = kcore_pki::cert_names(leaf);
    let info = kcore_pki::cert_info(leaf).map_err(|e| format!("{what}: {e}"))?;
    let span = std::time::Duration::try_from(info.not_after - info.not_before)
        .unwrap_or(kcore_pki::NODE_CERT_VALIDITY);
    let issued = signer
        .issue(&identity, &names, span)
        .map_err(|e| format!("issuing {} from the new sub-CA: {e}", identity.uri()))?;
    // Key first, like the sub-CA install: a crash between the two leaves a pair that
    // start-up refuses as mismatched, never a certificate for a key nobody has.
    kcore_pki::write_atomically(&tls.key_file, issued.key_pem.as_bytes(), 0o600)
        .map_err(|e| format!("{}: {e}", tls.key_file.display()))?;
    kcore_pki::write_atomically(&tls.cert_file, issued.cert_pem.as_bytes(), 0o644)
        .map_err(|e| format!("{}: {e}", tls.cert_file.display()))?;
    crate::membership::first_serial("the new certificate", &issued.cert_pem)
        .map_err(|e| e.to_string())
}

/// Every sub-CA known: the ones live controllers sign with, the retired and the revoked,
/// each with the nodes and controllers whose current certificate it issued.
pub fn uses(state: &AppState) -> Vec<SubCaUse> {
    let mut all: BTreeMap<String, SubCaUse> = BTreeMap::new();
    // Every sub-CA named anywhere gets a row; retired until something says otherwise.
    fn slot<'a>(all: &'a mut BTreeMap<String, SubCaUse>, serial: &str) -> &'a mut SubCaUse {
        let serial = normal(serial);
        all.entry(serial.clone()).or_insert_with(|| SubCaUse {
            serial,
            state: "retired".to_string(),
            signing_controllers: Vec::new(),
            issued_to: Vec::new(),
            retired: None,
        })
    }
    for (serial, record) in retired(state) {
        slot(&mut all, &serial).retired = Some(record);
    }
    for record in state
        .store
        .list(Kind::Controller, &LabelSelector::default())
    {
        let id = record
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let spec = |key: &str| {
            record
                .pointer(&format!("/spec/{key}"))
                .and_then(Value::as_str)
        };
        if let Some(serial) = spec("subCaSerial") {
            let u = slot(&mut all, serial);
            u.state = "active".to_string();
            u.signing_controllers.push(id.to_string());
        }
        if let Some(serial) = spec("certificateIssuerSerial") {
            slot(&mut all, serial)
                .issued_to
                .push(format!("controller/{id}"));
        }
    }
    for (id, record, _) in state.store.nodes() {
        if let Some(serial) = record.certificate.and_then(|c| c.issuer_serial) {
            slot(&mut all, &serial).issued_to.push(format!("node/{id}"));
        }
    }
    let revoked = crate::membership::revoked(state);
    for u in all.values_mut() {
        if revoked.keys().any(|s| normal(s) == u.serial) {
            u.state = "revoked".to_string();
        }
    }
    all.into_values().collect()
}

/// Revokes sub-CA `serial` (see the module doc for what is refused).
pub fn revoke(state: &AppState, serial: &str, force: bool) -> Result<Revocation, ApiFailure> {
    let serial = normal(serial);
    let all = uses(state);
    let Some(found) = all.iter().find(|u| u.serial == serial) else {
        let known: Vec<&str> = all.iter().map(|u| u.serial.as_str()).collect();
        return Err(ApiFailure::with_status(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!(
                "no sub-CA with serial {serial} is known (known: {}); `kctl get sub-cas` lists them",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    if found.state == "active" {
        return Err(ApiFailure::with_status(
            StatusCode::CONFLICT,
            ErrorCode::SubCaInUse,
            format!(
                "sub-CA {serial} is the one controller(s) {} sign with; `kctl rotate sub-ca` first, then revoke it",
                found.signing_controllers.join(", ")
            ),
        ));
    }
    if !found.issued_to.is_empty() && !force {
        return Err(ApiFailure::with_status(
            StatusCode::CONFLICT,
            ErrorCode::SubCaInUse,
            format!(
                "sub-CA {serial} still issued the certificates of {}; nodes renew at their next heartbeat and controllers at the rotation, so wait and try again, or pass --force to cut them off now (they must be enrolled again)",
                found.issued_to.join(", ")
            ),
        )
        .with_details(serde_json::json!({"issuedTo": found.issued_to})));
    }
    let revocation = Revocation {
        subject: format!("sub-ca/{serial}"),
        address: None,
        revoked_at: rfc3339(time::OffsetDateTime::now_utc()),
    };
    if found.state != "revoked" {
        let text = serde_json::to_string(&revocation).map_err(internal)?;
        state
            .store
            .write_local(&[(REVOKED.to_string(), serial.clone(), Some(text))])?;
    }
    Ok(revocation)
}
