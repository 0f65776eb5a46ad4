//! Server-side errors as HTTP responses: an [`ApiError`] envelope `{code, message,
//! details}` plus the status code, and a JSON body extractor whose rejections use the
//! same envelope (axum's own rejections are plain text).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kcore_api::ApiError;

/// Stable error codes used by the plumbing itself. Services add their own.
pub mod codes {
    /// No client certificate, or one without a kcore identity.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The client certificate is on the revocation list.
    pub const CERTIFICATE_REVOKED: &str = "CERTIFICATE_REVOKED";
    /// Authenticated, but the role or node id does not allow this request.
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// The request body is not the JSON this route expects.
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    /// No such route or resource.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// The server failed; the message says where.
    pub const INTERNAL: &str = "INTERNAL";
    /// The server cannot serve now (starting, draining); clients fail over on 503.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
}

/// An error response: status code plus the wire envelope.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {error}")]
pub struct ApiFailure {
    pub status: StatusCode,
    pub error: ApiError,
}

impl ApiFailure {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            error: ApiError::from_wire(code, message),
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.error.details = details;
        self
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, codes::UNAUTHENTICATED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, codes::FORBIDDEN, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE, message)
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
            Err(rejection) => Err(ApiFailure::new(
                rejection.status(),
                codes::BAD_REQUEST,
                format!("invalid request body: {}", rejection.body_text()),
            )),
        }
    }
}
