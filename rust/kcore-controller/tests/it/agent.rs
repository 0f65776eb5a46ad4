//! The real agent registration, heartbeat and renewal loops against the controller.

use crate::support::*;

#[tokio::test]
async fn agent_renews_a_short_lived_certificate_and_reloads_tls() {
    use std::os::unix::fs::PermissionsExt as _;
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    // A certificate with 2 days left: inside the 30-day renewal window.
    let now = time::OffsetDateTime::now_utc();
    let short = cl
        .sub
        .issue_between(
            &Identity::new(CLUSTER, Role::Node, "n1").unwrap(),
            &["localhost".into()],
            now - time::Duration::hours(1),
            now + time::Duration::days(2),
        )
        .unwrap();
    let mut ctx = agent_context(cl.dir.path(), &ctl.url, cl.root.cert_pem(), "n1", &short);
    let server_cfg =
        kcore_pki::server_config(cl.root.cert_pem(), &short.cert_pem, &short.key_pem).unwrap();
    let source = kcore_net::TlsSource::new(server_cfg);
    ctx.server_tls = Some(source.clone());
    let before_tls = source.current();

    let mut session = None;
    let ack = kcore_agent::registration::step(&ctx, &mut session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.status, NodeStatus::Ready);

    let cert_after = std::fs::read_to_string(&ctx.cert_file).unwrap();
    let key_after = std::fs::read_to_string(&ctx.key_file).unwrap();
    assert_ne!(cert_after, short.cert_pem, "certificate was not renewed");
    assert_ne!(key_after, short.key_pem, "renewal must use a fresh key");
    let expiry = kcore_pki::not_after(&cert_after).unwrap();
    assert!(
        expiry > now + time::Duration::days(60),
        "renewed cert expires {expiry}"
    );
    let mode = std::fs::metadata(&ctx.key_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(cl.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".new"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staged files left behind: {leftovers:?}"
    );
    assert!(
        !Arc::ptr_eq(&before_tls, &source.current()),
        "server TLS not reloaded"
    );
    // The loaded pair matches: a server config can be built from the files.
    kcore_pki::server_config(cl.root.cert_pem(), &cert_after, &key_after).unwrap();

    // The next step heartbeats with the new certificate and does not renew again.
    let ack = kcore_agent::registration::step(&ctx, &mut session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.status, NodeStatus::Ready);
    assert_eq!(std::fs::read_to_string(&ctx.cert_file).unwrap(), cert_after);

    // The controller recorded the new certificate for `kctl get nodes`.
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    let info = node.certificate.unwrap();
    assert_eq!(
        time::OffsetDateTime::parse(
            &info.not_after,
            &time::format_description::well_known::Rfc3339
        )
        .unwrap(),
        expiry
    );
    ctl.stop().await;
}

#[tokio::test]
async fn agent_with_a_fresh_certificate_does_not_renew() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let cert = cl.node("n1");
    let ctx = agent_context(cl.dir.path(), &ctl.url, cl.root.cert_pem(), "n1", &cert);
    let mut session = None;
    kcore_agent::registration::step(&ctx, &mut session)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&ctx.cert_file).unwrap(),
        cert.cert_pem
    );
    ctl.stop().await;
}

/// A fresh certificate from a sub-CA that was rotated out: the controller's answer asks
/// for a renewal and the real agent loop renews at once, onto the new sub-CA.
#[tokio::test]
async fn agent_with_a_certificate_of_a_retired_sub_ca_renews_at_once() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    // As a controller issued it a day ago: a renewal must end later than it.
    let ident = Identity::new(CLUSTER, Role::Node, "n1").unwrap();
    let (key_pem, csr_pem) = kcore_pki::generate_csr(&ident, &["localhost".into()]).unwrap();
    let cert = CertifiedKey {
        cert_pem: cl
            .sub
            .sign_csr(
                &csr_pem,
                &ident,
                kcore_pki::NODE_CERT_VALIDITY - Duration::from_secs(86_400),
            )
            .unwrap(),
        key_pem,
    };
    let ctx = agent_context(cl.dir.path(), &ctl.url, cl.root.cert_pem(), "n1", &cert);
    let mut session = None;
    let ack = kcore_agent::registration::step(&ctx, &mut session)
        .await
        .unwrap()
        .unwrap();
    assert!(!ack.renew_certificate);
    assert_eq!(
        std::fs::read_to_string(&ctx.cert_file).unwrap(),
        cert.cert_pem
    );

    let new_sub = cl.root.new_sub_ca("rotated", YEAR).unwrap();
    install_sub_ca(&client(&ctl.url, cl.root.cert_pem(), &cl.admin()), &new_sub)
        .await
        .unwrap();
    let ack = kcore_agent::registration::step(&ctx, &mut session)
        .await
        .unwrap()
        .unwrap();
    assert!(ack.renew_certificate, "the controller did not ask: {ack:?}");
    let renewed = std::fs::read_to_string(&ctx.cert_file).unwrap();
    assert_ne!(
        renewed,
        cert.cert_pem,
        "the agent did not renew: {:?}",
        session.as_ref().and_then(|s| s.renewal_problem())
    );
    assert!(
        renewed.ends_with(new_sub.cert_pem()),
        "not issued by the new sub-CA"
    );
    // Its next heartbeat presents the new certificate: nothing more to do.
    let ack = kcore_agent::registration::step(&ctx, &mut session)
        .await
        .unwrap()
        .unwrap();
    assert!(!ack.renew_certificate);
    assert_eq!(std::fs::read_to_string(&ctx.cert_file).unwrap(), renewed);
    ctl.stop().await;
}

