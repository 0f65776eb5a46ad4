//! The node's report to the controller (hostname, dc, labels, roles, storage, disks, NICs,
//! system generations): what follows from the configuration, folded together with the
//! live inventory each collector gives. Registration sends it ([`crate::registration`]);
//! this module only builds it.

use kcore_api::cluster::{
    NodeReport, NodeRole, PoolReport, StorageBackend, StorageReport, VolumeGroupReport, VolumeMount,
};
use kcore_api::inventory::StorageView;
use std::sync::Arc;

use crate::config::AgentConfig;
use crate::registration::ReportFn;

/// The role and storage facts that follow from the configuration alone.
pub fn report_from_config(config: &AgentConfig) -> NodeReport {
    let storage = &config.storage;
    let backend = storage.backend;
    let mut report = StorageReport {
        backend: Some(backend),
        mounts: vec![VolumeMount {
            path: storage.filesystem_volume_dir.display().to_string(),
            ..Default::default()
        }],
        ..Default::default()
    };
    match backend {
        StorageBackend::Lvm => {
            report.volume_group = Some(VolumeGroupReport {
                name: storage.lvm.vg_name.clone(),
                lv_prefix: storage.lvm.lv_prefix.clone(),
                // The configured pool, if any; the storage view resolves it (or finds the
                // VG's only one) and adds its free space.
                thin_pool: storage.lvm.thin_pool.clone(),
                ..Default::default()
            });
        }
        StorageBackend::Zfs => {
            report.pool = Some(PoolReport {
                name: storage.zfs.pool_name.clone(),
                dataset_prefix: storage.zfs.dataset_prefix.clone(),
                ..Default::default()
            });
        }
        StorageBackend::Filesystem => {}
    }
    NodeReport {
        hostname: config.effective_hostname(),
        dc_id: config.dc_id.clone(),
        labels: config.labels.clone(),
        roles: vec![NodeRole::Agent],
        storage: report,
        disks: Vec::new(),
        nics: Vec::new(),
        agent_address: Some(config.listen.clone()),
        system: None,
        certificate_renewal_problem: None,
        capabilities: vec![kcore_api::rollout::CAPABILITY_PREPARE_AHEAD.to_string()],
    }
}

/// Folds the agent's live storage view into the report's storage section: VG or pool
/// capacity and the mounts under the volume directories.
pub fn apply_storage_view(report: &mut StorageReport, view: &StorageView) {
    if let (Some(vg), Some(lvm)) = (report.volume_group.as_mut(), view.lvm.as_ref())
        && let Some(found) = lvm.volume_groups.iter().find(|g| g.name == vg.name)
    {
        vg.size_bytes = Some(found.size_bytes);
        vg.free_bytes = Some(found.free_bytes);
        // The pool new volumes go into, by the volume code's own rule; a configured pool
        // that is missing keeps its name without free space (the scheduler sees no room,
        // as creating a volume there would fail).
        match super::storage::thin_pool_of(&lvm.logical_volumes, &vg.name, vg.thin_pool.as_deref())
        {
            Ok(Some(pool)) => {
                vg.thin_pool = Some(pool.name.clone());
                vg.thin_pool_free_bytes = super::storage::thin_pool_free_bytes(pool);
            }
            Ok(None) => vg.thin_pool = None,
            Err(e) => tracing::debug!("thin pool for the controller: {e}"),
        }
    }
    if let (Some(pool), Some(zfs)) = (report.pool.as_mut(), view.zfs.as_ref())
        && let Some(found) = zfs.pools.iter().find(|p| p.name == pool.name)
    {
        pool.size_bytes = Some(found.size_bytes);
        pool.free_bytes = Some(found.free_bytes);
        pool.health = Some(found.health.clone());
    }
    for mount in &view.mounts {
        if !report.mounts.iter().any(|m| m.path == mount.target) {
            report.mounts.push(VolumeMount {
                path: mount.target.clone(),
                ..Default::default()
            });
        }
    }
}

/// The heartbeat reads the machine's own sysfs.
const SYSFS: &str = "/sys";

/// A [`ReportFn`] that adds the live inventory (disks, NICs, storage) to the
/// configuration's facts. A collector that fails leaves its part empty (and logs why):
/// a heartbeat must not fail because `lsblk` did.
pub fn inventory_report_fn(config: AgentConfig, tools: crate::tools::Tools) -> ReportFn {
    let shared = Arc::new((config, tools));
    Arc::new(move || {
        let shared = shared.clone();
        Box::pin(async move {
            let (config, tools) = &*shared;
            let mut report = report_from_config(config);
            match super::collect_disks(tools, None, SYSFS.as_ref()).await {
                Ok(inv) => report.disks = to_json_list(&inv.disks),
                Err(err) => tracing::debug!("disk inventory for the controller: {err}"),
            }
            match super::collect_nics(tools, SYSFS.as_ref()).await {
                Ok(inv) => report.nics = to_json_list(&inv.nics),
                Err(err) => tracing::debug!("NIC inventory for the controller: {err}"),
            }
            let view = super::collect_storage(config, tools).await;
            apply_storage_view(&mut report.storage, &view);
            measure_mounts(&mut report.storage.mounts);
            report.system = system_report(
                &kcore_nix::profile::Profile::system(),
                std::path::Path::new("/run/booted-system"),
            );
            report
        })
    })
}

