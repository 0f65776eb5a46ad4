//! Typed command builders: one struct per program kcore drives, whose [`argv`] is the
//! only place that program's flags are spelled, and whose `invocation` hands the result
//! to the runner. Callers fill in fields (a flake URL, a unit name, a store path); they
//! never build argument lists by hand.
//!
//! [`Goal`] is what an activation does, in one place (after colmena's `goal.rs`):
//! `nixos-rebuild` and `switch-to-configuration` take the same words.
//!
//! Flags checked against the programs' sources: nixpkgs
//! `pkgs/by-name/ni/nixos-rebuild-ng/src/nixos_rebuild/models.py` (`Action`: `switch`,
//! `boot`, `test`, `build`, `dry-activate`, ...), `pkgs/by-name/sw/switch-to-configuration-ng`
//! (the same goal words), `nixos/modules/installer/tools/nixos-install.sh` (`--system`,
//! `--root`, `--no-root-passwd`, `--no-channel-copy`), disko's `disko` script at the locked
//! revision (`--mode format,mount|destroy,format,mount`, `--root-mountpoint`,
//! `--yes-wipe-all-disks`), and the systemd manuals for `systemd-run`, `systemctl`
//! ([`Systemctl`]) and `bootctl`.
//!
//! [`argv`]: NixosRebuild::argv

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::runner::{Invocation, Program};

mod install;
mod lvm;
mod rollout;
mod systemctl;
mod vm;
pub use install::{
    Cryptsetup, Enrol, SgdiskSinglePartition, SystemdCryptenroll, TestKey, UmountRecursive,
    ZpoolExport,
};
pub use lvm::LvmChange;
pub use rollout::{GrubReboot, Running, SystemState, parse_failed_units};
pub use systemctl::{Systemctl, UnitPresence};
pub use vm::{Accelerator, QemuImg, QemuSystem, ZfsVolume};

/// What an activation does with a built system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Goal {
    /// Build only; nothing changes on the machine.
    Build,
    /// Activate now and make it the boot default.
    Switch,
    /// Make it the boot default; it runs after the next reboot.
    Boot,
    /// Activate now without changing the boot default (a reboot returns to the old one).
    Test,
    /// Show what activation would do.
    DryActivate,
}

impl Goal {
    /// The word both `nixos-rebuild` and `switch-to-configuration` take.
    pub fn as_str(self) -> &'static str {
        match self {
            Goal::Build => "build",
            Goal::Switch => "switch",
            Goal::Boot => "boot",
            Goal::Test => "test",
            Goal::DryActivate => "dry-activate",
        }
    }

    /// Whether the running system changes now.
    pub fn activates_now(self) -> bool {
        matches!(self, Goal::Switch | Goal::Test)
    }

    /// Whether the boot loader's default entry changes.
    pub fn changes_boot_default(self) -> bool {
        matches!(self, Goal::Switch | Goal::Boot)
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

/// `nix build <installable> --out-link <link>`: builds a pinned flake's toplevel (see
/// [`crate::toplevel_installable`]) with flakes enabled for this call only. Always linked:
/// the link is a GC root, so a prepared closure survives until the activation that uses
/// it, and the store path is read from the link, which also works with Nix releases before
/// 2.9 that have no `--print-out-paths` (the development machines run Nix 2.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixBuild {
    pub installable: String,
    pub out_link: PathBuf,
}

impl NixBuild {
    pub fn argv(&self) -> Vec<OsString> {
        vec![
            os("--extra-experimental-features"),
            os("nix-command flakes"),
            os("build"),
            os(self.installable.as_str()),
            os("--out-link"),
            self.out_link.as_os_str().to_owned(),
        ]
    }

    pub fn invocation(&self, nix: &Program) -> Invocation {
        Invocation::new(nix).args(self.argv())
    }
}

/// `nixos-rebuild <goal> [--flake <url>#<host>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixosRebuild {
    pub goal: Goal,
    /// A pinned `<url>#<host>` ([`crate::nixos_rebuild_target`]); `None`: the machine's
    /// own `/etc/nixos` configuration (what `apply-nix` rebuilds).
    pub flake: Option<String>,
}

