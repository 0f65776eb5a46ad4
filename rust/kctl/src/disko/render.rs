//! `kctl disko render`: a storage spec (flags or a spec file) to a disko fragment, printed or
//! written atomically with `--output-file/-O` (`-o` is the global output format).

use kcore_api::ErrorCode;
use std::path::PathBuf;

use anyhow::Context;
use kcore_api::inventory::DiskInventory;
use kcore_disko::spec::{
    Backend, DataDiskMode, LuksChoice, PbkdfSpec, PbkdfType, StorageSpec, ThinPoolSpec,
};

use crate::exit::Refused;
use crate::global::GlobalArgs;
use crate::target::NodeTarget;

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// A storage spec file (YAML or JSON, the `storage` section of a node's configuration)
    /// instead of the flags below.
    #[arg(long = "spec", value_name = "FILE", conflicts_with_all = ["os_disk", "data_disks", "backend", "data_disk_mode"])]
    pub spec: Option<PathBuf>,

    /// The OS disk (ESP + LUKS2 root), preferably a /dev/disk/by-id/ path. Not needed with
    /// --day2-index: a day-2 fragment holds only the new data disk.
    #[arg(
        long = "os-disk",
        value_name = "DEVICE",
        required_unless_present_any = ["spec", "day2_index"]
    )]
    pub os_disk: Option<String>,

    /// A data disk for VM volumes; repeat for more, in order (volumes, volumes1, ...).
    #[arg(long = "data-disk", value_name = "DEVICE")]
    pub data_disks: Vec<String>,

    /// The storage backend: filesystem (default), lvm or zfs.
    #[arg(long = "storage-backend", value_name = "BACKEND")]
    pub backend: Option<Backend>,

    /// The data disks' storage mode: filesystem (default), lvm or zfs, the operator
    /// guide's name for --storage-backend; giving both with different values is an error.
    #[arg(long = "data-disk-mode", value_name = "MODE")]
    pub data_disk_mode: Option<Backend>,

    /// LVM volume group name (default vg_kcore; only with --storage-backend lvm).
    #[arg(long = "lvm-vg-name", value_name = "NAME")]
    pub lvm_vg_name: Option<String>,

    /// Prefix of kcore's LVs (default `kcore-`; only with --storage-backend lvm).
    #[arg(long = "lvm-lv-prefix", value_name = "PREFIX")]
    pub lvm_lv_prefix: Option<String>,

    /// Create a thin pool with this name (after the LV prefix) using 90% of the VG (only
    /// with --storage-backend lvm).
    #[arg(long = "lvm-thin-pool", value_name = "NAME")]
    pub lvm_thin_pool: Option<String>,

    /// ZFS pool name (default tank0; only with --storage-backend zfs).
    #[arg(long = "zfs-pool-name", value_name = "NAME")]
    pub zfs_pool_name: Option<String>,

    /// ZFS dataset under the pool for volumes (default kcore; `kcore/` means the same:
    /// datasets under kcore; only with --storage-backend zfs).
    #[arg(long = "zfs-dataset-prefix", value_name = "PREFIX")]
    pub zfs_dataset_prefix: Option<String>,

    /// How data disks combine: stripe (default) or mirror (zfs only).
    #[arg(long = "data-disk-layout", value_name = "LAYOUT", value_parser = parse_layout)]
    pub data_disk_layout: Option<DataDiskMode>,

    /// LUKS unlock of the OS disk: auto (the default: tpm2 when the node at --node has a
    /// TPM, keyfile when it has none), tpm2 or keyfile. Replaces a spec file's `luks.mode`.
    #[arg(long = "luks-mode", value_name = "MODE", value_parser = parse_luks)]
    pub luks_mode: Option<LuksChoice>,

    /// Keyfile mode: the key file (absolute, never under /boot).
    #[arg(long = "luks-key-file", value_name = "PATH")]
    pub luks_key_file: Option<String>,

    /// LUKS2 key derivation of the OS disk: argon2id, argon2i or pbkdf2. Unset: cryptsetup's
    /// default (argon2id, benchmarked at install). Replaces a spec file's `luks.pbkdf`.
    #[arg(long = "luks-pbkdf", value_name = "TYPE")]
    pub luks_pbkdf: Option<PbkdfType>,

    /// With --luks-pbkdf: a fixed iteration count instead of a benchmark (at least 1000 for
    /// pbkdf2, 4 for argon2).
    #[arg(
        long = "luks-pbkdf-iterations",
        value_name = "N",
        requires = "luks_pbkdf"
    )]
    pub luks_pbkdf_iterations: Option<u32>,

    /// With --luks-pbkdf argon2id or argon2i: the memory cost in KiB (32 to 4194304).
    #[arg(
        long = "luks-pbkdf-memory-kib",
        value_name = "KIB",
        requires = "luks_pbkdf"
    )]
    pub luks_pbkdf_memory_kib: Option<u32>,

    /// Render only the day-2 fragment for ONE new data disk (the single --data-disk) at this
    /// position, so it mounts at volumes<N> or joins the VG/pool.
    #[arg(long = "day2-index", value_name = "N")]
    pub day2_index: Option<usize>,

    /// The node to ask whether it has a TPM (LUKS mode auto), and how to trust it.
    #[command(flatten)]
    pub node: NodeTarget,

    /// Write the fragment to FILE (atomically) instead of stdout.
    #[arg(short = 'O', long = "output-file", value_name = "FILE")]
    pub output_file: Option<PathBuf>,
}

