//! `kctl create metrics-cert` (docs/metrics.md): a scraper certificate signed by the lab's
//! controller (key made by kctl, or by `kctl create csr --role metrics` "on the scraper"),
//! or offline with the context's sub-CA; the files it writes scrape `/metrics` and the
//! certificate speaks for `kcore://lab/metrics/NAME`.

use std::os::unix::fs::PermissionsExt as _;

use super::lab::{Lab, kctl, ok};
use super::support::text;

/// The identity the chain in `dir/NAME.crt` speaks for, verified against `dir/ca.crt`
/// as a server would.
fn identity_in(dir: &std::path::Path, name: &str) -> String {
    let chain = std::fs::read_to_string(dir.join(format!("{name}.crt"))).unwrap();
    let ca = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    kcore_pki::verify_client_chain(&ca, &chain)
        .unwrap()
        .unwrap()
        .uri()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cert_from_the_controller_scrapes_and_keeps_the_key_where_it_was_made() {
    let lab = Lab::start(false).await;
    let h = lab.home();
    let out_dir = h.join("prometheus");
    let out = ok(kctl(
        h,
        &[
            "create",
            "metrics-cert",
            "prom1",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    )
    .await);
    assert!(out.contains("kcore://lab/metrics/prom1"), "{out}");
    assert_eq!(identity_in(&out_dir, "prom1"), "kcore://lab/metrics/prom1");
    let key = out_dir.join("prom1.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The three files are what Prometheus' tls_config takes: they scrape.
    let read = |name: &str| std::fs::read_to_string(out_dir.join(name)).unwrap();
    let tls =
        kcore_pki::client_config(&read("ca.crt"), &read("prom1.crt"), &read("prom1.key")).unwrap();
    let answer = kcore_net::testing::get_text(&format!("https://{}/metrics", lab.addr), tls)
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.contains("kcore_nodes{status=\"Ready\"}"),
        "{}",
        answer.body
    );

    // Never a second key over the first.
    let again = kctl(
        h,
        &[
            "create",
            "metrics-cert",
            "prom1",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!again.status.success());
    assert!(
        text(&again).contains("refusing to replace"),
        "{}",
        text(&again)
    );

    // With --csr the key is made "on the scraper" and kctl writes none.
    let scraper = h.join("scraper");
    let path = |name: &str| scraper.join(name).to_str().unwrap().to_string();
    ok(kctl(
        h,
        &[
            "create",
            "csr",
            "--role",
            "metrics",
            "--id",
            "prom2",
            "--cluster",
            "lab",
            "--key-out",
            &path("prom2.key"),
            "--csr-out",
            &path("prom2.csr"),
        ],
    )
    .await);
    let signed_dir = h.join("signed");
    ok(kctl(
        h,
        &[
            "create",
            "metrics-cert",
            "prom2",
            "--csr",
            &path("prom2.csr"),
            "--out",
            signed_dir.to_str().unwrap(),
        ],
    )
    .await);
    assert_eq!(
        identity_in(&signed_dir, "prom2"),
        "kcore://lab/metrics/prom2"
    );
    assert!(!signed_dir.join("prom2.key").exists());
    // A CSR made for one name is not signed under another.
    let out = kctl(
        h,
        &[
            "create",
            "metrics-cert",
            "prom3",
            "--csr",
            &path("prom2.csr"),
            "--out",
            signed_dir.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("INVALID_CSR"), "{}", text(&out));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cert_offline_signs_with_the_contexts_sub_ca_and_refuses_bad_names() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    ok(kctl(
        h,
        &[
            "create",
            "cluster",
            "--controller",
            "127.0.0.1:9",
            "--context",
            "lab",
        ],
    )
    .await);
    let out_dir = h.join("out");
    ok(kctl(
        h,
        &[
            "create",
            "metrics-cert",
            "prom-off",
            "--offline",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    )
    .await);
    assert_eq!(
        identity_in(&out_dir, "prom-off"),
        "kcore://lab/metrics/prom-off"
    );

    let out = kctl(h, &["create", "metrics-cert", "bad/name", "--offline"]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("NAME"), "{}", text(&out));
    // Only node and metrics keys are made by `create csr`.
    let out = kctl(
        h,
        &[
            "create",
            "csr",
            "--role",
            "admin",
            "--id",
            "x",
            "--cluster",
            "lab",
            "--key-out",
            "k",
            "--csr-out",
            "c",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("use node or metrics"), "{}", text(&out));
}
