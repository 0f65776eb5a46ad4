//! A kctl stopped by SIGTERM or Ctrl-C (SIGINT) while it evaluates leaves no evaluator
//! behind. The evaluator is a stand-in written here (it records its pid and sleeps), given
//! with `--nix-instantiate`, because a real evaluation finishes or hits its bounds at a
//! speed this test cannot control; the stand-in keeps running until someone kills it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const FRAGMENT: &str = "{ disko.devices = { }; }\n";

/// A stand-in `nix-instantiate`: answers `--version`, otherwise writes its pid and sleeps.
fn stand_in(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("nix-instantiate");
    let pid_file = dir.join("evaluator.pid");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n# Stand-in for nix-instantiate (tests/it/interrupt.rs): never evaluates.\n\
             case \"$1\" in --version) echo 'nix-instantiate (Nix) 2.18.1'; exit 0;; esac\n\
             echo $$ > '{}.tmp' && mv '{}.tmp' '{}'\nexec sleep 600\n",
            pid_file.display(),
            pid_file.display(),
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Polls for a condition (no timing is asserted: the bound only stops a hung test).
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gave up waiting for {what}");
}

/// Gone, or a zombie nobody reaps (an init in a container may not): not running.
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

#[test]
fn sigterm_or_ctrl_c_leaves_no_evaluator_running() {
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let nix = stand_in(dir.path());
        let fragment = dir.path().join("layout.nix");
        std::fs::write(&fragment, FRAGMENT).unwrap();
        let kctl = Command::new(assert_cmd::cargo::cargo_bin("kctl"))
            .args(["disko", "validate", "--nix-instantiate"])
            .arg(&nix)
            .arg("-f")
            .arg(&fragment)
            .env_remove("KCORE_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid_file = dir.path().join("evaluator.pid");
        wait_for("the evaluator to start", || pid_file.exists());
        let evaluator = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_string();
        assert!(running(&evaluator));
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &kctl.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = kctl.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "SIG{signal}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // kctl killed the group before it exited: nothing is left to wait for.
        assert!(
            !running(&evaluator),
            "SIG{signal}: the evaluator {evaluator} outlived kctl"
        );
    }
}
