//! HTTPS client for kcore servers: one rustls configuration (mTLS, `-k` or a pinned
//! fingerprint), a list of servers tried in order, a timeout per attempt and a bound
//! on the total time.
//!
//! Failover policy: the next server is tried after a transport failure (connection
//! refused, TLS failure, reset) or a timeout, including a server that accepts the
//! connection and never answers, and after `503 Service Unavailable` (a server that
//! says it cannot serve now). Any other answer, success or `{code, message}` error, is
//! the answer: a 4xx from one controller would be the same from the next. The server
//! that answered last is tried first next time.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use kcore_api::ApiError;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// `HOST:PORT` to `https://HOST:PORT` (an `https://` URL stays as it is): how every
/// kcore address becomes a base URL for [`Client::new`].
pub fn https_url(server: &str) -> String {
    if server.starts_with("https://") {
        server.to_string()
    } else {
        format!("https://{server}")
    }
}

/// Timeouts of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// TCP connect timeout per attempt.
    pub connect_timeout: Duration,
    /// One attempt (connect, TLS, request, full response for JSON calls; up to the
    /// response headers for streams) may take at most this long.
    pub attempt_timeout: Duration,
    /// All attempts of one call together may take at most this long.
    pub total_timeout: Duration,
    /// A stream that delivers no byte for this long is considered dead.
    pub stream_idle_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
            stream_idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error envelope (or a non-JSON error body, turned
    /// into one with code `HTTP_<status>`).
    #[error("{server} answered {status}: {error}")]
    Api {
        server: String,
        status: StatusCode,
        error: ApiError,
    },
    /// No server gave an answer; each attempt and its reason, in order.
    #[error("{}", unreachable_text(.attempts, .not_tried))]
    Unreachable {
        attempts: Vec<(String, String)>,
        /// Servers skipped because the total time budget ran out.
        not_tried: Vec<String>,
    },
    /// A server answered 2xx with a body that is not the expected JSON.
    #[error("{server} sent a response that does not decode: {reason}")]
    Decode { server: String, reason: String },
    /// A stream broke after it had started (no failover: the operation is running on
    /// that server; fetch its result again by operation id).
    #[error("stream from {server} broke: {reason}")]
    Stream { server: String, reason: String },
    /// The client was configured wrongly (bad base URL, path without leading `/`).
    #[error("client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The stable API error code, when the server sent one.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            ClientError::Api { error, .. } => Some(&error.code),
            _ => None,
        }
    }
}

/// How a failed TLS handshake's reason starts ([`attempt_failure`]): the server was
/// there and answered, so "no server answered" would be untrue.
pub const TLS_FAILED: &str = "TLS handshake failed: ";

fn unreachable_text(attempts: &[(String, String)], not_tried: &[String]) -> String {
    // "No server answered" only when none did: a TLS refusal or a 503 is an answer.
    let answered = attempts
        .iter()
        .any(|(_, why)| why.starts_with(TLS_FAILED) || why.starts_with("503 "));
    let mut out = String::from(if answered {
        "no server could serve the request: "
    } else {
        "no server answered: "
    });
    if attempts.is_empty() {
        out.push_str("none tried");
    }
    out.push_str(
        &attempts
            .iter()
            .map(|(server, why)| format!("{server}: {why}"))
            .collect::<Vec<_>>()
            .join("; "),
    );
    if !not_tried.is_empty() {
        out.push_str(&format!(
            "; not tried (total time budget spent): {}",
            not_tried.join(", ")
        ));
    }
    out
}

/// Why an attempt failed: [`chain_text`], marked [`TLS_FAILED`] when rustls refused the
/// handshake (the server answered, with a certificate or an alert).
fn attempt_failure(err: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if is_rustls(e) {
            return format!("{TLS_FAILED}{}", chain_text(err));
        }
        source = e.source();
    }
    chain_text(err)
}

/// A rustls error, or an io::Error wrapping one (hyper-util wraps tokio-rustls' io::Error
/// in another, and io::Error hides its payload from `source()`).
fn is_rustls(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    e.downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .is_some_and(|inner| is_rustls(inner))
}

/// The error and its sources, so "error sending request" also says "connection refused".
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// One attempt's outcome: an answer ends the call, a failure moves to the next server.
enum Attempt<T> {
    Answer(Result<T, ClientError>),
    Failover(String),
}

