//! `kcore-agent provision-disk`: the LVM identity reset for a node's data partition.
//!
//! The partition (found by its GPT label under `/dev/disk/by-partlabel/`) carries one
//! volume group holding a thin pool and a small thin "metadata" LV whose first bytes are
//! the id of the node that owns the data. On every run:
//!
//! - nothing there yet: create PV, VG, thin pool (100% of the free space) and the
//!   metadata LV with this node's id;
//! - the stored id is this node's: keep everything; if the PV grew, extend the pool;
//! - the id differs or is missing: remove that VG's LVs, the VG and the PV (that VG
//!   only, named explicitly in every command), then create everything afresh.
//!
//! It never touches another VG: a partition that is a PV of a different VG, or a VG of
//! our name that lives on other PVs, is refused. Every step logs what it found and does;
//! a failure logs the step, leaves a retry marker (cleared by the next run) and exits
//! non-zero. The decision is the pure [`decide`], tested here; the commands run against
//! real disks in the storage test bed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kcore_nix::Tool;
use kcore_nix::commands::LvmChange;
use kcore_nix::programs::{LVS, PVS, VGS};
use kcore_nix::queries::LvmReport;
use kcore_nix::runner::{Invocation, RunError};
use serde::Deserialize;

/// The thin LV that holds the owner's node id.
pub const META_LV: &str = "kcore-node-id";
/// Its virtual size: one extent is plenty for a line of text.
pub const META_LV_SIZE: &str = "4M";
/// What the metadata LV starts with, followed by the id and a newline.
pub const ID_PREFIX: &str = "kcore-node-id=";

const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// The command-line inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionArgs {
    pub partition_label: String,
    pub volume_group: String,
    pub pool: String,
    pub node_id: String,
    /// Where the retry marker lives.
    pub marker_dir: PathBuf,
    /// Usually `/dev/disk/by-partlabel`; the bed may point elsewhere.
    pub by_partlabel_dir: PathBuf,
}

/// What the run found on the machine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// The partition's device path.
    pub device: String,
    /// The VG the partition is a PV of, if it is a PV.
    pub device_vg: Option<String>,
    /// The PVs of the VG named `volume_group`, if it exists.
    pub vg_pvs: Vec<String>,
    pub vg_exists: bool,
    /// The id read from the metadata LV (None: no LV, or unreadable, or not ours).
    pub stored_id: Option<String>,
    pub pool_exists: bool,
    pub meta_exists: bool,
    /// Free bytes in the VG after `pvresize` (a grown PV shows up here).
    pub vg_free_bytes: u64,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Remove this VG's LVs, the VG and the PV.
    Reset,
    CreatePv,
    CreateVg,
    CreatePool,
    CreateMeta,
    WriteId,
    /// Grow the pool into the VG's free space.
    ExtendPool,
}

/// Refusals: the run would touch something that is not its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{device} is a physical volume of volume group {found}, not {expected}: refusing to touch another volume group (remove it by hand if it is really unused)"
    )]
    ForeignVg {
        device: String,
        found: String,
        expected: String,
    },
    #[error(
        "volume group {vg} exists on {pvs:?}, not on {device}: refusing to touch it (rename one of them)"
    )]
    VgElsewhere {
        vg: String,
        pvs: Vec<String>,
        device: String,
    },
}

/// What to do, given what was found.
pub fn decide(args: &ProvisionArgs, seen: &Observed) -> Result<Vec<Step>, Refusal> {
    if let Some(found) = &seen.device_vg {
        if *found != args.volume_group {
            return Err(Refusal::ForeignVg {
                device: seen.device.clone(),
                found: found.clone(),
                expected: args.volume_group.clone(),
            });
        }
    }
    if seen.vg_exists && seen.device_vg.is_none() {
        return Err(Refusal::VgElsewhere {
            vg: args.volume_group.clone(),
            pvs: seen.vg_pvs.clone(),
            device: seen.device.clone(),
        });
    }
    if seen.vg_exists && seen.vg_pvs.iter().any(|p| *p != seen.device) {
        return Err(Refusal::VgElsewhere {
            vg: args.volume_group.clone(),
            pvs: seen.vg_pvs.clone(),
            device: seen.device.clone(),
        });
    }
    let fresh = vec![
        Step::CreatePv,
        Step::CreateVg,
        Step::CreatePool,
        Step::CreateMeta,
        Step::WriteId,
    ];
    if seen.device_vg.is_none() {
        return Ok(fresh);
    }
    if seen.stored_id.as_deref() != Some(args.node_id.as_str()) {
        let mut steps = vec![Step::Reset];
        steps.extend(fresh);
        return Ok(steps);
    }
    // Same owner: repair what is missing, grow what can grow.
    let mut steps = Vec::new();
    if !seen.pool_exists {
        steps.push(Step::CreatePool);
    } else if seen.vg_free_bytes > 0 {
        steps.push(Step::ExtendPool);
    }
    Ok(steps)
}

