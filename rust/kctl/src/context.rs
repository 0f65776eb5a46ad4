//! The kctl configuration file (`~/.kcore/config`, or `--kctl-config` / `KCORE_CONFIG`):
//! named contexts, each a cluster with its controllers and the operator's credential
//! files, and which one is current.
//!
//! Files a context refers to live in a directory named after the context next to the
//! config file (`~/.kcore/<context>/`), so a temporary `HOME` or `--kctl-config` keeps
//! everything in one place; so do the LUKS recovery keys `kctl node install` brings back
//! (`<context>/recovery/<nodeId>.luks-recovery-key.txt`, [`store_recovery_key`]).

use kcore_api::ErrorCode;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::exit::Refused;
use crate::global::GlobalArgs;

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KctlConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

/// One cluster as seen from this operator's machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Context {
    pub name: String,
    /// The `<cluster>` in identities.
    pub cluster: String,
    /// Controllers as `HOST:PORT`, tried in order.
    pub controllers: Vec<String>,
    /// The cluster root CA certificate (trust anchor).
    pub ca_file: PathBuf,
    /// The root CA key (mode 0600); needed by `kctl rotate sub-ca`.
    pub ca_key_file: PathBuf,
    /// The operator's admin client certificate and key.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Where the config file is: the flag / `KCORE_CONFIG`, else `$HOME/.kcore/config`.
pub fn config_path(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    if let Some(path) = &global.config_file {
        return Ok(path.clone());
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            Refused::new(
                ErrorCode::NoHome,
                "HOME is not set: pass --kctl-config FILE or set KCORE_CONFIG",
            )
        })?;
    Ok(PathBuf::from(home).join(".kcore").join("config"))
}

/// The directory for a context's files, next to the config file.
pub fn context_dir(config_path: &Path, context: &str) -> PathBuf {
    config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(context)
}

