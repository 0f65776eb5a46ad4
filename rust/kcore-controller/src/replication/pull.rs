//! The pulling side of replication: one task per peer ([`run`], `follow`) that
//! long-polls the peer's vector and pulls what it lacks ([`pull_once`]), snapshots fetched
//! in pages, the peer clients ([`PeerFactory`], [`Peer`]: timeouts from the measured round
//! trip, credentials reloaded after a reissue), each peer's status, and the bounded
//! backoff. The routes it calls are in the parent module.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kcore_net::{Client, ClientOptions};

use super::{MIN_PULL_SPACING, OpsPage, PULL_INTERVAL, PeerState, PeerStatus, VersionVector};
use crate::api::AppState;
use crate::store::{CompactionPolicy, Op, Snapshot};
/// Every page of a peer's snapshot, as one: the first page's vector (see
/// [`crate::store::Store::snapshot_page`] for why that is safe) and every row. A peer
/// from before paging answers the whole snapshot at once (`more` absent).
async fn fetch_snapshot(
    peer: &Client,
    page_rows: usize,
) -> Result<Snapshot, kcore_net::ClientError> {
    let mut whole: Option<Snapshot> = None;
    let mut after: Option<(String, String)> = None;
    loop {
        let path = match &after {
            None => format!("/v1/replication/snapshot?pageRows={page_rows}"),
            Some((resource, field)) => format!(
                "/v1/replication/snapshot?pageRows={page_rows}&afterResource={}&afterField={}",
                encode(resource),
                encode(field)
            ),
        };
        let page: Snapshot = peer.get_json(&path).await?;
        let next = page
            .fields
            .last()
            .map(|op| (op.resource.clone(), op.field.clone()));
        let more = page.more;
        match &mut whole {
            None => whole = Some(page),
            Some(w) => w.fields.extend(page.fields),
        }
        // Key order strictly rises, so paging ends; a page that does not move on would
        // be asked for again and again.
        match next {
            Some(next) if more && after.as_ref() != Some(&next) => after = Some(next),
            _ => break,
        }
    }
    let mut whole = whole.unwrap_or_default();
    whole.more = false;
    Ok(whole)
}

/// What one poll of a peer did.
#[derive(Debug, Clone, Default)]
pub struct PullReport {
    /// Operations merged.
    pub merged: usize,
    /// Round-trip time of the version-vector call.
    pub rtt: Duration,
    /// The id the peer gave.
    pub controller_id: String,
    pub refused_operations: usize,
    pub refused_heartbeats: usize,
    /// The furthest-ahead refused time.
    pub max_ahead: Option<Duration>,
    /// The first refusal, for people.
    pub first_refusal: Option<String>,
    /// Snapshots installed (0 or 1).
    pub snapshots: u64,
    /// The peer's change counter, to long-poll with next (`None`: it does not long-poll).
    pub version: Option<u64>,
}

/// Notes one refused item in `report` (the furthest skew and the first refusal).
fn note_refusal(report: &mut PullReport, ahead: Option<Duration>, what: String) {
    if let Some(ahead) = ahead {
        report.max_ahead = Some(report.max_ahead.map_or(ahead, |m| m.max(ahead)));
    }
    report.first_refusal.get_or_insert(what);
}

/// Counts a merge's refusals in `report`, describing each for people.
fn note_merge(report: &mut PullReport, merge: crate::store::RemoteMerge) {
    report.merged += merge.merged;
    report.refused_operations += merge.refused.len();
    for refused in merge.refused {
        let op = &refused.op;
        let what = match &refused.skew {
            Some(skew) => format!(
                "operation {} {}.{} from origin {} {skew}",
                op.hlc, op.resource, op.field, op.origin
            ),
            None => format!(
                "operation {:?} {}.{} from origin {} has an unreadable clock stamp",
                op.hlc, op.resource, op.field, op.origin
            ),
        };
        note_refusal(report, refused.skew.map(|s| s.ahead), what);
    }
}

