//! The external programs kcore runs, each with the environment variable that overrides where
//! it is found. Resolve each once at start-up (flag or config path, then the variable, then
//! `PATH`) and keep the [`Program`]: a missing tool is then reported before any work starts.

use std::path::Path;

use crate::runner::{Program, RunError};

/// A well-known external program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// The executable's name on `PATH`.
    pub name: &'static str,
    /// The environment variable that, when set, names the executable to use instead.
    pub env_var: &'static str,
}

impl Tool {
    /// Locate the tool: `explicit` (a flag or configuration value), then `$env_var`, then
    /// `PATH`. The error also says which package usually provides it.
    pub fn resolve(&self, explicit: Option<&Path>) -> Result<Program, RunError> {
        Program::resolve(self.name, explicit, self.env_var).map_err(|err| match err {
            RunError::NotFound {
                program,
                env_var,
                detail,
                fix,
            } => RunError::NotFound {
                fix: format!("{fix} ({})", self.provided_by()),
                program,
                env_var,
                detail,
            },
            other => other,
        })
    }

    /// Where the tool usually comes from, for error messages.
    pub fn provided_by(&self) -> &'static str {
        match self.name {
            "nix-instantiate" | "nix" | "nix-store" | "nix-build" | "nix-env" => {
                "it ships with Nix; on Debian: apt-get install nix-bin"
            }
            "nixos-rebuild" | "nixos-install" => "it exists on NixOS and the kcore installer ISO",
            "disko" => {
                "it is in the kcore installer ISO; elsewhere `nix run github:nix-community/disko`"
            }
            "systemd-run" | "systemctl" | "bootctl" | "systemd-cryptenroll" => {
                "it ships with systemd"
            }
            "lsblk" | "blkid" | "wipefs" | "umount" => "it ships with util-linux",
            "cryptsetup" => "package cryptsetup",
            "lvm" | "pvs" | "vgs" | "lvs" | "pvcreate" | "vgcreate" | "lvcreate" | "vgchange"
            | "pvremove" | "vgremove" | "lvremove" | "lvextend" | "pvresize" => "package lvm2",
            "zpool" | "zfs" => "package zfs (zfsutils-linux on Debian)",
            "qemu-system-x86_64" => "package qemu (qemu-system-x86 on Debian)",
            "qemu-img" => "package qemu (qemu-utils on Debian)",
            "sgdisk" => "package gptfdisk",
            "bash" => "package bash",
            "git" => "package git",
            _ => "install it from your distribution",
        }
    }
}

