//! Server-side errors as HTTP responses: an [`ApiError`] envelope `{code, message,
//! details}` plus the status code, JSON body and path extractors whose rejections use
//! the same envelope (axum's own rejections are plain text), and
//! [`ensure_envelope`], which the accept loop applies to every response so that the
//! rest of axum's bare errors (405 with an empty body) leave as envelopes too.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kcore_api::ApiError;
use kcore_api::ErrorCode;

/// An error response: status code plus the wire envelope.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {error}")]
pub struct ApiFailure {
    pub status: StatusCode,
    pub error: ApiError,
}

impl ApiFailure {
    /// An error answered with its code's default status ([`ErrorCode::status`]).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::with_status(status, code, message)
    }

    /// An error answered with another status than its code's default (for example
    /// `BAD_REQUEST` as 413 or 415).
    pub fn with_status(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            error: ApiError::new(code, message),
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.error.details = details;
        self
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// `400 INVALID_FIELD` for one request field: the message starts with the field's name
    /// and `details.field` carries it, so a client can point at what to fix.
    pub fn invalid_field(field: &str, message: impl std::fmt::Display) -> Self {
        Self::with_status(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidField,
            format!("{field}: {message}"),
        )
        .with_details(serde_json::json!({ "field": field }))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.status, Json(self.error)).into_response()
    }
}

/// Fallback handler so unknown paths answer with the JSON envelope too:
/// `Router::new().fallback(kcore_net::error::not_found)`.
pub async fn not_found(uri: axum::http::Uri) -> ApiFailure {
    ApiFailure::not_found(format!("no route for {}", uri.path()))
}

/// `Json<T>` whose rejections are [`ApiFailure`]s with code `BAD_REQUEST` and the
/// parser's message (which names the field and line), instead of axum's plain text.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(ApiFailure::with_status(
                rejection.status(),
                ErrorCode::BadRequest,
                format!("invalid request body: {}", rejection.body_text()),
            )),
        }
    }
}

/// `Path<T>` whose rejections (a segment that is not valid percent-encoded UTF-8, a
/// value that does not parse) are `400 BAD_REQUEST` envelopes naming the parameter,
/// instead of axum's plain text.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => {
                let status = rejection.status();
                let code = if status.is_server_error() {
                    ErrorCode::Internal
                } else {
                    ErrorCode::BadRequest
                };
                Err(ApiFailure::with_status(
                    status,
                    code,
                    format!(
                        "invalid path {}: {}; path segments must be percent-encoded UTF-8",
                        parts.uri.path(),
                        rejection.body_text()
                    ),
                )
                .with_details(serde_json::json!({ "path": parts.uri.path() })))
            }
        }
    }
}

/// The most of a bare (non-JSON) error body [`ensure_envelope`] reads to quote it.
const BARE_BODY_MAX: usize = 16 * 1024;

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim_start().to_ascii_lowercase();
            v.starts_with("application/json") || v.starts_with("application/problem+json")
        })
}

/// The code for a bare error response of this status (axum's own rejections).
fn code_for(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::BodyTimeout,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_server_error() => ErrorCode::Internal,
        // 400, 413, 415, 422 and any other refusal of the request itself.
        _ => ErrorCode::BadRequest,
    }
}

/// Turns an error response that is not JSON (axum's `405` with an empty body, the
/// plain-text rejections of extractors kcore does not wrap) into the envelope, keeping
/// the status and headers such as `Allow`. `405` gets `details.allowedMethods`. JSON
/// responses and successes pass unchanged.
pub async fn ensure_envelope(response: Response, method: &Method, path: &str) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, BARE_BODY_MAX)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("error");
    let failure = if status == StatusCode::METHOD_NOT_ALLOWED {
        let allowed: Vec<String> = parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(',')
                    .map(|m| m.trim().to_string())
                    .filter(|m| !m.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        ApiFailure::with_status(
            status,
            ErrorCode::MethodNotAllowed,
            format!(
                "{method} is not allowed on {path}; use {}",
                if allowed.is_empty() {
                    "another method".to_string()
                } else {
                    allowed.join(" or ")
                }
            ),
        )
        .with_details(serde_json::json!({ "method": method.as_str(), "allowedMethods": allowed }))
    } else {
        let message = if text.is_empty() {
            format!("{reason}: {method} {path}")
        } else {
            text
        };
        ApiFailure::with_status(status, code_for(status), message)
    };
    let mut fresh = failure.into_response();
    // Keep what the original said about the response (Allow, Retry-After, ...), but
    // the body and its framing are new.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in parts.headers.iter() {
        if !fresh.headers().contains_key(name) {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fresh
}
