//! The commands a rollout step runs on a node besides the ones in `commands.rs`
//! (`NixBuild`, `NixEnvProfile`, `SwitchToConfiguration`, `Bootctl`, `Systemctl` are reused
//! as they are):
//!
//! - [`SystemState`]: `systemctl is-system-running`, the failed units, `systemctl reboot`.
//!   Checked against systemd's `man/systemctl.xml`: `is-system-running` prints the manager's
//!   state (`initializing`, `starting`, `running`, `degraded`, `maintenance`, `stopping`,
//!   `offline`, `unknown`) and exits 0 only for `running`, so a caller reads the printed
//!   word; `list-units --state=failed --plain --no-legend` prints one unit per line, its
//!   name first.
//! - [`GrubReboot`]: `grub-reboot ENTRY`, GRUB's one-shot boot: it saves `next_entry` in
//!   `/boot/grub/grubenv`, which the `grub.cfg` nixpkgs writes
//!   (`nixos/modules/system/boot/loader/grub/install-grub.pl`) boots once and clears. An
//!   entry inside a submenu is `SUBMENU>ENTRY` (titles, as GRUB's `default` takes them).

use std::ffi::OsString;

use crate::runner::{Invocation, Program};

/// One `systemctl` question about the whole system, or the reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemState {
    /// `systemctl is-system-running`.
    IsSystemRunning,
    /// `systemctl list-units --state=failed --plain --no-legend`.
    FailedUnits,
    /// `systemctl reboot`.
    Reboot,
}

/// What `is-system-running` printed, as far as a health gate cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Running {
    /// `running`: every unit up.
    Running,
    /// `degraded`: up, with failed units.
    Degraded,
    /// Anything else (`starting`, `initializing`, `maintenance`, ...): not (yet) healthy.
    Other(String),
}

impl Running {
    pub fn parse(stdout: &str) -> Running {
        match stdout.split_whitespace().next().unwrap_or("") {
            "running" => Running::Running,
            "degraded" => Running::Degraded,
            other => Running::Other(other.to_string()),
        }
    }
}

/// The unit names of `list-units --state=failed --plain --no-legend` output.
pub fn parse_failed_units(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

impl SystemState {
    pub fn argv(&self) -> Vec<OsString> {
        let words: &[&str] = match self {
            SystemState::IsSystemRunning => &["is-system-running"],
            SystemState::FailedUnits => &["list-units", "--state=failed", "--plain", "--no-legend"],
            SystemState::Reboot => &["reboot"],
        };
        words.iter().map(OsString::from).collect()
    }

    pub fn invocation(&self, systemctl: &Program) -> Invocation {
        Invocation::new(systemctl).args(self.argv())
    }
}

/// `grub-reboot ENTRY`: boot `entry` once, the default unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubReboot {
    pub entry: String,
}

impl GrubReboot {
    pub fn argv(&self) -> Vec<OsString> {
        vec![OsString::from(&self.entry)]
    }

    pub fn invocation(&self, grub_reboot: &Program) -> Invocation {
        Invocation::new(grub_reboot).args(self.argv())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(argv: Vec<OsString>) -> Vec<String> {
        argv.into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn grub_reboot_takes_the_entry_as_one_argument() {
        let cmd = GrubReboot {
            entry: "NixOS - All configurations>NixOS - Configuration 2 (2026-12-02 - 25.11)".into(),
        };
        assert_eq!(
            strings(cmd.argv()),
            ["NixOS - All configurations>NixOS - Configuration 2 (2026-12-02 - 25.11)"]
        );
    }

    #[test]
    fn system_state_questions_and_their_answers() {
        assert_eq!(
            strings(SystemState::FailedUnits.argv()),
            ["list-units", "--state=failed", "--plain", "--no-legend"]
        );
        assert_eq!(
            strings(SystemState::IsSystemRunning.argv()),
            ["is-system-running"]
        );
        assert_eq!(strings(SystemState::Reboot.argv()), ["reboot"]);
        assert_eq!(Running::parse("running\n"), Running::Running);
        assert_eq!(Running::parse("degraded\n"), Running::Degraded);
        assert_eq!(
            Running::parse("starting\n"),
            Running::Other("starting".into())
        );
        assert_eq!(
            parse_failed_units(
                "a.service loaded failed failed A\nb.mount loaded failed failed B\n"
            ),
            ["a.service", "b.mount"]
        );
    }
}
