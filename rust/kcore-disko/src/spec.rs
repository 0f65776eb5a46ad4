//! The typed storage spec of one node (the `storage` part of its configuration) and its
//! validation. Everything that later lands in a Nix fragment is checked here first, so the
//! renderer never sees a name or path that could mean something other than what it says.

use serde::{Deserialize, Serialize};

use kcore_api::validate as v;

use crate::Problem;

/// A kcore-api field error as a problem message (the field is the problem's path).
fn field_message(e: &v::FieldError) -> String {
    let text = e.to_string();
    text.strip_prefix(&format!("{}: ", e.field))
        .map(str::to_string)
        .unwrap_or(text)
}

/// Where kcore keeps VM volumes on the `filesystem` backend: data disk 0 mounts here,
/// disk 1 at `volumes1`, disk 2 at `volumes2`, ...
pub const VOLUMES_DIR: &str = "/var/lib/kcore/volumes";

/// The longest device path, name or prefix accepted (Linux's own limit for a file name).
const MAX_LEN: usize = 255;

/// The storage layout of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageSpec {
    /// The disk that holds the ESP and the encrypted root, e.g. `/dev/disk/by-id/nvme-...`.
    pub os_disk: String,
    /// Disks for VM volumes, in order (the first one is `volumes`, then `volumes1`, ...).
    #[serde(default)]
    pub data_disks: Vec<String>,
    /// How the data disks hold VM volumes.
    #[serde(default)]
    pub backend: Backend,
    /// LVM names (backend `lvm`).
    #[serde(default)]
    pub lvm: LvmSpec,
    /// ZFS names (backend `zfs`).
    #[serde(default)]
    pub zfs: ZfsSpec,
    /// How the OS disk's LUKS2 container is unlocked.
    #[serde(default)]
    pub luks: LuksSpec,
    /// How several data disks are combined.
    #[serde(default)]
    pub data_disk_mode: DataDiskMode,
}

/// The storage backend for VM volumes: kcore-api's one type, named here as specs call it.
pub use kcore_api::cluster::StorageBackend as Backend;

/// How several data disks are combined: kcore-api's one type (the install request carries it).
pub use kcore_api::install::DataDiskMode;

/// LVM names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LvmSpec {
    /// The volume group kcore owns.
    #[serde(default = "default_vg_name")]
    pub vg_name: String,
    /// Prefix of every LV kcore creates (the thin pool included).
    #[serde(default = "default_lv_prefix")]
    pub lv_prefix: String,
    /// An optional thin pool inside the VG.
    #[serde(default)]
    pub thin_pool: Option<ThinPoolSpec>,
}

/// A thin pool LV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThinPoolSpec {
    /// LV name after the prefix (`<lvPrefix><name>`).
    #[serde(default = "default_thin_pool_name")]
    pub name: String,
    /// LVM size: `90%` of the free space (the default) or an absolute size like `500G`.
    #[serde(default = "default_thin_pool_size")]
    pub size: String,
}

/// ZFS names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZfsSpec {
    /// The pool the data disks form.
    #[serde(default = "default_pool_name")]
    pub pool_name: String,
    /// The dataset under the pool that holds kcore's volumes (`<pool>/<prefix>`).
    #[serde(default = "default_dataset_prefix")]
    pub dataset_prefix: String,
}

impl ZfsSpec {
    /// The dataset that holds kcore's volumes, `<pool>/<prefix>`, with a trailing `/` of
    /// the prefix dropped (`kcore/` means datasets under `kcore`). Call after
    /// [`StorageSpec::validate`]; an invalid prefix is returned as written.
    pub fn dataset_prefix_normalized(&self) -> String {
        v::zfs_dataset_prefix("zfs.datasetPrefix", &self.dataset_prefix)
            .unwrap_or_else(|_| self.dataset_prefix.clone())
    }
}

/// LUKS unlock mode of the OS disk: kcore-api's one type.
pub use kcore_api::install::LuksMode;

/// The key file a node without a TPM is unlocked by when the operator names none
/// (docs/storage.md; outside the unencrypted ESP).
pub const DEFAULT_LUKS_KEY_FILE: &str = "/etc/kcore/luks/root.key";

