//! VMs as kctl prints them: the `get vms` table (NAME, PHASE, NODE, BACKEND, SIZE, DC, AGE;
//! `-o wide` adds VOLUME, CPUS, MEMORY, MESSAGE and LABELS, as every kind's wide table ends) and the `describe vm` text (placement,
//! volume, phase, message, events, then the spec as YAML). Read from the JSON the controller
//! sent, like every stored kind ([`super::resource`]); AGE counts from the VM's first event
//! (the scheduler writes one as soon as it sees the VM).

use std::fmt::Write as _;

use serde_json::Value;

use super::resource::{block, bytes, labels, text};
use super::{age, human_bytes};
use crate::escape::escape as e;

pub fn headers(wide: bool) -> Vec<String> {
    let mut h = vec!["NAME", "PHASE", "NODE", "BACKEND", "SIZE", "DC", "AGE"];
    if wide {
        h.extend(["VOLUME", "CPUS", "MEMORY", "MESSAGE", "LABELS"]);
    }
    h.into_iter().map(String::from).collect()
}

fn first_event(o: &Value) -> Option<&str> {
    o.pointer("/status/events/0/at").and_then(Value::as_str)
}

pub fn row(o: &Value, wide: bool) -> Vec<String> {
    let mut row = vec![
        text(o.pointer("/metadata/name")),
        text(o.pointer("/status/phase")),
        text(o.pointer("/status/node")),
        text(o.pointer("/spec/storageBackend")),
        bytes(o.pointer("/spec/storageSizeBytes")),
        text(o.pointer("/spec/dc")),
        first_event(o).map_or_else(|| "-".into(), age),
    ];
    if wide {
        row.extend([
            text(o.pointer("/status/volume/path")),
            text(o.pointer("/spec/cpus")),
            bytes(o.pointer("/spec/memoryBytes")),
            text(o.pointer("/status/message")),
            labels(o),
        ]);
    }
    row
}

/// The `describe vm` text.
pub fn describe(o: &Value) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<12} {}", e(&v));
    };
    line("Name:", text(o.pointer("/metadata/name")));
    line("Labels:", labels(o));
    line("Phase:", text(o.pointer("/status/phase")));
    line("Node:", text(o.pointer("/status/node")));
    line(
        "Backend:",
        format!(
            "{} in DC {}",
            text(o.pointer("/spec/storageBackend")),
            text(o.pointer("/spec/dc"))
        ),
    );
    line("Size:", bytes(o.pointer("/spec/storageSizeBytes")));
    let volume = match o.pointer("/status/volume") {
        Some(v) => format!(
            "{} ({})",
            text(v.get("path")),
            v.get("sizeBytes")
                .and_then(Value::as_u64)
                .map_or_else(|| "-".into(), human_bytes)
        ),
        None => "-".into(),
    };
    line("Volume:", volume);
    line(
        "Running:",
        match o.pointer("/spec/running") {
            Some(Value::Bool(false)) => "no (kctl vm start to start it)".into(),
            _ => "yes (wanted)".into(),
        },
    );
    line(
        "Generation:",
        format!(
            "{} (observed by the node: {})",
            text(o.pointer("/metadata/generation")),
            text(o.pointer("/status/observedGeneration"))
        ),
    );
    line("Message:", text(o.pointer("/status/message")));
    if let Some(at) = o.pointer("/status/deletionRequestedAt") {
        line("Deleting:", format!("asked at {}", text(Some(at))));
    }
    let _ = writeln!(out, "Events:");
    match o.pointer("/status/events").and_then(Value::as_array) {
        Some(events) if !events.is_empty() => {
            for ev in events {
                let _ = writeln!(
                    out,
                    "  {}  {:<17} {}",
                    e(&text(ev.get("at"))),
                    e(&text(ev.get("reason"))),
                    e(&text(ev.get("message")))
                );
            }
        }
        _ => {
            let _ = writeln!(out, "  <none>");
        }
    }
    block(&mut out, "Spec:", o.get("spec"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm() -> Value {
        json!({
            "kind": "VM",
            "metadata": {"name": "web-1", "generation": 2},
            "spec": {"storageBackend": "zfs", "storageSizeBytes": 10u64 << 30, "cpus": 2,
                     "memoryBytes": 1u64 << 30, "network": "default", "dc": "DC2"},
            "status": {"observedGeneration": 2, "phase": "Running", "node": "n1",
                       "volume": {"backend": "zfs", "path": "/dev/zvol/tank0/kcore-web-1",
                                  "sizeBytes": 10u64 << 30},
                       "events": [{"at": "2026-01-01T00:00:00Z", "reason": "Scheduled",
                                   "message": "placed on node n1"}]},
        })
    }

    #[test]
    fn the_table_and_the_description() {
        let wide = row(&vm(), true);
        assert_eq!(
            wide[..6],
            ["web-1", "Running", "n1", "zfs", "10.0 GiB", "DC2"].map(String::from)
        );
        assert!(wide[6].ends_with('d'), "age in days: {}", wide[6]);
        assert_eq!(wide[7], "/dev/zvol/tank0/kcore-web-1");
        assert_eq!(headers(false).len(), row(&vm(), false).len());
        assert_eq!(headers(true).len(), wide.len());
        let text = describe(&vm());
        for want in [
            "Node:        n1",
            "Volume:      /dev/zvol/tank0/kcore-web-1 (10.0 GiB)",
            "Phase:       Running",
            "Scheduled         placed on node n1",
        ] {
            assert!(text.contains(want), "{want}:\n{text}");
        }
    }
}
