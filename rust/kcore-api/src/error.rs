//! The error envelope every kcore server returns: `{code, message, details}`.
//! `code` is stable (SCREAMING_SNAKE_CASE) so scripts and kctl can branch on it;
//! `message` is for people; `details` carries structured context (field, path, ...).

use serde::{Deserialize, Serialize};

/// An API error as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct ApiError {
    /// Stable machine-readable code, for example `PLAN_HASH_MISMATCH`.
    pub code: String,
    /// Human-readable explanation that says what to do about it.
    pub message: String,
    /// Structured context; `null` when there is none.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

impl ApiError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_omits_null_details() {
        let err = ApiError::new("NOT_FOUND", "no node n1");
        let json = serde_json::to_string(&err).unwrap();
        assert_eq!(json, r#"{"code":"NOT_FOUND","message":"no node n1"}"#);
        let back: ApiError = serde_json::from_str(&json).unwrap();
        assert_eq!(back, err);
        let detailed = err.with_details(serde_json::json!({"field": "nodeId"}));
        assert!(serde_json::to_string(&detailed).unwrap().contains("nodeId"));
    }
}
