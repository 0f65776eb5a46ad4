//! The node's VMs (issue 17): a reconciler from the controller's desired list
//! ([`NodeVm`], carried by the assignment long-poll) to volumes and running guests, and the
//! [`VmReports`] that say how each one is.
//!
//! - [`record`]: what the agent created, durable in `<vm.stateDir>/<name>.json`; the only
//!   ground for deleting anything.
//! - [`volume`]: a volume per backend (file, thin or linear LV, zvol), names from the node's
//!   configuration, validated before any command runs.
//! - [`image`]: download into the image cache with a checksum and a size limit, written into
//!   the volume with `qemu-img`.
//! - [`guest`]: QEMU in the transient unit `kcore-vm-<name>`; clean stop over QMP.
//! - [`reporter`]: the assignment loop's side: reconcile each new list and post the reports
//!   to `POST /v1/nodes/{id}/vms/report`.
//!
//! One pass over the list ([`reconcile`]) does, per VM, what its `desired` asks, in order:
//! `Deleted`: stop the guest, remove the volume its record names, forget it (listed in
//! `deleted`). Otherwise make sure the volume exists at the spec's size (create it if the
//! agent has no record; a volume that exists without a record is someone else's and is
//! refused, never touched; a create that fails removes what it made and is not retried
//! for the same generation), then start or stop the guest. A size change is applied only
//! while the guest is stopped (refused while it runs, shrinking always refused). VMs
//! missing from the list are left as they are: an empty or partial answer must not delete
//! anything; the controller says `Deleted` when it means it.

pub mod guest;
pub mod image;
pub mod record;
pub mod reporter;
pub mod volume;

use std::path::{Path, PathBuf};

use kcore_api::vm::{NodeVm, VmDesiredState, VmPhase, VmReport, VmReports};

use crate::config::{AgentConfig, StorageConfig, VmConfig};
use crate::server::AgentState;
use crate::tools::Tools;
use record::{Failure, Started, VmRecord, VolumeRecord, VolumeState};

