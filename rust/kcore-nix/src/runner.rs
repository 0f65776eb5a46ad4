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

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// How long to keep reading stdout/stderr after the program exited and its process group was
/// killed. Pipes only stay open past that point when a process escaped the group (setsid);
/// we must not wait for it forever.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// How long to wait for a SIGKILLed child to be reaped after a timeout.
const REAP_GRACE: Duration = Duration::from_secs(5);

/// How much of stderr an error keeps: enough to show Nix's error trace, small enough for a log.
const TAIL_MAX_BYTES: usize = 4096;
const TAIL_MAX_LINES: usize = 40;

/// Where a [`Program`]'s path came from (for logs and error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramSource {
    /// Given explicitly (a command-line flag or a configuration key).
    Explicit,
    /// Taken from the named environment variable.
    Env(String),
    /// Found on `PATH`.
    Path,
}

/// An external program whose executable has been located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    name: String,
    path: PathBuf,
    source: ProgramSource,
}

impl Program {
    /// Locate `name`: the `explicit` path first, then the environment variable `env_var`,
    /// then `PATH`. An explicit value or variable holding a bare name (no '/') is looked up
    /// on `PATH`; anything else is a path that must be an executable file.
    ///
    /// The error names the program, every place that was tried and how to provide it.
    pub fn resolve(
        name: &str,
        explicit: Option<&Path>,
        env_var: &str,
    ) -> Result<Program, RunError> {
        resolve_with(name, explicit, env_var, std::env::var_os(env_var))
    }

    /// The program's well-known name (`nix-instantiate`), not its path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The resolved executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the path came from.
    pub fn source(&self) -> &ProgramSource {
        &self.source
    }
}

/// [`Program::resolve`] with the environment variable's value passed in, so tests need not
/// mutate the process environment (`set_var` is unsafe in edition 2024).
fn resolve_with(
    name: &str,
    explicit: Option<&Path>,
    env_var: &str,
    env_value: Option<OsString>,
) -> Result<Program, RunError> {
    let not_found = |detail: String, fix: String| RunError::NotFound {
        program: name.to_owned(),
        env_var: env_var.to_owned(),
        detail,
        fix,
    };
    if let Some(path) = explicit {
        let path = locate(path).map_err(|why| {
            not_found(
                format!("the configured path {} {why}", path.display()),
                format!(
                    "point the setting at the `{name}` executable, or leave it unset to use \
                         ${env_var} or PATH"
                ),
            )
        })?;
        return Ok(Program {
            name: name.to_owned(),
            path,
            source: ProgramSource::Explicit,
        });
    }
    if let Some(value) = env_value.filter(|v| !v.is_empty()) {
        let as_path = Path::new(&value);
        let path = locate(as_path).map_err(|why| {
            not_found(
                format!("{env_var}={} {why}", as_path.display()),
                format!("set {env_var} to the absolute path of `{name}`, or unset it to use PATH"),
            )
        })?;
        return Ok(Program {
            name: name.to_owned(),
            path,
            source: ProgramSource::Env(env_var.to_owned()),
        });
    }
    match which::which(name) {
        Ok(path) => Ok(Program {
            name: name.to_owned(),
            path,
            source: ProgramSource::Path,
        }),
        Err(_) => Err(not_found(
            format!("no path was configured, ${env_var} is not set, and `{name}` is not on PATH"),
            format!("install it and put it on PATH, or set {env_var}=/absolute/path/to/{name}"),
        )),
    }
}

/// A bare name (`nix-instantiate`) is looked up on PATH; anything with a '/' is a path that
/// must be an executable file.
fn locate(path: &Path) -> Result<PathBuf, String> {
    if path.is_absolute() || path.components().count() > 1 {
        check_executable(path)
    } else {
        which::which(path).map_err(|e| format!("is not on PATH ({e})"))
    }
}

/// Checks that `path` is an executable regular file; returns it made absolute (relative
/// paths would change meaning with `current_dir`).
fn check_executable(path: &Path) -> Result<PathBuf, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be used ({e})"))?;
    if !meta.is_file() {
        return Err("is not a regular file".to_owned());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("is not executable (no x permission bit)".to_owned());
    }
    std::path::absolute(path).map_err(|e| format!("cannot be made absolute ({e})"))
}