impl KctlConfig {
    /// Reads the file; a missing file is an empty configuration.
    pub fn load(path: &Path) -> anyhow::Result<KctlConfig> {
        match std::fs::read(path) {
            // The file's line, column and key (kcore_api::yaml), under the name given.
            Ok(bytes) => kcore_api::yaml::from_slice(&path.display().to_string(), &bytes)
                .map_err(|e| anyhow::Error::new(e).context("not a valid kctl config")),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(KctlConfig::default()),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Reads the file for a command that needs a context: a missing file is an error
    /// that says so and how to make one (an empty configuration would only say "no
    /// current context", hiding a wrong `KCORE_CONFIG` or `--kctl-config`).
    pub fn load_existing(path: &Path) -> anyhow::Result<KctlConfig> {
        if !path.exists() {
            return Err(Refused::new(
                ErrorCode::NoConfig,
                format!(
                    "the kctl config file {} does not exist (it is --kctl-config, else \
                     KCORE_CONFIG, else ~/.kcore/config): make one with `kctl create cluster \
                     --controller HOST:9090 --context NAME`, or point --kctl-config / \
                     KCORE_CONFIG at an existing one",
                    path.display()
                ),
            )
            .into());
        }
        KctlConfig::load(path)
    }

    /// Writes the file atomically (mode 0600: it names credential files).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = serde_yaml_ng::to_string(self).context("cannot encode the kctl config")?;
        kcore_pki::write_atomically(path, text.as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// [`KctlConfig::save`] keeping the existing file's permission bits (an operator who
    /// made it 0400 or group-readable keeps that); 0600 for a new file.
    pub fn save_keeping_mode(&self, path: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o600);
        let text = serde_yaml_ng::to_string(self).context("cannot encode the kctl config")?;
        kcore_pki::write_atomically(path, text.as_bytes(), mode)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn find(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name)
    }

    /// Adds or replaces the context with the same name.
    pub fn upsert(&mut self, context: Context) {
        match self.contexts.iter_mut().find(|c| c.name == context.name) {
            Some(existing) => *existing = context,
            None => self.contexts.push(context),
        }
    }
}

/// The context a command uses: `--context`, else the current one.
pub fn resolve(global: &GlobalArgs) -> anyhow::Result<Context> {
    let path = config_path(global)?;
    let config = KctlConfig::load_existing(&path)?;
    let name = match (&global.context, &config.current_context) {
        (Some(name), _) => name.clone(),
        (None, Some(name)) => name.clone(),
        (None, None) => {
            return Err(Refused::new(
                ErrorCode::NoContext,
                format!(
                    "no current context in {}: run `kctl create cluster` or `kctl config use-context NAME`",
                    path.display()
                ),
            )
            .into());
        }
    };
    config.find(&name).cloned().ok_or_else(|| {
        let known: Vec<&str> = config.contexts.iter().map(|c| c.name.as_str()).collect();
        Refused::new(
            ErrorCode::UnknownContext,
            format!(
                "no context {name:?} in {} (known: {})",
                path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        )
        .into()
    })
}

/// Why the context's credentials do not make a TLS configuration, said once (the
/// `PkiError` already includes its cause) and, for a key that is not the certificate's,
/// naming both files.
pub fn credentials_error(ctx: &Context, err: kcore_pki::PkiError) -> anyhow::Error {
    // `Credentials::load` compares key and certificate before any TLS config is built.
    if matches!(&err, kcore_pki::PkiError::KeyMismatch { .. }) {
        return anyhow::anyhow!(
            "context {:?}: the admin key {} does not belong to the admin certificate {}: \
             point key-file and cert-file at a certificate and the key it was made with",
            ctx.name,
            ctx.key_file.display(),
            ctx.cert_file.display()
        );
    }
    anyhow::anyhow!(
        "context {:?}: the credentials (cert-file {}, key-file {}, ca-file {}) do not load: {err}",
        ctx.name,
        ctx.cert_file.display(),
        ctx.key_file.display(),
        ctx.ca_file.display()
    )
}

/// Where the recovery key of `node_id` is kept: `<context dir>/recovery/<nodeId>.luks-recovery-key.txt`.
pub fn recovery_key_path(context_dir: &Path, node_id: &str) -> PathBuf {
    context_dir
        .join("recovery")
        .join(format!("{node_id}.luks-recovery-key.txt"))
}

/// Writes the recovery key next to the context's credentials: the directory 0700 (also
/// when it exists: it holds nothing but keys), the file 0600, temp file + rename so a
/// crash never leaves half a key.
pub fn store_recovery_key(
    context_dir: &Path,
    key: &kcore_api::install::RecoveryKey,
) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let path = recovery_key_path(context_dir, &key.node_id);
    let dir = path.parent().unwrap_or(context_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} 0700", dir.display()))?;
    let text = format!("{}\n", key.recovery_key.trim());
    kcore_pki::write_atomically(&path, text.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        let mut config = KctlConfig::default();
        config.upsert(Context {
            name: "lab".into(),
            cluster: "lab".into(),
            controllers: vec!["127.0.0.1:9090".into()],
            ca_file: "a".into(),
            ca_key_file: "b".into(),
            cert_file: "c".into(),
            key_file: "d".into(),
        });
        config.current_context = Some("lab".into());
        config.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("current-context: lab"), "{text}");
        assert_eq!(KctlConfig::load(&path).unwrap(), config);
        std::fs::write(&path, format!("{text}bogus: 1\n")).unwrap();
        let err = format!("{:#}", KctlConfig::load(&path).unwrap_err());
        assert!(err.contains("bogus"), "{err}");
        assert_eq!(context_dir(&path, "lab"), dir.path().join("lab"));
    }

    #[test]
    fn the_recovery_key_is_stored_0600_in_a_0700_directory() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("lab");
        std::fs::create_dir_all(ctx.join("recovery")).unwrap();
        std::fs::set_permissions(ctx.join("recovery"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let key = kcore_api::install::RecoveryKey {
            node_id: "n1".into(),
            luks_device: "/dev/disk/by-id/x-part2".into(),
            recovery_key: "aaaa-bbbb\n".into(),
            path_on_node: "/etc/kcore/recovery/luks-recovery-key.txt".into(),
        };
        let path = store_recovery_key(&ctx, &key).unwrap();
        assert_eq!(path, ctx.join("recovery/n1.luks-recovery-key.txt"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "aaaa-bbbb\n");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&ctx.join("recovery")), 0o700);
        // A second install of the same id replaces the key; no temp file is left.
        let again = kcore_api::install::RecoveryKey {
            recovery_key: "cccc".into(),
            ..key
        };
        store_recovery_key(&ctx, &again).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "cccc\n");
        let names: Vec<_> = std::fs::read_dir(ctx.join("recovery"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
