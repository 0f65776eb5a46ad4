//! A VM's guest: QEMU in the transient unit `kcore-vm-<name>` (through
//! [`crate::ops::unit::start_service`]), so it outlives the agent and is found again by
//! its unit name after an agent restart (nothing to re-attach: the unit is asked
//! `is-active`).
//!
//! - KVM when `/dev/kvm` opens read-write (and `vm.accelerator` is `auto` or `kvm`), TCG
//!   otherwise; the volume as its only disk; `-nodefaults -nic none` (no network device
//!   until networks exist); the serial console appended to `<vm.logDir>/<name>.log`, QEMU's
//!   own output to `<name>.qemu.log`.
//! - A clean stop: QMP `system_powerdown` (the ACPI power button) on
//!   `<vm.stateDir>/<name>.qmp`, up to `vm.stopTimeoutSeconds` for the guest to power off,
//!   then `systemctl stop` (QEMU ends on SIGTERM, systemd kills it after its stop timeout).
//! - How the unit ended is written by its `ExecStopPost=` helper to
//!   `<vm.stateDir>/<name>.unit-status.json`, so a guest that powered itself off is told
//!   apart from one that crashed, also when the agent was not running at the time.

use std::path::PathBuf;
use std::time::Duration;

use kcore_api::vm::NodeVm;
use kcore_nix::commands::{Accelerator, QemuSystem, UnitPresence};
use kcore_nix::programs::QEMU_SYSTEM_X86_64;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::record::VolumeRef;
use super::{VmError, VmHost};
use crate::config::AcceleratorChoice;
use crate::ops::unit::{ServiceUnit, UnitStatus};

/// One QMP exchange may take this long.
const QMP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a stopping guest is looked at.
const POLL: Duration = Duration::from_millis(250);
/// A guest still running this long after its start counts as started.
const START_SETTLE: Duration = Duration::from_secs(1);

pub fn unit_name(vm: &str) -> String {
    format!("kcore-vm-{vm}")
}

fn qmp_socket(host: &VmHost, vm: &str) -> PathBuf {
    host.vm.state_dir.join(format!("{vm}.qmp"))
}

pub fn console_log(host: &VmHost, vm: &str) -> PathBuf {
    host.vm.log_dir.join(format!("{vm}.log"))
}

pub fn status_file(host: &VmHost, vm: &str) -> PathBuf {
    host.vm.state_dir.join(format!("{vm}.unit-status.json"))
}

/// How this node runs guests now.
pub fn accelerator(choice: AcceleratorChoice) -> Accelerator {
    let kvm_usable = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
    };
    match choice {
        AcceleratorChoice::Tcg => Accelerator::Tcg,
        AcceleratorChoice::Kvm => Accelerator::Kvm,
        AcceleratorChoice::Auto if kvm_usable() => Accelerator::Kvm,
        AcceleratorChoice::Auto => Accelerator::Tcg,
    }
}

pub async fn is_running(host: &VmHost, vm: &str) -> bool {
    crate::ops::unit::unit_presence(&host.tools, &unit_name(vm)).await == UnitPresence::Running
}

/// How the last unit of `vm` ended, if its helper wrote it.
pub fn last_end(host: &VmHost, vm: &str) -> Option<UnitStatus> {
    UnitStatus::read(&status_file(host, vm))
}

/// Start the guest on `volume`.
pub async fn start(host: &VmHost, vm: &NodeVm, volume: &VolumeRef) -> Result<(), VmError> {
    let qemu = host.tools.resolve(QEMU_SYSTEM_X86_64)?;
    for dir in [&host.vm.state_dir, &host.vm.log_dir] {
        std::fs::create_dir_all(dir).map_err(|e| VmError::io(dir, e))?;
    }
    let socket = qmp_socket(host, &vm.name);
    // A socket left by an earlier guest would make QEMU's bind fail.
    let _ = std::fs::remove_file(&socket);
    let status = status_file(host, &vm.name);
    let _ = std::fs::remove_file(&status);
    let guest = QemuSystem {
        name: vm.name.clone(),
        accelerator: accelerator(host.vm.accelerator),
        cpus: vm.spec.cpus,
        memory_mib: vm.spec.memory_bytes.0.div_ceil(1 << 20),
        disk: volume.device_path(),
        disk_is_block_device: volume.is_block_device(),
        console_log: console_log(host, &vm.name),
        qmp_socket: socket,
    };
    let mut command = vec![qemu.path().as_os_str().to_owned()];
    command.extend(guest.argv());
    let unit = unit_name(&vm.name);
    let qemu_log = host.vm.log_dir.join(format!("{}.qemu.log", vm.name));
    crate::ops::unit::start_service(
        &host.tools,
        &host.extra_env,
        host.unit_result_helper.as_deref(),
        ServiceUnit {
            unit: &unit,
            description: &format!("kcore VM {}", vm.name),
            log: &qemu_log,
            status: &status,
            command,
        },
    )
    .await?;
    // systemd-run returns once the command started; a QEMU that refuses its arguments
    // ends within a fraction of a second, and that is a failed start, not a running guest.
    let settled = tokio::time::Instant::now() + START_SETTLE;
    loop {
        if !is_running(host, &vm.name).await {
            // A guest may power off as fast as that (a clean exit): started, and ended.
            if UnitStatus::read(&status).is_some_and(|s| s.succeeded()) {
                return Ok(());
            }
            let log = std::fs::read_to_string(&qemu_log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(VmError::Refused(format!(
                "the guest's unit {unit} ended right after it started: {} (see {})",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                qemu_log.display()
            )));
        }
        if tokio::time::Instant::now() >= settled {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ask the guest to power off (QMP `system_powerdown`), wait up to `vm.stopTimeoutSeconds`,
/// then stop its unit. Returns whether the guest powered off by itself in time.
pub async fn stop(host: &VmHost, vm: &str) -> Result<bool, VmError> {
    if !is_running(host, vm).await {
        return Ok(true);
    }
    let socket = qmp_socket(host, vm);
    match tokio::time::timeout(QMP_TIMEOUT * 3, powerdown(&socket)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(vm, error = %e, "QMP system_powerdown failed; the unit is stopped")
        }
        Err(_) => tracing::warn!(vm, "QMP did not answer; the unit is stopped"),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(host.vm.stop_timeout_seconds);
    while tokio::time::Instant::now() < deadline {
        if !is_running(host, vm).await {
            return Ok(true);
        }
        tokio::time::sleep(POLL).await;
    }
    tracing::warn!(
        vm,
        timeout = host.vm.stop_timeout_seconds,
        "the guest did not power off; stopping its unit"
    );
    crate::ops::unit::stop_unit(&host.tools, &unit_name(vm)).await?;
    Ok(false)
}

/// The QMP handshake (greeting, `qmp_capabilities`) and `system_powerdown`.
async fn powerdown(socket: &std::path::Path) -> std::io::Result<()> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut next = async || -> std::io::Result<serde_json::Value> {
        loop {
            let line = tokio::time::timeout(QMP_TIMEOUT, lines.next_line())
                .await
                .map_err(|_| std::io::Error::other("no answer from QMP"))??
                .ok_or_else(|| std::io::Error::other("QMP closed the connection"))?;
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(std::io::Error::other)?;
            // Asynchronous events (`{"event": ...}`) may come between a command and its reply.
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    };
    next().await?; // {"QMP": {...}}
    for command in ["qmp_capabilities", "system_powerdown"] {
        write
            .write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())
            .await?;
        let reply = next().await?;
        if let Some(err) = reply.get("error") {
            return Err(std::io::Error::other(format!("{command}: {err}")));
        }
    }
    Ok(())
}