/// A kcore HTTPS client. Clones share the connection pool, the preferred server and
/// TLS replacements.
#[derive(Clone)]
pub struct Client {
    http: Arc<RwLock<reqwest::Client>>,
    bases: Vec<String>,
    options: ClientOptions,
    preferred: Arc<AtomicUsize>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("bases", &self.bases)
            .field("options", &self.options)
            .finish()
    }
}

fn build_http(
    mut tls: rustls::ClientConfig,
    options: &ClientOptions,
) -> Result<reqwest::Client, ClientError> {
    // HTTP/1.1 keeps NDJSON streaming and per-request timeouts simple; the servers
    // also speak h2 for other clients.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(options.connect_timeout)
        // Shorter than the server's 60 s header read timeout, so the client closes an
        // idle connection before the server does and never sends into a closing one.
        .pool_idle_timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| ClientError::Config(chain_text(&e)))
}

impl Client {
    /// `bases` are `https://host:port` URLs, tried in order.
    pub fn new(
        bases: Vec<String>,
        tls: rustls::ClientConfig,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        if bases.is_empty() {
            return Err(ClientError::Config("no server URL given".into()));
        }
        let mut clean = Vec::with_capacity(bases.len());
        for base in bases {
            let url = reqwest::Url::parse(&base)
                .map_err(|e| ClientError::Config(format!("server URL {base:?}: {e}")))?;
            if url.scheme() != "https" {
                return Err(ClientError::Config(format!(
                    "server URL {base:?} must use https:// (kcore speaks TLS only)"
                )));
            }
            clean.push(base.trim_end_matches('/').to_string());
        }
        Ok(Client {
            http: Arc::new(RwLock::new(build_http(tls, &options)?)),
            bases: clean,
            options,
            preferred: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Swaps the TLS configuration (after certificate renewal). Calls already running
    /// finish with the old one.
    pub fn replace_tls(&self, tls: rustls::ClientConfig) -> Result<(), ClientError> {
        let http = build_http(tls, &self.options)?;
        *self.http.write().unwrap_or_else(|e| e.into_inner()) = http;
        Ok(())
    }

    pub fn base_urls(&self) -> &[String] {
        &self.bases
    }

    fn http(&self) -> reqwest::Client {
        self.http.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call_json(Method::GET, path, None::<&()>).await
    }

    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call_json(Method::POST, path, Some(body)).await
    }

    pub async fn put_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call_json(Method::PUT, path, Some(body)).await
    }

    /// DELETE; an empty response body decodes as JSON `null` (use `()` or `Option<T>`).
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call_json(Method::DELETE, path, None::<&()>).await
    }