/// Where the agent's inventory looks for a TPM, under the sysfs root: the kernel's first
/// TPM character device class entry.
pub const TPM_SYSFS_PATH: &str = "class/tpm/tpm0";

/// The LUKS mode an operator asks for (`kctl disko render --luks-mode`, the install's
/// `--luks`): kcore-api's one type. A spec file always holds a resolved [`LuksMode`].
pub use kcore_api::install::LuksChoice;

impl LuksSpec {
    /// Sets the resolved `mode`; keyfile mode without a key file gets
    /// [`DEFAULT_LUKS_KEY_FILE`].
    pub fn set_mode(&mut self, mode: LuksMode) {
        self.mode = mode;
        if mode == LuksMode::Keyfile && self.key_file.is_none() {
            self.key_file = Some(DEFAULT_LUKS_KEY_FILE.into());
        }
    }
}

/// LUKS settings of the OS disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LuksSpec {
    /// `tpm2` or `keyfile`.
    #[serde(default)]
    pub mode: LuksMode,
    /// Keyfile mode: the key file the container is formatted with and unlocked by.
    #[serde(default)]
    pub key_file: Option<String>,
    /// TPM2 mode: the file holding the install-time passphrase that `cryptsetup
    /// luksFormat` reads (the installer's random install key, whose slot it removes once
    /// the recovery key and the TPM2 key, PCRs 0+2+7, are enrolled at install).
    #[serde(default = "default_install_key_file")]
    pub install_key_file: String,
    /// The key derivation `cryptsetup luksFormat` uses for the keyslot. Unset: cryptsetup's
    /// own default (argon2id, benchmarked on the machine), which is what production wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pbkdf: Option<PbkdfSpec>,
}

/// The LUKS2 keyslot key derivation function (`cryptsetup --pbkdf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PbkdfType {
    /// Memory-hard; cryptsetup's default for LUKS2.
    Argon2id,
    /// Memory-hard, data-independent variant.
    Argon2i,
    /// Not memory-hard; cheap enough for slow (emulated) test machines.
    Pbkdf2,
}

impl PbkdfType {
    /// The name cryptsetup and the spec use.
    pub fn as_str(self) -> &'static str {
        match self {
            PbkdfType::Argon2id => "argon2id",
            PbkdfType::Argon2i => "argon2i",
            PbkdfType::Pbkdf2 => "pbkdf2",
        }
    }
}

impl std::str::FromStr for PbkdfType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "argon2id" => Ok(PbkdfType::Argon2id),
            "argon2i" => Ok(PbkdfType::Argon2i),
            "pbkdf2" => Ok(PbkdfType::Pbkdf2),
            other => Err(format!(
                "unknown LUKS pbkdf {other:?}: use argon2id, argon2i or pbkdf2"
            )),
        }
    }
}

/// cryptsetup's minimum forced iteration count for pbkdf2.
pub const PBKDF2_MIN_ITERATIONS: u32 = 1000;
/// cryptsetup's minimum forced iteration (time) cost for argon2.
pub const ARGON2_MIN_ITERATIONS: u32 = 4;
/// cryptsetup's smallest argon2 memory cost, in KiB.
pub const ARGON2_MIN_MEMORY_KIB: u32 = 32;
/// cryptsetup's largest argon2 memory cost, in KiB (4 GiB).
pub const ARGON2_MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;

/// Key derivation settings of the OS disk's LUKS2 keyslot. Without `iterations` (and
/// `memoryKib`) cryptsetup benchmarks the machine to pick them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PbkdfSpec {
    /// `argon2id`, `argon2i` or `pbkdf2`.
    #[serde(rename = "type")]
    pub kind: PbkdfType,
    /// Fixed iteration count (`--pbkdf-force-iterations`) instead of a benchmark: at least
    /// 1000 for pbkdf2, 4 for argon2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// Argon2 only: memory cost in KiB (`--pbkdf-memory`), 32 to 4194304.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_kib: Option<u32>,
}

impl PbkdfSpec {
    /// The `cryptsetup luksFormat` arguments these settings stand for (after validation).
    pub fn format_args(&self) -> Vec<String> {
        let mut args = vec!["--pbkdf".to_string(), self.kind.as_str().to_string()];
        if let Some(n) = self.iterations {
            args.extend(["--pbkdf-force-iterations".to_string(), n.to_string()]);
        }
        if let Some(m) = self.memory_kib {
            args.extend(["--pbkdf-memory".to_string(), m.to_string()]);
        }
        args
    }

