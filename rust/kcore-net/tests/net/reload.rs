//! Certificates swapped at run time, on the server and on the client.

use crate::support::*;
use kcore_net::*;
use kcore_pki::*;
use std::sync::Arc;

#[tokio::test]
async fn hot_reload_swaps_the_certificate_without_dropping_connections() {
    let (a, fp_a) = self_signed_install(&local_names()).unwrap();
    let (b, fp_b) = self_signed_install(&local_names()).unwrap();
    let tls = TlsSource::new(server_config_no_client_auth(&a.cert_pem, &a.key_pem).unwrap());
    let state = named("hot");
    let gate = state.gate.clone();
    let server = start(tls.clone(), app(state)).await;
    let pinned = |fp: &str| client_with(&[&server.url], client_config_pinned(fp).unwrap(), quick());

    let _: WhoAmI = pinned(&fp_a).get_json("/v1/whoami").await.unwrap();

    // A stream opened with certificate A, still running while we swap.
    let streaming = Arc::new(pinned(&fp_a));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream_task = {
        let streaming = streaming.clone();
        tokio::spawn(async move {
            streaming
                .stream_ndjson("/v1/gated", None::<&()>, |s: Step| tx.send(s.step).unwrap())
                .await
        })
    };
    assert_eq!(rx.recv().await, Some(0));

    tls.replace(server_config_no_client_auth(&b.cert_pem, &b.key_pem).unwrap());

    let err = pinned(&fp_a)
        .get_json::<WhoAmI>("/v1/whoami")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not match the pinned"),
        "{err}"
    );
    let who: WhoAmI = pinned(&fp_b).get_json("/v1/whoami").await.unwrap();
    assert_eq!(who.server, "hot");

    // The connection made before the swap is still alive and finishes its stream.
    gate.notify_one();
    assert_eq!(rx.recv().await, Some(1));
    stream_task.await.unwrap().unwrap();
    assert!(!server.handle.is_finished(), "the server kept running");
    server.stop().await;
}

#[tokio::test]
async fn replace_tls_switches_the_client_certificate() {
    let p = pki();
    let server = start(mtls_server(&p), app(named("a"))).await;
    let n1 = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let renewed = p.sub.issue(&ident(Role::Node, "n1"), &[], 2 * DAY).unwrap();
    let client = mtls_client(&p.root, &n1, &[&server.url]);
    let before: WhoAmI = client.get_json("/v1/whoami").await.unwrap();
    client
        .replace_tls(client_config(p.root.cert_pem(), &renewed.cert_pem, &renewed.key_pem).unwrap())
        .unwrap();
    let after: WhoAmI = client.get_json("/v1/whoami").await.unwrap();
    assert_eq!(before.identity, after.identity);
    assert_eq!(after.serial, Some(serial_of(&renewed)));
    assert_ne!(before.serial, after.serial);
    server.stop().await;
}
