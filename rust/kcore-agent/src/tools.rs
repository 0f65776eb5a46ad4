//! The external programs the agent runs, resolved through kcore-nix from the configuration's
//! `binaries` section (then the `KCORE_*` environment variable, then `PATH`). Resolution
//! happens per use, so an inventory request on a machine without ZFS still answers (with a
//! warning) instead of the agent refusing to start.

use kcore_nix::programs::Tool;
use kcore_nix::runner::{Program, RunError};

use crate::config::Binaries;

/// Resolves tools with the configured explicit paths.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    binaries: Binaries,
}

impl Tools {
    pub fn new(binaries: Binaries) -> Self {
        Self { binaries }
    }

    /// Locate `tool`: its path in `binaries` when configured, else its variable, else PATH.
    pub fn resolve(&self, tool: Tool) -> Result<Program, RunError> {
        tool.resolve(self.binaries.get(tool.name))
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }
}

/// `ip` is not one of kcore-nix's well-known tools (only the agent needs it).
pub const IP: Tool = Tool {
    name: "ip",
    env_var: "KCORE_IP",
};
