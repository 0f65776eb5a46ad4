//! `kind: Controller`: one controller of the cluster, as it registers itself (issue 13).
//!
//! A controller writes its own record when it starts (`controller.register`) and refreshes
//! `status.lastSeen` on a bounded interval; every controller reconciles the set of peers
//! it pulls from with these records. Operators never apply one: they read them
//! (`GET /v1/controllers`) and delete one (`DELETE /v1/controllers/{id}`), which also
//! revokes its certificate.

use serde::{Deserialize, Serialize};

use crate::resource::{Kind, KindSpec, Resource};
use crate::validate::{self, FieldError};

/// A Controller object as stored and listed.
pub type Controller = Resource<ControllerSpec, ControllerStatus>;

/// `spec` of a Controller: what the controller says about itself at registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerSpec {
    /// `HOST:PORT` other controllers and kctl dial (`advertiseAddress`, else `listen`).
    pub address: String,
    pub dc_id: String,
    /// Serial (lowercase hex) of the sub-CA certificate this controller signs node
    /// certificates with; changes after `kctl rotate sub-ca`.
    pub sub_ca_serial: String,
    /// Serial (lowercase hex) of this controller's own certificate: what deleting the
    /// controller revokes.
    pub certificate_serial: String,
    /// Serial (lowercase hex) of the sub-CA that issued this controller's own
    /// certificate: a sub-CA is not revoked while a controller still uses one it issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_issuer_serial: Option<String>,
}

/// `status` of a Controller, written by the controller itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerStatus {
    /// RFC 3339: when the record was first written.
    pub first_seen: String,
    /// RFC 3339: the controller's last refresh of its record.
    pub last_seen: String,
}

/// Checks `HOST:PORT`: a non-empty host without spaces and a port 1-65535 (IPv6 in
/// brackets, `[::1]:9090`).
pub fn address(field: &str, value: &str) -> Result<(), FieldError> {
    let fix = "give HOST:PORT, for example 10.0.0.5:9090 or [fd00::5]:9090";
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(FieldError::new(field, value, "has no port", fix));
    };
    let host_ok = !host.is_empty()
        && !host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
    if !host_ok {
        return Err(FieldError::new(field, value, "has no usable host", fix));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(FieldError::new(field, value, "has no port 1-65535", fix)),
    }
}

fn serial(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() || value.len() > 64 || !value.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(FieldError::new(
            field,
            value,
            "is not a certificate serial",
            "give the serial as hex digits (kcore_pki::serial_hex)",
        ));
    }
    Ok(())
}

impl KindSpec for ControllerSpec {
    const KIND: Kind = Kind::Controller;

    fn validate(&self) -> Result<(), FieldError> {
        address("spec.address", &self.address)?;
        validate::dc_id("spec.dcId", &self.dc_id)?;
        serial("spec.subCaSerial", &self.sub_ca_serial)?;
        serial("spec.certificateSerial", &self.certificate_serial)
    }
}

/// One revoked certificate, as `GET /v1/controllers` callers and every controller's TLS
/// layer see it (resource `pki/revoked`, one field per serial).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Revocation {
    /// What held the certificate: `controller/<id>`, or `sub-ca/<serial>` for a revoked
    /// sub-CA (every certificate it issued is refused).
    pub subject: String,
    /// The address the deleted controller had, so seeds pointing at it stop being pulled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// RFC 3339.
    pub revoked_at: String,
}

/// A sub-CA a controller stopped signing with (`kctl rotate sub-ca` replaced it), one field
/// of the replicated `pki/sub-cas` record per serial. Certificates it issued keep working
/// until it is revoked; nodes holding one renew at their next heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetiredSubCa {
    /// RFC 3339.
    pub retired_at: String,
    /// Serial of the sub-CA that replaced it.
    pub replaced_by: String,
    /// The controller whose install retired it.
    pub retired_by: String,
}

/// One sub-CA in `GET /v1/pki/sub-cas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubCaUse {
    pub serial: String,
    /// `active` (a controller signs with it), `retired` or `revoked`.
    pub state: String,
    /// Controllers signing with it (active only).
    #[serde(default)]
    pub signing_controllers: Vec<String>,
    /// `node/<id>` and `controller/<id>` whose current certificate it issued.
    #[serde(default)]
    pub issued_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<RetiredSubCa>,
}

/// `POST /v1/pki/sub-cas/{serial}/revoke`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeSubCa {
    /// Revoke even though nodes or controllers still hold certificates it issued (they are
    /// cut off at once and must be enrolled again): after a key compromise.
    #[serde(default)]
    pub force: bool,
}

/// `GET /v1/pki/sub-ca/key`: the sub-CA a controller signs node certificates with, key
/// included. Served to controller certificates only, for a controller prepared by `kctl
/// create controller` (whose directory never holds the key) to fetch after it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubCaKey {
    pub certificate_pem: String,
    pub key_pem: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ControllerSpec {
        ControllerSpec {
            address: "10.0.0.5:9090".into(),
            dc_id: "DC1".into(),
            sub_ca_serial: "0a1b".into(),
            certificate_serial: "ff00".into(),
            certificate_issuer_serial: None,
        }
    }

    #[test]
    fn a_controller_spec_names_the_field_it_refuses() {
        assert!(spec().validate().is_ok());
        for (edit, field) in [
            (
                (|s: &mut ControllerSpec| s.address = "10.0.0.5".into()) as fn(&mut ControllerSpec),
                "spec.address",
            ),
            (|s| s.address = "10.0.0.5:0".into(), "spec.address"),
            (|s| s.address = "::1:9090".into(), "spec.address"),
            (|s| s.dc_id = "d c".into(), "spec.dcId"),
            (|s| s.sub_ca_serial = "xyz".into(), "spec.subCaSerial"),
            (
                |s| s.certificate_serial = String::new(),
                "spec.certificateSerial",
            ),
        ] {
            let mut s = spec();
            edit(&mut s);
            assert_eq!(s.validate().unwrap_err().field, field, "{s:?}");
        }
        let mut s = spec();
        s.address = "[fd00::5]:9090".into();
        assert!(s.validate().is_ok());
    }
}
