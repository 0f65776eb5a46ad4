//! The generic resource routes (`/v1/vms`, `/v1/clusterupdates`, `DELETE /v1/nodes/{id}`)
//! over HTTPS, and the generic store across two replicating controllers: a write on one
//! wakes a watcher on the other, concurrent edits of different fields both survive, a
//! delete replicates as tombstones.

use kcore_api::resource::{ApplyResponse, Deleted, Kind, ResourceList};
use serde_json::{Value, json};

use crate::support::*;

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

fn vm(name: &str) -> Value {
    json!({
        "kind": "VM",
        "metadata": {"name": name, "labels": {"tier": "web"}},
        "spec": {"storageBackend": "lvm", "storageSizeBytes": "40G", "cpus": 1},
    })
}

fn cluster_update(name: &str) -> Value {
    json!({
        "kind": "ClusterUpdate",
        "metadata": {"name": name},
        "spec": {
            "target": {"flake_ref": "github:kcorehypervisor/kcore", "flake_rev": REV},
            "selector": {"all_nodes": true},
            "strategy": {"strategy_type": "batch", "batch_size": 2, "max_unavailable": 2},
        },
    })
}

async fn put(c: &Client, path: &str, body: &Value) -> Result<ApplyResponse, ClientError> {
    c.put_json(path, body).await
}

