//! The table of a disko plan (`kctl node apply-disko`): every target with its canonical
//! identity, its actions and refusals, then a summary row with the hash to apply.

use kcore_api::inventory::DiskoPlanResponse;
use serde::Serialize;

use super::human_bytes;
use crate::output::Tabular;

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
        match serde_json::from_value::<kcore_disko::Plan>(plan.plan.clone()) {
            Ok(p) => {
                for t in &p.targets {
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
                        .map(|a| {
                            format!(
                                "{} ({}): {}",
                                serde_json::to_value(a.kind)
                                    .ok()
                                    .and_then(|v| v.as_str().map(str::to_string))
                                    .unwrap_or_default(),
                                serde_json::to_value(a.class)
                                    .ok()
                                    .and_then(|v| v.as_str().map(str::to_string))
                                    .unwrap_or_default(),
                                a.detail
                            )
                        })
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
            }
            Err(_) => rows.push(vec![
                "(plan)".into(),
                "-".into(),
                "-".into(),
                plan.plan.to_string(),
                "-".into(),
            ]),
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
