//! Benchmark: N simulated nodes (default 2,000) register and heartbeat every 15 s against
//! one controller on 127.0.0.1, each with its own node certificate over mutual TLS.
//!
//! The controller runs as a separate process (this example re-executed with `serve`), so
//! its CPU time and RSS are read from `/proc/<pid>` without the load generator's share.
//! While the nodes heartbeat, an admin client calls `GET /v1/nodes` twice a second; the
//! same call measured on the idle controller (same run, before the load starts) is the
//! baseline the loaded figures are compared with.
//!
//! ```sh
//! cargo run --release -p kcore-controller --example bench_nodes -- [NODES] [SECONDS]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use kcore_api::cluster::{HeartbeatRequest, NodeList, NodeReport, RegisterRequest, StorageReport};
use kcore_net::{Client, ClientOptions};
use kcore_pki::{Authority, CertifiedKey, Identity, Role};

const HEARTBEAT: Duration = Duration::from_secs(15);
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve(args.get(2).ok_or("serve needs a config path")?);
    }
    let nodes: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let seconds: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(75);
    // Both processes hold one connection per node: check the descriptor limit up front
    // instead of failing half-way with "operation timed out".
    if let Some(limit) = open_files_limit()
        && limit < (nodes as u64) + 256
    {
        return Err(format!(
            "open-file limit {limit} is too low for {nodes} nodes: run `ulimit -n {}` first",
            nodes * 2 + 1024
        )
        .into());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(nodes, Duration::from_secs(seconds)))
}

/// The controller process: bind 127.0.0.1:0, print the port, serve until stdin closes.
fn serve(config_path: &str) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = kcore_controller::ControllerConfig::load(std::path::Path::new(config_path))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("PORT {}", listener.local_addr()?.port());
        let shutdown = async {
            // The parent closes our stdin when it is done (or dies).
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = String::new();
                let _ = std::io::stdin().read_line(&mut sink);
            })
            .await;
        };
        kcore_controller::run(listener, config, shutdown).await?;
        Ok::<(), BoxError>(())
    })
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).ok_or("short stat")?.parse()?;
    let stime: f64 = fields.get(12).ok_or("short stat")?.parse()?;
    // USER_HZ is 100 on every Linux this runs on (sysconf needs unsafe or libc).
    Ok((utime + stime) / 100.0)
}

fn status_kib(pid: u32, key: &str) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .ok_or("no such status line")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("bad status line")?
        .parse()?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(10),
        attempt_timeout: Duration::from_secs(30),
        total_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}

async fn measure_list(admin: &Client, samples: usize, pause: Duration) -> Vec<Duration> {
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        match admin.get_json::<NodeList>("/v1/nodes").await {
            Ok(_) => out.push(started.elapsed()),
            Err(err) => eprintln!("GET /v1/nodes failed: {err}"),
        }
        tokio::time::sleep(pause).await;
    }
    out.sort();
    out
}