impl NixosRebuild {
    pub fn argv(&self) -> Vec<OsString> {
        let mut argv = vec![os(self.goal.as_str())];
        if let Some(target) = &self.flake {
            argv.extend([os("--flake"), os(target.as_str())]);
        }
        argv
    }

    pub fn invocation(&self, nixos_rebuild: &Program) -> Invocation {
        Invocation::new(nixos_rebuild).args(self.argv())
    }
}

/// `<toplevel>/bin/switch-to-configuration <goal>`: activates a system that is already
/// built (a generation's store path), without evaluating anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchToConfiguration {
    pub toplevel: PathBuf,
    pub goal: Goal,
}

impl SwitchToConfiguration {
    /// The program lives inside the system it activates.
    pub fn program_path(&self) -> PathBuf {
        self.toplevel.join("bin").join("switch-to-configuration")
    }

    pub fn argv(&self) -> Vec<OsString> {
        vec![os(self.goal.as_str())]
    }

    /// `None` when the goal is `build` (nothing to activate).
    pub fn invocation(&self) -> Result<Option<Invocation>, crate::RunError> {
        if self.goal == Goal::Build {
            return Ok(None);
        }
        let program = Program::resolve(
            "switch-to-configuration",
            Some(&self.program_path()),
            "KCORE_SWITCH_TO_CONFIGURATION",
        )?;
        Ok(Some(Invocation::new(&program).args(self.argv())))
    }
}

/// What `nix-env --profile <profile>` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileAction {
    /// Add a generation pointing at this store path and make it current.
    Set(PathBuf),
    /// Make the previous generation current.
    Rollback,
    /// Make generation `n` current.
    SwitchGeneration(u64),
    /// Print the generations.
    ListGenerations,
}

/// `nix-env --profile <profile> ...` (the system profile is
/// `/nix/var/nix/profiles/system`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixEnvProfile {
    pub profile: PathBuf,
    pub action: ProfileAction,
}

impl NixEnvProfile {
    pub fn argv(&self) -> Vec<OsString> {
        let mut argv = vec![os("--profile"), self.profile.as_os_str().to_owned()];
        match &self.action {
            ProfileAction::Set(path) => argv.extend([os("--set"), path.as_os_str().to_owned()]),
            ProfileAction::Rollback => argv.push(os("--rollback")),
            ProfileAction::SwitchGeneration(n) => {
                argv.extend([os("--switch-generation"), os(n.to_string())])
            }
            ProfileAction::ListGenerations => argv.push(os("--list-generations")),
        }
        argv
    }

    pub fn invocation(&self, nix_env: &Program) -> Invocation {
        Invocation::new(nix_env).args(self.argv())
    }
}

/// `systemd-run`: a command in a transient service unit, so it outlives the agent
/// (an agent restart does not kill an activation or a format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdRun {
    /// The unit name (`kcore-…`); re-attaching after a restart looks it up by name.
    pub unit: String,
    pub description: String,
    /// `--property=K=V`, in order.
    pub properties: Vec<(String, String)>,
    /// `--setenv=K=V`, in order.
    pub env: Vec<(String, String)>,
    /// Block until the unit finishes and exit with its status (`--wait`).
    pub wait: bool,
    /// Unload the unit when it ends, also after a failure (`--collect`).
    pub collect: bool,
    /// `ExecStopPost=`: a command systemd runs after the main process ended, whatever the
    /// outcome, with `$SERVICE_RESULT`, `$EXIT_CODE` and `$EXIT_STATUS` describing it
    /// (systemd `man/systemd.exec.xml`, "Environment Variables in Spawned Processes";
    /// `man/systemd.service.xml`: `ExecStopPost=` also runs when the service failed).
    /// This is how an agent that was not there when the unit ended learns its real exit
    /// status, even though `--collect` unloaded the unit. Empty: none.
    pub stop_post: Vec<OsString>,
    /// The command, program path first.
    pub command: Vec<OsString>,
}

