//! The node's system as a rollout step sees it, every path under the agent's root prefix
//! (`RuntimeOptions::system_root`, `/` in production; the rig's fake root in tests):
//! `/run/current-system`, `/run/booted-system`, the system profile, and the programs that
//! change them (kcore-nix's typed builders, each through the runner): `nix-env --profile
//! --set`, `bootctl set-default|set-oneshot`, `systemctl is-system-running`, the failed
//! units, `systemctl reboot`.
//!
//! The reboot verdict compares the `kernel`, `initrd` and `kernel-modules` links of the new
//! toplevel with those of `/run/booted-system` (what nixpkgs' toplevel builder links:
//! `nixos/modules/system/activation/top-level.nix`), as `nixos-rebuild`'s users and comin do.
//! Boot entries are systemd-boot's `nixos-generation-<N>.conf`, the names nixpkgs'
//! `nixos/modules/system/boot/loader/systemd-boot/systemd-boot-builder.py` writes (entries
//! of specialisations are not used).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kcore_api::ErrorCode;
use kcore_api::rollout::GenerationRef;
use kcore_nix::Goal;
use kcore_nix::commands::{
    Bootctl, GrubReboot, NixEnvProfile, ProfileAction, Running, SwitchToConfiguration, SystemState,
    parse_failed_units,
};
use kcore_nix::profile::Profile;
use kcore_nix::programs::{BOOTCTL, GRUB_REBOOT, NIX_ENV, SYSTEMCTL};

use crate::ops::{OpError, OpHandle};
use crate::server::AgentState;

/// One quick command (`nix-env --set`, `bootctl`, `systemctl is-system-running`).
const QUICK_TIMEOUT: Duration = Duration::from_secs(120);

/// `path` (absolute) under the agent's root prefix.
pub fn under_root(state: &AgentState, path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    state.options.system_root.join(rel)
}

pub fn current_system(state: &AgentState) -> PathBuf {
    under_root(state, Path::new("/run/current-system"))
}

pub fn booted_system(state: &AgentState) -> PathBuf {
    under_root(state, Path::new("/run/booted-system"))
}

/// The system profile (`/nix/var/nix/profiles/system` under the root prefix).
pub fn profile(state: &AgentState) -> Profile {
    Profile::new(under_root(state, &state.options.system_profile))
}