/// The code and message of a refusal.
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (String, String) {
    match result {
        Err(ClientError::Api { error, .. }) => (error.code, error.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn resources_apply_get_list_and_delete_over_https() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem().to_string();
    let admin = client(&ctl.url, &trust, &cl.admin());

    let created = put(&admin, "/v1/vms/web-1", &vm("web-1")).await.unwrap();
    assert!(created.created && !created.dry_run);
    assert_eq!(created.object["metadata"]["generation"], 1);
    assert_eq!(created.object["spec"]["storageSizeBytes"], 40u64 << 30);
    // The same document again, sizes spelled differently: nothing changes.
    let mut same = vm("web-1");
    same["spec"]["storageSizeBytes"] = json!("40GiB");
    let again = put(&admin, "/v1/vms/web-1", &same).await.unwrap();
    assert!(!again.created && again.changes.is_empty());
    assert_eq!(again.object["metadata"]["generation"], 1);

    // A dry run shows the diff and writes nothing; status and generation sent are ignored.
    let mut bigger = vm("web-1");
    bigger["spec"]["cpus"] = json!(4);
    bigger["metadata"]["generation"] = json!(99);
    bigger["status"] = json!({"phase": "Running"});
    let dry = put(&admin, "/v1/vms/web-1?dryRun=server", &bigger)
        .await
        .unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.changes.len(), 1);
    assert_eq!(dry.changes[0].path, "spec.cpus");
    assert_eq!(
        (dry.changes[0].old.clone(), dry.changes[0].new.clone()),
        (Some(json!(1)), Some(json!(4)))
    );
    let stored: Value = admin.get_json("/v1/vms/web-1").await.unwrap();
    assert_eq!(stored["spec"]["cpus"], 1);
    let applied = put(&admin, "/v1/vms/web-1", &bigger).await.unwrap();
    assert_eq!(applied.changes, dry.changes);
    assert_eq!(applied.object["metadata"]["generation"], 2);
    // The scheduler may have written its own status (Pending: no node) by now; the
    // client's `phase: Running` is never stored.
    assert_ne!(
        applied.object.pointer("/status/phase"),
        Some(&json!("Running")),
        "a client's status is not stored"
    );

    let cu = put(&admin, "/v1/clusterupdates/r1", &cluster_update("r1"))
        .await
        .unwrap();
    assert_eq!(
        cu.object["spec"]["strategy"]["batchSize"], 2,
        "stored in camelCase"
    );
    put(
        &admin,
        "/v1/vms/db-1",
        &json!({
            "kind": "VM", "metadata": {"name": "db-1"},
            "spec": {"storageBackend": "zfs", "storageSizeBytes": 1073741824},
        }),
    )
    .await
    .unwrap();
    let names = |list: &ResourceList| -> Vec<String> {
        list.items
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let all: ResourceList = admin.get_json("/v1/vms").await.unwrap();
    assert_eq!(names(&all), ["db-1", "web-1"]);
    assert_eq!(all.items[1]["kind"], "VM");
    let web: ResourceList = admin
        .get_json("/v1/vms?labelSelector=tier%3Dweb")
        .await
        .unwrap();
    assert_eq!(names(&web), ["web-1"]);
    let controller_view: ResourceList = client(&ctl.url, &trust, &cl.controller_peer())
        .get_json("/v1/clusterupdates")
        .await
        .unwrap();
    assert_eq!(names(&controller_view), ["r1"]);

    let deleted: Deleted = admin.delete("/v1/vms/web-1").await.unwrap();
    assert_eq!((deleted.kind, deleted.name.as_str()), (Kind::Vm, "web-1"));
    let (code, message) = refusal(admin.get_json::<Value>("/v1/vms/web-1").await);
    assert_eq!(code, "NOT_FOUND");
    assert!(message.contains("web-1"), "{message}");
    assert_eq!(
        refusal(admin.delete::<Deleted>("/v1/vms/web-1").await).0,
        "NOT_FOUND"
    );
    // Created anew after a delete: generation 1 again.
    let recreated = put(&admin, "/v1/vms/web-1", &vm("web-1")).await.unwrap();
    assert!(recreated.created);
    assert_eq!(recreated.object["metadata"]["generation"], 1);
    ctl.stop().await;
}

#[tokio::test]
async fn resource_refusals_name_the_field_and_the_role() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(false)).await;
    let trust = cl.root.cert_pem().to_string();
    let admin = client(&ctl.url, &trust, &cl.admin());

    let invalid = |result| {
        let (code, message) = refusal::<ApplyResponse>(result);
        assert_eq!(code, "INVALID_FIELD", "{message}");
        message
    };
    // kind / name mismatches
    let message = invalid(put(&admin, "/v1/clusterupdates/web-1", &vm("web-1")).await);
    assert!(message.starts_with("kind: "), "{message}");
    let message = invalid(put(&admin, "/v1/vms/web-2", &vm("web-1")).await);
    assert!(message.starts_with("metadata.name: "), "{message}");
    let mut no_kind = vm("web-1");
    no_kind.as_object_mut().unwrap().remove("kind");
    assert!(invalid(put(&admin, "/v1/vms/web-1", &no_kind).await).starts_with("kind: "));
    // an unknown field, by its path
    let mut typo = cluster_update("r1");
    typo["spec"]["strategy"]["batchSzie"] = json!(3);
    let message = invalid(put(&admin, "/v1/clusterupdates/r1", &typo).await);
    assert!(
        message.starts_with("spec.strategy.batchSzie: unknown field"),
        "{message}"
    );
    // invalid values: path, value, problem and fix
    let mut short = cluster_update("r1");
    short["spec"]["target"]["flake_rev"] = json!("0123abc");
    let message = invalid(put(&admin, "/v1/clusterupdates/r1", &short).await);
    assert!(
        message.starts_with("spec.target.flakeRev: \"0123abc\""),
        "{message}"
    );
    let mut local = cluster_update("r1");
    local["spec"]["target"]["flake_ref"] = json!("path:/srv/fleet");
    let message = invalid(put(&admin, "/v1/clusterupdates/r1", &local).await);
    assert!(message.starts_with("spec.target.flakeRef: "), "{message}");
    let mut size = vm("web-1");
    size["spec"]["storageSizeBytes"] = json!("40GB");
    let message = invalid(put(&admin, "/v1/vms/web-1", &size).await);
    assert!(message.starts_with("spec.storageSizeBytes: "), "{message}");
    let mut network = vm("web-1");
    network["spec"]["network"] = json!("lan");
    assert!(invalid(put(&admin, "/v1/vms/web-1", &network).await).starts_with("spec.network: "));
    let message = invalid(put(&admin, "/v1/vms/web-1?dryRun=client", &vm("web-1")).await);
    assert!(message.starts_with("dryRun: "), "{message}");
    let (code, message) = refusal(
        admin
            .get_json::<ResourceList>("/v1/vms?labelSelector=a%20b")
            .await,
    );
    assert_eq!(code, "INVALID_FIELD");
    assert!(message.starts_with("labelSelector: "), "{message}");
    // Nothing refused was stored.
    let all: ResourceList = admin.get_json("/v1/vms").await.unwrap();
    assert!(all.items.is_empty());

    // Roles: a node may neither write nor read; a controller reads but does not write.
    let node = client(&ctl.url, &trust, &cl.node("n1"));
    assert_eq!(
        refusal(put(&node, "/v1/vms/web-1", &vm("web-1")).await).0,
        "FORBIDDEN_ROLE"
    );
    assert_eq!(
        refusal(node.get_json::<ResourceList>("/v1/vms").await).0,
        "FORBIDDEN_ROLE"
    );
    let peer = client(&ctl.url, &trust, &cl.controller_peer());
    assert_eq!(
        refusal(put(&peer, "/v1/vms/web-1", &vm("web-1")).await).0,
        "FORBIDDEN_ROLE"
    );
    assert_eq!(
        refusal(peer.delete::<Deleted>("/v1/vms/web-1").await).0,
        "FORBIDDEN_ROLE"
    );

    // Controllers register themselves: the kind is read-only over PUT.
    let (code, message) = refusal(
        put(
            &admin,
            "/v1/controllers/ctl1",
            &json!({"kind": "Controller"}),
        )
        .await,
    );
    assert_eq!(code, "METHOD_NOT_ALLOWED");
    assert!(message.contains("register themselves"), "{message}");
    ctl.stop().await;
}

