//! A rollout test node's fake root (tests/support/fleet/README.md): what is installed on it
//! and what a simulated boot leaves in it. Shared by kcore-agent's test rig
//! (`rust/kcore-agent/tests/it/rollout_rig.rs`) and the `fleet_agent` example that
//! `scripts/demo-rollout.sh` runs, both through `#[path]`, so the two cannot drift.
//! Standard library only.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A two-line wrapper at `path` that runs the stand-in `program` with `KCORE_FAKE_ROOT`
/// set to `root` (the agent's own `systemctl` and `bootctl` calls go through it).
pub fn wrapper(path: &Path, root: &Path, program: &Path) -> io::Result<()> {
    // The fake root and the stand-in are temporary and repository paths without quotes.
    let text = format!(
        "#!/bin/sh\nKCORE_FAKE_ROOT='{}' exec '{}' \"$@\"\n",
        root.display(),
        program.display()
    );
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let status = cmd.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{cmd:?} exited {status}")))
    }
}

/// Installs `top` (a built fleet toplevel) on the fake root as generation 1, its boot
/// loader written, booted and healthy; the install is no activation a test counts.
pub fn install(root: &Path, top: &Path) -> io::Result<()> {
    let profile = root.join("nix/var/nix/profiles/system");
    std::fs::create_dir_all(profile.parent().unwrap_or(root))?;
    std::fs::create_dir_all(root.join("run"))?;
    run(Command::new("nix-env")
        .arg("-p")
        .arg(&profile)
        .arg("--set")
        .arg(top))?;
    run(Command::new(top.join("bin/switch-to-configuration"))
        .arg("boot")
        .env("KCORE_FAKE_ROOT", root))?;
    std::fs::remove_file(root.join("var/log/kcore-fleet/activations"))?;
    boot_into(root, top)
}

/// `run/booted-system` and `run/current-system` point at `top`, and the system state the
/// `systemctl` stand-in answers is what `top`'s `behaviour/health` says.
pub fn boot_into(root: &Path, top: &Path) -> io::Result<()> {
    for link in ["run/booted-system", "run/current-system"] {
        let _ = std::fs::remove_file(root.join(link));
        std::os::unix::fs::symlink(top, root.join(link))?;
    }
    let state = root.join("run/kcore-stand-in");
    std::fs::create_dir_all(&state)?;
    let _ = std::fs::remove_file(state.join("failed-units"));
    let health = std::fs::read_to_string(top.join("behaviour/health"))?;
    let word = match health.as_str() {
        "ok" => "running",
        "degraded" => {
            std::fs::write(state.join("failed-units"), "kcore-fleet-probe.service\n")?;
            "degraded"
        }
        _ => "starting",
    };
    std::fs::write(state.join("system-state"), format!("{word}\n"))
}

/// The toplevel the boot loader state picks for the next boot, as systemd-boot does: the
/// one-shot entry (used up: removed), else the default, else `loader.conf`'s `default`.
/// `oneshot_boots: false` is a one-shot entry that does not come up (a kernel that hangs,
/// then a power cycle): it is used up and the default boots.
pub fn next_boot(root: &Path, oneshot_boots: bool) -> io::Result<PathBuf> {
    if root.join("boot/grub/grub.cfg").is_file() {
        return next_grub_boot(root, oneshot_boots);
    }
    let efi = root.join("boot/efivars");
    let oneshot = efi.join("LoaderEntryOneShot");
    if !oneshot_boots {
        std::fs::remove_file(&oneshot)?;
    }
    let entry = if let Ok(e) = std::fs::read_to_string(&oneshot) {
        std::fs::remove_file(&oneshot)?;
        e
    } else if let Ok(e) = std::fs::read_to_string(efi.join("LoaderEntryDefault")) {
        e
    } else {
        let conf = std::fs::read_to_string(root.join("boot/loader/loader.conf"))?;
        conf.lines()
            .find_map(|l| l.strip_prefix("default "))
            .ok_or_else(|| io::Error::other("loader.conf has no default"))?
            .to_string()
    };
    let text = std::fs::read_to_string(root.join(format!("boot/loader/entries/{}", entry.trim())))?;
    let init = text
        .lines()
        .find_map(|l| l.strip_prefix("options init="))
        .ok_or_else(|| io::Error::other(format!("entry {} has no init", entry.trim())))?;
    Ok(PathBuf::from(init.strip_suffix("/init").unwrap_or(init)))
}

/// [`next_boot`] with GRUB, as the grub.cfg of nixpkgs' install-grub.pl (and the fleet
/// stand-in) does: grubenv's `next_entry` once (cleared as it is used), else "NixOS -
/// Default".
fn next_grub_boot(root: &Path, oneshot_boots: bool) -> io::Result<PathBuf> {
    let env = root.join("boot/grub/grubenv");
    let next = std::fs::read_to_string(&env)
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("next_entry=").map(str::to_string))
        })
        .filter(|e| !e.is_empty());
    if next.is_some() {
        std::fs::write(&env, "# GRUB Environment Block\nnext_entry=\n")?;
    }
    let title = match next {
        Some(entry) if oneshot_boots => entry.rsplit('>').next().unwrap_or("").to_string(),
        _ => "NixOS - Default".to_string(),
    };
    let cfg = std::fs::read_to_string(root.join("boot/grub/grub.cfg"))?;
    let mut lines = cfg
        .lines()
        .skip_while(|l| l.trim() != format!("menuentry \"{title}\" {{"));
    let linux = lines
        .nth(1)
        .ok_or_else(|| io::Error::other(format!("grub.cfg has no entry {title:?}")))?;
    let init = linux
        .split_whitespace()
        .find_map(|w| w.strip_prefix("init="))
        .ok_or_else(|| io::Error::other(format!("entry {title:?} has no init")))?;
    Ok(PathBuf::from(init.strip_suffix("/init").unwrap_or(init)))
}