#[tokio::test]
async fn agent_loop_registers_then_heartbeats_until_shutdown() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let ctx = agent_context(
        cl.dir.path(),
        &ctl.url,
        cl.root.cert_pem(),
        "n1",
        &cl.node("n1"),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(kcore_agent::registration::run(ctx, async move {
        let _ = rx.await;
    }));
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    let mut beats = std::collections::BTreeSet::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(node) = admin.get_json::<Node>("/v1/nodes/n1").await {
            beats.insert(node.last_heartbeat.unwrap());
            if beats.len() >= 2 {
                break;
            }
        }
    }
    // Heartbeat times are whole seconds, so two distinct values mean the loop kept going.
    let _ = tx.send(());
    agent.await.unwrap();
    assert!(
        beats.len() >= 2,
        "expected heartbeats in two different seconds, saw {beats:?}"
    );
    ctl.stop().await;
}

#[tokio::test]
async fn agent_keeps_its_certificate_when_a_renewal_would_not_last_longer() {
    let cl = Cluster::new();
    // The controller's sub-CA ends in 20 days; the node's certificate already ends then,
    // so every renewal can at best produce the same end (review D2: renewing on every
    // heartbeat).
    let sub = cl
        .root
        .new_sub_ca("ending", Duration::from_secs(20 * 86_400))
        .unwrap();
    cl.write("sub-ca.crt", sub.cert_pem());
    cl.write("sub-ca.key", sub.key_pem());
    let ctl = Running::start(cl.config(false)).await;
    let ident = Identity::new(CLUSTER, Role::Node, "n1").unwrap();
    let (key_pem, csr_pem) = kcore_pki::generate_csr(&ident, &["localhost".into()]).unwrap();
    let cert_pem = sub.sign_csr(&csr_pem, &ident, YEAR).unwrap();
    let current = CertifiedKey { cert_pem, key_pem };
    let trust = cl.root.cert_pem();
    let ctx = agent_context(cl.dir.path(), &ctl.url, trust, "n1", &current);
    let mut session = None;
    kcore_agent::registration::step(&ctx, &mut session)
        .await
        .unwrap();
    let problem = session
        .as_ref()
        .and_then(|s| s.renewal_problem())
        .expect("the renewal was refused")
        .to_string();
    assert!(
        problem.contains("not later than the current one"),
        "{problem}"
    );
    assert_eq!(
        std::fs::read_to_string(&ctx.cert_file).unwrap(),
        current.cert_pem,
        "the current certificate stays on disk"
    );
    // The next turns do not ask again (a new request would now get RENEW_RATE_LIMITED
    // and change the problem), and the controller learns about it from the report.
    let admin = client(&ctl.url, trust, &cl.admin());
    for _ in 0..3 {
        kcore_agent::registration::step(&ctx, &mut session)
            .await
            .unwrap();
    }
    let still = session.as_ref().and_then(|s| s.renewal_problem()).unwrap();
    assert_eq!(still, problem);
    let node: Node = admin.get_json("/v1/nodes/n1").await.unwrap();
    let shown = node.report.certificate_renewal_problem.unwrap_or_default();
    assert!(shown.contains("not later than the current one"), "{shown}");
    ctl.stop().await;
}
