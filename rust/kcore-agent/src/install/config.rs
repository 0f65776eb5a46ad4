//! The agent configuration's `install:` section (install mode on the live ISO): where the
//! new system is mounted, where the install keeps its keys (a tmpfs), which prebuilt
//! system closure each storage backend installs (one set unlocking the root with the TPM2,
//! one reading the key-file partition of a key device), and the TPM2 PCR policy.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Backend;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallConfig {
    /// disko's `--root-mountpoint` and nixos-install's `--root`.
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// The install key, the node and controller keys until they are written to the new
    /// system, the recovery key; a tmpfs on the ISO, so nothing outlives the live system.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The system closure (store path) installed for each backend in TPM2 mode.
    #[serde(default)]
    pub systems: InstallSystems,
    /// The system closure installed for each backend in key-file mode: its initrd unlocks
    /// the root with `/dev/disk/by-partlabel/kcore-luks-key` instead of waiting for a TPM2
    /// token the node does not have.
    #[serde(default)]
    pub keyfile_systems: InstallSystems,
    /// The PCRs the TPM2 slot is sealed to (docs/storage.md: firmware, option ROMs,
    /// Secure Boot state; the same on the ISO and the installed system).
    #[serde(default = "default_pcrs")]
    pub tpm2_pcrs: Vec<u32>,
}

impl Default for InstallConfig {
    fn default() -> Self {
        Self {
            root: default_root(),
            state_dir: default_state_dir(),
            systems: InstallSystems::default(),
            keyfile_systems: InstallSystems::default(),
            tpm2_pcrs: default_pcrs(),
        }
    }
}

/// `install.systems` / `install.keyfileSystems`: one prebuilt closure per backend; a
/// backend without one cannot be installed from this ISO in that LUKS mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallSystems {
    #[serde(default)]
    pub filesystem: Option<PathBuf>,
    #[serde(default)]
    pub lvm: Option<PathBuf>,
    #[serde(default)]
    pub zfs: Option<PathBuf>,
}

impl InstallSystems {
    pub fn get(&self, backend: Backend) -> Option<&Path> {
        match backend {
            Backend::Filesystem => self.filesystem.as_deref(),
            Backend::Lvm => self.lvm.as_deref(),
            Backend::Zfs => self.zfs.as_deref(),
        }
    }
}

fn default_root() -> PathBuf {
    "/mnt".into()
}
fn default_state_dir() -> PathBuf {
    "/run/kcore-install".into()
}
fn default_pcrs() -> Vec<u32> {
    vec![0, 2, 7]
}

impl InstallConfig {
    /// The first problem: (field, message naming the fix).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (field, path) in [
            ("install.root", &self.root),
            ("install.stateDir", &self.state_dir),
        ] {
            if !path.is_absolute() || path == Path::new("/") {
                return Err((
                    field,
                    format!(
                        "{} must be an absolute directory other than /",
                        path.display()
                    ),
                ));
            }
        }
        if self.tpm2_pcrs.is_empty() {
            return Err((
                "install.tpm2Pcrs",
                "an empty PCR list would seal to nothing: list PCRs such as [0, 2, 7]".into(),
            ));
        }
        if let Some(p) = self.tpm2_pcrs.iter().find(|p| **p > 23) {
            return Err((
                "install.tpm2Pcrs",
                format!("PCR {p} does not exist: a TPM2 has PCRs 0 to 23"),
            ));
        }
        for (field, path) in [
            ("install.systems.filesystem", &self.systems.filesystem),
            ("install.systems.lvm", &self.systems.lvm),
            ("install.systems.zfs", &self.systems.zfs),
            (
                "install.keyfileSystems.filesystem",
                &self.keyfile_systems.filesystem,
            ),
            ("install.keyfileSystems.lvm", &self.keyfile_systems.lvm),
            ("install.keyfileSystems.zfs", &self.keyfile_systems.zfs),
        ] {
            if let Some(p) = path {
                if !p.is_absolute() {
                    return Err((
                        field,
                        format!("{} is not an absolute store path", p.display()),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::AgentConfig;
    use std::path::Path;

    fn parse(text: &str) -> Result<AgentConfig, String> {
        AgentConfig::parse(text, Path::new("node-agent.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn install_section_defaults_and_refusals() {
        let c = parse("nodeId: n\nmode: install\n").unwrap();
        assert_eq!(c.install.root, Path::new("/mnt"));
        assert_eq!(c.install.state_dir, Path::new("/run/kcore-install"));
        assert_eq!(c.install.tpm2_pcrs, [0, 2, 7]);
        assert_eq!(c.install.systems.get(crate::config::Backend::Lvm), None);
        assert_eq!(
            c.install.keyfile_systems.get(crate::config::Backend::Lvm),
            None
        );
        let c = parse(
            "nodeId: n\nmode: install\ninstall: { root: /target, systems: { lvm: /nix/store/a-lvm }, keyfileSystems: { lvm: /nix/store/b-lvm-keyfile } }\n",
        )
        .unwrap();
        assert_eq!(
            c.install.keyfile_systems.get(crate::config::Backend::Lvm),
            Some(Path::new("/nix/store/b-lvm-keyfile"))
        );
        assert_eq!(c.install.root, Path::new("/target"));
        assert_eq!(
            c.install.systems.get(crate::config::Backend::Lvm),
            Some(Path::new("/nix/store/a-lvm"))
        );
        for (text, field) in [
            ("install: { root: / }", "install.root"),
            ("install: { stateDir: run }", "install.stateDir"),
            ("install: { tpm2Pcrs: [] }", "install.tpm2Pcrs"),
            ("install: { tpm2Pcrs: [0, 24] }", "install.tpm2Pcrs"),
            (
                "install: { systems: { zfs: result } }",
                "install.systems.zfs",
            ),
            (
                "install: { keyfileSystems: { lvm: result } }",
                "install.keyfileSystems.lvm",
            ),
        ] {
            let err = parse(&format!("nodeId: n\nmode: install\n{text}\n")).unwrap_err();
            assert!(err.contains(&format!("field `{field}`")), "{text}: {err}");
        }
        let err =
            parse("nodeId: n\nmode: install\ninstall: { systems: { btrfs: /x } }\n").unwrap_err();
        assert!(err.contains("btrfs"), "{err}");
    }
}
