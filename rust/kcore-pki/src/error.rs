//! The error type of every kcore-pki operation.

/// Why a PKI operation failed. Messages name the input that was wrong.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A `kcore://<cluster>/<role>/<id>` URI that does not parse.
    #[error(
        "invalid identity URI {uri:?}: {reason} (expected kcore://<cluster>/<role>/<id>, role admin|controller|node)"
    )]
    InvalidIdentity { uri: String, reason: String },
    /// The certificate or CSR carries no `kcore://` SAN URI.
    #[error("{what} carries no kcore:// SAN URI identity")]
    NoIdentity { what: String },
    /// A CSR asked for another identity than the one the signer expected.
    #[error(
        "CSR identity {found} does not match the expected identity {expected}; refusing to sign"
    )]
    IdentityMismatch { expected: String, found: String },
    /// A CSR asked for a DNS name or address the signer does not allow for it.
    #[error(
        "CSR for {identity} asks for the name {name:?}, which is not among its allowed names {allowed:?}; refusing to sign"
    )]
    NameNotAllowed {
        identity: String,
        name: String,
        allowed: Vec<String>,
    },
    /// A CSR asked for a wildcard name; a node certificate speaks for one host.
    #[error(
        "CSR for {identity} asks for the wildcard name {name:?}; node certificates never carry wildcards: request the node's own host names"
    )]
    WildcardName { identity: String, name: String },
    /// A CSR whose key type kcore does not sign.
    #[error(
        "the CSR's key is {found}; kcore signs ECDSA P-256/P-384, Ed25519 and RSA keys of at least 2048 bits (`kctl create csr` makes a P-256 key)"
    )]
    UnsupportedKey { found: String },
    /// The signing CA is outside its own validity window: whatever it signed would
    /// already be expired (or not yet valid) for every verifier.
    #[error(
        "the signing CA {subject} is valid from {not_before} to {not_after}, which does not include now ({now}); install a current sub-CA with `kctl rotate sub-ca`"
    )]
    SignerNotValid {
        subject: String,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
        now: time::OffsetDateTime,
    },
    /// A private key that does not belong to the certificate next to it.
    #[error(
        "the private key {key} does not belong to the certificate {cert}: use the key the certificate was issued for"
    )]
    KeyMismatch {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
    /// A renewed certificate that must not replace the current one.
    #[error("renewed certificate refused, keeping the current one: {0}")]
    RenewalRefused(String),
    /// PEM or DER input that could not be read.
    #[error("cannot parse {what}: {reason}")]
    Parse { what: String, reason: String },
    /// A fingerprint that is not 64 hex digits (colons allowed).
    #[error("invalid SHA-256 fingerprint {0:?}: expected 64 hex digits, colons allowed")]
    InvalidFingerprint(String),
    /// Certificate generation or signing failed inside rcgen.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
    /// The client certificate verifier could not be built (for example an empty trust bundle).
    #[error("cannot build certificate verifier: {0}")]
    Verifier(String),
    /// A key, certificate or bundle file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Io {
        what: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A certificate chain does not verify against the trust bundle.
    #[error("certificate chain does not verify against the trust bundle: {0}")]
    Untrusted(String),
    /// A validity or time computation went out of range.
    #[error("invalid validity: {0}")]
    Validity(String),
}

impl PkiError {
    pub(crate) fn parse(what: impl Into<String>, reason: impl ToString) -> Self {
        Self::Parse {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
