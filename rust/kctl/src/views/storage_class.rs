//! Storage classes: the `kctl get storage-class` table and the `kctl describe
//! storage-class` text.

use std::fmt::Write as _;

use kcore_api::cluster::{StorageClass, StorageClassDetail};
use serde::Serialize;

use crate::escape::escape as e;
use crate::output::Tabular;

/// Storage classes as printed by `get storage-class`.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct StorageClasses(pub Vec<StorageClass>);

impl Tabular for StorageClasses {
    fn headers(&self, _wide: bool) -> Vec<String> {
        ["NAME", "NODES", "READY"].map(String::from).to_vec()
    }

    fn rows(&self, _wide: bool) -> Vec<Vec<String>> {
        self.0
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.nodes.to_string(),
                    c.ready_nodes.to_string(),
                ]
            })
            .collect()
    }
}

/// The human-readable description of a storage class and its nodes in the operator
/// guide's shape (`Storage class: lvm`, `Nodes (2):`, one `- node-1` line per node, with its
/// status, DC and hostname after it), escaped like [`super::node::describe_node`].
pub fn describe_storage_class(detail: &StorageClassDetail) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Storage class: {}", e(&detail.class.name));
    let _ = writeln!(out, "Ready nodes: {}", detail.class.ready_nodes);
    let _ = writeln!(out, "Nodes ({}):", detail.class.nodes);
    for n in &detail.nodes {
        let _ = writeln!(
            out,
            "- {}  {}  {}  {}",
            e(&n.node_id),
            n.status,
            e(&n.report.dc_id),
            e(&n.report.hostname)
        );
    }
    out
}
