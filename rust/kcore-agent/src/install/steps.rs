//! The programs each install step runs ([`super::run`] says what the steps are), through
//! kcore-nix's typed builders; every program comes from `binaries` (then `KCORE_*`, then
//! PATH), every call has what is left of the install's timeout, and its output lines go
//! to the operation's stream.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kcore_api::ErrorCode;
use kcore_api::install::{InstallStep, LuksMode};
use kcore_disko::spec::Backend;
use kcore_nix::commands::{
    Cryptsetup, Disko, DiskoMode, Enrol, LvmChange, NixosInstall, SgdiskSinglePartition,
    SystemdCryptenroll, TestKey, UmountRecursive, ZpoolExport,
};
use kcore_nix::programs::{
    CRYPTSETUP, DISKO, NIXOS_INSTALL, SGDISK, SYSTEMD_CRYPTENROLL, Tool, UMOUNT, ZPOOL,
};
use kcore_nix::runner::{Invocation, Output, StreamLine};

use super::plan::{KEY_PARTLABEL, install_key_path};
use super::run::Job;
use crate::ops::{OpError, OpHandle};
use crate::server::AgentState;

/// The size of the key written on the key device (the installed initrd's `keyFileSize`).
pub const KEY_DEVICE_KEY_BYTES: usize = 4096;
/// How long the key partition may take to appear after sgdisk (udev makes the link).
const PARTITION_WAIT: Duration = Duration::from_secs(15);

/// One install's running state.
pub struct Ctx<'a> {
    pub state: &'a AgentState,
    pub op: &'a OpHandle,
    pub job: &'a Job,
    /// Set by `enrol`.
    pub recovery_key: Option<String>,
    /// Files written on the new system (as the installed system sees them).
    pub written: Vec<String>,
}

/// `n` random bytes from the kernel.
pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

fn write_failed(what: &str, path: &Path, e: std::io::Error) -> OpError {
    OpError::failed(
        ErrorCode::WriteFailed,
        format!("cannot write {what} {}: {e}", path.display()),
    )
}

