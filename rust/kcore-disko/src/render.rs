//! Rendering a validated [`StorageSpec`] into a readable disko fragment with tera.
//!
//! The fragment is a NixOS module of the shape `{ disko.devices = { disk = ...; lvm_vg = ...;
//! zpool = ...; }; }`, which is what disko's own examples look like and what
//! `kcore.storage.diskoFragments` merges. Disks are named `os` and `data0`, `data1`, ... in
//! spec order; the day-2 fragment for one new disk uses the same names so the two merge.
//!
//! Safety: autoescape is off (it is HTML escaping), and instead every `{{ }}` in the templates
//! must end in one of two filters registered here: `nix` (a quoted Nix string, via
//! `kcore_nix::escape`) or `nix_attr` (an attribute name, quoted when needed). A test reads the
//! templates and fails on any interpolation without them, and values are validated by
//! [`StorageSpec::validate`] before rendering anyway.

use std::collections::HashMap;

use serde::Serialize;

use crate::spec::{Backend, DataDiskMode, StorageSpec};

/// The templates, compiled into the binary: (name, source).
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "fragment.nix",
        include_str!("../templates/fragment.nix.tera"),
    ),
    ("os-disk.nix", include_str!("../templates/os-disk.nix.tera")),
    (
        "data-disk.nix",
        include_str!("../templates/data-disk.nix.tera"),
    ),
    ("lvm-vg.nix", include_str!("../templates/lvm-vg.nix.tera")),
    ("zpool.nix", include_str!("../templates/zpool.nix.tera")),
];

/// The name of the OS disk's LUKS mapping (`/dev/mapper/crypted`).
pub const LUKS_NAME: &str = "crypted";

/// Why a spec could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The spec failed validation; nothing was rendered.
    #[error("invalid storage spec:\n{}", crate::join_problems(.0))]
    Invalid(Vec<crate::Problem>),
    /// A template failed (a bug in kcore, not in the spec).
    #[error("template error: {0}")]
    Template(String),
}

#[derive(Serialize)]
struct OsCtx {
    attr: String,
    device: String,
    luks_name: String,
    luks_mode: String,
    key_file: String,
    install_key_file: String,
    /// `cryptsetup luksFormat` arguments, each escaped by the template.
    luks_format_args: Vec<String>,
}

#[derive(Serialize)]
struct DiskCtx {
    attr: String,
    part: String,
    device: String,
    kind: String,
    mountpoint: String,
    vg: String,
    pool: String,
}

#[derive(Serialize)]
struct ThinCtx {
    name: String,
    size: String,
}

#[derive(Serialize)]
struct LvmCtx {
    vg: String,
    thin: Option<ThinCtx>,
}

#[derive(Serialize)]
struct ZfsCtx {
    pool: String,
    mode: String,
    dataset: String,
}

#[derive(Serialize)]
struct FragmentCtx {
    os: Option<OsCtx>,
    data: Vec<DiskCtx>,
    lvm: Option<LvmCtx>,
    zfs: Option<ZfsCtx>,
}

/// The disko attribute name of data disk `index`.
pub fn data_disk_attr(index: usize) -> String {
    format!("data{index}")
}

/// The whole fragment for a node: OS disk and every data disk.
pub fn render_fragment(spec: &StorageSpec) -> Result<String, RenderError> {
    // The template's LUKS branches are named as the modes are spelt (`tpm2`, `keyfile`).
    render_node(
        spec,
        spec.luks.mode.as_str(),
        spec.luks.key_file.clone().unwrap_or_default(),
    )
}

/// The layout `kcore-agent` installs a node with (`POST /v1/install/run`): the whole
/// fragment, with the OS disk's LUKS2 container formatted from `luks.installKeyFile` in
/// both modes (disko's `passwordFile`; a key file in `settings.keyFile` would be what
/// luksFormat reads instead, disko `lib/types/luks.nix`). The TPM2 slot or the key
/// device's slot is added after the format and the install key's slot removed, so the
/// unlock settings of the installed system are its own modules', not this layout's.
pub fn render_install_fragment(spec: &StorageSpec) -> Result<String, RenderError> {
    render_node(spec, "install", String::new())
}

/// The OS disk with the template's LUKS branch `luks_mode`, and every data disk.
fn render_node(
    spec: &StorageSpec,
    luks_mode: &str,
    key_file: String,
) -> Result<String, RenderError> {
    check(spec)?;
    let data = spec
        .data_disks
        .iter()
        .enumerate()
        .map(|(i, d)| disk_ctx(spec, i, d))
        .collect();
    let os = OsCtx {
        attr: "os".into(),
        device: spec.os_disk.clone(),
        luks_name: LUKS_NAME.into(),
        luks_mode: luks_mode.into(),
        key_file,
        install_key_file: spec.luks.install_key_file.clone(),
        luks_format_args: spec.luks.format_args(),
    };
    render_ctx(&FragmentCtx {
        os: Some(os),
        data,
        lvm: lvm_ctx(spec),
        zfs: zfs_ctx(spec),
    })
}

