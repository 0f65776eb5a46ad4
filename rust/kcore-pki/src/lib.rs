//! Cluster PKI: root CA, sub-CA, leaf certificates, CSR signing, identities in the SAN
//! URI, and the rustls client and server configurations built from them.