/// Provisioning failed at a step.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("step {step}: {message}")]
    Step { step: String, message: String },
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// A failure with the retry marker it left, so the operator (or an init container's
    /// log) learns where the marker is and how to clear it.
    #[error(
        "{error}; retry marker left at {} (the next run retries and removes it; `rm {}` clears it by hand)",
        marker.display(),
        marker.display()
    )]
    Marked {
        error: Box<ProvisionError>,
        marker: PathBuf,
    },
}

fn step_err(step: &str, message: impl std::fmt::Display) -> ProvisionError {
    ProvisionError::Step {
        step: step.to_string(),
        message: message.to_string(),
    }
}

/// The retry marker's path for a VG.
pub fn marker_path(args: &ProvisionArgs) -> PathBuf {
    args.marker_dir
        .join(format!("provision-disk-{}.retry", args.volume_group))
}

/// Run the whole flow, with marker handling and log lines.
pub async fn provision(args: &ProvisionArgs) -> Result<Vec<Step>, ProvisionError> {
    let marker = marker_path(args);
    if let Ok(previous) = std::fs::read_to_string(&marker) {
        tracing::warn!(marker = %marker.display(), previous = %previous.trim(), "a previous run failed; retrying and clearing its marker");
        let _ = std::fs::remove_file(&marker);
    }
    match provision_inner(args).await {
        Ok(steps) => {
            // The operator guide's completion line, which init-container logs are grepped for.
            tracing::info!(vg = %args.volume_group, node = %args.node_id, "disk provisioning completed successfully");
            Ok(steps)
        }
        Err(err) => {
            tracing::error!(error = %err, "provision-disk failed");
            let _ = std::fs::create_dir_all(&args.marker_dir);
            match std::fs::write(&marker, format!("{err}\n")) {
                Ok(()) => Err(ProvisionError::Marked {
                    error: Box::new(err),
                    marker,
                }),
                Err(e) => {
                    tracing::error!(marker = %marker.display(), error = %e, "cannot write the retry marker");
                    Err(err)
                }
            }
        }
    }
}

async fn run(
    tool: Tool,
    args: Vec<std::ffi::OsString>,
    step: &str,
) -> Result<String, ProvisionError> {
    let program = tool.resolve(None).map_err(|e| step_err(step, e))?;
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    tracing::info!(step, command = %format!("{} {}", tool.name, shown.join(" ")), "running");
    tracing::debug!(step, program = %program.path().display(), timeout_seconds = STEP_TIMEOUT.as_secs(), "step starts");
    let out = Invocation::new(&program)
        .args(args)
        .timeout(STEP_TIMEOUT)
        .output()
        .await
        .map_err(|e: RunError| step_err(step, e))?;
    let stdout = out.stdout_lossy();
    tracing::debug!(step, stdout = %stdout.trim(), "step done");
    Ok(stdout)
}

/// Runs one LVM change.
async fn change(change: LvmChange, step: &str) -> Result<String, ProvisionError> {
    run(change.tool(), change.argv(), step).await
}

#[derive(Debug, Deserialize)]
struct Report<T> {
    report: Vec<T>,
}
#[derive(Debug, Deserialize)]
struct PvSection {
    #[serde(default)]
    pv: Vec<PvRow>,
}
#[derive(Debug, Deserialize)]
struct PvRow {
    pv_name: String,
    #[serde(default)]
    vg_name: String,
}
#[derive(Debug, Deserialize)]
struct VgSection {
    #[serde(default)]
    vg: Vec<VgRow>,
}
#[derive(Debug, Deserialize)]
struct VgRow {
    vg_free: String,
}
#[derive(Debug, Deserialize)]
struct LvSection {
    #[serde(default)]
    lv: Vec<LvRow>,
}
#[derive(Debug, Deserialize)]
struct LvRow {
    lv_name: String,
}

