//! Certificates: sub-CA rotation, first certificates, renewal names and limits.

use crate::support::*;

#[tokio::test]
async fn sub_ca_rotation_keeps_old_certificates_working() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let old_cert = cl.node("n1");
    let n1_old = client(&ctl.url, cl.root.cert_pem(), &old_cert);
    register(&n1_old, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();

    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    // A sub-CA from another root is refused and changes nothing.
    let stranger = Authority::new_root(CLUSTER, YEAR)
        .unwrap()
        .new_sub_ca("x", YEAR)
        .unwrap();
    let err = install_sub_ca(&admin, &stranger).await.unwrap_err();
    assert_eq!(code(&err), "SUB_CA_UNTRUSTED");
    assert_eq!(
        std::fs::read_to_string(cl.path("sub-ca.crt")).unwrap(),
        cl.sub.cert_pem()
    );

    let new_sub = cl.root.new_sub_ca("rotated", YEAR).unwrap();
    let installed: SubCaInstalled = install_sub_ca(&admin, &new_sub).await.unwrap();
    assert_eq!(installed.controller_id, "ctl1");
    assert_eq!(
        std::fs::read_to_string(cl.path("sub-ca.crt")).unwrap(),
        new_sub.cert_pem()
    );

    // The controller's record names the sub-CA it now signs with.
    let new_serial =
        kcore_pki::serial_hex(&kcore_pki::certs_from_pem(new_sub.cert_pem()).unwrap()[0]).unwrap();
    eventually("the Controller record to name the new sub-CA", || async {
        let record: serde_json::Value = admin.get_json("/v1/controllers/ctl1").await.unwrap();
        record["spec"]["subCaSerial"] == new_serial.as_str()
    })
    .await;

    // The old leaf still works.
    assert_eq!(beat(&n1_old, "n1").await.unwrap().status, NodeStatus::Ready);
    // A renewal is signed by the new sub-CA (its chain carries it) and works too.
    let ident = Identity::new(CLUSTER, Role::Node, "n1").unwrap();
    let (key_pem, csr_pem) = kcore_pki::generate_csr(&ident, &[]).unwrap();
    let renewed: CertificateResponse = n1_old
        .post_json("/v1/nodes/n1/renew", &CsrRequest { csr_pem })
        .await
        .unwrap();
    assert!(
        renewed.chain_pem.ends_with(new_sub.cert_pem()),
        "chain does not carry the new sub-CA"
    );
    let n1_new = client(
        &ctl.url,
        cl.root.cert_pem(),
        &CertifiedKey {
            cert_pem: renewed.chain_pem,
            key_pem,
        },
    );
    assert_eq!(beat(&n1_new, "n1").await.unwrap().status, NodeStatus::Ready);
    ctl.stop().await;

    // After a restart the controller signs with the installed sub-CA.
    let ctl = Running::start(cl.config(false)).await;
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    let ident = Identity::new(CLUSTER, Role::Node, "n9").unwrap();
    let (_, csr_pem) = kcore_pki::generate_csr(&ident, &[]).unwrap();
    let issued: CertificateResponse = admin
        .post_json(
            "/v1/certificates/node",
            &IssueNodeCertificateRequest {
                node_id: "n9".into(),
                csr_pem,
            },
        )
        .await
        .unwrap();
    assert!(issued.chain_pem.ends_with(new_sub.cert_pem()));
    assert!(
        beat(&n1_old, "n1").await.is_err(),
        "old client points at the stopped controller"
    );
    ctl.stop().await;
}

