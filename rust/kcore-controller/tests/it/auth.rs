//! Who may call what: the authorisation matrix, nodes posing as controllers, envelopes for
//! unknown routes, bad paths and wrong methods.

use crate::support::*;

#[tokio::test]
async fn authorization_matrix_every_route_and_caller() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(true)).await;
    let trust = cl.root.cert_pem().to_string();
    // Node n3 exists so approve/reject have a target.
    let n3 = client(&ctl.url, &trust, &cl.node("n3"));
    register(&n3, "n3", report("hv3", "DC1", None))
        .await
        .unwrap();

    let evil_root = Authority::new_root(CLUSTER, YEAR).unwrap();
    let evil_admin = evil_root
        .issue(
            &Identity::new(CLUSTER, Role::Admin, "alice").unwrap(),
            &[],
            YEAR,
        )
        .unwrap();
    let callers: Vec<(&str, Client)> = vec![
        ("admin", client(&ctl.url, &trust, &cl.admin())),
        (
            "controller",
            client(&ctl.url, &trust, &cl.controller_peer()),
        ),
        ("node-self", client(&ctl.url, &trust, &cl.node("n1"))),
        ("node-other", client(&ctl.url, &trust, &cl.node("n2"))),
        ("no-cert", anonymous_client(&ctl.url, &trust)),
        ("wrong-ca", client(&ctl.url, &trust, &evil_admin)),
    ];
    let n1_csr = kcore_pki::generate_csr(&Identity::new(CLUSTER, Role::Node, "n1").unwrap(), &[])
        .unwrap()
        .1;
    let n4_csr = kcore_pki::generate_csr(&Identity::new(CLUSTER, Role::Node, "n4").unwrap(), &[])
        .unwrap()
        .1;
    let ctl9_csr = kcore_pki::generate_csr(
        &Identity::new(CLUSTER, Role::Controller, "ctl9").unwrap(),
        &[],
    )
    .unwrap()
    .1;
    let new_sub = cl.root.new_sub_ca("rotated", YEAR).unwrap();

    use Outcome::{Allowed as A, NoAnswer as X};
    let f = || Outcome::Refused("FORBIDDEN_ROLE".into());
    let s = || Outcome::Refused("NOT_SELF".into());
    // Expected per caller, in the order of `callers`.
    type Call<'a> = Box<dyn Fn(&'a Client) -> futures::future::BoxFuture<'a, Outcome> + 'a>;
    let rows: Vec<(&str, Call, Vec<Outcome>)> = vec![
        (
            "POST /v1/nodes/n1/register",
            Box::new(|c| {
                Box::pin(
                    async move { outcome(register(c, "n1", report("hv1", "DC1", None)).await) },
                )
            }),
            vec![f(), f(), A, s(), X, X],
        ),
        (
            "POST /v1/nodes/n1/heartbeat",
            Box::new(|c| Box::pin(async move { outcome(beat(c, "n1").await) })),
            vec![f(), f(), A, s(), X, X],
        ),
        (
            "POST /v1/nodes/n1/renew",
            Box::new(|c| {
                let csr = n1_csr.clone();
                Box::pin(async move {
                    outcome(
                        c.post_json::<_, CertificateResponse>(
                            "/v1/nodes/n1/renew",
                            &CsrRequest { csr_pem: csr },
                        )
                        .await,
                    )
                })
            }),
            vec![f(), f(), A, s(), X, X],
        ),
        (
            "GET /v1/nodes",
            Box::new(|c| {
                Box::pin(async move { outcome(c.get_json::<NodeList>("/v1/nodes").await) })
            }),
            vec![A, A, f(), f(), X, X],
        ),
        (
            "GET /v1/nodes/n3",
            Box::new(|c| {
                Box::pin(async move { outcome(c.get_json::<Node>("/v1/nodes/n3").await) })
            }),
            vec![A, A, f(), f(), X, X],
        ),
        (
            "GET /v1/storage-classes",
            Box::new(|c| {
                Box::pin(async move {
                    outcome(c.get_json::<StorageClassList>("/v1/storage-classes").await)
                })
            }),
            vec![A, A, f(), f(), X, X],
        ),
        (
            "GET /v1/storage-classes/lvm",
            Box::new(|c| {
                Box::pin(async move {
                    outcome(
                        c.get_json::<StorageClassDetail>("/v1/storage-classes/lvm")
                            .await,
                    )
                })
            }),
            vec![A, A, f(), f(), X, X],
        ),
        (
            "POST /v1/certificates/node",
            Box::new(|c| {
                let csr = n4_csr.clone();
                Box::pin(async move {
                    outcome(
                        c.post_json::<_, CertificateResponse>(
                            "/v1/certificates/node",
                            &IssueNodeCertificateRequest {
                                node_id: "n4".into(),
                                csr_pem: csr,
                            },
                        )
                        .await,
                    )
                })
            }),
            vec![A, f(), f(), f(), X, X],
        ),
        (
            "POST /v1/certificates/controller",
            Box::new(|c| {
                let csr = ctl9_csr.clone();
                Box::pin(async move {
                    outcome(
                        c.post_json::<_, ControllerCertificateResponse>(
                            "/v1/certificates/controller",
                            &IssueControllerCertificateRequest {
                                controller_id: "ctl9".into(),
                                csr_pem: csr,
                            },
                        )
                        .await,
                    )
                })
            }),
            vec![A, f(), f(), f(), X, X],
        ),
        (
            "PUT /v1/pki/sub-ca",
            Box::new(|c| {
                let body = InstallSubCa {
                    certificate_pem: new_sub.cert_pem().into(),
                    key_pem: new_sub.key_pem().into(),
                    allow_short: false,
                };
                Box::pin(async move {
                    outcome(
                        c.put_json::<_, SubCaInstalled>("/v1/pki/sub-ca", &body)
                            .await,
                    )
                })
            }),
            vec![A, f(), f(), f(), X, X],
        ),
        (
            "GET /v1/replication/vector",
            Box::new(|c| {
                Box::pin(async move {
                    outcome(
                        c.get_json::<serde_json::Value>("/v1/replication/vector")
                            .await,
                    )
                })
            }),
            vec![f(), A, f(), f(), X, X],
        ),
        (
            "GET /v1/replication/ops",
            Box::new(|c| {
                Box::pin(async move {
                    outcome(
                        c.get_json::<serde_json::Value>("/v1/replication/ops?origin=ctl1")
                            .await,
                    )
                })
            }),
            vec![f(), A, f(), f(), X, X],
        ),
        (
            "GET /v1/vms",
            Box::new(|c| {
                Box::pin(async move { outcome(c.get_json::<serde_json::Value>("/v1/vms").await) })
            }),
            vec![A, A, f(), f(), X, X],
        ),
        (
            "GET /v1/clusterupdates/r1",
            Box::new(|c| {
                Box::pin(async move {
                    outcome(
                        c.get_json::<serde_json::Value>("/v1/clusterupdates/r1")
                            .await,
                    )
                })
            }),
            vec![A, A, f(), f(), X, X],
        ),
        (
            "PUT /v1/vms/web-1",
            Box::new(|c| {
                let body = serde_json::json!({
                    "kind": "VM", "metadata": {"name": "web-1"},
                    "spec": {"storageBackend": "lvm", "storageSizeBytes": "1G"},
                });
                Box::pin(async move {
                    outcome(
                        c.put_json::<_, serde_json::Value>("/v1/vms/web-1", &body)
                            .await,
                    )
                })
            }),
            vec![A, f(), f(), f(), X, X],
        ),
        (
            "DELETE /v1/clusterupdates/r1",
            Box::new(|c| {
                Box::pin(async move {
                    outcome(c.delete::<serde_json::Value>("/v1/clusterupdates/r1").await)
                })
            }),
            vec![A, f(), f(), f(), X, X],
        ),
        (
            "DELETE /v1/nodes/n9",
            Box::new(|c| {
                Box::pin(
                    async move { outcome(c.delete::<serde_json::Value>("/v1/nodes/n9").await) },
                )
            }),
            vec![A, f(), f(), f(), X, X],
        ),
        (
            "POST /v1/nodes/n3/approve",
            Box::new(|c| {
                Box::pin(async move { outcome(post::<Node>(c, "/v1/nodes/n3/approve").await) })
            }),
            vec![A, f(), f(), f(), X, X],
        ),
        (
            "POST /v1/nodes/n3/reject",
            Box::new(|c| {
                Box::pin(async move { outcome(post::<Node>(c, "/v1/nodes/n3/reject").await) })
            }),
            vec![A, f(), f(), f(), X, X],
        ),
    ];
    let mut mismatches = Vec::new();
    for (route, call, expected) in &rows {
        // Callers that must be refused go first so an allowed state change (reject)
        // cannot mask a refusal.
        let mut order: Vec<usize> = (0..callers.len()).collect();
        order.sort_by_key(|&i| expected[i] == Outcome::Allowed);
        for i in order {
            let (who, c) = &callers[i];
            let got = call(c).await;
            if got != expected[i] {
                mismatches.push(format!(
                    "{route} as {who}: expected {:?}, got {got:?}",
                    expected[i]
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    ctl.stop().await;
}

#[tokio::test]
async fn agents_and_peer_controllers_refuse_a_node_posing_as_a_controller() {
    let cl = Cluster::new();
    let trust = cl.root.cert_pem().to_string();
    let rogue = impostor(&trust, &node_cert_with_local_names(&cl, "n2")).await;

    // The agent of n1 pointed at the rogue: the handshake fails, nothing is sent.
    let ctx = agent_context(cl.dir.path(), &rogue.url(), &trust, "n1", &cl.node("n1"));
    let mut session = None;
    let err = kcore_agent::registration::step(&ctx, &mut session)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("speaks for kcore://lab/node/n2")
            && err.contains("expected kcore://lab/controller/*"),
        "{err}"
    );
    assert!(rogue.requests().is_empty(), "{:?}", rogue.requests());

    // A controller with the rogue and a real peer: it pulls from the real one (so it
    // has polled the rogue too, which comes first) and never talks HTTP to the rogue.
    let real = Running::start(cl.peer_config("ctl-b", false, vec![])).await;
    let n3 = client(&real.url, &trust, &cl.node("n3"));
    register(&n3, "n3", report("hv3", "DC1", None))
        .await
        .unwrap();
    let a = Running::start(cl.peer_config(
        "ctl-a",
        false,
        vec![
            rogue.addr.clone(),
            real.url.trim_start_matches("https://").into(),
        ],
    ))
    .await;
    let admin_a = client(&a.url, &trust, &cl.admin());
    eventually("ctl-a to pull n3 from its real peer", || async {
        admin_a.get_json::<Node>("/v1/nodes/n3").await.is_ok()
    })
    .await;
    assert!(rogue.requests().is_empty(), "{:?}", rogue.requests());

    // Control: the same impostor with a controller certificate does get the requests,
    // so the empty lists above are the identity check at work, not a broken impostor.
    let posing_cert = cl
        .sub
        .issue(
            &Identity::new(CLUSTER, Role::Controller, "ctl9").unwrap(),
            &["127.0.0.1".into()],
            YEAR,
        )
        .unwrap();
    let posing = impostor(&trust, &posing_cert).await;
    let ctx = agent_context(cl.dir.path(), &posing.url(), &trust, "n1", &cl.node("n1"));
    let _ = kcore_agent::registration::step(&ctx, &mut None).await;
    let seen = posing.requests();
    assert!(
        seen.len() == 1 && seen[0].starts_with("POST /v1/nodes/n1/register "),
        "{seen:?}"
    );
    a.stop().await;
    real.stop().await;
}

#[tokio::test]
async fn unknown_routes_bad_paths_and_wrong_methods_are_envelopes() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem().to_string();
    let admin = client(&ctl.url, &trust, &cl.admin());
    // The same code as the agents' (security probe D12), naming the path.
    let err = admin
        .get_json::<serde_json::Value>("/v1/bogus")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NOT_FOUND", "{err}");
    assert!(err.to_string().contains("/v1/bogus"), "{err}");
    // Not UTF-8 once percent-decoded: a 400 envelope (was axum's plain text, D11).
    for path in ["/v1/nodes/%FF", "/v1/nodes/%FF/approve"] {
        let err = if path.ends_with("approve") {
            post::<serde_json::Value>(&admin, path).await.unwrap_err()
        } else {
            admin.get_json::<serde_json::Value>(path).await.unwrap_err()
        };
        assert_eq!(code(&err), "BAD_REQUEST", "{path}: {err}");
    }
    // Wrong method on a known route: 405 envelope with the allowed methods (was empty).
    match admin
        .get_json::<serde_json::Value>("/v1/nodes/n1/register")
        .await
        .unwrap_err()
    {
        ClientError::Api { status, error, .. } => {
            assert_eq!(status, 405);
            assert_eq!(error.code, "METHOD_NOT_ALLOWED");
            assert_eq!(error.details["allowedMethods"], serde_json::json!(["POST"]));
        }
        other => panic!("expected a 405 envelope, got {other:?}"),
    }
    ctl.stop().await;
}
