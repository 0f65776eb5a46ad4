//! The generic resource routes, `GET/PUT/DELETE /v1/<plural>[/<name>]`, for every kind
//! stored through [`crate::store::Store::apply`]. A kind's route file gives a
//! [`Definition`] (its kind, who may read, who may write, how a document is validated);
//! everything else (role checks, `dryRun`, `labelSelector`, kind/name checks, the wire
//! shapes of `kcore_api::resource`) is here once.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use kcore_api::ErrorCode;
use kcore_api::resource::{ApplyResponse, Deleted, Kind, LabelSelector, ObjectError, ResourceList};
use kcore_net::{ApiFailure, ApiJson};
// kcore-net's `Path`: a segment that is not percent-encoded UTF-8 gets the JSON envelope.
use kcore_net::ApiPath as Path;
use kcore_pki::Role;
use serde_json::Value;

use super::{AppState, Caller, Result};
use crate::store::StoreError;

/// What the generic routes need to know about one kind.
#[derive(Debug)]
pub(super) struct Definition {
    pub kind: Kind,
    /// Who may `GET` the list and single objects.
    pub read: &'static [Role],
    /// Who may `PUT` and `DELETE`.
    pub write: &'static [Role],
    /// Decodes and validates a document (`status` and `metadata.generation` already
    /// removed) into the JSON the store keeps: `{kind, metadata{name, labels}, spec}`.
    pub validate: fn(Value) -> std::result::Result<Value, ObjectError>,
    /// How `DELETE` is carried out when it is more than a tombstone (a placed VM waits for
    /// its node); `None`: the object is tombstoned at once.
    pub delete: Option<DeleteFn>,
}

/// A kind's own `DELETE` ([`Definition::delete`]).
pub(super) type DeleteFn = fn(&AppState, &str) -> std::result::Result<Deletion, StoreError>;

/// What a kind's own delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Deletion {
    NotFound,
    Deleted,
    /// Not gone yet: what it waits for.
    Pending(String),
}

/// Adds the kind's routes to `router`.
pub(super) fn routes(
    router: Router<Arc<AppState>>,
    def: &'static Definition,
) -> Router<Arc<AppState>> {
    let plural = def.kind.plural();
    router
        .route(
            &format!("/v1/{plural}"),
            get(
                move |State(state): State<Arc<AppState>>, caller: Caller, RawQuery(q)| {
                    list(def, state, caller, q)
                },
            ),
        )
        .route(
            &format!("/v1/{plural}/{{name}}"),
            get(
                move |State(state): State<Arc<AppState>>,
                      caller: Caller,
                      Path(name): Path<String>| { read(def, state, caller, name) },
            )
            .put(
                move |State(state): State<Arc<AppState>>,
                      caller: Caller,
                      Path(name): Path<String>,
                      RawQuery(q): RawQuery,
                      ApiJson(body): ApiJson<Value>| {
                    apply(def, state, caller, name, q, body)
                },
            )
            .delete(
                move |State(state): State<Arc<AppState>>,
                      caller: Caller,
                      Path(name): Path<String>| {
                    delete(def, state, caller, name)
                },
            ),
        )
}

/// The query parameters, percent-decoded (`+` is a space, as forms write it), by the
/// `application/x-www-form-urlencoded` parser axum's own `Query` uses.
fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

pub(super) fn invalid(err: &ObjectError) -> ApiFailure {
    let details = match err {
        ObjectError::Invalid(field) => serde_json::to_value(field).unwrap_or_default(),
        ObjectError::Decode(d) => serde_json::json!({"field": d.path}),
    };
    ApiFailure::with_status(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidField,
        err.to_string(),
    )
    .with_details(details)
}

fn invalid_field(field: &str, message: String) -> ApiFailure {
    ApiFailure::with_status(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidField,
        format!("{field}: {message}"),
    )
    .with_details(serde_json::json!({"field": field}))
}

fn not_found(kind: Kind, name: &str) -> ApiFailure {
    ApiFailure::with_status(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no {kind} named {name:?}"),
    )
    .with_details(serde_json::json!({"kind": kind, "name": name}))
}

pub(super) async fn list(
    def: &'static Definition,
    state: Arc<AppState>,
    caller: Caller,
    query: Option<String>,
) -> Result<Json<ResourceList>> {
    caller.require(def.read)?;
    let mut selector = LabelSelector::default();
    for (key, value) in query_params(query.as_deref()) {
        match key.as_str() {
            "labelSelector" => {
                selector = value
                    .parse()
                    .map_err(|e: kcore_api::validate::FieldError| {
                        invalid_field("labelSelector", e.detail())
                    })?;
            }
            other => {
                return Err(ApiFailure::bad_request(format!(
                    "unknown query parameter {other:?}; GET /v1/{} takes labelSelector",
                    def.kind.plural()
                )));
            }
        }
    }
    Ok(Json(ResourceList {
        items: state.store.list(def.kind, &selector),
    }))
}

