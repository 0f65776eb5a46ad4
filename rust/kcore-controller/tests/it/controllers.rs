//! Highly available controllers (issue 13): `kind: Controller` records, a controller
//! joining through one seed and being discovered, deletion with revocation, and three
//! controllers partitioned through [`crate::proxy::FaultProxy`] then healed.

use kcore_api::resource::ResourceList;
use serde_json::{Value, json};

use crate::proxy::FaultProxy;
use crate::support::*;

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

async fn bind() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn addr(l: &tokio::net::TcpListener) -> String {
    l.local_addr().unwrap().to_string()
}

/// The certificate `Cluster::peer_config` wrote for controller `id`.
fn controller_cert(cl: &Cluster, id: &str) -> CertifiedKey {
    CertifiedKey {
        cert_pem: std::fs::read_to_string(cl.path(&format!("{id}.crt"))).unwrap(),
        key_pem: std::fs::read_to_string(cl.path(&format!("{id}.key"))).unwrap(),
    }
}

/// The addresses `GET /v1/replication/peers` lists.
async fn peers_of(admin: &Client) -> Vec<String> {
    let list: Value = admin.get_json("/v1/replication/peers").await.unwrap();
    list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer"].as_str().unwrap().to_string())
        .collect()
}

/// The ids `GET /v1/controllers` lists.
async fn controller_ids(admin: &Client) -> Vec<String> {
    let list: ResourceList = admin.get_json("/v1/controllers").await.unwrap();
    list.items
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

async fn has_node(admin: &Client, id: &str) -> bool {
    admin
        .get_json::<Node>(&format!("/v1/nodes/{id}"))
        .await
        .is_ok()
}

#[tokio::test]
async fn a_controller_joining_through_one_seed_is_discovered_and_both_replicate() {
    let cl = Cluster::new();
    let (la, lb) = (bind().await, bind().await);
    let (a_addr, b_addr) = (addr(&la), addr(&lb));
    // a knows nobody; b knows only a.
    let a = Running::start_on(la, cl.peer_config("ctl-a", false, vec![]));
    let b = Running::start_on(lb, cl.peer_config("ctl-b", false, vec![a_addr.clone()]));
    let trust = cl.root.cert_pem().to_string();
    let (admin_a, admin_b) = (
        client(&a.url, &trust, &cl.admin()),
        client(&b.url, &trust, &cl.admin()),
    );
    register(
        &client(&a.url, &trust, &cl.node("n1")),
        "n1",
        report("hv1", "DC1", None),
    )
    .await
    .unwrap();
    register(
        &client(&b.url, &trust, &cl.node("n2")),
        "n2",
        report("hv2", "DC1", None),
    )
    .await
    .unwrap();

    // a learns b from b's registration, with no configuration change, and pulls from it.
    eventually("ctl-a to pull from ctl-b", || async {
        peers_of(&admin_a).await == vec![b_addr.clone()]
    })
    .await;
    eventually("each node to be visible on both controllers", || async {
        has_node(&admin_a, "n2").await && has_node(&admin_b, "n1").await
    })
    .await;
    for admin in [&admin_a, &admin_b] {
        eventually("both records on both controllers", || async {
            controller_ids(admin).await == vec!["ctl-a", "ctl-b"]
        })
        .await;
    }
    // a records how far b has pulled from it: up to a's newest operation of every
    // origin b pulled (a's own writes at least).
    let vector_reader = client(&a.url, &trust, &cl.controller_peer());
    eventually(
        "ctl-a to record ctl-b's cursor at its newest operation",
        || async {
            let vector: Value = vector_reader
                .get_json("/v1/replication/vector")
                .await
                .unwrap();
            let peers: Value = admin_a.get_json("/v1/replication/peers").await.unwrap();
            let by_b = peers["pulledBy"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["controllerId"] == "ctl-b")
                .cloned();
            by_b.is_some_and(|c| {
                c["origins"]["ctl-a"] == vector["origins"]["ctl-a"] && c["at"].is_string()
            })
        },
    )
    .await;
    let record: Value = admin_a.get_json("/v1/controllers/ctl-b").await.unwrap();
    assert_eq!(record["kind"], "Controller");
    assert_eq!(record["spec"]["address"], b_addr.as_str());
    assert_eq!(record["spec"]["dcId"], "DC1");
    let own = kcore_pki::certs_from_pem(&controller_cert(&cl, "ctl-b").cert_pem).unwrap();
    assert_eq!(
        record["spec"]["certificateSerial"],
        kcore_pki::serial_hex(&own[0]).unwrap().as_str()
    );
    let sub = kcore_pki::certs_from_pem(cl.sub.cert_pem()).unwrap();
    assert_eq!(
        record["spec"]["subCaSerial"],
        kcore_pki::serial_hex(&sub[0]).unwrap().as_str()
    );
    assert!(record["status"]["firstSeen"].is_string(), "{record}");
    assert!(record["status"]["lastSeen"].is_string(), "{record}");

    // Who may read and register.
    let node = client(&a.url, &trust, &cl.node("n1"));
    let err = node.get_json::<Value>("/v1/controllers").await.unwrap_err();
    assert_eq!(code(&err), "FORBIDDEN_ROLE");
    let as_b = client(&a.url, &trust, &controller_cert(&cl, "ctl-b"));
    let spec = &record["spec"];
    let err = as_b
        .post_json::<_, Value>("/v1/controllers/ctl-a/register", spec)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NOT_SELF");
    let mut forged = spec.clone();
    forged["certificateSerial"] = json!("0abc");
    let err = as_b
        .post_json::<_, Value>("/v1/controllers/ctl-b/register", &forged)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NOT_SELF");
    let err = admin_a
        .delete::<Value>("/v1/controllers/ctl-a")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "CONTROLLER_DELETES_ITSELF");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_deleted_controller_is_no_longer_pulled_from_and_its_certificate_is_refused() {
    let cl = Cluster::new();
    let (la, lb, lc) = (bind().await, bind().await, bind().await);
    let (a_addr, c_addr) = (addr(&la), addr(&lc));
    let a = Running::start_on(la, cl.peer_config("ctl-a", false, vec![]));
    let b = Running::start_on(lb, cl.peer_config("ctl-b", false, vec![a_addr.clone()]));
    // c is also a configured seed of nobody but joins through a.
    let c = Running::start_on(lc, cl.peer_config("ctl-c", false, vec![a_addr.clone()]));
    let trust = cl.root.cert_pem().to_string();
    let admins: Vec<Client> = [&a, &b]
        .iter()
        .map(|r| client(&r.url, &trust, &cl.admin()))
        .collect();
    for admin in admins.iter() {
        eventually("every controller to know all three", || async {
            controller_ids(admin).await == vec!["ctl-a", "ctl-b", "ctl-c"]
        })
        .await;
    }
    eventually("ctl-b to pull from ctl-c", || async {
        peers_of(&admins[1]).await.contains(&c_addr)
    })
    .await;

    let deleted: Value = admins[0].delete("/v1/controllers/ctl-c").await.unwrap();
    assert_eq!(deleted, json!({"kind": "Controller", "name": "ctl-c"}));
    for (admin, r) in admins.iter().zip([&a, &b]) {
        eventually("ctl-c to be gone and unpulled", || async {
            !controller_ids(admin).await.contains(&"ctl-c".to_string())
                && !peers_of(admin).await.contains(&c_addr)
        })
        .await;
        let as_c = client(&r.url, &trust, &controller_cert(&cl, "ctl-c"));
        eventually("ctl-c's certificate to be refused", || async {
            matches!(as_c.get_json::<Value>("/v1/replication/vector").await,
                Err(ref e) if code(e) == "CERTIFICATE_REVOKED")
        })
        .await;
    }
    // Another controller's certificate still works.
    let as_b = client(&a.url, &trust, &controller_cert(&cl, "ctl-b"));
    as_b.get_json::<Value>("/v1/replication/vector")
        .await
        .unwrap();
    // The revocation is replicated state, visible in the merged table everywhere.
    let db_b = fields_table(&cl.path("ctl-b.sqlite"));
    assert!(
        db_b.iter().any(|(r, _, _, _, v)| r == "pki/revoked"
            && v.as_deref().unwrap_or("").contains("controller/ctl-c")),
        "{db_b:?}"
    );
    let err = admins[0]
        .delete::<Value>("/v1/controllers/ctl-c")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "NOT_FOUND");
    for r in [a, b, c] {
        r.stop().await;
    }
}

