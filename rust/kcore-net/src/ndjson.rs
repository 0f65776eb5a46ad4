//! NDJSON progress streams for long operations: one JSON value per line, flushed as it
//! is produced, `Content-Type: application/x-ndjson`.

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;

/// Media type of NDJSON responses.
pub const NDJSON: &str = "application/x-ndjson";

/// Encodes one value as a line.
pub fn line<T: Serialize>(item: &T) -> Result<Bytes, serde_json::Error> {
    let mut buf = serde_json::to_vec(item)?;
    buf.push(b'\n');
    Ok(Bytes::from(buf))
}

/// A streaming response with one line per item of `items`.
pub fn ndjson_response<S, T>(items: S) -> Response
where
    S: Stream<Item = T> + Send + 'static,
    T: Serialize + Send + 'static,
{
    let body = Body::from_stream(items.map(|item| line(&item)));
    ([(header::CONTENT_TYPE, NDJSON)], body).into_response()
}