#[tokio::test]
async fn issuing_a_node_certificate_checks_the_csr_identity() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let admin = client(&ctl.url, cl.root.cert_pem(), &cl.admin());
    // A CSR for n5 cannot be signed as n6.
    let (_, csr_pem) =
        kcore_pki::generate_csr(&Identity::new(CLUSTER, Role::Node, "n5").unwrap(), &[]).unwrap();
    let err = admin
        .post_json::<_, CertificateResponse>(
            "/v1/certificates/node",
            &IssueNodeCertificateRequest {
                node_id: "n6".into(),
                csr_pem,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_CSR");
    ctl.stop().await;
}

/// `kctl node install --run-controller`: the admin route signs a controller CSR made on
/// the node with the current sub-CA, keeps its names, and refuses identities that are
/// not new and names another node holds.
#[tokio::test]
async fn an_admin_signs_a_new_controllers_csr_with_the_sub_ca() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem();
    let admin = client(&ctl.url, trust, &cl.admin());
    let n1 = client(&ctl.url, trust, &cl.node("n1"));
    register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();
    let sign = |id: &'static str, csr_pem: String| {
        let admin = admin.clone();
        async move {
            admin
                .post_json::<_, ControllerCertificateResponse>(
                    "/v1/certificates/controller",
                    &IssueControllerCertificateRequest {
                        controller_id: id.into(),
                        csr_pem,
                    },
                )
                .await
        }
    };
    let controller_csr = |id: &str, names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        kcore_pki::generate_csr(
            &Identity::new(CLUSTER, Role::Controller, id).unwrap(),
            &names,
        )
        .unwrap()
    };

    let (key_pem, csr_pem) = controller_csr("node-7", &["ctl-host.lab", "10.0.0.9"]);
    let signed = sign("node-7", csr_pem).await.unwrap();
    assert_eq!(signed.sub_ca_pem, cl.sub.cert_pem());
    assert!(
        signed.chain_pem.ends_with(cl.sub.cert_pem()),
        "chain ends with the sub-CA"
    );
    let leaf = kcore_pki::certs_from_pem(&signed.chain_pem).unwrap();
    assert_eq!(
        kcore_pki::identity_of(&leaf[0]).unwrap().uri(),
        "kcore://lab/controller/node-7"
    );
    let names = kcore_pki::cert_names(&leaf[0]);
    assert!(names.contains(&"ctl-host.lab".to_string()), "{names:?}");
    assert!(names.contains(&"10.0.0.9".to_string()), "{names:?}");
    // The certificate works as a controller's: it may read the controllers.
    let new_ctl = client(
        &ctl.url,
        trust,
        &CertifiedKey {
            cert_pem: signed.chain_pem.clone(),
            key_pem,
        },
    );
    let _: serde_json::Value = new_ctl.get_json("/v1/controllers").await.unwrap();

    // This controller's own id, a CSR for another id, another node's hostname.
    let err = sign("ctl1", controller_csr("ctl1", &[]).1)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_IDENTITY", "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    let err = sign("node-8", controller_csr("node-9", &[]).1)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "INVALID_CSR", "{err}");
    let err = sign("node-8", controller_csr("node-8", &["hv1"]).1)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NAME_NOT_ALLOWED", "{err}");
    // A node's CSR is not a controller's.
    let err = sign("node-8", csr("node-8", &[]).1).await.unwrap_err();
    assert_eq!(code(&err), "INVALID_CSR", "{err}");
    ctl.stop().await;
}

#[tokio::test]
async fn renewal_signs_only_the_names_the_node_registered() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem();
    let n1 = client(&ctl.url, trust, &cl.node("n1"));
    let mut r1 = report("hv1", "DC1", None);
    r1.agent_address = Some("10.0.0.7:9091".into());
    register(&n1, "n1", r1).await.unwrap();
    let n2 = client(&ctl.url, trust, &cl.node("n2"));
    register(&n2, "n2", report("hv2", "DC1", None))
        .await
        .unwrap();

    let refused = |names: &'static [&'static str], name: &'static str| {
        let n1 = n1.clone();
        async move {
            let err = renew(&n1, "n1", csr("n1", names).1).await.unwrap_err();
            assert_eq!(code(&err), "NAME_NOT_ALLOWED", "{names:?}: {err}");
            let ClientError::Api { error, .. } = &err else {
                unreachable!()
            };
            assert_eq!(error.details["name"], name, "{err}");
        }
    };
    refused(&["hv1", "*.lab"], "*.lab").await; // wildcard
    refused(&["hv1", "hv2"], "hv2").await; // another node's hostname
    refused(&["n2"], "n2").await; // another node's id
    refused(&["ctl1"], "ctl1").await; // the controller's id
    refused(&["controller.lab"], "controller.lab").await; // nobody registered it

    // Its own names: id, hostname, agent address, loopback.
    let wanted = ["n1", "hv1", "10.0.0.7", "localhost", "127.0.0.1"];
    let signed = renew(&n1, "n1", csr("n1", &wanted).1).await.unwrap();
    let leaf = kcore_pki::certs_from_pem(&signed.chain_pem).unwrap();
    assert_eq!(kcore_pki::cert_names(&leaf[0]), wanted);
    // One signature per node per minute.
    let err = renew(&n1, "n1", csr("n1", &["hv1"]).1).await.unwrap_err();
    assert_eq!(code(&err), "RENEW_RATE_LIMITED", "{err}");
    ctl.stop().await;
}