/// Fetches and installs the peer's snapshot.
async fn catch_up_by_snapshot(
    state: &AppState,
    peer: &Client,
    report: &mut PullReport,
) -> Result<(), kcore_net::ClientError> {
    let snapshot = fetch_snapshot(peer, state.config.compaction.snapshot_page_rows).await?;
    match state.store.install_snapshot(&snapshot) {
        Ok(merge) => {
            let refused = !merge.refused.is_empty();
            note_merge(report, merge);
            if !refused {
                report.snapshots += 1;
                tracing::info!(
                    peer = %snapshot.controller_id,
                    rows = snapshot.fields.len(),
                    "caught up from a snapshot"
                );
            }
        }
        Err(err) => tracing::error!("cannot install a replicated snapshot: {err}"),
    }
    Ok(())
}

/// Pulls everything `peer` has that this store lacks, refusing what is stamped beyond the
/// clock bound. Starts from the peer's snapshot when this store holds nothing from any
/// other origin yet (a new controller), or when the peer has compacted operations after
/// our cursor. With `since` (the version the peer gave last time), the vector request is
/// a long poll that returns once the peer changed, or after `wait`.
pub async fn pull_once(
    state: &AppState,
    peer: &Client,
    since: Option<u64>,
    wait: Duration,
) -> Result<PullReport, kcore_net::ClientError> {
    let started = std::time::Instant::now();
    let path = match since {
        Some(since) => format!(
            "/v1/replication/vector?since={since}&waitMs={}",
            wait.as_millis()
        ),
        None => "/v1/replication/vector".to_string(),
    };
    let theirs: VersionVector = peer.get_json(&path).await?;
    let rtt = started
        .elapsed()
        .saturating_sub(Duration::from_millis(theirs.waited_ms));
    let mut report = PullReport {
        rtt,
        controller_id: theirs.controller_id.clone(),
        version: theirs.version,
        ..PullReport::default()
    };
    let own = &state.config.controller_id;
    // What the peer holds decides what this controller may compact.
    for (origin, hlc) in &theirs.origins {
        if let Err(err) = state.store.record_held(&theirs.controller_id, origin, hlc) {
            tracing::warn!(
                "cannot record what peer {} holds: {err}",
                theirs.controller_id
            );
        }
    }
    for (node, t) in &theirs.heartbeats {
        if let Err(skew) = state.store.observe_heartbeat(node, *t) {
            report.refused_heartbeats += 1;
            note_refusal(
                &mut report,
                Some(skew.ahead),
                format!("heartbeat of node {node} {skew}"),
            );
        }
    }
    let ours = state.store.version_vector().unwrap_or_default();
    let fresh = ours.keys().all(|o| o == own) && theirs.origins.keys().any(|o| o != own);
    // A shortcut, not a requirement: a peer that cannot serve one is pulled by operations.
    if fresh && let Err(err) = catch_up_by_snapshot(state, peer, &mut report).await {
        tracing::debug!(peer = %theirs.controller_id, "no snapshot to start from: {err}");
    }
    // At most one snapshot per pull (a refused one must not be fetched again and again).
    let mut snapshot_tried = fresh;
    let mut ours = state.store.version_vector().unwrap_or_default();
    let mut origins: Vec<(String, String)> = theirs.origins.into_iter().collect();
    let mut next = 0;
    while next < origins.len() {
        let (origin, newest) = origins[next].clone();
        next += 1;
        let mut cursor = ours.get(&origin).cloned().unwrap_or_default();
        while cursor < newest {
            let page: OpsPage = peer
                .get_json(&format!(
                    "/v1/replication/ops?origin={}&after={}",
                    encode(&origin),
                    encode(&cursor)
                ))
                .await?;
            if page.snapshot_needed {
                // Once per pull: a second request means the snapshot did not move our
                // cursor past the compaction point (it was refused); try at the next pull.
                if snapshot_tried {
                    break;
                }
                snapshot_tried = true;
                catch_up_by_snapshot(state, peer, &mut report).await?;
                // Every origin again, from the cursors the snapshot moved.
                ours = state.store.version_vector().unwrap_or_default();
                next = 0;
                origins.retain(|(o, n)| ours.get(o).is_none_or(|c| c < n));
                break;
            }
            let Some(last) = page.ops.last().map(|op| op.hlc.clone()) else {
                break;
            };
            // A peer must only answer with the origin asked for; anything else is dropped.
            let ops: Vec<Op> = page
                .ops
                .into_iter()
                .filter(|op| op.origin == origin)
                .collect();
            match state.store.merge_remote(&ops) {
                Ok(merge) => note_merge(&mut report, merge),
                Err(err) => {
                    tracing::error!(%origin, "cannot merge replicated operations: {err}");
                    break;
                }
            }
            cursor = last;
            if !page.more {
                break;
            }
        }
    }
    Ok(report)
}