#[tokio::test]
async fn deleting_a_node_removes_its_record_until_it_registers_again() {
    let cl = Cluster::new();
    let ctl = Running::start(cl.config(true)).await;
    let trust = cl.root.cert_pem().to_string();
    let admin = client(&ctl.url, &trust, &cl.admin());
    let n1 = client(&ctl.url, &trust, &cl.node("n1"));
    register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();
    post::<Node>(&admin, "/v1/nodes/n1/approve").await.unwrap();

    let (code, _) = refusal(n1.delete::<Deleted>("/v1/nodes/n1").await);
    assert_eq!(code, "FORBIDDEN_ROLE", "a node cannot delete itself");
    let deleted: Deleted = admin.delete("/v1/nodes/n1").await.unwrap();
    assert_eq!((deleted.kind, deleted.name.as_str()), (Kind::Node, "n1"));
    assert_eq!(
        refusal(admin.get_json::<Node>("/v1/nodes/n1").await).0,
        "NODE_NOT_FOUND"
    );
    let list: NodeList = admin.get_json("/v1/nodes").await.unwrap();
    assert!(list.items.is_empty());
    assert_eq!(
        refusal(admin.delete::<Deleted>("/v1/nodes/n1").await).0,
        "NODE_NOT_FOUND"
    );
    assert_eq!(refusal(beat(&n1, "n1").await).0, "NODE_NOT_REGISTERED");
    // Registering again makes a new node, which waits for approval again.
    let ack = register(&n1, "n1", report("hv1", "DC1", None))
        .await
        .unwrap();
    assert_eq!(ack.status, NodeStatus::Pending);
    ctl.stop().await;
}

/// Waits (bounded by `eventually`'s limit) until `state`'s store satisfies `check`, woken
/// by the store's change signal rather than by polling.
async fn watch_until(
    what: &str,
    state: &kcore_controller::api::AppState,
    mut check: impl FnMut(&kcore_controller::store::Store) -> bool,
) {
    let mut changes = state.store.watch();
    let wait = async {
        while !check(&state.store) {
            changes.changed().await.unwrap();
        }
    };
    // A bound so a broken signal fails the test instead of hanging it.
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("no change signal brought {what}"));
}