/// One line of output from [`Invocation::stream`], without its line terminator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamLine {
    Stdout(String),
    Stderr(String),
}

/// What a finished program produced.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// stdout as text, invalid UTF-8 replaced.
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text, invalid UTF-8 replaced.
    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

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
    /// The program wrote more than its output bound ([`Invocation::max_output_bytes`]);
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

/// The last lines of `bytes` (at most 40 lines and about 4 KiB), as text. A leading `…`
/// marks a cut.
pub fn stderr_tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    let mut start = text.len().saturating_sub(TAIL_MAX_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let mut cut = start > 0;
    let mut tail = &text[start..];
    let lines: Vec<&str> = tail.lines().collect();
    if lines.len() > TAIL_MAX_LINES {
        let mut offset = 0;
        for _ in 0..(lines.len() - TAIL_MAX_LINES) {
            match tail[offset..].find('\n') {
                Some(i) => offset += i + 1,
                None => break,
            }
        }
        tail = &tail[offset..];
        cut = true;
    }
    if cut {
        format!("…{tail}")
    } else {
        tail.to_owned()
    }
}

/// Kernel resource limits (`setrlimit(2)`) for a child, set in the child between fork and
/// exec, so the program never runs a single instruction without them (setting them from
/// the parent after the spawn would leave a window). The program's own children inherit
/// them. Whenever a [`Limits`] is applied, `RLIMIT_CORE` is also set to 0: a program stopped
/// by its memory or CPU bound would otherwise dump a core as large as the bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_AS`: the most address space the program may map, in bytes. A larger
    /// allocation fails inside the program (Nix then says `error: out of memory` and exits 1).
    pub address_space_bytes: Option<u64>,
    /// `RLIMIT_CPU`: CPU seconds over all threads. At the bound the kernel sends `SIGXCPU`
    /// (which terminates), one second later `SIGKILL` in case the program catches `SIGXCPU`.
    pub cpu_seconds: Option<u64>,
}

impl Limits {
    /// Whether a program that ended this way was stopped by the CPU bound: killed by
    /// `SIGXCPU`, or by `SIGKILL` when a CPU bound was set (the kernel's follow-up; the
    /// runner's own timeout kill is reported as [`RunError::TimedOut`] instead).
    pub fn cpu_bound_hit(&self, status: ExitStatus) -> bool {
        use std::os::unix::process::ExitStatusExt;
        self.cpu_seconds.is_some()
            && matches!(status.signal(), Some(s) if s == Signal::SIGXCPU as i32 || s == Signal::SIGKILL as i32)
    }

    fn is_empty(&self) -> bool {
        self.address_space_bytes.is_none() && self.cpu_seconds.is_none()
    }

