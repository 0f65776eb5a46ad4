//! Certificate authorities (root and sub-CA), leaf issuance, CSR creation and signing,
//! and the self-signed certificate of the install-mode agent.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::identity::Identity;
use crate::inspect::{certs_from_pem, fingerprint_sha256, is_self_signed};
use crate::{PkiError, identity_of};

/// A certificate (PEM, leaf first, followed by any intermediate CA certificates that a
/// verifier needs to reach the root) and its private key (PKCS#8 PEM).
#[derive(Clone, PartialEq, Eq)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    // The key is a secret: keep it out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A CA that can sign: the cluster root or a controller's sub-CA.
pub struct Authority {
    /// As given: the CA certificate first, then its own issuers (if any were supplied).
    cert_pem: String,
    key_pem: String,
    /// Certificates appended to every issued leaf: this CA and its issuers, minus the
    /// self-signed root (verifiers hold the root as trust anchor already).
    chain_pem: String,
    /// The CA certificate re-created from its parameters, used by rcgen only for the
    /// issuer name and key identifier (the signature comes from `key`).
    issuer: rcgen::Certificate,
    key: KeyPair,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    subject: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Certificates start this long in the past so a peer whose clock is slightly behind
/// does not see them as "not yet valid".
const BACKDATE: time::Duration = time::Duration::minutes(5);

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn add(start: OffsetDateTime, validity: Duration) -> Result<OffsetDateTime, PkiError> {
    start
        .checked_add(
            time::Duration::try_from(validity)
                .map_err(|e| PkiError::Validity(format!("{validity:?}: {e}")))?,
        )
        .ok_or_else(|| PkiError::Validity(format!("{validity:?} runs past year 9999")))
}

/// 16 random bytes with the top bit clear (serials must be positive), so that
/// re-issuing for the same key still yields a distinct serial for revocation lists.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    crate::tls::crypto_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| PkiError::Validity("system random number generator failed".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // avoid a leading zero byte, which DER would strip
    Ok(SerialNumber::from_slice(&bytes))
}

fn san_for(name: &str) -> Result<SanType, PkiError> {
    match name.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => Ok(SanType::DnsName(name.to_string().try_into().map_err(
            |e: rcgen::Error| PkiError::parse(format!("DNS name {name:?}"), e),
        )?)),
    }
}

fn dn(common_name: &str, cluster: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, format!("kcore cluster {cluster}"));
    dn.push(DnType::CommonName, common_name);
    dn
}