/// Two controllers, `ctl-a` and `ctl-b`, pulling from each other (or, with `peered`
/// false, from nobody) on fresh ports over their existing databases.
async fn pair(
    cl: &Cluster,
    peered: bool,
) -> (Running, Running, Arc<kcore_controller::api::AppState>) {
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let (la, lb) = (bind().await, bind().await);
    let addr = |l: &tokio::net::TcpListener| l.local_addr().unwrap().to_string();
    let (a_peers, b_peers) = if peered {
        (vec![addr(&lb)], vec![addr(&la)])
    } else {
        (vec![], vec![])
    };
    let a = Running::start_on(la, cl.peer_config("ctl-a", false, a_peers));
    let (b, b_state) = Running::start_on_keeping_state(lb, cl.peer_config("ctl-b", false, b_peers));
    (a, b, b_state)
}

#[tokio::test]
async fn a_put_on_one_controller_wakes_a_watcher_on_its_peer_and_edits_merge() {
    let cl = Cluster::new();
    let trust = cl.root.cert_pem().to_string();

    // A PUT on a reaches b, and b's watcher wakes for it.
    let (a, b, b_state) = pair(&cl, true).await;
    let mut woken = b_state.store.watch();
    woken.mark_unchanged();
    put(
        &client(&a.url, &trust, &cl.admin()),
        "/v1/vms/web-1",
        &vm("web-1"),
    )
    .await
    .unwrap();
    watch_until("web-1 to b", &b_state, |s| {
        s.get(Kind::Vm, "web-1").is_some()
    })
    .await;
    assert!(
        woken.has_changed().unwrap(),
        "the replicated merge signalled b's watchers"
    );
    let on_b: Value = client(&b.url, &trust, &cl.admin())
        .get_json("/v1/vms/web-1")
        .await
        .unwrap();
    assert_eq!(on_b["spec"]["storageSizeBytes"], 40u64 << 30);
    assert_eq!(on_b["metadata"]["generation"], 1);
    a.stop().await;
    b.stop().await;

    // Apart, each changes a different spec field of the same object.
    let (a, b, _) = pair(&cl, false).await;
    let mut more_cpus = vm("web-1");
    more_cpus["spec"]["cpus"] = json!(2);
    put(
        &client(&a.url, &trust, &cl.admin()),
        "/v1/vms/web-1",
        &more_cpus,
    )
    .await
    .unwrap();
    let mut zfs = vm("web-1");
    zfs["spec"]["storageBackend"] = json!("zfs");
    put(&client(&b.url, &trust, &cl.admin()), "/v1/vms/web-1", &zfs)
        .await
        .unwrap();
    a.stop().await;
    b.stop().await;

    // Together again: both edits survive on both.
    let (a, b, b_state) = pair(&cl, true).await;
    let merged = |s: &kcore_controller::store::Store| {
        s.get(Kind::Vm, "web-1")
            .is_some_and(|o| o["spec"]["cpus"] == 2 && o["spec"]["storageBackend"] == "zfs")
    };
    watch_until("a's cpus to b", &b_state, merged).await;
    let admin_a = client(&a.url, &trust, &cl.admin());
    eventually("b's backend to a", || async {
        let on_a: Value = admin_a.get_json("/v1/vms/web-1").await.unwrap();
        on_a["spec"]["cpus"] == 2 && on_a["spec"]["storageBackend"] == "zfs"
    })
    .await;
    let on_b: Value = client(&b.url, &trust, &cl.admin())
        .get_json("/v1/vms/web-1")
        .await
        .unwrap();
    assert_eq!(on_b["metadata"]["generation"], 2, "both bumped 1 to 2");

    // A delete on a replicates as tombstones: gone on b, and b holds a's tombstones.
    let _: Deleted = admin_a.delete("/v1/vms/web-1").await.unwrap();
    watch_until("the delete to b", &b_state, |s| {
        s.get(Kind::Vm, "web-1").is_none()
    })
    .await;
    let from_a = b_state.store.ops_since("ctl-a", "", 10_000).unwrap();
    let tombstoned = from_a
        .iter()
        .any(|op| op.resource == "vm/web-1" && op.field == "kind" && op.value.is_none());
    assert!(tombstoned, "b holds a's tombstone of vm/web-1: {from_a:?}");
    let (code, _) = refusal(
        client(&b.url, &trust, &cl.admin())
            .get_json::<Value>("/v1/vms/web-1")
            .await,
    );
    assert_eq!(code, "NOT_FOUND");
    a.stop().await;
    b.stop().await;
}