    /// Apply the limits to the calling process. Runs in the forked child before exec, so it
    /// must stay async-signal-safe: `setrlimit` only, no allocation, no locks.
    fn apply(self) -> std::io::Result<()> {
        use nix::sys::resource::{Resource, setrlimit};
        let set = |resource, soft, hard| {
            setrlimit(resource, soft, hard)
                .map_err(|errno| std::io::Error::from_raw_os_error(errno as i32))
        };
        set(Resource::RLIMIT_CORE, 0, 0)?;
        if let Some(bytes) = self.address_space_bytes {
            set(Resource::RLIMIT_AS, bytes, bytes)?;
        }
        if let Some(seconds) = self.cpu_seconds {
            set(Resource::RLIMIT_CPU, seconds, seconds.saturating_add(1))?;
        }
        Ok(())
    }
}

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

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args);
        if self.env_clear {
            cmd.env_clear();
        }
        for (key, value) in &self.env_ops {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped());
        cmd.stderr(Stdio::piped());
        // A new process group (pgid = child pid) lets us kill everything the program started.
        cmd.process_group(0);
        // Belt and braces with `GroupGuard`: tokio also reaps the killed child in the background.
        cmd.kill_on_drop(true);
        if !self.limits.is_empty() {
            let limits = self.limits;
            // SAFETY: the closure runs in the forked child before exec and calls only
            // setrlimit(2) (async-signal-safe); it allocates nothing and takes no locks
            // (`from_raw_os_error` builds the error without allocating).
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(move || limits.apply());
            }
        }
        cmd
    }

    async fn run(
        &self,
        on_line: Option<&mut (dyn FnMut(StreamLine) + Send)>,
    ) -> Result<Output, RunError> {
        let argv = self.argv();
        tracing::debug!(argv = %display_argv(&argv), timeout = ?self.timeout, "running");
        let mut child = self.command().spawn().map_err(|source| RunError::Spawn {
            argv: argv.clone(),
            source,
        })?;
        let mut guard = GroupGuard {
            pgid: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
            armed: true,
        };

        let stdin_task = match (child.stdin.take(), self.stdin.clone()) {
            (Some(mut pipe), Some(bytes)) => Some(tokio::spawn(async move {
                let result = pipe.write_all(&bytes).await;
                drop(pipe); // EOF for the child
                result
            })),
            _ => None,
        };

        let (tx, mut rx) = mpsc::unbounded_channel();
        let readers =
            [
                child.stdout.take().map(|r| {
                    tokio::spawn(read_lines(r, Stream::Stdout, tx.clone(), self.max_output))
                }),
                child.stderr.take().map(|r| {
                    tokio::spawn(read_lines(r, Stream::Stderr, tx.clone(), self.max_output))
                }),
            ];
        drop(tx); // the channel closes once both readers finish

        let mut sink = Sink {
            stdout: Vec::new(),
            stderr: Vec::new(),
            on_line,
        };

        // The timeout covers the program's run; the drain after its exit has its own bound,
        // so a program that finished in time is never reported as timed out.
        let max_output = self.max_output;
        let wait = async {
            let mut channel_open = true;
            loop {
                tokio::select! {
                    chunk = rx.recv(), if channel_open => match chunk {
                        Some(chunk) => {
                            sink.push(chunk);
                            if sink.over(max_output) {
                                break None;
                            }
                        }
                        None => channel_open = false,
                    },
                    status = child.wait() => break Some(status),
                }
            }
        };
        let ended = match self.timeout {
            None => wait.await,
            Some(limit) => match tokio::time::timeout(limit, wait).await {
                Ok(ended) => ended,
                Err(_) => {
                    // Kill before reaping: while the leader is an unreaped zombie its pid (the
                    // group id) cannot be reused, so the signal cannot hit a stranger.
                    guard.kill();
                    guard.armed = false;
                    // A process in uninterruptible sleep (a hung disk) dies only when its I/O
                    // returns; don't let that stretch the timeout. If reaping takes too long,
                    // dropping `child` leaves the reaping to tokio.
                    let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
                    abort_all(&readers, stdin_task.as_ref());
                    while let Ok(chunk) = rx.try_recv() {
                        sink.push(chunk);
                    }
                    return Err(RunError::TimedOut {
                        argv,
                        after: limit,
                        stderr_tail: stderr_tail(&sink.stderr),
                    });
                }
            },
        };
        let Some(status) = ended else {
            // Past the output bound: the same kill-then-reap as a timeout.
            guard.kill();
            guard.armed = false;
            let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
            abort_all(&readers, stdin_task.as_ref());
            return Err(RunError::OutputTooLarge {
                argv,
                limit: max_output.unwrap_or_default(),
            });
        };
        // The program is gone; anything it left in its group is an orphan of a finished
        // command. Killing it is what makes "no call leaks processes" true, and it closes the
        // pipes those orphans would otherwise hold open forever.
        guard.kill();
        let drained = tokio::time::timeout(DRAIN_GRACE, async {
            while let Some(chunk) = rx.recv().await {
                sink.push(chunk);
                if sink.over(max_output) {
                    break;
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                argv = %display_argv(&argv),
                "output pipes still open {DRAIN_GRACE:?} after exit (a process left the group); output may be incomplete"
            );
        }
        guard.armed = false;
        abort_all(&readers, None);
        if sink.over(max_output) {
            return Err(RunError::OutputTooLarge {
                argv,
                limit: max_output.unwrap_or_default(),
            });
        }
        let status = status.map_err(|source| RunError::Io {
            argv: argv.clone(),
            source,
        })?;

        if let Some(mut task) = stdin_task {
            // The child may legitimately exit without reading all of stdin (the write then
            // fails with EPIPE). Only a process that left the group could still hold the pipe
            // without reading; the grace keeps that from blocking us.
            match tokio::time::timeout(DRAIN_GRACE, &mut task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Ok(Ok(Err(source))) => return Err(RunError::Io { argv, source }),
                Ok(Err(join)) => {
                    return Err(RunError::Io {
                        argv,
                        source: std::io::Error::other(join.to_string()),
                    });
                }
                Err(_) => task.abort(),
            }
        }

        Ok(Output {
            status,
            stdout: sink.stdout,
            stderr: sink.stderr,
        })
    }
}

fn abort_all(
    readers: &[Option<tokio::task::JoinHandle<()>>],
    stdin: Option<&tokio::task::JoinHandle<std::io::Result<()>>>,
) {
    for reader in readers.iter().flatten() {
        reader.abort();
    }
    if let Some(task) = stdin {
        task.abort();
    }
}

/// Kills the child's process group when dropped while armed: a cancelled `run` future (the
/// caller's `select!`, a dropped request) must not leave the program running.
struct GroupGuard {
    pgid: Option<Pid>,
    armed: bool,
}

impl GroupGuard {
    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // ESRCH (group already empty) is the normal case after a clean exit.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

struct Sink<'a> {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    on_line: Option<&'a mut (dyn FnMut(StreamLine) + Send)>,
}

impl Sink<'_> {
    /// More than `max` bytes of stdout and stderr together.
    fn over(&self, max: Option<usize>) -> bool {
        max.is_some_and(|max| self.stdout.len() + self.stderr.len() > max)
    }

    fn push(&mut self, (stream, bytes): (Stream, Vec<u8>)) {
        if let Some(on_line) = self.on_line.as_mut() {
            let mut line = bytes.as_slice();
            line = line.strip_suffix(b"\n").unwrap_or(line);
            line = line.strip_suffix(b"\r").unwrap_or(line);
            let text = String::from_utf8_lossy(line).into_owned();
            on_line(match stream {
                Stream::Stdout => StreamLine::Stdout(text),
                Stream::Stderr => StreamLine::Stderr(text),
            });
        }
        match stream {
            Stream::Stdout => self.stdout.extend_from_slice(&bytes),
            Stream::Stderr => self.stderr.extend_from_slice(&bytes),
        }
    }
}