/// One word of a unit command line as systemd reads it (`man/systemd.service.xml`,
/// "Command lines"): in double quotes with `\` and `\"` escaped, and `%` / `$` doubled so
/// neither a specifier nor a variable is expanded in a path.
fn unit_word(word: &std::ffi::OsStr) -> String {
    let mut out = String::from("\"");
    for c in word.to_string_lossy().chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl SystemdRun {
    /// A unit that runs `command`, waits for it and is collected afterwards, with its
    /// output appended to `log` (what the agent's long operations use).
    pub fn logged(unit: &str, description: &str, log: &Path, command: Vec<OsString>) -> Self {
        let append = format!("append:{}", log.display());
        SystemdRun {
            unit: unit.to_string(),
            description: description.to_string(),
            properties: vec![
                ("StandardOutput".into(), append.clone()),
                ("StandardError".into(), append),
            ],
            env: Vec::new(),
            wait: true,
            collect: true,
            stop_post: Vec::new(),
            command,
        }
    }

    pub fn argv(&self) -> Vec<OsString> {
        let mut argv = vec![
            os(format!("--unit={}", self.unit)),
            os(format!("--description={}", self.description)),
        ];
        if self.wait {
            argv.push(os("--wait"));
        }
        if self.collect {
            argv.push(os("--collect"));
        }
        argv.extend([os("--quiet"), os("--service-type=exec")]);
        argv.extend(
            self.properties
                .iter()
                .map(|(k, v)| os(format!("--property={k}={v}"))),
        );
        if !self.stop_post.is_empty() {
            let words: Vec<String> = self.stop_post.iter().map(|w| unit_word(w)).collect();
            argv.push(os(format!("--property=ExecStopPost={}", words.join(" "))));
        }
        argv.extend(
            self.env
                .iter()
                .map(|(k, v)| os(format!("--setenv={k}={v}"))),
        );
        // Everything after `--` is the command, even arguments starting with '-'.
        argv.push(os("--"));
        argv.extend(self.command.iter().cloned());
        argv
    }

    pub fn invocation(&self, systemd_run: &Program) -> Invocation {
        Invocation::new(systemd_run).args(self.argv())
    }
}

/// disko's `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskoMode {
    /// Create partitions and filesystems (no wipe of what is not in the layout).
    Format,
    /// Mount what the layout describes.
    Mount,
    /// Format, then mount (day-2 additions and installs).
    FormatMount,
    /// Wipe the layout's disks, then format and mount (fresh installs only).
    DestroyFormatMount,
}

impl DiskoMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskoMode::Format => "format",
            DiskoMode::Mount => "mount",
            DiskoMode::FormatMount => "format,mount",
            DiskoMode::DestroyFormatMount => "destroy,format,mount",
        }
    }
}

/// `disko --mode <mode> --root-mountpoint <root> <fragment.nix>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disko {
    pub mode: DiskoMode,
    /// `/` on a running node (day 2), `/mnt` when installing.
    pub root_mountpoint: PathBuf,
    pub fragment: PathBuf,
}

impl Disko {
    pub fn argv(&self) -> Vec<OsString> {
        let mut argv = vec![os("--mode"), os(self.mode.as_str())];
        if self.mode == DiskoMode::DestroyFormatMount {
            // disko asks for confirmation before destroying; the plan was confirmed
            // by the operator already (with its hash).
            argv.push(os("--yes-wipe-all-disks"));
        }
        argv.extend([
            os("--root-mountpoint"),
            self.root_mountpoint.as_os_str().to_owned(),
            self.fragment.as_os_str().to_owned(),
        ]);
        argv
    }

    pub fn invocation(&self, disko: &Program) -> Invocation {
        Invocation::new(disko).args(self.argv())
    }
}

/// `nixos-install --system <toplevel> --root <root> --no-root-passwd --no-channel-copy`:
/// installs a closure that is already built (carried on the ISO), without evaluation or
/// network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixosInstall {
    pub system: PathBuf,
    pub root: PathBuf,
    /// Do not ask for a root password (nodes are reached with SSH keys).
    pub no_root_passwd: bool,
    /// Do not copy the ISO's channel (kcore nodes use the flake).
    pub no_channel_copy: bool,
}

impl NixosInstall {
    pub fn argv(&self) -> Vec<OsString> {
        let mut argv = vec![
            os("--system"),
            self.system.as_os_str().to_owned(),
            os("--root"),
            self.root.as_os_str().to_owned(),
        ];
        if self.no_root_passwd {
            argv.push(os("--no-root-passwd"));
        }
        if self.no_channel_copy {
            argv.push(os("--no-channel-copy"));
        }
        argv
    }

