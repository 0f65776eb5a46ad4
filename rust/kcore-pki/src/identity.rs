//! Who a certificate speaks for: `kcore://<cluster>/<role>/<id>` in the SAN URI, with role
//! `admin`, `controller`, `node` or `metrics` (a read-only scraper).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::PkiError;

/// What a certificate holder may do; each API route names the roles it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An operator using kctl.
    Admin,
    /// A controller daemon (also when it calls peers or agents).
    Controller,
    /// A node agent; acts only for its own id.
    Node,
    /// A Prometheus scraper: read-only, it may call `GET /metrics` on controllers and
    /// agents and nothing else (docs/metrics.md).
    Metrics,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Controller => "controller",
            Role::Node => "node",
            Role::Metrics => "metrics",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "controller" => Ok(Role::Controller),
            "node" => Ok(Role::Node),
            "metrics" => Ok(Role::Metrics),
            other => Err(format!(
                "unknown role {other:?} (expected admin, controller, node or metrics)"
            )),
        }
    }
}

/// The identity carried by a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub cluster: String,
    pub role: Role,
    pub id: String,
}

const SCHEME: &str = "kcore://";

/// Cluster names and ids end up in URIs, DNs, file names and logs: keep them to a
/// conservative alphabet so none of those needs escaping.
fn check_segment(uri: &str, what: &str, s: &str) -> Result<(), PkiError> {
    let bad = |reason: String| PkiError::InvalidIdentity {
        uri: uri.to_string(),
        reason,
    };
    if s.is_empty() {
        return Err(bad(format!("{what} is empty")));
    }
    if s.len() > 63 {
        return Err(bad(format!("{what} {s:?} is longer than 63 characters")));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(bad(format!(
            "{what} {s:?} contains {c:?}; use letters, digits, '-', '_' or '.'"
        )));
    }
    if s.starts_with('.') {
        return Err(bad(format!("{what} {s:?} must not start with '.'")));
    }
    Ok(())
}

impl Identity {
    /// Builds an identity, validating both segments.
    pub fn new(cluster: &str, role: Role, id: &str) -> Result<Identity, PkiError> {
        let ident = Identity {
            cluster: cluster.to_string(),
            role,
            id: id.to_string(),
        };
        let uri = ident.uri();
        check_segment(&uri, "cluster", cluster)?;
        check_segment(&uri, "id", id)?;
        Ok(ident)
    }

    /// `kcore://<cluster>/<role>/<id>`.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}/{}/{}", self.cluster, self.role, self.id)
    }

    /// Parses `kcore://<cluster>/<role>/<id>`; anything else is an error naming the problem.
    pub fn parse_uri(s: &str) -> Result<Identity, PkiError> {
        let bad = |reason: &str| PkiError::InvalidIdentity {
            uri: s.to_string(),
            reason: reason.to_string(),
        };
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("does not start with kcore://"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [cluster, role, id] = parts.as_slice() else {
            return Err(bad("expected exactly three path segments"));
        };
        let role = Role::from_str(role).map_err(|e| bad(&e))?;
        check_segment(s, "cluster", cluster)?;
        check_segment(s, "id", id)?;
        Ok(Identity {
            cluster: (*cluster).to_string(),
            role,
            id: (*id).to_string(),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trips() {
        for role in [Role::Admin, Role::Controller, Role::Node, Role::Metrics] {
            let ident = Identity::new("prod-1", role, "node_07.a").unwrap();
            let uri = ident.uri();
            assert!(uri.starts_with("kcore://prod-1/"));
            assert_eq!(Identity::parse_uri(&uri).unwrap(), ident);
        }
    }

    #[test]
    fn bad_uris_are_refused_with_a_reason() {
        for (uri, needle) in [
            ("https://c/node/n1", "kcore://"),
            ("kcore://c/node", "three"),
            ("kcore://c/node/n1/x", "three"),
            ("kcore://c/root/n1", "unknown role"),
            ("kcore:///node/n1", "cluster is empty"),
            ("kcore://c/node/", "id is empty"),
            ("kcore://c/node/n 1", "contains ' '"),
            ("kcore://c/node/..", "must not start"),
        ] {
            let err = Identity::parse_uri(uri).unwrap_err().to_string();
            assert!(err.contains(needle), "{uri}: {err}");
        }
        assert!(Identity::new("c", Role::Node, &"x".repeat(64)).is_err());
    }
}
