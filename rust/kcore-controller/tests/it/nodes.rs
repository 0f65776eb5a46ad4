//! Nodes: registration, approval, rejection, storage classes, restarts, report limits.

use crate::support::*;

#[tokio::test]
async fn auto_approved_node_registers_and_is_ready() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let n1 = client(&ctl.url, cl.root.cert_pem(), &cl.node("n1"));
    let ack = register(&n1, "n1", report("hv1", "DC1", Some(StorageBackend::Lvm)))
        .await
        .unwrap();
    assert_eq!(ack.status, NodeStatus::Ready);
    assert_eq!(ack.controller_id, "ctl1");
    assert_eq!(beat(&n1, "n1").await.unwrap().status, NodeStatus::Ready);

    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    let list: NodeList = admin.get_json("/v1/nodes").await.unwrap();
    assert_eq!(list.items.len(), 1);
    let node = &list.items[0];
    assert_eq!(node.node_id, "n1");
    assert_eq!(node.report.hostname, "hv1");
    assert_eq!(node.approval, Approval::Approved);
    assert!(node.last_heartbeat.is_some());
    ctl.stop().await;
}

#[tokio::test]
async fn manual_approval_keeps_node_pending_until_approved() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(true)).await;
    let n1 = client(&ctl.url, cl.root.cert_pem(), &cl.node("n1"));
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    let ack = register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();
    assert_eq!(ack.status, NodeStatus::Pending);
    assert_eq!(beat(&n1, "n1").await.unwrap().status, NodeStatus::Pending);
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(node.status, NodeStatus::Pending);

    let node: Node = post(&admin, "/v1/nodes/n1/approve").await.unwrap();
    assert_eq!(node.approval, Approval::Approved);
    assert_eq!(beat(&n1, "n1").await.unwrap().status, NodeStatus::Ready);
    ctl.stop().await;
}

#[tokio::test]
async fn rejected_node_cannot_heartbeat_or_register_again() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(true)).await;
    let n1 = client(&ctl.url, cl.root.cert_pem(), &cl.node("n1"));
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();
    let node: Node = post(&admin, "/v1/nodes/n1/reject").await.unwrap();
    assert_eq!(node.status, NodeStatus::Rejected);

    assert_eq!(code(&beat(&n1, "n1").await.unwrap_err()), "NODE_REJECTED");
    let err = register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NODE_REJECTED");
    // Even a freshly issued certificate for the same id cannot bring it back.
    let again = client(&ctl.url, cl.root.cert_pem(), &cl.node("n1"));
    let err = register(&again, "n1", report("hv1", "DC1", None))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NODE_REJECTED");
    let err = post::<Node>(&admin, "/v1/nodes/n1/approve")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NODE_REJECTED");
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(node.status, NodeStatus::Rejected);
    ctl.stop().await;
}

#[tokio::test]
async fn storage_classes_count_nodes_including_empty_classes() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    for (id, backend) in [
        ("n1", Some(StorageBackend::Lvm)),
        ("n2", Some(StorageBackend::Lvm)),
        ("n3", None),
    ] {
        let c = client(&ctl.url, cl.root.cert_pem(), &cl.node(id));
        register(&c, id, report(id, "DC1", backend)).await.unwrap();
    }
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    // A rejected node is not counted: it offers no storage.
    let n4 = client(&ctl.url, cl.root.cert_pem(), &cl.node("n4"));
    register(&n4, "n4", report("n4", "DC1", Some(StorageBackend::Lvm)))
        .await
        .unwrap();
    post::<Node>(&admin, "/v1/nodes/n4/reject").await.unwrap();
    let list: StorageClassList = admin.get_json("/v1/storage-classes").await.unwrap();
    let counts: Vec<(String, usize)> = list
        .items
        .iter()
        .map(|c| (c.name.clone(), c.nodes))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("filesystem".to_string(), 0),
            ("lvm".to_string(), 2),
            ("zfs".to_string(), 0),
            ("unspecified".to_string(), 1),
        ]
    );
    let lvm: StorageClassDetail = admin.get_json("/v1/storage-classes/lvm").await.unwrap();
    let ids: Vec<&str> = lvm.nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, vec!["n1", "n2"]);
    let err = admin
        .get_json::<StorageClassDetail>("/v1/storage-classes/ceph")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NO_SUCH_STORAGE_CLASS");
    ctl.stop().await;
}

#[tokio::test]
async fn restart_keeps_state_without_re_registration() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(true)).await;
    let n1_cert = cl.node("n1");
    {
        let n1 = client(&ctl.url, cl.root.cert_pem(), &n1_cert);
        let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
        register(&n1, "n1", report("hv1", "DC2", Some(StorageBackend::Zfs)))
            .await
            .unwrap();
        post::<Node>(&admin, "/v1/nodes/n1/approve").await.unwrap();
    }
    ctl.stop().await;

    let ctl = Running::start(cl.config(true)).await;
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(node.approval, Approval::Approved);
    assert_eq!(node.report.dc_id, "DC2");
    assert_eq!(node.report.storage.backend, Some(StorageBackend::Zfs));
    // The heartbeat flushed at shutdown survived too.
    assert_eq!(node.status, NodeStatus::Ready);
    let n1 = client(&ctl.url, cl.root.cert_pem(), &n1_cert);
    assert_eq!(beat(&n1, "n1").await.unwrap().status, NodeStatus::Ready);
    ctl.stop().await;
}

