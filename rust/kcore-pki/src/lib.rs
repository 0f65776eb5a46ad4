//! Cluster PKI: root CA, sub-CA, leaf certificates, CSR signing, identities in the SAN
//! URI, and the rustls client and server configurations built from them.
//!
//! Chain design (see `docs/pki.md`): the root CA lives on the operator's machine, each
//! controller holds a sub-CA that signs node CSRs, and every leaf chain carries the
//! sub-CA certificate so servers only need to trust the root. Keys never leave the
//! machine that uses them: nodes call [`generate_csr`] and send only the CSR.

mod authority;
mod credentials;
mod error;
mod files;
mod identity;
mod inspect;
mod tls;

pub use authority::{
    Authority, CertifiedKey, canonical_name, csr_names, generate_csr, self_signed_install,
};
pub use credentials::{CredentialFiles, Credentials};
pub use error::PkiError;
pub use files::{read_pem_file, write_atomically};
pub use identity::{Identity, Role};
pub use inspect::{
    CertInfo, cert_info, cert_names, certs_from_pem, display_fingerprint, fingerprint_sha256,
    identity_of, needs_renewal, normalise_fingerprint, not_after, not_after_der, serial_hex,
    verify_client_chain,
};
pub use tls::{
    PeerExpectation, client_config, client_config_expecting, client_config_insecure,
    client_config_pinned, crypto_provider, server_config, server_config_no_client_auth,
    server_config_with_crls,
};

/// Node certificates are valid this long (docs/pki.md); controllers and `kctl create
/// node-cert --offline` issue them so.
pub const NODE_CERT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(90 * 24 * 3600);

/// Scraper (`metrics` role) certificates are valid this long: they are renewed by hand
/// (`kctl create metrics-cert` again), and `/metrics` itself shows when they end.
pub const METRICS_CERT_VALIDITY: std::time::Duration =
    std::time::Duration::from_secs(365 * 24 * 3600);

/// Renewal starts this long before a certificate expires (DESIGN.md: 30 days).
pub const RENEW_BEFORE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