/// Percent-encodes a query value (HLCs and ids are `[0-9a-z-]`, but never trust that).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Per-attempt timeout for a peer whose smoothed round-trip time is `rtt`: twenty round
/// trips (a pull is a handful of requests and a page can be large), never below 2 s nor
/// above 30 s. Cross-DC peers get longer timeouts than peers on the same LAN.
pub fn adaptive_timeout(rtt: Duration) -> Duration {
    (rtt * 20).clamp(Duration::from_secs(2), Duration::from_secs(30))
}

/// One peer: its client, rebuilt when the round-trip time moves the timeout a lot.
pub struct Peer {
    pub name: String,
    url: String,
    factory: PeerFactory,
    /// The factory's credentials generation `client` was built with.
    generation: u64,
    client: Client,
    /// Smoothed round-trip time of the vector call (EWMA, weight 1/5 for new samples).
    rtt: Option<Duration>,
    timeout: Duration,
    /// Consecutive failed pulls.
    failures: u32,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .field("rtt", &self.rtt)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn peer_options(timeout: Duration) -> ClientOptions {
    ClientOptions {
        connect_timeout: timeout.min(Duration::from_secs(3)),
        attempt_timeout: timeout,
        total_timeout: timeout,
        ..ClientOptions::default()
    }
}

impl Peer {
    /// Folds in one round-trip sample; rebuilds the client when the timeout it implies
    /// differs from the current one by more than half.
    fn observe(&mut self, sample: Duration) {
        let rtt = match self.rtt {
            Some(old) => old.mul_f64(0.8) + sample.mul_f64(0.2),
            None => sample,
        };
        self.rtt = Some(rtt);
        let wanted = adaptive_timeout(rtt);
        let (a, b) = (wanted.as_secs_f64(), self.timeout.as_secs_f64());
        if (a - b).abs() > b / 2.0 && self.rebuild(wanted) {
            tracing::info!(peer = %self.name, ?rtt, timeout = ?wanted, "peer timeout adapted to its round-trip time");
        }
    }

    /// A new client with `timeout` and the factory's current credentials.
    fn rebuild(&mut self, timeout: Duration) -> bool {
        let generation = self.factory.generation();
        match self.factory.tls().and_then(|tls| {
            Client::new(vec![self.url.clone()], tls, peer_options(timeout))
                .map_err(|e| e.to_string())
        }) {
            Ok(client) => {
                self.client = client;
                self.timeout = timeout;
                self.generation = generation;
                true
            }
            Err(err) => {
                tracing::warn!(peer = %self.name, "cannot rebuild the peer client: {err}");
                false
            }
        }
    }

    /// Rebuilds the client when this controller's certificate changed since it was made.
    fn follow_credentials(&mut self) {
        if self.generation != self.factory.generation() && self.rebuild(self.timeout) {
            tracing::info!(peer = %self.name, "peer client now uses this controller's new certificate");
        }
    }
}

/// Makes peer clients authenticated with this controller's own certificate. A peer must
/// present a controller certificate of this cluster: the chain alone would also accept
/// a node's certificate (security review D1), and a peer's operations are merged.
/// [`PeerFactory::reload`] reads the certificate again (after [`crate::sub_ca`] reissued
/// it); clients made before see the new generation and rebuild themselves.
#[derive(Clone)]
pub struct PeerFactory {
    files: kcore_pki::CredentialFiles,
    expected: kcore_pki::PeerExpectation,
    creds: Arc<RwLock<Arc<kcore_pki::Credentials>>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for PeerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerFactory")
    }
}

impl PeerFactory {
    /// Loads this controller's credentials (`tls.*`).
    pub fn new(state: &AppState) -> Result<PeerFactory, String> {
        let tls = &state.config.tls;
        let files = kcore_pki::CredentialFiles::new(&tls.ca_file, &tls.cert_file, &tls.key_file);
        let creds = kcore_pki::Credentials::load(&files).map_err(|e| e.to_string())?;
        Ok(PeerFactory {
            files,
            expected: kcore_pki::PeerExpectation::controller(&state.config.cluster_name),
            creds: Arc::new(RwLock::new(Arc::new(creds))),
            generation: Arc::default(),
        })
    }

