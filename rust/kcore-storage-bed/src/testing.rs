//! Helpers every storage-bed test file shares: prepare the bed or print `SKIP:`, find this
//! workspace's binaries next to the test binary, write payload scripts, read result codes.
//! They panic with a message instead of returning errors: they run only inside tests, where
//! a panic is the failure report.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::{Bed, BedError, BedOptions, Outcome};

/// Prepares the bed, or prints `SKIP:` and returns `None` when the host cannot run it
/// (the only error that skips; every other one fails the test).
pub fn bed_or_skip(opts: BedOptions) -> Option<Bed> {
    let t = Instant::now();
    match Bed::ensure(opts) {
        Ok(b) => {
            eprintln!("bed ready ({opts:?}) in {:.1}s", t.elapsed().as_secs_f64());
            Some(b)
        }
        Err(BedError::Unavailable(why)) => {
            eprintln!("SKIP: {why}");
            None
        }
        Err(e) => panic!("preparing the storage bed failed: {e}"),
    }
}

/// A binary of this workspace next to the running test binary (`target/debug/<name>` for
/// `target/debug/deps/<test>-*`); the message says which package to build.
pub fn workspace_binary(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| panic!("cannot find this test's executable: {e}"));
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .unwrap_or_else(|| panic!("{} has no target directory", exe.display()));
    assert!(
        bin.is_file(),
        "{} missing: build it first: cargo build -p {package}",
        bin.display()
    );
    bin
}

/// A file under the checkout's `tests/support` (the stand-ins).
pub fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/support")
        .join(name)
}

/// Writes an executable script (mode 0755).
pub fn write_exec(path: &Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, content).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Copies a directory tree (without `.git`) into a payload.
pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("creating {}: {e}", dst.display()));
    let entries = fs::read_dir(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        if from.is_dir() {
            copy_dir(&from, &to);
        } else {
            fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
        }
    }
}

/// The exit code a payload step wrote to `$KCORE_RESULTS/<name>` (the serial log on failure).
pub fn result_code(out: &Outcome, name: &str) -> i32 {
    let text = out
        .result(name)
        .unwrap_or_else(|e| panic!("{e}\nserial log:\n{}", out.serial_log));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {text:?} is not an exit code: {e}"))
}