/// The LUKS2 partition of the OS disk the layout gives `os_disk` (by-id): disko numbers
/// the partitions in order of their priority, the ESP first (`EF00`), the `100%` root
/// last, so the root is partition 2 and udev names it `<by-id>-part2`.
pub fn os_luks_partition(os_disk: &str) -> String {
    format!("{os_disk}-part2")
}

/// The day-2 fragment for ONE new data disk at position `index` (so it mounts at
/// `volumes<index>` or joins the spec's VG/pool), renderable on its own. The spec supplies
/// the backend and names; its `dataDisks` are not rendered.
pub fn render_data_disk(
    spec: &StorageSpec,
    device: &str,
    index: usize,
) -> Result<String, RenderError> {
    let mut probe = spec.clone();
    probe.data_disks = vec![device.to_string()];
    probe.data_disk_mode = DataDiskMode::Stripe;
    // A day-2 fragment holds only the new disk, so the operator need not repeat the OS
    // disk; every other field is still checked.
    let problems: Vec<_> = probe
        .validate()
        .into_iter()
        .filter(|p| !(probe.os_disk.is_empty() && p.path == "osDisk"))
        .collect();
    if !problems.is_empty() {
        return Err(RenderError::Invalid(problems));
    }
    render_ctx(&FragmentCtx {
        os: None,
        data: vec![disk_ctx(spec, index, device)],
        lvm: lvm_ctx(spec),
        zfs: zfs_ctx(&probe),
    })
}

fn check(spec: &StorageSpec) -> Result<(), RenderError> {
    let problems = spec.validate();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RenderError::Invalid(problems))
    }
}

fn disk_ctx(spec: &StorageSpec, index: usize, device: &str) -> DiskCtx {
    let (kind, part) = match spec.backend {
        Backend::Filesystem => ("filesystem", "volumes"),
        Backend::Lvm => ("lvm", "pv"),
        Backend::Zfs => ("zfs", "zfs"),
    };
    DiskCtx {
        attr: data_disk_attr(index),
        part: part.into(),
        device: device.into(),
        kind: kind.into(),
        mountpoint: StorageSpec::volume_dir(index),
        vg: spec.lvm.vg_name.clone(),
        pool: spec.zfs.pool_name.clone(),
    }
}

fn lvm_ctx(spec: &StorageSpec) -> Option<LvmCtx> {
    (spec.backend == Backend::Lvm).then(|| LvmCtx {
        vg: spec.lvm.vg_name.clone(),
        thin: spec.lvm.thin_pool.as_ref().map(|t| ThinCtx {
            name: format!("{}{}", spec.lvm.lv_prefix, t.name),
            size: t.size.clone(),
        }),
    })
}

fn zfs_ctx(spec: &StorageSpec) -> Option<ZfsCtx> {
    (spec.backend == Backend::Zfs).then(|| ZfsCtx {
        pool: spec.zfs.pool_name.clone(),
        mode: match spec.data_disk_mode {
            DataDiskMode::Stripe => String::new(),
            DataDiskMode::Mirror => "mirror".into(),
        },
        dataset: spec.zfs.dataset_prefix_normalized(),
    })
}

fn engine() -> Result<tera::Tera, RenderError> {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![]);
    // Trailing newlines are trimmed so includes do not leave blank lines behind.
    tera.add_raw_templates(TEMPLATES.iter().map(|(n, t)| (*n, t.trim_end())))
        .map_err(|e| RenderError::Template(format!("{e:#?}")))?;
    tera.register_filter("nix", nix_filter);
    tera.register_filter("nix_attr", nix_attr_filter);
    Ok(tera)
}

/// The compiled templates, built once per process (parsing them is most of a render).
fn shared_engine() -> Result<&'static tera::Tera, RenderError> {
    static ENGINE: std::sync::OnceLock<Result<tera::Tera, String>> = std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| engine().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| RenderError::Template(e.clone()))
}

fn render_ctx(ctx: &FragmentCtx) -> Result<String, RenderError> {
    let tera = shared_engine()?;
    let context =
        tera::Context::from_serialize(ctx).map_err(|e| RenderError::Template(e.to_string()))?;
    let mut text = tera
        .render("fragment.nix", &context)
        .map_err(|e| RenderError::Template(format!("{e:?}")))?;
    text.push('\n');
    Ok(text)
}

fn filter_input(value: &tera::Value, filter: &str) -> tera::Result<String> {
    match value {
        tera::Value::String(s) => Ok(s.clone()),
        other => Err(tera::Error::msg(format!(
            "the {filter} filter takes a string, got {other}: convert it in Rust first"
        ))),
    }
}

fn nix_filter(value: &tera::Value, _: &HashMap<String, tera::Value>) -> tera::Result<tera::Value> {
    let s = filter_input(value, "nix")?;
    kcore_nix::escape::nix_string(&s)
        .map(tera::Value::String)
        .map_err(|e| tera::Error::msg(e.to_string()))
}

