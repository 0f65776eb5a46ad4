//! `/etc/kcore/node-agent.yaml`: the agent's configuration, exactly as
//! `docs/configuration.md` specifies it (the keys the NixOS module writes). Every struct
//! denies unknown keys so a misspelt key is a start-up error instead of a silent default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the agent reads its configuration unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/kcore/node-agent.yaml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not YAML, or not this file's shape: file, line and column, key, what is wrong.
    #[error("{0} (the keys are listed in docs/configuration.md; unknown keys are an error)")]
    Parse(kcore_api::yaml::YamlError),
    #[error("{}{}: field `{field}`: {message}", path.display(), kcore_api::yaml::line_suffix(*line))]
    Invalid {
        path: PathBuf,
        /// The line of `field` in the file, when it is there.
        line: Option<usize>,
        field: &'static str,
        message: String,
    },
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] with the line of its field in `text`.
    fn located(self, text: &str) -> ConfigError {
        match self {
            ConfigError::Invalid {
                path,
                line: None,
                field,
                message,
            } => ConfigError::Invalid {
                line: kcore_api::yaml::locate(text, 0, field).map(|p| p.0),
                path,
                field,
                message,
            },
            other => other,
        }
    }
}

/// How the agent serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Installed node: mTLS with the cluster CA, every route.
    #[default]
    Managed,
    /// Live ISO: self-signed certificate, inventory and install routes only.
    Install,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    pub node_id: String,
    #[serde(default = "default_dc_id")]
    pub dc_id: String,
    /// Defaults to the system hostname.
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub controllers: Vec<String>,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_seconds: u64,
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub disko: DiskoConfig,
    #[serde(default)]
    pub nix: NixConfig,
    #[serde(default)]
    pub evaluation: EvaluationConfig,
    #[serde(default)]
    pub binaries: Binaries,
    /// How the node runs its VMs' guests (docs/vms.md, "On the node").
    #[serde(default)]
    pub vm: VmConfig,
    /// Connection limits and timeouts; absent keys keep the defaults in
    /// docs/agent.md ("Connections and limits").
    #[serde(default)]
    pub connections: kcore_net::ConnectionLimits,
    /// Install mode: what `POST /v1/install/run` installs and where ([`crate::install`]).
    #[serde(default)]
    pub install: crate::install::config::InstallConfig,
}

/// TLS material, as file paths only (never inline secrets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Storage backend: the one a disk spec names, so config and disk plans share it.
pub use kcore_disko::spec::Backend;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default)]
    pub backend: Backend,
    #[serde(default = "default_volume_dir")]
    pub filesystem_volume_dir: PathBuf,
    #[serde(default)]
    pub lvm: LvmConfig,
    #[serde(default)]
    pub zfs: ZfsConfig,
    #[serde(default = "default_image_cache_dir")]
    pub image_cache_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: Backend::default(),
            filesystem_volume_dir: default_volume_dir(),
            lvm: LvmConfig::default(),
            zfs: ZfsConfig::default(),
            image_cache_dir: default_image_cache_dir(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LvmConfig {
    #[serde(default = "default_vg_name")]
    pub vg_name: String,
    #[serde(default = "default_lv_prefix")]
    pub lv_prefix: String,
    /// The thin pool VM volumes are made in; absent: the VG's only thin pool, or linear
    /// volumes when the VG has none.
    #[serde(default)]
    pub thin_pool: Option<String>,
}

impl Default for LvmConfig {
    fn default() -> Self {
        Self {
            vg_name: default_vg_name(),
            lv_prefix: default_lv_prefix(),
            thin_pool: None,
        }
    }
}

/// How a guest's CPU runs (`vm.accelerator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceleratorChoice {
    /// KVM when `/dev/kvm` opens read-write, TCG otherwise.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// `vm`: where the agent keeps what it knows of its VMs and how it runs their guests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmConfig {
    /// The agent's records of the volumes it created (`<name>.json`), and QMP sockets.
    #[serde(default = "default_vm_state_dir")]
    pub state_dir: PathBuf,
    /// Each guest's serial console, `<name>.log`.
    #[serde(default = "default_vm_log_dir")]
    pub log_dir: PathBuf,
    #[serde(default)]
    pub accelerator: AcceleratorChoice,
    /// How long a guest has to power off after the ACPI request before it is killed.
    #[serde(default = "default_vm_stop_timeout")]
    pub stop_timeout_seconds: u64,
    /// The largest image a download may bring into `storage.imageCacheDir`.
    #[serde(default = "default_image_max_bytes")]
    pub image_max_bytes: u64,
    /// How long one image download may take.
    #[serde(default = "default_download_timeout")]
    pub download_timeout_seconds: u64,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            state_dir: default_vm_state_dir(),
            log_dir: default_vm_log_dir(),
            accelerator: AcceleratorChoice::default(),
            stop_timeout_seconds: default_vm_stop_timeout(),
            image_max_bytes: default_image_max_bytes(),
            download_timeout_seconds: default_download_timeout(),
        }
    }
}