    /// A JSON request with failover. The body is serialised once.
    pub async fn call_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = encode_body(body)?;
        self.with_failover(path, |http, url, budget| {
            let method = method.clone();
            let body = body.clone();
            async move {
                let attempt = async {
                    let mut req = http.request(method, &url);
                    if let Some(body) = body {
                        req = req
                            .header(reqwest::header::CONTENT_TYPE, "application/json")
                            .body(body);
                    }
                    let resp = req.send().await?;
                    let status = resp.status();
                    let bytes = resp.bytes().await?;
                    Ok::<_, reqwest::Error>((status, bytes))
                };
                match tokio::time::timeout(budget, attempt).await {
                    Err(_) => Attempt::Failover(format!("no answer within {budget:?}")),
                    Ok(Err(e)) => Attempt::Failover(attempt_failure(&e)),
                    Ok(Ok((status, bytes))) if status == StatusCode::SERVICE_UNAVAILABLE => {
                        Attempt::Failover(unavailable_reason(&bytes))
                    }
                    Ok(Ok((status, bytes))) if status.is_success() => {
                        let text: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
                        Attempt::Answer(serde_json::from_slice(text).map_err(|e| {
                            ClientError::Decode {
                                server: origin(&url),
                                reason: e.to_string(),
                            }
                        }))
                    }
                    Ok(Ok((status, bytes))) => {
                        Attempt::Answer(Err(api_error(&url, status, &bytes)))
                    }
                }
            }
        })
        .await
    }

    /// Calls a streaming route (POST with `body`, or GET when `body` is `None`) and
    /// hands each NDJSON line, decoded, to `on_item` as it arrives. Failover happens
    /// only before the response headers; once the stream has started, a break is a
    /// [`ClientError::Stream`].
    pub async fn stream_ndjson<B, T, F>(
        &self,
        path: &str,
        body: Option<&B>,
        mut on_item: F,
    ) -> Result<(), ClientError>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
        F: FnMut(T),
    {
        let body = encode_body(body)?;
        let (url, resp) = self
            .with_failover(path, |http, url, budget| {
                let body = body.clone();
                async move {
                    let req = match body {
                        Some(body) => http
                            .post(&url)
                            .header(reqwest::header::CONTENT_TYPE, "application/json")
                            .body(body),
                        None => http.get(&url),
                    };
                    let req = req.header(reqwest::header::ACCEPT, crate::ndjson::NDJSON);
                    match tokio::time::timeout(budget, req.send()).await {
                        Err(_) => Attempt::Failover(format!("no answer within {budget:?}")),
                        Ok(Err(e)) => Attempt::Failover(attempt_failure(&e)),
                        Ok(Ok(resp)) if resp.status() == StatusCode::SERVICE_UNAVAILABLE => {
                            Attempt::Failover("503 Service Unavailable".into())
                        }
                        Ok(Ok(resp)) if resp.status().is_success() => {
                            Attempt::Answer(Ok((url, resp)))
                        }
                        Ok(Ok(resp)) => {
                            let status = resp.status();
                            let bytes = tokio::time::timeout(budget, resp.bytes())
                                .await
                                .ok()
                                .and_then(Result::ok)
                                .unwrap_or_default();
                            Attempt::Answer(Err(api_error(&url, status, &bytes)))
                        }
                    }
                }
            })
            .await?;
        let server = origin(&url);
        let broke = |reason: String| ClientError::Stream {
            server: server.clone(),
            reason,
        };
        let mut stream = resp.bytes_stream();
        let mut buf = BytesMut::new();
        loop {
            let next = tokio::time::timeout(self.options.stream_idle_timeout, stream.next())
                .await
                .map_err(|_| {
                    broke(format!(
                        "no data for {:?}",
                        self.options.stream_idle_timeout
                    ))
                })?;
            match next {
                None => break,
                Some(Err(e)) => return Err(broke(chain_text(&e))),
                Some(Ok(chunk)) => {
                    buf.extend_from_slice(&chunk);
                    while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line = buf.split_to(pos + 1);
                        decode_line(&line[..pos], &mut on_item).map_err(&broke)?;
                    }
                }
            }
        }
        // A final line without a trailing newline still counts.
        decode_line(&buf, &mut on_item).map_err(broke)?;
        Ok(())
    }

    /// Runs `attempt` against each server in turn (preferred first) within the total
    /// budget, passing the time this attempt may take.
    async fn with_failover<R, F, Fut>(&self, path: &str, mut attempt: F) -> Result<R, ClientError>
    where
        F: FnMut(reqwest::Client, String, Duration) -> Fut,
        Fut: std::future::Future<Output = Attempt<R>>,
    {
        if !path.starts_with('/') {
            return Err(ClientError::Config(format!(
                "request path {path:?} must start with '/'"
            )));
        }
        let deadline = Instant::now() + self.options.total_timeout;
        let http = self.http();
        let n = self.bases.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut attempts = Vec::new();
        for k in 0..n {
            let index = (first + k) % n;
            let base = &self.bases[index];
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let not_tried = (k..n)
                    .map(|j| self.bases[(first + j) % n].clone())
                    .collect();
                return Err(ClientError::Unreachable {
                    attempts,
                    not_tried,
                });
            }
            let budget = remaining.min(self.options.attempt_timeout);
            match attempt(http.clone(), format!("{base}{path}"), budget).await {
                Attempt::Answer(result) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return result;
                }
                Attempt::Failover(reason) => {
                    tracing::debug!(server = %base, %reason, "server failed; trying the next one");
                    attempts.push((base.clone(), reason));
                }
            }
        }
        Err(ClientError::Unreachable {
            attempts,
            not_tried: Vec::new(),
        })
    }
}