/// Why a VM could not be brought to what is wanted; the text goes into its report.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A name or setting that would make a bad command line; nothing ran.
    #[error("{0}")]
    Invalid(String),
    /// Not done, for the reason given (a foreign volume, no space, a size change refused).
    #[error("{0}")]
    Refused(String),
    #[error("image download: {0}")]
    Download(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Run(#[from] kcore_nix::RunError),
}

impl VmError {
    fn invalid(e: kcore_api::validate::FieldError) -> VmError {
        VmError::Invalid(e.to_string())
    }

    fn io(path: &Path, source: std::io::Error) -> VmError {
        VmError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What the reconciler needs of the agent.
#[derive(Debug, Clone)]
pub struct VmHost {
    pub storage: StorageConfig,
    pub vm: VmConfig,
    pub tools: Tools,
    /// Extra environment for the guest's unit (tests).
    pub extra_env: Vec<(String, String)>,
    /// `kcore-agent`, run as the guest unit's `ExecStopPost=` to record how it ended.
    pub unit_result_helper: Option<PathBuf>,
}

impl VmHost {
    pub fn from_state(state: &AgentState) -> VmHost {
        VmHost {
            storage: state.config.storage.clone(),
            vm: state.config.vm.clone(),
            tools: state.tools.clone(),
            extra_env: state.options.extra_env.clone(),
            unit_result_helper: state.options.unit_result_helper.clone(),
        }
    }

    /// For `kcore-agent vm-reconcile` (no server running).
    pub fn from_config(config: &AgentConfig) -> VmHost {
        VmHost {
            storage: config.storage.clone(),
            vm: config.vm.clone(),
            tools: Tools::new(config.binaries.clone()),
            extra_env: Vec::new(),
            unit_result_helper: std::env::current_exe().ok(),
        }
    }
}

/// Reports as they change, for the one sink that sends them on.
struct Tracker<'a> {
    reports: VmReports,
    sink: &'a (dyn Fn(&VmReports) + Send + Sync),
}

impl Tracker<'_> {
    fn set(&mut self, report: VmReport) {
        match self.reports.vms.iter_mut().find(|r| r.name == report.name) {
            Some(r) if *r == report => return,
            Some(r) => *r = report,
            None => self.reports.vms.push(report),
        }
        (self.sink)(&self.reports);
    }
}

fn report(
    vm: &NodeVm,
    phase: VmPhase,
    volume: Option<&VolumeRecord>,
    message: Option<String>,
) -> VmReport {
    VmReport {
        name: vm.name.clone(),
        observed_generation: vm.generation,
        phase,
        volume: volume
            .filter(|v| v.state == VolumeState::Ready)
            .map(VolumeRecord::report),
        message,
    }
}

/// One pass over `desired`; `sink` sees every change of the reports as it happens
/// (download progress included). Returns the final reports.
pub async fn reconcile(
    host: &VmHost,
    desired: &[NodeVm],
    sink: &(dyn Fn(&VmReports) + Send + Sync),
) -> VmReports {
    let mut t = Tracker {
        reports: VmReports::default(),
        sink,
    };
    for vm in desired {
        match reconcile_one(host, vm, &mut t).await {
            Ok(Some(r)) => t.set(r),
            Ok(None) => {
                t.reports.vms.retain(|r| r.name != vm.name);
                t.reports.deleted.push(vm.name.clone());
                (t.sink)(&t.reports);
            }
            Err(e) => {
                tracing::warn!(vm = %vm.name, error = %e, "VM not as desired");
                let volume = record::load(&host.vm.state_dir, &vm.name)
                    .ok()
                    .flatten()
                    .and_then(|r| r.volume);
                t.set(report(
                    vm,
                    VmPhase::Failed,
                    volume.as_ref(),
                    Some(e.to_string()),
                ));
            }
        }
    }
    t.reports
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `None`: deleted.
async fn reconcile_one(
    host: &VmHost,
    vm: &NodeVm,
    t: &mut Tracker<'_>,
) -> Result<Option<VmReport>, VmError> {
    // Names first: nothing runs for a VM whose names would be refused.
    kcore_api::validate::resource_name("metadata.name", &vm.name).map_err(VmError::invalid)?;
    let dir = &host.vm.state_dir;
    std::fs::create_dir_all(dir).map_err(|e| VmError::io(dir, e))?;
    let mut rec = record::load(dir, &vm.name)?;

    if vm.desired == VmDesiredState::Deleted {
        t.set(report(vm, VmPhase::Deleting, None, None));
        guest::stop(host, &vm.name).await?;
        if let Some(v) = rec.as_ref().and_then(|r| r.volume.as_ref()) {
            volume::remove(host, &v.volume).await?;
        }
        record::remove(dir, &vm.name)?;
        // The last guest's end is of no use once the VM is gone.
        let _ = std::fs::remove_file(guest::status_file(host, &vm.name));
        return Ok(None);
    }

    let running = guest::is_running(host, &vm.name).await;
    let vol = match rec.as_mut().and_then(|r| r.volume.clone()) {
        Some(v) if v.state == VolumeState::Ready => v,
        _ => {
            if running {
                return Err(VmError::Refused(format!(
                    "the guest unit {} runs but the agent has no volume record for it; \
                     not touched",
                    guest::unit_name(&vm.name)
                )));
            }
            let r = rec.get_or_insert_with(|| VmRecord::new(&vm.name));
            if let Some(f) = &r.failure
                && f.generation == vm.generation
            {
                return Err(VmError::Refused(format!(
                    "{} (not tried again until the VM's spec changes)",
                    f.message
                )));
            }
            match provision(host, vm, r, t).await {
                Ok(v) => v,
                Err(e) => {
                    r.volume = None;
                    r.failure = Some(Failure {
                        generation: vm.generation,
                        message: e.to_string(),
                    });
                    record::save(dir, r)?;
                    return Err(e);
                }
            }
        }
    };
    let mut rec = rec.unwrap_or_else(|| VmRecord::new(&vm.name));
    rec.failure = None;

    if vm.spec.storage_backend != vol.volume.backend() {
        return Ok(Some(report(
            vm,
            if running {
                VmPhase::Running
            } else {
                VmPhase::Stopped
            },
            Some(&vol),
            Some(format!(
                "spec.storageBackend: the volume is on {:?}; a VM does not move between backends \
                 (delete it and create it again)",
                vol.volume.backend()
            )),
        )));
    }
    let want = vm.spec.storage_size_bytes.0;
    let mut size_note = None;
    if want < vol.size_bytes {
        size_note = Some(format!(
            "spec.storageSizeBytes: {want} is less than the volume's {} bytes; volumes only grow",
            vol.size_bytes
        ));
    }

    match vm.desired {
        VmDesiredState::Running if running => {
            if want > vol.size_bytes {
                size_note = Some(format!(
                    "spec.storageSizeBytes: resize to {want} bytes refused while the guest runs \
                     (the volume stays {} bytes); stop the VM to resize it",
                    vol.size_bytes
                ));
            }
            Ok(Some(report(vm, VmPhase::Running, Some(&vol), size_note)))
        }
        VmDesiredState::Running => {
            let boot = boot_id();
            let this_start = Started {
                generation: vm.generation,
                boot_id: boot,
            };
            if rec.started.as_ref() == Some(&this_start) {
                // Started for this generation in this boot and gone: it ended by itself.
                return Ok(Some(ended_by_itself(host, vm, &vol)));
            }
            let vol = grow_if_asked(host, vm, &mut rec, vol).await?;
            t.set(report(vm, VmPhase::Starting, Some(&vol), None));
            let started = guest::start(host, vm, &vol.volume).await;
            // Recorded also when the start failed: a guest that cannot start is reported
            // from its unit's end on the next passes, not started again on every poll.
            rec.started = Some(this_start);
            record::save(dir, &rec)?;
            started?;
            Ok(Some(report(vm, VmPhase::Running, Some(&vol), size_note)))
        }
        VmDesiredState::Stopped => {
            let mut note = size_note;
            if running {
                let clean = guest::stop(host, &vm.name).await?;
                if !clean {
                    note = Some(format!(
                        "the guest did not power off within {} s of the ACPI request; its unit was stopped",
                        host.vm.stop_timeout_seconds
                    ));
                }
            }
            // Stopped on purpose: a later `Running`, even of this generation, starts it.
            rec.started = None;
            let vol = grow_if_asked(host, vm, &mut rec, vol).await?;
            record::save(dir, &rec)?;
            Ok(Some(report(vm, VmPhase::Stopped, Some(&vol), note)))
        }
        VmDesiredState::Deleted => unreachable!("handled above"),
    }
}

fn ended_by_itself(host: &VmHost, vm: &NodeVm, vol: &VolumeRecord) -> VmReport {
    let log = guest::console_log(host, &vm.name);
    match guest::last_end(host, &vm.name) {
        Some(end) if !end.succeeded() => report(
            vm,
            VmPhase::Failed,
            Some(vol),
            Some(format!(
                "the guest ended with {} {} {} (see {}); it is started again when its spec changes or the node boots",
                end.service_result,
                end.exit_code,
                end.exit_status,
                log.display()
            )),
        ),
        _ => report(
            vm,
            VmPhase::Stopped,
            Some(vol),
            Some(format!(
                "the guest powered off by itself (console: {}); it is started again when its spec changes or the node boots",
                log.display()
            )),
        ),
    }
}

/// Grow a stopped guest's volume to the spec's size.
async fn grow_if_asked(
    host: &VmHost,
    vm: &NodeVm,
    rec: &mut VmRecord,
    mut vol: VolumeRecord,
) -> Result<VolumeRecord, VmError> {
    let want = vm.spec.storage_size_bytes.0;
    if want > vol.size_bytes {
        volume::grow(host, &vol.volume, want).await?;
        vol.size_bytes = want;
        rec.volume = Some(vol.clone());
        record::save(&host.vm.state_dir, rec)?;
    }
    Ok(vol)
}

/// Create the volume and write the image; on failure remove what was made.
async fn provision(
    host: &VmHost,
    vm: &NodeVm,
    rec: &mut VmRecord,
    t: &mut Tracker<'_>,
) -> Result<VolumeRecord, VmError> {
    let dir = &host.vm.state_dir;
    let size = vm.spec.storage_size_bytes.0;
    // A record still `creating`: an earlier agent stopped half-way; what it made goes.
    if let Some(partial) = rec.volume.take() {
        tracing::warn!(vm = %vm.name, volume = ?partial.volume, "removing a partial volume left by an interrupted create");
        volume::remove(host, &partial.volume).await?;
        record::save(dir, rec)?;
    }
    let planned = volume::plan(host, &vm.name, vm.spec.storage_backend, size)?;
    if volume::exists(host, &planned).await? {
        return Err(VmError::Refused(format!(
            "{} exists but the agent has no record of creating it ({}); it is not touched: \
             remove or rename it, or give the VM another name",
            planned.device_path().display(),
            record::file(dir, &vm.name).display()
        )));
    }
    rec.volume = Some(VolumeRecord {
        volume: planned.clone(),
        size_bytes: size,
        state: VolumeState::Creating,
        image: vm.spec.image.clone(),
        image_sha256: None,
    });
    record::save(dir, rec)?;
    t.set(report(
        vm,
        VmPhase::Provisioning,
        None,
        Some(format!("creating {}", planned.device_path().display())),
    ));
    let made = volume::create(host, &planned, size).await;
    let made = match made {
        Ok(made) => made,
        Err(e) => {
            // The command may have left something (a half-made LV); it was ours.
            if let Err(cleanup) = volume::remove(host, &planned).await {
                tracing::warn!(vm = %vm.name, error = %cleanup, "cleaning up after a failed create failed");
            }
            return Err(e);
        }
    };
    let written = write_image(host, vm, &made, size, t).await;
    match written {
        Ok(sha) => {
            let v = VolumeRecord {
                volume: made,
                size_bytes: size,
                state: VolumeState::Ready,
                image: vm.spec.image.clone(),
                image_sha256: sha,
            };
            rec.volume = Some(v.clone());
            record::save(dir, rec)?;
            Ok(v)
        }
        Err(e) => {
            volume::remove(host, &made).await?;
            Err(e)
        }
    }
}

async fn write_image(
    host: &VmHost,
    vm: &NodeVm,
    made: &record::VolumeRef,
    size: u64,
    t: &mut Tracker<'_>,
) -> Result<Option<String>, VmError> {
    let Some(source) = &vm.spec.image else {
        return Ok(None);
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let note = move |m: String| {
        let _ = tx.send(m);
    };
    let fetch = image::fetch(host, source, vm.spec.image_sha256.as_deref(), &note);
    tokio::pin!(fetch);
    // Progress lines become the report's message while the download runs.
    let img = loop {
        tokio::select! {
            r = &mut fetch => break r?,
            Some(m) = rx.recv() => t.set(report(vm, VmPhase::Provisioning, None, Some(m))),
        }
    };
    while let Ok(m) = rx.try_recv() {
        t.set(report(vm, VmPhase::Provisioning, None, Some(m)));
    }
    t.set(report(
        vm,
        VmPhase::Provisioning,
        None,
        Some(format!(
            "writing the {} image into {}",
            img.format,
            made.device_path().display()
        )),
    ));
    image::write_into(host, &img, &made.device_path(), size).await?;
    if let record::VolumeRef::Filesystem { path } = made {
        // qemu-img may punch holes for the image's zeroes: allocate them again.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| VmError::io(path, e))?;
        volume::allocate(&file, path, size)?;
    }
    Ok(img.sha256)
}
