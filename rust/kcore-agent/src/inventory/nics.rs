//! `node nics`: interfaces from `ip -json addr` (name, MAC, state, MTU, addresses), with
//! the link speed from `/sys/class/net/<name>/speed` (which `ip` does not report).

use std::collections::BTreeMap;
use std::path::Path;

use kcore_api::inventory::Nic;
use serde::Deserialize;

use super::InventoryError;

#[derive(Debug, Deserialize)]
struct IpLink {
    ifname: String,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    operstate: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    link_type: Option<String>,
    #[serde(default)]
    addr_info: Vec<IpAddr>,
}

#[derive(Debug, Deserialize)]
struct IpAddr {
    #[serde(default)]
    local: Option<String>,
    #[serde(default)]
    prefixlen: Option<u8>,
}

/// Parse `ip -json addr show`; `speeds` maps interface names to Mbit/s.
pub fn parse_ip_addr(
    json: &str,
    speeds: &BTreeMap<String, u64>,
) -> Result<Vec<Nic>, InventoryError> {
    let links: Vec<IpLink> = serde_json::from_str(json).map_err(|err| InventoryError::Parse {
        program: "ip".into(),
        message: err.to_string(),
    })?;
    Ok(links
        .into_iter()
        .map(|link| Nic {
            speed_mbps: speeds.get(&link.ifname).copied(),
            // The loopback "MAC" is all zeros: not an address anyone can use.
            mac: link
                .address
                .filter(|_| link.link_type.as_deref() != Some("loopback")),
            state: link
                .operstate
                .map(|s| s.to_ascii_lowercase())
                .unwrap_or_else(|| "unknown".into()),
            mtu: link.mtu,
            addresses: link
                .addr_info
                .into_iter()
                .filter_map(|a| Some(format!("{}/{}", a.local?, a.prefixlen?)))
                .collect(),
            name: link.ifname,
        })
        .collect())
}

/// Link speeds from sysfs. Reading `speed` fails (EINVAL) or gives -1 for links without
/// one; those are left out.
pub fn read_speeds(dir: &Path) -> BTreeMap<String, u64> {
    let mut map = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return map;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(text) = std::fs::read_to_string(entry.path().join("speed")) {
            if let Ok(speed) = text.trim().parse::<i64>() {
                if let Ok(speed) = u64::try_from(speed) {
                    map.insert(name, speed);
                }
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_from_a_real_host() {
        let json = include_str!("../../tests/fixtures/ip-addr.json");
        let mut speeds = BTreeMap::new();
        speeds.insert("eth0".to_string(), 10000);
        let nics = parse_ip_addr(json, &speeds).unwrap();
        let lo = nics.iter().find(|n| n.name == "lo").unwrap();
        assert_eq!(lo.mac, None);
        assert!(lo.addresses.contains(&"127.0.0.1/8".to_string()));
        assert!(lo.addresses.contains(&"::1/128".to_string()));
        let eth0 = nics.iter().find(|n| n.name == "eth0").unwrap();
        assert_eq!(eth0.mac.as_deref(), Some("02:fc:00:00:00:01"));
        assert_eq!(eth0.state, "up");
        assert_eq!(eth0.speed_mbps, Some(10000));
        assert!(eth0.addresses.contains(&"192.0.2.2/24".to_string()));
        let ifb0 = nics.iter().find(|n| n.name == "ifb0").unwrap();
        assert_eq!(ifb0.state, "down");
        assert!(ifb0.addresses.is_empty());
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let err = parse_ip_addr("{", &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ip"), "{err}");
    }
}
