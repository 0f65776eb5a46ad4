//! Objects of the stored kinds (ClusterUpdate, VM, and any kind to come) as kctl prints
//! them: the `get` table, the `describe` text, and what `apply` did (one line per object,
//! and the field-level diff for a dry run or `-o wide`).
//!
//! Objects are read as JSON values, not typed: the table shows what the controller sent
//! even when it is newer than kctl. Each kind adds a few columns ([`kind_columns`]).

use std::fmt::Write as _;

use kcore_api::resource::{ApplyResponse, FieldChange, Kind};
use serde::Serialize;
use serde_json::Value;

use super::human_bytes;
use crate::escape::escape as e;
use crate::output::Tabular;

/// Objects of one kind as printed by `get <kind>`; JSON and YAML print the list of
/// objects as the controller sent them (an array, like `get nodes`).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Objects {
    #[serde(skip)]
    pub kind: Kind,
    pub items: Vec<Value>,
}

impl Objects {
    pub fn new(kind: Kind, items: Vec<Value>) -> Objects {
        Objects { kind, items }
    }
}

pub(super) fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

pub(super) fn bytes(v: Option<&Value>) -> String {
    v.and_then(Value::as_u64)
        .map_or_else(|| text(v), human_bytes)
}

/// The columns a kind adds after NAME: their headers, and the function giving an
/// object's cells.
pub type Columns = (&'static [&'static str], fn(&Value) -> Vec<String>);

/// [`Columns`] of `kind`.
pub fn kind_columns(kind: Kind) -> Columns {
    match kind {
        Kind::ClusterUpdate => (&["FLAKE-REV", "STRATEGY", "APPROVAL"], |o| {
            let rev = text(o.pointer("/spec/target/flakeRev"));
            vec![
                rev.chars().take(12).collect(),
                text(o.pointer("/spec/strategy/strategyType")),
                text(o.pointer("/spec/approvalPolicy")),
            ]
        }),
        Kind::Vm => (&["BACKEND", "SIZE", "CPUS", "MEMORY"], |o| {
            vec![
                text(o.pointer("/spec/storageBackend")),
                bytes(o.pointer("/spec/storageSizeBytes")),
                text(o.pointer("/spec/cpus")),
                bytes(o.pointer("/spec/memoryBytes")),
            ]
        }),
        Kind::Controller => (&["ADDRESS", "DC", "LAST-SEEN"], |o| {
            vec![
                text(o.pointer("/spec/address")),
                text(o.pointer("/spec/dcId")),
                text(o.pointer("/status/lastSeen")),
            ]
        }),
        Kind::Node => (&[], |_| Vec::new()),
    }
}

pub(super) fn labels(o: &Value) -> String {
    match o.pointer("/metadata/labels").and_then(Value::as_object) {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

impl Tabular for Objects {
    fn headers(&self, wide: bool) -> Vec<String> {
        if self.kind == Kind::Vm {
            return super::vm::headers(wide);
        }
        let (extra, _) = kind_columns(self.kind);
        let mut h = vec!["NAME"];
        h.extend_from_slice(extra);
        h.extend(["PHASE", "GENERATION", "OBSERVED"]);
        if wide {
            h.push("LABELS");
        }
        h.into_iter().map(String::from).collect()
    }

    fn rows(&self, wide: bool) -> Vec<Vec<String>> {
        if self.kind == Kind::Vm {
            return self.items.iter().map(|o| super::vm::row(o, wide)).collect();
        }
        let (_, cells) = kind_columns(self.kind);
        self.items
            .iter()
            .map(|o| {
                let mut row = vec![text(o.pointer("/metadata/name"))];
                row.extend(cells(o));
                row.extend([
                    text(o.pointer("/status/phase")),
                    text(o.pointer("/metadata/generation")),
                    text(o.pointer("/status/observedGeneration")),
                ]);
                if wide {
                    row.push(labels(o));
                }
                row
            })
            .collect()
    }
}

/// `value` as indented YAML lines under a heading, escaped.
pub(super) fn block(out: &mut String, heading: &str, value: Option<&Value>) {
    match value {
        None | Some(Value::Null) => {
            let _ = writeln!(out, "{heading:<12} <none>");
        }
        Some(value) => {
            let _ = writeln!(out, "{heading}");
            let yaml = serde_yaml_ng::to_string(value).unwrap_or_else(|_| value.to_string());
            for line in yaml.lines() {
                let _ = writeln!(out, "  {}", e(line));
            }
        }
    }
}

/// The `describe` text of one object: who it is, its spec and its status.
pub fn describe(o: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<12} {}", "Kind:", e(&text(o.get("kind"))));
    let _ = writeln!(
        out,
        "{:<12} {}",
        "Name:",
        e(&text(o.pointer("/metadata/name")))
    );
    let _ = writeln!(out, "{:<12} {}", "Labels:", e(&labels(o)));
    let _ = writeln!(
        out,
        "{:<12} {} (observed {})",
        "Generation:",
        text(o.pointer("/metadata/generation")),
        text(o.pointer("/status/observedGeneration"))
    );
    block(&mut out, "Spec:", o.get("spec"));
    block(&mut out, "Status:", o.get("status"));
    out
}

fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "(none)".into(), Value::to_string)
}

