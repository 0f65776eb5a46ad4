//! Integration tests of the certificate authority, CSR flow and inspection helpers.
//! TLS handshakes over real sockets are tested in kcore-net.
#![allow(clippy::unwrap_used)] // tests may unwrap (team rule); helpers are test code too

use std::time::Duration;

use kcore_pki::*;
use time::OffsetDateTime;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn ident(role: Role, id: &str) -> Identity {
    Identity::new("lab", role, id).unwrap()
}

fn leaf_der(pem: &str) -> Vec<u8> {
    certs_from_pem(pem).unwrap()[0].to_vec()
}

#[test]
fn root_sub_ca_and_leaf_chain() {
    let root = Authority::new_root("lab", 3650 * DAY).unwrap();
    assert!(
        root.chain_pem().is_empty(),
        "a root adds nothing to leaf chains"
    );
    assert_eq!(root.cluster_name(), "lab");
    let sub = root.new_sub_ca("c1", 365 * DAY).unwrap();
    assert_eq!(certs_from_pem(sub.chain_pem()).unwrap().len(), 1);
    assert_eq!(sub.cluster_name(), "lab");

    let leaf = sub
        .issue(
            &ident(Role::Node, "n1"),
            &["n1.lab".into(), "127.0.0.1".into()],
            90 * DAY,
        )
        .unwrap();
    let chain = certs_from_pem(&leaf.cert_pem).unwrap();
    assert_eq!(chain.len(), 2, "leaf + sub-CA");
    assert_eq!(
        chain[1].as_ref(),
        certs_from_pem(sub.cert_pem()).unwrap()[0].as_ref()
    );
    assert_eq!(identity_of(&chain[0]).unwrap(), ident(Role::Node, "n1"));
    assert!(leaf.key_pem.contains("BEGIN PRIVATE KEY"), "PKCS#8");
    assert!(
        !format!("{leaf:?}").contains("PRIVATE"),
        "Debug must not print the key"
    );

    // An Authority reloaded from its PEMs keeps signing valid chains.
    let reloaded = Authority::from_pem(sub.cert_pem(), sub.key_pem()).unwrap();
    let again = reloaded
        .issue(&ident(Role::Admin, "ops"), &[], DAY)
        .unwrap();
    assert_eq!(
        identity_of(&leaf_der(&again.cert_pem)).unwrap().role,
        Role::Admin
    );
}

#[test]
fn leaf_validity_is_clamped_to_the_issuer() {
    let root = Authority::new_root("lab", 10 * DAY).unwrap();
    let sub = root.new_sub_ca("c1", 100 * DAY).unwrap();
    assert!(sub.not_after() <= root.not_after());
    let leaf = sub
        .issue(&ident(Role::Node, "n1"), &[], 1000 * DAY)
        .unwrap();
    assert!(not_after(&leaf.cert_pem).unwrap() <= root.not_after());
}

#[test]
fn from_pem_refuses_a_foreign_key_and_a_leaf() {
    let a = Authority::new_root("lab", DAY).unwrap();
    let b = Authority::new_root("lab", DAY).unwrap();
    let err = Authority::from_pem(a.cert_pem(), b.key_pem()).unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
    let leaf = a.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let err = Authority::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");
}

#[test]
fn csr_flow_signs_only_the_expected_identity() {
    let root = Authority::new_root("lab", 3650 * DAY).unwrap();
    let sub = root.new_sub_ca("c1", 365 * DAY).unwrap();
    let me = ident(Role::Node, "n7");
    let (key_pem, csr_pem) = generate_csr(&me, &["n7.lab".into(), "10.0.0.7".into()]).unwrap();
    assert!(csr_pem.contains("CERTIFICATE REQUEST"));
    assert!(!csr_pem.contains("PRIVATE KEY"));

    let cert_pem = sub.sign_csr(&csr_pem, &me, 90 * DAY).unwrap();
    let chain = certs_from_pem(&cert_pem).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(identity_of(&chain[0]).unwrap(), me);
    // The certificate is for the caller's key: it builds a usable client config.
    client_config(root.cert_pem(), &cert_pem, &key_pem).unwrap();

    for wrong in [
        ident(Role::Node, "n8"),
        ident(Role::Controller, "n7"),
        Identity::new("other", Role::Node, "n7").unwrap(),
    ] {
        let err = sub.sign_csr(&csr_pem, &wrong, DAY).unwrap_err();
        assert!(matches!(err, PkiError::IdentityMismatch { .. }), "{err}");
    }
    let err = sub.sign_csr("garbage", &me, DAY).unwrap_err();
    assert!(err.to_string().contains("CSR"), "{err}");
}