/// `pvs` JSON → (pv path, vg name or "").
pub fn parse_pvs(json: &str) -> Result<Vec<(String, String)>, serde_json::Error> {
    let r: Report<PvSection> = serde_json::from_str(json)?;
    Ok(r.report
        .into_iter()
        .flat_map(|s| s.pv)
        .map(|p| (p.pv_name, p.vg_name))
        .collect())
}

fn canonical(path: &str) -> String {
    std::fs::canonicalize(path)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.to_string())
}

/// The id on the metadata LV: `kcore-node-id=<id>\n` at its start.
pub fn parse_stored_id(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes.split(|b| *b == b'\n').next()?).ok()?;
    let id = text.strip_prefix(ID_PREFIX)?;
    kcore_api::validate::node_id("kcore-node-id", id)
        .ok()
        .map(|()| id.to_string())
}

async fn observe(args: &ProvisionArgs) -> Result<Observed, ProvisionError> {
    let link = args.by_partlabel_dir.join(&args.partition_label);
    let device = std::fs::canonicalize(&link)
        .map_err(|e| {
            step_err(
                "resolve partition",
                format!(
                    "{} does not resolve ({e}): is a partition labelled {:?} present?",
                    link.display(),
                    args.partition_label
                ),
            )
        })?
        .display()
        .to_string();
    tracing::info!(partition = %link.display(), %device, "found the data partition");
    let vg = args.volume_group.as_str();
    let pvs = parse_pvs(
        &run(
            PVS,
            LvmReport::fields("pv_name,vg_name").argv(),
            "list physical volumes",
        )
        .await?,
    )
    .map_err(|e| step_err("list physical volumes", e))?;
    let device_vg = pvs
        .iter()
        .find(|(pv, _)| canonical(pv) == device)
        .map(|(_, vg)| vg.clone())
        .filter(|vg| !vg.is_empty());
    // A PV without a VG is ours to reuse: it is on our partition.
    let vg_pvs: Vec<String> = pvs
        .iter()
        .filter(|(_, v)| v == vg)
        .map(|(pv, _)| canonical(pv))
        .collect();
    let mut seen = Observed {
        device: device.clone(),
        vg_exists: !vg_pvs.is_empty(),
        vg_pvs,
        device_vg,
        ..Default::default()
    };
    tracing::info!(device_vg = ?seen.device_vg, vg_exists = seen.vg_exists, "physical volume state");
    if seen.device_vg.as_deref() == Some(vg) {
        change(
            LvmChange::Activate {
                vg: vg.into(),
                active: true,
            },
            "activate the volume group",
        )
        .await?;
        let lvs: Report<LvSection> = serde_json::from_str(
            &run(
                LVS,
                LvmReport::fields("lv_name").of(vg).argv(),
                "list logical volumes",
            )
            .await?,
        )
        .map_err(|e| step_err("list logical volumes", e))?;
        let names: Vec<String> = lvs
            .report
            .into_iter()
            .flat_map(|s| s.lv)
            .map(|l| l.lv_name)
            .collect();
        seen.pool_exists = names.contains(&args.pool);
        seen.meta_exists = names.iter().any(|n| n == META_LV);
        if seen.meta_exists {
            let meta = format!("/dev/{vg}/{META_LV}");
            let mut buf = vec![0u8; 512];
            match std::fs::File::open(&meta).and_then(|mut f| f.read(&mut buf)) {
                Ok(n) => seen.stored_id = parse_stored_id(&buf[..n]),
                Err(e) => tracing::warn!(%meta, error = %e, "cannot read the metadata LV"),
            }
        }
        tracing::info!(stored_id = ?seen.stored_id, pool = seen.pool_exists, "metadata");
        if seen.stored_id.as_deref() == Some(args.node_id.as_str()) {
            change(
                LvmChange::ResizePhysical {
                    device: device.clone(),
                },
                "resize the physical volume",
            )
            .await?;
            let vgs: Report<VgSection> = serde_json::from_str(
                &run(
                    VGS,
                    LvmReport::fields("vg_free").of(vg).argv(),
                    "read free space",
                )
                .await?,
            )
            .map_err(|e| step_err("read free space", e))?;
            seen.vg_free_bytes = vgs
                .report
                .into_iter()
                .flat_map(|s| s.vg)
                .next()
                .and_then(|v| v.vg_free.trim().trim_end_matches('B').parse().ok())
                .unwrap_or(0);
        }
    }
    Ok(seen)
}