    pub fn invocation(&self, nixos_install: &Program) -> Invocation {
        Invocation::new(nixos_install).args(self.argv())
    }
}

/// `bootctl set-default|set-oneshot <entry>`: the trial boot of a new generation
/// (one-shot) and making it the default once its health gate passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootctl {
    SetDefault(String),
    SetOneshot(String),
}

impl Bootctl {
    pub fn argv(&self) -> Vec<OsString> {
        match self {
            Bootctl::SetDefault(entry) => vec![os("set-default"), os(entry.as_str())],
            Bootctl::SetOneshot(entry) => vec![os("set-oneshot"), os(entry.as_str())],
        }
    }

    pub fn invocation(&self, bootctl: &Program) -> Invocation {
        Invocation::new(bootctl).args(self.argv())
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
    fn goals_share_one_spelling_and_meaning() {
        let words: Vec<_> = [
            Goal::Build,
            Goal::Switch,
            Goal::Boot,
            Goal::Test,
            Goal::DryActivate,
        ]
        .iter()
        .map(|g| g.as_str())
        .collect();
        assert_eq!(words, ["build", "switch", "boot", "test", "dry-activate"]);
        assert!(Goal::Switch.activates_now() && Goal::Switch.changes_boot_default());
        assert!(Goal::Test.activates_now() && !Goal::Test.changes_boot_default());
        assert!(!Goal::Boot.activates_now() && Goal::Boot.changes_boot_default());
        assert!(!Goal::Build.activates_now() && !Goal::Build.changes_boot_default());
    }

    #[test]
    fn nix_build_pins_flakes_per_call_and_links_its_result() {
        let url = crate::pinned_flake_url("github:o/r", &"a".repeat(40)).unwrap();
        let installable = crate::toplevel_installable(&url, "hv1").unwrap();
        let build = NixBuild {
            installable: installable.clone(),
            out_link: "/var/lib/kcore/rollout/1.system".into(),
        };
        assert_eq!(
            strings(build.argv()),
            [
                "--extra-experimental-features",
                "nix-command flakes",
                "build",
                installable.as_str(),
                "--out-link",
                "/var/lib/kcore/rollout/1.system"
            ]
        );
    }

    #[test]
    fn nixos_rebuild_with_and_without_a_flake() {
        let target = format!("github:o/r/{}#hv1", "b".repeat(40));
        let with = NixosRebuild {
            goal: Goal::Boot,
            flake: Some(target.clone()),
        };
        assert_eq!(strings(with.argv()), ["boot", "--flake", target.as_str()]);
        let local = NixosRebuild {
            goal: Goal::Test,
            flake: None,
        };
        assert_eq!(strings(local.argv()), ["test"]);
    }

    #[test]
    fn switch_to_configuration_runs_from_inside_the_toplevel() {
        let stc = SwitchToConfiguration {
            toplevel: "/nix/store/abc-nixos-system-hv1".into(),
            goal: Goal::Switch,
        };
        assert_eq!(
            stc.program_path(),
            Path::new("/nix/store/abc-nixos-system-hv1/bin/switch-to-configuration")
        );
        assert_eq!(strings(stc.argv()), ["switch"]);
        let build = SwitchToConfiguration {
            goal: Goal::Build,
            ..stc
        };
        assert!(build.invocation().unwrap().is_none(), "nothing to activate");
    }

    #[test]
    fn profile_actions() {
        let p = |action| NixEnvProfile {
            profile: "/nix/var/nix/profiles/system".into(),
            action,
        };
        let head = ["--profile", "/nix/var/nix/profiles/system"];
        let set = strings(p(ProfileAction::Set("/nix/store/x-sys".into())).argv());
        assert_eq!(set[..2], head);
        assert_eq!(set[2..], ["--set", "/nix/store/x-sys"]);
        assert_eq!(
            strings(p(ProfileAction::Rollback).argv())[2..],
            ["--rollback"]
        );
        assert_eq!(
            strings(p(ProfileAction::SwitchGeneration(41)).argv())[2..],
            ["--switch-generation", "41"]
        );
        assert_eq!(
            strings(p(ProfileAction::ListGenerations).argv())[2..],
            ["--list-generations"]
        );
    }

    #[test]
    fn systemd_run_puts_the_command_after_the_separator() {
        let mut run = SystemdRun::logged(
            "kcore-op-1-switch",
            "kcore: nixos-rebuild switch",
            Path::new("/var/log/kcore/op-1.log"),
            vec![os("/run/current-system/sw/bin/nixos-rebuild"), os("switch")],
        );
        run.env.push(("NIX_PATH".into(), "nixpkgs=/x".into()));
        assert_eq!(
            strings(run.argv()),
            [
                "--unit=kcore-op-1-switch",
                "--description=kcore: nixos-rebuild switch",
                "--wait",
                "--collect",
                "--quiet",
                "--service-type=exec",
                "--property=StandardOutput=append:/var/log/kcore/op-1.log",
                "--property=StandardError=append:/var/log/kcore/op-1.log",
                "--setenv=NIX_PATH=nixpkgs=/x",
                "--",
                "/run/current-system/sw/bin/nixos-rebuild",
                "switch"
            ]
        );
        let detached = SystemdRun {
            wait: false,
            collect: false,
            ..run
        };
        let argv = strings(detached.argv());
        assert!(!argv.contains(&"--wait".to_string()) && !argv.contains(&"--collect".into()));
    }

    #[test]
    fn a_unit_reports_its_end_through_exec_stop_post() {
        let mut run = SystemdRun::logged(
            "kcore-apply-disko-0f1e2d3c4b5a-disko",
            "kcore apply-disko",
            Path::new("/var/log/kcore-agent/u.log"),
            vec![os("/bin/disko"), os("--mode"), os("format,mount")],
        );
        run.stop_post = vec![
            os("/bin/kcore-agent"),
            os("unit-result"),
            os("/var/lib/kcore/operations/units/a 100%$x\"y.status"),
        ];
        assert_eq!(
            strings(run.argv()),
            [
                "--unit=kcore-apply-disko-0f1e2d3c4b5a-disko",
                "--description=kcore apply-disko",
                "--wait",
                "--collect",
                "--quiet",
                "--service-type=exec",
                "--property=StandardOutput=append:/var/log/kcore-agent/u.log",
                "--property=StandardError=append:/var/log/kcore-agent/u.log",
                r#"--property=ExecStopPost="/bin/kcore-agent" "unit-result" "/var/lib/kcore/operations/units/a 100%%$$x\"y.status""#,
                "--",
                "/bin/disko",
                "--mode",
                "format,mount"
            ]
        );
    }

    #[test]
    fn disko_modes_and_root() {
        let day2 = Disko {
            mode: DiskoMode::FormatMount,
            root_mountpoint: "/".into(),
            fragment: "/var/lib/kcore/disko/data1.nix".into(),
        };
        assert_eq!(
            strings(day2.argv()),
            [
                "--mode",
                "format,mount",
                "--root-mountpoint",
                "/",
                "/var/lib/kcore/disko/data1.nix"
            ]
        );
        let install = Disko {
            mode: DiskoMode::DestroyFormatMount,
            root_mountpoint: "/mnt".into(),
            fragment: "/tmp/layout.nix".into(),
        };
        assert_eq!(
            strings(install.argv())[..3],
            ["--mode", "destroy,format,mount", "--yes-wipe-all-disks"]
        );
    }

    #[test]
    fn nixos_install_of_a_prebuilt_closure() {
        let install = NixosInstall {
            system: "/nix/store/abc-nixos-system-node".into(),
            root: "/mnt".into(),
            no_root_passwd: true,
            no_channel_copy: true,
        };
        assert_eq!(
            strings(install.argv()),
            [
                "--system",
                "/nix/store/abc-nixos-system-node",
                "--root",
                "/mnt",
                "--no-root-passwd",
                "--no-channel-copy"
            ]
        );
    }

    #[test]
    fn bootctl_entries() {
        assert_eq!(
            strings(Bootctl::SetOneshot("nixos-generation-42.conf".into()).argv()),
            ["set-oneshot", "nixos-generation-42.conf"]
        );
        assert_eq!(
            strings(Bootctl::SetDefault("nixos-generation-42.conf".into()).argv()),
            ["set-default", "nixos-generation-42.conf"]
        );
    }
}
