//! `GET /v1/version`: what a server says about its build, so `kctl version` can show
//! each controller's version next to its own (a mixed fleet during an upgrade shows).

use serde::{Deserialize, Serialize};

/// The answer of `GET /v1/version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerVersion {
    /// `kcore-controller` or `kcore-agent`.
    pub component: String,
    /// The crate version the binary was built from (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The server's id (a controller's `controllerId`, an agent's `nodeId`).
    pub id: String,
}