async fn provision_inner(args: &ProvisionArgs) -> Result<Vec<Step>, ProvisionError> {
    let seen = observe(args).await?;
    let steps = decide(args, &seen)?;
    if steps.is_empty() {
        tracing::info!(vg = %args.volume_group, node = %args.node_id, "the volume group already belongs to this node; nothing to do");
        return Ok(steps);
    }
    tracing::info!(?steps, "plan");
    let vg = args.volume_group.as_str();
    let pool_ref = format!("{vg}/{}", args.pool);
    let dev = seen.device.as_str();
    for step in &steps {
        match step {
            Step::Reset => {
                // The operator guide's wording (and its `existing=… expected=…` fields).
                let existing = seen.stored_id.as_deref().unwrap_or("<none>");
                tracing::warn!(vg, existing, expected = %args.node_id, "satellite id mismatch, resetting lvm configuration: removing the volume group's LVs, the VG and the PV");
                change(
                    LvmChange::Activate {
                        vg: vg.into(),
                        active: false,
                    },
                    "deactivate the volume group",
                )
                .await?;
                change(
                    LvmChange::RemoveVolumes { vg: vg.into() },
                    "remove the volume group's logical volumes",
                )
                .await?;
                change(
                    LvmChange::RemoveGroup { vg: vg.into() },
                    "remove the volume group",
                )
                .await?;
                change(
                    LvmChange::RemovePhysical { device: dev.into() },
                    "remove the physical volume",
                )
                .await?;
            }
            Step::CreatePv => {
                change(
                    LvmChange::CreatePhysical { device: dev.into() },
                    "create the physical volume",
                )
                .await?;
            }
            Step::CreateVg => {
                change(
                    LvmChange::CreateGroup {
                        vg: vg.into(),
                        device: dev.into(),
                    },
                    "create the volume group",
                )
                .await?;
            }
            Step::CreatePool => {
                change(
                    LvmChange::CreateThinPool {
                        vg: vg.into(),
                        name: args.pool.clone(),
                    },
                    "create the thin pool",
                )
                .await?;
            }
            Step::CreateMeta => {
                change(
                    LvmChange::CreateThinVolume {
                        pool: pool_ref.clone(),
                        name: META_LV.into(),
                        size: META_LV_SIZE.into(),
                    },
                    "create the metadata LV",
                )
                .await?;
            }
            Step::WriteId => {
                let meta = format!("/dev/{vg}/{META_LV}");
                write_id(Path::new(&meta), &args.node_id)
                    .map_err(|e| step_err("write the node id", format!("{meta}: {e}")))?;
                tracing::info!(%meta, node = %args.node_id, "stored the node id");
            }
            Step::ExtendPool => {
                tracing::info!(
                    vg,
                    free = seen.vg_free_bytes,
                    "the physical volume grew: extending the pool"
                );
                change(
                    LvmChange::ExtendToFree {
                        lv: pool_ref.clone(),
                    },
                    "extend the thin pool",
                )
                .await?;
            }
        }
    }
    tracing::info!(vg, pool = %args.pool, node = %args.node_id, "provisioned");
    Ok(steps)
}

