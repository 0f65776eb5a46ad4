//! Controllers as replicated records (`kind: Controller`, issue 13): a controller's own
//! registration, the peer set reconciled from the records, and revocation of a deleted
//! controller's certificate.
//!
//! - **Register.** At start and every [`REFRESH_INTERVAL`] a controller writes its own
//!   record (`controller/<id>`: spec `address, dcId, subCaSerial, certificateSerial`,
//!   status `firstSeen, lastSeen`) locally and sends it to each configured peer (`POST
//!   /v1/controllers/{id}/register`, controller role, own id only). The seed stores it the
//!   same way, so the existing controllers learn of a new one without pulling from it.
//!   `status.lastSeen` is an operation, compacted to the newest per origin like the
//!   node-reported fields (see `store::compacted`): durable, one row per controller and
//!   origin however long it runs. Decision: not soft state like heartbeats, because a
//!   record must be complete on a controller that has never talked to its owner.
//! - **Peer set.** Every replication tick: the configured `peers` (seeds, always kept)
//!   plus the address of every live record other than our own; a record whose controller
//!   is already pulled through a seed (the seed's vector named that id) is not pulled
//!   twice; an address that a revocation names is dropped (also when it is a seed) unless
//!   a live record carries it again (a reinstalled controller), and so is a seed whose
//!   vector named a deleted controller's id.
//! - **Revoke.** `DELETE /v1/controllers/{id}` records `pki/revoked` field `<serial>` =
//!   [`Revocation`] (replicated like any operation), then tombstones the record. Every
//!   controller hands the set of revoked serials to its TLS layer
//!   (`kcore_net::TlsSource::set_revoked_serials`) each tick, so the deleted controller's
//!   certificate gets `401 CERTIFICATE_REVOKED` everywhere, and a controller that finds its
//!   own serial revoked stops registering itself.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kcore_api::controller::{ControllerSpec, ControllerStatus, Revocation};
use kcore_api::resource::{Kind, LabelSelector};
use serde_json::{Value, json};

use crate::api::{AppState, rfc3339};
use crate::store::StoreError;

/// How often a controller refreshes `status.lastSeen` of its own record.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// The resource holding one field per revoked certificate serial.
pub const REVOKED: &str = "pki/revoked";

/// What this controller says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfRecord {
    pub id: String,
    pub spec: ControllerSpec,
}

/// Why a controller could not describe itself.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("{what}: {source}")]
    Pki {
        what: String,
        source: kcore_pki::PkiError,
    },
    #[error("{what} has no certificate")]
    NoCertificate { what: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

/// Lowercase hex serial of the first certificate in `pem`.
pub fn first_serial(what: &str, pem: &str) -> Result<String, MembershipError> {
    let certs = kcore_pki::certs_from_pem(pem).map_err(|source| MembershipError::Pki {
        what: what.to_string(),
        source,
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| MembershipError::NoCertificate {
            what: what.to_string(),
        })?;
    kcore_pki::serial_hex(leaf).map_err(|source| MembershipError::Pki {
        what: what.to_string(),
        source,
    })
}

/// This controller's record: `advertiseAddress`, else the address it listens on.
pub fn own_record(state: &AppState, listening: &str) -> Result<SelfRecord, MembershipError> {
    let config = &state.config;
    let cert_pem =
        kcore_pki::read_pem_file("tls.certFile", &config.tls.cert_file).map_err(|source| {
            MembershipError::Pki {
                what: format!("tls.certFile {}", config.tls.cert_file.display()),
                source,
            }
        })?;
    let sub_ca_pem = state
        .signer
        .read()
        .map_err(|_| StoreError::Poisoned)?
        .cert_pem()
        .to_string();
    let spec = ControllerSpec {
        address: config
            .advertise_address
            .clone()
            .unwrap_or_else(|| listening.to_string()),
        dc_id: config.dc_id.clone(),
        sub_ca_serial: first_serial("the sub-CA certificate", &sub_ca_pem)?,
        certificate_serial: first_serial("tls.certFile", &cert_pem)?,
        certificate_issuer_serial: kcore_pki::certs_from_pem(&cert_pem)
            .ok()
            .and_then(|certs| certs.get(1).and_then(|c| kcore_pki::serial_hex(c).ok())),
    };
    kcore_api::resource::KindSpec::validate(&spec).map_err(|e| MembershipError::Invalid {
        field: if e.field == "spec.address" {
            "advertiseAddress".to_string()
        } else {
            e.field.clone()
        },
        message: e.detail(),
    })?;
    if !dialable(&spec.address) {
        tracing::warn!(address = %spec.address, "this controller listens on every interface and has no advertiseAddress: other controllers cannot discover it (set advertiseAddress to the HOST:PORT they should dial)");
    }
    Ok(SelfRecord {
        id: config.controller_id.clone(),
        spec,
    })
}

/// Normalised like `kcore_net::TlsSource` compares serials (no leading zero bytes).
pub(crate) fn normal(serial: &str) -> String {
    let lower = serial.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while rest.len() > 2 && rest.starts_with("00") {
        rest = &rest[2..];
    }
    rest.to_string()
}

/// Every revoked serial with its record.
pub fn revoked(state: &AppState) -> BTreeMap<String, Revocation> {
    state
        .store
        .fields(REVOKED)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(serial, value)| Some((serial, serde_json::from_value(value).ok()?)))
        .collect()
}

/// Whether `serial` is revoked.
pub fn is_revoked(state: &AppState, serial: &str) -> bool {
    let serial = normal(serial);
    revoked(state).keys().any(|s| normal(s) == serial)
}

/// The outcome of [`register`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    Written,
    /// The record's certificate serial is revoked: nothing written.
    Revoked,
}

