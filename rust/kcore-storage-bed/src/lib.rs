//! Harness for the QEMU storage test bed (`tests/storage-bed/`): boots a Debian guest with
//! virtual disks (optionally a swtpm TPM2 and ZFS), runs a payload, returns its results.
//!
//! The host kernel has no device-mapper, so LVM, LUKS2, ZFS and disko's generated scripts
//! only run for real inside a guest. [`Bed::ensure`] installs the host tools
//! (`setup-host.sh`) and builds or finds the cached guest image (`build-image.sh`);
//! [`Bed::run`] boots it once under TCG with the requested disks, passes the payload
//! directory in as a tar on a read-only virtio disk (serial `kcore-payload`; fw_cfg reads
//! are byte-wise port I/O in Linux and far too slow under TCG for binaries), and collects the exit code, the serial console log
//! and the files the payload wrote to `$KCORE_RESULTS`.
//!
//! Runs are serialised process-wide and host-wide (a mutex plus `flock` on
//! `<cache>/.run.lock`): the machines this runs on have two cores and one TCG guest already
//! uses both.

pub mod testing;

use kcore_nix::runner::{Invocation, Output, Program, RunError, StreamLine};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the bed's shell scripts live, relative to this crate (overridable with
/// `KCORE_STORAGE_BED_DIR`, for a checkout laid out differently).
const SCRIPTS_REL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/storage-bed");

/// Serial of the read-only disk that carries the payload tar.
const PAYLOAD_SERIAL: &str = "kcore-payload";
/// Serial of the raw disk the guest writes its results tar onto.
const RESULTS_SERIAL: &str = "kcore-results";
/// Size of that disk; sparse on the host, so only what is written costs space.
const RESULTS_DISK_BYTES: u64 = 256 << 20;
/// Upper bound for any run's timeout, as everywhere in kcore.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// One TCG guest at a time in this process.
static RUN_LOCK: Mutex<()> = Mutex::new(());

/// Why the bed could not be prepared or a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum BedError {
    /// The host cannot run the bed at all (no QEMU and installing it failed). Tests print
    /// `SKIP:` for this one only; every other error is a failure.
    #[error("storage bed unavailable on this host: {0}")]
    Unavailable(String),
    /// A helper program (setup, image build, tar, QEMU) failed; the runner's error names
    /// the full argv, the exit status and the tail of stderr.
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("cannot start the async runtime that runs helper programs: {0}")]
    Runtime(std::io::Error),
    /// A helper program failed.
    #[error("`{argv}` failed ({status}): {stderr_tail}")]
    Command {
        /// The full argument vector, for copy-paste.
        argv: String,
        /// How it ended.
        status: String,
        /// The end of its standard error.
        stderr_tail: String,
    },
    /// A file operation on the host failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The run's parameters are wrong.
    #[error("invalid run: {0}")]
    Invalid(String),
    /// The guest did not power off within the timeout; QEMU was killed.
    #[error("guest did not finish within {timeout:?}; serial log tail:\n{serial_tail}")]
    Timeout {
        /// The timeout that expired.
        timeout: Duration,
        /// The end of the serial console log.
        serial_tail: String,
    },
    /// The guest stopped without reporting an exit code (kernel panic, init failure).
    #[error("guest ended without a result (qemu {status}); serial log tail:\n{serial_tail}")]
    NoResult {
        /// QEMU's exit status.
        status: String,
        /// The end of the serial console log.
        serial_tail: String,
    },
}

/// What kind of guest image a test needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct BedOptions {
    /// Use the image with OpenZFS 2.3 (built lazily with dkms the first time, then cached).
    pub zfs: bool,
}

/// A virtual disk attached to the guest as `/dev/disk/by-id/virtio-<serial>`.
#[derive(Debug, Clone)]
pub struct Disk {
    /// virtio-blk serial (at most 20 bytes; letters, digits, `-`, `_`).
    pub serial: String,
    /// Size of a newly created disk.
    pub size_bytes: u64,
    /// A raw image file to use and keep (created at `size_bytes` if missing), so a later
    /// boot sees the same disk. `None`: a fresh sparse disk that is deleted after the run.
    pub image: Option<PathBuf>,
}