fn parse_layout(s: &str) -> Result<DataDiskMode, String> {
    match s {
        "stripe" => Ok(DataDiskMode::Stripe),
        "mirror" => Ok(DataDiskMode::Mirror),
        _ => Err("use stripe or mirror".into()),
    }
}

fn parse_luks(s: &str) -> Result<LuksChoice, String> {
    match s {
        "auto" => Ok(LuksChoice::Auto),
        "tpm2" => Ok(LuksChoice::Tpm2),
        "keyfile" => Ok(LuksChoice::Keyfile),
        _ => Err("use auto, tpm2 or keyfile".into()),
    }
}

impl RenderArgs {
    /// The backend from --storage-backend or its guide name --data-disk-mode (default
    /// filesystem); both with different values is a usage error.
    fn flag_backend(&self) -> anyhow::Result<Backend> {
        match (self.backend, self.data_disk_mode) {
            (Some(a), Some(b)) if a != b => Err(Refused::new(
                ErrorCode::BadFlags,
                format!(
                    "--storage-backend {} and --data-disk-mode {} disagree: they name the same \
                 thing (the data disks' storage), give one",
                    a.as_str(),
                    b.as_str()
                ),
            )
            .into()),
            (a, b) => Ok(a.or(b).unwrap_or_default()),
        }
    }

    fn check_backend_flags(&self, backend: Backend) -> anyhow::Result<()> {
        let lvm = [
            ("--lvm-vg-name", self.lvm_vg_name.is_some()),
            ("--lvm-lv-prefix", self.lvm_lv_prefix.is_some()),
            ("--lvm-thin-pool", self.lvm_thin_pool.is_some()),
        ];
        let zfs = [
            ("--zfs-pool-name", self.zfs_pool_name.is_some()),
            ("--zfs-dataset-prefix", self.zfs_dataset_prefix.is_some()),
        ];
        for (flags, wanted) in [(&lvm[..], Backend::Lvm), (&zfs[..], Backend::Zfs)] {
            if backend == wanted {
                continue;
            }
            if let Some((flag, _)) = flags.iter().find(|(_, given)| *given) {
                // Refused rather than ignored: an operator who mistyped the backend learns
                // it before a disk is formatted with the wrong layout.
                let (wanted, actual) = (wanted.as_str(), backend.as_str());
                return Err(Refused::new(
                    ErrorCode::BadFlags,
                    format!(
                        "{flag} is only used with --storage-backend {wanted} (the backend here is \
                         {actual}): drop {flag} or pass --storage-backend {wanted}"
                    ),
                )
                .into());
            }
        }
        Ok(())
    }

