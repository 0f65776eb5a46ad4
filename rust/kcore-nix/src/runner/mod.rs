//! Running external programs: argument vectors only, never a shell.
//!
//! A [`Program`] is resolved once (explicit path, then an environment variable, then `PATH`)
//! and an [`Invocation`] runs it. Every child starts in its own process group so that a
//! timeout, a cancelled future, or the normal end of the program can SIGKILL everything the
//! program started: a runner call never leaves processes behind. Every error carries the
//! full argv (program path first) and, where the program ran, its exit status and the tail
//! of its stderr, so a log line alone is enough to reproduce the failure.
//!
//! Nothing here caps timeouts or output sizes by default: callers know their limits (the
//! storage code caps timeouts at 3600 s, for example). A caller that runs something it does
//! not trust (an evaluation of submitted Nix) adds kernel resource limits with
//! [`Invocation::limits`] and an output bound with [`Invocation::max_output_bytes`].
//!
//! The module is split by concern: [`Program`] resolution (`program`), the invocation
//! builder (here), spawning with process groups, timeouts and the output bound (`spawn`),
//! kernel resource limits (`limits`), output capture, streaming and the stderr tail
//! (`output`), and the error type (`error`). Everything is re-exported here, so callers
//! keep writing `kcore_nix::runner::{Invocation, Program, RunError, ...}`.

mod error;
mod limits;
mod output;
mod program;
mod spawn;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{RunError, display_argv};
pub use limits::Limits;
pub use output::{Output, StreamLine, stderr_tail};
pub use program::{Program, ProgramSource};

/// A configured run of a [`Program`]: argv, environment, working directory, stdin, timeout,
/// resource limits.
#[derive(Debug, Clone)]
pub struct Invocation {
    program: PathBuf,
    args: Vec<OsString>,
    /// Applied in order, so a later `env_remove` undoes an earlier `env` and vice versa.
    env_ops: Vec<(OsString, Option<OsString>)>,
    env_clear: bool,
    current_dir: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    limits: Limits,
    max_output: Option<usize>,
}

impl Invocation {
    /// An invocation of `program` with no arguments, the parent's environment, stdin from
    /// `/dev/null` and no timeout.
    pub fn new(program: &Program) -> Self {
        Invocation {
            program: program.path().to_path_buf(),
            args: Vec::new(),
            env_ops: Vec::new(),
            env_clear: false,
            current_dir: None,
            stdin: None,
            timeout: None,
            limits: Limits::default(),
            max_output: None,
        }
    }

    /// Append one argument, passed to the program as is (no shell, no splitting).
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// Append arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Set an environment variable for the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env_ops
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Remove an inherited environment variable from the child.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env_ops.push((key.as_ref().to_owned(), None));
        self
    }

    /// Start the child with an empty environment (plus whatever [`Invocation::env`] sets).
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// Run the child in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.current_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Feed these bytes to the child's stdin, then close it.
    pub fn stdin_bytes(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// Kill the whole process group and fail with [`RunError::TimedOut`] after `d`.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// The configured timeout, if any.
    pub fn timeout_value(&self) -> Option<Duration> {
        self.timeout
    }

    /// Run the child under these kernel resource limits (see [`Limits`]). The wall-clock
    /// [`Invocation::timeout`] and the process-group kill still apply.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Kill the whole process group and fail with [`RunError::OutputTooLarge`] once stdout
    /// and stderr together pass `bytes`: the output is kept in memory, so a program whose
    /// output is not trusted must not be able to grow the caller without bound. The
    /// readers stop reading a stream past the bound, and read a long line in pieces of at
    /// most `bytes` (so [`Invocation::stream`] may then see one line split).
    pub fn max_output_bytes(mut self, bytes: usize) -> Self {
        self.max_output = Some(bytes);
        self
    }

    /// The configured resource limits (all `None` unless [`Invocation::limits`] was called).
    pub fn limits_value(&self) -> Limits {
        self.limits
    }

    /// The full argv, program path first (invalid UTF-8 replaced; for errors and logs).
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The argv rendered for people (see [`display_argv`]).
    pub fn display(&self) -> String {
        display_argv(&self.argv())
    }

    /// Run to completion; a non-zero exit is [`RunError::Failed`].
    pub async fn output(&self) -> Result<Output, RunError> {
        let out = self.run(None).await?;
        self.check(out)
    }

    /// Run to completion and return whatever the exit status was. Timeouts and I/O problems
    /// are still errors.
    pub async fn output_unchecked(&self) -> Result<Output, RunError> {
        self.run(None).await
    }

    /// Run to completion (non-zero exit is an error) and parse stdout as JSON.
    pub async fn capture_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, RunError> {
        let out = self.output().await?;
        serde_json::from_slice(&out.stdout).map_err(|source| RunError::Json {
            argv: self.argv(),
            source,
            stdout_head: String::from_utf8_lossy(&out.stdout)
                .chars()
                .take(200)
                .collect(),
        })
    }

    /// Run to completion, handing each stdout and stderr line to `on_line` as it arrives
    /// (for progress reporting). The returned [`Output`] still holds everything; a non-zero
    /// exit is [`RunError::Failed`] and the timeout applies as usual.
    pub async fn stream(
        &self,
        mut on_line: impl FnMut(StreamLine) + Send,
    ) -> Result<Output, RunError> {
        let out = self.run(Some(&mut on_line)).await?;
        self.check(out)
    }

    /// Like [`Invocation::stream`] but returns any exit status.
    pub async fn stream_unchecked(
        &self,
        mut on_line: impl FnMut(StreamLine) + Send,
    ) -> Result<Output, RunError> {
        self.run(Some(&mut on_line)).await
    }

    fn check(&self, out: Output) -> Result<Output, RunError> {
        if out.status.success() {
            Ok(out)
        } else {
            Err(RunError::Failed {
                argv: self.argv(),
                status: out.status,
                stderr_tail: stderr_tail(&out.stderr),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> Program {
        Program::resolve("sh", None, "KCORE_TEST_UNSET_SH").unwrap()
    }

    #[test]
    fn argv_puts_program_path_first_and_keeps_arguments_whole() {
        let prog = sh();
        let inv = Invocation::new(&prog)
            .arg("-c")
            .args(["echo \"$1\"", "a b", "${x}"])
            .env("K", "V")
            .timeout(Duration::from_secs(3));
        let argv = inv.argv();
        assert_eq!(argv[0], prog.path().to_string_lossy());
        assert_eq!(&argv[1..], ["-c", "echo \"$1\"", "a b", "${x}"]);
        assert_eq!(inv.timeout_value(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let prog = sh();
        let inv = Invocation::new(&prog);
        assert_send(&inv.output());
        assert_send(&inv.stream(|_| {}));
        assert_send(&inv.capture_json::<serde_json::Value>());
    }
}
