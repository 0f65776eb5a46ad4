//! `controller.yaml`: the controller's configuration, exactly as `docs/configuration.md`
//! specifies it. Unknown keys are an error so a misspelt key never silently becomes a
//! default. The types serialise under the same camelCase names, so `kctl create cluster`
//! writes the file from this type instead of a hand-kept template.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole `controller.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerConfig {
    /// This controller's id (the `<id>` in its `kcore://<cluster>/controller/<id>` identity).
    pub controller_id: String,
    /// The `<cluster>` in every identity this controller accepts.
    pub cluster_name: String,
    #[serde(default = "default_dc_id")]
    pub dc_id: String,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// New nodes wait as `Pending` for `kctl node approve` instead of being admitted.
    #[serde(default)]
    pub require_manual_approval: bool,
    /// Other controllers (`HOST:PORT`). Stored for replication; see `docs/controller.md`.
    #[serde(default)]
    pub peers: Vec<String>,
    /// An approved node is `NotReady` after this long without a heartbeat.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_seconds: u64,
    #[serde(default = "default_database_path")]
    pub database_path: PathBuf,
    /// Replicated operations and heartbeats stamped further than this ahead of this
    /// controller's clock are refused and the peer is reported (see `docs/controller.md`).
    #[serde(default = "default_max_clock_skew")]
    pub max_clock_skew_seconds: u64,
    pub tls: ControllerTls,
    /// Connection limits and timeouts; absent keys keep the defaults in
    /// docs/controller.md ("Connections and limits").
    #[serde(default)]
    pub connections: kcore_net::ConnectionLimits,
    /// `HOST:PORT` other controllers dial to reach this one, recorded in its `Controller`
    /// record (issue 13); unset: the address it listens on.
    #[serde(default)]
    pub advertise_address: Option<String>,
    /// How long replicated operations and tombstones are kept (docs/controller.md,
    /// "Compaction and snapshots").
    #[serde(default)]
    pub compaction: CompactionConfig,
}

/// `compaction:` in `controller.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompactionConfig {
    /// How often operations every known controller holds are removed.
    #[serde(default = "default_compaction_interval")]
    pub interval_seconds: u64,
    /// Operations a known controller has not pulled yet are kept this long; a controller
    /// away longer catches up from a snapshot.
    #[serde(default = "default_week")]
    pub retention_seconds: u64,
    /// A tombstone (a deleted field) stays in the merged state at least this long, and
    /// until its operation is compacted.
    #[serde(default = "default_week")]
    pub tombstone_lifetime_seconds: u64,
    /// Rows per page when this controller fetches a peer's snapshot, so no answer
    /// grows with the cluster.
    #[serde(default = "default_snapshot_page_rows")]
    pub snapshot_page_rows: usize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            interval_seconds: default_compaction_interval(),
            retention_seconds: default_week(),
            tombstone_lifetime_seconds: default_week(),
            snapshot_page_rows: default_snapshot_page_rows(),
        }
    }
}

fn default_snapshot_page_rows() -> usize {
    5000
}

fn default_compaction_interval() -> u64 {
    60
}

fn default_week() -> u64 {
    7 * 24 * 3600
}

/// Certificate files. Paths only: secrets never appear inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerTls {
    /// Root CA (and optionally sub-CAs) trusted for client certificates.
    pub ca_file: PathBuf,
    /// This controller's serving certificate chain (leaf, then its sub-CA).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The sub-CA that signs node CSRs; replaced by `kctl rotate sub-ca`.
    pub sub_ca_cert_file: PathBuf,
    pub sub_ca_key_file: PathBuf,
}

fn default_dc_id() -> String {
    "default".to_string()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9090))
}

fn default_heartbeat_timeout() -> u64 {
    45
}

fn default_max_clock_skew() -> u64 {
    60
}

/// The largest accepted `maxClockSkewSeconds`: a day. Beyond that the bound stops
/// protecting anything.
pub const MAX_CLOCK_SKEW_LIMIT: u64 = 24 * 3600;

