//! HTTPS plumbing shared by the agent, the controller and kctl: a TLS accept loop that
//! hands each request the peer's identity, hot-reloadable certificates, the JSON error
//! envelope, and a client with mTLS, pinning and controller failover.
