//! A process's TLS credentials as one value: the cluster trust bundle, its own
//! certificate chain and private key, loaded once with errors that name each file, and
//! the rustls configurations built from them. Agents, controllers and kctl all use this
//! instead of reading three files and building configs by hand.

use std::path::{Path, PathBuf};

use rustls::{ClientConfig, ServerConfig};
use time::OffsetDateTime;

use crate::inspect::{certs_from_pem, identity_of};
use crate::tls::{PeerExpectation, client_config_expecting, server_config};
use crate::{Identity, PkiError};

/// Trust bundle, certificate chain (leaf first) and PKCS#8 key, all PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    // The key is a secret: keep it out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Where a set of credentials lives on disk, for loading and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFiles {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl CredentialFiles {
    pub fn new(ca: &Path, cert: &Path, key: &Path) -> Self {
        CredentialFiles {
            ca_file: ca.to_path_buf(),
            cert_file: cert.to_path_buf(),
            key_file: key.to_path_buf(),
        }
    }
}

fn read(what: &str, path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

impl Credentials {
    /// Reads the three files and checks that the key belongs to the certificate, so a
    /// mismatch is reported once, naming both files, instead of as a TLS failure later.
    pub fn load(files: &CredentialFiles) -> Result<Credentials, PkiError> {
        let creds = Credentials {
            ca_pem: read("CA certificate", &files.ca_file)?,
            cert_pem: read("certificate", &files.cert_file)?,
            key_pem: read("private key", &files.key_file)?,
        };
        if !creds.key_matches()? {
            return Err(PkiError::KeyMismatch {
                cert: files.cert_file.clone(),
                key: files.key_file.clone(),
            });
        }
        Ok(creds)
    }

    fn leaf(&self) -> Result<rustls_pki_types::CertificateDer<'static>, PkiError> {
        certs_from_pem(&self.cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::parse("certificate PEM", "no CERTIFICATE block found"))
    }

    /// Whether the private key is the one the leaf certificate was issued for.
    pub fn key_matches(&self) -> Result<bool, PkiError> {
        let leaf = self.leaf()?;
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
            .map_err(|e| PkiError::parse("certificate DER", e))?;
        let key = rcgen::KeyPair::from_pem(&self.key_pem)
            .map_err(|e| PkiError::parse("private key PEM", e))?;
        Ok(cert.public_key().raw == key.public_key_der().as_slice())
    }

    /// The `kcore://` identity of the leaf certificate.
    pub fn identity(&self) -> Result<Identity, PkiError> {
        identity_of(&self.leaf()?)
    }

    /// When the leaf expires.
    pub fn not_after(&self) -> Result<OffsetDateTime, PkiError> {
        crate::not_after_der(&self.leaf()?)
    }

    /// An mTLS client that presents these credentials and accepts only a server that
    /// chains to the trust bundle AND carries the `expected` identity.
    pub fn client_config(&self, expected: &PeerExpectation) -> Result<ClientConfig, PkiError> {
        client_config_expecting(&self.ca_pem, &self.cert_pem, &self.key_pem, expected)
    }

    /// An mTLS server with these credentials (client certificates required).
    pub fn server_config(&self) -> Result<ServerConfig, PkiError> {
        server_config(&self.ca_pem, &self.cert_pem, &self.key_pem)
    }

    /// Checks a renewed certificate and key before they replace these: the new chain
    /// verifies against our trust bundle now, the key is its key, it speaks for the same
    /// identity, and it lasts longer than the current one. Anything else is refused, so
    /// a controller handing out a bad or shorter certificate cannot lock the node out.
    pub fn check_replacement(
        &self,
        renewed: &Credentials,
        now: OffsetDateTime,
    ) -> Result<(), PkiError> {
        let refuse = |reason: String| Err(PkiError::RenewalRefused(reason));
        if !renewed.key_matches()? {
            return refuse("the new certificate is not for the key this node generated".into());
        }
        let identity = self.identity()?;
        let new_identity = renewed.identity()?;
        if new_identity != identity {
            return refuse(format!(
                "the new certificate speaks for {}, this node is {}",
                new_identity.uri(),
                identity.uri()
            ));
        }
        let (old_end, new_end) = (self.not_after()?, renewed.not_after()?);
        if new_end <= now {
            return refuse(format!("the new certificate already expired at {new_end}"));
        }
        if new_end <= old_end {
            return refuse(format!(
                "the new certificate expires at {new_end}, not later than the current one ({old_end}); the controller's sub-CA probably ends then: rotate it with `kctl rotate sub-ca`"
            ));
        }
        if let Err(err) = crate::verify_client_chain(&self.ca_pem, &renewed.cert_pem) {
            return refuse(format!("the new certificate does not verify now: {err}"));
        }
        Ok(())
    }
}
