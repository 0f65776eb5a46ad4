//! The assignment long poll's shared computation (`kcore_controller::assignment::Cache`):
//! every node's poll wakes at every store change, and the rollout steps they answer from
//! are computed once per store version, not once per woken poll.
//!
//! The rollout here is held by another controller (`ctl9`, under a lease an hour long), so
//! this controller's engine leaves it alone and the test alone decides when the store
//! changes: one write of the owner's epoch changes every node's token at once.

use kcore_api::clusterupdate::{ClusterUpdateSpec, RolloutOwner};
use kcore_api::resource::Kind;
use kcore_api::rollout::Assignment;
use kcore_controller::rollout::records::{self, StepRecord, UPDATE_SEQ};
use serde_json::json;

use crate::support::*;

const POLLS: usize = 20;

fn owner(epoch: u64) -> RolloutOwner {
    RolloutOwner {
        controller_id: "ctl9".into(),
        epoch,
        lease_until: time::OffsetDateTime::now_utc().unix_timestamp() + 3600,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_polls_woken_by_one_change_share_one_computation_and_all_see_it() {
    let cl = Cluster::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let config = cl.config(false);
    let tls = kcore_controller::server_tls(&config).unwrap();
    let state = kcore_controller::build_state(config).unwrap();

    // Before serving: a rollout owned by ctl9 with every node's update step assigned.
    let nodes: Vec<String> = (1..=POLLS).map(|i| format!("n{i:02}")).collect();
    let manifest = crate::rollouts::rollout(
        "shared",
        json!({"strategyType": "batch", "batchSize": POLLS, "maxUnavailable": POLLS}),
        "auto",
        0,
    );
    let object = kcore_api::resource::canonical::<ClusterUpdateSpec>(manifest).unwrap();
    state
        .store
        .apply(Kind::ClusterUpdate, &object, false)
        .unwrap();
    records::write_status(
        &state.store,
        "shared",
        &[("phase", json!("rolling_out")), ("owner", json!(owner(1)))],
    )
    .unwrap();
    for node in &nodes {
        let assigned = StepRecord {
            node: node.clone(),
            epoch: 1,
            seq: UPDATE_SEQ,
            what: records::ASSIGNED.into(),
            at: records::now_rfc3339(),
            by: "ctl9".into(),
            report: None,
        };
        records::write_once(&state.store, "shared", &assigned).unwrap();
    }

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kcore_controller::serve(
        listener,
        tls,
        state.clone(),
        async move {
            let _ = rx.await;
        },
    ));
    let trust = cl.root.cert_pem().to_string();
    let clients: Vec<(String, Client)> = nodes
        .iter()
        .map(|id| (id.clone(), client(&url, &trust, &cl.node(id))))
        .collect();
    for (id, c) in &clients {
        register(c, id, report(id, "DC1", None)).await.unwrap();
        let now: Assignment = c
            .get_json(&format!("/v1/nodes/{id}/assignment?wait=0"))
            .await
            .unwrap();
        assert_eq!(now.token, "shared:1:1", "{id} before the change");
    }

    // Every node long-polls with the token it knows; then one write changes them all.
    let version = || *state.store.watch().borrow();
    let (v0, c0) = (version(), state.assignments.computations());
    let polls: Vec<_> = clients
        .iter()
        .map(|(id, c)| {
            let (id, c) = (id.clone(), c.clone());
            tokio::spawn(async move {
                let a: Assignment = c
                    .get_json(&format!(
                        "/v1/nodes/{id}/assignment?wait=4&known=shared:1:1"
                    ))
                    .await
                    .unwrap();
                (id, a)
            })
        })
        .collect();
    // Time for the polls to be parked on the store's signal (a late one sees the change
    // on arrival, and shares the same computation all the same).
    tokio::time::sleep(Duration::from_millis(500)).await;
    records::write_status(&state.store, "shared", &[("owner", json!(owner(2)))]).unwrap();
    for poll in polls {
        let (id, a) = poll.await.unwrap();
        assert_eq!(a.token, "shared:2:1", "{id} saw the new epoch");
        let step = a.step.unwrap();
        assert_eq!((step.rollout.as_str(), step.epoch), ("shared", 2), "{id}");
    }
    let (v1, c1) = (version(), state.assignments.computations());
    // The owner write is one version; the controller's own background writes (heartbeat
    // flushes, its registration) may add a few. Each version is computed at most once,
    // however many of the polls woke for it; one computation per poll would be >= POLLS.
    let (versions, computations) = (v1 - v0, c1 - c0);
    assert!(
        versions < POLLS as u64 / 2,
        "too many store writes during the test to tell ({versions})"
    );
    assert!(
        (1..=versions).contains(&computations),
        "{computations} computations for {POLLS} woken polls over {versions} store version(s)"
    );

    let _ = tx.send(());
    server.await.unwrap().unwrap();
}
