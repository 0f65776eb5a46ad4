//! `systemctl stop|is-active|show` for the transient units the agent's long operations run
//! in: stopping one past its timeout, asking whether one is still there after an agent
//! restart, reading its properties.
//!
//! Checked against systemd's `man/systemctl.xml`: `stop` returns once the unit has stopped
//! (the job has finished); `is-active` prints the unit's active state (`active`,
//! `activating`, `deactivating`, `inactive`, `failed`, ...) and exits 0 only for `active`
//! (and `reloading`), non-zero otherwise (3 for a unit that is not loaded), so a caller
//! reads the printed word rather than the exit status; `show --property=A,B` prints `A=...`
//! lines.

use std::ffi::OsString;

use crate::runner::{Invocation, Program};

/// One `systemctl` call about one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Systemctl {
    /// `systemctl stop UNIT`.
    Stop(String),
    /// `systemctl is-active UNIT`.
    IsActive(String),
    /// `systemctl show --property=A,B UNIT`.
    Show {
        unit: String,
        properties: Vec<String>,
    },
}

/// What `systemctl is-active` printed, as far as a caller waiting for a unit cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitPresence {
    /// Starting, running, reloading or stopping: its end is still to come.
    Running,
    /// Inactive, failed or not loaded: it has ended (or never existed).
    Ended,
}

impl UnitPresence {
    /// Read `is-active`'s output (its first word); anything unknown counts as ended, so a
    /// waiting caller never waits on a state it cannot name.
    pub fn parse(stdout: &str) -> UnitPresence {
        match stdout.split_whitespace().next().unwrap_or("") {
            "active" | "activating" | "deactivating" | "reloading" | "refreshing" => {
                UnitPresence::Running
            }
            _ => UnitPresence::Ended,
        }
    }
}

impl Systemctl {
    pub fn argv(&self) -> Vec<OsString> {
        match self {
            Systemctl::Stop(unit) => vec!["stop".into(), unit.into()],
            Systemctl::IsActive(unit) => vec!["is-active".into(), unit.into()],
            Systemctl::Show { unit, properties } => vec![
                "show".into(),
                format!("--property={}", properties.join(",")).into(),
                unit.into(),
            ],
        }
    }

    pub fn invocation(&self, systemctl: &Program) -> Invocation {
        Invocation::new(systemctl).args(self.argv())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &Systemctl) -> Vec<String> {
        s.argv()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn argv_per_verb() {
        let unit = "kcore-apply-disko-0f1e2d3c4b5a-disko".to_string();
        assert_eq!(strings(&Systemctl::Stop(unit.clone())), ["stop", &unit]);
        assert_eq!(
            strings(&Systemctl::IsActive(unit.clone())),
            ["is-active", &unit]
        );
        assert_eq!(
            strings(&Systemctl::Show {
                unit: unit.clone(),
                properties: vec!["Result".into(), "ExecMainStatus".into()],
            }),
            ["show", "--property=Result,ExecMainStatus", &unit]
        );
    }

    #[test]
    fn is_active_words() {
        for running in ["active\n", "activating", "deactivating\n", "reloading"] {
            assert_eq!(
                UnitPresence::parse(running),
                UnitPresence::Running,
                "{running}"
            );
        }
        for ended in ["inactive\n", "failed\n", "", "unknown"] {
            assert_eq!(UnitPresence::parse(ended), UnitPresence::Ended, "{ended:?}");
        }
    }
}