    /// Every problem, as (field under `luks.pbkdf`, message).
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let min = match self.kind {
            PbkdfType::Pbkdf2 => PBKDF2_MIN_ITERATIONS,
            PbkdfType::Argon2id | PbkdfType::Argon2i => ARGON2_MIN_ITERATIONS,
        };
        if let Some(n) = self.iterations
            && n < min
        {
            out.push((
                "luks.pbkdf.iterations",
                format!(
                    "{n} is below cryptsetup's minimum for {}: use at least {min}, or leave it out to benchmark",
                    self.kind.as_str()
                ),
            ));
        }
        if let Some(m) = self.memory_kib {
            if self.kind == PbkdfType::Pbkdf2 {
                out.push((
                    "luks.pbkdf.memoryKib",
                    "is only used with argon2id or argon2i: remove it or change luks.pbkdf.type"
                        .into(),
                ));
            } else if !(ARGON2_MIN_MEMORY_KIB..=ARGON2_MAX_MEMORY_KIB).contains(&m) {
                out.push((
                    "luks.pbkdf.memoryKib",
                    format!(
                        "{m} is outside cryptsetup's range: give {ARGON2_MIN_MEMORY_KIB} to {ARGON2_MAX_MEMORY_KIB} KiB"
                    ),
                ));
            }
        }
        out
    }
}

impl LuksSpec {
    /// The OS disk's `cryptsetup luksFormat` arguments (disko's `extraFormatArgs`).
    pub fn format_args(&self) -> Vec<String> {
        let mut args = vec!["--type".to_string(), "luks2".to_string()];
        if let Some(p) = &self.pbkdf {
            args.extend(p.format_args());
        }
        args
    }
}

fn default_vg_name() -> String {
    "vg_kcore".into()
}
fn default_lv_prefix() -> String {
    "kcore-".into()
}
fn default_thin_pool_name() -> String {
    "thinpool".into()
}
fn default_thin_pool_size() -> String {
    "90%".into()
}
fn default_pool_name() -> String {
    "tank0".into()
}
fn default_dataset_prefix() -> String {
    "kcore".into()
}
fn default_install_key_file() -> String {
    "/tmp/kcore-luks-install.key".into()
}

impl Default for LvmSpec {
    fn default() -> Self {
        Self {
            vg_name: default_vg_name(),
            lv_prefix: default_lv_prefix(),
            thin_pool: None,
        }
    }
}

impl Default for ZfsSpec {
    fn default() -> Self {
        Self {
            pool_name: default_pool_name(),
            dataset_prefix: default_dataset_prefix(),
        }
    }
}

impl Default for LuksSpec {
    fn default() -> Self {
        Self {
            mode: LuksMode::Tpm2,
            key_file: None,
            install_key_file: default_install_key_file(),
            pbkdf: None,
        }
    }
}

impl StorageSpec {
    /// A spec with defaults for everything but the disks and the backend.
    pub fn new(os_disk: impl Into<String>, data_disks: Vec<String>, backend: Backend) -> Self {
        Self {
            os_disk: os_disk.into(),
            data_disks,
            backend,
            lvm: LvmSpec::default(),
            zfs: ZfsSpec::default(),
            luks: LuksSpec::default(),
            data_disk_mode: DataDiskMode::default(),
        }
    }