/// Writes (or refreshes) `record`: spec through the generic apply (no operation when
/// nothing changed), `status.firstSeen` kept, `status.lastSeen` now.
pub fn register(state: &AppState, record: &SelfRecord) -> Result<Registered, StoreError> {
    if is_revoked(state, &record.spec.certificate_serial) {
        return Ok(Registered::Revoked);
    }
    let object = json!({
        "kind": Kind::Controller,
        "metadata": {"name": record.id},
        "spec": record.spec,
    });
    let applied = state.store.apply(Kind::Controller, &object, false)?;
    let now = rfc3339(time::OffsetDateTime::now_utc());
    let first_seen = applied
        .object
        .pointer("/status/firstSeen")
        .and_then(Value::as_str)
        .map_or_else(|| now.clone(), str::to_string);
    let status = ControllerStatus {
        first_seen,
        last_seen: now,
    };
    state.store.set_status(
        Kind::Controller,
        &record.id,
        &serde_json::to_value(status).map_err(|source| StoreError::Encode {
            what: "controller status".into(),
            source,
        })?,
    )?;
    Ok(Registered::Written)
}

/// Deletes the record of controller `id` and revokes its certificate. `None` when no
/// such controller exists.
pub fn delete(state: &AppState, id: &str) -> Result<Option<Revocation>, StoreError> {
    let Some(record) = state.store.get(Kind::Controller, id) else {
        return Ok(None);
    };
    let serial = record
        .pointer("/spec/certificateSerial")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let revocation = Revocation {
        subject: format!("controller/{id}"),
        address: record
            .pointer("/spec/address")
            .and_then(Value::as_str)
            .map(str::to_string),
        revoked_at: rfc3339(time::OffsetDateTime::now_utc()),
    };
    // The revocation first: a crash between the two leaves a revoked controller whose
    // record still shows, never a deleted controller whose certificate still works.
    if !serial.is_empty() {
        let text = serde_json::to_string(&revocation).map_err(|source| StoreError::Encode {
            what: "revocation".into(),
            source,
        })?;
        state
            .store
            .write_local(&[(REVOKED.to_string(), serial, Some(text))])?;
    }
    state.store.delete(Kind::Controller, id)?;
    Ok(Some(revocation))
}

/// How often, and how many times, a controller without a sub-CA key asks its `peers` for
/// one at start before it gives up (a minute: long enough for a peer that restarts too).
pub const SUB_CA_FETCH_ATTEMPTS: u32 = 30;
pub const SUB_CA_FETCH_INTERVAL: Duration = Duration::from_secs(2);