fn nix_attr_filter(
    value: &tera::Value,
    _: &HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    let s = filter_input(value, "nix_attr")?;
    kcore_nix::escape::attr_name(&s)
        .map(tera::Value::String)
        .map_err(|e| tera::Error::msg(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interpolation_goes_through_an_escaping_filter() {
        let mut seen = 0;
        for (name, source) in TEMPLATES {
            let mut rest = *source;
            while let Some(start) = rest.find("{{") {
                let end = rest[start..]
                    .find("}}")
                    .unwrap_or_else(|| panic!("{name}: unterminated {{{{"));
                let expr = rest[start + 2..start + end].trim();
                assert!(
                    expr.ends_with("| nix") || expr.ends_with("| nix_attr"),
                    "{name}: `{{{{ {expr} }}}}` does not end in `| nix` or `| nix_attr`"
                );
                seen += 1;
                rest = &rest[start + end + 2..];
            }
            assert!(
                !source.contains("{%raw"),
                "{name}: raw blocks are not allowed"
            );
            assert!(
                !source.contains("{% raw"),
                "{name}: raw blocks are not allowed"
            );
        }
        assert!(seen > 10, "the check found only {seen} interpolations");
    }

    #[test]
    fn values_are_escaped_even_if_validation_were_bypassed() {
        let ctx = FragmentCtx {
            os: None,
            data: vec![DiskCtx {
                attr: "data0".into(),
                part: "volumes".into(),
                device: "/dev/x\"; evil = \"${builtins.abort 1}".into(),
                kind: "filesystem".into(),
                mountpoint: "/var/lib/kcore/volumes".into(),
                vg: String::new(),
                pool: String::new(),
            }],
            lvm: None,
            zfs: None,
        };
        let out = render_ctx(&ctx).unwrap();
        assert!(
            out.contains(r#"device = "/dev/x\"; evil = \"\${builtins.abort 1}";"#),
            "{out}"
        );
    }

    #[test]
    fn invalid_spec_renders_nothing() {
        let spec = StorageSpec::new("/dev/sda\"", vec![], Backend::Filesystem);
        match render_fragment(&spec) {
            Err(RenderError::Invalid(p)) => assert_eq!(p[0].path, "osDisk"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn filesystem_mounts_follow_disk_order() {
        let spec = StorageSpec::new(
            "/dev/sda",
            vec!["/dev/sdb".into(), "/dev/sdc".into(), "/dev/sdd".into()],
            Backend::Filesystem,
        );
        let out = render_fragment(&spec).unwrap();
        let a = out.find("\"/var/lib/kcore/volumes\"").unwrap();
        let b = out.find("\"/var/lib/kcore/volumes1\"").unwrap();
        let c = out.find("\"/var/lib/kcore/volumes2\"").unwrap();
        assert!(a < b && b < c);
        assert!(out.find("\"/dev/sdb\"").unwrap() < a);
    }

    #[test]
    fn pbkdf_lands_in_extra_format_args() {
        let mut spec = StorageSpec::new("/dev/sda", vec![], Backend::Filesystem);
        spec.luks.pbkdf = Some(crate::spec::PbkdfSpec {
            kind: crate::spec::PbkdfType::Argon2id,
            iterations: Some(4),
            memory_kib: Some(65536),
        });
        let out = render_fragment(&spec).unwrap();
        assert!(
            out.contains(
                r#"extraFormatArgs = [ "--type" "luks2" "--pbkdf" "argon2id" "--pbkdf-force-iterations" "4" "--pbkdf-memory" "65536" ];"#
            ),
            "{out}"
        );
    }

    #[test]
    fn day2_disk_is_named_and_mounted_by_index() {
        let spec = StorageSpec::new("/dev/sda", vec![], Backend::Filesystem);
        let out = render_data_disk(&spec, "/dev/disk/by-id/ata-NEW", 3).unwrap();
        assert!(out.contains("data3 = {"), "{out}");
        assert!(out.contains("\"/var/lib/kcore/volumes3\""), "{out}");
        assert!(!out.contains("os = {"), "{out}");
    }
}

#[cfg(test)]
mod install_tests {
    use super::*;
    use crate::spec::{Backend, LuksMode};

    #[test]
    fn the_install_layout_formats_with_the_install_key_in_both_modes() {
        for mode in [LuksMode::Tpm2, LuksMode::Keyfile] {
            let mut spec = StorageSpec::new(
                "/dev/disk/by-id/ata-OS",
                vec!["/dev/disk/by-id/ata-DATA".into()],
                Backend::Lvm,
            );
            spec.luks.set_mode(mode);
            spec.luks.install_key_file = "/run/kcore-install/install.key".into();
            let text = render_install_fragment(&spec).unwrap();
            assert!(
                text.contains(r#"passwordFile = "/run/kcore-install/install.key";"#),
                "{text}"
            );
            assert!(!text.contains("keyFile ="), "{mode:?}: {text}");
            assert!(!text.contains("crypttabExtraOpts"), "{mode:?}: {text}");
            assert!(text.contains(r#"device = "/dev/disk/by-id/ata-DATA";"#));
            assert!(crate::syntax::check("install.nix", &text).is_empty());
        }
        assert_eq!(
            os_luks_partition("/dev/disk/by-id/ata-OS"),
            "/dev/disk/by-id/ata-OS-part2"
        );
    }
}