impl<'a> Ctx<'a> {
    pub fn new(state: &'a AgentState, op: &'a OpHandle, job: &'a Job) -> Ctx<'a> {
        Ctx {
            state,
            op,
            job,
            recovery_key: None,
            written: Vec::new(),
        }
    }

    fn root(&self) -> &Path {
        &self.state.config.install.root
    }

    fn install_key(&self) -> PathBuf {
        install_key_path(self.state)
    }

    fn luks_device(&self) -> PathBuf {
        PathBuf::from(&self.job.prepared.luks_device)
    }

    fn invocation(
        &self,
        tool: Tool,
        make: impl FnOnce(&kcore_nix::Program) -> Invocation,
    ) -> Result<Invocation, OpError> {
        let program = self
            .state
            .tools
            .resolve(tool)
            .map_err(|e| OpError::from(&e))?;
        let mut inv = make(&program).timeout(self.job.remaining());
        for (k, v) in &self.state.options.extra_env {
            inv = inv.env(k, v);
        }
        Ok(inv)
    }

    /// Run with its output streamed; the error names the command.
    async fn exec(&self, inv: Invocation) -> Result<Output, OpError> {
        self.op.output("agent", format!("$ {}", inv.display()));
        let op = self.op;
        inv.stream(|line| match line {
            StreamLine::Stdout(l) => op.output("stdout", l),
            StreamLine::Stderr(l) => op.output("stderr", l),
        })
        .await
        .map_err(|e| OpError::from(&e))
    }

    /// Run quietly (its stdout is a secret).
    async fn exec_quiet(&self, inv: Invocation) -> Result<Output, OpError> {
        self.op.output("agent", format!("$ {}", inv.display()));
        inv.output().await.map_err(|e| OpError::from(&e))
    }

    pub async fn run(&mut self, step: InstallStep) -> Result<(), OpError> {
        match step {
            InstallStep::Format => self.format().await,
            InstallStep::Install => self.install().await,
            InstallStep::Enrol => self.enrol().await,
            InstallStep::WriteConfig => {
                let written = super::files::write_all(self)
                    .map_err(|(what, path, e)| write_failed(what, &path, e))?;
                self.written = written;
                Ok(())
            }
            InstallStep::Done => self.finish().await,
        }
    }

    async fn format(&mut self) -> Result<(), OpError> {
        let dir = &self.state.config.install.state_dir;
        super::private_dir(dir).map_err(|e| write_failed("the install state dir", dir, e))?;
        let key = self.install_key();
        // Hex, no newline: disko feeds `passwordFile` through `echo -n "$(cat FILE)"`
        // (lib/types/luks.nix) and cryptsetup reads `--key-file` whole, so both see the
        // same bytes.
        let bytes = random_bytes(64)
            .map_err(|e| OpError::failed(ErrorCode::Internal, format!("no randomness: {e}")))?;
        kcore_pki::write_atomically(&key, hex::encode(bytes).as_bytes(), 0o600)
            .map_err(|e| write_failed("the install key", &key, e))?;
        let layout = dir.join("layout.nix");
        kcore_pki::write_atomically(&layout, self.job.prepared.plan.layout.as_bytes(), 0o600)
            .map_err(|e| write_failed("the layout", &layout, e))?;
        let disko = Disko {
            mode: DiskoMode::DestroyFormatMount,
            root_mountpoint: self.root().to_path_buf(),
            fragment: layout,
        };
        let inv = self.invocation(DISKO, |p| disko.invocation(p))?;
        self.exec(inv).await.map(|_| ())
    }

    async fn install(&mut self) -> Result<(), OpError> {
        let install = NixosInstall {
            system: PathBuf::from(&self.job.prepared.plan.system),
            root: self.root().to_path_buf(),
            no_root_passwd: true,
            no_channel_copy: true,
        };
        let inv = self.invocation(NIXOS_INSTALL, |p| install.invocation(p))?;
        self.exec(inv).await.map(|_| ())
    }

    async fn enrol(&mut self) -> Result<(), OpError> {
        let device = self.luks_device();
        let key = self.install_key();
        // 1. The recovery key: its own slot, printed once on stdout.
        let recovery = SystemdCryptenroll {
            device: device.clone(),
            unlock_key_file: key.clone(),
            enrol: Enrol::RecoveryKey,
        };
        let inv = self.invocation(SYSTEMD_CRYPTENROLL, |p| recovery.invocation(p))?;
        let out = self.exec_quiet(inv).await?;
        let text = out.stdout_lossy();
        let recovery_key = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("")
            .to_string();
        if recovery_key.len() < 32 {
            return Err(OpError::failed(
                ErrorCode::CommandFailed,
                "systemd-cryptenroll --recovery-key printed no recovery key on stdout",
            ));
        }
        self.op.output(
            "agent",
            "recovery key enrolled (kept for install/recovery-key)",
        );
        self.recovery_key = Some(recovery_key);
        // 2. The unlock the installed system uses, proven before the install key goes.
        match self.job.prepared.luks_mode {
            LuksMode::Tpm2 => {
                let tpm = SystemdCryptenroll {
                    device: device.clone(),
                    unlock_key_file: key.clone(),
                    enrol: Enrol::Tpm2 {
                        pcrs: self.state.config.install.tpm2_pcrs.clone(),
                    },
                };
                let inv = self.invocation(SYSTEMD_CRYPTENROLL, |p| tpm.invocation(p))?;
                self.exec(inv).await?;
                let test = Cryptsetup::TestOpen {
                    device: device.clone(),
                    with: TestKey::TokenOnly,
                };
                let inv = self.invocation(CRYPTSETUP, |p| test.invocation(p))?;
                self.exec(inv).await?;
            }
            LuksMode::Keyfile => self.enrol_key_device(&device, &key).await?,
        }
        // 3. The install key's slot goes, then its file.
        let remove = Cryptsetup::RemoveKey {
            device,
            key_file: key.clone(),
        };
        let inv = self.invocation(CRYPTSETUP, |p| remove.invocation(p))?;
        self.exec(inv).await?;
        std::fs::remove_file(&key).map_err(|e| write_failed("(removing) the install key", &key, e))
    }

    async fn enrol_key_device(&mut self, device: &Path, key: &Path) -> Result<(), OpError> {
        let Some(key_device) = &self.job.prepared.key_device else {
            return Err(OpError::failed(
                ErrorCode::Internal,
                "key-file mode without a planned key device",
            ));
        };
        let gpt = SgdiskSinglePartition {
            disk: key_device.by_id.clone().into(),
            label: KEY_PARTLABEL.into(),
        };
        let inv = self.invocation(SGDISK, |p| gpt.invocation(p))?;
        self.exec(inv).await?;
        let part = PathBuf::from(format!("{}-part1", key_device.by_id));
        let opened = self.device_path(&part);
        let waited = std::time::Instant::now();
        while !opened.exists() {
            if waited.elapsed() > PARTITION_WAIT {
                return Err(OpError::failed(
                    ErrorCode::CommandFailed,
                    format!(
                        "{} did not appear within {}s of sgdisk making it",
                        part.display(),
                        PARTITION_WAIT.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let material = random_bytes(KEY_DEVICE_KEY_BYTES)
            .map_err(|e| OpError::failed(ErrorCode::Internal, format!("no randomness: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).open(&opened)?;
            f.write_all(&material)?;
            f.sync_all()
        };
        write().map_err(|e| write_failed("the key to", &opened, e))?;
        let add = Cryptsetup::AddKey {
            device: device.to_path_buf(),
            existing_key_file: key.to_path_buf(),
            new_key_file: part.clone(),
            new_keyfile_size: Some(KEY_DEVICE_KEY_BYTES as u64),
        };
        let inv = self.invocation(CRYPTSETUP, |p| add.invocation(p))?;
        self.exec(inv).await?;
        let test = Cryptsetup::TestOpen {
            device: device.to_path_buf(),
            with: TestKey::KeyFile {
                file: part,
                size: Some(KEY_DEVICE_KEY_BYTES as u64),
            },
        };
        let inv = self.invocation(CRYPTSETUP, |p| test.invocation(p))?;
        self.exec(inv).await.map(|_| ())
    }

    /// Where the agent itself opens a device path (`RuntimeOptions.dev_root`).
    fn device_path(&self, path: &Path) -> PathBuf {
        let rel = path.strip_prefix("/").unwrap_or(path);
        self.state.options.dev_root.join(rel)
    }

    async fn finish(&mut self) -> Result<(), OpError> {
        nix::unistd::sync();
        self.close(true).await
    }

    /// After a failure: unmount and close what the install may have opened; every
    /// failure is logged and the rest still tried.
    pub async fn release(&mut self) {
        if let Err(e) = self.close(false).await {
            tracing::warn!(error = ?e, "install: releasing the disks after a failure");
        }
    }

    /// `umount -R`, close the LUKS mapping, deactivate the VG or export the pool. `strict`:
    /// the first failure is the step's failure; otherwise each is tried and logged.
    async fn close(&mut self, strict: bool) -> Result<(), OpError> {
        let spec = &self.job.request.spec;
        let root = self.root().to_path_buf();
        let mut calls: Vec<Result<Invocation, OpError>> = vec![
            self.invocation(UMOUNT, |p| UmountRecursive(root).invocation(p)),
            self.invocation(CRYPTSETUP, |p| {
                Cryptsetup::Close(kcore_disko::render::LUKS_NAME.into()).invocation(p)
            }),
        ];
        // The VG or pool exists only on data disks.
        match spec.storage_backend {
            _ if spec.data_disks.is_empty() => {}
            Backend::Lvm => {
                let change = LvmChange::Activate {
                    vg: self.job.prepared.storage.lvm.vg_name.clone(),
                    active: false,
                };
                calls.push(
                    self.invocation(change.tool(), |p| Invocation::new(p).args(change.argv())),
                );
            }
            Backend::Zfs => {
                let export = ZpoolExport(self.job.prepared.storage.zfs.pool_name.clone());
                calls.push(self.invocation(ZPOOL, |p| export.invocation(p)));
            }
            Backend::Filesystem => {}
        }
        if strict {
            // The VG or pool lives on the data disks, outside the LUKS container: closing
            // order does not matter beyond the unmount first.
            for call in calls {
                self.exec(call?).await?;
            }
            return Ok(());
        }
        for call in calls {
            let ran = match call {
                Ok(inv) => self.exec(inv).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = ran {
                self.op.output("agent", format!("releasing: {e:?}"));
            }
        }
        Ok(())
    }
}
