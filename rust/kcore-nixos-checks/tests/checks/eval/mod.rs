//! The modules evaluated through `tests/eval/eval.nix`: rendered agent and controller
//! configuration per backend, units and their hardening, merged disko devices (fragments
//! rendered by kcore-disko), runtime support per backend, and every assertion on the bad
//! combination it exists for.
//!
//! One module per area (agent, controller, storage, encryption, assertions); the
//! configurations they start from are here.

use crate::support::{FAKE_STORE, Harness, rendered};
use kcore_disko::spec::{Backend, ThinPoolSpec};
use kcore_disko::{StorageSpec, render_data_disk, render_fragment};
use serde_json::{Value, json};

mod agent;
mod assertions;
mod controller;
mod encryption;
mod storage;

const TLS: &str = r#"{"caFile":"/var/lib/kcore/pki/ca.crt","certFile":"/var/lib/kcore/pki/node.crt","keyFile":"/var/lib/kcore/pki/node.key"}"#;

fn tls() -> Value {
    serde_json::from_str(TLS).unwrap()
}

/// A managed agent with mTLS and the given `kcore.storage`.
pub fn agent_config(storage: Value) -> Value {
    json!({
        "services": { "kcore": { "agent": {
            "enable": true,
            "settings": { "nodeId": "node-1", "dcId": "DC1", "controllers": ["ctl1:9090"], "tls": tls() }
        }}},
        "kcore": { "storage": storage },
        "networking": { "hostId": "8425e349" }
    })
}

/// Sets `value` at a dotted `path` of a configuration.
fn set(mut config: Value, path: &str, value: Value) -> Value {
    let mut at = &mut config;
    for key in path.split('.') {
        if at.get(key).is_none() {
            at[key] = json!({});
        }
        at = &mut at[key];
    }
    *at = value;
    config
}

fn fake(pkg: &str, bin: &str) -> String {
    format!("{FAKE_STORE}{pkg}/bin/{bin}")
}

/// The PATH of the agent's unit in `outputs`, as package names.
pub fn agent_path(out: &Value) -> Vec<String> {
    out["units"]["kcore-agent"]["path"]
        .as_array()
        .unwrap_or_else(|| panic!("no kcore-agent unit: {out}"))
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

pub fn controller_config() -> Value {
    json!({ "services": { "kcore": { "controller": {
        "enable": true,
        "settings": {
            "controllerId": "ctl1", "clusterName": "lab", "dcId": "DC1",
            "peers": ["ctl2:9090"], "requireManualApproval": true, "heartbeatTimeoutSeconds": 45
        }
    }}}})
}

/// Writes rendered fragments as files, as the agent keeps them under /var/lib/kcore/disko.
fn write_fragment(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn encrypted(extra: Value) -> Value {
    let mut enc = json!({ "enable": true });
    for (k, v) in extra.as_object().unwrap() {
        enc[k] = v.clone();
    }
    json!({ "kcore": { "diskEncryption": enc } })
}
