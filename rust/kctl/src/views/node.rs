//! Nodes: the `kctl get nodes` table and the `kctl describe node` text.

use std::fmt::Write as _;

use kcore_api::cluster::Node;
use serde::Serialize;

use super::{age, date, size};
use crate::escape::escape as e;
use crate::output::Tabular;

/// Nodes as printed by `get nodes`.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Nodes(pub Vec<Node>);

impl Tabular for Nodes {
    fn headers(&self, wide: bool) -> Vec<String> {
        let mut h = vec![
            "NAME",
            "STATUS",
            "DC",
            "HOSTNAME",
            "STORAGE",
            "ROLES",
            "CERT-EXPIRES",
        ];
        if wide {
            h.extend(["LAST-HEARTBEAT", "AGE", "DISKS", "NICS", "LABELS"]);
        }
        h.into_iter().map(String::from).collect()
    }

    fn rows(&self, wide: bool) -> Vec<Vec<String>> {
        self.0
            .iter()
            .map(|n| {
                let roles: Vec<String> = n
                    .report
                    .roles
                    .iter()
                    .map(|r| {
                        serde_json::to_value(r)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default()
                    })
                    .collect();
                let mut row = vec![
                    n.node_id.clone(),
                    // kubectl's spelling for a cordoned node.
                    if n.cordons.is_empty() {
                        n.status.to_string()
                    } else {
                        format!("{},SchedulingDisabled", n.status)
                    },
                    n.report.dc_id.clone(),
                    n.report.hostname.clone(),
                    n.report.storage.class_name().to_string(),
                    if roles.is_empty() {
                        "<none>".into()
                    } else {
                        roles.join(",")
                    },
                    {
                        let expires = n
                            .certificate
                            .as_ref()
                            .map(|c| date(&c.not_after))
                            .unwrap_or_else(|| "<unknown>".into());
                        // The node says its renewals fail: `describe node` says why.
                        if n.report.certificate_renewal_problem.is_some() {
                            format!("{expires} (renewal failing)")
                        } else {
                            expires
                        }
                    },
                ];
                if wide {
                    let labels: Vec<String> = n
                        .report
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    row.extend([
                        n.last_heartbeat
                            .as_deref()
                            .map(age)
                            .unwrap_or_else(|| "<never>".into()),
                        n.registered_at.as_deref().map(age).unwrap_or_default(),
                        n.report.disks.len().to_string(),
                        n.report.nics.len().to_string(),
                        if labels.is_empty() {
                            "<none>".into()
                        } else {
                            labels.join(",")
                        },
                    ]);
                }
                row
            })
            .collect()
    }
}