#[tokio::test]
async fn renew_needs_an_approved_node_and_only_presented_certificates_are_recorded() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(true)).await;
    let trust = cl.root.cert_pem();
    let admin = client(&ctl.url, trust, &cl.admin());
    let first = cl.node("n5");
    let n5 = client(&ctl.url, trust, &first);
    let err = renew(&n5, "n5", csr("n5", &[]).1).await.unwrap_err();
    assert_eq!(code(&err), "NODE_NOT_REGISTERED", "{err}");
    register(&n5, "n5", report("hv5", "DC1", None))
        .await
        .unwrap();
    let err = renew(&n5, "n5", csr("n5", &[]).1).await.unwrap_err();
    assert_eq!(code(&err), "NODE_NOT_APPROVED", "{err}");
    post::<Node>(&admin, "/v1/nodes/n5/approve").await.unwrap();

    let serial_of =
        |pem: &str| kcore_pki::serial_hex(&kcore_pki::certs_from_pem(pem).unwrap()[0]).unwrap();
    let recorded = || async {
        admin
            .get_json::<Node>("/v1/nodes/n5")
            .await
            .unwrap()
            .certificate
            .map(|c| c.serial)
    };
    assert_eq!(recorded().await, Some(serial_of(&first.cert_pem)));
    // A renewal the node never installs does not change what the controller shows.
    let (key_pem, csr_pem) = csr("n5", &["hv5"]);
    let renewed = renew(&n5, "n5", csr_pem).await.unwrap();
    assert_eq!(recorded().await, Some(serial_of(&first.cert_pem)));
    // Once the node uses it, it is.
    let installed = CertifiedKey {
        cert_pem: renewed.chain_pem.clone(),
        key_pem,
    };
    beat(&client(&ctl.url, trust, &installed), "n5")
        .await
        .unwrap();
    assert_eq!(recorded().await, Some(serial_of(&renewed.chain_pem)));
    ctl.stop().await;
}

#[tokio::test]
async fn short_or_expired_sub_cas_cannot_produce_dead_certificates() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem();
    let admin = client(&ctl.url, trust, &cl.admin());
    let install = |sub: &Authority, allow_short: bool| {
        let admin = admin.clone();
        let body = InstallSubCa {
            certificate_pem: sub.cert_pem().into(),
            key_pem: sub.key_pem().into(),
            allow_short,
        };
        async move {
            admin
                .put_json::<_, SubCaInstalled>("/v1/pki/sub-ca", &body)
                .await
        }
    };
    // Ten days left: shorter than a node certificate (90 days), refused unless allowed.
    let short = cl
        .root
        .new_sub_ca("short", Duration::from_secs(10 * 86_400))
        .unwrap();
    let err = install(&short, false).await.unwrap_err();
    assert_eq!(code(&err), "SUB_CA_TOO_SHORT", "{err}");
    assert!(err.to_string().contains("--allow-short"), "{err}");
    install(&short, true).await.unwrap();
    // Leaves are capped at the sub-CA's end.
    let n1 = client(&ctl.url, trust, &cl.node("n1"));
    register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();
    let signed = renew(&n1, "n1", csr("n1", &[]).1).await.unwrap();
    let leaf_end = kcore_pki::not_after(&signed.chain_pem).unwrap();
    assert!(
        leaf_end <= short.not_after(),
        "{leaf_end} > {}",
        short.not_after()
    );

    // A sub-CA that has ended: installing it is refused, and a controller that still
    // holds one signs nothing (503, so clients try another controller).
    let brief = cl.root.new_sub_ca("brief", Duration::from_secs(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = install(&brief, true).await.unwrap_err();
    assert_eq!(code(&err), "SUB_CA_NOT_VALID", "{err}");
    ctl.stop().await;

    cl.write("sub-ca.crt", brief.cert_pem());
    cl.write("sub-ca.key", brief.key_pem());
    let ctl = Running::start(cl.config(false)).await;
    let admin = client(&ctl.url, trust, &cl.admin());
    let err = admin
        .post_json::<_, CertificateResponse>(
            "/v1/certificates/node",
            &IssueNodeCertificateRequest {
                node_id: "n9".into(),
                csr_pem: csr("n9", &[]).1,
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("503") && err.contains("SUB_CA_NOT_VALID"),
        "{err}"
    );
    ctl.stop().await;
}
