//! [`RunError`]: every way locating or running a program fails, each carrying the full argv
//! (program path first) and, where the program ran, its exit status and stderr tail, and
//! [`display_argv`], the one way an argv is shown to people.

use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong when locating or running a program.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be located.
    #[error("`{program}` not found: {detail}; {fix}")]
    NotFound {
        program: String,
        env_var: String,
        detail: String,
        fix: String,
    },
    /// The program was located but could not be started.
    #[error("could not start `{}`: {source}", display_argv(.argv))]
    Spawn {
        argv: Vec<String>,
        #[source]
        source: std::io::Error,
    },
    /// The program ran and exited unsuccessfully.
    #[error("`{}` failed ({status}){}", display_argv(.argv), display_tail(.stderr_tail))]
    Failed {
        argv: Vec<String>,
        status: ExitStatus,
        stderr_tail: String,
    },
    /// The program ran past its timeout; its whole process group was killed.
    #[error(
        "`{}` timed out after {after:?}; its process group was killed{}",
        display_argv(.argv),
        display_tail(.stderr_tail)
    )]
    TimedOut {
        argv: Vec<String>,
        after: Duration,
        stderr_tail: String,
    },
    /// The program wrote more than its output bound ([`Invocation::max_output_bytes`](super::Invocation::max_output_bytes));
    /// its whole process group was killed.
    #[error(
        "`{}` wrote more than {limit} bytes of output; its process group was killed",
        display_argv(.argv)
    )]
    OutputTooLarge { argv: Vec<String>, limit: usize },
    /// Talking to the running program (pipes, waiting) failed.
    #[error("I/O error while running `{}`: {source}", display_argv(.argv))]
    Io {
        argv: Vec<String>,
        #[source]
        source: std::io::Error,
    },
    /// The program succeeded but its stdout was not the JSON the caller expected.
    #[error(
        "`{}` printed output that is not the expected JSON ({source}); stdout starts with: {stdout_head:?}",
        display_argv(.argv)
    )]
    Json {
        argv: Vec<String>,
        #[source]
        source: serde_json::Error,
        stdout_head: String,
    },
}

impl RunError {
    /// The exit status, when the program ran to an exit.
    pub fn status(&self) -> Option<ExitStatus> {
        match self {
            RunError::Failed { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The tail of stderr, when the program ran.
    pub fn stderr_tail(&self) -> Option<&str> {
        match self {
            RunError::Failed { stderr_tail, .. } | RunError::TimedOut { stderr_tail, .. } => {
                Some(stderr_tail)
            }
            _ => None,
        }
    }

    /// The full argv of the failed invocation (empty for [`RunError::NotFound`]).
    pub fn argv(&self) -> &[String] {
        match self {
            RunError::NotFound { .. } => &[],
            RunError::Spawn { argv, .. }
            | RunError::Failed { argv, .. }
            | RunError::TimedOut { argv, .. }
            | RunError::OutputTooLarge { argv, .. }
            | RunError::Io { argv, .. }
            | RunError::Json { argv, .. } => argv,
        }
    }
}

/// Render an argv for people: space separated, arguments that a POSIX shell would split or
/// expand are single-quoted so the line can be pasted to reproduce the call. Only for
/// display: nothing in kcore ever hands this string to a shell.
pub fn display_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, '-' | '_' | '.' | '/' | ':' | '=' | '+' | ',' | '@' | '%')
                });
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn display_tail(tail: &str) -> String {
    if tail.trim().is_empty() {
        ", no stderr output".to_owned()
    } else {
        format!("; stderr:\n{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let shown = display_argv(&[
            "/bin/nix".into(),
            "eval".into(),
            "a b".into(),
            "it's".into(),
            "".into(),
            "github:o/r".into(),
        ]);
        assert_eq!(shown, r#"/bin/nix eval 'a b' 'it'\''s' '' github:o/r"#);
    }
}
