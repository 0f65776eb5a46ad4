//! Which nodes a rollout targets, in which waves, and how many may be down at once: what
//! `kctl update cluster plan` shows and the engine ([`super`]) follows.

use super::*;

/// The Ready, approved nodes the selector names, in node-id order (`nodeIds` keep their
/// own order).
pub fn select(state: &AppState, spec: &ClusterUpdateSpec) -> Vec<String> {
    candidates(state, spec)
        .into_iter()
        .filter(|n| n.target)
        .map(|n| n.node_id)
        .collect()
}

/// Every node the selector's ids, labels, datacenters and role name, in [`select`]'s
/// order, with whether it is Ready and approved (a target); what `select` and [`plan`]
/// share.
pub fn candidates(state: &AppState, spec: &ClusterUpdateSpec) -> Vec<PlanNode> {
    let s = &spec.selector;
    let timeout = state.config.heartbeat_timeout_seconds as i64;
    let now = now_unix();
    let nodes = state.store.nodes();
    let named = |id: &str| {
        let (_, record, beat) = nodes.iter().find(|(n, _, _)| n == id)?;
        let matches = s
            .labels
            .iter()
            .all(|(k, v)| record.report.labels.get(k) == Some(v))
            && (s.datacenters.is_empty() || s.datacenters.contains(&record.report.dc_id))
            && (!s.controllers_only || record.report.roles.contains(&NodeRole::Controller));
        let ready = beat.is_some_and(|t| now.saturating_sub(t) <= timeout);
        let approved = record.approval == Approval::Approved;
        matches.then(|| PlanNode {
            node_id: id.to_string(),
            ready,
            approved,
            agent_address: record.report.agent_address.clone(),
            in_rollout: None,
            target: ready && approved,
        })
    };
    if !s.node_ids.is_empty() {
        return s.node_ids.iter().filter_map(|id| named(id)).collect();
    }
    nodes.iter().filter_map(|(id, _, _)| named(id)).collect()
}

/// What applying `spec` as rollout `name` would do now, changing nothing: the selector's
/// nodes (targets or not, and any other rollout each is busy in), the waves in order and
/// the `maxUnavailable` cap (`POST /v1/clusterupdates/plan`).
pub fn plan(state: &AppState, name: &str, spec: &ClusterUpdateSpec) -> ClusterUpdatePlan {
    let busy = busy_nodes(state);
    let nodes: Vec<PlanNode> = candidates(state, spec)
        .into_iter()
        .map(|mut n| {
            n.in_rollout = busy.get(&n.node_id).filter(|r| *r != name).cloned();
            n
        })
        .collect();
    let targets: Vec<String> = nodes
        .iter()
        .filter(|n| n.target)
        .map(|n| n.node_id.clone())
        .collect();
    ClusterUpdatePlan {
        name: name.to_string(),
        waves: waves(spec, &targets),
        targets,
        max_unavailable: unavailable_cap(spec),
        nodes,
    }
}

/// The waves of a strategy over `targets`: each starts only when the one before ended
/// (canaries: ended healthy).
pub fn waves(spec: &ClusterUpdateSpec, targets: &[String]) -> Vec<Vec<String>> {
    let st = &spec.strategy;
    let (canaries, rest) = match st.strategy_type {
        StrategyType::Canary => targets.split_at((st.canary_count as usize).min(targets.len())),
        _ => targets.split_at(0),
    };
    let size = match st.strategy_type {
        StrategyType::OneAtATime => 1,
        _ => st.batch_size.max(1) as usize,
    };
    let mut out = Vec::new();
    if !canaries.is_empty() {
        out.push(canaries.to_vec());
    }
    out.extend(rest.chunks(size).map(<[String]>::to_vec));
    out
}

/// How many nodes may be between activation start and healthy at once.
pub fn unavailable_cap(spec: &ClusterUpdateSpec) -> usize {
    match spec.strategy.strategy_type {
        StrategyType::OneAtATime => 1,
        _ => spec.strategy.max_unavailable.max(1) as usize,
    }
}
