//! `kctl update cluster plan -f FILE` (issue 12): what applying a `ClusterUpdate` would
//! do, changing nothing. The controller answers the selection and the waves with the
//! engine's own logic (`POST /v1/clusterupdates/{name}/plan`); then each target's agent
//! (its address from the node's report, mutual TLS with the context's admin certificate,
//! the agent proving that node id) evaluates the host at the pinned revision without
//! building it (`POST /v1/rollout/plan`): whether the attribute exists, the current and
//! target toplevels, whether a reboot is needed and why.
//!
//! Exit 1 when no node matches, or when a target cannot take the update (host missing,
//! evaluation failed, agent unreachable, busy in another rollout); 0 otherwise.

use std::fmt::Write as _;
use std::path::PathBuf;

use kcore_api::ErrorCode;
use kcore_api::clusterupdate::{ClusterUpdatePlan, ClusterUpdateSpec, PlanNode};
use kcore_api::resource::Kind;
use kcore_api::rollout::{HostPlan, PrepareRequest};
use serde::Serialize;

use crate::controller_client::connect;
use crate::escape::escape;
use crate::exit::Refused;
use crate::global::GlobalArgs;
use crate::output::print_object;
use crate::target::{ControllerTarget, NodeTarget};

/// The plan as printed with `-o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub name: String,
    pub waves: Vec<Vec<String>>,
    pub max_unavailable: usize,
    pub nodes: Vec<PlannedNode>,
}

/// One node the selector names: the controller's view, and for a target its agent's.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedNode {
    #[serde(flatten)]
    pub controller: PlanNode,
    /// The agent answered.
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<HostPlan>,
    /// Why this target cannot take the update now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

pub async fn run(
    files: &[PathBuf],
    global: &GlobalArgs,
    controllers: &ControllerTarget,
) -> anyhow::Result<()> {
    let mut manifests = Vec::new();
    for (source, text) in crate::documents::read_sources(files)? {
        for doc in crate::documents::parse(&source, &text)? {
            if doc.kind != Kind::ClusterUpdate {
                return Err(Refused::new(
                    ErrorCode::InvalidField,
                    format!(
                        "{}: kind {} is not planned; update cluster plan takes ClusterUpdate documents",
                        doc.origin(),
                        doc.kind
                    ),
                )
                .into());
            }
            manifests.push(doc);
        }
    }
    let (_, client) = connect(global, controllers)?;
    let mut refusals = Vec::new();
    for doc in manifests {
        let path = format!(
            "{}/plan",
            crate::kinds::object_path(Kind::ClusterUpdate, "<NAME>", &doc.name)?
        );
        let answer: ClusterUpdatePlan = client.post_json(&path, &doc.body).await?;
        let spec: ClusterUpdateSpec = serde_json::from_value(doc.body["spec"].clone())?;
        let plan = ask_nodes(global, answer, &spec).await;
        print_object(&plan, global.output, || text(&plan))?;
        if plan.waves.is_empty() {
            refusals.push(format!(
                "{}: no Ready, approved node matches spec.selector",
                plan.name
            ));
        }
        for n in plan.nodes.iter().filter(|n| !n.problems.is_empty()) {
            refusals.push(format!(
                "{} {}: {}",
                plan.name,
                n.controller.node_id,
                n.problems.join("; ")
            ));
        }
    }
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(Refused::new(ErrorCode::Forbidden, refusals.join("\n")).into())
    }
}

/// Each target's agent, one after the other (a plan is not on a hot path, and a node's
/// evaluation holds one of its evaluation slots).
async fn ask_nodes(global: &GlobalArgs, plan: ClusterUpdatePlan, spec: &ClusterUpdateSpec) -> Plan {
    let request = PrepareRequest {
        flake_ref: spec.target.flake_ref.clone(),
        flake_rev: spec.target.flake_rev.clone(),
        host: spec.target.host.clone(),
    };
    let mut nodes = Vec::new();
    for n in plan.nodes {
        let mut planned = PlannedNode {
            controller: n,
            reachable: false,
            node: None,
            problems: Vec::new(),
        };
        let c = &planned.controller;
        if !c.target {
            nodes.push(planned);
            continue;
        }
        if let Some(other) = &c.in_rollout {
            planned
                .problems
                .push(format!("busy in rollout {other:?} (it would wait)"));
        }
        match ask_node(global, c, &request).await {
            Ok(host) => {
                planned.reachable = true;
                if let Some(e) = &host.error {
                    planned.problems.push(e.clone());
                } else if !host.host_exists {
                    planned.problems.push(format!(
                        "the flake has no nixosConfigurations.{} at that revision (it has: {})",
                        host.host,
                        host.hosts.join(", ")
                    ));
                }
                planned.node = Some(host);
            }
            Err(e) => planned.problems.push(format!("agent unreachable: {e:#}")),
        }
        nodes.push(planned);
    }
    Plan {
        name: plan.name,
        waves: plan.waves,
        max_unavailable: plan.max_unavailable,
        nodes,
    }
}

async fn ask_node(
    global: &GlobalArgs,
    node: &PlanNode,
    request: &PrepareRequest,
) -> anyhow::Result<HostPlan> {
    let address = node
        .agent_address
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the node reports no agent address"))?;
    let target = NodeTarget {
        node: Some(address),
        node_id: Some(node.node_id.clone()),
        insecure: false,
        fingerprint: None,
    };
    let agent = crate::agent_client::connect(global, &target)?;
    agent.post_json("/v1/rollout/plan", request).await
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn text(plan: &Plan) -> String {
    let mut out = format!(
        "{}: {} target(s) in {} wave(s), at most {} unavailable at once\n",
        escape(&plan.name),
        plan.waves.iter().map(Vec::len).sum::<usize>(),
        plan.waves.len(),
        plan.max_unavailable
    );
    out.push_str("NODE\tTARGET\tREADY\tAPPROVED\tREACHABLE\tHOST\tCURRENT\tTARGET-SYSTEM\tREBOOT\tPROBLEMS\n");
    for n in &plan.nodes {
        let c = &n.controller;
        let host = n.node.as_ref();
        let reboot = host
            .and_then(|h| h.reboot_required)
            .map_or("-".to_string(), |r| {
                if r {
                    format!(
                        "yes ({})",
                        host.map(|h| h.reboot_reasons.join(", "))
                            .unwrap_or_default()
                    )
                } else if host.is_some_and(|h| h.up_to_date) {
                    "no (up to date)".into()
                } else {
                    "no".into()
                }
            });
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            escape(&c.node_id),
            yes(c.target),
            yes(c.ready),
            yes(c.approved),
            if c.target { yes(n.reachable) } else { "-" },
            host.map_or("-".to_string(), |h| escape(&h.host).into_owned()),
            escape(
                host.and_then(|h| h.current_system.as_deref())
                    .unwrap_or("-")
            ),
            escape(host.and_then(|h| h.target_system.as_deref()).unwrap_or("-")),
            reboot,
            escape(&n.problems.join("; ")),
        );
    }
    for (i, wave) in plan.waves.iter().enumerate() {
        let _ = writeln!(out, "wave {}: {}", i + 1, escape(&wave.join(" ")));
    }
    out
}
