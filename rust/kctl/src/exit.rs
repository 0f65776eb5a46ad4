//! Exit codes, mapped in one place: scripts can tell a refusal (the tool said no,
//! nothing changed) from a failure (something broke while trying).

/// Everything worked.
pub const OK: u8 = 0;
/// Refused or invalid: bad input, a plan that is refused, a changed plan hash. Nothing was changed.
pub const REFUSED: u8 = 1;
/// Usage error: unknown flag, missing argument (clap's own code).
pub const USAGE: u8 = 2;
/// Failed: a remote error, an unreachable server, a process that failed or timed out.
pub const FAILED: u8 = 3;
/// Stopped by Ctrl-C or SIGTERM (the shell's 128 + SIGINT), after stopping its children.
pub const INTERRUPTED: u8 = 130;

/// Marks an error as a refusal (exit 1) rather than a failure (exit 3).
/// `code` is the stable machine-readable code (for example `TARGET_MOUNTED`).
#[derive(Debug)]
pub struct Refused {
    pub code: String,
    pub message: String,
}

impl Refused {
    /// A refusal kctl itself decides, with one of the stable codes.
    pub fn new(code: kcore_api::ErrorCode, message: impl Into<String>) -> Self {
        Self::from_wire(code.as_str(), message)
    }

    /// A refusal with a code that came from elsewhere (a server's envelope, a plan's
    /// target refusal), passed on as it is.
    pub fn from_wire(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for Refused {}

/// The exit code for an error returned by a command.
pub fn code_for(err: &anyhow::Error) -> u8 {
    if err.chain().any(|cause| cause.is::<Refused>()) {
        REFUSED
    } else {
        FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_anywhere_in_the_chain_maps_to_refused() {
        let err = anyhow::Error::new(Refused::new(kcore_api::ErrorCode::BadFlags, "no"))
            .context("while planning");
        assert_eq!(code_for(&err), REFUSED);
        assert_eq!(code_for(&anyhow::anyhow!("boom")), FAILED);
    }
}
