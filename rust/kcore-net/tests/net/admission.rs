//! mTLS admission: identity and expiry reach the handler; missing, foreign, expired,
//! identity-less and other-cluster certificates are refused; rotated sub-CAs, CSR-made
//! certificates; revocation by serial and by the sub-CA's CRL.

use crate::support::*;
use kcore_net::*;
use kcore_pki::*;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use time::OffsetDateTime;

#[tokio::test]
async fn mtls_identity_and_expiry_reach_the_handler() {
    let p = pki();
    let server = start(mtls_server(&p), app(named("a"))).await;
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    let client = mtls_client(&p.root, &admin, &[&server.url]);
    let who: WhoAmI = client.get_json("/v1/whoami").await.unwrap();
    assert_eq!(who.identity.as_deref(), Some("kcore://lab/admin/ops"));
    assert_eq!(
        who.not_after,
        Some(not_after(&admin.cert_pem).unwrap().unix_timestamp())
    );
    let der = certs_from_pem(&admin.cert_pem).unwrap()[0].clone();
    assert_eq!(who.fingerprint, Some(fingerprint_sha256(&der)));
    assert_eq!(who.serial, Some(serial_hex(&der).unwrap()));
    // Unknown routes answer with the envelope as well.
    let err = client.get_json::<Value>("/v1/nope").await.unwrap_err();
    assert_eq!(err.api_code(), Some("NOT_FOUND"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn clients_without_valid_certificates_are_refused() {
    let p = pki();
    let state = named("a");
    let hits = state.hits.clone();
    let server = start(mtls_server(&p), app(state)).await;

    // Positive control: a good node certificate from the sub-CA is accepted.
    let node = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let who: WhoAmI = mtls_client(&p.root, &node, &[&server.url])
        .get_json("/v1/whoami")
        .await
        .unwrap();
    assert_eq!(who.identity.as_deref(), Some("kcore://lab/node/n1"));

    // No client certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(certs_from_pem(p.root.cert_pem()).unwrap()[0].clone())
        .unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert_refused(&client_with(&[&server.url], anonymous, quick())).await;

    // A certificate from another cluster's CA, even with a plausible identity.
    let other = Authority::new_root("lab", DAY).unwrap();
    let foreign = other.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    assert_refused(&mtls_client(&p.root, &foreign, &[&server.url])).await;

    // An expired certificate from the right sub-CA.
    let now = OffsetDateTime::now_utc();
    let expired = p
        .sub
        .issue_between(
            &ident(Role::Node, "n1"),
            &[],
            now - time::Duration::days(30),
            now - time::Duration::hours(1),
        )
        .unwrap();
    assert_refused(&mtls_client(&p.root, &expired, &[&server.url])).await;

    // A leaf whose chain lacks its sub-CA cannot be verified against the root.
    let leaf_only = CertifiedKey {
        cert_pem: node
            .cert_pem
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap()
            .to_string(),
        key_pem: node.key_pem.clone(),
    };
    assert_eq!(certs_from_pem(&leaf_only.cert_pem).unwrap().len(), 1);
    assert_refused(&mtls_client(&p.root, &leaf_only, &[&server.url])).await;

    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "only the good client reached the handler"
    );
    server.stop().await;
}

#[tokio::test]
async fn leaves_of_a_rotated_sub_ca_stay_valid_until_they_expire() {
    let p = pki();
    let server = start(mtls_server(&p), app(named("a"))).await;
    let old_leaf = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let rotated = p.root.new_sub_ca("c1-2", 365 * DAY).unwrap();
    let new_leaf = rotated.issue(&ident(Role::Node, "n2"), &[], DAY).unwrap();
    assert_ne!(
        certs_from_pem(&old_leaf.cert_pem).unwrap()[1],
        certs_from_pem(&new_leaf.cert_pem).unwrap()[1],
        "the two leaves carry different sub-CAs"
    );
    for (leaf, id) in [(&old_leaf, "n1"), (&new_leaf, "n2")] {
        let who: WhoAmI = mtls_client(&p.root, leaf, &[&server.url])
            .get_json("/v1/whoami")
            .await
            .unwrap();
        assert_eq!(who.identity, Some(format!("kcore://lab/node/{id}")));
    }
    server.stop().await;
}

#[tokio::test]
async fn revoked_serials_get_401_and_the_set_is_hot_swappable() {
    let p = pki();
    let tls = mtls_server(&p);
    let server = start(tls.clone(), app(named("a"))).await;
    let n1 = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let n2 = p.sub.issue(&ident(Role::Node, "n2"), &[], DAY).unwrap();
    let (c1, c2) = (
        mtls_client(&p.root, &n1, &[&server.url]),
        mtls_client(&p.root, &n2, &[&server.url]),
    );
    let _: WhoAmI = c1.get_json("/v1/whoami").await.unwrap();

    // Colons and upper case are accepted, as operators paste them.
    let pasted = serial_of(&n1)
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_string())
        .collect::<Vec<_>>()
        .join(":");
    tls.set_revoked_serials([pasted]);
    // A fresh client: the revocation set applies per connection.
    let c1 = mtls_client(&p.root, &n1, &[&server.url]);
    match c1.get_json::<WhoAmI>("/v1/whoami").await.unwrap_err() {
        ClientError::Api { status, error, .. } => {
            assert_eq!(status, 401);
            assert_eq!(error.code, "CERTIFICATE_REVOKED");
            assert!(error.message.contains(&serial_of(&n1)), "{}", error.message);
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let who: WhoAmI = c2.get_json("/v1/whoami").await.unwrap();
    assert_eq!(who.identity.as_deref(), Some("kcore://lab/node/n2"));

    tls.set_revoked_serials(Vec::<String>::new());
    let c1 = mtls_client(&p.root, &n1, &[&server.url]);
    let _: WhoAmI = c1.get_json("/v1/whoami").await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn crl_from_the_sub_ca_refuses_the_listed_leaf_in_the_handshake() {
    let p = pki();
    let n1 = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let n2 = p.sub.issue(&ident(Role::Node, "n2"), &[], DAY).unwrap();
    let crl = p
        .sub
        .revocation_list(&[serial_of(&n1)], 1, 7 * DAY)
        .unwrap();
    assert!(crl.contains("BEGIN X509 CRL"));
    let leaf = p
        .sub
        .issue(&ident(Role::Controller, "c1"), &local_names(), 30 * DAY)
        .unwrap();
    let tls = TlsSource::new(
        server_config_with_crls(p.root.cert_pem(), &leaf.cert_pem, &leaf.key_pem, &[crl]).unwrap(),
    );
    let server = start(tls, app(named("a"))).await;
    assert_refused(&mtls_client(&p.root, &n1, &[&server.url])).await;
    let who: WhoAmI = mtls_client(&p.root, &n2, &[&server.url])
        .get_json("/v1/whoami")
        .await
        .unwrap();
    assert_eq!(who.identity.as_deref(), Some("kcore://lab/node/n2"));
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_from_a_csr_authenticates_its_node() {
    let p = pki();
    let server = start(mtls_server(&p), app(named("a"))).await;
    let me = ident(Role::Node, "n5");
    let (key_pem, csr_pem) = generate_csr(&me, &local_names()).unwrap();
    let cert_pem = p.sub.sign_csr(&csr_pem, &me, 90 * DAY).unwrap();
    let creds = CertifiedKey { cert_pem, key_pem };
    let who: WhoAmI = mtls_client(&p.root, &creds, &[&server.url])
        .get_json("/v1/whoami")
        .await
        .unwrap();
    assert_eq!(who.identity.as_deref(), Some("kcore://lab/node/n5"));
    server.stop().await;
}

#[tokio::test]
async fn a_valid_certificate_without_kcore_identity_is_unauthenticated() {
    // Signed by the cluster root (so the handshake succeeds) but carrying no kcore://
    // URI: built with rcgen directly, because kcore-pki never issues such a thing.
    let p = pki();
    let issuer_key = rcgen::KeyPair::from_pem(p.root.key_pem()).unwrap();
    let issuer = rcgen::CertificateParams::from_ca_cert_pem(p.root.cert_pem())
        .unwrap()
        .self_signed(&issuer_key)
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["anonymous.lab".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer, &issuer_key).unwrap();
    let anonymous = CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };

    let server = start(mtls_server(&p), app(named("a"))).await;
    let client = mtls_client(&p.root, &anonymous, &[&server.url]);
    let who: WhoAmI = client.get_json("/v1/whoami").await.unwrap();
    assert_eq!(who.identity, None, "handshake passes, identity is absent");
    assert!(
        who.fingerprint.is_some(),
        "the certificate facts are still there"
    );
    for (path, body) in [
        ("/v1/admin", None),
        ("/v1/nodes/n1/report", Some(json!({"step": 1}))),
    ] {
        let err = match body {
            None => client.get_json::<Value>(path).await.unwrap_err(),
            Some(b) => client.post_json::<_, Value>(path, &b).await.unwrap_err(),
        };
        match err {
            ClientError::Api { status, error, .. } => {
                assert_eq!(status, 401, "{path}");
                assert_eq!(error.code, "UNAUTHENTICATED");
            }
            other => panic!("{path}: expected 401, got {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn certificates_of_another_cluster_get_403_wrong_cluster() {
    let p = pki();
    let options = ServeOptions {
        cluster: Some("lab".into()),
        ..ServeOptions::default()
    };
    let server = start_with(mtls_server(&p), app(named("a")), options).await;
    // Signed by the same sub-CA, so the handshake passes; the URI names cluster "other".
    let stranger = p
        .sub
        .issue(
            &Identity::new("other", Role::Admin, "ops").unwrap(),
            &[],
            DAY,
        )
        .unwrap();
    let client = mtls_client(&p.root, &stranger, &[&server.url]);
    for path in ["/v1/whoami", "/v1/admin", "/v1/nope"] {
        match client.get_json::<Value>(path).await.unwrap_err() {
            ClientError::Api { status, error, .. } => {
                assert_eq!(status, 403, "{path}");
                assert_eq!(error.code, "WRONG_CLUSTER", "{path}");
                assert!(error.message.contains("\"other\""), "{}", error.message);
            }
            other => panic!("{path}: expected 403 WRONG_CLUSTER, got {other:?}"),
        }
    }
    // Its own cluster's admin is served.
    let admin = p.sub.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    let _: Value = mtls_client(&p.root, &admin, &[&server.url])
        .get_json("/v1/admin")
        .await
        .unwrap();
    server.stop().await;
}
