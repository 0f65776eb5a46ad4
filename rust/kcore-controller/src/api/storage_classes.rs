//! Storage classes: derived from the nodes' storage reports, never stored.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kcore_api::ErrorCode;
use kcore_api::cluster::{
    Approval, Node, NodeStatus, StorageClass, StorageClassDetail, StorageClassList,
    storage_class_names,
};
use kcore_net::ApiFailure;
// kcore-net's `Path`: a segment that is not percent-encoded UTF-8 gets the JSON envelope.
use kcore_net::ApiPath as Path;
use kcore_pki::Role;

use super::nodes::node_view;
use super::{AppState, Caller, Result};

fn storage_classes(state: &AppState) -> Vec<(StorageClass, Vec<Node>)> {
    let nodes: Vec<Node> = state
        .store
        .nodes()
        .into_iter()
        .map(|(id, rec, beat)| node_view(state, id, rec, beat))
        // A pending or rejected node offers no storage to schedule on, so a class counts
        // (and describes) approved nodes only, as the operator guide says.
        .filter(|n| n.approval == Approval::Approved)
        .collect();
    storage_class_names()
        .into_iter()
        .map(|name| {
            let members: Vec<Node> = nodes
                .iter()
                .filter(|n| n.report.storage.class_name() == name)
                .cloned()
                .collect();
            let class = StorageClass {
                name: name.to_string(),
                nodes: members.len(),
                ready_nodes: members
                    .iter()
                    .filter(|n| n.status == NodeStatus::Ready)
                    .count(),
            };
            (class, members)
        })
        .collect()
}

pub(super) async fn list_storage_classes(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<StorageClassList>> {
    caller.require(&[Role::Admin, Role::Controller])?;
    Ok(Json(StorageClassList {
        items: storage_classes(&state)
            .into_iter()
            .map(|(c, _)| c)
            .collect(),
    }))
}

pub(super) async fn get_storage_class(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<StorageClassDetail>> {
    caller.require(&[Role::Admin, Role::Controller])?;
    storage_classes(&state)
        .into_iter()
        .find(|(c, _)| c.name == name)
        .map(|(class, nodes)| Json(StorageClassDetail { class, nodes }))
        .ok_or_else(|| {
            ApiFailure::with_status(
                StatusCode::NOT_FOUND,
                ErrorCode::NoSuchStorageClass,
                format!(
                    "no storage class {name:?}; the classes are {}",
                    storage_class_names().join(", ")
                ),
            )
        })
}
