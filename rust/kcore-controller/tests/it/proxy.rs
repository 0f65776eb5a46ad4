//! A fault-injecting TCP proxy on 127.0.0.1 between controllers (test support): each
//! direction passes, drops (bytes read and discarded: one-way loss) or delays its bytes,
//! and the whole link can be partitioned (open connections cut, new ones closed at once)
//! and healed. It forwards bytes and never looks inside TLS, so the controllers on both
//! ends run their real mutual TLS through it. Every loop ends: the accept loop when the
//! proxy is dropped, a connection's pumps at EOF, an error, or the next partition.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What one direction of the link does with the bytes it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Read and discard: the sender sees its writes succeed, the receiver gets nothing.
    Drop,
    /// Forward each chunk after this long.
    Delay(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Faults {
    /// Client to upstream.
    up: Fault,
    /// Upstream to client.
    down: Fault,
    partitioned: bool,
}

/// A running proxy; stops accepting when dropped (open connections end with their peers).
pub struct FaultProxy {
    /// `127.0.0.1:PORT`, what the other side dials instead of the upstream.
    pub addr: String,
    faults: Arc<Mutex<Faults>>,
    /// Bumped at every partition: live connections watch it and cut themselves.
    epoch: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.epoch.send_modify(|e| *e += 1);
    }
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`HOST:PORT`), passing everything.
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let faults = Arc::new(Mutex::new(Faults {
            up: Fault::Pass,
            down: Fault::Pass,
            partitioned: false,
        }));
        let (epoch, _) = watch::channel(0u64);
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream.to_string(),
            faults.clone(),
            epoch.clone(),
        ));
        FaultProxy {
            addr,
            faults,
            epoch,
            accept,
        }
    }

    /// Sets both directions (`up`: client to upstream, `down`: back).
    pub fn set(&self, up: Fault, down: Fault) {
        let mut f = self.faults.lock().unwrap();
        f.up = up;
        f.down = down;
    }

    /// Cuts every open connection and closes new ones until [`FaultProxy::heal`].
    pub fn partition(&self) {
        self.faults.lock().unwrap().partitioned = true;
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Ends a partition and every fault: all bytes pass again.
    pub fn heal(&self) {
        let mut f = self.faults.lock().unwrap();
        *f = Faults {
            up: Fault::Pass,
            down: Fault::Pass,
            partitioned: false,
        };
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    faults: Arc<Mutex<Faults>>,
    epoch: watch::Sender<u64>,
) {
    while let Ok((client, _)) = listener.accept().await {
        if faults.lock().unwrap().partitioned {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(&upstream).await else {
            continue;
        };
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        let up_faults = faults.clone();
        let down_faults = faults.clone();
        tokio::spawn(pump(
            cr,
            sw,
            move || up_faults.lock().unwrap().up,
            epoch.subscribe(),
        ));
        tokio::spawn(pump(
            sr,
            cw,
            move || down_faults.lock().unwrap().down,
            epoch.subscribe(),
        ));
    }
}

/// Copies `from` to `to` under the direction's current fault until EOF, an error, or
/// the next partition (a change of `epoch`).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    fault: impl Fn() -> Fault,
    mut epoch: watch::Receiver<u64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            _ = epoch.changed() => return,
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        match fault() {
            Fault::Pass => {}
            Fault::Drop => continue,
            Fault::Delay(d) => tokio::select! {
                _ = epoch.changed() => return,
                () = tokio::time::sleep(d) => {}
            },
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

// The proxy's own behaviour, on a plain echo server.

async fn echo_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, task)
}

/// Sends `msg` and reads back up to its length within `wait`: what arrived.
async fn round_trip(stream: &mut TcpStream, msg: &[u8], wait: Duration) -> Vec<u8> {
    stream.write_all(msg).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(wait, async {
        while got.len() < msg.len() {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    got
}

#[tokio::test]
async fn the_proxy_passes_drops_one_way_delays_partitions_and_heals() {
    let (upstream, echo) = echo_server().await;
    let proxy = FaultProxy::start(&upstream).await;
    let mut s = TcpStream::connect(&proxy.addr).await.unwrap();
    let long = Duration::from_secs(5);
    assert_eq!(round_trip(&mut s, b"ping", long).await, b"ping");

    // One-way loss: first the answers are discarded (the echo server got the request),
    // then the requests; either way nothing comes back, and the connection survives.
    proxy.set(Fault::Pass, Fault::Drop);
    assert_eq!(
        round_trip(&mut s, b"lost", Duration::from_millis(300)).await,
        b""
    );
    proxy.set(Fault::Drop, Fault::Pass);
    assert_eq!(
        round_trip(&mut s, b"gone", Duration::from_millis(300)).await,
        b""
    );
    proxy.set(Fault::Pass, Fault::Pass);
    assert_eq!(round_trip(&mut s, b"back", long).await, b"back");

    // Delay: the bytes arrive, later than the delay.
    proxy.set(Fault::Delay(Duration::from_millis(200)), Fault::Pass);
    let started = std::time::Instant::now();
    assert_eq!(round_trip(&mut s, b"slow", long).await, b"slow");
    assert!(started.elapsed() >= Duration::from_millis(200));

    // Partition: the open connection is cut and a new one is closed at once.
    proxy.partition();
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0);
    let mut t = TcpStream::connect(&proxy.addr).await.unwrap();
    assert_eq!(t.read(&mut buf).await.unwrap_or(0), 0);

    proxy.heal();
    let mut u = TcpStream::connect(&proxy.addr).await.unwrap();
    assert_eq!(round_trip(&mut u, b"healed", long).await, b"healed");
    echo.abort();
}