fn default_vm_state_dir() -> PathBuf {
    "/var/lib/kcore/vms".into()
}
fn default_vm_log_dir() -> PathBuf {
    "/var/log/kcore/vms".into()
}
fn default_vm_stop_timeout() -> u64 {
    120
}
fn default_image_max_bytes() -> u64 {
    64 << 30
}
fn default_download_timeout() -> u64 {
    3600
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZfsConfig {
    #[serde(default = "default_pool_name")]
    pub pool_name: String,
    #[serde(default = "default_dataset_prefix")]
    pub dataset_prefix: String,
}

impl Default for ZfsConfig {
    fn default() -> Self {
        Self {
            pool_name: default_pool_name(),
            dataset_prefix: default_dataset_prefix(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskoConfig {
    /// Read on every request: `installer-only` or `controller-managed`.
    #[serde(default = "default_mode_file")]
    pub management_mode_file: PathBuf,
    /// Applied fragments (+ `.bak`).
    #[serde(default = "default_disko_state_dir")]
    pub state_dir: PathBuf,
    /// Enables deep validation together with `nixpkgsLib`.
    #[serde(default)]
    pub disko_source: Option<PathBuf>,
    #[serde(default)]
    pub nixpkgs_lib: Option<PathBuf>,
}

impl Default for DiskoConfig {
    fn default() -> Self {
        Self {
            management_mode_file: default_mode_file(),
            state_dir: default_disko_state_dir(),
            disko_source: None,
            nixpkgs_lib: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NixConfig {
    /// Where apply-nix writes (+ `.bak`).
    #[serde(default = "default_nix_config_path")]
    pub config_path: PathBuf,
}

impl Default for NixConfig {
    fn default() -> Self {
        Self {
            config_path: default_nix_config_path(),
        }
    }
}

/// Bounds on the Nix evaluations of submitted text: every apply-disko request (dry run or
/// not) and every apply-nix validation. See docs/validation.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvaluationConfig {
    /// Address space of one `nix-instantiate`, in MiB (`RLIMIT_AS`).
    #[serde(default = "default_eval_memory", rename = "memoryLimitMiB")]
    pub memory_limit_mib: u64,
    /// CPU time of one `nix-instantiate`, in seconds (`RLIMIT_CPU`).
    #[serde(default = "default_eval_cpu")]
    pub cpu_limit_seconds: u64,
    /// Requests evaluating at once; one more is refused with `EVAL_BUSY`.
    #[serde(default = "default_eval_concurrency")]
    pub max_concurrent: usize,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        Self {
            memory_limit_mib: default_eval_memory(),
            cpu_limit_seconds: default_eval_cpu(),
            max_concurrent: default_eval_concurrency(),
        }
    }
}

/// Below this `nix-instantiate` 2.8 cannot even load its libraries (it starts from about
/// 96 MiB of address space; a level-3 disko evaluation runs in 128 MiB).
pub const MIN_EVAL_MEMORY_MIB: u64 = 128;

/// Explicit program paths, keyed by program name (`nix-instantiate`, `systemd-run`, `lvm`,
/// ... any of kcore-nix's tools, plus `ip`); a program not listed is found through its
/// `KCORE_*` variable, then PATH. One map, so a new program needs no new field. The
/// camelCase keys of earlier versions (`nixInstantiate`, `systemdRun`, ...) are read as
/// the program they name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Binaries(BTreeMap<String, PathBuf>);

impl Binaries {
    /// The configured path of `program`, by its name as kcore-nix's `Tool` spells it.
    pub fn get(&self, program: &str) -> Option<&Path> {
        self.0.get(program).map(PathBuf::as_path)
    }

    /// Every program name the agent may be given a path for.
    pub fn known_programs() -> impl Iterator<Item = &'static str> {
        kcore_nix::programs::ALL
            .iter()
            .map(|t| t.name)
            .chain(std::iter::once(crate::tools::IP.name))
    }

    fn program_name(key: &str) -> String {
        // nixInstantiate -> nix-instantiate (the earlier field names).
        let mut name = String::with_capacity(key.len() + 2);
        for c in key.chars() {
            if c.is_ascii_uppercase() {
                name.push('-');
                name.push(c.to_ascii_lowercase());
            } else {
                name.push(c);
            }
        }
        name
    }
}

impl<'de> Deserialize<'de> for Binaries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, PathBuf>::deserialize(deserializer)?;
        let mut map = BTreeMap::new();
        for (key, path) in raw {
            let name = Binaries::program_name(&key);
            if !Binaries::known_programs().any(|known| known == name) {
                return Err(serde::de::Error::custom(format!(
                    "binaries.{key}: no program kcore runs is called {name:?}; use one of {}",
                    Binaries::known_programs().collect::<Vec<_>>().join(", ")
                )));
            }
            map.insert(name, path);
        }
        Ok(Binaries(map))
    }
}

fn default_dc_id() -> String {
    "default".into()
}
fn default_listen() -> String {
    "0.0.0.0:9091".into()
}
fn default_heartbeat() -> u64 {
    15
}
fn default_volume_dir() -> PathBuf {
    "/var/lib/kcore/volumes".into()
}
fn default_image_cache_dir() -> PathBuf {
    "/var/lib/kcore/images".into()
}
fn default_vg_name() -> String {
    "vg_kcore".into()
}
fn default_lv_prefix() -> String {
    "kcore-".into()
}
fn default_pool_name() -> String {
    "tank0".into()
}
fn default_dataset_prefix() -> String {
    "kcore".into()
}
fn default_mode_file() -> PathBuf {
    "/var/lib/kcore/disko-management-mode".into()
}
fn default_disko_state_dir() -> PathBuf {
    "/var/lib/kcore/disko".into()
}
fn default_nix_config_path() -> PathBuf {
    "/etc/nixos/kcore-node.nix".into()
}
fn default_eval_memory() -> u64 {
    kcore_nix::restricted::EvalBounds::DEFAULT_MEMORY_MIB
}
fn default_eval_cpu() -> u64 {
    kcore_nix::restricted::EvalBounds::DEFAULT_CPU_SECONDS
}
fn default_eval_concurrency() -> usize {
    2
}

impl AgentConfig {
    /// Read and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = kcore_api::yaml::text(&path.display().to_string(), &bytes)
            .map_err(ConfigError::Parse)?;
        Self::parse(text, path)
    }

    /// Parse and validate YAML text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: AgentConfig = kcore_api::yaml::from_str(&path.display().to_string(), text)
            .map_err(ConfigError::Parse)?;
        config.validate(path).map_err(|e| e.located(text))?;
        // The renderer's rule (kcore-api): `kcore/` is the guide's spelling of `kcore`, so
        // the agent reports and uses the prefix without the trailing '/'.
        config.storage.zfs.dataset_prefix = kcore_api::validate::zfs_dataset_prefix(
            "storage.zfs.datasetPrefix",
            &config.storage.zfs.dataset_prefix,
        )
        .map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: kcore_api::yaml::locate(text, 0, "storage.zfs.datasetPrefix").map(|p| p.0),
            field: "storage.zfs.datasetPrefix",
            message: e.detail(),
        })?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: None,
            field,
            message,
        };
        kcore_api::validate::node_id("nodeId", &self.node_id)
            .map_err(|e| invalid("nodeId", e.detail()))?;
        kcore_api::validate::dc_id("dcId", &self.dc_id).map_err(|e| invalid("dcId", e.detail()))?;
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "listen",
                format!(
                    "{:?} is not an address: use IP:PORT such as 0.0.0.0:9091",
                    self.listen
                ),
            ));
        }
        if self.mode == Mode::Managed && self.tls.is_none() {
            return Err(invalid(
                "tls",
                "required in managed mode: set tls.caFile, tls.certFile and tls.keyFile (or mode: install on the live ISO)".into(),
            ));
        }
        if self.heartbeat_interval_seconds == 0 {
            return Err(invalid(
                "heartbeatIntervalSeconds",
                "must be at least 1".into(),
            ));
        }
        let eval = &self.evaluation;
        if eval.memory_limit_mib < MIN_EVAL_MEMORY_MIB {
            return Err(invalid(
                "evaluation.memoryLimitMiB",
                format!(
                    "{} MiB is too little for nix-instantiate to start: use at least {MIN_EVAL_MEMORY_MIB} (the default is {})",
                    eval.memory_limit_mib,
                    default_eval_memory()
                ),
            ));
        }
        if eval.cpu_limit_seconds == 0 {
            return Err(invalid(
                "evaluation.cpuLimitSeconds",
                format!("must be at least 1 (the default is {})", default_eval_cpu()),
            ));
        }
        if eval.max_concurrent == 0 {
            return Err(invalid(
                "evaluation.maxConcurrent",
                format!(
                    "must be at least 1, or no layout could ever be evaluated (the default is {})",
                    default_eval_concurrency()
                ),
            ));
        }
        if self.disko.disko_source.is_some() != self.disko.nixpkgs_lib.is_some() {
            return Err(invalid(
                "disko.nixpkgsLib",
                "diskoSource and nixpkgsLib go together: set both (deep validation) or neither"
                    .into(),
            ));
        }
        kcore_api::validate::lvm_vg_name("storage.lvm.vgName", &self.storage.lvm.vg_name)
            .map_err(|e| invalid("storage.lvm.vgName", e.detail()))?;
        kcore_api::validate::lvm_lv_prefix("storage.lvm.lvPrefix", &self.storage.lvm.lv_prefix)
            .map_err(|e| invalid("storage.lvm.lvPrefix", e.detail()))?;
        if let Some(pool) = &self.storage.lvm.thin_pool {
            kcore_api::validate::lvm_lv_name("storage.lvm.thinPool", pool)
                .map_err(|e| invalid("storage.lvm.thinPool", e.detail()))?;
        }
        kcore_api::validate::zfs_pool_name("storage.zfs.poolName", &self.storage.zfs.pool_name)
            .map_err(|e| invalid("storage.zfs.poolName", e.detail()))?;
        for (field, value) in [
            ("vm.stopTimeoutSeconds", self.vm.stop_timeout_seconds),
            ("vm.imageMaxBytes", self.vm.image_max_bytes),
            (
                "vm.downloadTimeoutSeconds",
                self.vm.download_timeout_seconds,
            ),
        ] {
            if value == 0 {
                return Err(invalid(
                    field,
                    "must be at least 1 (docs/configuration.md has the default)".into(),
                ));
            }
        }
        self.connections
            .validate()
            .map_err(|e| invalid("connections", e.to_string()))?;
        self.install
            .validate()
            .map_err(|(field, message)| invalid(field, message))?;
        Ok(())
    }

    /// The configured hostname, or the system's.
    pub fn effective_hostname(&self) -> String {
        if let Some(name) = &self.hostname {
            return name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| self.node_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
nodeId: node-1
dcId: DC1
hostname: hv1
labels: { rack: r1 }
listen: "0.0.0.0:9091"
mode: managed
controllers: ["ctl1:9090", "ctl2:9090"]
heartbeatIntervalSeconds: 15
tls:
  caFile: /var/lib/kcore/pki/ca.crt
  certFile: /var/lib/kcore/pki/node.crt
  keyFile: /var/lib/kcore/pki/node.key
storage:
  backend: lvm
  filesystemVolumeDir: /var/lib/kcore/volumes
  lvm: { vgName: vg_kcore, lvPrefix: kcore- }
  zfs: { poolName: tank0, datasetPrefix: kcore }
  imageCacheDir: /var/lib/kcore/images
disko:
  managementModeFile: /var/lib/kcore/disko-management-mode
  stateDir: /var/lib/kcore/disko
  diskoSource: /nix/store/x-source
  nixpkgsLib: /nix/store/y-source/lib
nix:
  configPath: /etc/nixos/kcore-node.nix
evaluation:
  memoryLimitMiB: 1024
  cpuLimitSeconds: 60
  maxConcurrent: 2
binaries:
  nixInstantiate: /run/current-system/sw/bin/nix-instantiate
  nixosRebuild: /run/current-system/sw/bin/nixos-rebuild
  systemdRun: /run/current-system/sw/bin/systemd-run
  systemctl: /run/current-system/sw/bin/systemctl
  disko: /run/current-system/sw/bin/disko
  lsblk: /run/current-system/sw/bin/lsblk
"#;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(text, Path::new("node-agent.yaml"))
    }

    #[test]
    fn binaries_are_keyed_by_program_name_and_unknown_ones_are_named() {
        let text = format!(
            "{}binaries:\n  nix-instantiate: /a/nix-instantiate\n  systemdRun: /b/systemd-run\n  lvm: /c/lvm\n",
            "nodeId: n1\ncontrollers: [\"127.0.0.1:9090\"]\ntls: { caFile: /a, certFile: /b, keyFile: /c }\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.binaries.get("nix-instantiate"),
            Some(Path::new("/a/nix-instantiate"))
        );
        assert_eq!(
            c.binaries.get("systemd-run"),
            Some(Path::new("/b/systemd-run"))
        );
        assert_eq!(c.binaries.get("lvm"), Some(Path::new("/c/lvm")));
        let bad = text.replace("lvm: /c/lvm", "lvmm: /c/lvm");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("binaries.lvmm") && err.contains("nix-instantiate"),
            "{err}"
        );
    }

    #[test]
    fn the_documented_example_parses() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.node_id, "node-1");
        assert_eq!(c.dc_id, "DC1");
        assert_eq!(c.labels["rack"], "r1");
        assert_eq!(c.storage.backend, Backend::Lvm);
        assert_eq!(c.controllers.len(), 2);
        assert_eq!(
            c.binaries.get("systemd-run"),
            Some(Path::new("/run/current-system/sw/bin/systemd-run"))
        );
        assert_eq!(
            c.binaries.get("systemctl"),
            Some(Path::new("/run/current-system/sw/bin/systemctl"))
        );
    }

    #[test]
    fn defaults_fill_in_for_a_minimal_install_mode_file() {
        let c = parse("nodeId: live\nmode: install\n").unwrap();
        assert_eq!(c.dc_id, "default");
        assert_eq!(c.listen, "0.0.0.0:9091");
        assert_eq!(c.heartbeat_interval_seconds, 15);
        assert_eq!(c.storage.lvm.vg_name, "vg_kcore");
        assert_eq!(c.storage.zfs.pool_name, "tank0");
        assert_eq!(
            c.disko.management_mode_file,
            Path::new("/var/lib/kcore/disko-management-mode")
        );
        assert_eq!(c.nix.config_path, Path::new("/etc/nixos/kcore-node.nix"));
        assert_eq!(c.evaluation, EvaluationConfig::default());
        assert_eq!(
            (
                c.evaluation.memory_limit_mib,
                c.evaluation.cpu_limit_seconds,
                c.evaluation.max_concurrent
            ),
            (1024, 60, 2)
        );
    }

    #[test]
    fn unknown_keys_are_errors_at_every_level() {
        for (text, key) in [
            ("nodeId: a\nmode: install\nlisten_addr: x\n", "listen_addr"),
            (
                "nodeId: a\nmode: install\nstorage: { backnd: lvm }\n",
                "backnd",
            ),
            (
                "nodeId: a\nmode: install\ndisko: { stateDirectory: /x }\n",
                "stateDirectory",
            ),
            (
                "nodeId: a\nmode: install\nbinaries: { ipp: /bin/ip }\n",
                "binaries.ipp",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn zfs_dataset_prefix_takes_the_renderers_rule() {
        let text = |p: &str| {
            format!("nodeId: n\nmode: install\nstorage: {{ zfs: {{ datasetPrefix: {p:?} }} }}\n")
        };
        assert_eq!(
            parse(&text("kcore/")).unwrap().storage.zfs.dataset_prefix,
            "kcore"
        );
        let err = parse(&text("kcore//")).unwrap_err().to_string();
        assert!(
            err.contains("storage.zfs.datasetPrefix") && err.contains("empty component"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = parse("nodeId: Node_1\nmode: install\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nodeId"), "{err}");
        let err = parse("nodeId: n\n").unwrap_err().to_string();
        assert!(err.contains("`tls`"), "{err}");
        let err = parse("nodeId: n\nmode: install\nlisten: nowhere\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
        let err = parse("nodeId: n\nmode: install\ndisko: { diskoSource: /x }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nixpkgsLib"), "{err}");
        let err = parse("nodeId: n\nmode: weird\n").unwrap_err().to_string();
        assert!(err.contains("weird"), "{err}");
        for (text, field) in [
            (
                "evaluation: { memoryLimitMiB: 10 }",
                "evaluation.memoryLimitMiB",
            ),
            (
                "evaluation: { cpuLimitSeconds: 0 }",
                "evaluation.cpuLimitSeconds",
            ),
            (
                "evaluation: { maxConcurrent: 0 }",
                "evaluation.maxConcurrent",
            ),
        ] {
            let err = parse(&format!("nodeId: n\nmode: install\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("field `{field}`")), "{err}");
        }
    }

    #[test]
    fn vm_settings_have_defaults_and_bad_values_name_their_field() {
        let c = parse("nodeId: n\nmode: install\n").unwrap();
        assert_eq!(c.vm, VmConfig::default());
        assert_eq!(c.vm.state_dir, Path::new("/var/lib/kcore/vms"));
        assert_eq!(c.vm.accelerator, AcceleratorChoice::Auto);
        assert_eq!(c.storage.lvm.thin_pool, None);
        let c = parse(
            "nodeId: n\nmode: install\nvm: { accelerator: tcg, stopTimeoutSeconds: 5 }\nstorage: { lvm: { thinPool: pool } }\n",
        )
        .unwrap();
        assert_eq!(c.vm.accelerator, AcceleratorChoice::Tcg);
        assert_eq!(c.vm.stop_timeout_seconds, 5);
        assert_eq!(c.storage.lvm.thin_pool.as_deref(), Some("pool"));
        for (text, field) in [
            ("vm: { stopTimeoutSeconds: 0 }", "vm.stopTimeoutSeconds"),
            ("vm: { imageMaxBytes: 0 }", "vm.imageMaxBytes"),
            (
                "storage: { lvm: { thinPool: \"a b\" } }",
                "storage.lvm.thinPool",
            ),
            (
                "storage: { lvm: { lvPrefix: \"-x\" } }",
                "storage.lvm.lvPrefix",
            ),
            (
                "storage: { lvm: { vgName: \"vg/0\" } }",
                "storage.lvm.vgName",
            ),
            (
                "storage: { zfs: { poolName: \"1pool\" } }",
                "storage.zfs.poolName",
            ),
        ] {
            let err = parse(&format!("nodeId: n\nmode: install\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("field `{field}`")), "{text}: {err}");
        }
        let err = parse("nodeId: n\nmode: install\nvm: { accelerator: hvf }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hvf"), "{err}");
    }

    #[test]
    fn connection_limits_are_optional_and_zero_is_refused() {
        let c = parse("nodeId: n\nmode: install\n").unwrap();
        assert_eq!(c.connections, kcore_net::ConnectionLimits::default());
        let c = parse(
            "nodeId: n\nmode: install\nconnections: { maxConnectionsPerPeer: 8, bodyTimeoutSeconds: 5 }\n",
        )
        .unwrap();
        assert_eq!(c.connections.max_connections_per_peer, Some(8));
        assert_eq!(c.connections.body_timeout_seconds, Some(5));
        let err = parse("nodeId: n\nmode: install\nconnections: { idleTimeoutSeconds: 0 }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("connections.idleTimeoutSeconds"), "{err}");
        let err = parse("nodeId: n\nmode: install\nconnections: { maxPerPeer: 3 }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("maxPerPeer"), "{err}");
    }

    #[test]
    fn node_id_and_dc_id_rules() {
        for id in ["node-1", "1", &"a".repeat(63)] {
            parse(&format!("nodeId: {id}\nmode: install\n")).unwrap();
        }
        for (id, words) in [
            ("\"\"", "is empty"),
            ("-a", "starts or ends with '-'"),
            ("a-", "starts or ends with '-'"),
            ("Node1", "upper-case 'N'"),
            (&"a".repeat(64), "more than the 63 allowed"),
        ] {
            let err = parse(&format!("nodeId: {id}\nmode: install\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("field `nodeId`") && err.contains(words),
                "{err}"
            );
        }
        parse("nodeId: n\ndcId: DC2\nmode: install\n").unwrap();
        let err = parse("nodeId: n\ndcId: DC_2\nmode: install\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("field `dcId`") && err.contains("contains '_'"),
            "{err}"
        );
    }

    // Issue 15: errors give the line and column and speak YAML, not Rust.
    #[test]
    fn errors_name_the_line_and_speak_yaml() {
        let err = parse("nodeId: n1\nmode: managd\n").unwrap_err().to_string();
        assert!(
            err.starts_with(
                "node-agent.yaml:2:7: mode: unknown value `managd`: use managed | install"
            ),
            "{err}"
        );
        assert!(
            !err.contains("YAML tag") && !err.contains("variant"),
            "{err}"
        );
        let err = parse("- nodeId\n").unwrap_err().to_string();
        assert!(err.contains("expected a mapping of keys"), "{err}");
        assert!(!err.contains("AgentConfig"), "{err}");
        let err = parse("nodeId: n1\nlisten: a\nnodeId: n2\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("node-agent.yaml:3:"), "{err}");
        assert!(err.contains("given twice"), "{err}");
        // A value that decodes but is refused: the line of its key.
        let err = parse("listen: 0.0.0.0:9091\nnodeId: Bad_Id\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("node-agent.yaml:2: field `nodeId`"),
            "{err}"
        );
    }
}
