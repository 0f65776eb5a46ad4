//! Role checks per route, a node acting only for itself, and 401 without an identity.

use crate::support::*;
use kcore_net::*;
use kcore_pki::*;
use serde_json::{Value, json};

#[tokio::test]
async fn routes_enforce_roles_and_self_only() {
    let p = pki();
    let server = start(mtls_server(&p), app(named("a"))).await;
    let admin = p.root.issue(&ident(Role::Admin, "ops"), &[], DAY).unwrap();
    let node = p.sub.issue(&ident(Role::Node, "n1"), &[], DAY).unwrap();
    let ctl = p
        .sub
        .issue(&ident(Role::Controller, "c2"), &[], DAY)
        .unwrap();
    let admin_c = mtls_client(&p.root, &admin, &[&server.url]);
    let node_c = mtls_client(&p.root, &node, &[&server.url]);
    let ctl_c = mtls_client(&p.root, &ctl, &[&server.url]);

    let ok: Value = admin_c.get_json("/v1/admin").await.unwrap();
    assert_eq!(ok["ok"], true);
    for c in [&node_c, &ctl_c] {
        match c.get_json::<Value>("/v1/admin").await.unwrap_err() {
            ClientError::Api { status, error, .. } => {
                assert_eq!(status, 403);
                assert_eq!(error.code, "FORBIDDEN");
                assert!(
                    error.message.contains("allowed roles: admin"),
                    "{}",
                    error.message
                );
            }
            other => panic!("expected 403, got {other:?}"),
        }
    }

    let body = Step { step: 3 };
    let mine: Value = node_c
        .post_json("/v1/nodes/n1/report", &body)
        .await
        .unwrap();
    assert_eq!(mine["by"], "kcore://lab/node/n1");
    let err = node_c
        .post_json::<_, Value>("/v1/nodes/n2/report", &body)
        .await
        .unwrap_err();
    assert_eq!(err.api_code(), Some("FORBIDDEN"), "{err}");
    let theirs: Value = ctl_c.post_json("/v1/nodes/n2/report", &body).await.unwrap();
    assert_eq!(theirs["node"], "n2");

    // Bad JSON gets the envelope with the parser's explanation.
    let err = node_c
        .post_json::<_, Value>("/v1/nodes/n1/report", &json!({"step": "three"}))
        .await
        .unwrap_err();
    match err {
        ClientError::Api { status, error, .. } => {
            assert_eq!(status, 422);
            assert_eq!(error.code, "BAD_REQUEST");
            assert!(error.message.contains("step"), "{}", error.message);
        }
        other => panic!("expected 422, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn requests_without_identity_get_401() {
    use tower::ServiceExt as _;
    // Requests that did not pass through `serve` carry no PeerIdentity: the extractor
    // and the middleware must both treat them as unauthenticated.
    for (method, uri, body) in [
        ("GET", "/v1/admin", ""),
        ("POST", "/v1/nodes/n1/report", r#"{"step":1}"#),
    ] {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        let resp = app(named("a")).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 401, "{uri}");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let err: kcore_api::ApiError = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(err.code, "UNAUTHENTICATED");
    }
}