/// One row of the merged `fields` table: resource, field, hlc, origin, value.
type Row = (String, String, String, String, Option<String>);

/// The merged table of the database at `path`, read by a second connection (WAL).
fn fields_table(path: &Path) -> Vec<Row> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT resource, field, hlc, origin, value FROM fields ORDER BY resource, field")
        .unwrap();
    stmt.query_map([], |row| {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn cluster_update(labels: Value, batch_size: u64) -> Value {
    json!({
        "kind": "ClusterUpdate",
        "metadata": {"name": "release-1", "labels": labels},
        "spec": {
            "target": {"flake_ref": "github:kcorehypervisor/kcore", "flake_rev": REV},
            "selector": {"all_nodes": true},
            "strategy": {"strategy_type": "batch", "batch_size": batch_size, "max_unavailable": 2},
        },
    })
}

async fn approval(admin: &Client, id: &str) -> Option<Approval> {
    admin
        .get_json::<Node>(&format!("/v1/nodes/{id}"))
        .await
        .ok()
        .map(|n| n.approval)
}

async fn peer_states(admin: &Client) -> Vec<String> {
    let list: Value = admin.get_json("/v1/replication/peers").await.unwrap();
    list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap().to_string())
        .collect()
}

/// Three controllers, `x` pulling from `y` only through `links[x][y]` (its seeds): the
/// records' direct addresses are the same controllers, so they are not pulled twice. Waits
/// until every controller pulls through its two seeds only, healthy, and knows all three.
struct Mesh {
    links: Vec<Vec<Option<FaultProxy>>>,
    running: Vec<Running>,
    admins: Vec<Client>,
}

const IDS: [&str; 3] = ["ctl-a", "ctl-b", "ctl-c"];

impl Mesh {
    async fn start(cl: &Cluster, manual: bool) -> Mesh {
        let (la, lb, lc) = (bind().await, bind().await, bind().await);
        let real = [addr(&la), addr(&lb), addr(&lc)];
        let mut links: Vec<Vec<Option<FaultProxy>>> = Vec::new();
        for x in 0..3 {
            let mut row = Vec::new();
            for (y, upstream) in real.iter().enumerate() {
                row.push(if x == y {
                    None
                } else {
                    Some(FaultProxy::start(upstream).await)
                });
            }
            links.push(row);
        }
        let mut mesh = Mesh {
            links,
            running: Vec::new(),
            admins: Vec::new(),
        };
        let trust = cl.root.cert_pem().to_string();
        for (x, l) in [la, lb, lc].into_iter().enumerate() {
            let config = cl.peer_config(IDS[x], manual, mesh.seeds(x));
            mesh.running.push(Running::start_on(l, config));
        }
        for r in &mesh.running {
            mesh.admins.push(client(&r.url, &trust, &cl.admin()));
        }
        for (x, admin) in mesh.admins.iter().enumerate() {
            eventually(
                "each controller to pull through its seeds only, healthy",
                || async {
                    peers_of(admin).await == mesh.seeds(x)
                        && peer_states(admin).await == vec!["Healthy", "Healthy"]
                        && controller_ids(admin).await == IDS
                },
            )
            .await;
        }
        mesh
    }

    fn seeds(&self, x: usize) -> Vec<String> {
        self.links[x]
            .iter()
            .flatten()
            .map(|p| p.addr.clone())
            .collect()
    }

    /// Cuts every link between `x` and the other two.
    fn isolate(&self, x: usize) {
        for y in (0..3).filter(|y| *y != x) {
            self.links[x][y].as_ref().unwrap().partition();
            self.links[y][x].as_ref().unwrap().partition();
        }
    }

    fn heal(&self) {
        for proxy in self.links.iter().flatten().flatten() {
            proxy.heal();
        }
    }

    async fn stop(self) {
        for r in self.running {
            r.stop().await;
        }
    }
}

#[tokio::test]
async fn three_controllers_partitioned_one_against_two_converge_after_healing() {
    let cl = Cluster::new();
    let mesh = Mesh::start(&cl, true).await;
    let (running, admins, ids) = (&mesh.running, &mesh.admins, IDS);
    let trust = cl.root.cert_pem().to_string();
    let node = |x: usize, id: &str| client(&running[x].url, &trust, &cl.node(id));
    for id in ["n1", "n2", "n3"] {
        register(&node(0, id), id, report("hv1", "DC1", None))
            .await
            .unwrap();
    }
    admins[0]
        .put_json::<_, Value>(
            "/v1/clusterupdates/release-1",
            &cluster_update(json!({}), 2),
        )
        .await
        .unwrap();
    for admin in admins.iter() {
        eventually("the setup to reach every controller", || async {
            has_node(admin, "n3").await
                && admin
                    .get_json::<Value>("/v1/clusterupdates/release-1")
                    .await
                    .is_ok()
        })
        .await;
    }

    // Partition {a} | {b, c}.
    mesh.isolate(0);
    eventually("ctl-a to see both peers unreachable", || async {
        peer_states(&admins[0]).await == vec!["Unreachable", "Unreachable"]
    })
    .await;
    for x in [1, 2] {
        eventually("b and c to see a unreachable", || async {
            peer_states(&admins[x])
                .await
                .contains(&"Unreachable".to_string())
        })
        .await;
    }

    // Writes on every side. On a: approve n1 and n3, a label, a new node n5.
    post::<Node>(&admins[0], "/v1/nodes/n1/approve")
        .await
        .unwrap();
    post::<Node>(&admins[0], "/v1/nodes/n3/approve")
        .await
        .unwrap();
    admins[0]
        .put_json::<_, Value>(
            "/v1/clusterupdates/release-1",
            &cluster_update(json!({"tier": "canary"}), 2),
        )
        .await
        .unwrap();
    register(&node(0, "n5"), "n5", report("hv5", "DC1", None))
        .await
        .unwrap();
    // On b: reject n3 (after a's approval of it), a new node n4.
    let rejected: Node = post(&admins[1], "/v1/nodes/n3/reject").await.unwrap();
    assert_eq!(rejected.approval, Approval::Rejected);
    register(&node(1, "n4"), "n4", report("hv4", "DC2", None))
        .await
        .unwrap();
    // On c: approve n2, change the rollout's spec (a different field than a's label).
    post::<Node>(&admins[2], "/v1/nodes/n2/approve")
        .await
        .unwrap();
    admins[2]
        .put_json::<_, Value>(
            "/v1/clusterupdates/release-1",
            &cluster_update(json!({}), 3),
        )
        .await
        .unwrap();
    // b and c still replicate between themselves; a does not hear of it.
    eventually("b's node to reach c inside the partition", || async {
        has_node(&admins[2], "n4").await
    })
    .await;
    assert!(!has_node(&admins[0], "n4").await);
    assert!(!has_node(&admins[1], "n5").await);

    mesh.heal();
    let dbs: Vec<PathBuf> = ids
        .iter()
        .map(|id| cl.path(&format!("{id}.sqlite")))
        .collect();
    eventually("the three merged tables to be identical", || async {
        // lastSeen refreshes keep moving; everything else must match exactly.
        let table = |p: &PathBuf| -> Vec<Row> {
            fields_table(p)
                .into_iter()
                .filter(|(_, f, _, _, _)| f != "status.lastSeen")
                .collect()
        };
        let (ta, tb, tc) = (table(&dbs[0]), table(&dbs[1]), table(&dbs[2]));
        ta == tb && tb == tc
    })
    .await;
    // Nothing acknowledged is lost, and the reject stands over a's older approval.
    for admin in admins.iter() {
        assert_eq!(approval(admin, "n1").await, Some(Approval::Approved));
        assert_eq!(approval(admin, "n2").await, Some(Approval::Approved));
        assert_eq!(approval(admin, "n3").await, Some(Approval::Rejected));
        assert!(has_node(admin, "n4").await && has_node(admin, "n5").await);
        let update: Value = admin
            .get_json("/v1/clusterupdates/release-1")
            .await
            .unwrap();
        assert_eq!(update["metadata"]["labels"]["tier"], "canary", "{update}");
        assert_eq!(update["spec"]["strategy"]["batchSize"], 3, "{update}");
    }
    // The rejected node is refused by every controller, a (partitioned when b rejected
    // it, and which had approved it) included.
    for x in 0..3 {
        let err = beat(&node(x, "n3"), "n3").await.unwrap_err();
        assert_eq!(code(&err), "NODE_REJECTED", "controller {x}: {err}");
    }
    mesh.stop().await;
}

#[tokio::test]
async fn a_controller_partitioned_during_a_deletion_refuses_the_deleted_certificate_after_healing()
{
    let cl = Cluster::new();
    let mesh = Mesh::start(&cl, false).await;
    let trust = cl.root.cert_pem().to_string();
    let as_c = |x: usize| client(&mesh.running[x].url, &trust, &controller_cert(&cl, "ctl-c"));
    let revoked = |x: usize| async move {
        matches!(as_c(x).get_json::<Value>("/v1/replication/vector").await,
            Err(ref e) if code(e) == "CERTIFICATE_REVOKED")
    };
    // {b} | {a, c}; c is deleted on a.
    mesh.isolate(1);
    eventually("ctl-b to see both peers unreachable", || async {
        peer_states(&mesh.admins[1]).await == vec!["Unreachable", "Unreachable"]
    })
    .await;
    let _: Value = mesh.admins[0]
        .delete("/v1/controllers/ctl-c")
        .await
        .unwrap();
    eventually("ctl-a to refuse ctl-c and stop pulling from it", || async {
        revoked(0).await && peers_of(&mesh.admins[0]).await == vec![mesh.seeds(0)[0].clone()]
    })
    .await;
    // b has no path to the revocation yet: c's certificate still works there.
    as_c(1)
        .get_json::<Value>("/v1/replication/vector")
        .await
        .unwrap();

    mesh.heal();
    // b drops its seed for c (the seed's vector named ctl-c, whatever its address) and
    // refuses c's certificate.
    eventually("ctl-b to refuse ctl-c and stop pulling from it", || async {
        revoked(1).await && peers_of(&mesh.admins[1]).await == vec![mesh.seeds(1)[0].clone()]
    })
    .await;
    assert!(
        !controller_ids(&mesh.admins[1])
            .await
            .contains(&"ctl-c".to_string())
    );
    mesh.stop().await;
}