fn leaf_params(
    identity: &Identity,
    dns_names: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(
        &format!("{} {}", identity.role, identity.id),
        &identity.cluster,
    );
    params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
    for name in dns_names {
        params.subject_alt_names.push(san_for(name)?);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every kcore process is both a TLS server and a TLS client (agents serve the
    // controller and call it), so leaves carry both purposes.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn ca_params(
    common_name: &str,
    cluster: &str,
    constraint: BasicConstraints,
    validity: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(common_name, cluster);
    params.is_ca = IsCa::Ca(constraint);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now() - BACKDATE;
    params.not_after = add(now(), validity)?;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

impl Authority {
    /// A new self-signed cluster root CA (kept on the operator's machine).
    pub fn new_root(cluster: &str, validity: Duration) -> Result<Authority, PkiError> {
        // Validate the cluster name the same way identities do.
        Identity::new(cluster, crate::Role::Admin, "root")?;
        let key = KeyPair::generate()?;
        let mut params = ca_params(
            &format!("kcore {cluster} root CA"),
            cluster,
            BasicConstraints::Unconstrained,
            validity,
        )?;
        params.use_authority_key_identifier_extension = false;
        let cert = params.self_signed(&key)?;
        Authority::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// A sub-CA signed by this CA (a controller's signing authority). It may sign
    /// leaves only (path length 0).
    pub fn new_sub_ca(&self, name: &str, validity: Duration) -> Result<Authority, PkiError> {
        let cluster = self.cluster_name();
        let key = KeyPair::generate()?;
        let mut params = ca_params(
            &format!("kcore {cluster} sub-CA {name}"),
            &cluster,
            BasicConstraints::Constrained(0),
            validity,
        )?;
        params.not_after = params.not_after.min(self.not_after);
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        let mut bundle = cert.pem();
        // Keep intermediates above this CA (if any) so the sub-CA's chain is complete.
        bundle.push_str(&self.chain_pem);
        Authority::from_pem(&bundle, &key.serialize_pem())
    }

    /// Loads a CA from its certificate (first PEM block; any further blocks are its
    /// issuers) and its PKCS#8 key. Fails if the key does not belong to the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, PkiError> {
        let certs = certs_from_pem(cert_pem)?;
        let first = certs
            .first()
            .ok_or_else(|| PkiError::parse("CA certificate PEM", "no CERTIFICATE block"))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::parse("CA key PEM", e))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(first)
            .map_err(|e| PkiError::parse("CA certificate", e))?;
        if parsed.public_key().raw != key.public_key_der().as_slice() {
            return Err(PkiError::parse(
                "CA key PEM",
                "the key does not belong to the CA certificate",
            ));
        }
        if !parsed.is_ca() {
            return Err(PkiError::parse(
                "CA certificate",
                "it is not a CA certificate (basicConstraints CA:TRUE missing)",
            ));
        }
        let not_before = parsed.validity().not_before.to_datetime();
        let not_after = parsed.validity().not_after.to_datetime();
        let subject = parsed.subject().to_string();
        let params = CertificateParams::from_ca_cert_der(first)?;
        let issuer = params.self_signed(&key)?;
        let mut chain_pem = String::new();
        for der in &certs {
            if !is_self_signed(der)? {
                chain_pem.push_str(&pem_block(der));
            }
        }
        Ok(Authority {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            chain_pem,
            issuer,
            key,
            not_before,
            not_after,
            subject,
        })
    }

    /// Checks that this CA's leaves will be accepted by servers trusting `trust_pem`
    /// (e.g. before installing a new sub-CA): issues a short-lived probe leaf and
    /// verifies its chain like an mTLS server would.
    pub fn check_chains_to(&self, trust_pem: &str) -> Result<(), PkiError> {
        let cluster = self.cluster_name();
        let cluster = if cluster.is_empty() {
            "probe".to_string()
        } else {
            cluster
        };
        let probe = Identity::new(&cluster, crate::Role::Node, "chain-probe")?;
        let leaf = self.issue(&probe, &[], Duration::from_secs(300))?;
        crate::verify_client_chain(trust_pem, &leaf.cert_pem).map(|_| ())
    }

    /// The CA certificate PEM (followed by its issuers, if loaded with them).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's PKCS#8 private key PEM (store with mode 0600).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The intermediates appended to every leaf this CA issues (empty for the root).
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// When this CA certificate expires; leaves are clamped to it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// When this CA certificate starts to be valid.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// Refuses to sign outside this CA's own validity window: a leaf signed by an
    /// expired CA is dead on arrival (security review D2).
    fn check_can_sign(&self, at: OffsetDateTime) -> Result<(), PkiError> {
        if at < self.not_before || at >= self.not_after {
            return Err(PkiError::SignerNotValid {
                subject: self.subject.clone(),
                not_before: self.not_before,
                not_after: self.not_after,
                now: at,
            });
        }
        Ok(())
    }

    /// The cluster this CA belongs to, read back from its organisation name.
    pub fn cluster_name(&self) -> String {
        match self
            .issuer
            .params()
            .distinguished_name
            .get(&DnType::OrganizationName)
        {
            Some(value) => dn_value_text(value)
                .strip_prefix("kcore cluster ")
                .map(str::to_string)
                .unwrap_or_default(),
            None => String::new(),
        }
    }

    /// Issues a leaf with a key generated here (admin certificates, tests). Nodes use
    /// [`generate_csr`] + [`Authority::sign_csr`] instead so their key stays local.
    pub fn issue(
        &self,
        identity: &Identity,
        dns_names: &[String],
        validity: Duration,
    ) -> Result<CertifiedKey, PkiError> {
        self.check_can_sign(now())?;
        let start = now() - BACKDATE;
        let end = add(now(), validity)?.min(self.not_after);
        self.issue_between(identity, dns_names, start, end)
    }

    /// Issues a leaf valid exactly from `not_before` to `not_after` (used by tests for
    /// expired or not-yet-valid certificates, and by tooling that needs fixed windows).
    pub fn issue_between(
        &self,
        identity: &Identity,
        dns_names: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<CertifiedKey, PkiError> {
        if not_after <= not_before {
            return Err(PkiError::Validity(format!(
                "not_after {not_after} is not after not_before {not_before}"
            )));
        }
        let key = KeyPair::generate()?;
        let params = leaf_params(identity, dns_names, not_before, not_after)?;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok(CertifiedKey {
            cert_pem: format!("{}{}", cert.pem(), self.chain_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a node's CSR. Refuses unless the CSR's SAN URI identity equals `expected`
    /// (the controller decides who the caller is, not the CSR). DNS/IP SANs requested in
    /// the CSR are kept; nothing else from the CSR (CA flag, key usages) is honoured.
    /// Returns the certificate PEM followed by this CA's chain.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        expected: &Identity,
        validity: Duration,
    ) -> Result<String, PkiError> {
        self.sign_csr_inner(csr_pem, expected, None, validity)
    }

    /// Like [`Authority::sign_csr`], and also refuses any DNS name or IP address in the
    /// CSR that is not in `allowed_names` (the names the controller knows for this
    /// node), so a node cannot obtain a certificate for another host's name.
    pub fn sign_csr_for_names(
        &self,
        csr_pem: &str,
        expected: &Identity,
        allowed_names: &[String],
        validity: Duration,
    ) -> Result<String, PkiError> {
        self.sign_csr_inner(csr_pem, expected, Some(allowed_names), validity)
    }

    fn sign_csr_inner(
        &self,
        csr_pem: &str,
        expected: &Identity,
        allowed_names: Option<&[String]>,
        validity: Duration,
    ) -> Result<String, PkiError> {
        self.check_can_sign(now())?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            // rcgen says only "Unspecified ring error" for key types ring cannot use.
            unsupported_key(csr_pem).unwrap_or_else(|| PkiError::parse("CSR PEM", e))
        })?;
        let mut found: Option<Identity> = None;
        let mut names = Vec::new();
        for san in &csr.params.subject_alt_names {
            match san {
                SanType::URI(uri) => {
                    let ident = Identity::parse_uri(uri.as_str())?;
                    if found.is_some() {
                        return Err(PkiError::parse(
                            "CSR",
                            "more than one SAN URI; a certificate speaks for one identity",
                        ));
                    }
                    found = Some(ident);
                }
                SanType::DnsName(name) => names.push(name.as_str().to_string()),
                SanType::IpAddress(ip) => names.push(ip.to_string()),
                other => {
                    return Err(PkiError::parse(
                        "CSR",
                        format!("unsupported subject alternative name {other:?}"),
                    ));
                }
            }
        }
        let found = found.ok_or_else(|| PkiError::NoIdentity { what: "CSR".into() })?;
        if let Some(name) = names.iter().find(|n| n.contains('*')) {
            return Err(PkiError::WildcardName {
                identity: expected.uri(),
                name: name.clone(),
            });
        }
        if &found != expected {
            return Err(PkiError::IdentityMismatch {
                expected: expected.uri(),
                found: found.uri(),
            });
        }
        if let Some(allowed) = allowed_names {
            let allowed: Vec<String> = allowed.iter().map(|n| canonical_name(n)).collect();
            if let Some(name) = names.iter().find(|n| !allowed.contains(&canonical_name(n))) {
                return Err(PkiError::NameNotAllowed {
                    identity: expected.uri(),
                    name: name.clone(),
                    allowed,
                });
            }
        }
        let start = now() - BACKDATE;
        let end = add(now(), validity)?.min(self.not_after);
        let params = leaf_params(expected, &names, start, end)?;
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer, &self.key)?;
        // Belt and braces: what we hand out must carry exactly the expected identity.
        if &identity_of(signed.der())? != expected {
            return Err(PkiError::IdentityMismatch {
                expected: expected.uri(),
                found: "signed certificate".into(),
            });
        }
        Ok(format!("{}{}", signed.pem(), self.chain_pem))
    }
}

/// A DNS name or IP address as names are compared: addresses in their canonical text,
/// DNS names lower-cased without a trailing dot.
pub fn canonical_name(name: &str) -> String {
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => name.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// The DNS names and IP addresses a CSR asks for (what a signer's name policy judges),
/// in the order the CSR lists them.
pub fn csr_names(csr_pem: &str) -> Result<Vec<String>, PkiError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| unsupported_key(csr_pem).unwrap_or_else(|| PkiError::parse("CSR PEM", e)))?;
    Ok(csr
        .params
        .subject_alt_names
        .iter()
        .filter_map(|san| match san {
            SanType::DnsName(name) => Some(name.as_str().to_string()),
            SanType::IpAddress(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect())
}

/// `Some(UnsupportedKey)` when the CSR parses as a request whose key is not one kcore
/// signs (RSA, other curves), so the caller can say which keys are accepted.
fn unsupported_key(csr_pem: &str) -> Option<PkiError> {
    use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
    use x509_parser::prelude::FromDer as _;
    let der = rustls_pemfile::read_one(&mut csr_pem.as_bytes()).ok()??;
    let rustls_pemfile::Item::Csr(der) = der else {
        return None;
    };
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&der).ok()?;
    let algorithm = &req.certification_request_info.subject_pki.algorithm;
    let oid = &algorithm.algorithm;
    if *oid == OID_SIG_ED25519 || *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        // A supported family: the parse failed for another reason (or the curve is
        // unusual); let the original message through.
        return None;
    }
    let found = match req.certification_request_info.subject_pki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
            format!("RSA-{}", rsa.key_size())
        }
        _ => format!("of algorithm {}", oid.to_id_string()),
    };
    Some(PkiError::UnsupportedKey { found })
}

fn dn_value_text(value: &rcgen::DnValue) -> String {
    match value {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
        rcgen::DnValue::Ia5String(s) => s.as_str().to_string(),
        rcgen::DnValue::TeletexString(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

pub(crate) fn pem_block(der: &[u8]) -> String {
    pem_encode("CERTIFICATE", der)
}

fn pem_encode(tag: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {tag}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

impl Authority {
    /// A PEM CRL signed by this CA listing the given serial numbers (lowercase hex as
    /// [`crate::serial_hex`] returns). `crl_number` must grow with every new list;
    /// verifiers treat the list as current until `validity` has passed.
    pub fn revocation_list(
        &self,
        revoked_serials_hex: &[String],
        crl_number: u64,
        validity: Duration,
    ) -> Result<String, PkiError> {
        let this_update = now() - BACKDATE;
        let revoked_certs = revoked_serials_hex
            .iter()
            .map(|hex_serial| {
                let bytes = hex::decode(hex_serial.trim())
                    .map_err(|e| PkiError::parse(format!("revoked serial {hex_serial:?}"), e))?;
                Ok(rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: this_update,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let params = rcgen::CertificateRevocationListParams {
            this_update,
            next_update: add(now(), validity)?,
            crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: self.issuer.params().key_identifier_method.clone(),
        };
        Ok(params.signed_by(&self.issuer, &self.key)?.pem()?)
    }
}

/// Creates a key pair and a CSR for `identity`; the key stays with the caller.
/// Returns `(key_pem, csr_pem)`.
pub fn generate_csr(
    identity: &Identity,
    dns_names: &[String],
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(
        &format!("{} {}", identity.role, identity.id),
        &identity.cluster,
    );
    params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
    for name in dns_names {
        params.subject_alt_names.push(san_for(name)?);
    }
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// The install-mode agent's self-signed certificate (valid one year; the live ISO
/// makes a fresh one each boot) and its SHA-256 fingerprint for the console.
pub fn self_signed_install(hostnames: &[String]) -> Result<(CertifiedKey, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kcore installer");
    params.distinguished_name = dn;
    for name in hostnames {
        params.subject_alt_names.push(san_for(name)?);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now() - BACKDATE;
    params.not_after = add(now(), Duration::from_secs(365 * 24 * 3600))?;
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key)?;
    let fingerprint = fingerprint_sha256(cert.der());
    Ok((
        CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
        fingerprint,
    ))
}