/// The profile's current generation and the booted system, from the profile links
/// (kcore-nix's `Profile`). `None` when neither can be read (not a NixOS machine).
pub fn system_report(
    profile: &kcore_nix::profile::Profile,
    booted_link: &std::path::Path,
) -> Option<kcore_api::cluster::SystemReport> {
    let current = match profile.current() {
        Ok(g) => Some(kcore_api::cluster::GenerationReport {
            number: g.number,
            store_path: g.store_path.display().to_string(),
            created: g
                .created
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        }),
        Err(err) => {
            tracing::debug!("system generation for the controller: {err}");
            None
        }
    };
    let booted = std::fs::read_link(booted_link)
        .ok()
        .map(|p| p.display().to_string());
    (current.is_some() || booted.is_some())
        .then_some(kcore_api::cluster::SystemReport { current, booted })
}

/// Fills in the size and free space of each volume mount that exists (statvfs). A mount
/// that cannot be measured (not created yet, not readable) keeps `None`: kctl shows `?`.
pub fn measure_mounts(mounts: &mut [VolumeMount]) {
    for mount in mounts {
        match nix::sys::statvfs::statvfs(mount.path.as_str()) {
            Ok(stat) => {
                let fragment = stat.fragment_size();
                mount.size_bytes = Some(stat.blocks() * fragment);
                mount.free_bytes = Some(stat.blocks_available() * fragment);
            }
            Err(err) => tracing::debug!("cannot measure {}: {err}", mount.path),
        }
    }
}

