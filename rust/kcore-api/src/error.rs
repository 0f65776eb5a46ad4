//! The error envelope every kcore server returns: `{code, message, details}`, and the
//! one list of codes ([`ErrorCode`]) that agent, controller and kctl use.
//! `code` is stable (SCREAMING_SNAKE_CASE) so scripts and kctl can branch on it;
//! `message` is for people; `details` carries structured context (field, path, ...).

use serde::{Deserialize, Serialize};

/// Every stable error code, with the HTTP status it is answered with by default.
/// docs/wire-protocol.md lists them all (a test keeps the two in step). On the wire the
/// code is a string, so a client can still show a code it does not know yet.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    // --- authentication and authorisation (every server) ---
    /// No client certificate with a `kcore://` identity.
    Unauthenticated,
    /// The client certificate's serial is on the revocation list.
    CertificateRevoked,
    /// The caller's role or node id does not allow this request.
    Forbidden,
    /// The caller's role is not among the route's roles.
    ForbiddenRole,
    /// The caller's certificate belongs to another cluster.
    WrongCluster,
    /// A node acting for another node id.
    NotSelf,

    // --- requests (every server) ---
    /// The body or a parameter is not what the route expects.
    BadRequest,
    /// A request field failed validation; `details` has `{field, value, problem, fix}`.
    InvalidField,
    /// No such route or resource.
    NotFound,
    /// The route exists, not with this method; `details.allowedMethods` lists the methods.
    MethodNotAllowed,
    /// The request body did not arrive in time (30 s by default); the connection closes.
    BodyTimeout,
    /// The server failed; the message says where.
    Internal,
    /// The server cannot serve now (starting, draining, no valid signer); clients fail over.
    Unavailable,

    // --- controller: nodes and certificates ---
    /// A node id that is not a DNS label.
    InvalidNodeId,
    /// No node with that id.
    NodeNotFound,
    /// The node must register first.
    NodeNotRegistered,
    /// An operator rejected this node id; it stays rejected.
    NodeRejected,
    /// The node waits for `kctl node approve`.
    NodeNotApproved,
    /// A CSR that cannot be signed (identity, parse, key type).
    InvalidCsr,
    /// A CSR asks for a name the node may not carry; `details.name` names it.
    NameNotAllowed,
    /// The node renewed less than a minute ago; `details.retryAfterSeconds`.
    RenewRateLimited,
    /// The sub-CA is outside its validity window: it signs nothing.
    SubCaNotValid,
    /// The new sub-CA ends before a node certificate issued now would.
    SubCaTooShort,
    /// The new sub-CA's certificate or key does not parse or do not match.
    InvalidSubCa,
    /// The new sub-CA does not chain to the cluster root.
    SubCaUntrusted,
    /// No storage class with that name.
    NoSuchStorageClass,
    /// An approve/reject was recorded but a newer value holds the field; `details` name it.
    WriteSuperseded,
    /// A node report over its size limit; `details`: `field`, `limit`, `actual`.
    ReportTooLarge,
    /// `DELETE /v1/controllers/{id}` sent to that controller: another one must do it
    /// (kctl fails over to the next controller).
    ControllerDeletesItself,
    /// A sub-CA that a controller signs with, or that issued certificates still in use,
    /// cannot be revoked (without `force`); the message names who uses it.
    SubCaInUse,

    // --- agent: storage and configuration ---
    /// `installer-only` (or an unknown mode) refuses every disk apply.
    DiskoInstallerOnly,
    /// `controller-managed` allows additive changes only.
    DestructiveChangeRefused,
    /// The plan changed since the dry run whose hash was presented.
    PlanHashMismatch,
    /// `apply: true` without `planHash`.
    PlanHashRequired,
    /// The fragment failed validation (levels 1-3); details list the findings.
    DiskoInvalid,
    /// The Nix configuration failed validation.
    NixInvalid,
    /// Another disk apply is running.
    DiskApplyInProgress,
    /// Another rebuild is running; it is not interrupted.
    RebuildInProgress,
    /// A program the operation needs is missing or failed to start.
    ToolUnavailable,
    /// The operation's command failed.
    CommandFailed,
    /// The operation's command ran past its timeout; its process group was killed.
    TimedOut,
    /// Writing a file the operation owns failed.
    WriteFailed,
    /// Reading device state failed.
    InventoryFailed,
    /// The agent stopped while the operation ran.
    Interrupted,
    /// A rollout step's new system failed to activate or failed its health gate, and the
    /// node reverted itself to its previous generation; `details.reason` says why.
    Reverted,
    /// A rollout step's new system failed and going back to the previous generation failed
    /// too (or there was none): the node needs an operator; `details` say what happened.
    RevertFailed,
    /// Evaluating submitted Nix ran past its wall-clock or CPU bound.
    EvalTimeout,
    /// Evaluating submitted Nix ran past its memory bound.
    EvalMemoryLimit,
    /// Evaluating submitted Nix printed more than its output bound (16 MiB).
    EvalOutputLimit,
    /// Every evaluation slot is taken; nothing was done, retry later.
    EvalBusy,

    // --- agent, install mode (`/v1/install/...`) ---
    /// The install plan refuses a disk, or the request does not fit the plan (keyfile mode
    /// without `--luks-key-device`, a key device that is also a target); `details` lists why.
    InstallRefused,
    /// `recovery-key` or `reboot` presented a claim token other than the one `install/run`
    /// was started with, or named another operation.
    InstallClaimMismatch,
    /// `recovery-key` or `reboot` before the install operation succeeded.
    InstallNotFinished,

    // --- agent: why a plan refuses a target disk (kcore-disko's RefusalCode) ---
    /// The device path does not resolve to any device.
    TargetNotFound,
    /// Two targets resolve to one device, or its serial/WWN is shared (multipath).
    TargetAmbiguous,
    /// The device holds the running system.
    TargetIsOsDisk,
    /// The device or something on it is mounted.
    TargetMounted,
    /// The device or a partition of it is active swap.
    TargetSwap,
    /// Something holds the device or a partition (dm, md, LUKS, LVM).
    TargetHasHolders,
    /// The device or a partition is a ZFS pool member.
    TargetZfsMember,
    /// The device has a partition table or a filesystem signature.
    TargetHasData,

    // --- kctl, before or without a server ---
    /// The context lists no controllers and no `-s` was given.
    NoControllers,
    /// `--context` or the current context names no known context.
    UnknownContext,
    /// The kctl config has no current context.
    NoContext,
    /// The kctl config file does not exist.
    NoConfig,
    /// A controller address in the context that is not `HOST:PORT` or `https://HOST:PORT`.
    BadController,
    /// A path segment that cannot be put in a URL (empty, `.`, `..`).
    InvalidPathSegment,
    /// The command talks to an agent and `--node` is missing.
    NoNode,
    /// Flags that exclude each other.
    BadFlags,
    /// `HOME` is not set (kctl keeps its config under it).
    NoHome,
    /// A context name is required.
    NoContextName,
    /// A key file would be overwritten.
    KeyExists,
    /// A context of that name exists already.
    ContextExists,
    /// A cluster name that is not a DNS label.
    InvalidClusterName,
    /// A `HOST:PORT` that does not parse.
    InvalidAddress,
    /// A `kcore://` identity that does not parse.
    InvalidIdentity,
    /// A storage spec that does not validate.
    InvalidSpec,
    /// A disko fragment that does not validate.
    InvalidFragment,
    /// An inventory snapshot that does not parse.
    InvalidSnapshot,
    /// A file kctl could not read.
    UnreadableFile,
    /// A plan that refuses at least one target.
    Refused,
    /// The controller answered, but the change asked for is not in effect.
    NotApplied,
}

