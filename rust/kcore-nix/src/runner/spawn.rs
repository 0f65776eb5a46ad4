//! Spawning and waiting: every child in its own process group, killed as a group on a
//! timeout, past the output bound, when the future is dropped, and after the program exits
//! (its orphans), with bounded grace periods for reaping and draining the pipes.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::output::{Sink, Stream, read_lines};
use super::{Invocation, Output, RunError, StreamLine, display_argv, stderr_tail};

/// How long to keep reading stdout/stderr after the program exited and its process group was
/// killed. Pipes only stay open past that point when a process escaped the group (setsid);
/// we must not wait for it forever.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// How long to wait for a SIGKILLed child to be reaped after a timeout.
const REAP_GRACE: Duration = Duration::from_secs(5);

impl Invocation {
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

    pub(super) async fn run(
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

/// How long a cancelled run waits for its killed child to be gone.
const REAP_BOUND: Duration = Duration::from_secs(2);

impl GroupGuard {
    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // ESRCH (group already empty) is the normal case after a clean exit.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    /// Waits (bounded) until the killed child has died. SIGKILL is delivered
    /// asynchronously: on a loaded machine a process in the middle of a page fault can
    /// outlive the `killpg` by many milliseconds, and a caller that exits right after a
    /// cancel (kctl on Ctrl-C) would otherwise leave it running under PID 1 for that
    /// while. The group leader is the child itself (`setpgid(0, 0)`), so its pid is the
    /// pgid; ECHILD means tokio reaped it already.
    fn reap(&self) {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        let Some(pid) = self.pgid else { return };
        let deadline = std::time::Instant::now() + REAP_BOUND;
        while std::time::Instant::now() < deadline {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
                _ => return,
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
            self.reap();
        }
    }
}
