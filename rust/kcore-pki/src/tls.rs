//! rustls client and server configurations: mTLS against the cluster root, the
//! install-mode server without client authentication, and the two install-mode client
//! policies (`kctl -k` accepts any server certificate, `--fingerprint` pins one).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::PkiError;
use crate::inspect::{certs_from_pem, fingerprint_sha256, identity_of, normalise_fingerprint};
use crate::{Identity, Role};

/// The crypto provider every kcore TLS config uses (ring), fixed explicitly so the
/// result does not depend on which rustls features other crates switch on.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(trust_pem: &str) -> Result<RootCertStore, PkiError> {
    let mut store = RootCertStore::empty();
    let certs = certs_from_pem(trust_pem)?;
    if certs.is_empty() {
        return Err(PkiError::parse(
            "trust bundle PEM",
            "no CERTIFICATE block found",
        ));
    }
    for cert in certs {
        store
            .add(cert)
            .map_err(|e| PkiError::parse("trust bundle certificate", e))?;
    }
    Ok(store)
}

fn chain(cert_chain_pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = certs_from_pem(cert_chain_pem)?;
    if certs.is_empty() {
        return Err(PkiError::parse(
            "certificate chain PEM",
            "no CERTIFICATE block found",
        ));
    }
    Ok(certs)
}

fn key(key_pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| PkiError::parse("private key PEM", e))?
        .ok_or_else(|| PkiError::parse("private key PEM", "no PRIVATE KEY block found"))
}

fn crls(crl_pems: &[String]) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    let mut out = Vec::new();
    for pem in crl_pems {
        for crl in rustls_pemfile::crls(&mut pem.as_bytes()) {
            out.push(crl.map_err(|e| PkiError::parse("CRL PEM", e))?);
        }
    }
    Ok(out)
}

fn server_builder() -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, PkiError>
{
    Ok(ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?)
}

fn client_builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, PkiError>
{
    Ok(ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?)
}

fn with_alpn(mut config: ServerConfig) -> ServerConfig {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// mTLS server: a client certificate is REQUIRED and must chain (through the
/// intermediates the client presents, e.g. its sub-CA) to a root in `trust_pem_bundle`,
/// be within its validity window and carry the clientAuth purpose.
pub fn server_config(
    trust_pem_bundle: &str,
    cert_chain_pem: &str,
    key_pem: &str,
) -> Result<ServerConfig, PkiError> {
    server_config_with_crls(trust_pem_bundle, cert_chain_pem, key_pem, &[])
}

/// Like [`server_config`], also refusing client certificates listed in any of the
/// given PEM revocation lists (issued by the root or by a sub-CA).
pub fn server_config_with_crls(
    trust_pem_bundle: &str,
    cert_chain_pem: &str,
    key_pem: &str,
    crl_pems: &[String],
) -> Result<ServerConfig, PkiError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(trust_pem_bundle)?),
        crypto_provider(),
    )
    .with_crls(crls(crl_pems)?)
    // Only the end-entity is checked against CRLs; intermediates are revoked
    // by rotating them out. Unknown status (no CRL from that issuer) is allowed.
    .only_check_end_entity_revocation()
    .allow_unknown_revocation_status()
    .build()
    .map_err(|e| PkiError::Verifier(e.to_string()))?;
    let config = server_builder()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(cert_chain_pem)?, key(key_pem)?)?;
    Ok(with_alpn(config))
}

/// Install-mode server: no client authentication at all (the live ISO has no cluster
/// identity yet; only inventory and install routes are served in this mode).
pub fn server_config_no_client_auth(
    cert_pem: &str,
    key_pem: &str,
) -> Result<ServerConfig, PkiError> {
    let config = server_builder()?
        .with_no_client_auth()
        .with_single_cert(chain(cert_pem)?, key(key_pem)?)?;
    Ok(with_alpn(config))
}

/// mTLS client that checks only the chain and host name. Tests and tooling only: every
/// kcore client in production uses [`client_config_expecting`] (or
/// [`crate::Credentials::client_config`]) so a node certificate can never pose as a
/// controller (security review D1).
pub fn client_config(
    trust_pem: &str,
    cert_chain_pem: &str,
    key_pem: &str,
) -> Result<ClientConfig, PkiError> {
    Ok(client_builder()?
        .with_root_certificates(roots(trust_pem)?)
        .with_client_auth_cert(chain(cert_chain_pem)?, key(key_pem)?)?)
}

/// Who the server at the other end must be, beyond "signed by our root".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerExpectation {
    /// A certificate of `cluster` with any of `roles` (kctl and agents calling
    /// controllers, controllers calling peers: `[Controller]`).
    Roles { cluster: String, roles: Vec<Role> },
    /// Exactly this identity (kctl calling node `n1`'s agent when it knows the id).
    Exactly(Identity),
}

