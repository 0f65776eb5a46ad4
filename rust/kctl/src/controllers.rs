//! `kctl get controllers`: every `Controller` record joined with how the answering
//! controller sees each peer it pulls from (`GET /v1/replication/peers`: state, lag in
//! operations and seconds, last error), and `--require-healthy`, which exits 1 naming
//! every peer that is not `Healthy` or lags more than `--max-lag-seconds` (for scripts
//! and monitoring).

use kcore_api::controller::Controller;
use kcore_api::resource::ResourceList;
use kcore_controller::replication::{PeerList, PeerState, PeerStatus};
use serde::Serialize;

use crate::exit::Refused;
use crate::global::GlobalArgs;
use crate::output::{Tabular, print};
use crate::remote::Remote;
use crate::views::{age, or_dash};

/// The stable code of a `--require-healthy` refusal.
pub const PEER_UNHEALTHY: &str = "PEER_UNHEALTHY";

/// What `--require-healthy` holds peers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthBound {
    /// The most seconds a peer may lag behind the answering controller.
    pub max_lag_seconds: u64,
}

/// One row: a controller record and, when the answering controller pulls from it, its
/// peer status. As JSON/YAML: the `Controller` object as `get <kind>` prints every
/// object, plus `replication` (the peer status) and `answering`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerRow {
    #[serde(flatten)]
    pub controller: Controller,
    /// `None` for the answering controller itself, and for a record it does not pull
    /// from directly (reached through a seed under another address).
    #[serde(rename = "replication", skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerStatus>,
    /// True for the controller that answered.
    pub answering: bool,
}

/// `get controllers`: the rows and the peers of the answering controller. JSON/YAML is
/// the list of rows, like every `get <kind>` list.
#[derive(Debug)]
pub struct ControllerView {
    pub answered_by: String,
    pub controllers: Vec<ControllerRow>,
    /// Every peer the answering controller pulls from (a seed with no record included).
    pub peers: Vec<PeerStatus>,
}

impl Serialize for ControllerView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.controllers.serialize(serializer)
    }
}

impl Tabular for ControllerView {
    fn headers(&self, wide: bool) -> Vec<String> {
        let mut h = vec![
            "ID",
            "ADDRESS",
            "DC",
            "STATE",
            "LAG-OPS",
            "LAG-S",
            "LAST-SEEN",
        ];
        if wide {
            h.extend(["LAST-PULL", "SNAPSHOTS", "LAST-ERROR"]);
        }
        h.into_iter().map(String::from).collect()
    }

    fn rows(&self, wide: bool) -> Vec<Vec<String>> {
        self.controllers
            .iter()
            .map(|row| {
                let c = &row.controller;
                let peer = row.peer.as_ref();
                let state = if row.answering {
                    "Self".to_string()
                } else {
                    peer.map_or("-".into(), |p| format!("{:?}", p.state))
                };
                let number = |v: Option<u64>| v.map_or("-".into(), |n| n.to_string());
                let mut cells = vec![
                    c.metadata.name.clone(),
                    c.spec.address.clone(),
                    c.spec.dc_id.clone(),
                    state,
                    number(peer.and_then(|p| p.lag_operations)),
                    number(peer.and_then(|p| p.lag_seconds)),
                    c.status.as_ref().map_or("-".into(), |s| age(&s.last_seen)),
                ];
                if wide {
                    cells.push(or_dash(peer.and_then(|p| p.last_pull.as_deref())));
                    cells.push(peer.map_or("-".into(), |p| p.snapshots.to_string()));
                    cells.push(or_dash(peer.and_then(|p| p.last_error.as_deref())));
                }
                cells
            })
            .collect()
    }
}

/// Joins the records with the peer list: a peer matches a record by the controller id
/// its version vector gave, else by address.
pub fn join(records: Vec<Controller>, peers: &PeerList) -> ControllerView {
    let controllers = records
        .into_iter()
        .map(|controller| {
            let id = &controller.metadata.name;
            let peer = peers
                .peers
                .iter()
                .find(|p| p.controller_id.as_deref() == Some(id.as_str()))
                .or_else(|| {
                    peers
                        .peers
                        .iter()
                        .find(|p| p.peer == controller.spec.address)
                })
                .cloned();
            ControllerRow {
                answering: *id == peers.controller_id,
                controller,
                peer,
            }
        })
        .collect();
    ControllerView {
        answered_by: peers.controller_id.clone(),
        controllers,
        peers: peers.peers.clone(),
    }
}