fn write_id(device: &Path, id: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(device)?;
    // A whole sector: the old content after the newline must not look like an id.
    let mut block = format!("{ID_PREFIX}{id}\n").into_bytes();
    block.resize(512, 0);
    f.write_all(&block)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ProvisionArgs {
        ProvisionArgs {
            partition_label: "kcore-data".into(),
            volume_group: "vg_kcore".into(),
            pool: "pool".into(),
            node_id: "node-1".into(),
            marker_dir: "/tmp".into(),
            by_partlabel_dir: "/dev/disk/by-partlabel".into(),
        }
    }

    fn ours(stored: Option<&str>) -> Observed {
        Observed {
            device: "/dev/sdb1".into(),
            device_vg: Some("vg_kcore".into()),
            vg_pvs: vec!["/dev/sdb1".into()],
            vg_exists: true,
            stored_id: stored.map(str::to_string),
            pool_exists: true,
            meta_exists: stored.is_some(),
            vg_free_bytes: 0,
        }
    }

    #[test]
    fn first_run_creates_everything() {
        let seen = Observed {
            device: "/dev/sdb1".into(),
            ..Default::default()
        };
        assert_eq!(
            decide(&args(), &seen).unwrap(),
            vec![
                Step::CreatePv,
                Step::CreateVg,
                Step::CreatePool,
                Step::CreateMeta,
                Step::WriteId
            ]
        );
    }

    #[test]
    fn same_id_changes_nothing_and_grown_pv_extends() {
        assert!(decide(&args(), &ours(Some("node-1"))).unwrap().is_empty());
        let mut grown = ours(Some("node-1"));
        grown.vg_free_bytes = 1 << 30;
        assert_eq!(decide(&args(), &grown).unwrap(), vec![Step::ExtendPool]);
    }

    #[test]
    fn other_or_missing_id_resets_first() {
        for stored in [Some("node-2"), None] {
            let steps = decide(&args(), &ours(stored)).unwrap();
            assert_eq!(steps[0], Step::Reset, "{stored:?}");
            assert_eq!(steps.len(), 6);
        }
    }

    #[test]
    fn foreign_vgs_are_never_touched() {
        let mut seen = ours(None);
        seen.device_vg = Some("vg_other".into());
        assert!(matches!(
            decide(&args(), &seen),
            Err(Refusal::ForeignVg { .. })
        ));
        let elsewhere = Observed {
            device: "/dev/sdb1".into(),
            vg_exists: true,
            vg_pvs: vec!["/dev/sdc1".into()],
            ..Default::default()
        };
        assert!(matches!(
            decide(&args(), &elsewhere),
            Err(Refusal::VgElsewhere { .. })
        ));
        let mut spans = ours(Some("node-1"));
        spans.vg_pvs.push("/dev/sdc1".into());
        assert!(matches!(
            decide(&args(), &spans),
            Err(Refusal::VgElsewhere { .. })
        ));
    }

    #[test]
    fn stored_id_parsing() {
        assert_eq!(
            parse_stored_id(b"kcore-node-id=node-1\n\0\0").as_deref(),
            Some("node-1")
        );
        assert_eq!(parse_stored_id(b"\0\0\0"), None);
        assert_eq!(parse_stored_id(b"kcore-node-id=Bad_Id\n"), None);
    }

    #[test]
    fn pvs_json() {
        let json = r#"{"report":[{"pv":[{"pv_name":"/dev/sdb1","vg_name":"vg_kcore"},{"pv_name":"/dev/sdc","vg_name":""}]}]}"#;
        assert_eq!(
            parse_pvs(json).unwrap(),
            vec![
                ("/dev/sdb1".into(), "vg_kcore".into()),
                ("/dev/sdc".into(), String::new())
            ]
        );
    }

    #[tokio::test]
    async fn a_missing_partition_fails_at_its_step_and_leaves_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args();
        a.marker_dir = dir.path().to_path_buf();
        a.by_partlabel_dir = dir.path().join("by-partlabel");
        let err = provision(&a).await.unwrap_err().to_string();
        assert!(err.contains("step resolve partition"), "{err}");
        let shown = marker_path(&a).display().to_string();
        assert!(
            err.contains(&format!("retry marker left at {shown}")),
            "{err}"
        );
        assert!(err.contains(&format!("`rm {shown}` clears it")), "{err}");
        let marker = std::fs::read_to_string(marker_path(&a)).unwrap();
        assert!(marker.contains("resolve partition"), "{marker}");
        // The next run clears the marker before trying (and writes a new one on failure).
        std::fs::write(marker_path(&a), "old\n").unwrap();
        let _ = provision(&a).await;
        let marker = std::fs::read_to_string(marker_path(&a)).unwrap();
        assert!(!marker.contains("old"), "{marker}");
    }
}
