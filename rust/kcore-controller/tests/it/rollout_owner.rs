//! Who owns a rollout (issue 12, docs/rollouts.md "Ownership"): the controller the
//! `ClusterUpdate` was applied to, from the apply itself, even when a peer's engine sees
//! the replicated rollout before the applying controller's engine ran once. Two real
//! controllers on 127.0.0.1 with real mutual TLS, replicating over their pull routes.

use std::sync::Arc;

use kcore_api::clusterupdate::ClusterUpdatePhase;
use kcore_api::resource::Kind;
use kcore_controller::api::AppState;
use kcore_controller::rollout::{self, records};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::rollouts::rollout;
use crate::support::*;

/// A controller serving its whole API (the replication routes included) whose rollout
/// engine is not started, so the test decides when it first ticks. Everything else a
/// peer talks to is the real controller's.
async fn controller_without_its_engine(
    listener: tokio::net::TcpListener,
    config: kcore_controller::config::ControllerConfig,
) -> (Arc<AppState>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let tls = kcore_controller::server_tls(&config).unwrap();
    let cluster = config.cluster_name.clone();
    let state = kcore_controller::build_state(config).unwrap();
    let task = tokio::spawn(kcore_net::serve_with(
        listener,
        kcore_net::TlsSource::new(tls),
        kcore_controller::api::router(state.clone()),
        std::future::pending(),
        kcore_net::ServeOptions {
            cluster: Some(cluster),
            ..kcore_net::ServeOptions::default()
        },
    ));
    (state, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_applied_on_b_is_owned_by_b_even_when_a_peer_ticks_first() {
    let cl = Cluster::new();
    let trust = cl.root.cert_pem().to_string();
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let (la, lb) = (bind().await, bind().await);
    let addr = |l: &tokio::net::TcpListener| l.local_addr().unwrap().to_string();
    let (a_addr, b_addr) = (addr(&la), addr(&lb));
    let (a, a_state) =
        Running::start_on_keeping_state(la, cl.peer_config("ctl-a", false, vec![b_addr.clone()]));
    let (b_state, b_task) =
        controller_without_its_engine(lb, cl.peer_config("ctl-b", false, vec![a_addr])).await;

    // Applied on ctl-b; manual approval, so no node is needed for the rollout to move.
    let b_admin = client(&format!("https://{b_addr}"), &trust, &cl.admin());
    let _: Value = b_admin
        .put_json(
            "/v1/clusterupdates/r1",
            &rollout("r1", json!({"strategyType": "one-at-a-time"}), "manual", 0),
        )
        .await
        .unwrap();

    // ctl-a replicates it and its engine ticks on it (woken by the replicated write, and
    // once more here), while ctl-b's engine has not run at all.
    eventually("ctl-a replicates r1", || async {
        a_state.store.get(Kind::ClusterUpdate, "r1").is_some()
    })
    .await;
    rollout::tick(&a_state).unwrap();
    let owner = records::owner(&a_state.store, "r1");
    assert_eq!(
        owner.as_ref().map(|o| (o.controller_id.as_str(), o.epoch)),
        Some(("ctl-b", 1)),
        "ctl-a took the rollout applied on ctl-b: {owner:?}"
    );
    assert!(
        records::status(&a_state.store, "r1")
            .unwrap()
            .phase
            .is_none(),
        "ctl-a moved a rollout it does not own"
    );

    // ctl-b's engine starts: it is the owner it was made at the apply, and moves the
    // rollout on; ctl-a sees ctl-b's progress under epoch 1.
    let stop = CancellationToken::new();
    let engine = tokio::spawn(rollout::run(b_state.clone(), stop.clone()));
    eventually("ctl-a sees r1 awaiting approval", || async {
        records::status(&a_state.store, "r1").and_then(|s| s.phase)
            == Some(ClusterUpdatePhase::AwaitingApproval)
    })
    .await;
    for store in [&a_state.store, &b_state.store] {
        let owner = records::owner(store, "r1").unwrap();
        assert_eq!((owner.controller_id.as_str(), owner.epoch), ("ctl-b", 1));
    }
    stop.cancel();
    engine.await.unwrap();
    b_task.abort();
    a.stop().await;
}
