//! Per-request plumbing of the accept loop: a request body with a deadline (a body
//! trickled in too slowly is cut off, D6 of the security probe), a bounded drain of an
//! unread body before an HTTP/2 refusal is sent (so the client gets the answer instead of
//! a stream reset, D11), and the count of requests in flight on a connection, which the
//! connection's idle and first-request timeouts watch (D5).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// The error a handler sees when the body did not arrive in time.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body did not arrive completely within {0:?}")]
    TimedOut(Duration),
    #[error(transparent)]
    Transport(#[from] hyper::Error),
}

struct BodyState {
    inner: Incoming,
    deadline: Instant,
    limit: Duration,
    /// Created on the first `Pending`, so requests whose body is already there (or
    /// empty) never arm a timer.
    timer: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
    ended: bool,
}

impl BodyState {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.timed_out {
            return Poll::Ready(Some(Err(BodyError::TimedOut(self.limit))));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(BodyError::from))),
            Poll::Pending => {
                let deadline = self.deadline;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.timed_out = true;
                        Poll::Ready(Some(Err(BodyError::TimedOut(self.limit))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// The request body handed to the router. The accept loop keeps a [`BodyHandle`] to
/// the same state: it learns whether the body timed out, and it can drain what the
/// handler left unread even after the handler dropped the request.
pub(crate) struct DeadlineBody {
    state: Arc<Mutex<BodyState>>,
}

/// The accept loop's side of a [`DeadlineBody`].
#[derive(Clone)]
pub(crate) struct BodyHandle {
    state: Arc<Mutex<BodyState>>,
}

impl DeadlineBody {
    pub(crate) fn new(inner: Incoming, limit: Duration) -> (DeadlineBody, BodyHandle) {
        let state = Arc::new(Mutex::new(BodyState {
            inner,
            deadline: Instant::now() + limit,
            limit,
            timer: None,
            timed_out: false,
            ended: false,
        }));
        (
            DeadlineBody {
                state: state.clone(),
            },
            BodyHandle { state },
        )
    }
}

fn lock(state: &Mutex<BodyState>) -> std::sync::MutexGuard<'_, BodyState> {
    // Only poll_frame holds the lock, never across an await; a panic there cannot
    // leave the state half-updated in a way that matters.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        lock(&self.state).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        let state = lock(&self.state);
        state.ended || state.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        lock(&self.state).inner.size_hint()
    }
}

impl BodyHandle {
    /// Whether the handler's read of the body ran past the deadline.
    pub(crate) fn timed_out(&self) -> bool {
        lock(&self.state).timed_out
    }

    /// Reads and discards what is left of the body, at most `max_bytes` and for at most
    /// `max_time` (and never past the body deadline). Returns whether the body ended.
    ///
    /// Why: over HTTP/2, answering while the client is still sending makes the stream
    /// end with a reset, and clients such as curl then drop the answer ("Stream error
    /// in the HTTP/2 framing layer"). Once the client's END_STREAM has been read, the
    /// answer closes the stream normally. Small bodies, which is every body a refusal
    /// like 403 or 415 is given for in practice, arrive in milliseconds; a large or
    /// slow one still gets the reset after the bound.
    pub(crate) async fn drain(&self, max_bytes: usize, max_time: Duration) -> bool {
        {
            let state = lock(&self.state);
            if state.ended || state.timed_out || state.inner.is_end_stream() {
                return state.ended || state.inner.is_end_stream();
            }
        }
        let mut seen = 0usize;
        let read = async {
            loop {
                let frame = std::future::poll_fn(|cx| lock(&self.state).poll_frame(cx)).await;
                match frame {
                    None => return true,
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            seen = seen.saturating_add(data.len());
                            if seen > max_bytes {
                                return false;
                            }
                        }
                    }
                    Some(Err(_)) => return false,
                }
            }
        };
        tokio::time::timeout(max_time, read).await.unwrap_or(false)
    }
}

/// What the connection watchdog needs to know about a connection's requests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Activity {
    pub in_flight: usize,
    /// Whether any request has started on this connection.
    pub started: bool,
    /// When the last request finished (or the connection was accepted).
    pub since: Instant,
}

/// Counts the requests in flight on one connection.
#[derive(Clone)]
pub(crate) struct Tracker {
    tx: Arc<watch::Sender<Activity>>,
}

/// Held from a request's start until its response body is finished or dropped.
pub(crate) struct InFlight {
    tx: Arc<watch::Sender<Activity>>,
}

impl Tracker {
    pub(crate) fn new() -> (Tracker, watch::Receiver<Activity>) {
        let (tx, rx) = watch::channel(Activity {
            in_flight: 0,
            started: false,
            since: Instant::now(),
        });
        (Tracker { tx: Arc::new(tx) }, rx)
    }

    pub(crate) fn start(&self) -> InFlight {
        self.tx.send_modify(|a| {
            a.in_flight += 1;
            a.started = true;
        });
        InFlight {
            tx: self.tx.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.tx.send_modify(|a| {
            a.in_flight = a.in_flight.saturating_sub(1);
            a.since = Instant::now();
        });
    }
}

/// How a connection's watchdog ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quiet {
    /// No request started within the first-request timeout.
    NeverSpoke,
    /// No request in flight for the idle timeout.
    Idle,
}

/// Resolves when the connection has been quiet too long: no request at all within
/// `first_request`, or none in flight for `idle` after the last one finished.
pub(crate) async fn quiet(
    mut rx: watch::Receiver<Activity>,
    first_request: Duration,
    idle: Duration,
) -> Quiet {
    loop {
        let now = *rx.borrow_and_update();
        if now.in_flight > 0 {
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        }
        let (limit, verdict) = if now.started {
            (idle, Quiet::Idle)
        } else {
            (first_request, Quiet::NeverSpoke)
        };
        tokio::select! {
            () = tokio::time::sleep_until(now.since + limit) => return verdict,
            changed = rx.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// A response body that keeps its request counted as in flight until it is done.
pub(crate) struct TrackedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl TrackedBody {
    pub(crate) fn new(inner: axum::body::Body, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
