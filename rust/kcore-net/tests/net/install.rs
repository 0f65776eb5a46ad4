//! Install mode: a self-signed server reached with `-k` or a pinned fingerprint.

use crate::support::*;
use kcore_net::*;
use kcore_pki::*;

#[tokio::test]
async fn install_mode_with_insecure_and_pinned_clients() {
    let (cert, fingerprint) = self_signed_install(&local_names()).unwrap();
    let tls = TlsSource::new(server_config_no_client_auth(&cert.cert_pem, &cert.key_pem).unwrap());
    let server = start(tls, app(named("iso"))).await;

    let insecure = client_with(&[&server.url], client_config_insecure().unwrap(), quick());
    let who: WhoAmI = insecure.get_json("/v1/whoami").await.unwrap();
    assert_eq!(who.identity, None, "install mode has no client identity");

    let upper_with_colons = fingerprint
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let pinned = client_with(
        &[&server.url],
        client_config_pinned(&upper_with_colons).unwrap(),
        quick(),
    );
    let who: WhoAmI = pinned.get_json("/v1/whoami").await.unwrap();
    assert_eq!(who.server, "iso");

    let (_, other_fp) = self_signed_install(&local_names()).unwrap();
    let wrong = client_with(
        &[&server.url],
        client_config_pinned(&other_fp).unwrap(),
        quick(),
    );
    let err = wrong.get_json::<WhoAmI>("/v1/whoami").await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("does not match the pinned"), "{text}");
    assert!(
        text.contains(&fingerprint),
        "names the actual fingerprint: {text}"
    );

    // A cluster client does not trust the self-signed installer certificate.
    let p = pki();
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    assert_refused(&mtls_client(&p.root, &admin, &[&server.url])).await;
    server.stop().await;
}
