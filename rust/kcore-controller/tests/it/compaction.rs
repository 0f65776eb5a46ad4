//! Compaction and snapshot catch-up between real controllers on 127.0.0.1 (issue 13):
//! the op table shrinks to what peers still need, a peer down past the compaction point
//! catches up from a snapshot and converges (merged tables compared), lag figures in
//! `GET /v1/replication/peers`, and the sub-CA key route's roles.

use serde_json::{Value, json};

use crate::support::*;

async fn bind() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn addr(l: &tokio::net::TcpListener) -> String {
    l.local_addr().unwrap().to_string()
}

/// `(resource, field, hlc, origin, value)` of every `fields` row but the `lastSeen`
/// refreshes (they keep moving while controllers run).
type Row = (String, String, String, String, Option<String>);

fn merged(path: &Path) -> Vec<Row> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT resource, field, hlc, origin, value FROM fields
             WHERE field != 'status.lastSeen' ORDER BY resource, field",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// A ClusterUpdate whose 50 labels all carry `round`: every apply is 50 operations.
fn update_with_labels(round: usize) -> Value {
    let labels: serde_json::Map<String, Value> = (0..50)
        .map(|i| (format!("l{i}"), json!(format!("r{round}"))))
        .collect();
    json!({
        "kind": "ClusterUpdate",
        "metadata": {"name": "bulk", "labels": labels},
        "spec": {
            "target": {"flake_ref": "github:kcorehypervisor/kcore",
                       "flake_rev": "0123456789abcdef0123456789abcdef01234567"},
            "selector": {"all_nodes": true},
            "strategy": {"strategy_type": "batch", "batch_size": 2, "max_unavailable": 2},
        },
    })
}

/// The peers list of a controller, and one peer of it by controller id.
async fn peer_list(admin: &Client) -> Value {
    admin.get_json("/v1/replication/peers").await.unwrap()
}

fn peer<'a>(list: &'a Value, id: &str) -> Option<&'a Value> {
    list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["controllerId"] == id)
}

