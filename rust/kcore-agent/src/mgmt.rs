//! The disko management mode, read from its file on every request (so flipping the file
//! takes effect without restarting the agent). Anything but the two known values is
//! treated as the safe `installer-only` and logged, so a typo can never widen what the
//! agent may do to disks.

use std::path::Path;

/// What the agent may do to disks after installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagementMode {
    /// Only the installer touches disks: every apply is refused.
    InstallerOnly,
    /// The controller/operator may make additive changes (new disks, new partitions in
    /// free space).
    ControllerManaged,
}

impl ManagementMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ManagementMode::InstallerOnly => "installer-only",
            ManagementMode::ControllerManaged => "controller-managed",
        }
    }

    /// Read the mode file. A missing/unreadable file or an unknown value means
    /// `installer-only`; the reason is logged.
    pub fn read(path: &Path) -> ManagementMode {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse_logged(text.trim(), path),
            Err(err) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %err,
                    "cannot read the disko management mode file; treating as installer-only"
                );
                ManagementMode::InstallerOnly
            }
        }
    }

    fn parse_logged(value: &str, path: &Path) -> ManagementMode {
        match value {
            "installer-only" => ManagementMode::InstallerOnly,
            "controller-managed" => ManagementMode::ControllerManaged,
            other => {
                tracing::warn!(
                    path = %path.display(),
                    value = other,
                    "unknown disko management mode (expected installer-only or controller-managed); treating as installer-only"
                );
                ManagementMode::InstallerOnly
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_unknown_values_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mode");
        assert_eq!(ManagementMode::read(&file), ManagementMode::InstallerOnly);
        std::fs::write(&file, "controller-managed\n").unwrap();
        assert_eq!(
            ManagementMode::read(&file),
            ManagementMode::ControllerManaged
        );
        std::fs::write(&file, "installer-only").unwrap();
        assert_eq!(ManagementMode::read(&file), ManagementMode::InstallerOnly);
        std::fs::write(&file, "Controller-Managed").unwrap();
        assert_eq!(ManagementMode::read(&file), ManagementMode::InstallerOnly);
    }
}