impl Disk {
    /// A fresh, throw-away disk.
    pub fn new(serial: &str, size_bytes: u64) -> Self {
        Self {
            serial: serial.to_owned(),
            size_bytes,
            image: None,
        }
    }

    /// A disk backed by `image`, kept across runs.
    pub fn persistent(serial: &str, size_bytes: u64, image: &Path) -> Self {
        Self {
            serial: serial.to_owned(),
            size_bytes,
            image: Some(image.to_owned()),
        }
    }
}

/// One boot of the guest.
#[derive(Debug, Clone)]
pub struct Run {
    /// Data disks, in this order on the PCI bus after the root disk.
    pub disks: Vec<Disk>,
    /// swtpm state directory: `Some` attaches a TPM2 (state kept there across runs).
    pub tpm_state_dir: Option<PathBuf>,
    /// Directory with `run.sh` and whatever it needs; unpacked at `/payload` in the guest,
    /// where `run.sh` runs as root with `$KCORE_RESULTS` pointing at the results directory.
    pub payload_dir: PathBuf,
    /// Wall-clock limit for the whole boot (capped at one hour).
    pub timeout: Duration,
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code of the payload's `run.sh`.
    pub exit_code: i32,
    /// Everything the guest wrote to its serial console (kernel, init, payload output).
    pub serial_log: String,
    /// Files the payload wrote to `$KCORE_RESULTS` (removed when the `Outcome` drops).
    pub results_dir: PathBuf,
    /// Guest uptime in seconds when the init script started (boot to userspace).
    pub userspace_at_secs: Option<f64>,
    /// Wall-clock time of the whole run on the host.
    pub wall: Duration,
    _results_tmp: tempfile::TempDir,
}

impl Outcome {
    /// Reads a result file the payload wrote (`$KCORE_RESULTS/<name>`).
    pub fn result(&self, name: &str) -> Result<String, BedError> {
        let path = self.results_dir.join(name);
        fs::read_to_string(&path).map_err(|source| BedError::Io {
            what: "reading result",
            path,
            source,
        })
    }
}

/// A prepared bed: host tools present and a guest image built.
#[derive(Debug, Clone)]
pub struct Bed {
    image_dir: PathBuf,
    scripts_dir: PathBuf,
}

impl Bed {
    /// Installs host tools if needed and builds (or finds cached) the guest image.
    ///
    /// Returns [`BedError::Unavailable`] only when the host truly cannot run the bed.
    pub fn ensure(opts: BedOptions) -> Result<Bed, BedError> {
        let scripts_dir = std::env::var_os("KCORE_STORAGE_BED_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(SCRIPTS_REL));
        let setup = scripts_dir.join("setup-host.sh");
        if !setup.is_file() {
            return Err(BedError::Invalid(format!(
                "{} not found; set KCORE_STORAGE_BED_DIR to the tests/storage-bed directory",
                setup.display()
            )));
        }
        if let Err(e) = run_program(&script(&setup)?, &[]) {
            // Installing failed: skip only if the tools really are missing.
            if !on_path("qemu-system-x86_64") || !on_path("swtpm") {
                return Err(BedError::Unavailable(format!(
                    "qemu-system-x86_64/swtpm missing and setup-host.sh failed: {e}"
                )));
            }
            return Err(e);
        }
        let build_args: &[&OsStr] = if opts.zfs {
            &[OsStr::new("--zfs")]
        } else {
            &[]
        };
        let out = run_program(&script(&scripts_dir.join("build-image.sh"))?, build_args)?;
        let image_dir = out
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .filter(|p| p.join("root.img").is_file())
            .ok_or_else(|| {
                BedError::Invalid(format!(
                    "build-image.sh printed no image directory (stdout: {out:?})"
                ))
            })?;
        Ok(Bed {
            image_dir,
            scripts_dir,
        })
    }

    /// The directory holding `root.img`, `vmlinuz`, `initrd.img` and `packages.txt`.
    pub fn image_dir(&self) -> &Path {
        &self.image_dir
    }

    /// The `tests/storage-bed` directory the bed was prepared from.
    pub fn scripts_dir(&self) -> &Path {
        &self.scripts_dir
    }

    /// Boots the guest once with `run`'s disks, TPM and payload and collects the outcome.
    pub fn run(&self, run: &Run) -> Result<Outcome, BedError> {
        let _guard = RUN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        // Other test binaries (other crates' bed tests) boot guests too: one at a time per host.
        let lock_path = self
            .image_dir
            .parent()
            .unwrap_or(&self.image_dir)
            .join(".run.lock");
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| BedError::Io {
                what: "opening run lock",
                path: lock_path.clone(),
                source,
            })?;
        let _host_lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| BedError::Io {
                what: "locking",
                path: lock_path.clone(),
                source: errno.into(),
            })?;
        validate(run)?;
        let started = Instant::now();
        let work = tempfile::Builder::new()
            .prefix("kcore-bed-")
            .tempdir()
            .map_err(|source| BedError::Io {
                what: "creating temp dir",
                path: std::env::temp_dir(),
                source,
            })?;
        let w = work.path();