    /// Every problem with the spec, each naming the field and the fix. Empty means valid.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut push = |path: String, message: String| problems.push(Problem { path, message });
        if let Err(e) = v::block_device_path("osDisk", &self.os_disk) {
            push(e.field.clone(), field_message(&e));
        }
        for (i, disk) in self.data_disks.iter().enumerate() {
            if let Err(e) = v::block_device_path(&format!("dataDisks[{i}]"), disk) {
                push(e.field.clone(), field_message(&e));
            }
            if disk == &self.os_disk {
                push(
                    format!("dataDisks[{i}]"),
                    "is the OS disk: list each disk once, the OS disk only as osDisk".into(),
                );
            }
            if self.data_disks[..i].contains(disk) {
                push(
                    format!("dataDisks[{i}]"),
                    format!("{disk:?} is listed twice: list each data disk once"),
                );
            }
        }
        match self.backend {
            Backend::Filesystem => {}
            Backend::Lvm => {
                if let Err(e) = v::lvm_vg_name("lvm.vgName", &self.lvm.vg_name) {
                    push(e.field.clone(), field_message(&e));
                }
                if let Err(e) = v::lvm_lv_prefix("lvm.lvPrefix", &self.lvm.lv_prefix) {
                    push(e.field.clone(), field_message(&e));
                }
                if let Some(pool) = &self.lvm.thin_pool {
                    // The LV is <lvPrefix><name>: check the name and the full LV name.
                    let full = format!("{}{}", self.lvm.lv_prefix, pool.name);
                    if let Err(e) = v::lvm_lv_name("lvm.thinPool.name", &pool.name)
                        .and_then(|()| v::lvm_lv_name("lvm.thinPool.name", &full))
                    {
                        push(e.field.clone(), field_message(&e));
                    }
                    if let Err(m) = check_lvm_size(&pool.size) {
                        push("lvm.thinPool.size".into(), m);
                    }
                }
            }
            Backend::Zfs => {
                if let Err(e) = v::zfs_pool_name("zfs.poolName", &self.zfs.pool_name) {
                    push(e.field.clone(), field_message(&e));
                }
                // The same rule as the agent's configuration (kcore-api), so a prefix one
                // accepts the other does; `kcore/` is the guide's spelling of `kcore`.
                if let Err(e) = v::zfs_dataset_prefix("zfs.datasetPrefix", &self.zfs.dataset_prefix)
                {
                    push(e.field.clone(), field_message(&e));
                }
            }
        }
        if self.data_disk_mode == DataDiskMode::Mirror {
            if self.backend != Backend::Zfs {
                push(
                    "dataDiskMode".into(),
                    "mirror needs backend zfs: use stripe, or set backend to zfs".into(),
                );
            } else if self.data_disks.len() < 2 {
                push(
                    "dataDiskMode".into(),
                    "mirror needs at least two data disks: add one or use stripe".into(),
                );
            }
        }
        if self.backend != Backend::Filesystem && self.data_disks.is_empty() {
            push(
                "dataDisks".into(),
                format!(
                    "backend {} needs at least one data disk: add one or use backend filesystem",
                    self.backend.as_str()
                ),
            );
        }
        match self.luks.mode {
            LuksMode::Tpm2 => {
                if self.luks.key_file.is_some() {
                    push(
                        "luks.keyFile".into(),
                        "is only used with mode keyfile: remove it or set luks.mode to keyfile"
                            .into(),
                    );
                }
                if let Err(m) = check_key_path(&self.luks.install_key_file) {
                    push("luks.installKeyFile".into(), m);
                }
            }
            LuksMode::Keyfile => match &self.luks.key_file {
                None => push(
                    "luks.keyFile".into(),
                    "is required with mode keyfile: give an absolute path outside /boot, e.g. /etc/kcore/luks/root.key".into(),
                ),
                Some(path) => {
                    if let Err(m) = check_key_path(path) {
                        push("luks.keyFile".into(), m);
                    }
                }
            },
        }
        if let Some(pbkdf) = &self.luks.pbkdf {
            for (path, message) in pbkdf.problems() {
                push(path.into(), message);
            }
        }
        problems
    }

    /// The mount point of data disk `index` on the filesystem backend.
    pub fn volume_dir(index: usize) -> String {
        if index == 0 {
            VOLUMES_DIR.to_string()
        } else {
            format!("{VOLUMES_DIR}{index}")
        }
    }
}