    fn spec(&self) -> anyhow::Result<StorageSpec> {
        let mut spec = match &self.spec {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                kcore_api::yaml::from_slice::<StorageSpec>(&path.display().to_string(), &bytes)
                    .map_err(|e| Refused::new(ErrorCode::InvalidSpec, e.to_string()))?
            }
            None => StorageSpec::new(
                self.os_disk.clone().unwrap_or_default(),
                self.data_disks.clone(),
                self.flag_backend()?,
            ),
        };
        self.check_backend_flags(spec.backend)?;
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
        if let Some(v) = self.data_disk_layout {
            spec.data_disk_mode = v;
        }
        if let Some(v) = &self.luks_key_file {
            spec.luks.key_file = Some(v.clone());
        }
        if let Some(kind) = self.luks_pbkdf {
            spec.luks.pbkdf = Some(PbkdfSpec {
                kind,
                iterations: self.luks_pbkdf_iterations,
                memory_kib: self.luks_pbkdf_memory_kib,
            });
        }
        Ok(spec)
    }
}

impl RenderArgs {
    /// The problems of a spec that does not validate; from a `--spec` file, that file
    /// once in front and each problem with the line of its key.
    fn invalid_text(&self, problems: &[kcore_disko::Problem]) -> String {
        let Some(path) = &self.spec else {
            return kcore_disko::render::RenderError::Invalid(problems.to_vec()).to_string();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = problems
            .iter()
            .map(|p| match kcore_api::yaml::locate(&text, 0, &p.path) {
                Some((line, _)) => format!("line {line}: {p}"),
                None => p.to_string(),
            })
            .collect();
        format!(
            "{}: invalid storage spec:\n{}",
            path.display(),
            lines.join("\n")
        )
    }

    /// The OS disk's LUKS choice: the flag, else the spec file's (already a mode), else
    /// auto. `None` when there is nothing to decide (a day-2 fragment has no OS disk).
    fn luks_choice(&self) -> Option<LuksChoice> {
        if self.day2_index.is_some() {
            return None;
        }
        match (self.luks_mode, &self.spec) {
            (Some(choice), _) => Some(choice),
            (None, Some(_)) => None,
            (None, None) => Some(LuksChoice::Auto),
        }
    }
}

/// Whether the node at `--node` has a TPM, from its disk inventory.
async fn node_has_tpm(global: &GlobalArgs, node: &NodeTarget) -> anyhow::Result<bool> {
    let client = crate::agent_client::connect(global, node)?;
    let inventory: DiskInventory = client.get_json("/v1/inventory/disks").await?;
    inventory.tpm.ok_or_else(|| {
        Refused::new(
            ErrorCode::BadFlags,
            format!(
                "the agent at {} does not report whether it has a TPM (it is older than \
                 this kctl): pass --luks-mode tpm2|keyfile",
                node.node.as_deref().unwrap_or_default()
            ),
        )
        .into()
    })
}

pub async fn run(args: RenderArgs, global: &GlobalArgs, node: &NodeTarget) -> anyhow::Result<()> {
    let mut spec = args.spec()?;
    if let Some(choice) = args.luks_choice() {
        // The rest of the spec is checked first: a typo is reported without a node's
        // answer, and before the question of the TPM (the mode is still the default here).
        let problems = spec.validate();
        if !problems.is_empty() {
            return Err(Refused::new(ErrorCode::InvalidSpec, args.invalid_text(&problems)).into());
        }
        let has_tpm = match (choice, &node.node) {
            (LuksChoice::Auto, Some(_)) => Some(node_has_tpm(global, node).await?),
            _ => None,
        };
        let mode = choice
            .resolve(has_tpm)
            .map_err(|e| Refused::new(ErrorCode::BadFlags, e))?;
        if let Some(has_tpm) = has_tpm {
            eprintln!(
                "luks mode auto: the node {} a TPM, so {}",
                if has_tpm { "has" } else { "has no" },
                mode.as_str()
            );
        }
        spec.luks.set_mode(mode);
    } else if node.node.is_some() && args.day2_index.is_some() {
        node.unused("disko render --day2-index")?;
    }
    let rendered = match args.day2_index {
        None => kcore_disko::render_fragment(&spec),
        Some(index) => {
            let [device] = spec.data_disks.as_slice() else {
                return Err(Refused::new(
                    ErrorCode::InvalidSpec,
                    "--day2-index renders one new disk: give exactly one --data-disk",
                )
                .into());
            };
            kcore_disko::render_data_disk(&spec, device, index)
        }
    };
    let text = rendered.map_err(|e| match e {
        kcore_disko::render::RenderError::Invalid(_) => {
            anyhow::Error::new(Refused::new(ErrorCode::InvalidSpec, e.to_string()))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        render: RenderArgs,
    }

    fn spec(args: &[&str]) -> Result<StorageSpec, String> {
        let cli = Cli::try_parse_from(["render"].iter().chain(args)).map_err(|e| e.to_string())?;
        cli.render.spec().map_err(|e| format!("{e:#}"))
    }

    const BASE: [&str; 4] = ["--os-disk", "/dev/sda", "--storage-backend", "filesystem"];

    #[test]
    fn luks_mode_defaults_to_auto_unless_a_spec_file_or_day2_decides() {
        let cli = |args: &[&str]| {
            Cli::try_parse_from(["render"].iter().chain(args))
                .unwrap()
                .render
        };
        assert_eq!(cli(&BASE).luks_choice(), Some(LuksChoice::Auto));
        let keyfile = cli(&[&BASE[..], &["--luks-mode", "keyfile"]].concat());
        assert_eq!(keyfile.luks_choice(), Some(LuksChoice::Keyfile));
        assert_eq!(cli(&["--spec", "s.yaml"]).luks_choice(), None);
        let day2 = cli(&["--data-disk", "/dev/sdb", "--day2-index", "1"]);
        assert_eq!(day2.luks_choice(), None);
        let err = Cli::try_parse_from(["render", "--os-disk", "/dev/sda", "--luks-mode", "tpm"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("use auto, tpm2 or keyfile"), "{err}");
    }

    #[test]
    fn pbkdf_flags_build_the_spec_option() {
        let s = spec(
            &[
                &BASE[..],
                &["--luks-pbkdf", "pbkdf2", "--luks-pbkdf-iterations", "1000"],
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(
            s.luks.pbkdf,
            Some(PbkdfSpec {
                kind: PbkdfType::Pbkdf2,
                iterations: Some(1000),
                memory_kib: None
            })
        );
        assert!(s.validate().is_empty());
        assert_eq!(spec(&BASE).unwrap().luks.pbkdf, None);
    }

    #[test]
    fn pbkdf_flags_are_checked() {
        let err = spec(&[&BASE[..], &["--luks-pbkdf", "scrypt"]].concat()).unwrap_err();
        assert!(err.contains("argon2id, argon2i or pbkdf2"), "{err}");
        let err = spec(&[&BASE[..], &["--luks-pbkdf-iterations", "1000"]].concat()).unwrap_err();
        assert!(err.contains("--luks-pbkdf"), "{err}");
        let s = spec(
            &[
                &BASE[..],
                &["--luks-pbkdf", "pbkdf2", "--luks-pbkdf-memory-kib", "65536"],
            ]
            .concat(),
        )
        .unwrap();
        let paths: Vec<_> = s.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["luks.pbkdf.memoryKib"]);
    }

    #[test]
    fn pbkdf_from_a_yaml_spec_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storage.yaml");
        std::fs::write(
            &path,
            "osDisk: /dev/sda\nluks:\n  pbkdf:\n    type: argon2id\n    iterations: 4\n    memoryKib: 65536\n",
        )
        .unwrap();
        let s = spec(&["--spec", path.to_str().unwrap()]).unwrap();
        let text = kcore_disko::render_fragment(&s).unwrap();
        assert!(
            text.contains(
                r#""--pbkdf" "argon2id" "--pbkdf-force-iterations" "4" "--pbkdf-memory" "65536""#
            ),
            "{text}"
        );
        std::fs::write(
            &path,
            "osDisk: /dev/sda\nluks:\n  pbkdf:\n    type: pbkdf2\n    args: x\n",
        )
        .unwrap();
        let err = spec(&["--spec", path.to_str().unwrap()]).unwrap_err();
        assert!(
            err.contains("storage.yaml:5:5: luks.pbkdf.args: unknown key `args`"),
            "{err}"
        );
        // A value that decodes but is refused: the file once, the line of its key.
        std::fs::write(
            &path,
            "osDisk: /dev/sda\nluks:\n  mode: keyfile\n  keyFile: /boot/root.key\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from(["render", "--spec", path.to_str().unwrap()]).unwrap();
        let problems = cli.render.spec().unwrap().validate();
        let text = cli.render.invalid_text(&problems);
        assert!(
            text.starts_with(&format!(
                "{}: invalid storage spec:\nline 4: luks.keyFile",
                path.display()
            )),
            "{text}"
        );
    }
}
