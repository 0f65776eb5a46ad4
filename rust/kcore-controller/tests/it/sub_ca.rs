//! Retiring and revoking a rotated-out sub-CA across two replicating controllers
//! (issue 13: "rotated-out sub-CAs" replicate as revocations and every controller refuses
//! them): the rotation retires the old sub-CA, each controller reissues its own
//! certificate from the new one, a node presenting an old certificate is told to renew,
//! the revocation is refused while anything still holds a certificate the old sub-CA
//! issued, and once it is revoked both controllers refuse every such certificate while
//! replication between them goes on.

use serde_json::{Value, json};

use crate::support::*;

fn serial_of(pem: &str) -> String {
    kcore_pki::serial_hex(&kcore_pki::certs_from_pem(pem).unwrap()[0]).unwrap()
}

/// Serial of the certificate that issued the first one of a chain file.
fn issuer_serial_of_file(path: &Path) -> String {
    let pem = std::fs::read_to_string(path).unwrap();
    kcore_pki::serial_hex(&kcore_pki::certs_from_pem(&pem).unwrap()[1]).unwrap()
}

async fn sub_cas(admin: &Client) -> Vec<Value> {
    admin
        .get_json::<Vec<Value>>("/v1/pki/sub-cas")
        .await
        .unwrap()
}