/// Fetches the sub-CA (key included) from the first of `peers` that answers, over mTLS
/// with this controller's own certificate (`GET /v1/pki/sub-ca/key`, controller role
/// only), checks that it chains to `tls.caFile`, and writes key (0600) then certificate,
/// each atomically, where `tls.subCaKeyFile` / `tls.subCaCertFile` say. Only then does
/// the controller build its signer. Used by a controller `kctl create controller`
/// prepared: its directory never holds the key.
pub async fn fetch_sub_ca_key(config: &crate::config::ControllerConfig) -> Result<(), String> {
    let tls = &config.tls;
    if config.peers.is_empty() {
        return Err(format!(
            "tls.subCaKeyFile {} does not exist and peers is empty: give an existing controller as a peer to fetch the sub-CA from, or install the sub-CA key",
            tls.sub_ca_key_file.display()
        ));
    }
    let creds = kcore_pki::Credentials::load(&kcore_pki::CredentialFiles::new(
        &tls.ca_file,
        &tls.cert_file,
        &tls.key_file,
    ))
    .map_err(|e| format!("tls.caFile/certFile/keyFile: {e}"))?;
    let trust = std::fs::read_to_string(&tls.ca_file)
        .map_err(|e| format!("tls.caFile {}: {e}", tls.ca_file.display()))?;
    let expected = kcore_pki::PeerExpectation::controller(&config.cluster_name);
    let client = kcore_net::Client::new(
        config
            .peers
            .iter()
            .map(|p| kcore_net::https_url(p))
            .collect(),
        creds.client_config(&expected).map_err(|e| e.to_string())?,
        kcore_net::ClientOptions {
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(15),
            ..kcore_net::ClientOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let mut last = String::new();
    for attempt in 1..=SUB_CA_FETCH_ATTEMPTS {
        match client
            .get_json::<kcore_api::controller::SubCaKey>("/v1/pki/sub-ca/key")
            .await
        {
            Ok(got) => {
                let authority = kcore_pki::Authority::from_pem(&got.certificate_pem, &got.key_pem)
                    .map_err(|e| format!("the sub-CA a peer sent does not load: {e}"))?;
                authority.check_chains_to(&trust).map_err(|e| {
                    format!("the sub-CA a peer sent does not chain to tls.caFile: {e}")
                })?;
                // Key first, as `PUT /v1/pki/sub-ca` does.
                kcore_pki::write_atomically(&tls.sub_ca_key_file, got.key_pem.as_bytes(), 0o600)
                    .map_err(|e| {
                        format!("tls.subCaKeyFile {}: {e}", tls.sub_ca_key_file.display())
                    })?;
                kcore_pki::write_atomically(
                    &tls.sub_ca_cert_file,
                    got.certificate_pem.as_bytes(),
                    0o644,
                )
                .map_err(|e| {
                    format!("tls.subCaCertFile {}: {e}", tls.sub_ca_cert_file.display())
                })?;
                tracing::info!(attempt, "sub-CA key fetched from a peer");
                return Ok(());
            }
            Err(err) => {
                last = err.to_string();
                tracing::warn!(
                    attempt,
                    "cannot fetch the sub-CA key from the peers yet: {last}"
                );
                // A refusal (a revoked or non-controller certificate) will not change.
                if err.api_code().is_some() {
                    break;
                }
            }
        }
        tokio::time::sleep(SUB_CA_FETCH_INTERVAL).await;
    }
    Err(format!(
        "tls.subCaKeyFile {} does not exist and no peer sent the sub-CA key: {last}",
        tls.sub_ca_key_file.display()
    ))
}

/// The ids of every live `Controller` record but this controller's: the controllers
/// whose holdings compaction waits for.
pub fn known_peer_ids(state: &AppState) -> Vec<String> {
    let own = &state.config.controller_id;
    state
        .store
        .list(Kind::Controller, &LabelSelector::default())
        .iter()
        .filter_map(|r| r.pointer("/metadata/name")?.as_str().map(str::to_string))
        .filter(|id| id != own)
        .collect()
}

/// False for an address nobody can dial from elsewhere: `0.0.0.0:P` or `[::]:P`, what a
/// controller listening on every interface without `advertiseAddress` records (dialled, it
/// would reach the dialler itself).
pub fn dialable(address: &str) -> bool {
    match address.parse::<std::net::SocketAddr>() {
        Ok(addr) => !addr.ip().is_unspecified(),
        Err(_) => true,
    }
}

/// The addresses to pull from: `seeds` plus every live record's address except our own,
/// minus records already reached through a seed (`seed_ids`: seed address -> the id its
/// vector gave) and revoked addresses no live record carries.
pub fn wanted_peers(
    state: &AppState,
    seeds: &[String],
    seed_ids: &BTreeMap<String, String>,
) -> Vec<String> {
    let own = &state.config.controller_id;
    let records = state
        .store
        .list(Kind::Controller, &LabelSelector::default());
    let live: BTreeMap<String, String> = records
        .iter()
        .filter_map(|r| {
            let id = r.pointer("/metadata/name")?.as_str()?;
            let address = r.pointer("/spec/address")?.as_str()?;
            Some((id.to_string(), address.to_string()))
        })
        .collect();
    let live_addresses: BTreeSet<&String> = live.values().collect();
    let revocations = revoked(state);
    let gone: BTreeSet<String> = revocations
        .values()
        .filter_map(|r| r.address.clone())
        .filter(|a| !live_addresses.contains(a))
        .collect();
    // A seed may name a deleted controller by another address than its record had (a
    // host name, a proxy): the id its vector gave decides too.
    let deleted_ids: BTreeSet<&str> = revocations
        .values()
        .filter_map(|r| r.subject.strip_prefix("controller/"))
        .filter(|id| !live.contains_key(*id))
        .collect();
    let through_seeds: BTreeSet<&String> = seed_ids
        .iter()
        .filter(|(seed, _)| seeds.contains(seed))
        .map(|(_, id)| id)
        .collect();
    let mut wanted: Vec<String> = seeds
        .iter()
        .filter(|s| !gone.contains(*s))
        .filter(|s| {
            seed_ids
                .get(*s)
                .is_none_or(|id| !deleted_ids.contains(id.as_str()))
        })
        .cloned()
        .collect();
    for (id, address) in &live {
        if id == own || through_seeds.contains(id) || wanted.contains(address) || !dialable(address)
        {
            continue;
        }
        wanted.push(address.clone());
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_on_every_interface_are_not_dialled() {
        assert!(!dialable("0.0.0.0:9090"));
        assert!(!dialable("[::]:9090"));
        assert!(dialable("10.0.0.5:9090"));
        assert!(dialable("[fd00::5]:9090"));
        assert!(dialable("ctl2.lab:9090"));
    }

    #[test]
    fn serials_compare_without_leading_zero_bytes() {
        assert_eq!(normal("00AB12"), "ab12");
        assert_eq!(normal("00"), "00");
    }
}