/// Forward `reader` line by line (terminator kept, so the bytes add up exactly). A read error
/// ends the stream; what arrived before it is kept. With a bound (`max`), a line is read in
/// pieces of at most `max + 1` bytes and reading stops once more than `max` bytes came, so
/// neither a single huge line nor a flood is held in memory past the bound.
async fn read_lines(
    reader: impl AsyncRead + Unpin,
    stream: Stream,
    tx: mpsc::UnboundedSender<(Stream, Vec<u8>)>,
    max: Option<usize>,
) {
    let mut reader = BufReader::new(reader);
    let mut total = 0usize;
    loop {
        let mut line = Vec::new();
        let read = match max {
            None => reader.read_until(b'\n', &mut line).await,
            Some(max) => {
                let room = (max - total.min(max)) as u64 + 1;
                (&mut reader).take(room).read_until(b'\n', &mut line).await
            }
        };
        match read {
            Ok(0) => break,
            Ok(n) => {
                total = total.saturating_add(n);
                if tx.send((stream, line)).is_err() {
                    break;
                }
                if max.is_some_and(|max| total > max) {
                    break;
                }
            }
            Err(e) => {
                if !line.is_empty() {
                    let _ = tx.send((stream, line));
                }
                tracing::debug!("reading child output failed: {e}");
                break;
            }
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

    #[test]
    fn stderr_tail_keeps_the_end() {
        let short = stderr_tail(b"error: boom\n");
        assert_eq!(short, "error: boom");
        let many: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(many.as_bytes());
        assert!(tail.starts_with('…'), "{tail}");
        assert!(tail.ends_with("line 99"));
        assert_eq!(tail.lines().count(), TAIL_MAX_LINES);
        assert!(tail.contains("line 60") && !tail.contains("line 59\n"));
        let huge = "é".repeat(10_000);
        let tail = stderr_tail(huge.as_bytes());
        assert!(tail.len() <= TAIL_MAX_BYTES + '…'.len_utf8());
    }

    #[test]
    fn resolve_prefers_explicit_then_env_then_path() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("fake-tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

        let explicit = Program::resolve("sh", Some(&exe), "KCORE_TEST_RESOLVE_A").unwrap();
        assert_eq!(explicit.path(), exe);
        assert_eq!(explicit.source(), &ProgramSource::Explicit);

        // A bare explicit name is looked up on PATH, like a bare variable value.
        let bare_explicit = resolve_with("x", Some(Path::new("sh")), "V", None).unwrap();
        assert!(bare_explicit.path().is_absolute() && bare_explicit.path().ends_with("sh"));
        assert_eq!(bare_explicit.source(), &ProgramSource::Explicit);

        // The explicit path wins over the variable.
        let both = resolve_with("sh", Some(&exe), "V", Some("/bin/false".into())).unwrap();
        assert_eq!(both.path(), exe);

        // Then the variable: an absolute path, or a bare name looked up on PATH.
        let env = resolve_with("x", None, "V", Some(exe.clone().into())).unwrap();
        assert_eq!(env.path(), exe);
        assert_eq!(env.source(), &ProgramSource::Env("V".into()));
        let bare = resolve_with("x", None, "V", Some("sh".into())).unwrap();
        assert!(bare.path().is_absolute() && bare.path().ends_with("sh"));

        // An empty variable counts as unset.
        let empty = resolve_with("sh", None, "V", Some("".into())).unwrap();
        assert_eq!(empty.source(), &ProgramSource::Path);

        // A variable that points nowhere is an error naming the variable, not a silent
        // fall-through to PATH (the operator asked for that binary).
        let err = resolve_with("sh", None, "KCORE_SH", Some(dir.path().join("gone").into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("KCORE_SH="), "{err}");
        assert!(
            err.contains("set KCORE_SH to the absolute path of `sh`"),
            "{err}"
        );

        let from_path = Program::resolve("sh", None, "KCORE_TEST_RESOLVE_UNSET").unwrap();
        assert_eq!(from_path.source(), &ProgramSource::Path);
        assert!(from_path.path().is_absolute());
    }

    #[test]
    fn resolve_errors_name_the_program_the_variable_and_the_fix() {
        let err = Program::resolve(
            "kcore-surely-missing-tool",
            None,
            "KCORE_SURELY_MISSING_TOOL",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`kcore-surely-missing-tool` not found"),
            "{msg}"
        );
        assert!(
            msg.contains("KCORE_SURELY_MISSING_TOOL=/absolute/path/to/kcore-surely-missing-tool"),
            "{msg}"
        );
        assert!(err.argv().is_empty());

        let dir = tempfile::tempdir().unwrap();
        let not_exec = dir.path().join("plain");
        std::fs::write(&not_exec, "x").unwrap();
        let msg = Program::resolve("disko", Some(&not_exec), "KCORE_DISKO")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("is not executable"), "{msg}");
        assert!(msg.contains(&not_exec.display().to_string()), "{msg}");
        let msg = Program::resolve("disko", Some(dir.path()), "KCORE_DISKO")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("is not a regular file"), "{msg}");
        let missing = dir.path().join("nope");
        let msg = Program::resolve("disko", Some(&missing), "KCORE_DISKO")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("cannot be used"), "{msg}");
    }

    /// The futures must be `Send` so servers can run them inside spawned tasks.
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