        let payload_tar = w.join("payload.tar");
        let tar = tool("tar", "KCORE_TAR")?;
        run_program(
            &tar,
            &[
                OsStr::new("-cf"),
                payload_tar.as_os_str(),
                OsStr::new("-C"),
                run.payload_dir.as_os_str(),
                OsStr::new("."),
            ],
        )?;

        let results_img = w.join("results.img");
        create_sparse(&results_img, RESULTS_DISK_BYTES)?;

        let mut drives: Vec<(PathBuf, String)> = Vec::new();
        for (i, d) in run.disks.iter().enumerate() {
            let path = match &d.image {
                Some(p) => p.clone(),
                None => w.join(format!("disk{i}.img")),
            };
            if !path.exists() {
                create_sparse(&path, d.size_bytes)?;
            }
            drives.push((path, d.serial.clone()));
        }

        let serial_log = w.join("serial.log");

        // The runner starts QEMU in its own process group and, on timeout, kills the group.
        let qemu = Invocation::new(&tool("qemu-system-x86_64", "KCORE_QEMU_SYSTEM")?)
            .args(qemu_argv(
                &self.image_dir,
                &drives,
                &results_img,
                &payload_tar,
                &serial_log,
                run.tpm_state_dir.as_ref().map(|_| w.join("swtpm.sock")),
            ))
            .timeout(run.timeout.min(MAX_TIMEOUT));
        tracing::debug!(argv = %qemu.display(), "booting storage bed");
        // swtpm and QEMU run side by side on one runtime, both through the runner.
        let waited = runtime()?.block_on(async {
            let swtpm = match &run.tpm_state_dir {
                Some(dir) => Some(start_swtpm(dir, &w.join("swtpm.sock")).await?),
                None => None,
            };
            let waited = qemu.stream_unchecked(pass_stderr_through).await;
            if let Some(mut task) = swtpm {
                // swtpm --terminate exits when QEMU disconnects; if it has not within 5 s,
                // aborting the task drops the runner's future, which kills its process group.
                if tokio::time::timeout(Duration::from_secs(5), &mut task)
                    .await
                    .is_err()
                {
                    task.abort();
                    let _ = task.await;
                }
            }
            Ok::<Output, BedError>(waited?)
        });
        let serial = fs::read(&serial_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let status = match waited {
            Ok(output) => output.status,
            Err(BedError::Run(RunError::TimedOut { .. })) => {
                return Err(BedError::Timeout {
                    timeout: run.timeout,
                    serial_tail: tail(&serial, 60),
                });
            }
            Err(e) => return Err(e),
        };

        let results_tmp = tempfile::Builder::new()
            .prefix("kcore-bed-results-")
            .tempdir()
            .map_err(|source| BedError::Io {
                what: "creating temp dir",
                path: std::env::temp_dir(),
                source,
            })?;
        let untarred = run_program(
            &tar,
            &[
                OsStr::new("-xf"),
                results_img.as_os_str(),
                OsStr::new("-C"),
                results_tmp.path().as_os_str(),
            ],
        );
        let code = fs::read_to_string(results_tmp.path().join("exit-code"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let exit_code = match (untarred, code) {
            (Ok(_), Some(c)) => c,
            _ => {
                return Err(BedError::NoResult {
                    status: status.to_string(),
                    serial_tail: tail(&serial, 60),
                });
            }
        };
        Ok(Outcome {
            exit_code,
            userspace_at_secs: marker_value(&serial, "KCORE-BED: userspace uptime="),
            serial_log: serial,
            results_dir: results_tmp.path().to_owned(),
            wall: started.elapsed(),
            _results_tmp: results_tmp,
        })
    }
}

/// The QEMU argument vector for one boot. TCG, not KVM: the hosts this runs on are
/// paravirtualised and `-accel kvm` aborts or crawls there.
///
/// Built here, not in kcore-nix: QEMU (like swtpm and the payload `tar`) is test-bed
/// scaffolding that no kcore product code runs; the runner still runs it.
fn qemu_argv(
    image_dir: &Path,
    drives: &[(PathBuf, String)],
    results_img: &Path,
    payload_tar: &Path,
    serial_log: &Path,
    tpm_socket: Option<PathBuf>,
) -> Vec<String> {
    let p = |x: &Path| x.display().to_string();
    let mut a: Vec<String> = [
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "2048",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    a.push("-serial".into());
    a.push(format!("file:{}", p(serial_log)));
    a.push("-kernel".into());
    a.push(p(&image_dir.join("vmlinuz")));
    a.push("-initrd".into());
    a.push(p(&image_dir.join("initrd.img")));
    a.push("-append".into());
    a.push(
        "console=ttyS0 root=LABEL=kcore-bed-root rw init=/sbin/kcore-bed-init panic=-1 \
         loglevel=4 fsck.mode=skip"
            .into(),
    );
    let mut drive = |file: &Path, id: &str, serial: &str, extra: &str| {
        a.push("-drive".into());
        a.push(format!(
            "file={},format=raw,if=none,id={id}{extra}",
            qemu_escape(&p(file))
        ));
        a.push("-device".into());
        a.push(format!("virtio-blk-pci,drive={id},serial={serial}"));
    };
    // The root image is shared by every run: snapshot=on keeps guest writes in a temp file.
    drive(
        &image_dir.join("root.img"),
        "root",
        "kcore-root",
        ",snapshot=on",
    );
    for (i, (file, serial)) in drives.iter().enumerate() {
        drive(file, &format!("d{i}"), serial, "");
    }
    drive(results_img, "results", RESULTS_SERIAL, "");
    drive(payload_tar, "payload", PAYLOAD_SERIAL, ",readonly=on");
    a.push("-device".into());
    a.push("virtio-rng-pci".into());
    if let Some(sock) = tpm_socket {
        a.push("-chardev".into());
        a.push(format!("socket,id=chrtpm,path={}", qemu_escape(&p(&sock))));
        a.push("-tpmdev".into());
        a.push("emulator,id=tpm0,chardev=chrtpm".into());
        a.push("-device".into());
        a.push("tpm-tis,tpmdev=tpm0".into());
    }
    a
}

/// QEMU option values separate with `,`; a literal comma is written `,,`.
fn qemu_escape(s: &str) -> String {
    s.replace(',', ",,")
}

fn validate(run: &Run) -> Result<(), BedError> {
    if !run.payload_dir.join("run.sh").is_file() {
        return Err(BedError::Invalid(format!(
            "payload_dir {} has no run.sh",
            run.payload_dir.display()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in &run.disks {
        let ok = !d.serial.is_empty()
            && d.serial.len() <= 20
            && d.serial
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(BedError::Invalid(format!(
                "disk serial {:?}: use 1-20 letters, digits, '-' or '_'",
                d.serial
            )));
        }
        if [RESULTS_SERIAL, PAYLOAD_SERIAL, "kcore-root"].contains(&d.serial.as_str()) {
            return Err(BedError::Invalid(format!(
                "disk serial {:?} is reserved by the bed",
                d.serial
            )));
        }
        if !seen.insert(d.serial.clone()) {
            return Err(BedError::Invalid(format!(
                "disk serial {:?} used twice",
                d.serial
            )));
        }
        if d.size_bytes == 0 && d.image.as_ref().is_none_or(|p| !p.exists()) {
            return Err(BedError::Invalid(format!(
                "disk {:?}: size_bytes must be > 0 for a new disk",
                d.serial
            )));
        }
    }
    if run.timeout.is_zero() {
        return Err(BedError::Invalid("timeout must be > 0".into()));
    }
    Ok(())
}

fn create_sparse(path: &Path, size: u64) -> Result<(), BedError> {
    let io = |source| BedError::Io {
        what: "creating disk image",
        path: path.to_owned(),
        source,
    };
    let f = fs::File::create(path).map_err(io)?;
    f.set_len(size).map_err(io)
}

/// swtpm's own argv: the bed's test scaffolding, like QEMU's (no kcore product code runs
/// either, so there is no kcore-nix builder for them; the runner still runs both).
fn swtpm_argv(state_dir: &Path, sock: &Path) -> Vec<String> {
    vec![
        "socket".into(),
        "--tpm2".into(),
        "--tpmstate".into(),
        format!("dir={}", qemu_escape(&state_dir.display().to_string())),
        "--ctrl".into(),
        format!(
            "type=unixio,path={}",
            qemu_escape(&sock.display().to_string())
        ),
        "--terminate".into(),
    ]
}

/// A swtpm run by the runner in a task of its own: aborting or dropping the task drops the
/// runner's future, and with it kills swtpm's process group.
type SwtpmTask = tokio::task::JoinHandle<Result<Output, RunError>>;

/// Starts swtpm and waits (at most 10 s) for its control socket, which QEMU connects to.
async fn start_swtpm(state_dir: &Path, sock: &Path) -> Result<SwtpmTask, BedError> {
    fs::create_dir_all(state_dir).map_err(|source| BedError::Io {
        what: "creating swtpm state dir",
        path: state_dir.to_owned(),
        source,
    })?;
    let swtpm = Invocation::new(&tool("swtpm", "KCORE_SWTPM")?).args(swtpm_argv(state_dir, sock));
    let argv = swtpm.display();
    let mut task: SwtpmTask =
        tokio::spawn(async move { swtpm.stream_unchecked(pass_stderr_through).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        if task.is_finished() {
            let status = match (&mut task).await {
                Ok(Ok(out)) => out.status.to_string(),
                Ok(Err(e)) => return Err(e.into()),
                Err(join) => join.to_string(),
            };
            return Err(BedError::Command {
                argv,
                status,
                stderr_tail: "exited before creating its socket".into(),
            });
        }
        if Instant::now() > deadline {
            task.abort();
            let _ = task.await;
            return Err(BedError::Command {
                argv,
                status: "timeout".into(),
                stderr_tail: "no control socket after 10 s".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(task)
}

/// A current-thread runtime for runner calls: the harness is synchronous, kcore-nix's
/// runner is async.
fn runtime() -> Result<tokio::runtime::Runtime, BedError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BedError::Runtime)
}

/// Runs `future` (a runner call) to completion on a runtime of its own: the harness is
/// synchronous, kcore-nix's runner is async.
fn block_on<T>(
    future: impl std::future::Future<Output = Result<T, RunError>>,
) -> Result<T, BedError> {
    Ok(runtime()?.block_on(future)?)
}

/// Helpers' stderr (image build progress, QEMU warnings) reaches the test's stderr as it
/// comes; the runner still keeps its tail for the error.
fn pass_stderr_through(line: StreamLine) {
    if let StreamLine::Stderr(line) = line {
        eprintln!("{line}");
    }
}

/// Runs a helper to completion and returns its stdout.
fn run_program(program: &Program, args: &[&OsStr]) -> Result<String, BedError> {
    let output = block_on(
        Invocation::new(program)
            .args(args)
            .stream(pass_stderr_through),
    )?;
    Ok(output.stdout_lossy())
}

/// A host tool: the environment variable `env_var` if set, else `PATH`.
fn tool(name: &str, env_var: &str) -> Result<Program, BedError> {
    Ok(Program::resolve(name, None, env_var)?)
}

/// One of the bed's own scripts, by path (`KCORE_STORAGE_BED_DIR` chose the directory; an
/// explicit path wins over the environment, so no other variable is read).
fn script(path: &Path) -> Result<Program, BedError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Program::resolve(
        &name,
        Some(path),
        "KCORE_STORAGE_BED_DIR",
    )?)
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn marker_value(log: &str, marker: &str) -> Option<f64> {
    log.lines()
        .find_map(|l| l.split_once(marker).map(|(_, rest)| rest))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_argv_attaches_disks_by_serial_and_escapes_commas() {
        let a = qemu_argv(
            Path::new("/img"),
            &[(PathBuf::from("/t/a,b.img"), "data1".into())],
            Path::new("/t/res.img"),
            Path::new("/t/p.tar"),
            Path::new("/t/serial.log"),
            None,
        );
        let joined = a.join(" ");
        assert!(joined.contains("file=/t/a,,b.img,format=raw,if=none,id=d0"));
        assert!(joined.contains("virtio-blk-pci,drive=d0,serial=data1"));
        assert!(joined.contains("file=/img/root.img,format=raw,if=none,id=root,snapshot=on"));
        assert!(joined.contains("-accel tcg"));
        assert!(joined.contains("file=/t/p.tar,format=raw,if=none,id=payload,readonly=on"));
        assert!(!joined.contains("tpm-tis"));
    }

    #[test]
    fn invalid_serials_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("run.sh"), "true\n").unwrap();
        let mut run = Run {
            disks: vec![Disk::new("has space", 1 << 20)],
            tpm_state_dir: None,
            payload_dir: dir.path().to_owned(),
            timeout: Duration::from_secs(1),
        };
        let e = validate(&run).unwrap_err().to_string();
        assert!(
            e.contains("has space") && e.contains("letters, digits"),
            "{e}"
        );
        run.disks = vec![Disk::new("kcore-results", 1 << 20)];
        assert!(validate(&run).unwrap_err().to_string().contains("reserved"));
        run.disks = vec![Disk::new("a", 1 << 20), Disk::new("a", 1 << 20)];
        assert!(validate(&run).unwrap_err().to_string().contains("twice"));
        run.disks = vec![Disk::new("a", 1 << 20)];
        assert!(validate(&run).is_ok());
    }

    #[test]
    fn marker_value_reads_the_uptime() {
        let log = "noise\nKCORE-BED: userspace uptime=9.81\nmore";
        assert_eq!(
            marker_value(log, "KCORE-BED: userspace uptime="),
            Some(9.81)
        );
        assert_eq!(marker_value("none", "KCORE-BED: userspace uptime="), None);
    }

    /// The TPM half of a bed run without QEMU: the runner starts the real swtpm, its control
    /// socket appears, and swtpm's own exit (here on the control channel's `CMD_SHUTDOWN`,
    /// command 3, which QEMU's tpm-emulator backend also sends when it shuts down) finishes
    /// the runner's task with its output.
    #[test]
    fn swtpm_runs_through_the_runner_until_it_is_shut_down() {
        if tool("swtpm", "KCORE_SWTPM").is_err() {
            eprintln!("SKIP: swtpm_runs_through_the_runner_until_it_is_shut_down: no swtpm");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("swtpm.sock");
        runtime().unwrap().block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let task = start_swtpm(&dir.path().join("state"), &sock).await.unwrap();
            let mut ctrl = tokio::net::UnixStream::connect(&sock).await.unwrap();
            ctrl.write_all(&3u32.to_be_bytes()).await.unwrap();
            let mut result = [0u8; 4];
            ctrl.read_exact(&mut result).await.unwrap();
            assert_eq!(
                u32::from_be_bytes(result),
                0,
                "CMD_SHUTDOWN answered TPM_SUCCESS"
            );
            drop(ctrl);
            // A guard against a hang, not a speed assertion.
            let out = tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("swtpm exits after CMD_SHUTDOWN")
                .unwrap()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        });
    }
}