async fn bench(nodes: usize, window: Duration) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let p = |name: &str| dir.path().join(name);
    let cluster = "bench";
    let root = Authority::new_root(cluster, YEAR)?;
    let sub = root.new_sub_ca("controllers", YEAR)?;
    let ctl = sub.issue(
        &Identity::new(cluster, Role::Controller, "ctl1")?,
        &["127.0.0.1".into()],
        YEAR,
    )?;
    std::fs::write(p("ca.crt"), root.cert_pem())?;
    std::fs::write(p("c.crt"), &ctl.cert_pem)?;
    std::fs::write(p("c.key"), &ctl.key_pem)?;
    std::fs::write(p("s.crt"), sub.cert_pem())?;
    std::fs::write(p("s.key"), sub.key_pem())?;
    // Every simulated node connects from 127.0.0.1: lift the per-address limit (1,024
    // by default), which real nodes, each with its own address, do not hit.
    let yaml = format!(
        "controllerId: ctl1\nclusterName: {cluster}\ndatabasePath: {}\nconnections:\n  maxConnectionsPerPeer: 16384\ntls:\n  caFile: {}\n  certFile: {}\n  keyFile: {}\n  subCaCertFile: {}\n  subCaKeyFile: {}\n",
        p("state.sqlite").display(),
        p("ca.crt").display(),
        p("c.crt").display(),
        p("c.key").display(),
        p("s.crt").display(),
        p("s.key").display()
    );
    std::fs::write(p("controller.yaml"), yaml)?;

    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg(p("controller.yaml"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()?;
    let pid = child.id();
    let mut line = String::new();
    {
        use std::io::BufRead as _;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
    }
    let port: u16 = line
        .trim()
        .strip_prefix("PORT ")
        .ok_or("controller did not start")?
        .parse()?;
    let url = format!("https://127.0.0.1:{port}");
    let trust = root.cert_pem().to_string();
    println!(
        "controller pid {pid} on {url}; {nodes} nodes, heartbeat every {HEARTBEAT:?}, window {window:?}"
    );

    let admin_cert = root.issue(&Identity::new(cluster, Role::Admin, "bench")?, &[], YEAR)?;
    let admin = Client::new(
        vec![url.clone()],
        kcore_pki::client_config(&trust, &admin_cert.cert_pem, &admin_cert.key_pem)?,
        options(),
    )?;

    // Node certificates the production way: key + CSR per node, signed by the sub-CA.
    let started = Instant::now();
    let mut certs = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let ident = Identity::new(cluster, Role::Node, &format!("n{i}"))?;
        let (key_pem, csr_pem) = kcore_pki::generate_csr(&ident, &[])?;
        let cert_pem = sub.sign_csr(&csr_pem, &ident, YEAR)?;
        certs.push(CertifiedKey { cert_pem, key_pem });
    }
    println!(
        "issued {nodes} node certificates in {:?}",
        started.elapsed()
    );

    // Register everyone (64 at a time).
    let started = Instant::now();
    let mut clients = Vec::with_capacity(nodes);
    for (i, cert) in certs.iter().enumerate() {
        let tls = kcore_pki::client_config(&trust, &cert.cert_pem, &cert.key_pem)?;
        clients.push((
            format!("n{i}"),
            Arc::new(Client::new(vec![url.clone()], tls, options())?),
        ));
    }
    for chunk in clients.chunks(64) {
        let mut set = tokio::task::JoinSet::new();
        for (id, client) in chunk {
            let (id, client) = (id.clone(), client.clone());
            set.spawn(async move {
                let report = NodeReport {
                    hostname: id.clone(),
                    dc_id: if id.len() % 2 == 0 {
                        "DC1".into()
                    } else {
                        "DC2".into()
                    },
                    storage: StorageReport::default(),
                    ..Default::default()
                };
                client
                    .post_json::<_, serde_json::Value>(
                        &format!("/v1/nodes/{id}/register"),
                        &RegisterRequest { report },
                    )
                    .await
            });
        }
        while let Some(res) = set.join_next().await {
            res??;
        }
    }
    println!("registered {nodes} nodes in {:?}", started.elapsed());

    // Baseline: GET /v1/nodes on the idle controller (all nodes registered, no heartbeats).
    let idle = measure_list(&admin, 40, Duration::from_millis(50)).await;

    // Load: every node heartbeats every 15 s, phases spread evenly.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let beats = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut load = tokio::task::JoinSet::new();
    for (i, (id, client)) in clients.iter().enumerate() {
        let (id, client) = (id.clone(), client.clone());
        let (stop, failures, beats) = (stop.clone(), failures.clone(), beats.clone());
        let offset = HEARTBEAT.mul_f64(i as f64 / nodes as f64);
        load.spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(HEARTBEAT);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let res = client
                    .post_json::<_, serde_json::Value>(
                        &format!("/v1/nodes/{id}/heartbeat"),
                        &HeartbeatRequest::default(),
                    )
                    .await;
                match res {
                    Ok(_) => beats.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    Err(_) => failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                };
            }
        });
    }
    // Let every node reach its first heartbeat (one full period) before measuring.
    tokio::time::sleep(HEARTBEAT).await;
    let cpu0 = cpu_seconds(pid)?;
    let wall0 = Instant::now();
    let beats0 = beats.load(std::sync::atomic::Ordering::Relaxed);
    let samples = (window.as_millis() / 500) as usize;
    let loaded = measure_list(&admin, samples, Duration::from_millis(500)).await;
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu0;
    let beats_done = beats.load(std::sync::atomic::Ordering::Relaxed) - beats0;
    let rss = status_kib(pid, "VmRSS:")?;
    let hwm = status_kib(pid, "VmHWM:")?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.abort_all();
    drop(child.stdin.take());
    let _ = child.wait();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (ip50, ip99) = (percentile(&idle, 0.5), percentile(&idle, 0.99));
    let (lp50, lp99) = (percentile(&loaded, 0.5), percentile(&loaded, 0.99));
    println!("--- results ({nodes} nodes, {wall:.0} s window) ---");
    println!(
        "heartbeats handled: {beats_done} ({:.1}/s), failed: {}",
        beats_done as f64 / wall,
        failures.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "controller CPU: {cpu:.2} s over {wall:.1} s = {:.1}% of one core",
        100.0 * cpu / wall
    );
    println!(
        "controller RSS: {:.1} MiB (peak {:.1} MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "GET /v1/nodes idle   (baseline): p50 {:.1} ms, p99 {:.1} ms ({} samples)",
        ms(ip50),
        ms(ip99),
        idle.len()
    );
    println!(
        "GET /v1/nodes loaded:            p50 {:.1} ms, p99 {:.1} ms ({} samples)",
        ms(lp50),
        ms(lp99),
        loaded.len()
    );
    println!(
        "loaded / idle: p50 x{:.2}, p99 x{:.2}",
        ms(lp50) / ms(ip50).max(0.001),
        ms(lp99) / ms(ip99).max(0.001)
    );
    Ok(())
}
