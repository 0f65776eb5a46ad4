//! Replication between controllers: relays, approvals merging, the clock bound.

use crate::support::*;

#[tokio::test]
async fn controllers_replicate_through_a_relay_and_merge_approvals() {
    let cl = Cluster::new();
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let (la, lb, lc) = (bind().await, bind().await, bind().await);
    let addr = |l: &tokio::net::TcpListener| l.local_addr().unwrap().to_string();
    // a <-> b <- c: c never reaches a, so what it learns from a was relayed by b. c does
    // discover a from its Controller record, but a advertises an address behind a
    // partitioned proxy (b reaches a through its seed, the real address).
    let (a_addr, b_addr) = (addr(&la), addr(&lb));
    let dead_end = crate::proxy::FaultProxy::start(&a_addr).await;
    dead_end.partition();
    let mut a_config = cl.peer_config("ctl-a", true, vec![b_addr.clone()]);
    a_config.advertise_address = Some(dead_end.addr.clone());
    let a = Running::start_on(la, a_config);
    let b = Running::start_on(lb, cl.peer_config("ctl-b", true, vec![a_addr]));
    let c = Running::start_on(lc, cl.peer_config("ctl-c", true, vec![b_addr]));
    let trust = cl.root.cert_pem().to_string();
    let admin_of = |r: &Running| client(&r.url, &trust, &cl.admin());

    let n1 = client(&a.url, &trust, &cl.node("n1"));
    register(&n1, "n1", report("hv1", "DC1", Some(StorageBackend::Zfs)))
        .await
        .unwrap();

    let admin_c = admin_of(&c);
    eventually("n1 to reach ctl-c through ctl-b", || async {
        admin_c.get_json::<Node>("/v1/nodes/n1").await.is_ok()
    })
    .await;
    // c discovered a and tries it, but only at the dead end.
    eventually(
        "ctl-c to find ctl-a's advertised address unreachable",
        || async {
            let list: serde_json::Value = admin_c.get_json("/v1/replication/peers").await.unwrap();
            list["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["peer"] == dead_end.addr.as_str() && p["state"] == "Unreachable")
        },
    )
    .await;
    let on_c: Node = admin_c.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(on_c.approval, Approval::Pending);
    assert_eq!(on_c.report.storage.backend, Some(StorageBackend::Zfs));

    // Approve on b; a (which pulls from b) and c both converge.
    post::<Node>(&admin_of(&b), "/v1/nodes/n1/approve")
        .await
        .unwrap();
    let admin_a = admin_of(&a);
    eventually("the approval to reach ctl-a and ctl-c", || async {
        let on_a = admin_a.get_json::<Node>("/v1/nodes/n1").await;
        let on_c = admin_c.get_json::<Node>("/v1/nodes/n1").await;
        matches!((on_a, on_c), (Ok(x), Ok(y)) if x.approval == Approval::Approved && y.approval == Approval::Approved)
    })
    .await;
    // The node heartbeats on a, where the approval arrived by replication, and the
    // heartbeat (soft state, not an operation) reaches c: Ready there too.
    assert_eq!(beat(&n1, "n1").await.unwrap().status, NodeStatus::Ready);
    eventually("c to see n1 Ready", || async {
        matches!(admin_c.get_json::<Node>("/v1/nodes/n1").await, Ok(n) if n.status == NodeStatus::Ready)
    })
    .await;
    // Heartbeats never become operations.
    let ops_before: serde_json::Value = client(&c.url, &trust, &cl.controller_peer())
        .get_json("/v1/replication/vector")
        .await
        .unwrap();
    beat(&n1, "n1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ops_after: serde_json::Value = client(&c.url, &trust, &cl.controller_peer())
        .get_json("/v1/replication/vector")
        .await
        .unwrap();
    assert_eq!(ops_before["origins"], ops_after["origins"]);

    // Replication routes are for controllers only.
    let err = admin_a
        .get_json::<serde_json::Value>("/v1/replication/vector")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "FORBIDDEN_ROLE");
    for r in [a, b, c] {
        r.stop().await;
    }
}

#[tokio::test]
async fn far_future_operations_and_heartbeats_from_a_peer_are_refused_and_reported() {
    let cl = Cluster::new();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (fake, stop_fake) = start_fake_peer(&cl, hits.clone()).await;
    let ctl = Running::start(cl.peer_config("ctl-b", true, vec![fake.clone()])).await;
    let trust = cl.root.cert_pem().to_string();
    let admin = client(&ctl.url, &trust, &cl.admin());
    let n1 = client(&ctl.url, &trust, &cl.node("n1"));
    register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();

    eventually("the fake peer to be reported as ClockAhead", || async {
        let list: serde_json::Value = admin.get_json("/v1/replication/peers").await.unwrap();
        list["peers"][0]["state"] == "ClockAhead"
    })
    .await;
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let list: serde_json::Value = admin.get_json("/v1/replication/peers").await.unwrap();
    let peer = &list["peers"][0];
    assert_eq!(peer["peer"], fake.as_str());
    assert_eq!(peer["healthy"], false);
    assert_eq!(peer["controllerId"], "ctl1");
    assert_eq!(peer["refusedOperations"], 5);
    assert_eq!(peer["refusedHeartbeats"], 2);
    // 2106 is about 80 years ahead of any clock this test runs on.
    assert!(
        peer["clockAheadSeconds"].as_u64().unwrap() > 70 * 365 * 24 * 3600,
        "{peer}"
    );
    let reason = peer["reason"].as_str().unwrap();
    assert!(reason.contains("maxClockSkewSeconds"), "{reason}");
    assert_eq!(list["maxClockSkewSeconds"], 60);

    // Nothing was merged: no injected node, n1 still Pending and not made Ready by 2100.
    let nodes: NodeList = admin.get_json("/v1/nodes").await.unwrap();
    let ids: Vec<&str> = nodes.items.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, vec!["n1"]);
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(node.approval, Approval::Pending);
    assert_ne!(
        node.last_heartbeat.as_deref().map(|t| &t[..4]),
        Some("2100")
    );
    let vector: serde_json::Value = client(&ctl.url, &trust, &cl.controller_peer())
        .get_json("/v1/replication/vector")
        .await
        .unwrap();
    assert!(vector["origins"].get("ctl1").is_none(), "{vector}");
    // The operator's reject takes effect.
    let rejected: Node = post(&admin, "/v1/nodes/n1/reject").await.unwrap();
    assert_eq!(rejected.status, NodeStatus::Rejected);
    // A node certificate may not read peer status.
    let err = n1
        .get_json::<serde_json::Value>("/v1/replication/peers")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "FORBIDDEN_ROLE");
    let _ = stop_fake.send(());
    ctl.stop().await;
}