/// One line per change: `path: old -> new`, `(none)` where the field is absent.
pub fn changes(out: &mut String, changes: &[FieldChange]) {
    for c in changes {
        let _ = writeln!(
            out,
            "  {}: {} -> {}",
            e(&c.path),
            e(&shown(c.old.as_ref())),
            e(&shown(c.new.as_ref()))
        );
    }
}

/// What `apply` did with each object (`vm/web-1 created`, `... configured`,
/// `... unchanged`, with `(server dry run)` when nothing was written), each followed by
/// its changes when `diff` is asked for.
pub fn applied(results: &[(String, ApplyResponse)], diff: bool) -> String {
    let mut out = String::new();
    for (label, r) in results {
        let verb = if r.created {
            "created"
        } else if r.changes.is_empty() {
            "unchanged"
        } else {
            "configured"
        };
        let dry = if r.dry_run { " (server dry run)" } else { "" };
        let _ = writeln!(out, "{}{dry} {verb}", e(label));
        if diff {
            changes(&mut out, &r.changes);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm() -> Value {
        json!({
            "kind": "VM",
            "metadata": {"name": "web-1", "generation": 2, "labels": {"tier": "web"}},
            "spec": {"storageBackend": "lvm", "storageSizeBytes": 10u64 << 30, "cpus": 2,
                     "memoryBytes": 1u64 << 30, "network": "default"},
            "status": {"observedGeneration": 1, "phase": "Pending\u{1b}[2J"},
        })
    }

    #[test]
    fn the_table_has_the_kinds_columns_and_escapes_cells() {
        let objects = Objects::new(Kind::Vm, vec![vm()]);
        let table = crate::output::render(&objects, crate::output::OutputFormat::Wide).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].split_whitespace().collect::<Vec<_>>()
                == [
                    "NAME", "PHASE", "NODE", "BACKEND", "SIZE", "DC", "AGE", "VOLUME", "CPUS",
                    "MEMORY", "MESSAGE", "LABELS"
                ],
            "{table}"
        );
        assert!(
            lines[1].contains("web-1") && lines[1].contains("10.0 GiB"),
            "{table}"
        );
        assert!(
            lines[1].contains("Pending\\u{1b}[2J") && lines[1].ends_with("tier=web"),
            "{table}"
        );
        let json = crate::output::render(&objects, crate::output::OutputFormat::Json).unwrap();
        let back: Vec<Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![vm()]);
    }

    #[test]
    fn describe_and_apply_texts() {
        let text = describe(&vm());
        assert!(text.contains("Generation:  2 (observed 1)"), "{text}");
        assert!(text.contains("\n  storageBackend: lvm\n"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        let r = ApplyResponse {
            object: vm(),
            created: false,
            changes: vec![FieldChange {
                path: "spec.cpus".into(),
                old: Some(json!(1)),
                new: Some(json!(2)),
            }],
            dry_run: true,
        };
        assert_eq!(
            applied(&[("vm/web-1".into(), r)], true),
            "vm/web-1 (server dry run) configured\n  spec.cpus: 1 -> 2\n"
        );
    }
}