fn check_common(value: &str, what: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("is empty: give a {what}"));
    }
    if value.len() > MAX_LEN {
        return Err(format!(
            "is {} characters long: a {what} has at most {MAX_LEN}",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || !c.is_ascii())
    {
        return Err(format!(
            "contains {c:?}: a {what} has no spaces, control or non-ASCII characters"
        ));
    }
    Ok(())
}

/// An LVM size as disko passes it to lvcreate: `N%` of the free space or `N[KMGTP]`.
pub fn check_lvm_size(size: &str) -> Result<(), String> {
    let fix = "use a percentage of the free space like 90% or a size like 500G";
    let digits = size.trim_end_matches(['%', 'K', 'M', 'G', 'T', 'P']);
    let suffix = &size[digits.len()..];
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || suffix.len() > 1 {
        return Err(format!("{size:?} is not an LVM size: {fix}"));
    }
    if suffix == "%" && digits.parse::<u32>().map_or(true, |p| p == 0 || p > 100) {
        return Err(format!("{size:?} is not between 1% and 100%: {fix}"));
    }
    Ok(())
}

/// A key file path: absolute, no `..`, and never on the unencrypted ESP (`/boot`).
pub fn check_key_path(path: &str) -> Result<(), String> {
    check_common(path, "key file path")?;
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not absolute: give an absolute path"));
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/._-+@".contains(*c)))
    {
        return Err(format!(
            "{path:?} contains {c:?}: use only letters, digits and / . _ - + @"
        ));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(format!("{path:?} contains ..: give the real path"));
    }
    if path == "/boot" || path.starts_with("/boot/") {
        return Err(format!(
            "{path:?} is on the unencrypted ESP (/boot): keep the key elsewhere, e.g. /etc/kcore/luks/root.key"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(spec: &StorageSpec) -> Vec<String> {
        spec.validate().into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn defaults_come_from_serde() {
        let spec: StorageSpec = serde_json::from_str(
            r#"{"osDisk":"/dev/sda","dataDisks":["/dev/sdb"],"backend":"lvm"}"#,
        )
        .unwrap();
        assert_eq!(spec.lvm.vg_name, "vg_kcore");
        assert_eq!(spec.zfs.pool_name, "tank0");
        assert_eq!(spec.luks.mode, LuksMode::Tpm2);
        assert!(spec.validate().is_empty(), "{:?}", spec.validate());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<StorageSpec>(r#"{"osDisk":"/dev/sda","osdisk":"x"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `osdisk`"), "{err}");
    }

    #[test]
    fn adversarial_values_name_their_field() {
        let long = format!("/dev/{}", "a".repeat(300));
        for bad in [
            "",
            "/dev/sd\"a",
            "/dev/${x}",
            "/dev/a\nb",
            "/dev/a b",
            "sda",
            "/dev/../etc",
            long.as_str(),
            "/dev/a''b",
        ] {
            let spec = StorageSpec::new(bad, vec![], Backend::Filesystem);
            assert_eq!(paths(&spec), ["osDisk"], "{bad:?}");
        }
        let mut spec = StorageSpec::new("/dev/sda", vec!["/dev/sdb".into()], Backend::Lvm);
        spec.lvm.vg_name = "vg\"; x = \"".into();
        assert_eq!(paths(&spec), ["lvm.vgName"]);
        let mut spec = StorageSpec::new("/dev/sda", vec!["/dev/sdb".into()], Backend::Zfs);
        spec.zfs.pool_name = "mirror0".into();
        spec.zfs.dataset_prefix = "a//b".into();
        assert_eq!(paths(&spec), ["zfs.poolName", "zfs.datasetPrefix"]);
    }

    #[test]
    fn key_never_on_the_esp() {
        let mut spec = StorageSpec::new("/dev/sda", vec![], Backend::Filesystem);
        spec.luks.mode = LuksMode::Keyfile;
        assert_eq!(paths(&spec), ["luks.keyFile"]);
        spec.luks.key_file = Some("/boot/root.key".into());
        let problems = spec.validate();
        assert!(problems[0].message.contains("ESP"), "{problems:?}");
        spec.luks.key_file = Some("/etc/kcore/luks/root.key".into());
        assert!(spec.validate().is_empty());
    }

    #[test]
    fn disks_are_distinct_and_mirror_needs_zfs() {
        let mut spec = StorageSpec::new(
            "/dev/sda",
            vec!["/dev/sdb".into(), "/dev/sdb".into(), "/dev/sda".into()],
            Backend::Filesystem,
        );
        spec.data_disk_mode = DataDiskMode::Mirror;
        assert_eq!(
            paths(&spec),
            ["dataDisks[1]", "dataDisks[2]", "dataDiskMode"]
        );
    }

    #[test]
    fn pbkdf_is_checked_per_type() {
        let mut spec = StorageSpec::new("/dev/sda", vec![], Backend::Filesystem);
        assert_eq!(spec.luks.format_args(), ["--type", "luks2"]);
        spec.luks.pbkdf = Some(PbkdfSpec {
            kind: PbkdfType::Pbkdf2,
            iterations: Some(999),
            memory_kib: Some(65536),
        });
        assert_eq!(
            paths(&spec),
            ["luks.pbkdf.iterations", "luks.pbkdf.memoryKib"]
        );
        spec.luks.pbkdf = Some(PbkdfSpec {
            kind: PbkdfType::Pbkdf2,
            iterations: Some(1000),
            memory_kib: None,
        });
        assert!(spec.validate().is_empty());
        assert_eq!(
            spec.luks.format_args(),
            [
                "--type",
                "luks2",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000"
            ]
        );
        spec.luks.pbkdf = Some(PbkdfSpec {
            kind: PbkdfType::Argon2id,
            iterations: Some(3),
            memory_kib: Some(16),
        });
        assert_eq!(
            paths(&spec),
            ["luks.pbkdf.iterations", "luks.pbkdf.memoryKib"]
        );
        spec.luks.pbkdf = Some(PbkdfSpec {
            kind: PbkdfType::Argon2i,
            iterations: Some(4),
            memory_kib: Some(32),
        });
        assert!(spec.validate().is_empty());
        assert_eq!(
            spec.luks.format_args()[2..],
            [
                "--pbkdf",
                "argon2i",
                "--pbkdf-force-iterations",
                "4",
                "--pbkdf-memory",
                "32"
            ]
        );
    }

    #[test]
    fn pbkdf_from_a_spec_file() {
        let spec: StorageSpec = serde_json::from_str(
            r#"{"osDisk":"/dev/sda","luks":{"pbkdf":{"type":"pbkdf2","iterations":1000}}}"#,
        )
        .unwrap();
        assert_eq!(spec.luks.pbkdf.as_ref().unwrap().kind, PbkdfType::Pbkdf2);
        for bad in [
            r#"{"osDisk":"/dev/sda","luks":{"pbkdf":{"type":"scrypt"}}}"#,
            r#"{"osDisk":"/dev/sda","luks":{"pbkdf":{"type":"pbkdf2","args":"--x"}}}"#,
            r#"{"osDisk":"/dev/sda","luks":{"pbkdf":{"type":"pbkdf2","iterations":-1}}}"#,
        ] {
            assert!(serde_json::from_str::<StorageSpec>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lvm_sizes() {
        for good in ["90%", "100%", "500G", "1024"] {
            assert!(check_lvm_size(good).is_ok(), "{good}");
        }
        for bad in ["", "0%", "101%", "5GG", "x", "-1G"] {
            assert!(check_lvm_size(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod luks_choice_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn auto_is_tpm2_with_a_tpm_keyfile_without_and_undecided_unknown() {
        assert_eq!(LuksChoice::Auto.resolve(Some(true)), Ok(LuksMode::Tpm2));
        assert_eq!(LuksChoice::Auto.resolve(Some(false)), Ok(LuksMode::Keyfile));
        let err = LuksChoice::Auto.resolve(None).unwrap_err();
        assert!(
            err.contains("--node") && err.contains("tpm2|keyfile"),
            "{err}"
        );
        // An explicit choice stands whatever the node has.
        assert_eq!(
            LuksChoice::Keyfile.resolve(Some(true)),
            Ok(LuksMode::Keyfile)
        );
        assert_eq!(LuksChoice::Tpm2.resolve(None), Ok(LuksMode::Tpm2));

        let mut luks = LuksSpec::default();
        luks.set_mode(LuksMode::Keyfile);
        assert_eq!(luks.key_file.as_deref(), Some(DEFAULT_LUKS_KEY_FILE));
        let mut spec = StorageSpec::new("/dev/sda", vec![], Backend::Filesystem);
        spec.luks.set_mode(LuksMode::Keyfile);
        assert!(spec.validate().is_empty(), "{:?}", spec.validate());
    }
}