#[tokio::test]
async fn reports_over_a_limit_are_refused_naming_the_field() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem().to_string();
    let n1 = client(&ctl.url, &trust, &cl.node("n1"));
    let base = || report("hv1.lab", "DC1", None);
    let mut cases: Vec<(&str, NodeReport, u16, &str, &str)> = Vec::new();
    let mut r = base();
    r.hostname = "hv1\0".into();
    cases.push((
        "NUL in hostname",
        r,
        422,
        "INVALID_FIELD",
        "report.hostname",
    ));
    let mut r = base();
    r.hostname = format!("{}.lab", "a".repeat(60)).repeat(5);
    cases.push((
        "hostname > 253 bytes",
        r,
        422,
        "INVALID_FIELD",
        "report.hostname",
    ));
    let mut r = base();
    r.labels = (0..65)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    cases.push(("65 labels", r, 422, "INVALID_FIELD", "report.labels"));
    let mut r = base();
    r.labels.insert("k".into(), "v".repeat(64));
    cases.push((
        "label value > 63",
        r,
        422,
        "INVALID_FIELD",
        "report.labels[\"k\"]",
    ));
    let mut r = base();
    r.labels
        .insert(format!("{}/k", "a".repeat(254)), "v".into());
    cases.push(("label prefix > 253", r, 422, "INVALID_FIELD", ""));
    let mut r = base();
    r.disks = vec![serde_json::json!({"name": "sda"}); 513];
    cases.push(("513 disks", r, 422, "INVALID_FIELD", "report.disks"));
    let mut r = base();
    r.nics = vec![serde_json::json!({"name": "eth0"}); 257];
    cases.push(("257 nics", r, 422, "INVALID_FIELD", "report.nics"));
    let mut r = base();
    r.storage.mounts = vec![Default::default(); 65];
    cases.push((
        "65 mounts",
        r,
        422,
        "INVALID_FIELD",
        "report.storage.mounts",
    ));
    let mut r = base();
    r.labels.insert("big".into(), "v".repeat(200 * 1024));
    cases.push(("200 KiB report", r, 413, "REPORT_TOO_LARGE", "report"));
    for (what, r, status, want_code, field) in cases {
        let err = register(&n1, "n1", r).await.unwrap_err();
        let ClientError::Api {
            status: got, error, ..
        } = &err
        else {
            panic!("{what}: {err}");
        };
        assert_eq!(
            (got.as_u16(), error.code.as_str()),
            (status, want_code),
            "{what}: {error}"
        );
        let named = error.details["field"].as_str().unwrap();
        if field.is_empty() {
            assert!(named.starts_with("report.labels["), "{what}: {named}");
        } else {
            assert_eq!(named, field, "{what}");
        }
        assert!(
            error.details["limit"].is_u64() || what.contains("NUL"),
            "{what}: {error}"
        );
    }
    let admin = client(&ctl.url, &trust, &cl.admin());
    assert_eq!(
        code(&admin.get_json::<Node>("/v1/nodes/n1").await.unwrap_err()),
        "NODE_NOT_FOUND"
    );
    // Heartbeats are checked the same way.
    register(&n1, "n1", base()).await.unwrap();
    let mut r = base();
    r.hostname = "a b".into();
    let err = n1
        .post_json::<_, NodeAck>(
            "/v1/nodes/n1/heartbeat",
            &HeartbeatRequest { report: Some(r) },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_FIELD");
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(node.report.hostname, "hv1.lab");
    ctl.stop().await;
}

#[tokio::test]
async fn repeated_heartbeats_with_changing_labels_keep_the_database_bounded() {
    let cl = Cluster::new();
    let config = cl.config(false);
    let db = config.database_path.clone();
    let ctl = Running::start(config).await;
    let trust = cl.root.cert_pem().to_string();
    let n1 = client(&ctl.url, &trust, &cl.node("n1"));
    register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();
    let measure = || {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let q = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        (
            q("SELECT COUNT(*) FROM ops"),
            q("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM ops"),
            q("PRAGMA page_count") - q("PRAGMA freelist_count"),
        )
    };
    // Each heartbeat carries 64 labels of the largest allowed size, all changed.
    let with_labels = |i: usize| {
        let mut r = report("hv1", "DC1", None);
        r.labels = (0..64)
            .map(|k| (format!("k{k:02}"), format!("{i:03}{}", "v".repeat(60))))
            .collect();
        r
    };
    let hb = |i: usize| HeartbeatRequest {
        report: Some(with_labels(i)),
    };
    n1.post_json::<_, NodeAck>("/v1/nodes/n1/heartbeat", &hb(0))
        .await
        .unwrap();
    let first = measure();
    for i in 1..50 {
        n1.post_json::<_, NodeAck>("/v1/nodes/n1/heartbeat", &hb(i))
            .await
            .unwrap();
    }
    let last = measure();
    let admin = client(&ctl.url, &trust, &cl.admin());
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert!(node.report.labels["k00"].starts_with("049"));
    // One row per field: the same count and the same bytes as after the first change.
    assert_eq!(last.0, first.0, "ops rows: {first:?} -> {last:?}");
    assert_eq!(last.1, first.1, "ops bytes: {first:?} -> {last:?}");
    // Deleted rows' pages are reused: the live database does not grow with the count of
    // reports (49 more copies of ~5 KB of labels would be dozens of pages).
    assert!(last.2 <= first.2 + 4, "live pages: {first:?} -> {last:?}");
    ctl.stop().await;
}
