//! What an agent request costs, against baselines measured in the same run:
//! - `GET /v1/inventory/disks` (real lsblk + sysfs) against `GET /v1/health`, both over the
//!   same kept-alive mTLS connection;
//! - an apply-disko dry run (levels 1-2, then 1-3) against one bare `nix-instantiate --eval
//!   -E 1` (the evaluator's start-up, which each level pays).
//!
//! Run: `cargo bench -p kcore-agent --bench dry_run`. Prints medians and ratios.

#![allow(clippy::unwrap_used)] // a benchmark harness, like test code

use std::path::Path;
use std::time::{Duration, Instant};

use kcore_agent::config::AgentConfig;
use kcore_agent::{Agent, RuntimeOptions};
use kcore_api::inventory::{ApplyDiskoRequest, DiskInventory, DiskoPlanResponse};
use kcore_pki::{Authority, Identity, Role};

const ROUNDS: usize = 15;

const LAYOUT: &str = r#"{
  disko.devices.disk.data1 = {
    type = "disk";
    device = "/dev/sdb";
    content = {
      type = "gpt";
      partitions.data = {
        size = "100%";
        content = { type = "filesystem"; format = "ext4"; mountpoint = "/var/lib/kcore/volumes1"; };
      };
    };
  };
}
"#;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn time<F, Fut>(mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f().await; // warm-up
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        f().await;
        samples.push(t.elapsed());
    }
    median(samples)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let root = Authority::new_root("bench", Duration::from_secs(86400)).unwrap();
    let leaf = |role, id: &str| {
        root.issue(
            &Identity::new("bench", role, id).unwrap(),
            &["127.0.0.1".into()],
            Duration::from_secs(3600),
        )
        .unwrap()
    };
    let server = leaf(Role::Node, "n1");
    let p = |rel: &str| dir.path().join(rel);
    std::fs::write(p("ca.crt"), root.cert_pem()).unwrap();
    std::fs::write(p("n.crt"), &server.cert_pem).unwrap();
    std::fs::write(p("n.key"), &server.key_pem).unwrap();
    let deep = kcore_disko::DeepInputs::from_env();
    let mut doc = serde_json::json!({
        "nodeId": "n1", "mode": "managed",
        "tls": {"caFile": p("ca.crt"), "certFile": p("n.crt"), "keyFile": p("n.key")},
        "disko": {"managementModeFile": p("mode"), "stateDir": p("disko")},
    });
    let start = |doc: serde_json::Value| {
        let config = AgentConfig::parse(&doc.to_string(), Path::new("bench.yaml")).unwrap();
        // The live machine: this host has no /dev/sdb, so the plan carries a refusal, but
        // validation, the lsblk snapshot and planning all run as they would on a node.
        let agent = Agent::new(config, RuntimeOptions::default()).unwrap();
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(agent.serve(listener, std::future::pending()));
            addr
        }
    };
    let admin = leaf(Role::Admin, "bench");
    let client = |addr: std::net::SocketAddr| {
        kcore_net::Client::new(
            vec![format!("https://{addr}")],
            kcore_pki::client_config(root.cert_pem(), &admin.cert_pem, &admin.key_pem).unwrap(),
            kcore_net::ClientOptions::default(),
        )
        .unwrap()
    };
    let shallow = client(start(doc.clone()).await);
    let dry = ApplyDiskoRequest {
        layout: LAYOUT.into(),
        apply: false,
        plan_hash: None,
        timeout_seconds: None,
    };

    let health = time(|| async {
        let _: serde_json::Value = shallow.get_json("/v1/health").await.unwrap();
    })
    .await;
    let disks = time(|| async {
        let _: DiskInventory = shallow.get_json("/v1/inventory/disks").await.unwrap();
    })
    .await;
    let evaluator = kcore_disko::eval::Evaluator::new(None).unwrap();
    let eval_start = time(|| async { evaluator.baseline().await.unwrap() }).await;
    let dry_12 = time(|| async {
        let _: DiskoPlanResponse = shallow.post_json("/v1/disko/apply", &dry).await.unwrap();
    })
    .await;
    println!("median of {ROUNDS} rounds (after one warm-up):");
    println!("  GET /v1/health (baseline)            {health:>10.2?}");
    println!(
        "  GET /v1/inventory/disks (live lsblk) {disks:>10.2?}  = {:.1}x baseline",
        disks.as_secs_f64() / health.as_secs_f64()
    );
    println!("  nix-instantiate --eval -E 1 (baseline) {eval_start:>8.2?}");
    println!(
        "  apply-disko dry run, levels 1-2      {dry_12:>10.2?}  = {:.1}x evaluator start",
        dry_12.as_secs_f64() / eval_start.as_secs_f64()
    );
    match deep {
        Some(inputs) => {
            doc["disko"]["diskoSource"] = serde_json::json!(inputs.disko);
            doc["disko"]["nixpkgsLib"] = serde_json::json!(inputs.nixpkgs_lib);
            let deep_client = client(start(doc).await);
            let dry_123 = time(|| async {
                let _: DiskoPlanResponse = deep_client
                    .post_json("/v1/disko/apply", &dry)
                    .await
                    .unwrap();
            })
            .await;
            println!(
                "  apply-disko dry run, levels 1-3      {dry_123:>10.2?}  = {:.1}x evaluator start",
                dry_123.as_secs_f64() / eval_start.as_secs_f64()
            );
        }
        None => println!("  SKIP levels 1-3: no KCORE_TEST_DISKO / KCORE_TEST_NIXPKGS_LIB"),
    }
}