fn encode_body<B: Serialize + ?Sized>(
    body: Option<&B>,
) -> Result<Option<bytes::Bytes>, ClientError> {
    body.map(|b| serde_json::to_vec(b).map(bytes::Bytes::from))
        .transpose()
        .map_err(|e| ClientError::Config(format!("request body does not serialise: {e}")))
}

fn decode_line<T: DeserializeOwned, F: FnMut(T)>(
    line: &[u8],
    on_item: &mut F,
) -> Result<(), String> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return Ok(());
    }
    let item = serde_json::from_slice(trimmed).map_err(|e| format!("bad NDJSON line: {e}"))?;
    on_item(item);
    Ok(())
}

/// `https://host:port` of a full URL, for messages.
fn origin(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| url.to_string())
}

/// Why a server said 503, for the failover list: its envelope's message and code when
/// it sent one (a controller whose sub-CA expired says so), else the bare status.
fn unavailable_reason(body: &[u8]) -> String {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(error) => format!("503 Service Unavailable: {error}"),
        Err(_) => "503 Service Unavailable".into(),
    }
}

fn api_error(url: &str, status: StatusCode, body: &[u8]) -> ClientError {
    let error = serde_json::from_slice::<ApiError>(body).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(body);
        let text: String = text.chars().take(500).collect();
        ApiError::from_wire(
            format!("HTTP_{}", status.as_u16()),
            if text.is_empty() {
                status.to_string()
            } else {
                text
            },
        )
    });
    ClientError::Api {
        server: origin(url),
        status,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines_decode_and_bad_lines_say_why() {
        let mut got = Vec::new();
        decode_line(b"  {\"a\":1}\r", &mut |v: serde_json::Value| got.push(v)).unwrap();
        decode_line(b"   ", &mut |v: serde_json::Value| got.push(v)).unwrap();
        assert_eq!(got, vec![serde_json::json!({"a": 1})]);
        let err = decode_line(b"{nope", &mut |_: serde_json::Value| {}).unwrap_err();
        assert!(err.contains("bad NDJSON line"), "{err}");
    }

    #[test]
    fn non_json_error_bodies_become_envelopes() {
        let err = api_error(
            "https://h:1/v1/x",
            StatusCode::BAD_GATEWAY,
            b"<html>oops</html>",
        );
        match err {
            ClientError::Api {
                server,
                status,
                error,
            } => {
                assert_eq!(server, "https://h:1");
                assert_eq!(status, 502);
                assert_eq!(error.code, "HTTP_502");
                assert_eq!(error.message, "<html>oops</html>");
            }
            other => panic!("{other:?}"),
        }
        let empty = api_error("https://h:1/v1/x", StatusCode::NOT_FOUND, b"");
        assert!(empty.to_string().contains("404 Not Found"), "{empty}");
        let real = api_error(
            "https://h:1/v1/x",
            StatusCode::CONFLICT,
            br#"{"code":"PLAN_HASH_MISMATCH","message":"m"}"#,
        );
        assert_eq!(real.api_code(), Some("PLAN_HASH_MISMATCH"));
    }

    #[test]
    fn configuration_mistakes_are_named() {
        let tls = || kcore_pki::client_config_insecure().unwrap();
        let err = Client::new(vec![], tls(), ClientOptions::default()).unwrap_err();
        assert!(err.to_string().contains("no server URL"), "{err}");
        let err =
            Client::new(vec!["http://h:1".into()], tls(), ClientOptions::default()).unwrap_err();
        assert!(err.to_string().contains("must use https://"), "{err}");
        let err = Client::new(vec!["h:1:2".into()], tls(), ClientOptions::default()).unwrap_err();
        assert!(err.to_string().contains("server URL"), "{err}");
        let client =
            Client::new(vec!["https://h:1/".into()], tls(), ClientOptions::default()).unwrap();
        assert_eq!(client.base_urls(), ["https://h:1"]);
    }

    #[tokio::test]
    async fn paths_must_be_absolute() {
        let client = Client::new(
            vec!["https://127.0.0.1:1".into()],
            kcore_pki::client_config_insecure().unwrap(),
            ClientOptions::default(),
        )
        .unwrap();
        let err = client
            .get_json::<serde_json::Value>("v1/x")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("must start with '/'"), "{err}");
    }
}
