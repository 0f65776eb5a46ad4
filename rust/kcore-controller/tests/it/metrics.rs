//! `GET /metrics` (docs/metrics.md): scraped over real mTLS with a `metrics` role
//! certificate issued by `POST /v1/certificates/metrics`, parsed with `openmetrics-parser`
//! (prometheus-client has no parser), and checked against what the cluster really holds.
//! Also: the scraper role may call nothing else, and who else may scrape.

use crate::support::*;
use kcore_api::cluster::IssueMetricsCertificateRequest;
use kcore_net::testing::Metrics;

/// A scraper's certificate the production way: key and CSR here, signed by the controller
/// through the admin route.
async fn scraper_cert(admin: &Client, name: &str) -> CertifiedKey {
    let identity = Identity::new(CLUSTER, Role::Metrics, name).unwrap();
    let (key_pem, csr_pem) = kcore_pki::generate_csr(&identity, &[]).unwrap();
    let signed: CertificateResponse = admin
        .post_json(
            "/v1/certificates/metrics",
            &IssueMetricsCertificateRequest {
                name: name.into(),
                csr_pem,
            },
        )
        .await
        .unwrap();
    let leaf = &kcore_pki::certs_from_pem(&signed.chain_pem).unwrap()[0];
    assert_eq!(kcore_pki::identity_of(leaf).unwrap(), identity);
    CertifiedKey {
        cert_pem: signed.chain_pem,
        key_pem,
    }
}

fn tls(trust: &str, who: &CertifiedKey) -> rustls::ClientConfig {
    kcore_pki::client_config(trust, &who.cert_pem, &who.key_pem).unwrap()
}

/// Scrapes `url`/metrics as `who` and parses it; panics unless it is a 200 in the
/// Prometheus text format.
async fn scrape(url: &str, trust: &str, who: &CertifiedKey) -> Metrics {
    let answer = kcore_net::testing::get_text(&format!("{url}/metrics"), tls(trust, who))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Metrics::parse(&answer.body).unwrap()
}

fn unix(t: time::OffsetDateTime) -> f64 {
    t.unix_timestamp() as f64
}