macro_rules! tools {
    ($($(#[$doc:meta])* $konst:ident = $name:literal, $var:literal;)*) => {
        $($(#[$doc])* pub const $konst: Tool = Tool { name: $name, env_var: $var };)*
        /// Every tool above, in declaration order (for documentation and checks).
        pub const ALL: &[Tool] = &[$($konst),*];
    };
}

tools! {
    /// Evaluates Nix expressions (`--eval --strict --json`), used to validate disko fragments.
    NIX_INSTANTIATE = "nix-instantiate", "KCORE_NIX_INSTANTIATE";
    /// The `nix` CLI (`nix build`, `nix eval`), with flakes enabled per call.
    NIX = "nix", "KCORE_NIX";
    /// Builds store derivations (`nix-store --realise`) and queries the store.
    NIX_STORE = "nix-store", "KCORE_NIX_STORE";
    /// Builds and activates NixOS generations (`build`, `switch`, `boot`, `test`).
    NIXOS_REBUILD = "nixos-rebuild", "KCORE_NIXOS_REBUILD";
    /// Installs NixOS onto mounted disks (installer only).
    NIXOS_INSTALL = "nixos-install", "KCORE_NIXOS_INSTALL";
    /// Sets, lists and rolls back profile generations (`nix-env --profile`).
    NIX_ENV = "nix-env", "KCORE_NIX_ENV";
    /// Chooses the systemd-boot entry for the next boot (`set-oneshot`) and the default.
    BOOTCTL = "bootctl", "KCORE_BOOTCTL";
    /// Chooses the GRUB entry for the next boot only (`grub-reboot ENTRY`).
    GRUB_REBOOT = "grub-reboot", "KCORE_GRUB_REBOOT";
    /// Partitions and formats disks from a disko configuration.
    DISKO = "disko", "KCORE_DISKO";
    /// Runs prepare/activate in a transient unit so an agent restart does not kill them.
    SYSTEMD_RUN = "systemd-run", "KCORE_SYSTEMD_RUN";
    /// Queries transient units and system state (`is-system-running`).
    SYSTEMCTL = "systemctl", "KCORE_SYSTEMCTL";
    /// Lists block devices (`--json --bytes`).
    LSBLK = "lsblk", "KCORE_LSBLK";
    /// Probes signatures on block devices.
    BLKID = "blkid", "KCORE_BLKID";
    /// Finds and removes signatures (only ever on a device a plan named).
    WIPEFS = "wipefs", "KCORE_WIPEFS";
    /// LUKS2 formatting, opening and TPM2/key-file enrollment.
    CRYPTSETUP = "cryptsetup", "KCORE_CRYPTSETUP";
    /// TPM2 and recovery-key enrolment of a LUKS2 volume (install).
    SYSTEMD_CRYPTENROLL = "systemd-cryptenroll", "KCORE_SYSTEMD_CRYPTENROLL";
    /// Unmounts what an install mounted (`umount -R <root>`).
    UMOUNT = "umount", "KCORE_UMOUNT";
    /// The LVM multi-call binary (`lvm vgs`, `lvm fullreport`, ...).
    LVM = "lvm", "KCORE_LVM";
    /// LVM physical volume report.
    PVS = "pvs", "KCORE_PVS";
    /// LVM volume group report.
    VGS = "vgs", "KCORE_VGS";
    /// LVM logical volume report.
    LVS = "lvs", "KCORE_LVS";
    /// Initialise an LVM physical volume.
    PVCREATE = "pvcreate", "KCORE_PVCREATE";
    /// Create an LVM volume group.
    VGCREATE = "vgcreate", "KCORE_VGCREATE";
    /// Create an LVM logical volume.
    LVCREATE = "lvcreate", "KCORE_LVCREATE";
    /// Activate or deactivate an LVM volume group.
    VGCHANGE = "vgchange", "KCORE_VGCHANGE";
    /// Remove an LVM physical volume label.
    PVREMOVE = "pvremove", "KCORE_PVREMOVE";
    /// Remove an LVM volume group.
    VGREMOVE = "vgremove", "KCORE_VGREMOVE";
    /// Remove an LVM logical volume.
    LVREMOVE = "lvremove", "KCORE_LVREMOVE";
    /// Grow an LVM logical volume (the thin pool after its disk grew).
    LVEXTEND = "lvextend", "KCORE_LVEXTEND";
    /// Take an LVM physical volume's new size after its disk grew.
    PVRESIZE = "pvresize", "KCORE_PVRESIZE";
    /// ZFS pool management.
    ZPOOL = "zpool", "KCORE_ZPOOL";
    /// ZFS dataset management.
    ZFS = "zfs", "KCORE_ZFS";
    /// Runs each VM's guest, in its transient unit `kcore-vm-<name>`.
    QEMU_SYSTEM_X86_64 = "qemu-system-x86_64", "KCORE_QEMU_SYSTEM_X86_64";
    /// Reads an image's format and size and writes it into a VM's volume.
    QEMU_IMG = "qemu-img", "KCORE_QEMU_IMG";
    /// GPT partitioning.
    SGDISK = "sgdisk", "KCORE_SGDISK";
    /// Runs scripts kcore ships (disko's create scripts, test stand-ins) as files, never `-c`.
    BASH = "bash", "KCORE_BASH";
    /// Local git checks (test flakes, `git+file` refs).
    GIT = "git", "KCORE_GIT";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_variables_are_unique_and_follow_the_pattern() {
        let mut names: Vec<_> = ALL.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "duplicate tool name");
        for tool in ALL {
            let expected = format!("KCORE_{}", tool.name.to_uppercase().replace('-', "_"));
            assert_eq!(tool.env_var, expected, "{tool:?}");
        }
    }

    /// docs/kcore-nix.md has a table of tools and variables; keep it true.
    #[test]
    fn the_documentation_lists_every_tool() {
        let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/kcore-nix.md");
        let doc = std::fs::read_to_string(doc_path).unwrap();
        for tool in ALL {
            let row = format!("| `{}` | `{}` |", tool.name, tool.env_var);
            assert!(doc.contains(&row), "docs/kcore-nix.md lacks the row {row}");
        }
    }

    #[test]
    fn missing_tool_error_names_the_package() {
        let tool = Tool {
            name: "kcore-no-such-tool",
            env_var: "KCORE_KCORE_NO_SUCH_TOOL",
        };
        let msg = tool.resolve(None).unwrap_err().to_string();
        assert!(msg.contains("KCORE_KCORE_NO_SUCH_TOOL=/absolute/path/to/kcore-no-such-tool"));
        assert!(msg.contains("install it from your distribution"), "{msg}");
        let msg = CRYPTSETUP
            .resolve(Some(Path::new("/nonexistent/cryptsetup")))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/nonexistent/cryptsetup"), "{msg}");
        assert!(msg.contains("package cryptsetup"), "{msg}");
    }
}
