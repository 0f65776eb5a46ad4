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

/// The stable code for a request field that failed validation.
pub const INVALID_FIELD: &str = "INVALID_FIELD";

/// A rejected field travels as `INVALID_FIELD` with `{field, value, problem, fix}` in
/// `details`, so clients can point at the field without parsing the message.
impl From<crate::validate::FieldError> for ApiError {
    fn from(err: crate::validate::FieldError) -> Self {
        let details = serde_json::json!({
            "field": err.field,
            "value": err.value,
            "problem": err.problem,
            "fix": err.fix,
        });
        ApiError::new(INVALID_FIELD, err.to_string()).with_details(details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_become_invalid_field_with_details() {
        let field_err = crate::validate::lvm_vg_name("storage.lvm.vgName", "a b").unwrap_err();
        let api: ApiError = field_err.clone().into();
        assert_eq!(api.code, INVALID_FIELD);
        assert_eq!(api.message, field_err.to_string());
        assert_eq!(api.details["field"], "storage.lvm.vgName");
        assert_eq!(api.details["value"], "a b");
        assert_eq!(api.details["fix"], field_err.fix);
    }

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
