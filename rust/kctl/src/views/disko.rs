//! disko as kctl prints it: the report of `kctl disko validate` (a valid fragment's disks,
//! or the findings), the offline plan of `kctl disko plan` (one row per action), and the
//! plan a node's agent answers for `kctl node apply-disko` (every target with its
//! canonical identity, its actions and refusals, then a summary row with the hash).

use kcore_api::inventory::DiskoPlanResponse;
use kcore_disko::eval::Finding;
use kcore_disko::plan::Plan;
use serde::Serialize;

use super::human_bytes;
use crate::output::Tabular;

/// What `validate` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The file validated.
    pub file: String,
    /// Valid at every level that ran.
    pub valid: bool,
    /// The highest level that ran successfully (0 if level 1 failed).
    pub level: u8,
    /// The disks of the fragment (valid fragments).
    pub disks: Vec<DiskRow>,
    /// What is wrong (invalid fragments).
    pub findings: Vec<Finding>,
}

/// One disk of a valid fragment.
#[derive(Debug, Serialize)]
pub struct DiskRow {
    /// Attribute name.
    pub name: String,
    /// Device path as written.
    pub device: String,
    /// What it holds.
    pub content: String,
}

impl Tabular for Report {
    fn headers(&self, _wide: bool) -> Vec<String> {
        if self.valid {
            vec![
                "DISK".into(),
                "DEVICE".into(),
                "CONTENT".into(),
                "VALID".into(),
            ]
        } else {
            vec!["LEVEL".into(), "WHERE".into(), "PROBLEM".into()]
        }
    }

    fn rows(&self, _wide: bool) -> Vec<Vec<String>> {
        if self.valid {
            self.disks
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.device.clone(),
                        d.content.clone(),
                        format!("levels 1-{}", self.level),
                    ]
                })
                .collect()
        } else {
            self.findings
                .iter()
                .map(|f| vec![f.level.to_string(), f.location.clone(), f.message.clone()])
                .collect()
        }
    }
}

/// The plan as a table: one row per action (and per refusal).
pub struct PlanView<'a>(pub &'a Plan);

impl serde::Serialize for PlanView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Tabular for PlanView<'_> {
    fn headers(&self, wide: bool) -> Vec<String> {
        let mut h: Vec<String> = [
            "TARGET", "DEVICE", "KNAME", "SERIAL", "SIZE", "ACTION", "CLASS", "REFUSED",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        if wide {
            h.push("BY-ID".into());
            h.push("DETAIL".into());
        }
        h
    }

    fn rows(&self, wide: bool) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        for t in &self.0.targets {
            let id = t.identity.as_ref();
            let refused = if t.refusals.is_empty() {
                "-".to_string()
            } else {
                t.refusals
                    .iter()
                    .map(|r| r.code.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            for a in &t.actions {
                let kind = a.kind.as_str().to_string();
                let class = a.class.as_str().to_string();
                let mut row = vec![
                    t.name.clone(),
                    t.device.clone(),
                    id.map_or("?".into(), |i| i.kname.clone()),
                    id.and_then(|i| i.serial.clone())
                        .unwrap_or_else(|| "-".into()),
                    id.map_or("-".into(), |i| human_bytes(i.size)),
                    kind,
                    class,
                    refused.clone(),
                ];
                if wide {
                    row.push(id.map_or("-".into(), |i| i.by_id.join(" ")));
                    row.push(a.detail.clone());
                }
                rows.push(row);
            }
        }
        rows
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct PlanOut(pub DiskoPlanResponse);

impl Tabular for PlanOut {
    fn headers(&self, _wide: bool) -> Vec<String> {
        ["TARGET", "DEVICE", "RESOLVES TO", "ACTIONS", "REFUSED"]
            .map(String::from)
            .to_vec()
    }

    fn rows(&self, _wide: bool) -> Vec<Vec<String>> {
        let plan = &self.0;
        let mut rows = Vec::new();
        for t in &plan.plan.targets {
            let identity = t.identity.as_ref().map_or_else(
                || "(not found)".to_string(),
                |i| {
                    format!(
                        "{} serial {} {}{}",
                        i.path,
                        i.serial.as_deref().unwrap_or("-"),
                        human_bytes(i.size),
                        i.by_id.first().map(|b| format!(" {b}")).unwrap_or_default()
                    )
                },
            );
            let actions: Vec<String> = t
                .actions
                .iter()
                .map(|a| format!("{} ({}): {}", a.kind, a.class, a.detail))
                .collect();
            let refused: Vec<String> = t
                .refusals
                .iter()
                .map(|r| format!("{}: {}", r.code, r.message))
                .collect();
            rows.push(vec![
                t.name.clone(),
                t.device.clone(),
                identity,
                actions.join("; "),
                if refused.is_empty() {
                    "-".into()
                } else {
                    refused.join("; ")
                },
            ]);
        }
        let verdict = match &plan.refusal {
            None => "apply allowed".to_string(),
            Some(r) => format!("apply refused: {} ({})", r.message, r.code),
        };
        rows.push(vec![
            "(summary)".into(),
            format!("mode {}", plan.management_mode),
            format!("validated: {}", plan.validated.join(", ")),
            format!("plan {}", plan.plan_hash),
            verdict,
        ]);
        rows
    }
}