fn compacting(mut config: ControllerConfig) -> ControllerConfig {
    config.compaction.interval_seconds = 1;
    config.compaction.retention_seconds = 6;
    config.compaction.tombstone_lifetime_seconds = 1;
    // The catch-up below then fetches the snapshot in several pages.
    config.compaction.snapshot_page_rows = 16;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_shrinks_the_op_table_and_a_controller_down_past_it_catches_up_by_snapshot() {
    let cl = Cluster::new();
    let trust = cl.root.cert_pem().to_string();
    let (la, lb) = (bind().await, bind().await);
    let a_addr = addr(&la);
    let a = Running::start_on(la, compacting(cl.peer_config("ctl-a", false, vec![])));
    let b = Running::start_on(
        lb,
        compacting(cl.peer_config("ctl-b", false, vec![a_addr.clone()])),
    );
    let (admin_a, admin_b) = (
        client(&a.url, &trust, &cl.admin()),
        client(&b.url, &trust, &cl.admin()),
    );
    eventually("ctl-a to pull from ctl-b, healthy", || async {
        peer(&peer_list(&admin_a).await, "ctl-b").is_some_and(|p| p["state"] == "Healthy")
    })
    .await;

    // 2,000 operations on a (40 applies of 50 labels each).
    for round in 0..40 {
        admin_a
            .put_json::<_, Value>("/v1/clusterupdates/bulk", &update_with_labels(round))
            .await
            .unwrap();
    }
    let (db_a, db_b) = (cl.path("ctl-a.sqlite"), cl.path("ctl-b.sqlite"));
    eventually("ctl-b to converge with ctl-a", || async {
        merged(&db_a) == merged(&db_b)
    })
    .await;
    // Compaction keeps only what ctl-b does not hold yet: the table shrinks from over
    // 2,000 rows to the handful written since b last pulled.
    eventually(
        "ctl-a's op table to shrink to what ctl-b still needs",
        || async { peer_list(&admin_a).await["operations"].as_u64().unwrap() < 50 },
    )
    .await;
    assert_eq!(merged(&db_a), merged(&db_b));

    // b goes down; a keeps writing (1,000 operations and a delete) and compacts past b:
    // after the retention (6 s) what b lacks goes too.
    b.stop().await;
    for round in 40..60 {
        admin_a
            .put_json::<_, Value>("/v1/clusterupdates/bulk", &update_with_labels(round))
            .await
            .unwrap();
    }
    admin_a
        .put_json::<_, Value>("/v1/clusterupdates/gone", &{
            let mut u = update_with_labels(0);
            u["metadata"]["name"] = json!("gone");
            u
        })
        .await
        .unwrap();
    let _: Value = admin_a.delete("/v1/clusterupdates/gone").await.unwrap();
    // The lag figures name what b misses while it is away.
    eventually("ctl-a to report ctl-b unreachable and lagging", || async {
        let list = peer_list(&admin_a).await;
        peer(&list, "ctl-b").is_some_and(|p| {
            p["state"] == "Unreachable"
                && p["lagOperations"].as_u64().unwrap_or(0) >= 1000
                && p["lastError"].is_string()
        })
    })
    .await;
    eventually("ctl-a to compact what ctl-b never pulled", || async {
        peer_list(&admin_a).await["operations"].as_u64().unwrap() < 50
    })
    .await;

    // b comes back (same database, new port: its record moves there); its cursor is
    // older than what a compacted, so it installs a snapshot, then converges.
    let lb = bind().await;
    let b = Running::start_on(
        lb,
        compacting(cl.peer_config("ctl-b", false, vec![a_addr.clone()])),
    );
    let admin_b2 = client(&b.url, &trust, &cl.admin());
    eventually("ctl-b to catch up by snapshot and converge", || async {
        merged(&db_a) == merged(&db_b)
    })
    .await;
    let list = peer_list(&admin_b2).await;
    let from_a = peer(&list, "ctl-a").unwrap();
    assert!(from_a["snapshots"].as_u64().unwrap() >= 1, "{list}");
    // The delete made while b was away stays a delete; the last labels are there.
    assert!(
        admin_b2
            .get_json::<Value>("/v1/clusterupdates/gone")
            .await
            .is_err()
    );
    let bulk: Value = admin_b2.get_json("/v1/clusterupdates/bulk").await.unwrap();
    assert_eq!(bulk["metadata"]["labels"]["l49"], "r59", "{bulk}");
    drop(admin_b);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_sub_ca_key_is_served_to_controllers_only() {
    let cl = Cluster::new();
    let a = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem().to_string();
    let got: kcore_api::controller::SubCaKey = client(&a.url, &trust, &cl.controller_peer())
        .get_json("/v1/pki/sub-ca/key")
        .await
        .unwrap();
    assert_eq!(got.key_pem, cl.sub.key_pem());
    assert_eq!(got.certificate_pem, cl.sub.cert_pem());
    for who in [cl.admin(), cl.node("n1")] {
        let err = client(&a.url, &trust, &who)
            .get_json::<Value>("/v1/pki/sub-ca/key")
            .await
            .unwrap_err();
        assert_eq!(code(&err), "FORBIDDEN_ROLE", "{err}");
    }
    a.stop().await;
}

#[tokio::test]
async fn a_refused_snapshot_is_asked_for_once_per_pull_and_the_peer_reported() {
    use axum::routing::get;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let cl = Cluster::new();
    let (vectors, snapshots) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // A peer that has compacted everything and whose snapshot is stamped in 2106.
    let app = axum::Router::new()
        .route(
            "/v1/replication/vector",
            get({
                let vectors = vectors.clone();
                move || {
                    vectors.fetch_add(1, Ordering::SeqCst);
                    async {
                        axum::Json(json!({"controllerId": "ctl1",
                            "origins": {"ctl1": "0000000000000001-1"}}))
                    }
                }
            }),
        )
        .route(
            "/v1/replication/ops",
            get(|| async { axum::Json(json!({"ops": [], "more": false, "snapshotNeeded": true})) }),
        )
        .route(
            "/v1/replication/snapshot",
            get({
                let snapshots = snapshots.clone();
                move || {
                    snapshots.fetch_add(1, Ordering::SeqCst);
                    async {
                        axum::Json(json!({"controllerId": "ctl1",
                            "vector": {"ctl1": FAR_HLC},
                            "fields": [far_op("node/evil", "approval", "\"Approved\"")]}))
                    }
                }
            }),
        );
    let (fake, stop_fake) = start_fake_peer_with(&cl, app).await;
    let ctl = Running::start(cl.peer_config("ctl-b", false, vec![fake])).await;
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    // The pull ends (it does not ask for the snapshot again and again) and says why.
    eventually("the peer to be reported ClockAhead", || async {
        let list = peer_list(&admin).await;
        list["peers"][0]["state"] == "ClockAhead"
    })
    .await;
    let list = peer_list(&admin).await;
    assert_eq!(list["peers"][0]["snapshots"], 0, "{list}");
    assert!(
        snapshots.load(Ordering::SeqCst) <= vectors.load(Ordering::SeqCst),
        "{} snapshots for {} pulls",
        snapshots.load(Ordering::SeqCst),
        vectors.load(Ordering::SeqCst)
    );
    assert!(admin.get_json::<Value>("/v1/nodes/evil").await.is_err());
    let _ = stop_fake.send(());
    ctl.stop().await;
}