#[tokio::test]
async fn a_reject_that_loses_to_a_stored_far_future_value_is_reported_then_refused_at_restart() {
    let cl = Cluster::new();
    let config = cl.config(false);
    let trust = cl.root.cert_pem().to_string();
    {
        // A controller holding a far-future operation stored before the bound existed
        // (merged raw, past the clock check, exactly as the old merge_remote kept it).
        let state = kcore_controller::build_state(config.clone()).unwrap();
        state
            .store
            .put_node("n1", &report("hv1", "DC1", None), Approval::Approved, "t")
            .unwrap();
        state
            .store
            .merge(&[kcore_controller::store::Op {
                hlc: FAR_HLC.into(),
                origin: "ctl9".into(),
                resource: "node/n1".into(),
                field: "approval".into(),
                value: Some("\"Approved\"".into()),
            }])
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(kcore_net::serve_with(
            listener,
            kcore_net::TlsSource::new(kcore_controller::server_tls(&config).unwrap()),
            kcore_controller::api::router(state.clone()),
            async move {
                let _ = rx.await;
            },
            kcore_net::ServeOptions::default(),
        ));
        let admin = client(&url, &trust, &cl.admin());
        let err = post::<Node>(&admin, "/v1/nodes/n1/reject")
            .await
            .unwrap_err();
        let ClientError::Api { status, error, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(
            (status.as_u16(), error.code.as_str()),
            (409, "WRITE_SUPERSEDED")
        );
        assert!(
            error.message.contains("ctl9") && error.message.contains("2106"),
            "{}",
            error.message
        );
        assert_eq!(error.details["newerOrigin"], "ctl9");
        assert_eq!(error.details["newerValue"], "\"Approved\"");
        let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
        assert_eq!(node.approval, Approval::Approved);
        let _ = tx.send(());
        server.await.unwrap().unwrap();
        state.store.flush_heartbeats().unwrap();
    }
    // Restarted, the controller refuses the far-future operation at start and reports it;
    // the recorded reject is now the newest value.
    let ctl = Running::start(config).await;
    let admin = client(&ctl.url, &trust, &cl.admin());
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(node.approval, Approval::Rejected);
    let list: serde_json::Value = admin.get_json("/v1/replication/peers").await.unwrap();
    assert_eq!(list["refusedAtStart"][0]["origin"], "ctl9");
    assert_eq!(list["refusedAtStart"][0]["operations"], 1);
    let approved = post::<Node>(&admin, "/v1/nodes/n1/approve")
        .await
        .unwrap_err();
    assert_eq!(code(&approved), "NODE_REJECTED");
    ctl.stop().await;
}