fn to_json_list<T: serde::Serialize>(items: &[T]) -> Vec<serde_json::Value> {
    items
        .iter()
        .filter_map(|item| serde_json::to_value(item).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_mounts_are_measured_and_missing_ones_left_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let mut mounts = vec![
            VolumeMount {
                path: dir.path().display().to_string(),
                ..Default::default()
            },
            VolumeMount {
                path: dir.path().join("absent").display().to_string(),
                ..Default::default()
            },
        ];
        measure_mounts(&mut mounts);
        let size = mounts[0].size_bytes.expect("a tempdir can be measured");
        let free = mounts[0].free_bytes.expect("a tempdir can be measured");
        assert!(size > 0 && free <= size, "size {size}, free {free}");
        assert_eq!((mounts[1].size_bytes, mounts[1].free_bytes), (None, None));
    }
    #[test]
    fn system_report_reads_the_current_generation_and_the_booted_system() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::os::unix::fs::symlink("/nix/store/aaa-nixos-system-hv1", p.join("system-4-link"))
            .unwrap();
        std::os::unix::fs::symlink("/nix/store/bbb-nixos-system-hv1", p.join("system-5-link"))
            .unwrap();
        std::os::unix::fs::symlink("system-5-link", p.join("system")).unwrap();
        std::os::unix::fs::symlink("/nix/store/aaa-nixos-system-hv1", p.join("booted")).unwrap();
        let profile = kcore_nix::profile::Profile::new(p.join("system"));
        let report = system_report(&profile, &p.join("booted")).unwrap();
        let current = report.current.unwrap();
        assert_eq!(current.number, 5);
        assert_eq!(current.store_path, "/nix/store/bbb-nixos-system-hv1");
        assert_eq!(
            report.booted.as_deref(),
            Some("/nix/store/aaa-nixos-system-hv1")
        );
        let none = kcore_nix::profile::Profile::new(p.join("absent"));
        assert!(system_report(&none, &p.join("absent-booted")).is_none());
    }

    #[test]
    fn report_from_config_names_backend_and_its_vg() {
        let yaml = "nodeId: n1\ndcId: DC2\nhostname: hv1\ncontrollers: [\"127.0.0.1:9090\"]\nstorage:\n  backend: lvm\n  lvm: { vgName: vg_x, lvPrefix: k- }\ntls: { caFile: /a, certFile: /b, keyFile: /c }\n";
        let config = AgentConfig::parse(yaml, std::path::Path::new("a.yaml")).unwrap();
        let report = report_from_config(&config);
        assert_eq!(report.dc_id, "DC2");
        assert_eq!(report.storage.backend, Some(StorageBackend::Lvm));
        assert_eq!(report.storage.volume_group.as_ref().unwrap().name, "vg_x");
        assert!(report.storage.pool.is_none());
    }

    /// `lvs --reportformat json --units b --nosuffix -o
    /// lv_name,vg_name,lv_size,lv_attr,pool_lv,data_percent` as LVM 2.03 prints it: a thin
    /// pool at 25% data use, a thin volume in it, a linear LV, and a pool in another VG.
    const LVS_WITH_POOL: &str = r#"{"report": [{"lv": [
        {"lv_name":"thinpool", "vg_name":"vg_kcore", "lv_size":"134217728", "lv_attr":"twi-aotz--", "pool_lv":"", "data_percent":"25.00"},
        {"lv_name":"kcore-web", "vg_name":"vg_kcore", "lv_size":"8388608", "lv_attr":"Vwi-a-tz--", "pool_lv":"thinpool", "data_percent":"100.00"},
        {"lv_name":"meta", "vg_name":"vg_kcore", "lv_size":"4194304", "lv_attr":"-wi-a-----", "pool_lv":"", "data_percent":""},
        {"lv_name":"other", "vg_name":"vg_other", "lv_size":"1073741824", "lv_attr":"twi-aotz--", "pool_lv":"", "data_percent":"0.00"}
    ]}]}"#;

    fn lvm_report(thin_pool: Option<&str>) -> StorageReport {
        StorageReport {
            backend: Some(StorageBackend::Lvm),
            volume_group: Some(VolumeGroupReport {
                name: "vg_kcore".into(),
                thin_pool: thin_pool.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn lvm_view(lvs: &str) -> StorageView {
        StorageView {
            backend: "lvm".into(),
            lvm: Some(kcore_api::inventory::LvmView {
                vg_name: "vg_kcore".into(),
                volume_groups: vec![kcore_api::inventory::VolumeGroup {
                    name: "vg_kcore".into(),
                    size_bytes: 1 << 30,
                    free_bytes: 512 << 20,
                    pv_count: 1,
                    lv_count: 3,
                }],
                logical_volumes: super::super::storage::parse_lvs(lvs).unwrap(),
            }),
            zfs: None,
            mounts: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn storage_view_fills_the_thin_pool_and_its_free_data_space_from_lvs() {
        // The VG's only pool, found without configuration: 128 MiB at 25% used.
        let mut report = lvm_report(None);
        apply_storage_view(&mut report, &lvm_view(LVS_WITH_POOL));
        let vg = report.volume_group.as_ref().unwrap();
        assert_eq!(vg.thin_pool.as_deref(), Some("thinpool"));
        assert_eq!(vg.thin_pool_free_bytes, Some(96 << 20));
        assert_eq!(vg.free_bytes, Some(512 << 20));
        // What the scheduler counts for this node (the controller's own function).
        assert_eq!(
            kcore_controller::vm::scheduler::free_bytes(&report),
            Some(96 << 20)
        );

        // Configured and present: the same; configured but missing: named, no free space.
        let mut report = lvm_report(Some("thinpool"));
        apply_storage_view(&mut report, &lvm_view(LVS_WITH_POOL));
        assert_eq!(
            report.volume_group.as_ref().unwrap().thin_pool_free_bytes,
            Some(96 << 20)
        );
        let mut report = lvm_report(Some("absent"));
        apply_storage_view(&mut report, &lvm_view(LVS_WITH_POOL));
        let vg = report.volume_group.as_ref().unwrap();
        assert_eq!(
            (vg.thin_pool.as_deref(), vg.thin_pool_free_bytes),
            (Some("absent"), None)
        );

        // No pool in the VG (the other VG's pool does not count): linear, the VG's space.
        let linear = r#"{"report": [{"lv": [
            {"lv_name":"other", "vg_name":"vg_other", "lv_size":"1073741824", "lv_attr":"twi-aotz--", "pool_lv":"", "data_percent":"0.00"}
        ]}]}"#;
        let mut report = lvm_report(None);
        apply_storage_view(&mut report, &lvm_view(linear));
        let vg = report.volume_group.as_ref().unwrap();
        assert_eq!(
            (vg.thin_pool.as_deref(), vg.thin_pool_free_bytes),
            (None, None)
        );
    }

    #[test]
    fn report_from_config_carries_the_configured_thin_pool() {
        let yaml = "nodeId: n1\nstorage:\n  backend: lvm\n  lvm: { vgName: vg_x, thinPool: pool }\nmode: install\n";
        let config = AgentConfig::parse(yaml, std::path::Path::new("a.yaml")).unwrap();
        let report = report_from_config(&config);
        let vg = report.storage.volume_group.unwrap();
        assert_eq!(vg.thin_pool.as_deref(), Some("pool"));
    }

    #[test]
    fn storage_view_fills_pool_capacity() {
        let mut report = StorageReport {
            backend: Some(StorageBackend::Zfs),
            pool: Some(PoolReport {
                name: "tank0".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let view: StorageView = serde_json::from_value(serde_json::json!({
            "backend": "zfs",
            "zfs": {"poolName": "tank0", "pools": [{"name": "tank0", "sizeBytes": 100, "allocatedBytes": 40, "freeBytes": 60, "health": "ONLINE"}], "datasets": []},
            "mounts": [{"source": "tank0/kcore", "target": "/var/lib/kcore/volumes", "fstype": "zfs"}]
        }))
        .unwrap();
        apply_storage_view(&mut report, &view);
        let pool = report.pool.unwrap();
        assert_eq!(pool.free_bytes, Some(60));
        assert_eq!(pool.health.as_deref(), Some("ONLINE"));
        assert_eq!(report.mounts.len(), 1);
    }
}
