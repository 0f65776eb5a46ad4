//! A stand-in server for tests (feature `testing`): real TLS on 127.0.0.1 with whatever
//! certificate the test gives it, recording every request that reaches HTTP (method,
//! URI, body) and answering each path with fixed JSON. Tests use it as the server a
//! client must refuse (a node certificate posing as a controller) or as a controller
//! that serves data a real one would not (an old peer's records).

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
    /// `answers[path]`, or `{"items": []}` for any other path.
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
                axum::Json(
                    answers
                        .get(&path)
                        .cloned()
                        .unwrap_or_else(|| serde_json::json!({"items": []})),
                )
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
