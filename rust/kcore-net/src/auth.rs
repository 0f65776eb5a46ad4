//! Authorisation helpers: routes name the roles they allow, and a node may act only for
//! its own id. Refusals are `401 UNAUTHENTICATED` (no identity) or `403 FORBIDDEN`.
//!
//! Three ways to use them, pick what reads best at the route:
//! - extractor [`Authenticated`] (any identity) then [`require_role`] / [`ensure_self`];
//! - middleware: `.route_layer(from_fn_with_state(&[Role::Admin][..], allow_roles))`;
//! - plain functions on a [`PeerIdentity`].

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kcore_pki::{Identity, Role};

use crate::error::ApiFailure;
use crate::server::PeerIdentity;

fn roles_text(allowed: &[Role]) -> String {
    allowed
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The caller's identity if its role is one of `allowed`.
pub fn require_role<'a>(
    peer: &'a PeerIdentity,
    allowed: &[Role],
) -> Result<&'a Identity, ApiFailure> {
    let identity = peer.0.as_ref().ok_or_else(|| {
        ApiFailure::unauthenticated(
            "this route needs a client certificate with a kcore:// identity",
        )
    })?;
    if allowed.contains(&identity.role) {
        Ok(identity)
    } else {
        Err(ApiFailure::forbidden(format!(
            "{} may not call this route (allowed roles: {})",
            identity.uri(),
            roles_text(allowed)
        ))
        .with_details(serde_json::json!({
            "identity": identity.uri(),
            "allowedRoles": allowed,
        })))
    }
}

/// A node may act only for itself; admins and controllers act for any node.
pub fn ensure_self(identity: &Identity, node_id: &str) -> Result<(), ApiFailure> {
    if identity.role != Role::Node || identity.id == node_id {
        return Ok(());
    }
    Err(ApiFailure::forbidden(format!(
        "{} may act only for node {:?}, not {:?}",
        identity.uri(),
        identity.id,
        node_id
    ))
    .with_details(serde_json::json!({ "identity": identity.uri(), "nodeId": node_id })))
}

/// Extractor: any authenticated caller (rejects with 401 when there is no identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Ok(peer) = PeerIdentity::from_request_parts(parts, state).await;
        require_role(&peer, &[Role::Admin, Role::Controller, Role::Node])
            .map(|i| Authenticated(i.clone()))
    }
}

/// Middleware for `axum::middleware::from_fn_with_state(&ROLES[..], allow_roles)`:
/// lets the request through only for the listed roles.
pub async fn allow_roles(
    State(allowed): State<&'static [Role]>,
    req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<PeerIdentity>()
        .cloned()
        .unwrap_or(PeerIdentity(None));
    match require_role(&peer, allowed) {
        Ok(_) => next.run(req).await,
        Err(failure) => failure.into_response(),
    }
}
