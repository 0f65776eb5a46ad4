//! `kctl disko render`: a storage spec (flags or a spec file) to a disko fragment, printed or
//! written atomically with `--output-file/-O` (`-o` is the global output format).

use std::path::PathBuf;

use anyhow::Context;
use kcore_disko::spec::{Backend, DataDiskMode, LuksMode, StorageSpec, ThinPoolSpec};

use crate::cli::GlobalArgs;
use crate::exit::Refused;

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// A storage spec file (YAML or JSON, the `storage` section of a node's configuration)
    /// instead of the flags below.
    #[arg(long = "spec", value_name = "FILE", conflicts_with_all = ["os_disk", "data_disks", "backend"])]
    pub spec: Option<PathBuf>,

    /// The OS disk (ESP + LUKS2 root), preferably a /dev/disk/by-id/ path.
    #[arg(
        long = "os-disk",
        value_name = "DEVICE",
        required_unless_present = "spec"
    )]
    pub os_disk: Option<String>,

    /// A data disk for VM volumes; repeat for more, in order (volumes, volumes1, ...).
    #[arg(long = "data-disk", value_name = "DEVICE")]
    pub data_disks: Vec<String>,

    /// The storage backend: filesystem, lvm or zfs.
    #[arg(
        long = "storage-backend",
        value_name = "BACKEND",
        required_unless_present = "spec"
    )]
    pub backend: Option<Backend>,

    /// LVM volume group name (default vg_kcore).
    #[arg(long = "lvm-vg-name", value_name = "NAME")]
    pub lvm_vg_name: Option<String>,

    /// Prefix of kcore's LVs (default `kcore-`).
    #[arg(long = "lvm-lv-prefix", value_name = "PREFIX")]
    pub lvm_lv_prefix: Option<String>,

    /// Create a thin pool with this name (after the LV prefix) using 90% of the VG.
    #[arg(long = "lvm-thin-pool", value_name = "NAME")]
    pub lvm_thin_pool: Option<String>,

    /// ZFS pool name (default tank0).
    #[arg(long = "zfs-pool-name", value_name = "NAME")]
    pub zfs_pool_name: Option<String>,

    /// ZFS dataset under the pool for volumes (default kcore).
    #[arg(long = "zfs-dataset-prefix", value_name = "PREFIX")]
    pub zfs_dataset_prefix: Option<String>,

    /// How data disks combine: stripe (default) or mirror (zfs only).
    #[arg(long = "data-disk-mode", value_name = "MODE", value_parser = parse_mode)]
    pub data_disk_mode: Option<DataDiskMode>,

    /// LUKS unlock of the OS disk: tpm2 (default) or keyfile.
    #[arg(long = "luks-mode", value_name = "MODE", value_parser = parse_luks)]
    pub luks_mode: Option<LuksMode>,

    /// Keyfile mode: the key file (absolute, never under /boot).
    #[arg(long = "luks-key-file", value_name = "PATH")]
    pub luks_key_file: Option<String>,

    /// Render only the day-2 fragment for ONE new data disk (the single --data-disk) at this
    /// position, so it mounts at volumes<N> or joins the VG/pool.
    #[arg(long = "day2-index", value_name = "N")]
    pub day2_index: Option<usize>,

    /// Write the fragment to FILE (atomically) instead of stdout.
    #[arg(short = 'O', long = "output-file", value_name = "FILE")]
    pub output_file: Option<PathBuf>,
}

fn parse_mode(s: &str) -> Result<DataDiskMode, String> {
    match s {
        "stripe" => Ok(DataDiskMode::Stripe),
        "mirror" => Ok(DataDiskMode::Mirror),
        _ => Err("use stripe or mirror".into()),
    }
}

fn parse_luks(s: &str) -> Result<LuksMode, String> {
    match s {
        "tpm2" => Ok(LuksMode::Tpm2),
        "keyfile" => Ok(LuksMode::Keyfile),
        _ => Err("use tpm2 or keyfile".into()),
    }
}

impl RenderArgs {
    fn spec(&self) -> anyhow::Result<StorageSpec> {
        let mut spec = match &self.spec {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                serde_yaml_ng::from_str::<StorageSpec>(&text).map_err(|e| {
                    anyhow::Error::new(Refused::new(
                        "INVALID_SPEC",
                        format!("{}: {e}", path.display()),
                    ))
                })?
            }
            None => StorageSpec::new(
                self.os_disk.clone().unwrap_or_default(),
                self.data_disks.clone(),
                self.backend.unwrap_or_default(),
            ),
        };
        if let Some(v) = &self.lvm_vg_name {
            spec.lvm.vg_name = v.clone();
        }
        if let Some(v) = &self.lvm_lv_prefix {
            spec.lvm.lv_prefix = v.clone();
        }
        if let Some(v) = &self.lvm_thin_pool {
            spec.lvm.thin_pool = Some(ThinPoolSpec {
                name: v.clone(),
                size: "90%".into(),
            });
        }
        if let Some(v) = &self.zfs_pool_name {
            spec.zfs.pool_name = v.clone();
        }
        if let Some(v) = &self.zfs_dataset_prefix {
            spec.zfs.dataset_prefix = v.clone();
        }
        if let Some(v) = self.data_disk_mode {
            spec.data_disk_mode = v;
        }
        if let Some(v) = self.luks_mode {
            spec.luks.mode = v;
        }
        if let Some(v) = &self.luks_key_file {
            spec.luks.key_file = Some(v.clone());
        }
        Ok(spec)
    }
}

pub async fn run(args: RenderArgs, _global: &GlobalArgs) -> anyhow::Result<()> {
    let spec = args.spec()?;
    let rendered = match args.day2_index {
        None => kcore_disko::render_fragment(&spec),
        Some(index) => {
            let [device] = spec.data_disks.as_slice() else {
                return Err(Refused::new(
                    "INVALID_SPEC",
                    "--day2-index renders one new disk: give exactly one --data-disk",
                )
                .into());
            };
            kcore_disko::render_data_disk(&spec, device, index)
        }
    };
    let text = rendered.map_err(|e| match e {
        kcore_disko::render::RenderError::Invalid(_) => {
            anyhow::Error::new(Refused::new("INVALID_SPEC", e.to_string()))
        }
        other => anyhow::Error::new(other),
    })?;
    match &args.output_file {
        Some(path) => {
            super::write_atomically(path, &text)?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
