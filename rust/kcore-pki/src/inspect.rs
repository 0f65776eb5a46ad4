//! Reading certificates: PEM splitting, fingerprints, the identity in the SAN URI,
//! expiry and the renewal decision.

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::X509Certificate;

use crate::{Identity, PkiError};

/// All `CERTIFICATE` blocks of a PEM bundle, in order. Other block types are skipped.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::parse("certificate PEM", e))
}

fn first_cert(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    certs_from_pem(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::parse("certificate PEM", "no CERTIFICATE block found"))
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| PkiError::parse("certificate DER", e))
}

/// SHA-256 over the DER certificate: lowercase hex, no colons.
pub fn fingerprint_sha256(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// Accepts a fingerprint as people paste it (`AB:CD:...`, upper or lower case, with
/// spaces) and returns the canonical lowercase form, or an error if it is not 32 bytes.
pub fn normalise_fingerprint(input: &str) -> Result<String, PkiError> {
    let cleaned: String = input
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_ascii_lowercase();
    if cleaned.len() != 64 || !cleaned.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PkiError::InvalidFingerprint(input.to_string()));
    }
    Ok(cleaned)
}

/// A fingerprint as the console shows it for people to compare: upper-case byte pairs
/// joined by colons (`AB:CD:...`). [`normalise_fingerprint`] reads it back.
pub fn display_fingerprint(fingerprint: &str) -> Result<String, PkiError> {
    let canonical = normalise_fingerprint(fingerprint)?;
    Ok(canonical
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":"))
}

/// The `kcore://` identity in a certificate's SAN URI. A certificate with none, or
/// with two, has no usable identity.
pub fn identity_of(cert_der: &[u8]) -> Result<Identity, PkiError> {
    let cert = parse(cert_der)?;
    let mut found = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                if uri.starts_with("kcore://") {
                    if found.is_some() {
                        return Err(PkiError::parse(
                            "certificate",
                            "more than one kcore:// SAN URI",
                        ));
                    }
                    found = Some(Identity::parse_uri(uri)?);
                }
            }
        }
    }
    found.ok_or_else(|| PkiError::NoIdentity {
        what: "certificate".into(),
    })
}

/// The DNS names and IP addresses in a certificate's SAN (not the kcore:// URI).
pub fn cert_names(cert_der: &[u8]) -> Vec<String> {
    let Ok(cert) = parse(cert_der) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_string()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        names.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    names
}

/// Expiry of the first certificate in a PEM bundle (the leaf).
pub fn not_after(cert_pem: &str) -> Result<OffsetDateTime, PkiError> {
    not_after_der(&first_cert(cert_pem)?)
}

/// Expiry of a DER certificate.
pub fn not_after_der(cert_der: &[u8]) -> Result<OffsetDateTime, PkiError> {
    Ok(parse(cert_der)?.validity().not_after.to_datetime())
}

/// Serial number of a DER certificate as lowercase hex (what revocation lists hold).
pub fn serial_hex(cert_der: &[u8]) -> Result<String, PkiError> {
    Ok(hex::encode(parse(cert_der)?.raw_serial()))
}

/// True when the leaf expires within `before` of `now` (or already has).
pub fn needs_renewal(
    cert_pem: &str,
    now: OffsetDateTime,
    before: Duration,
) -> Result<bool, PkiError> {
    let expiry = not_after(cert_pem)?;
    let margin = time::Duration::try_from(before)
        .map_err(|e| PkiError::Validity(format!("{before:?}: {e}")))?;
    Ok(expiry - margin <= now)
}

/// What operators and APIs show about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// RFC 4514-style subject, e.g. `O=kcore cluster lab, CN=node n1`.
    pub subject: String,
    pub issuer: String,
    /// Lowercase hex, as revocation uses it.
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// The `kcore://` identity, if the certificate carries exactly one.
    pub identity: Option<Identity>,
    pub is_ca: bool,
}

/// Everything [`CertInfo`] holds, from one DER certificate.
pub fn cert_info(cert_der: &[u8]) -> Result<CertInfo, PkiError> {
    let cert = parse(cert_der)?;
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: hex::encode(cert.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        fingerprint: fingerprint_sha256(cert_der),
        identity: identity_of(cert_der).ok(),
        is_ca: cert.is_ca(),
    })
}

/// Verifies a leaf chain (leaf first, then intermediates) exactly as an mTLS server
/// built by [`crate::server_config`] would at this moment: chains to a root in
/// `trust_pem`, within validity, clientAuth purpose. Returns the leaf's identity.
pub fn verify_client_chain(trust_pem: &str, chain_pem: &str) -> Result<Option<Identity>, PkiError> {
    let certs = certs_from_pem(chain_pem)?;
    let (leaf, intermediates) = certs
        .split_first()
        .ok_or_else(|| PkiError::parse("certificate chain PEM", "no CERTIFICATE block found"))?;
    let mut roots = rustls::RootCertStore::empty();
    for root in certs_from_pem(trust_pem)? {
        roots
            .add(root)
            .map_err(|e| PkiError::parse("trust bundle certificate", e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        crate::crypto_provider(),
    )
    .build()
    .map_err(|e| PkiError::Verifier(e.to_string()))?;
    verifier
        .verify_client_cert(leaf, intermediates, rustls_pki_types::UnixTime::now())
        .map_err(|e| PkiError::Untrusted(e.to_string()))?;
    Ok(identity_of(leaf).ok())
}

pub(crate) fn is_self_signed(der: &[u8]) -> Result<bool, PkiError> {
    let cert = parse(der)?;
    // A root is its own issuer; the trust decision itself is left to webpki.
    Ok(cert.subject() == cert.issuer())
}