pub(super) async fn read(
    def: &'static Definition,
    state: Arc<AppState>,
    caller: Caller,
    name: String,
) -> Result<Json<Value>> {
    caller.require(def.read)?;
    state
        .store
        .get(def.kind, &name)
        .map(Json)
        .ok_or_else(|| not_found(def.kind, &name))
}

async fn apply(
    def: &'static Definition,
    state: Arc<AppState>,
    caller: Caller,
    name: String,
    query: Option<String>,
    mut body: Value,
) -> Result<Json<ApplyResponse>> {
    let who = caller.require(def.write)?.uri();
    let mut dry_run = false;
    for (key, value) in query_params(query.as_deref()) {
        match (key.as_str(), value.as_str()) {
            ("dryRun", "server") => dry_run = true,
            ("dryRun", other) => {
                return Err(invalid_field(
                    "dryRun",
                    format!("{other:?} is not a dry-run mode; use dryRun=server, or leave it out"),
                ));
            }
            (other, _) => {
                return Err(ApiFailure::bad_request(format!(
                    "unknown query parameter {other:?}; PUT /v1/{}/NAME takes dryRun=server",
                    def.kind.plural()
                )));
            }
        }
    }
    let Some(document) = body.as_object_mut() else {
        return Err(ApiFailure::bad_request(format!(
            "the body must be a {} object: {{kind, metadata, spec}}",
            def.kind
        )));
    };
    if !document.contains_key("kind") {
        return Err(invalid_field(
            "kind",
            format!("is missing; add kind: {}", def.kind),
        ));
    }
    // Both belong to the server; what a client sends (often a `get -o yaml` edited and
    // applied back) is ignored, not refused.
    document.remove("status");
    if let Some(Value::Object(metadata)) = document.get_mut("metadata") {
        metadata.remove("generation");
    }
    let object = (def.validate)(body).map_err(|e| invalid(&e))?;
    let body_name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if body_name != name {
        return Err(invalid_field(
            "metadata.name",
            format!(
                "{body_name:?} does not match the name in the path ({name:?}); PUT the object to /v1/{}/{body_name}",
                def.kind.plural()
            ),
        ));
    }
    // The one kind with a rule about changes to what is stored (kept here rather than as a
    // Definition field, so the other kinds' definitions stay as they are).
    let mut on_create = Vec::new();
    if def.kind == Kind::ClusterUpdate {
        super::clusterupdates::refuse_spec_change(&state, &name, &object)?;
        on_create = super::clusterupdates::status_at_creation(&state);
    }
    let applied = state
        .store
        .apply_creating_with(def.kind, &object, dry_run, &on_create)?;
    if !dry_run && !applied.changes.is_empty() {
        tracing::info!(
            kind = %def.kind, name = %name, by = %who, created = applied.created,
            changes = applied.changes.len(), "object applied"
        );
    }
    Ok(Json(ApplyResponse {
        object: applied.object,
        created: applied.created,
        changes: applied.changes,
        dry_run,
    }))
}

async fn delete(
    def: &'static Definition,
    state: Arc<AppState>,
    caller: Caller,
    name: String,
) -> Result<Json<Deleted>> {
    let who = caller.require(def.write)?.uri();
    let deletion = match def.delete {
        Some(delete) => delete(&state, &name)?,
        None if state.store.delete(def.kind, &name)? => Deletion::Deleted,
        None => Deletion::NotFound,
    };
    let pending = match deletion {
        Deletion::NotFound => return Err(not_found(def.kind, &name)),
        Deletion::Deleted => None,
        Deletion::Pending(why) => Some(why),
    };
    tracing::info!(kind = %def.kind, name = %name, by = %who, pending = ?pending, "object deleted");
    Ok(Json(Deleted {
        kind: def.kind,
        name,
        pending,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_percent_decoded() {
        assert_eq!(
            query_params(Some("labelSelector=tier%3Dweb%2C%21spare&dryRun=server&x")),
            vec![
                ("labelSelector".to_string(), "tier=web,!spare".to_string()),
                ("dryRun".to_string(), "server".to_string()),
                ("x".to_string(), String::new()),
            ]
        );
        assert!(query_params(None).is_empty());
    }
}
