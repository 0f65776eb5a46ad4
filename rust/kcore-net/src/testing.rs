//! A stand-in server for tests (feature `testing`): real TLS on 127.0.0.1 with whatever
//! certificate the test gives it, recording every request that reaches HTTP (method,
//! URI, body) and answering each path with fixed JSON. Tests use it as the server a
//! client must refuse (a node certificate posing as a controller) or as a controller
//! that serves data a real one would not (an old peer's records).
//! [`get_text`] fetches a text route (`/metrics`) the way a scraper does; [`Metrics`] reads
//! a scrape (with `openmetrics-parser`: prometheus-client only encodes).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kcore_pki::CertifiedKey;
use tokio::net::TcpListener;

/// A running stand-in; stops when dropped.
#[derive(Debug)]
pub struct RecordingServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RecordingServer {
    /// Serves with `cert` (trusting `trust_pem` for client certificates), answering
    /// `answers[path]`, or `{"items": []}` for any other path; an answer
    /// `{"$status": N, "$body": B}` is `B` with status `N`.
    pub async fn start(
        trust_pem: &str,
        cert: &CertifiedKey,
        answers: BTreeMap<String, serde_json::Value>,
    ) -> std::io::Result<RecordingServer> {
        let config = kcore_pki::server_config(trust_pem, &cert.cert_pem, &cert.key_pem)
            .map_err(std::io::Error::other)?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        let answers = Arc::new(answers);
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let recorder = recorder.clone();
            let answers = answers.clone();
            async move {
                let path = req.uri().path().to_string();
                let line = format!("{} {}", req.method(), req.uri());
                let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap_or_default();
                recorder
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{line} {}", String::from_utf8_lossy(&body)));
                let answer = answers
                    .get(&path)
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"items": []}));
                // `{"$status": N, "$body": B}`: answered with status N (a refusal).
                match answer
                    .get("$status")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|s| axum::http::StatusCode::from_u16(s as u16).ok())
                {
                    Some(status) => axum::response::IntoResponse::into_response((
                        status,
                        axum::Json(answer.get("$body").cloned().unwrap_or_default()),
                    )),
                    None => axum::response::IntoResponse::into_response(axum::Json(answer)),
                }
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::serve(
            listener,
            crate::TlsSource::new(config),
            app,
            async move {
                let _ = rx.await;
            },
        ));
        Ok(RecordingServer {
            addr,
            seen,
            stop: Some(tx),
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Every request so far: `METHOD URI BODY`.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// What [`get_text`] got: status, `Content-Type` and body.
#[derive(Debug)]
pub struct TextAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// One `GET` of a text route (`/metrics`) with `tls` (the client certificate of the
/// caller under test), without the JSON client's failover and decoding: what a
/// Prometheus scraper does.
pub async fn get_text(url: &str, mut tls: rustls::ClientConfig) -> Result<TextAnswer, String> {
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let response = http.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok(TextAnswer {
        status,
        content_type,
        body,
    })
}

/// A scrape in the Prometheus text format, parsed.
#[derive(Debug)]
pub struct Metrics(
    openmetrics_parser::MetricsExposition<
        openmetrics_parser::PrometheusType,
        openmetrics_parser::PrometheusValue,
    >,
);

impl Metrics {
    pub fn parse(text: &str) -> Result<Metrics, String> {
        openmetrics_parser::prometheus::parse_prometheus(text)
            .map(Metrics)
            .map_err(|e| format!("{e:?}"))
    }

    /// The value of the one series of `family` whose labels include all of `labels`
    /// (a histogram's: its count); `None` when there is none. Panics when several match.
    pub fn value(&self, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        use openmetrics_parser::PrometheusValue as V;
        let family_name = family;
        let family = self.0.families.get(family)?;
        let found: Vec<f64> = family
            .iter_samples()
            .filter(|sample| {
                let set = sample.get_labelset().expect("a sample of its own family");
                labels
                    .iter()
                    .all(|(name, value)| set.get_label_value(name) == Some(*value))
            })
            .map(|sample| match &sample.value {
                V::Gauge(n) | V::Unknown(n) => n.as_f64(),
                V::Counter(c) => c.value.as_f64(),
                V::Histogram(h) => h.count.unwrap_or(0) as f64,
                V::Summary(s) => s.count.unwrap_or(0) as f64,
            })
            .collect();
        assert!(found.len() <= 1, "{family_name} {labels:?}: {found:?}");
        found.first().copied()
    }

    /// Every value label `label` takes in any family.
    pub fn label_values(&self, label: &str) -> std::collections::BTreeSet<String> {
        self.0
            .families
            .values()
            .flat_map(|family| family.iter_samples())
            .filter_map(|sample| {
                let set = sample.get_labelset().ok()?;
                set.get_label_value(label).map(str::to_string)
            })
            .collect()
    }
}
