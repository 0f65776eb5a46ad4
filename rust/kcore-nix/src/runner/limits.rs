//! [`Limits`]: kernel resource limits set in the child between fork and exec.

use std::process::ExitStatus;

use nix::sys::signal::Signal;

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
    /// runner's own timeout kill is reported as [`RunError::TimedOut`](super::RunError::TimedOut) instead).
    pub fn cpu_bound_hit(&self, status: ExitStatus) -> bool {
        use std::os::unix::process::ExitStatusExt;
        self.cpu_seconds.is_some()
            && matches!(status.signal(), Some(s) if s == Signal::SIGXCPU as i32 || s == Signal::SIGKILL as i32)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.address_space_bytes.is_none() && self.cpu_seconds.is_none()
    }

    /// Apply the limits to the calling process. Runs in the forked child before exec, so it
    /// must stay async-signal-safe: `setrlimit` only, no allocation, no locks.
    pub(super) fn apply(self) -> std::io::Result<()> {
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
