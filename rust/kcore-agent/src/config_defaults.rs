//! `kcore-agent --defaults FILE --config FILE`: the configuration in two layers. An
//! installed node's NixOS module writes what every node of that system shares (store
//! paths of the binaries, the disko source, limits) into a store file, and the install
//! writes only the node's own values into `/etc/kcore/node-agent.yaml`; the agent reads
//! the config file deep-merged OVER the defaults: mappings merge key by key, the config
//! file wins, any other value (lists included) replaces the default whole.
//!
//! Each file is decoded on its own first, so a syntax error or a duplicate key names its
//! file and line; the merged document is then validated as one configuration, and its
//! errors name both files (a line would be one of neither).

use std::path::Path;

use serde_json::Value;

use crate::config::{AgentConfig, ConfigError};

/// `defaults` with `over` merged on top (maps key by key; everything else replaces).
pub fn deep_merge(defaults: Value, over: Value) -> Value {
    match (defaults, over) {
        (Value::Object(mut base), Value::Object(top)) => {
            for (key, value) in top {
                let merged = match base.remove(&key) {
                    Some(old) => deep_merge(old, value),
                    None => value,
                };
                base.insert(key, merged);
            }
            Value::Object(base)
        }
        // An empty file (null) adds nothing to the other layer.
        (base, Value::Null) => base,
        (_, top) => top,
    }
}

fn read_layer(path: &Path) -> Result<Value, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path.display().to_string();
    let text = kcore_api::yaml::text(&name, &bytes).map_err(ConfigError::Parse)?;
    let value: Value = kcore_api::yaml::from_str(&name, text).map_err(ConfigError::Parse)?;
    match value {
        Value::Object(_) | Value::Null => Ok(value),
        _ => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            line: None,
            field: "(document)",
            message: "expected a mapping of keys (the shape of node-agent.yaml)".into(),
        }),
    }
}

impl AgentConfig {
    /// [`AgentConfig::load`] of `path`, read over `defaults` when given.
    pub fn load_layered(defaults: Option<&Path>, path: &Path) -> Result<Self, ConfigError> {
        let Some(defaults) = defaults else {
            return AgentConfig::load(path);
        };
        let merged = deep_merge(read_layer(defaults)?, read_layer(path)?);
        let text = serde_json::to_string_pretty(&merged).expect("a JSON value serializes");
        let name = format!(
            "{} (over --defaults {})",
            path.display(),
            defaults.display()
        );
        // Lines of the merged text are lines of neither file: drop them.
        AgentConfig::parse(&text, Path::new(&name)).map_err(|err| match err {
            ConfigError::Parse(mut e) => {
                e.line = None;
                e.column = None;
                ConfigError::Parse(e)
            }
            ConfigError::Invalid {
                path,
                field,
                message,
                ..
            } => ConfigError::Invalid {
                path,
                line: None,
                field,
                message,
            },
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_merge_key_by_key_the_config_wins_lists_replace() {
        let merged = deep_merge(
            json!({"binaries": {"disko": "/d", "lvm": "/l"}, "controllers": ["a", "b"],
                   "dcId": "DC9", "storage": {"lvm": {"vgName": "vg0"}}}),
            json!({"binaries": {"disko": "/d2"}, "controllers": ["c"],
                   "storage": {"lvm": {"lvPrefix": "x-"}}}),
        );
        assert_eq!(
            merged,
            json!({"binaries": {"disko": "/d2", "lvm": "/l"}, "controllers": ["c"],
                   "dcId": "DC9", "storage": {"lvm": {"vgName": "vg0", "lvPrefix": "x-"}}})
        );
        assert_eq!(deep_merge(json!({"a": 1}), Value::Null), json!({"a": 1}));
    }

    #[test]
    fn layered_load_merges_and_names_both_files_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let defaults = dir.path().join("defaults.yaml");
        let config = dir.path().join("node-agent.yaml");
        std::fs::write(
            &defaults,
            "mode: install\ndcId: DC7\nstorage: { lvm: { vgName: vg_def, lvPrefix: d- } }\nbinaries: { disko: /nix/store/x-disko/bin/disko }\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "nodeId: n1\nstorage: { lvm: { vgName: vg_node } }\n",
        )
        .unwrap();
        let c = AgentConfig::load_layered(Some(&defaults), &config).unwrap();
        assert_eq!(c.node_id, "n1");
        assert_eq!(c.dc_id, "DC7");
        assert_eq!(c.storage.lvm.vg_name, "vg_node");
        assert_eq!(c.storage.lvm.lv_prefix, "d-");
        assert_eq!(
            c.binaries.get("disko"),
            Some(Path::new("/nix/store/x-disko/bin/disko"))
        );
        // Without --defaults the config alone is read.
        let alone = AgentConfig::load_layered(None, &config)
            .unwrap_err()
            .to_string();
        assert!(alone.contains("`tls`"), "{alone}");
        // A bad value in either layer names both files and the field.
        std::fs::write(&defaults, "mode: install\nheartbeatIntervalSeconds: 0\n").unwrap();
        let err = AgentConfig::load_layered(Some(&defaults), &config)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node-agent.yaml (over --defaults")
                && err.contains("defaults.yaml")
                && err.contains("heartbeatIntervalSeconds"),
            "{err}"
        );
        // A syntax error names its own file and line.
        std::fs::write(&defaults, "mode: install\nmode: managed\n").unwrap();
        let err = AgentConfig::load_layered(Some(&defaults), &config)
            .unwrap_err()
            .to_string();
        assert!(err.contains("defaults.yaml:2"), "{err}");
        std::fs::write(&defaults, "- a\n").unwrap();
        let err = AgentConfig::load_layered(Some(&defaults), &config)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a mapping"), "{err}");
        let err = AgentConfig::load_layered(Some(&dir.path().join("nope.yaml")), &config)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.yaml"), "{err}");
    }
}
