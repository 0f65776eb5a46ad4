//! The external programs the agent runs, resolved through kcore-nix from the configuration's
//! `binaries` section (then the `KCORE_*` environment variable, then `PATH`). Resolution
//! happens per use, so an inventory request on a machine without ZFS still answers (with a
//! warning) instead of the agent refusing to start.

use kcore_nix::programs::{self, Tool};
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

    /// Locate `tool`, honouring the six configurable paths of `binaries`.
    pub fn resolve(&self, tool: Tool) -> Result<Program, RunError> {
        let b = &self.binaries;
        let explicit = match tool.name {
            n if n == programs::NIX_INSTANTIATE.name => b.nix_instantiate.as_deref(),
            n if n == programs::NIXOS_REBUILD.name => b.nixos_rebuild.as_deref(),
            n if n == programs::SYSTEMD_RUN.name => b.systemd_run.as_deref(),
            n if n == programs::SYSTEMCTL.name => b.systemctl.as_deref(),
            n if n == programs::DISKO.name => b.disko.as_deref(),
            n if n == programs::LSBLK.name => b.lsblk.as_deref(),
            _ => None,
        };
        tool.resolve(explicit)
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
