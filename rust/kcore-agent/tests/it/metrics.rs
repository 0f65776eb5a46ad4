//! `GET /metrics` on the agent (docs/metrics.md), scraped over real mTLS with a `metrics`
//! role certificate and parsed with `openmetrics-parser`: operations by kind and outcome move
//! when an apply-disko runs (through the disko stand-in), the node's certificate expiry is
//! the one on disk, latency is by route template; the scraper may call nothing else, and
//! install mode has no `/metrics`.

use super::support::*;
use kcore_net::testing::Metrics;

async fn scrape_as(agent: &Running, tls: rustls::ClientConfig) -> kcore_net::testing::TextAnswer {
    kcore_net::testing::get_text(&format!("https://{}/metrics", agent.addr), tls)
        .await
        .unwrap()
}

async fn scrape(agent: &Running, tls: rustls::ClientConfig) -> Metrics {
    let answer = scrape_as(agent, tls).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    Metrics::parse(&answer.body).unwrap()
}

fn ops(s: &Metrics, kind: &str, outcome: &str) -> Option<f64> {
    s.value(
        "kcore_agent_operations_total",
        &[("kind", kind), ("outcome", outcome)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_disko_moves_the_operation_counter_with_disko_stand_in() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let bed = disko_bed(
        json!({}),
        vec![(
            "KCORE_TEST_DISKO_LOG".into(),
            log.path().display().to_string(),
        )],
    )
    .await;
    let scraper = bed
        .pki
        .client_tls(&bed.pki.leaf(Role::Metrics, "prometheus"));
    let before = scrape(&bed.agent, scraper.clone()).await;
    assert_eq!(ops(&before, "apply-disko", "succeeded"), Some(0.0));
    assert_eq!(ops(&before, "apply-disko", "failed"), Some(0.0));
    // The node's certificate as it is on disk.
    let cert = std::fs::read_to_string(bed.node.path("node.crt")).unwrap();
    let not_after = kcore_pki::not_after(&cert).unwrap().unix_timestamp() as f64;
    assert_eq!(
        before.value(
            "kcore_certificate_expiry_timestamp_seconds",
            &[("kind", "node"), ("id", "node-1")]
        ),
        Some(not_after)
    );

    bed.node.set_mode("controller-managed");
    let plan: DiskoPlanResponse = bed
        .admin
        .post_json("/v1/disko/apply", &dry(DATA_DISK))
        .await
        .unwrap();
    let started: OperationStarted = bed
        .admin
        .post_json("/v1/disko/apply", &apply(DATA_DISK, &plan.plan_hash, None))
        .await
        .unwrap();
    let result = wait_for_result(&bed.admin, &started.operation_id, "its end", |r| {
        r.status != OperationStatus::Running
    })
    .await;
    assert_eq!(result.status, OperationStatus::Succeeded, "{result:?}");

    let after = scrape(&bed.agent, scraper.clone()).await;
    assert_eq!(ops(&after, "apply-disko", "succeeded"), Some(1.0));
    assert_eq!(ops(&after, "apply-disko", "failed"), Some(0.0));
    assert_eq!(
        after.value("kcore_agent_operations_running", &[("kind", "apply-disko")]),
        Some(0.0)
    );
    // Both POSTs to the route, by its template; the result polls by `{id}`, not the uuid.
    assert_eq!(
        after.value(
            "kcore_http_request_duration_seconds",
            &[
                ("route", "/v1/disko/apply"),
                ("method", "POST"),
                ("status", "200")
            ]
        ),
        Some(1.0),
        "the dry run answers 200"
    );
    assert_eq!(
        after.value(
            "kcore_http_request_duration_seconds",
            &[
                ("route", "/v1/disko/apply"),
                ("method", "POST"),
                ("status", "202")
            ]
        ),
        Some(1.0),
        "the apply answers 202"
    );
    assert!(
        after
            .value(
                "kcore_http_request_duration_seconds",
                &[("route", "/v1/operations/{id}"), ("status", "200")]
            )
            .is_some_and(|n| n >= 1.0)
    );
    let routes = after.label_values("route");
    assert!(
        routes.iter().all(|r| !r.contains(&started.operation_id)),
        "{routes:?}"
    );
    bed.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scraper_may_call_only_metrics_and_nodes_may_not_scrape() {
    let pki = Pki::new();
    let node = Node::new();
    let agent = start(
        node.config("managed", Some(&pki), json!({})),
        RuntimeOptions::default(),
    )
    .await;
    let scraper_tls = pki.client_tls(&pki.leaf(Role::Metrics, "prometheus"));
    let scraper = agent.client(scraper_tls.clone());
    use axum::http::Method;
    let body = json!({});
    for (method, path) in [
        (Method::GET, "/v1/health"),
        (Method::GET, "/v1/inventory/disks"),
        (Method::GET, "/v1/inventory/nics"),
        (Method::GET, "/v1/inventory/storage"),
        (Method::POST, "/v1/disko/apply"),
        (Method::POST, "/v1/nix/apply"),
        (Method::GET, "/v1/operations/x"),
        (Method::GET, "/v1/operations/x/stream"),
        (Method::POST, "/v1/rollout/prepare"),
        (Method::POST, "/v1/rollout/activate"),
        (Method::GET, "/v1/rollout/steps/x"),
        (Method::GET, "/v1/no-such-route"),
        (Method::POST, "/metrics"),
    ] {
        let err = scraper
            .call_json::<_, serde_json::Value>(method.clone(), path, Some(&body))
            .await
            .expect_err(path);
        assert_eq!(code(&err), "FORBIDDEN_ROLE", "{method} {path}: {err}");
    }
    assert_eq!(scrape_as(&agent, scraper_tls).await.status, 200);
    let admin = pki.client_tls(&pki.leaf(Role::Admin, "alice"));
    assert_eq!(scrape_as(&agent, admin).await.status, 200);
    for role in [Role::Node, Role::Controller] {
        let answer = scrape_as(&agent, pki.client_tls(&pki.leaf(role, "x"))).await;
        assert_eq!(answer.status, 403, "{role}: {}", answer.body);
    }
    agent.stop().await;

    // Install mode: no client identities, no /metrics.
    let install = start(
        node.config("install", None, json!({})),
        RuntimeOptions::default(),
    )
    .await;
    let insecure = kcore_pki::client_config_insecure().unwrap();
    let answer = scrape_as(&install, insecure).await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    install.stop().await;
}

/// Scrapes until `check` holds (every 100 ms, at most 30 s: a bounded wait for a state).
async fn scrape_until(
    agent: &Running,
    tls: &rustls::ClientConfig,
    what: &str,
    check: impl Fn(&Metrics) -> bool,
) -> Metrics {
    for _ in 0..300 {
        let s = scrape(agent, tls.clone()).await;
        if check(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_and_heartbeats_show_when_they_last_succeeded_with_a_real_controller() {
    let pki = Pki::new();
    let Controller {
        addr,
        stop: stop_ctl,
        task: controller,
        dir: _dir,
    } = real_controller(&pki).await;
    let scraper = pki.client_tls(&pki.leaf(Role::Metrics, "prometheus"));
    let started_at = time::OffsetDateTime::now_utc().unix_timestamp() as f64;

    let node = Node::new();
    let agent = start(
        node.config(
            "managed",
            Some(&pki),
            json!({"controllers": [addr], "heartbeatIntervalSeconds": 1}),
        ),
        RuntimeOptions::default(),
    )
    .await;
    let last = |s: &Metrics, call: &str| {
        s.value(
            "kcore_agent_controller_last_success_timestamp_seconds",
            &[("call", call)],
        )
    };
    let s = scrape_until(&agent, &scraper, "a registration and a heartbeat", |s| {
        last(s, "register").is_some() && last(s, "heartbeat").is_some()
    })
    .await;
    assert!(last(&s, "register").unwrap() >= started_at.floor());
    assert!(last(&s, "heartbeat").unwrap() >= last(&s, "register").unwrap());
    agent.stop().await;

    // With the controller gone, registrations fail and are counted; none succeeded.
    let _ = stop_ctl.send(());
    controller.await.unwrap().unwrap();
    let lonely = Node::new();
    let agent = start(
        lonely.config(
            "managed",
            Some(&pki),
            json!({"controllers": [addr], "heartbeatIntervalSeconds": 1}),
        ),
        RuntimeOptions::default(),
    )
    .await;
    let s = scrape_until(&agent, &scraper, "a failed registration", |s| {
        s.value(
            "kcore_agent_controller_failures_total",
            &[("call", "register")],
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(last(&s, "register"), None);
    agent.stop().await;
}