/// The human-readable description of a node. Every value that came from the node or the
/// controller is escaped ([`crate::escape`]): a newline in a label cannot start a fake line.
pub fn describe_node(n: &Node) -> String {
    let mut out = String::new();
    let r = &n.report;
    let _ = writeln!(out, "Name:            {}", e(&n.node_id));
    let _ = writeln!(
        out,
        "Status:          {} (approval: {})",
        n.status,
        n.approval.as_str()
    );
    if n.cordons.is_empty() {
        let _ = writeln!(out, "Cordoned:        no");
    } else {
        let _ = writeln!(out, "Cordoned:        yes (no new VMs)");
        for (holder, c) in [
            ("operator", &n.cordons.operator),
            ("rollout", &n.cordons.rollout),
        ] {
            if let Some(c) = c {
                let _ = writeln!(
                    out,
                    "  {holder}: by {} at {}{}",
                    e(&c.by),
                    e(&c.at),
                    if c.reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", e(&c.reason))
                    }
                );
            }
        }
    }
    let _ = writeln!(out, "Hostname:        {}", e(&r.hostname));
    let _ = writeln!(out, "DC:              {}", e(&r.dc_id));
    let roles: Vec<String> = r
        .roles
        .iter()
        .map(|x| format!("{x:?}").to_lowercase())
        .collect();
    let _ = writeln!(
        out,
        "Roles:           {}",
        if roles.is_empty() {
            "<none>".into()
        } else {
            roles.join(", ")
        }
    );
    let labels: Vec<String> = r
        .labels
        .iter()
        .map(|(k, v)| format!("{}={}", e(k), e(v)))
        .collect();
    let _ = writeln!(
        out,
        "Labels:          {}",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join(", ")
        }
    );
    if let Some(addr) = &r.agent_address {
        // What the node says about itself; nothing checked it. An operator who passes it
        // to `kctl --node` still gets the agent's certificate checked, but should know.
        let _ = writeln!(
            out,
            "Agent address:   {} (reported by the node, not verified)",
            e(addr)
        );
    }
    let _ = writeln!(
        out,
        "Registered:      {}",
        e(n.registered_at.as_deref().unwrap_or("<unknown>"))
    );
    let _ = writeln!(
        out,
        "Last heartbeat:  {}",
        n.last_heartbeat
            .as_deref()
            .map(|t| format!("{} ({} ago)", e(t), age(t)))
            .unwrap_or_else(|| "<never>".into())
    );
    if let Some(system) = &r.system {
        let _ = writeln!(out, "System:");
        if let Some(g) = &system.current {
            let _ = writeln!(
                out,
                "  Generation:    {} ({}, made {})",
                g.number,
                e(&g.store_path),
                e(&g.created)
            );
        }
        if let Some(booted) = &system.booted {
            let _ = writeln!(out, "  Booted:        {}", e(booted));
        }
    }
    let _ = writeln!(out, "Storage:");
    let _ = writeln!(out, "  Backend:       {}", r.storage.class_name());
    if let Some(vg) = &r.storage.volume_group {
        let _ = writeln!(
            out,
            "  Volume group:  {} (size {}, free {}, LV prefix {:?})",
            e(&vg.name),
            size(vg.size_bytes),
            size(vg.free_bytes),
            vg.lv_prefix
        );
    }
    if let Some(pool) = &r.storage.pool {
        let _ = writeln!(
            out,
            "  Pool:          {} (size {}, free {}, health {}, dataset prefix {:?})",
            e(&pool.name),
            size(pool.size_bytes),
            size(pool.free_bytes),
            e(pool.health.as_deref().unwrap_or("?")),
            pool.dataset_prefix
        );
    }
    if r.storage.mounts.is_empty() {
        let _ = writeln!(out, "  Mounts:        <none>");
    } else {
        let _ = writeln!(out, "  Mounts:");
        for m in &r.storage.mounts {
            let _ = writeln!(
                out,
                "    {} (size {}, free {})",
                e(&m.path),
                size(m.size_bytes),
                size(m.free_bytes)
            );
        }
    }
    let _ = writeln!(out, "Certificate:");
    match &n.certificate {
        Some(c) => {
            let _ = writeln!(out, "  Serial:        {}", e(&c.serial));
            let _ = writeln!(out, "  Issuer:        {}", e(&c.issuer));
            let _ = writeln!(out, "  Not before:    {}", e(&c.not_before));
            let _ = writeln!(out, "  Not after:     {}", e(&c.not_after));
        }
        None => {
            let _ = writeln!(out, "  <none presented to this controller yet>");
        }
    }
    if let Some(problem) = &r.certificate_renewal_problem {
        // Reported by the node: it keeps its current certificate and retries later.
        let _ = writeln!(out, "  Renewal:       FAILING: {problem}");
    }
    let _ = writeln!(out, "Disks:           {}", r.disks.len());
    for d in &r.disks {
        let name = d
            .get("path")
            .or_else(|| d.get("name"))
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        let bytes = d.get("sizeBytes").and_then(|v| v.as_u64());
        let _ = writeln!(out, "  {} ({})", e(name), size(bytes));
    }
    let _ = writeln!(out, "NICs:            {}", r.nics.len());
    for nic in &r.nics {
        let name = nic.get("name").and_then(|v| v.as_str()).unwrap_or("?");
        let state = nic.get("state").and_then(|v| v.as_str()).unwrap_or("?");
        let _ = writeln!(out, "  {} ({})", e(name), e(state));
    }
    out
}