/// Where a link (or a chain of them) ends; `None` when it does not resolve.
pub fn resolved(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// The profile's current generation, if it has one.
pub fn current_generation(state: &AgentState) -> Option<GenerationRef> {
    profile(state).current().ok().map(|g| GenerationRef {
        number: g.number,
        store_path: g.store_path.display().to_string(),
    })
}

/// Which of kernel, initrd and kernel-modules differ between `toplevel` and the booted
/// system (all of them when nothing is booted, i.e. `/run/booted-system` is missing), and
/// `switch-inhibitors` when [`changed_inhibitors`] names any.
pub fn reboot_reasons(state: &AgentState, toplevel: &Path) -> Vec<String> {
    let booted = booted_system(state);
    let mut reasons: Vec<String> = ["kernel", "initrd", "kernel-modules"]
        .into_iter()
        .filter(|part| resolved(&toplevel.join(part)) != resolved(&booted.join(part)))
        .map(str::to_string)
        .collect();
    if !changed_inhibitors(state, toplevel).is_empty() {
        reasons.push(SWITCH_INHIBITORS.to_string());
    }
    reasons
}

/// The reboot reason of a switch that nixpkgs' switch inhibitors refuse.
pub const SWITCH_INHIBITORS: &str = "switch-inhibitors";

/// nixpkgs' switch inhibitors (`system.switch.inhibitors`, an attribute set of strings
/// written as JSON to `<toplevel>/switch-inhibitors` by
/// `nixos/modules/system/activation/switchable-system.nix`, NixOS/nixpkgs#473282 and
/// #477800): its pre-switch check refuses `switch` and `test` (not `boot`) when an
/// inhibitor present in both `/run/current-system` and the new system has a different
/// value. The names of those inhibitors, so the step goes to `boot` and a trial boot
/// instead of a switch that would fail ("Pre-switch checks failed", exit 1). A missing file
/// on either side inhibits nothing (as nixpkgs); an unreadable new one is reported as
/// inhibiting, as nixpkgs' check fails on it (NixOS/nixpkgs#510514).
pub fn changed_inhibitors(state: &AgentState, toplevel: &Path) -> Vec<String> {
    match read_inhibitors(toplevel) {
        None => Vec::new(),
        Some(Ok(new)) => inhibitors_changed_from_current(state, &new),
        Some(Err(e)) => vec![format!("(unreadable {SWITCH_INHIBITORS}: {e})")],
    }
}

/// A system's `switch-inhibitors` file: `None` when it has none.
fn read_inhibitors(toplevel: &Path) -> Option<Result<Inhibitors, String>> {
    let bytes = std::fs::read(toplevel.join(SWITCH_INHIBITORS)).ok()?;
    Some(serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
}

pub type Inhibitors = serde_json::Map<String, serde_json::Value>;

/// The inhibitors of `new` (a built system's file, or evaluated) whose value differs from
/// `/run/current-system`'s, as nixpkgs' pre-switch check matches them.
pub fn inhibitors_changed_from_current(state: &AgentState, new: &Inhibitors) -> Vec<String> {
    let Some(Ok(current)) = read_inhibitors(&current_system(state)) else {
        return Vec::new();
    };
    new.iter()
        .filter(|(name, value)| current.get(*name).is_some_and(|old| old != *value))
        .map(|(name, _)| name.clone())
        .collect()
}

fn tool_error(e: &kcore_nix::RunError) -> OpError {
    OpError::from(e)
}

/// `nix-env --profile <system profile> --set <path>`; returns the new current generation.
pub async fn set_profile(
    state: &AgentState,
    op: &OpHandle,
    path: &Path,
) -> Result<GenerationRef, OpError> {
    let nix_env = state.tools.resolve(NIX_ENV).map_err(|e| tool_error(&e))?;
    let profile = profile(state);
    if let Some(dir) = profile.path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            OpError::failed(
                ErrorCode::WriteFailed,
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
    }
    let cmd = NixEnvProfile {
        profile: profile.path.clone(),
        action: ProfileAction::Set(path.to_path_buf()),
    };
    op.step(format!(
        "nix-env --profile {} --set {}",
        profile.path.display(),
        path.display()
    ));
    cmd.invocation(&nix_env)
        .timeout(QUICK_TIMEOUT)
        .output()
        .await
        .map_err(|e| tool_error(&e))?;
    current_generation(state).ok_or_else(|| {
        OpError::failed(
            ErrorCode::CommandFailed,
            format!(
                "{} has no current generation after nix-env --set",
                profile.path.display()
            ),
        )
    })
}

/// The systemd-boot entry of generation `number`.
pub fn boot_entry(number: u64) -> String {
    format!("nixos-generation-{number}.conf")
}

/// `bootctl set-default|set-oneshot`.
pub async fn bootctl(state: &AgentState, op: &OpHandle, cmd: Bootctl) -> Result<(), OpError> {
    let bootctl = state.tools.resolve(BOOTCTL).map_err(|e| tool_error(&e))?;
    let inv = cmd.invocation(&bootctl).timeout(QUICK_TIMEOUT);
    op.step(inv.display());
    inv.output().await.map(|_| ()).map_err(|e| tool_error(&e))
}

/// The node boots with GRUB, not systemd-boot: `/boot/grub/grub.cfg` is there (what
/// nixpkgs' `install-grub.pl` writes) and systemd-boot's `/boot/loader/loader.conf` is not
/// (what `systemd-boot-builder.py` writes).
pub fn boots_with_grub(state: &AgentState) -> bool {
    under_root(state, Path::new("/boot/grub/grub.cfg")).is_file()
        && !under_root(state, Path::new("/boot/loader/loader.conf")).exists()
}

/// The `grub-reboot` name of generation `number`'s entry. nixpkgs' `install-grub.pl` writes
/// `menuentry "NixOS - Default"` (the system just installed) and, in `submenu "NixOS - All
/// configurations"`, one `menuentry "NixOS - Configuration N (DATE - VERSION)"` per
/// generation; the title is read back from `grub.cfg` rather than rebuilt (the date is the
/// profile link's).
pub fn grub_entry(state: &AgentState, number: u64) -> Result<String, OpError> {
    let cfg = under_root(state, Path::new("/boot/grub/grub.cfg"));
    let text = std::fs::read_to_string(&cfg).map_err(|e| {
        OpError::failed(
            ErrorCode::CommandFailed,
            format!("cannot read {}: {e}", cfg.display()),
        )
    })?;
    let prefix = format!("NixOS - Configuration {number} (");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("menuentry \""))
        .filter_map(|l| l.split_once('"').map(|(title, _)| title))
        .find(|title| title.starts_with(&prefix))
        .map(|title| format!("NixOS - All configurations>{title}"))
        .ok_or_else(|| {
            OpError::failed(
                ErrorCode::CommandFailed,
                format!(
                    "{} has no entry for generation {number}; nothing was rebooted",
                    cfg.display()
                ),
            )
        })
}

/// `grub-reboot ENTRY`.
pub async fn grub_reboot(state: &AgentState, op: &OpHandle, entry: String) -> Result<(), OpError> {
    let program = state
        .tools
        .resolve(GRUB_REBOOT)
        .map_err(|e| tool_error(&e))?;
    let inv = GrubReboot { entry }
        .invocation(&program)
        .timeout(QUICK_TIMEOUT);
    op.step(inv.display());
    inv.output().await.map(|_| ()).map_err(|e| tool_error(&e))
}

/// `<toplevel>/bin/switch-to-configuration boot`: with GRUB, the only way to choose the
/// default entry (install-grub.pl makes the system it installs "NixOS - Default"). Run
/// directly, not in a unit: `boot` restarts nothing.
pub async fn install_boot_default(
    state: &AgentState,
    op: &OpHandle,
    toplevel: &Path,
) -> Result<(), OpError> {
    let stc = SwitchToConfiguration {
        toplevel: toplevel.to_path_buf(),
        goal: Goal::Boot,
    };
    let Some(mut inv) = stc.invocation().map_err(|e| tool_error(&e))? else {
        return Ok(());
    };
    for (k, v) in &state.options.extra_env {
        inv = inv.env(k, v);
    }
    let inv = inv.timeout(QUICK_TIMEOUT);
    op.step(inv.display());
    inv.output().await.map(|_| ()).map_err(|e| tool_error(&e))
}

/// `systemctl reboot`.
pub async fn reboot(state: &AgentState, op: &OpHandle) -> Result<(), OpError> {
    let systemctl = state.tools.resolve(SYSTEMCTL).map_err(|e| tool_error(&e))?;
    op.step("systemctl reboot");
    SystemState::Reboot
        .invocation(&systemctl)
        .timeout(QUICK_TIMEOUT)
        .output()
        .await
        .map(|_| ())
        .map_err(|e| tool_error(&e))
}

/// What `systemctl is-system-running` says, with the failed units when degraded. A
/// systemctl that cannot run is an answer too (not healthy), so the deadline decides.
pub async fn system_running(state: &AgentState) -> (Running, Vec<String>) {
    let systemctl = match state.tools.resolve(SYSTEMCTL) {
        Ok(p) => p,
        Err(e) => return (Running::Other(format!("unknown ({e})")), Vec::new()),
    };
    // Non-zero for anything but `running`: the printed word is the answer.
    let running = match SystemState::IsSystemRunning
        .invocation(&systemctl)
        .timeout(QUICK_TIMEOUT)
        .output_unchecked()
        .await
    {
        Ok(out) => Running::parse(&out.stdout_lossy()),
        Err(e) => Running::Other(format!("unknown ({e})")),
    };
    if running != Running::Degraded {
        return (running, Vec::new());
    }
    let failed = SystemState::FailedUnits
        .invocation(&systemctl)
        .timeout(QUICK_TIMEOUT)
        .output_unchecked()
        .await
        .map(|out| parse_failed_units(&out.stdout_lossy()))
        .unwrap_or_default();
    (running, failed)
}
