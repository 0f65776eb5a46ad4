//! TLS modes and who may call what: managed mode over mTLS with real inventory, refusals of
//! missing, foreign and expired certificates, other clusters' identities, install mode's
//! self-signed certificate and its inventory-only routes.

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_mode_serves_admins_over_mtls_with_real_inventory() {
    let pki = Pki::new();
    let node = Node::new();
    let agent = start(
        node.config("managed", Some(&pki), json!({})),
        RuntimeOptions::default(),
    )
    .await;
    assert_eq!(agent.fingerprint, None);
    let admin = agent.client(pki.client_tls(&pki.leaf(Role::Admin, "alice")));

    // This host's real lsblk and ip.
    let disks: DiskInventory = admin.get_json("/v1/inventory/disks").await.unwrap();
    assert!(
        !disks.disks.is_empty(),
        "lsblk lists at least one device here"
    );
    for disk in &disks.disks {
        if !disk.mountpoints.is_empty() {
            assert!(disk.in_use, "{} is mounted but not in use", disk.path);
        }
    }
    let nics: NicInventory = admin.get_json("/v1/inventory/nics").await.unwrap();
    let lo = nics
        .nics
        .iter()
        .find(|n| n.name == "lo")
        .expect("lo exists");
    assert!(lo.addresses.contains(&"127.0.0.1/8".to_string()), "{lo:?}");
    let storage: StorageView = admin.get_json("/v1/inventory/storage").await.unwrap();
    assert_eq!(storage.backend, "filesystem");

    // A controller may read too; unknown routes answer with the JSON envelope.
    let controller = agent.client(pki.client_tls(&pki.leaf(Role::Controller, "ctl1")));
    let _: NicInventory = controller.get_json("/v1/inventory/nics").await.unwrap();
    let err = admin
        .get_json::<serde_json::Value>("/v1/nothing")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NOT_FOUND");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_mode_refuses_no_cert_other_ca_and_expired_cert() {
    let pki = Pki::new();
    let node = Node::new();
    let agent = start(
        node.config("managed", Some(&pki), json!({})),
        RuntimeOptions::default(),
    )
    .await;

    // Trusts the agent, presents nothing.
    let roots = {
        let mut store = rustls::RootCertStore::empty();
        for cert in kcore_pki::certs_from_pem(pki.root.cert_pem()).unwrap() {
            store.add(cert).unwrap();
        }
        store
    };
    let no_cert = rustls::ClientConfig::builder_with_provider(kcore_pki::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let err = agent
        .client(no_cert)
        .get_json::<NicInventory>("/v1/inventory/nics")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");

    // A valid admin certificate from another cluster's CA.
    let other = Pki::new();
    let foreign = other.leaf(Role::Admin, "mallory");
    let tls =
        kcore_pki::client_config(pki.root.cert_pem(), &foreign.cert_pem, &foreign.key_pem).unwrap();
    let err = agent
        .client(tls)
        .get_json::<NicInventory>("/v1/inventory/nics")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");

    // Our CA, but expired yesterday.
    let now = time::OffsetDateTime::now_utc();
    let expired = pki
        .root
        .issue_between(
            &Identity::new("lab", Role::Admin, "alice").unwrap(),
            &[],
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        )
        .unwrap();
    let err = agent
        .client(pki.client_tls(&expired))
        .get_json::<NicInventory>("/v1/inventory/nics")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");

    // The same client set-up with a valid certificate works (the refusals above are about
    // the certificates, not the set-up).
    let ok = agent.client(pki.client_tls(&pki.leaf(Role::Admin, "alice")));
    let _: NicInventory = ok.get_json("/v1/inventory/nics").await.unwrap();
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_cluster_certificates_bad_paths_and_wrong_methods_get_envelopes() {
    let pki = Pki::new();
    let node = Node::new();
    let agent = start(
        node.config("managed", Some(&pki), json!({})),
        RuntimeOptions::default(),
    )
    .await;

    // Signed by this cluster's root (the handshake passes) but naming cluster "other":
    // refused like the controller refuses it (security probe D12).
    let stranger = pki
        .root
        .issue(
            &Identity::new("other", Role::Admin, "mallory").unwrap(),
            &[],
            10 * DAY,
        )
        .unwrap();
    let client = agent.client(pki.client_tls(&stranger));
    let err = client
        .get_json::<NicInventory>("/v1/inventory/nics")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "WRONG_CLUSTER", "{err}");
    let err = client
        .post_json::<_, serde_json::Value>("/v1/disko/apply", &dry("{}"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "WRONG_CLUSTER", "{err}");

    let admin = agent.client(pki.client_tls(&pki.leaf(Role::Admin, "alice")));
    // Not UTF-8 after percent-decoding: a 400 envelope, not axum's plain text.
    let err = admin
        .get_json::<serde_json::Value>("/v1/operations/%FF")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "BAD_REQUEST", "{err}");
    // A known route with the wrong method: 405 envelope naming the method to use.
    match admin
        .get_json::<serde_json::Value>("/v1/disko/apply")
        .await
        .unwrap_err()
    {
        ClientError::Api { status, error, .. } => {
            assert_eq!(status, 405);
            assert_eq!(error.code, "METHOD_NOT_ALLOWED");
            assert_eq!(error.details["allowedMethods"], json!(["POST"]));
        }
        other => panic!("expected a 405 envelope, got {other:?}"),
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_mode_closes_a_client_that_never_speaks() {
    use tokio::io::AsyncReadExt as _;
    let node = Node::new();
    // `connections` from node-agent.yaml reaches the server: a short first-request timeout.
    let agent = start(
        node.config(
            "install",
            None,
            json!({ "connections": { "firstRequestTimeoutSeconds": 1 } }),
        ),
        RuntimeOptions::default(),
    )
    .await;
    // TLS without a certificate (nothing is needed on the live ISO), ALPN h2, then
    // silence: no HTTP/2 preface (security probe D5).
    let mut tls = kcore_pki::client_config_insecure().unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut silent = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a silent h2 client still holds the install-mode agent"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_read_only_their_own_inventory_and_never_apply() {
    let pki = Pki::new();
    let node = Node::new();
    node.set_mode("controller-managed");
    let agent = start(
        node.config("managed", Some(&pki), json!({})),
        RuntimeOptions::default(),
    )
    .await;
    let itself = agent.client(pki.client_tls(&pki.leaf(Role::Node, "node-1")));
    let _: NicInventory = itself.get_json("/v1/inventory/nics").await.unwrap();
    let other = agent.client(pki.client_tls(&pki.leaf(Role::Node, "node-2")));
    let err = other
        .get_json::<NicInventory>("/v1/inventory/nics")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "FORBIDDEN");
    let err = itself
        .post_json::<_, serde_json::Value>(
            "/v1/nix/apply",
            &ApplyNixRequest {
                config: "{ }".into(),
                no_rebuild: true,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "FORBIDDEN");
    assert!(!node.path("flake/kcore-node.nix").exists());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_mode_is_self_signed_pinnable_and_serves_inventory_only() {
    let node = Node::new();
    let agent = start(
        node.config("install", None, json!({})),
        RuntimeOptions::default(),
    )
    .await;
    let fingerprint = agent
        .fingerprint
        .clone()
        .expect("install mode has a fingerprint");

    // -k
    let insecure = agent.client(kcore_pki::client_config_insecure().unwrap());
    let _: NicInventory = insecure.get_json("/v1/inventory/nics").await.unwrap();
    let health: serde_json::Value = insecure.get_json("/v1/health").await.unwrap();
    assert_eq!(health["mode"], "install");
    // Day-2 routes do not exist in install mode.
    for path in ["/v1/disko/apply", "/v1/nix/apply"] {
        let err = insecure
            .post_json::<_, serde_json::Value>(path, &json!({}))
            .await
            .unwrap_err();
        assert_eq!(code(&err), "NOT_FOUND", "{path}");
    }
    let err = insecure
        .get_json::<serde_json::Value>("/v1/rollout/steps/x")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NOT_FOUND");

    // --fingerprint: the right pin works (with colons and upper case too), a wrong one fails.
    let pinned = agent.client(kcore_pki::client_config_pinned(&fingerprint).unwrap());
    let _: NicInventory = pinned.get_json("/v1/inventory/nics").await.unwrap();
    let colons = fingerprint
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let pinned = agent.client(kcore_pki::client_config_pinned(&colons).unwrap());
    let _: NicInventory = pinned.get_json("/v1/inventory/nics").await.unwrap();
    let wrong = format!("{}{}", &fingerprint[..fingerprint.len() - 1], {
        if fingerprint.ends_with('0') { "1" } else { "0" }
    });
    let err = agent
        .client(kcore_pki::client_config_pinned(&wrong).unwrap())
        .get_json::<NicInventory>("/v1/inventory/nics")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    agent.stop().await;
}