/// Why a peer fails `--require-healthy`, or `None` when it passes.
pub fn unhealthy(peer: &PeerStatus, bound: HealthBound) -> Option<String> {
    let name = match &peer.controller_id {
        Some(id) => format!("{id} ({})", peer.peer),
        None => peer.peer.clone(),
    };
    if peer.state != PeerState::Healthy {
        return Some(format!(
            "{name} is {:?}{}",
            peer.state,
            peer.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
    }
    match peer.lag_seconds {
        Some(lag) if lag > bound.max_lag_seconds => Some(format!(
            "{name} lags {lag} s ({} operation(s)) behind, more than --max-lag-seconds {}",
            peer.lag_operations.unwrap_or(0),
            bound.max_lag_seconds
        )),
        _ => None,
    }
}

/// `kctl get controllers`: prints the view, then with `bound` refuses (exit 1) when any
/// peer of the answering controller is unhealthy, naming each.
pub async fn get(
    client: &Remote,
    global: &GlobalArgs,
    bound: Option<HealthBound>,
) -> anyhow::Result<()> {
    let list: ResourceList = client.get_json("/v1/controllers").await?;
    let records: Vec<Controller> = list
        .items
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()?;
    let peers: PeerList = client.get_json("/v1/replication/peers").await?;
    let view = join(records, &peers);
    print(&view, global.output)?;
    let Some(bound) = bound else { return Ok(()) };
    let bad: Vec<String> = view
        .peers
        .iter()
        .filter_map(|p| unhealthy(p, bound))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(Refused::from_wire(
        PEER_UNHEALTHY,
        format!(
            "controller {} has unhealthy peers: {}",
            view.answered_by,
            bad.join("; ")
        ),
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(state: PeerState, lag: Option<u64>) -> PeerStatus {
        let mut p: PeerStatus = serde_json::from_value(serde_json::json!({
            "peer": "127.0.0.1:9090", "controllerId": "ctl2", "state": "Unknown",
            "healthy": false
        }))
        .unwrap();
        p.state = state;
        p.healthy = state == PeerState::Healthy;
        p.lag_seconds = lag;
        p.lag_operations = lag.map(|l| l * 10);
        p
    }

    fn record(id: &str, address: &str) -> Controller {
        serde_json::from_value(serde_json::json!({
            "kind": "Controller",
            "metadata": {"name": id},
            "spec": {"address": address, "dcId": "DC1", "subCaSerial": "0a", "certificateSerial": "0b"},
            "status": {"firstSeen": "2026-12-01T00:00:00Z", "lastSeen": "2026-12-01T00:00:00Z"}
        }))
        .unwrap()
    }

    #[test]
    fn rows_join_records_with_the_peers_by_id_then_address() {
        let mut by_id = peer(PeerState::Healthy, Some(2));
        by_id.peer = "10.9.9.9:9090".into(); // a seed reached under another address
        let mut by_address = peer(PeerState::Unreachable, None);
        by_address.controller_id = None;
        by_address.peer = "10.0.0.3:9090".into();
        let list: PeerList = serde_json::from_value(serde_json::json!({
            "controllerId": "ctl1", "maxClockSkewSeconds": 60, "peers": []
        }))
        .unwrap();
        let list = PeerList {
            peers: vec![by_id, by_address],
            ..list
        };
        let view = join(
            vec![
                record("ctl1", "10.0.0.1:9090"),
                record("ctl2", "10.0.0.2:9090"),
                record("ctl3", "10.0.0.3:9090"),
            ],
            &list,
        );
        let rows = view.rows(false);
        assert_eq!(
            rows[0][..6],
            ["ctl1", "10.0.0.1:9090", "DC1", "Self", "-", "-"]
        );
        assert_eq!(
            rows[1][..6],
            ["ctl2", "10.0.0.2:9090", "DC1", "Healthy", "20", "2"]
        );
        assert_eq!(
            rows[2][..6],
            ["ctl3", "10.0.0.3:9090", "DC1", "Unreachable", "-", "-"]
        );
        assert_eq!(view.headers(true).len(), view.rows(true)[0].len());
    }

    #[test]
    fn require_healthy_names_a_peer_down_or_lagging_past_the_bound() {
        let bound = HealthBound {
            max_lag_seconds: 30,
        };
        assert_eq!(unhealthy(&peer(PeerState::Healthy, Some(30)), bound), None);
        assert_eq!(unhealthy(&peer(PeerState::Healthy, None), bound), None);
        let lagging = unhealthy(&peer(PeerState::Healthy, Some(31)), bound).unwrap();
        assert!(
            lagging.contains("ctl2 (127.0.0.1:9090) lags 31 s (310 operation(s))"),
            "{lagging}"
        );
        let down = unhealthy(&peer(PeerState::Unreachable, Some(0)), bound).unwrap();
        assert!(
            down.contains("ctl2 (127.0.0.1:9090) is Unreachable"),
            "{down}"
        );
    }
}