#[tokio::test]
async fn metrics_show_nodes_by_status_certificates_and_request_latency_by_route() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(true)).await;
    let trust = cl.root.cert_pem().to_string();
    let admin = client(&ctl.url, &trust, &cl.admin());
    let scraper = scraper_cert(&admin, "prometheus").await;

    // Two nodes register (manual approval), one is approved.
    let (n1_cert, n2_cert) = (cl.node("n1"), cl.node("n2"));
    let n1 = client(&ctl.url, &trust, &n1_cert);
    let n2 = client(&ctl.url, &trust, &n2_cert);
    register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();
    register(&n2, "n2", report("hv2", "DC1", None))
        .await
        .unwrap();
    post::<Node>(&admin, "/v1/nodes/n1/approve").await.unwrap();
    beat(&n1, "n1").await.unwrap();
    // A path no route has: counted under one `unmatched` series, not its own.
    let err = admin
        .get_json::<serde_json::Value>("/v1/no-such-thing/n1")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NOT_FOUND");

    let s = scrape(&ctl.url, &trust, &scraper).await;
    assert_eq!(s.value("kcore_nodes", &[("status", "Ready")]), Some(1.0));
    assert_eq!(s.value("kcore_nodes", &[("status", "Pending")]), Some(1.0));
    assert_eq!(s.value("kcore_nodes", &[("status", "NotReady")]), Some(0.0));
    assert_eq!(s.value("kcore_nodes", &[("status", "Rejected")]), Some(0.0));
    for node in ["n1", "n2"] {
        let age = s.value("kcore_node_heartbeat_age_seconds", &[("node", node)]);
        assert!(age.is_some_and(|a| a >= 0.0), "{node}: {age:?}");
    }

    // Expiry of each node's presented certificate, the sub-CA and the controller's own.
    let expiry = |kind: &str, id: &str| {
        s.value(
            "kcore_certificate_expiry_timestamp_seconds",
            &[("kind", kind), ("id", id)],
        )
    };
    assert_eq!(
        expiry("node", "n1"),
        Some(unix(kcore_pki::not_after(&n1_cert.cert_pem).unwrap()))
    );
    assert_eq!(
        expiry("node", "n2"),
        Some(unix(kcore_pki::not_after(&n2_cert.cert_pem).unwrap()))
    );
    assert_eq!(expiry("sub-ca", "ctl1"), Some(unix(cl.sub.not_after())));
    let own = std::fs::read_to_string(cl.path("controller.crt")).unwrap();
    assert_eq!(
        expiry("controller", "ctl1"),
        Some(unix(kcore_pki::not_after(&own).unwrap()))
    );

    // Latency by route template: both registrations in one series, the 404 in another,
    // and no raw path anywhere.
    let count = |route: &str, method: &str, status: &str| {
        s.value(
            "kcore_http_request_duration_seconds",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(count("/v1/nodes/{id}/register", "POST", "200"), Some(2.0));
    assert_eq!(count("/v1/nodes/{id}/approve", "POST", "200"), Some(1.0));
    assert_eq!(count("unmatched", "GET", "404"), Some(1.0));
    let routes = s.label_values("route");
    assert!(
        routes
            .iter()
            .all(|r| !r.contains("n1") && !r.contains("n2")),
        "{routes:?}"
    );

    // The next scrape reflects a change: n2 is rejected, and the first scrape was counted.
    post::<Node>(&admin, "/v1/nodes/n2/reject").await.unwrap();
    let s = scrape(&ctl.url, &trust, &scraper).await;
    assert_eq!(s.value("kcore_nodes", &[("status", "Pending")]), Some(0.0));
    assert_eq!(s.value("kcore_nodes", &[("status", "Rejected")]), Some(1.0));
    assert_eq!(
        s.value(
            "kcore_http_request_duration_seconds",
            &[("route", "/metrics"), ("status", "200")]
        ),
        Some(1.0)
    );
    ctl.stop().await;
}

#[tokio::test]
async fn a_metrics_certificate_may_scrape_and_nothing_else() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem().to_string();
    let admin = client(&ctl.url, &trust, &cl.admin());
    let scraper = scraper_cert(&admin, "prometheus").await;
    let metrics = client(&ctl.url, &trust, &scraper);
    register(
        &client(&ctl.url, &trust, &cl.node("n1")),
        "n1",
        report("hv1", "DC1", None),
    )
    .await
    .unwrap();

    use axum::http::Method;
    let body = serde_json::json!({});
    // Every route of the controller (api/mod.rs), with an empty body: the refusal comes
    // before the body is read. Plus an unknown path and /metrics with another method.
    let calls: &[(Method, &str)] = &[
        (Method::GET, "/v1/nodes"),
        (Method::GET, "/v1/nodes/n1"),
        (Method::DELETE, "/v1/nodes/n1"),
        (Method::POST, "/v1/nodes/n1/register"),
        (Method::POST, "/v1/nodes/n1/heartbeat"),
        (Method::POST, "/v1/nodes/n1/renew"),
        (Method::POST, "/v1/nodes/n1/approve"),
        (Method::POST, "/v1/nodes/n1/reject"),
        (Method::POST, "/v1/nodes/n1/cordon"),
        (Method::POST, "/v1/nodes/n1/uncordon"),
        (Method::GET, "/v1/nodes/n1/assignment"),
        (Method::POST, "/v1/nodes/n1/assignment/report"),
        (Method::POST, "/v1/certificates/node"),
        (Method::POST, "/v1/certificates/metrics"),
        (Method::PUT, "/v1/pki/sub-ca"),
        (Method::GET, "/v1/storage-classes"),
        (Method::GET, "/v1/storage-classes/fs"),
        (Method::GET, "/v1/replication/vector"),
        (Method::GET, "/v1/replication/ops?origin=ctl1"),
        (Method::GET, "/v1/replication/peers"),
        (Method::GET, "/v1/version"),
        (Method::GET, "/v1/clusterupdates"),
        (Method::GET, "/v1/clusterupdates/u1"),
        (Method::PUT, "/v1/clusterupdates/u1"),
        (Method::DELETE, "/v1/clusterupdates/u1"),
        (Method::POST, "/v1/clusterupdates/u1/approve"),
        (Method::POST, "/v1/clusterupdates/u1/cancel"),
        (Method::GET, "/v1/vms"),
        (Method::GET, "/v1/vms/vm1"),
        (Method::PUT, "/v1/vms/vm1"),
        (Method::DELETE, "/v1/vms/vm1"),
        (Method::GET, "/v1/controllers"),
        (Method::GET, "/v1/controllers/ctl1"),
        (Method::DELETE, "/v1/controllers/ctl1"),
        (Method::POST, "/v1/controllers/ctl1/register"),
        (Method::GET, "/v1/no-such-route"),
        (Method::POST, "/metrics"),
    ];
    for (method, path) in calls {
        let err = metrics
            .call_json::<_, serde_json::Value>(method.clone(), path, Some(&body))
            .await
            .expect_err(path);
        assert_eq!(code(&err), "FORBIDDEN_ROLE", "{method} {path}: {err}");
    }
    // Nothing it called changed anything.
    let n1: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    assert_eq!(n1.approval, Approval::Approved);

    // Who may scrape: the scraper and admins; controllers and nodes may not.
    scrape(&ctl.url, &trust, &scraper).await;
    scrape(&ctl.url, &trust, &cl.admin()).await;
    for (who, cert) in [
        ("controller", cl.controller_peer()),
        ("node", cl.node("n1")),
    ] {
        let answer =
            kcore_net::testing::get_text(&format!("{}/metrics", ctl.url), tls(&trust, &cert))
                .await
                .unwrap();
        assert_eq!(answer.status, 403, "{who}: {}", answer.body);
        assert!(
            answer.body.contains("FORBIDDEN_ROLE"),
            "{who}: {}",
            answer.body
        );
    }
    // Only an admin may have a scraper certificate signed.
    let (_, csr_pem) =
        kcore_pki::generate_csr(&Identity::new(CLUSTER, Role::Metrics, "p2").unwrap(), &[])
            .unwrap();
    let request = IssueMetricsCertificateRequest {
        name: "p2".into(),
        csr_pem: csr_pem.clone(),
    };
    let node = client(&ctl.url, &trust, &cl.node("n1"));
    let err = node
        .post_json::<_, CertificateResponse>("/v1/certificates/metrics", &request)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "FORBIDDEN_ROLE");
    // A CSR for another name is refused, naming the mismatch.
    let err = admin
        .post_json::<_, CertificateResponse>(
            "/v1/certificates/metrics",
            &IssueMetricsCertificateRequest {
                name: "p3".into(),
                csr_pem,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_CSR", "{err}");
    ctl.stop().await;
}

#[tokio::test]
async fn replication_metrics_follow_the_peers_route() {
    let cl = Cluster::new();
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let (la, lb) = (bind().await, bind().await);
    let (a_addr, b_addr) = (
        la.local_addr().unwrap().to_string(),
        lb.local_addr().unwrap().to_string(),
    );
    let a = Running::start_on(la, cl.peer_config("ctl-a", true, vec![b_addr.clone()]));
    let b = Running::start_on(lb, cl.peer_config("ctl-b", true, vec![a_addr.clone()]));
    let trust = cl.root.cert_pem().to_string();
    let admin_a = client(&a.url, &trust, &cl.admin());
    let scraper = scraper_cert(&admin_a, "prometheus").await;
    register(
        &client(&a.url, &trust, &cl.node("n1")),
        "n1",
        report("hv1", "DC1", None),
    )
    .await
    .unwrap();
    let admin_b = client(&b.url, &trust, &cl.admin());
    eventually("n1 to reach ctl-b", || async {
        admin_b.get_json::<Node>("/v1/nodes/n1").await.is_ok()
    })
    .await;

    // ctl-b pulled everything ctl-a holds of ctl-a's own operations: a's view of b as a
    // puller shows no lag for that origin, and b sees a as a healthy peer.
    eventually("ctl-a to show ctl-b caught up", || async {
        let s = scrape(&a.url, &trust, &scraper).await;
        s.value(
            "kcore_replication_pull_lag_seconds",
            &[("peer", "ctl-b"), ("origin", "ctl-a")],
        ) == Some(0.0)
            && s.value("kcore_replication_pull_age_seconds", &[("peer", "ctl-b")])
                .is_some()
    })
    .await;
    let peers: serde_json::Value = admin_b.get_json("/v1/replication/peers").await.unwrap();
    let s = scrape(&b.url, &trust, &scraper).await;
    assert_eq!(peers["peers"][0]["healthy"], true, "{peers}");
    assert_eq!(
        s.value(
            "kcore_replication_peer_up",
            &[("peer", &a_addr), ("controller", "ctl-a")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "kcore_replication_peer_state",
            &[("peer", &a_addr), ("state", "Healthy")]
        ),
        Some(1.0)
    );
    // The peer lag figures are the peers route's own: ctl-a caught up with ctl-b.
    eventually("ctl-b to show ctl-a holding everything", || async {
        let peers: serde_json::Value = admin_b.get_json("/v1/replication/peers").await.unwrap();
        let s = scrape(&b.url, &trust, &scraper).await;
        let lag = s.value(
            "kcore_replication_peer_lag_operations",
            &[("peer", &a_addr)],
        );
        lag.is_some() && lag == peers["peers"][0]["lagOperations"].as_f64() && lag == Some(0.0)
    })
    .await;
    a.stop().await;
    b.stop().await;
}