fn find<'a>(list: &'a [Value], serial: &str) -> Option<&'a Value> {
    list.iter().find(|u| u["serial"] == serial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_out_sub_ca_is_retired_moved_off_and_once_revoked_refused_by_every_controller() {
    let cl = Cluster::new();
    let trust = cl.root.cert_pem().to_string();
    let (la, lb) = (
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let (a_addr, b_addr) = (
        la.local_addr().unwrap().to_string(),
        lb.local_addr().unwrap().to_string(),
    );
    let a = Running::start_on(la, cl.peer_config("ctl-a", false, vec![b_addr.clone()]));
    let b = Running::start_on(lb, cl.peer_config("ctl-b", false, vec![a_addr.clone()]));
    let admin_a = client(&a.url, &trust, &cl.admin());
    let admin_b = client(&b.url, &trust, &cl.admin());
    let old_serial = serial_of(cl.sub.cert_pem());

    // n1 holds a certificate from the sub-CA about to be rotated out.
    let old_cert = cl.node("n1");
    let n1_old = client(&a.url, &trust, &old_cert);
    let ack = register(&n1_old, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();
    assert!(!ack.renew_certificate, "nothing is retired yet");

    // The rotation, as `kctl rotate sub-ca` does it: installed on every controller.
    let new_sub = cl.root.new_sub_ca("controllers-2", YEAR).unwrap();
    let new_serial = serial_of(new_sub.cert_pem());
    for admin in [&admin_a, &admin_b] {
        install_sub_ca(admin, &new_sub).await.unwrap();
    }
    // Each controller reissued its own certificate from the new sub-CA (on disk, and in
    // the record it replicates).
    for id in ["ctl-a", "ctl-b"] {
        assert_eq!(
            issuer_serial_of_file(&cl.path(&format!("{id}.crt"))),
            new_serial,
            "{id}"
        );
    }
    eventually(
        "both records to name a certificate of the new sub-CA",
        || async {
            let list: Value = admin_b.get_json("/v1/controllers").await.unwrap();
            let items = list["items"].as_array().cloned().unwrap_or_default();
            items.len() == 2
                && items
                    .iter()
                    .all(|c| c["spec"]["certificateIssuerSerial"] == new_serial.as_str())
        },
    )
    .await;

    // The old sub-CA is retired; the old node certificate still works and is told to renew.
    let ack = beat(&n1_old, "n1").await.unwrap();
    assert!(ack.renew_certificate, "{ack:?}");
    // Once ctl-a has both reissued records, only n1 holds a certificate of the old one.
    eventually("ctl-a to see only n1 on the old sub-CA", || async {
        find(&sub_cas(&admin_a).await, &old_serial)
            .is_some_and(|old| old["issuedTo"] == json!(["node/n1"]))
    })
    .await;
    let list = sub_cas(&admin_a).await;
    let old = find(&list, &old_serial).expect("the old sub-CA is listed");
    assert_eq!(old["state"], "retired", "{list:?}");
    assert_eq!(
        old["retired"]["replacedBy"],
        new_serial.as_str(),
        "{list:?}"
    );
    assert_eq!(old["issuedTo"], json!(["node/n1"]), "{list:?}");
    assert_eq!(find(&list, &new_serial).unwrap()["state"], "active");

    // Not revocable while it signs for someone, nor while n1 still holds one of its
    // certificates (without force).
    let err = admin_a
        .post_json::<_, Value>(&format!("/v1/pki/sub-cas/{new_serial}/revoke"), &json!({}))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "SUB_CA_IN_USE", "{err}");
    let err = admin_a
        .post_json::<_, Value>(&format!("/v1/pki/sub-cas/{old_serial}/revoke"), &json!({}))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "SUB_CA_IN_USE", "{err}");
    assert!(err.to_string().contains("node/n1"), "{err}");

    // n1 renews (as its agent does when told to) and heartbeats with the new certificate.
    let (key_pem, csr_pem) = csr("n1", &[]);
    let renewed = renew(&n1_old, "n1", csr_pem).await.unwrap();
    let n1_new_cert = CertifiedKey {
        cert_pem: renewed.chain_pem,
        key_pem,
    };
    let n1_new = client(&a.url, &trust, &n1_new_cert);
    assert!(!beat(&n1_new, "n1").await.unwrap().renew_certificate);

    // Now nothing holds a certificate of the old sub-CA: revoked on ctl-a only.
    let revocation: Value = admin_a
        .post_json(&format!("/v1/pki/sub-cas/{old_serial}/revoke"), &json!({}))
        .await
        .unwrap();
    assert_eq!(revocation["subject"], format!("sub-ca/{old_serial}"));

    // Both controllers refuse the old node certificate (ctl-b from the replicated
    // revocation), on new connections; the renewed one keeps working on both.
    for url in [a.url.clone(), b.url.clone()] {
        for _ in 0..150 {
            let fresh = client(&url, &trust, &old_cert);
            if matches!(beat(&fresh, "n1").await, Err(e) if code(&e) == "CERTIFICATE_REVOKED") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let refused = beat(&client(&url, &trust, &old_cert), "n1").await;
        assert!(
            matches!(&refused, Err(e) if code(e) == "CERTIFICATE_REVOKED"),
            "{url}: {refused:?}"
        );
        let fresh = client(&url, &trust, &n1_new_cert);
        assert_eq!(beat(&fresh, "n1").await.unwrap().status, NodeStatus::Ready);
    }
    let err = beat(&client(&b.url, &trust, &old_cert), "n1")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("sub-CA serial {old_serial}")),
        "{err}"
    );
    let list = sub_cas(&admin_b).await;
    assert_eq!(find(&list, &old_serial).unwrap()["state"], "revoked");

    // The controllers still replicate with their reissued certificates.
    admin_b
        .put_json::<_, Value>(
            "/v1/clusterupdates/after-revoke",
            &json!({"kind": "ClusterUpdate", "metadata": {"name": "after-revoke"},
                "spec": {"target": {"flake_ref": "github:kcorehypervisor/kcore",
                    "flake_rev": "0123456789abcdef0123456789abcdef01234567"},
                    "selector": {"all_nodes": true}}}),
        )
        .await
        .unwrap();
    eventually(
        "ctl-a to pull a write made on ctl-b after the revocation",
        || async {
            admin_a
                .get_json::<Value>("/v1/clusterupdates/after-revoke")
                .await
                .is_ok()
        },
    )
    .await;
    a.stop().await;
    b.stop().await;
}