    /// Reads the credentials from their files again; later clients use them.
    pub fn reload(&self) -> Result<(), String> {
        let creds = kcore_pki::Credentials::load(&self.files).map_err(|e| e.to_string())?;
        *self
            .creds
            .write()
            .map_err(|_| "credentials lock poisoned")? = Arc::new(creds);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Bumped by every [`PeerFactory::reload`].
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn tls(&self) -> Result<rustls::ClientConfig, String> {
        let creds = self
            .creds
            .read()
            .map_err(|_| "credentials lock poisoned".to_string())?
            .clone();
        creds
            .client_config(&self.expected)
            .map_err(|e| e.to_string())
    }

    /// A client for `address` (`HOST:PORT`), starting at the timeout ceiling; the first
    /// measured round trips bring it down.
    pub fn peer(&self, address: &str) -> Result<Peer, String> {
        let timeout = Duration::from_secs(10);
        let url = kcore_net::https_url(address);
        let generation = self.generation();
        let client = Client::new(vec![url.clone()], self.tls()?, peer_options(timeout))
            .map_err(|e| format!("peer {address}: {e}"))?;
        Ok(Peer {
            name: address.to_string(),
            url,
            factory: self.clone(),
            generation,
            client,
            rtt: None,
            timeout,
            failures: 0,
        })
    }

    /// A plain client for `address` with this controller's certificate (registration).
    pub fn client(&self, address: &str) -> Result<Client, String> {
        Client::new(
            vec![kcore_net::https_url(address)],
            self.tls()?,
            peer_options(Duration::from_secs(5)),
        )
        .map_err(|e| format!("peer {address}: {e}"))
    }
}

/// Records a peer's new status; logs when its state or controller id changes, so a
/// refused or unreachable peer is logged once, not every second.
fn record(state: &AppState, mut status: PeerStatus) {
    let Ok(mut peers) = state.peers.write() else {
        return;
    };
    let old = peers.get(&status.peer);
    let changed = old.is_none_or(|o| o.state != status.state);
    let now = crate::api::rfc3339(time::OffsetDateTime::now_utc());
    status.since = if changed {
        Some(now.clone())
    } else {
        old.and_then(|o| o.since.clone())
    };
    // What outlives one poll: the peer's id, the last success, the last failure, the
    // snapshot count.
    if status.controller_id.is_none() {
        status.controller_id = old.and_then(|o| o.controller_id.clone());
    }
    status.snapshots += old.map_or(0, |o| o.snapshots);
    if status.state == PeerState::Unreachable {
        status.last_error.clone_from(&status.reason);
        status.last_error_at = Some(now.clone());
        status.last_pull = old.and_then(|o| o.last_pull.clone());
    } else {
        if status.reason.is_some() {
            status.last_error.clone_from(&status.reason);
            status.last_error_at = Some(now.clone());
        } else {
            status.last_error = old.and_then(|o| o.last_error.clone());
            status.last_error_at = old.and_then(|o| o.last_error_at.clone());
        }
        status.last_pull = Some(now);
    }
    if changed || old.is_some_and(|o| o.reason.is_some() != status.reason.is_some()) {
        match status.state {
            PeerState::Healthy => {
                tracing::info!(peer = %status.peer, controller = ?status.controller_id, "peer healthy")
            }
            PeerState::ClockAhead => tracing::warn!(
                peer = %status.peer,
                controller = ?status.controller_id,
                clock_ahead_seconds = ?status.clock_ahead_seconds,
                refused_operations = status.refused_operations,
                refused_heartbeats = status.refused_heartbeats,
                "peer unhealthy: {}",
                status.reason.as_deref().unwrap_or("")
            ),
            PeerState::Unreachable => tracing::warn!(
                peer = %status.peer,
                "replication pull failed: {}",
                status.reason.as_deref().unwrap_or("")
            ),
            PeerState::Unknown => {}
        }
    }
    peers.insert(status.peer.clone(), status);
}

/// The status one poll result gives a peer.
fn status_of(
    name: &str,
    result: &Result<PullReport, kcore_net::ClientError>,
    bound: Duration,
) -> PeerStatus {
    let mut status = PeerStatus::unknown(name);
    match result {
        Ok(report) => {
            status.controller_id = Some(report.controller_id.clone());
            status.refused_operations = report.refused_operations;
            status.refused_heartbeats = report.refused_heartbeats;
            status.snapshots = report.snapshots;
            if report.refused_operations + report.refused_heartbeats == 0 {
                status.state = PeerState::Healthy;
                status.healthy = true;
            } else {
                status.state = PeerState::ClockAhead;
                status.clock_ahead_seconds = report.max_ahead.map(|d| d.as_secs());
                status.reason = Some(format!(
                    "refused {} operation(s) and {} heartbeat(s) stamped up to {} s ahead of this controller's clock (bound {} s, maxClockSkewSeconds); first: {}",
                    report.refused_operations,
                    report.refused_heartbeats,
                    report.max_ahead.map_or(0, |d| d.as_secs()),
                    bound.as_secs(),
                    report.first_refusal.as_deref().unwrap_or("-"),
                ));
            }
        }
        Err(err) => {
            status.state = PeerState::Unreachable;
            status.reason = Some(err.to_string());
        }
    }
    status
}

/// Seed address -> the controller id its vector last gave (shared by the peer tasks and
/// the reconciliation that avoids pulling one controller twice).
type SeedIds = Arc<std::sync::Mutex<BTreeMap<String, String>>>;

/// One peer's pull task and the token that stops it.
struct Follower {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Replicates until `stop` is cancelled (the controller awaits it at shutdown). Every
/// peer is followed by its own task ([`follow`]), so a slow or unreachable peer holds back
/// no other and a peer's writes are pulled as soon as its long poll reports them. Every
/// [`PULL_INTERVAL`] this loop reconciles the peer set with the `Controller` records
/// ([`crate::membership::wanted_peers`]), hands the revoked serials to the TLS layer and
/// compacts when due.
pub async fn run(
    state: Arc<AppState>,
    factory: PeerFactory,
    tls: kcore_net::TlsSource,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(PULL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut followers: BTreeMap<String, Follower> = BTreeMap::new();
    let seed_ids: SeedIds = Arc::default();
    let mut revoked: Vec<String> = Vec::new();
    let compaction_every = Duration::from_secs(state.config.compaction.interval_seconds);
    let mut last_compaction = std::time::Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now_revoked: Vec<String> = crate::membership::revoked(&state).into_keys().collect();
        if now_revoked != revoked {
            tracing::info!(serials = ?now_revoked, "revoked certificate serials updated");
            tls.set_revoked_serials(&now_revoked);
            revoked = now_revoked;
        }
        reconcile(&state, &factory, &mut followers, &seed_ids, &stop);
        if last_compaction.elapsed() >= compaction_every {
            last_compaction = std::time::Instant::now();
            compact(&state);
        }
    }
    // A pull in progress ends at its next await (merges are synchronous and the cursor
    // is the store's own, so nothing is half-merged).
    for (_, follower) in followers {
        follower.stop.cancel();
        let _ = follower.task.await;
    }
}

/// Pulls from one peer until `stop`: a long poll of its vector, then what it holds that
/// this store lacks, again. A failed pull waits 1, 2, then at most
/// `MAX_BACKOFF_TICKS + 1` pull intervals before the next ([`backoff_ticks`]).
async fn follow(
    state: Arc<AppState>,
    mut peer: Peer,
    seed_ids: SeedIds,
    stop: tokio_util::sync::CancellationToken,
) {
    let bound = state.store.max_clock_skew();
    let mut since: Option<u64> = None;
    let mut last_start: Option<std::time::Instant> = None;
    loop {
        if let Some(spacing) = last_start.map(|t| MIN_PULL_SPACING.saturating_sub(t.elapsed()))
            && !spacing.is_zero()
        {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(spacing) => {}
            }
        }
        last_start = Some(std::time::Instant::now());
        peer.follow_credentials();
        // Below the request timeout, so a quiet peer's long poll is not taken for a failure.
        let wait = PULL_INTERVAL.min(peer.timeout / 2);
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = pull_once(&state, &peer.client, since, wait) => result,
        };
        // Stopped while the pull ended: its status was dropped and must not come back.
        if stop.is_cancelled() {
            return;
        }
        let pause = match &result {
            Ok(report) => {
                peer.failures = 0;
                peer.observe(report.rtt);
                if state.config.peers.contains(&peer.name)
                    && let Ok(mut ids) = seed_ids.lock()
                {
                    ids.insert(peer.name.clone(), report.controller_id.clone());
                }
                if report.merged > 0 {
                    tracing::debug!(peer = %peer.name, operations = report.merged, "replicated");
                }
                since = report.version;
                // A peer that does not long-poll is polled at the interval.
                if since.is_some() {
                    Duration::ZERO
                } else {
                    PULL_INTERVAL
                }
            }
            Err(_) => {
                peer.failures = peer.failures.saturating_add(1);
                since = None;
                PULL_INTERVAL * (backoff_ticks(peer.failures) + 1)
            }
        };
        record(&state, status_of(&peer.name, &result, bound));
        if !pause.is_zero() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// One compaction pass: what every known controller holds goes (see
/// [`crate::store::Store::compact`]); logged when it removed anything.
pub fn compact(state: &AppState) {
    let settings = &state.config.compaction;
    let policy = CompactionPolicy {
        known_peers: crate::membership::known_peer_ids(state),
        retention: Duration::from_secs(settings.retention_seconds),
        tombstone_lifetime: Duration::from_secs(settings.tombstone_lifetime_seconds),
    };
    match state.store.compact(&policy) {
        Ok(done) if done.operations_removed + done.tombstones_removed > 0 => tracing::info!(
            operations_removed = done.operations_removed,
            tombstones_removed = done.tombstones_removed,
            operations_left = done.operations_left,
            "compacted operations every known controller holds"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!("compaction failed: {err}"),
    }
}

/// The most pull intervals an unreachable peer waits beyond the first: it is tried at
/// least every `(MAX_BACKOFF_TICKS + 1) * PULL_INTERVAL` plus its timeout, so a healed
/// partition is noticed within seconds.
// 3, not more: waiting 5 could make a healed partition wait up to 6 s, past the 5 s
// convergence goal in the docs (bench_replication holds a partition 10 s to measure it).
pub const MAX_BACKOFF_TICKS: u32 = 3;

/// Extra pull intervals to wait after `failures` consecutive failed pulls: 0, 1, then at
/// most [`MAX_BACKOFF_TICKS`].
pub fn backoff_ticks(failures: u32) -> u32 {
    let doubled = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    (doubled - 1).min(MAX_BACKOFF_TICKS)
}

/// Starts a [`follow`] task for every wanted address not followed yet and stops the ones
/// no longer wanted (and drops their status).
fn reconcile(
    state: &Arc<AppState>,
    factory: &PeerFactory,
    followers: &mut BTreeMap<String, Follower>,
    seed_ids: &SeedIds,
    stop: &tokio_util::sync::CancellationToken,
) {
    let seeds = seed_ids.lock().map(|ids| ids.clone()).unwrap_or_default();
    let wanted = crate::membership::wanted_peers(state, &state.config.peers, &seeds);
    followers.retain(|name, follower| {
        let keep = wanted.contains(name);
        if !keep {
            tracing::info!(peer = %name, "peer no longer pulled from (its controller was deleted or is reached through a seed)");
            follower.stop.cancel();
            if let Ok(mut statuses) = state.peers.write() {
                statuses.remove(name);
            }
        }
        keep
    });
    if let Ok(mut set) = state.peer_set.write() {
        *set = Some(wanted.clone());
    }
    for address in wanted {
        if followers.contains_key(&address) {
            continue;
        }
        match factory.peer(&address) {
            Ok(peer) => {
                if !state.config.peers.contains(&address) {
                    tracing::info!(peer = %address, "discovered a controller; pulling from it");
                }
                let token = stop.child_token();
                let task =
                    tokio::spawn(follow(state.clone(), peer, seed_ids.clone(), token.clone()));
                followers.insert(address, Follower { stop: token, task });
            }
            Err(err) => tracing::warn!(peer = %address, "cannot make a client: {err}"),
        }
    }
}