#[test]
fn certificates_without_identity_are_reported() {
    let (install, fp) = self_signed_install(&["127.0.0.1".into(), "kcore-iso".into()]).unwrap();
    let der = leaf_der(&install.cert_pem);
    assert_eq!(fp, fingerprint_sha256(&der));
    assert!(matches!(
        identity_of(&der),
        Err(PkiError::NoIdentity { .. })
    ));
}

#[test]
fn fingerprints_normalise() {
    let (install, fp) = self_signed_install(&["localhost".into()]).unwrap();
    assert_eq!(fp.len(), 64);
    assert!(
        fp.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    let colons = fp
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(normalise_fingerprint(&colons).unwrap(), fp);
    assert_eq!(display_fingerprint(&fp).unwrap(), colons);
    assert_eq!(display_fingerprint(&colons).unwrap(), colons);
    assert!(normalise_fingerprint(&fp[1..]).is_err());
    assert!(normalise_fingerprint(&fp.replace(&fp[..1], "z")).is_err());
    drop(install);
}

#[test]
fn renewal_window() {
    let root = Authority::new_root("lab", 3650 * DAY).unwrap();
    let leaf = root.issue(&ident(Role::Node, "n1"), &[], 90 * DAY).unwrap();
    let expiry = not_after(&leaf.cert_pem).unwrap();
    let now = OffsetDateTime::now_utc();
    assert!((expiry - now - time::Duration::days(90)).abs() < time::Duration::minutes(1));
    assert!(!needs_renewal(&leaf.cert_pem, now, RENEW_BEFORE).unwrap());
    assert!(needs_renewal(&leaf.cert_pem, now + time::Duration::days(61), RENEW_BEFORE).unwrap());
    assert!(!needs_renewal(&leaf.cert_pem, now + time::Duration::days(59), RENEW_BEFORE).unwrap());
}

#[test]
fn issue_between_makes_expired_certificates_for_tests() {
    let root = Authority::new_root("lab", 3650 * DAY).unwrap();
    let now = OffsetDateTime::now_utc();
    let old = root
        .issue_between(
            &ident(Role::Node, "n1"),
            &[],
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        )
        .unwrap();
    assert!(not_after(&old.cert_pem).unwrap() < now);
    assert!(
        root.issue_between(&ident(Role::Node, "n1"), &[], now, now)
            .is_err()
    );
}

#[test]
fn cert_info_describes_a_leaf() {
    let root = Authority::new_root("lab", 3650 * DAY).unwrap();
    let sub = root.new_sub_ca("c1", 365 * DAY).unwrap();
    let leaf = sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let der = leaf_der(&leaf.cert_pem);
    let info = cert_info(&der).unwrap();
    assert_eq!(info.identity, Some(ident(Role::Node, "n1")));
    assert_eq!(info.serial, serial_hex(&der).unwrap());
    assert_eq!(info.fingerprint, fingerprint_sha256(&der));
    assert_eq!(info.not_after, not_after(&leaf.cert_pem).unwrap());
    assert!(info.not_before < info.not_after);
    assert!(info.subject.contains("node n1"), "{}", info.subject);
    assert!(info.issuer.contains("sub-CA c1"), "{}", info.issuer);
    assert!(!info.is_ca);
    assert!(cert_info(&leaf_der(sub.cert_pem())).unwrap().is_ca);
}

#[test]
fn chains_verify_like_the_mtls_server_does() {
    let root = Authority::new_root("lab", 3650 * DAY).unwrap();
    let sub = root.new_sub_ca("c1", 365 * DAY).unwrap();
    let leaf = sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    assert_eq!(
        verify_client_chain(root.cert_pem(), &leaf.cert_pem).unwrap(),
        Some(ident(Role::Node, "n1"))
    );
    sub.check_chains_to(root.cert_pem()).unwrap();

    let stranger = Authority::new_root("lab", DAY).unwrap();
    let foreign_sub = stranger.new_sub_ca("x", DAY).unwrap();
    let err = foreign_sub.check_chains_to(root.cert_pem()).unwrap_err();
    assert!(matches!(err, PkiError::Untrusted(_)), "{err}");

    let now = OffsetDateTime::now_utc();
    let expired = sub
        .issue_between(
            &ident(Role::Node, "n1"),
            &[],
            now - time::Duration::days(3),
            now - time::Duration::days(1),
        )
        .unwrap();
    let err = verify_client_chain(root.cert_pem(), &expired.cert_pem).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
}

#[test]
fn csr_names_can_be_restricted_to_what_the_controller_knows() {
    let root = Authority::new_root("lab", 3650 * DAY).unwrap();
    let me = ident(Role::Node, "n1");
    let (_, csr) = generate_csr(&me, &["n1.lab".into(), "10.0.0.1".into()]).unwrap();
    let allowed = vec![
        "N1.lab.".to_string(),
        "10.0.0.1".to_string(),
        "extra".to_string(),
    ];
    let pem = root.sign_csr_for_names(&csr, &me, &allowed, DAY).unwrap();
    assert_eq!(identity_of(&leaf_der(&pem)).unwrap(), me);

    let (_, greedy) = generate_csr(&me, &["n1.lab".into(), "ctl1.lab".into()]).unwrap();
    let err = root
        .sign_csr_for_names(&greedy, &me, &allowed, DAY)
        .unwrap_err();
    match err {
        PkiError::NameNotAllowed { name, .. } => assert_eq!(name, "ctl1.lab"),
        other => panic!("expected NameNotAllowed, got {other}"),
    }
    // The unrestricted call keeps what the CSR asked for.
    root.sign_csr(&greedy, &me, DAY).unwrap();
}

// --- Trust checks from the security review (D2, D8, D12) ---

fn creds(root: &Authority, leaf: &CertifiedKey) -> Credentials {
    Credentials {
        ca_pem: root.cert_pem().to_string(),
        cert_pem: leaf.cert_pem.clone(),
        key_pem: leaf.key_pem.clone(),
    }
}

#[test]
fn a_renewal_must_be_valid_same_identity_same_key_and_longer_lived() {
    let root = Authority::new_root("lab", 3650 * DAY).unwrap();
    let sub = root.new_sub_ca("c1", 365 * DAY).unwrap();
    let n1 = ident(Role::Node, "n1");
    let now = OffsetDateTime::now_utc();
    let current = creds(
        &root,
        &sub.issue_between(
            &n1,
            &[],
            now - time::Duration::days(1),
            now + time::Duration::days(10),
        )
        .unwrap(),
    );
    let refused = |renewed: &Credentials| match current.check_replacement(renewed, now) {
        Err(PkiError::RenewalRefused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };

    let longer = creds(&root, &sub.issue(&n1, &[], 90 * DAY).unwrap());
    current.check_replacement(&longer, now).unwrap();

    // Already expired (what a controller with an expired sub-CA handed out).
    let expired = sub
        .issue_between(
            &n1,
            &[],
            now - time::Duration::days(3),
            now - time::Duration::days(1),
        )
        .unwrap();
    assert!(refused(&creds(&root, &expired)).contains("already expired"));
    // Valid, but ending earlier than the current one.
    let shorter = sub.issue(&n1, &[], 5 * DAY).unwrap();
    assert!(refused(&creds(&root, &shorter)).contains("not later than the current one"));
    // Another node's certificate.
    let other = sub.issue(&ident(Role::Node, "n2"), &[], 90 * DAY).unwrap();
    assert!(refused(&creds(&root, &other)).contains("speaks for kcore://lab/node/n2"));
    // A certificate with somebody else's key.
    let mut wrong_key = creds(&root, &longer_leaf(&sub, &n1));
    wrong_key.key_pem = shorter.key_pem.clone();
    assert!(refused(&wrong_key).contains("not for the key"));
    // Signed by a CA this node does not trust.
    let stranger = Authority::new_root("lab", 3650 * DAY).unwrap();
    let foreign = stranger.issue(&n1, &[], 90 * DAY).unwrap();
    assert!(refused(&creds(&root, &foreign)).contains("does not verify"));
}

fn longer_leaf(sub: &Authority, who: &Identity) -> CertifiedKey {
    sub.issue(who, &[], 90 * DAY).unwrap()
}

#[test]
fn credentials_name_both_files_when_the_key_does_not_match() {
    let root = Authority::new_root("lab", 3650 * DAY).unwrap();
    let a = root.issue(&ident(Role::Admin, "a"), &[], DAY).unwrap();
    let b = root.issue(&ident(Role::Admin, "b"), &[], DAY).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = (
        dir.path().join("ca.crt"),
        dir.path().join("admin.crt"),
        dir.path().join("admin.key"),
    );
    std::fs::write(&ca, root.cert_pem()).unwrap();
    std::fs::write(&cert, &a.cert_pem).unwrap();
    std::fs::write(&key, &b.key_pem).unwrap();
    let err = Credentials::load(&CredentialFiles::new(&ca, &cert, &key))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("admin.key does not belong to the certificate") && err.contains("admin.crt"),
        "{err}"
    );
    std::fs::write(&key, &a.key_pem).unwrap();
    let loaded = Credentials::load(&CredentialFiles::new(&ca, &cert, &key)).unwrap();
    assert_eq!(loaded.identity().unwrap(), ident(Role::Admin, "a"));
    assert!(
        !format!("{loaded:?}").contains("PRIVATE"),
        "Debug hides the key"
    );
}

#[test]
fn csr_signing_refuses_wildcards_rsa_keys_and_an_expired_signer() {
    let root = Authority::new_root("lab", 3650 * DAY).unwrap();
    let sub = root.new_sub_ca("c1", 365 * DAY).unwrap();
    let n1 = ident(Role::Node, "n1");
    let (_, wild) = generate_csr(&n1, &["*.lab".into()]).unwrap();
    let err = sub.sign_csr(&wild, &n1, 90 * DAY).unwrap_err();
    assert!(
        matches!(&err, PkiError::WildcardName { name, .. } if name == "*.lab"),
        "{err}"
    );
    let allowed = ["*.lab".to_string()];
    let err = sub
        .sign_csr_for_names(&wild, &n1, &allowed, 90 * DAY)
        .unwrap_err();
    assert!(
        matches!(err, PkiError::WildcardName { .. }),
        "even when listed"
    );

    // `openssl req -newkey rsa:N -addext subjectAltName=URI:kcore://lab/node/n1`: RSA-2048
    // is signed, RSA-1024 (which ring refuses) gets a message naming the accepted keys
    // instead of "Unspecified ring error" (review D12).
    let rsa2048 = include_str!("fixtures/rsa-2048-node-n1.csr");
    sub.sign_csr(rsa2048, &n1, 90 * DAY).unwrap();
    let rsa1024 = include_str!("fixtures/rsa-1024-node-n1.csr");
    let err = sub
        .sign_csr(rsa1024, &n1, 90 * DAY)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the CSR's key is RSA-1024") && err.contains("ECDSA P-256"),
        "{err}"
    );

    // A sub-CA past its end signs nothing (it would hand out dead certificates).
    let brief = root.new_sub_ca("brief", Duration::from_secs(1)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (_, csr) = generate_csr(&n1, &[]).unwrap();
    let err = brief.sign_csr(&csr, &n1, 90 * DAY).unwrap_err();
    assert!(matches!(err, PkiError::SignerNotValid { .. }), "{err}");
    assert!(err.to_string().contains("does not include now"), "{err}");
    let err = brief.issue(&n1, &[], DAY).unwrap_err();
    assert!(matches!(err, PkiError::SignerNotValid { .. }), "{err}");
}
