//! The client side: every kcore client checks the server's role and cluster.

use crate::support::*;
use kcore_net::*;
use kcore_pki::*;

#[tokio::test]
async fn clients_can_require_the_server_identity() {
    let p = pki();
    let controller = start(mtls_server(&p), app(named("ctl"))).await;
    // A node certificate that lists 127.0.0.1, as a node's own certificate would.
    let rogue_leaf = p
        .sub
        .issue(&ident(Role::Node, "n9"), &local_names(), DAY)
        .unwrap();
    let rogue_tls = TlsSource::new(
        server_config(p.root.cert_pem(), &rogue_leaf.cert_pem, &rogue_leaf.key_pem).unwrap(),
    );
    let rogue = start(rogue_tls, app(named("rogue"))).await;

    let me = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let expecting = |expect: PeerExpectation, url: &str| {
        client_with(
            &[url],
            client_config_expecting(p.root.cert_pem(), &me.cert_pem, &me.key_pem, &expect).unwrap(),
            quick(),
        )
    };
    let controllers = PeerExpectation::controller("lab");

    let who: WhoAmI = expecting(controllers.clone(), &controller.url)
        .get_json("/v1/whoami")
        .await
        .unwrap();
    assert_eq!(who.server, "ctl");
    // Plain client_config would accept the rogue (valid chain, matching IP SAN) ...
    let _: WhoAmI = mtls_client(&p.root, &me, &[&rogue.url])
        .get_json("/v1/whoami")
        .await
        .unwrap();
    // ... the expecting config does not, and says why.
    let err = expecting(controllers.clone(), &rogue.url)
        .get_json::<WhoAmI>("/v1/whoami")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("speaks for kcore://lab/node/n9, expected kcore://lab/controller/*"),
        "{err}"
    );
    // A controller certificate of another cluster under the same root is refused too.
    let foreign_leaf = p
        .sub
        .issue(
            &Identity::new("other", Role::Controller, "ctl").unwrap(),
            &local_names(),
            DAY,
        )
        .unwrap();
    let foreign = start(
        TlsSource::new(
            server_config(
                p.root.cert_pem(),
                &foreign_leaf.cert_pem,
                &foreign_leaf.key_pem,
            )
            .unwrap(),
        ),
        app(named("foreign")),
    )
    .await;
    let err = expecting(controllers.clone(), &foreign.url)
        .get_json::<WhoAmI>("/v1/whoami")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("speaks for kcore://other/controller/ctl, expected kcore://lab/controller/*"),
        "{err}"
    );
    foreign.stop().await;

    let exact = PeerExpectation::Exactly(ident(Role::Node, "n9"));
    let who: WhoAmI = expecting(exact, &rogue.url)
        .get_json("/v1/whoami")
        .await
        .unwrap();
    assert_eq!(who.server, "rogue");
    let wrong = PeerExpectation::Exactly(ident(Role::Node, "n8"));
    assert!(
        expecting(wrong, &rogue.url)
            .get_json::<WhoAmI>("/v1/whoami")
            .await
            .is_err()
    );
    controller.stop().await;
    rogue.stop().await;
}