fn default_database_path() -> PathBuf {
    PathBuf::from("/var/lib/kcore-controller/state.sqlite")
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not YAML, or not this file's shape: file, line and column, key, what is wrong.
    #[error("{0}")]
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

impl ControllerConfig {
    /// Read and validate `path`.
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
        let config: ControllerConfig = kcore_api::yaml::from_str(&path.display().to_string(), text)
            .map_err(ConfigError::Parse)?;
        let invalid = |field: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: kcore_api::yaml::locate(text, 0, field).map(|p| p.0),
            field,
            message,
        };
        use kcore_api::validate::{dc_id, dns_label};
        dns_label("controllerId", &config.controller_id)
            .map_err(|e| invalid("controllerId", e.detail()))?;
        dns_label("clusterName", &config.cluster_name)
            .map_err(|e| invalid("clusterName", e.detail()))?;
        dc_id("dcId", &config.dc_id).map_err(|e| invalid("dcId", e.detail()))?;
        if config.heartbeat_timeout_seconds == 0 {
            return Err(invalid(
                "heartbeatTimeoutSeconds",
                "must be at least 1 (seconds); 45 is the default".to_string(),
            ));
        }
        config
            .connections
            .validate()
            .map_err(|e| invalid("connections", e.to_string()))?;
        if !(1..=MAX_CLOCK_SKEW_LIMIT).contains(&config.max_clock_skew_seconds) {
            return Err(invalid(
                "maxClockSkewSeconds",
                format!(
                    "{} is outside 1..={MAX_CLOCK_SKEW_LIMIT} (seconds); 60 is the default",
                    config.max_clock_skew_seconds
                ),
            ));
        }
        if config.compaction.interval_seconds == 0 {
            return Err(invalid(
                "compaction.intervalSeconds",
                "must be at least 1 (seconds); 60 is the default".to_string(),
            ));
        }
        if config.compaction.snapshot_page_rows == 0 {
            return Err(invalid(
                "compaction.snapshotPageRows",
                "must be at least 1 (rows per page); 5000 is the default".to_string(),
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "controllerId: ctl1\nclusterName: lab\ntls:\n  caFile: /p/ca.crt\n  certFile: /p/c.crt\n  keyFile: /p/c.key\n  subCaCertFile: /p/s.crt\n  subCaKeyFile: /p/s.key\n";

    #[test]
    fn minimal_file_gets_the_documented_defaults() {
        let c = ControllerConfig::parse(MINIMAL, Path::new("c.yaml")).unwrap();
        assert_eq!(c.dc_id, "default");
        assert_eq!(c.listen.to_string(), "0.0.0.0:9090");
        assert!(!c.require_manual_approval);
        assert_eq!(c.heartbeat_timeout_seconds, 45);
        assert_eq!(c.max_clock_skew_seconds, 60);
        assert_eq!(
            c.database_path,
            PathBuf::from("/var/lib/kcore-controller/state.sqlite")
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let text = format!("{MINIMAL}requireManualAproval: true\n");
        let err = ControllerConfig::parse(&text, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("requireManualAproval"), "{err}");
        let text = MINIMAL.replace("keyFile: /p/c.key", "keyFile: /p/c.key\n  keyPem: x");
        let err = ControllerConfig::parse(&text, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("keyPem"), "{err}");
    }

    #[test]
    fn connection_limits_parse_and_zero_is_refused() {
        let c = ControllerConfig::parse(MINIMAL, Path::new("c.yaml")).unwrap();
        assert_eq!(c.connections, kcore_net::ConnectionLimits::default());
        let text = format!("{MINIMAL}connections:\n  maxConnectionsPerPeer: 512\n");
        let c = ControllerConfig::parse(&text, Path::new("c.yaml")).unwrap();
        assert_eq!(c.connections.max_connections_per_peer, Some(512));
        let text = format!("{MINIMAL}connections:\n  maxConnections: 0\n");
        let err = ControllerConfig::parse(&text, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("connections.maxConnections"), "{err}");
    }

    #[test]
    fn clock_skew_bound_is_checked() {
        for bad in ["0", "86401"] {
            let text = format!("{MINIMAL}maxClockSkewSeconds: {bad}\n");
            let err = ControllerConfig::parse(&text, Path::new("c.yaml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("field `maxClockSkewSeconds`"), "{err}");
        }
        let text = format!("{MINIMAL}maxClockSkewSeconds: 5\n");
        let c = ControllerConfig::parse(&text, Path::new("c.yaml")).unwrap();
        assert_eq!(c.max_clock_skew_seconds, 5);
    }

    #[test]
    fn compaction_has_defaults_and_refuses_a_zero_interval() {
        let c = ControllerConfig::parse(MINIMAL, Path::new("c.yaml")).unwrap();
        assert_eq!(c.compaction, CompactionConfig::default());
        assert_eq!(c.compaction.retention_seconds, 604_800);
        let text = format!("{MINIMAL}compaction:\n  retentionSeconds: 5\n");
        let c = ControllerConfig::parse(&text, Path::new("c.yaml")).unwrap();
        assert_eq!(c.compaction.retention_seconds, 5);
        assert_eq!(c.compaction.interval_seconds, 60);
        let text = format!("{MINIMAL}compaction:\n  intervalSeconds: 0\n");
        let err = ControllerConfig::parse(&text, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `compaction.intervalSeconds`"), "{err}");
        assert_eq!(c.compaction.snapshot_page_rows, 5000);
        let text = format!("{MINIMAL}compaction:\n  snapshotPageRows: 0\n");
        let err = ControllerConfig::parse(&text, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `compaction.snapshotPageRows`"), "{err}");
    }

    #[test]
    fn bad_ids_name_the_field() {
        let text = MINIMAL.replace("controllerId: ctl1", "controllerId: Ctl_1");
        let err = ControllerConfig::parse(&text, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `controllerId`"), "{err}");
        assert!(err.contains("upper-case 'C'"), "{err}");
        let text = MINIMAL.replace("clusterName: lab", "clusterName: lab-");
        let err = ControllerConfig::parse(&text, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `clusterName`"), "{err}");
        assert!(err.contains("starts or ends with '-'"), "{err}");
        let text = format!("{MINIMAL}dcId: DC1\n");
        ControllerConfig::parse(&text, Path::new("c.yaml")).unwrap();
        let text = format!("{MINIMAL}dcId: DC 1\n");
        let err = ControllerConfig::parse(&text, Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("field `dcId`") && err.contains("a space"),
            "{err}"
        );
    }

    // Issue 15: the line of the key, for decoding and for the checks after it.
    #[test]
    fn errors_name_the_file_line_and_key() {
        let err = ControllerConfig::parse(
            &format!("{MINIMAL}requireManualApproval: maybe\n"),
            Path::new("controller.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("controller.yaml:9:24: requireManualApproval: "),
            "{err}"
        );
        let err = ControllerConfig::parse(
            &MINIMAL.replace("controllerId: ctl1", "controllerId: Not_A_Label"),
            Path::new("controller.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("controller.yaml:1: field `controllerId`"),
            "{err}"
        );
    }
}