impl ErrorCode {
    /// The code as it travels: `PLAN_HASH_MISMATCH`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The HTTP status a server answers this code with unless it has a reason to
    /// choose another (for example 413 or 415 for `BAD_REQUEST`).
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            Unauthenticated | CertificateRevoked => 401,
            Forbidden
            | ForbiddenRole
            | WrongCluster
            | NotSelf
            | NodeRejected
            | NodeNotApproved
            | DiskoInstallerOnly
            | DestructiveChangeRefused
            | InstallClaimMismatch => 403,
            NotFound | NodeNotFound | NodeNotRegistered | NoSuchStorageClass => 404,
            MethodNotAllowed => 405,
            ReportTooLarge => 413,
            BodyTimeout => 408,
            PlanHashMismatch
            | DiskApplyInProgress
            | RebuildInProgress
            | WriteSuperseded
            | ControllerDeletesItself
            | SubCaInUse
            | TargetNotFound
            | TargetAmbiguous
            | TargetIsOsDisk
            | TargetMounted
            | TargetSwap
            | TargetHasHolders
            | TargetZfsMember
            | TargetHasData
            | InstallRefused
            | InstallNotFinished => 409,
            DiskoInvalid | NixInvalid | EvalTimeout | EvalMemoryLimit | EvalOutputLimit => 422,
            RenewRateLimited | EvalBusy => 429,
            Internal | ToolUnavailable | CommandFailed | WriteFailed | InventoryFailed
            | Interrupted | Reverted | RevertFailed => 500,
            Unavailable | SubCaNotValid => 503,
            TimedOut => 504,
            _ => 400,
        }
    }

    /// Every code, in declaration order.
    pub fn all() -> impl Iterator<Item = ErrorCode> {
        <ErrorCode as strum::IntoEnumIterator>::iter()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ErrorCode> for String {
    fn from(code: ErrorCode) -> String {
        code.as_str().to_string()
    }
}

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
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::from_wire(code.as_str(), message)
    }

    /// An envelope with a code that is not (or not yet) an [`ErrorCode`]: what a
    /// server sent, or `HTTP_<status>` for an answer without an envelope.
    pub fn from_wire(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    /// The code as an [`ErrorCode`], when it is one this build knows.
    pub fn known_code(&self) -> Option<ErrorCode> {
        self.code.parse().ok()
    }

    /// Whether the code is `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code.as_str()
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

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
        ApiError::new(ErrorCode::InvalidField, err.to_string()).with_details(details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_become_invalid_field_with_details() {
        let field_err = crate::validate::lvm_vg_name("storage.lvm.vgName", "a b").unwrap_err();
        let api: ApiError = field_err.clone().into();
        assert!(api.is(ErrorCode::InvalidField));
        assert_eq!(api.message, field_err.to_string());
        assert_eq!(api.details["field"], "storage.lvm.vgName");
        assert_eq!(api.details["value"], "a b");
        assert_eq!(api.details["fix"], field_err.fix);
    }

    #[test]
    fn codes_are_screaming_snake_case_and_parse_back() {
        for code in ErrorCode::all() {
            let text = code.as_str();
            assert!(
                text.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{text}"
            );
            assert_eq!(text.parse::<ErrorCode>().unwrap(), code);
            assert_eq!(serde_json::to_value(code).unwrap(), text);
            assert!((400..600).contains(&code.status()), "{text}");
        }
        assert_eq!(ErrorCode::PlanHashMismatch.as_str(), "PLAN_HASH_MISMATCH");
        assert_eq!(ErrorCode::SubCaNotValid.status(), 503);
        let wire = ApiError::from_wire("FROM_A_NEWER_SERVER", "x");
        assert_eq!(wire.known_code(), None);
    }

    /// docs/wire-protocol.md lists every code with its status: the table and the enum
    /// cannot drift apart.
    #[test]
    fn the_wire_protocol_doc_lists_every_code() {
        let doc = match std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/wire-protocol.md"
        )) {
            Ok(doc) => doc,
            // The Nix build has only rust/: the check runs in the repository's suite.
            Err(_) => {
                println!("SKIP: docs/wire-protocol.md is not beside the crate");
                return;
            }
        };
        let missing: Vec<String> = ErrorCode::all()
            .filter(|code| !doc.contains(&format!("| {} | `{}` |", code.status(), code)))
            .map(|code| format!("| {} | `{}` |", code.status(), code))
            .collect();
        assert!(
            missing.is_empty(),
            "rows missing from docs/wire-protocol.md:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn round_trips_and_omits_null_details() {
        let err = ApiError::new(ErrorCode::NotFound, "no node n1");
        let json = serde_json::to_string(&err).unwrap();
        assert_eq!(json, r#"{"code":"NOT_FOUND","message":"no node n1"}"#);
        let back: ApiError = serde_json::from_str(&json).unwrap();
        assert_eq!(back, err);
        let detailed = err.with_details(serde_json::json!({"field": "nodeId"}));
        assert!(serde_json::to_string(&detailed).unwrap().contains("nodeId"));
    }
}