/// The server side of the authorisation matrix: each kind of kcore client (by the
/// expectation it builds) against servers presenting the right role, a wrong role,
/// the wrong node and another cluster's certificate (all signed by the same root).
#[tokio::test]
async fn every_client_accepts_only_its_server_role_and_cluster() {
    let p = pki();
    let cert = |cluster: &str, role: Role, id: &str| {
        p.sub
            .issue(
                &Identity::new(cluster, role, id).unwrap(),
                &local_names(),
                DAY,
            )
            .unwrap()
    };
    let servers = [
        ("controller lab/ctl", cert("lab", Role::Controller, "ctl")),
        ("node lab/n1", cert("lab", Role::Node, "n1")),
        ("node lab/n2", cert("lab", Role::Node, "n2")),
        ("admin lab/ops", cert("lab", Role::Admin, "ops")),
        (
            "controller other/ctl",
            cert("other", Role::Controller, "ctl"),
        ),
        ("node other/n1", cert("other", Role::Node, "n1")),
    ];
    // (client, its expectation, which servers it must accept)
    let clients = [
        (
            "kctl, agents and peers -> controller",
            PeerExpectation::controller("lab"),
            vec!["controller lab/ctl"],
        ),
        (
            "kctl --node (managed)",
            PeerExpectation::node("lab", None).unwrap(),
            vec!["node lab/n1", "node lab/n2"],
        ),
        (
            "kctl --node --node-id n1",
            PeerExpectation::node("lab", Some("n1")).unwrap(),
            vec!["node lab/n1"],
        ),
    ];
    let me = p.sub.issue(&ident(Role::Admin, "alice"), &[], DAY).unwrap();
    let mut running = Vec::new();
    for (name, leaf) in &servers {
        let tls = TlsSource::new(
            server_config(p.root.cert_pem(), &leaf.cert_pem, &leaf.key_pem).unwrap(),
        );
        running.push((*name, start(tls, app(named("any"))).await));
    }
    let mut mismatches = Vec::new();
    for (client_name, expectation, accepts) in &clients {
        for (server_name, server) in &running {
            let client = client_with(
                &[&server.url],
                client_config_expecting(p.root.cert_pem(), &me.cert_pem, &me.key_pem, expectation)
                    .unwrap(),
                quick(),
            );
            let result = client.get_json::<WhoAmI>("/v1/whoami").await;
            let accepted = result.is_ok();
            if accepted != accepts.contains(server_name) {
                mismatches.push(format!("{client_name} x {server_name}: {result:?}"));
            }
            if let Err(err) = result {
                let text = err.to_string();
                if !text.contains(&expectation.describe()) {
                    mismatches.push(format!(
                        "{client_name} x {server_name}: the error does not say what was expected: {text}"
                    ));
                }
            }
        }
    }
    for (_, server) in running {
        server.stop().await;
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

// Issue 15: "no server answered" only when none did. A server whose certificate the
// client refuses did answer (its reason is marked as a TLS failure); a closed port did not.
#[tokio::test]
async fn a_refused_certificate_is_an_answer_and_a_closed_port_is_not() {
    let p = pki();
    let rogue_leaf = p
        .sub
        .issue(&ident(Role::Node, "n9"), &local_names(), DAY)
        .unwrap();
    let rogue = start(
        TlsSource::new(
            server_config(p.root.cert_pem(), &rogue_leaf.cert_pem, &rogue_leaf.key_pem).unwrap(),
        ),
        app(named("rogue")),
    )
    .await;
    let me = p.sub.issue(&ident(Role::Admin, "a"), &[], DAY).unwrap();
    let tls = || {
        client_config_expecting(
            p.root.cert_pem(),
            &me.cert_pem,
            &me.key_pem,
            &PeerExpectation::controller("lab"),
        )
        .unwrap()
    };
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("https://{}", l.local_addr().unwrap())
    };
    let err = client_with(&[&closed, &rogue.url], tls(), quick())
        .get_json::<WhoAmI>("/v1/whoami")
        .await
        .unwrap_err();
    let ClientError::Unreachable { attempts, .. } = &err else {
        panic!("expected Unreachable, got {err:?}");
    };
    assert!(!attempts[0].1.starts_with(TLS_FAILED), "{attempts:?}");
    assert!(attempts[1].1.starts_with(TLS_FAILED), "{attempts:?}");
    assert!(
        err.to_string()
            .starts_with("no server could serve the request: "),
        "{err}"
    );
    let err = client_with(&[&closed], tls(), quick())
        .get_json::<WhoAmI>("/v1/whoami")
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("no server answered: "), "{err}");
    rogue.stop().await;
}