impl PeerExpectation {
    /// Any controller of `cluster`.
    pub fn controller(cluster: &str) -> Self {
        PeerExpectation::Roles {
            cluster: cluster.to_string(),
            roles: vec![Role::Controller],
        }
    }

    /// The node `id` of `cluster` when the id is known, else any node of `cluster`.
    pub fn node(cluster: &str, id: Option<&str>) -> Result<Self, PkiError> {
        Ok(match id {
            Some(id) => PeerExpectation::Exactly(Identity::new(cluster, Role::Node, id)?),
            None => PeerExpectation::Roles {
                cluster: cluster.to_string(),
                roles: vec![Role::Node],
            },
        })
    }

    /// Whether `found` is who we expect.
    pub fn accepts(&self, found: &Identity) -> bool {
        match self {
            PeerExpectation::Roles { cluster, roles } => {
                &found.cluster == cluster && roles.contains(&found.role)
            }
            PeerExpectation::Exactly(identity) => identity == found,
        }
    }

    /// What we expect, for error messages: `kcore://lab/controller/*`.
    pub fn describe(&self) -> String {
        match self {
            PeerExpectation::Roles { cluster, roles } => roles
                .iter()
                .map(|r| format!("kcore://{cluster}/{r}/*"))
                .collect::<Vec<_>>()
                .join(" or "),
            PeerExpectation::Exactly(identity) => identity.uri(),
        }
    }
}

/// [`client_config`] that also requires the server certificate to carry the expected
/// identity. Host names alone are not enough: a node's certificate lists the node's
/// own names, and nothing but this check stops it answering for a controller's name
/// if DNS or an address is hijacked.
pub fn client_config_expecting(
    trust_pem: &str,
    cert_chain_pem: &str,
    key_pem: &str,
    expected: &PeerExpectation,
) -> Result<ClientConfig, PkiError> {
    let inner =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots(trust_pem)?), crypto_provider())
            .build()
            .map_err(|e| PkiError::Verifier(e.to_string()))?;
    let verifier = Arc::new(ExpectingVerifier {
        inner,
        expected: expected.clone(),
    });
    Ok(client_builder()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain(cert_chain_pem)?, key(key_pem)?)?)
}

#[derive(Debug)]
struct ExpectingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expected: PeerExpectation,
}

#[derive(thiserror::Error)]
#[error("wrong server: its certificate speaks for {found}, expected {expected}")]
struct WrongPeer {
    expected: String,
    found: String,
}

impl std::fmt::Debug for WrongPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl ServerCertVerifier for ExpectingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Chain, dates and host name first: identity only counts on a valid certificate.
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let found = identity_of(end_entity);
        match found {
            Ok(identity) if self.expected.accepts(&identity) => Ok(verified),
            other => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(WrongPeer {
                    expected: self.expected.describe(),
                    found: match other {
                        Ok(identity) => identity.uri(),
                        Err(_) => "no kcore identity".into(),
                    },
                }))),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `kctl -k`: accepts any server certificate. Only for talking to an install-mode
/// agent whose self-signed certificate the operator chose not to pin.
pub fn client_config_insecure() -> Result<ClientConfig, PkiError> {
    let verifier = Arc::new(AnyOrPinned {
        pin: None,
        provider: crypto_provider(),
    });
    Ok(client_builder()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `kctl --fingerprint`: accepts only the server leaf whose SHA-256 fingerprint is
/// `fingerprint` (colons and upper case accepted). Names and dates are not checked:
/// the pin is the whole trust decision.
pub fn client_config_pinned(fingerprint: &str) -> Result<ClientConfig, PkiError> {
    let verifier = Arc::new(AnyOrPinned {
        pin: Some(normalise_fingerprint(fingerprint)?),
        provider: crypto_provider(),
    });
    Ok(client_builder()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// Server verifier for install mode. The handshake signature is still verified, so the
/// peer must hold the private key of the certificate it shows.
#[derive(Debug)]
struct AnyOrPinned {
    pin: Option<String>,
    provider: Arc<CryptoProvider>,
}

/// The error a wrong pin produces; kctl shows it, so it names both fingerprints, in the
/// form the install-mode agent logs them (64 lowercase hex digits).
#[derive(thiserror::Error)]
#[error(
    "fingerprint mismatch: expected {expected}, got {actual} (the server's certificate does not match the pinned fingerprint)"
)]
struct PinMismatch {
    expected: String,
    actual: String,
}

// rustls prints nested certificate errors with `{:?}`: make that the readable message.
impl std::fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl ServerCertVerifier for AnyOrPinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(expected) = &self.pin {
            let actual = fingerprint_sha256(end_entity);
            if &actual != expected {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                        expected: expected.clone(),
                        actual,
                    }))),
                ));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
