//! The programs `kcore-agent` runs only when it installs a node from the live ISO:
//! `cryptsetup` (add/remove a key slot, prove a slot opens, close), `systemd-cryptenroll`
//! (the recovery key and the TPM2 slot), `sgdisk` (the key device's partition) and
//! `umount -R` (everything under the install root), `zpool export`.
//!
//! Flags checked against the programs' manuals: cryptsetup(8) of cryptsetup 2.6
//! (`luksAddKey --key-file OLD --new-keyfile-size N DEV NEWFILE`, `luksRemoveKey
//! --key-file FILE DEV`, `open --test-passphrase` which needs no mapping name,
//! `--token-only`, `--keyfile-size`, `close NAME`); systemd-cryptenroll(1) of systemd 252
//! (Debian bookworm; `systemd-cryptenroll --help` lists `--unlock-key-file=PATH`,
//! `--recovery-key`, `--tpm2-device=PATH`, `--tpm2-pcrs=PCR1+PCR2+…`); sgdisk(8)
//! (`--zap-all`, `--new=1:0:0`, `--change-name=1:LABEL`); umount(8) (`-R`, recursive).

use std::ffi::OsString;
use std::path::PathBuf;

use crate::runner::{Invocation, Program};

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

/// One `cryptsetup` call on a LUKS2 device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cryptsetup {
    /// `cryptsetup luksAddKey --key-file EXISTING [--new-keyfile-size N] DEVICE NEW`:
    /// a new slot for the key in file `new` (its first `new_size` bytes when set).
    AddKey {
        device: PathBuf,
        existing_key_file: PathBuf,
        new_key_file: PathBuf,
        new_keyfile_size: Option<u64>,
    },
    /// `cryptsetup luksRemoveKey --key-file FILE DEVICE`: wipe the slot that key opens.
    RemoveKey { device: PathBuf, key_file: PathBuf },
    /// `cryptsetup open --test-passphrase ...`: proves an unlock works without mapping.
    TestOpen { device: PathBuf, with: TestKey },
    /// `cryptsetup close NAME`.
    Close(String),
}

/// What a [`Cryptsetup::TestOpen`] unlocks with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestKey {
    /// `--token-only`: only the LUKS2 tokens (the TPM2 one systemd-cryptenroll added).
    TokenOnly,
    /// `--key-file FILE [--keyfile-size N]`.
    KeyFile { file: PathBuf, size: Option<u64> },
}

impl Cryptsetup {
    pub fn argv(&self) -> Vec<OsString> {
        match self {
            Cryptsetup::AddKey {
                device,
                existing_key_file,
                new_key_file,
                new_keyfile_size,
            } => {
                let mut argv = vec![
                    os("luksAddKey"),
                    os("--key-file"),
                    existing_key_file.clone().into(),
                ];
                if let Some(n) = new_keyfile_size {
                    argv.extend([os("--new-keyfile-size"), os(n.to_string())]);
                }
                argv.extend([device.clone().into(), new_key_file.clone().into()]);
                argv
            }
            Cryptsetup::RemoveKey { device, key_file } => vec![
                os("luksRemoveKey"),
                os("--key-file"),
                key_file.clone().into(),
                device.clone().into(),
            ],
            Cryptsetup::TestOpen { device, with } => {
                let mut argv = vec![os("open"), os("--test-passphrase")];
                match with {
                    TestKey::TokenOnly => argv.push(os("--token-only")),
                    TestKey::KeyFile { file, size } => {
                        argv.extend([os("--key-file"), file.clone().into()]);
                        if let Some(n) = size {
                            argv.extend([os("--keyfile-size"), os(n.to_string())]);
                        }
                    }
                }
                argv.push(device.clone().into());
                argv
            }
            Cryptsetup::Close(name) => vec![os("close"), os(name.as_str())],
        }
    }

    pub fn invocation(&self, cryptsetup: &Program) -> Invocation {
        Invocation::new(cryptsetup).args(self.argv())
    }
}

/// What `systemd-cryptenroll` enrols, unlocking the device with `unlock_key_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrol {
    /// `--recovery-key`: a new high-entropy key, printed on stdout.
    RecoveryKey,
    /// `--tpm2-device=auto --tpm2-pcrs=0+2+7`.
    Tpm2 { pcrs: Vec<u32> },
}

/// `systemd-cryptenroll --unlock-key-file=FILE (--recovery-key | --tpm2-...) DEVICE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdCryptenroll {
    pub device: PathBuf,
    pub unlock_key_file: PathBuf,
    pub enrol: Enrol,
}

impl SystemdCryptenroll {
    pub fn argv(&self) -> Vec<OsString> {
        let mut unlock = OsString::from("--unlock-key-file=");
        unlock.push(&self.unlock_key_file);
        let mut argv = vec![unlock];
        match &self.enrol {
            Enrol::RecoveryKey => argv.push(os("--recovery-key")),
            Enrol::Tpm2 { pcrs } => {
                let pcrs: Vec<String> = pcrs.iter().map(u32::to_string).collect();
                argv.extend([
                    os("--tpm2-device=auto"),
                    os(format!("--tpm2-pcrs={}", pcrs.join("+"))),
                ]);
            }
        }
        argv.push(self.device.clone().into());
        argv
    }

    pub fn invocation(&self, program: &Program) -> Invocation {
        Invocation::new(program).args(self.argv())
    }
}

/// `sgdisk --zap-all --new=1:0:0 --change-name=1:LABEL DISK`: a fresh GPT with one
/// partition over the whole disk, named (its partlabel) `label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgdiskSinglePartition {
    pub disk: PathBuf,
    pub label: String,
}

impl SgdiskSinglePartition {
    pub fn argv(&self) -> Vec<OsString> {
        vec![
            os("--zap-all"),
            os("--new=1:0:0"),
            os(format!("--change-name=1:{}", self.label)),
            self.disk.clone().into(),
        ]
    }

    pub fn invocation(&self, sgdisk: &Program) -> Invocation {
        Invocation::new(sgdisk).args(self.argv())
    }
}

/// `umount -R PATH`: the mount and everything mounted below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UmountRecursive(pub PathBuf);

impl UmountRecursive {
    pub fn argv(&self) -> Vec<OsString> {
        vec![os("-R"), self.0.clone().into()]
    }

    pub fn invocation(&self, umount: &Program) -> Invocation {
        Invocation::new(umount).args(self.argv())
    }
}

/// `zpool export POOL`: a pool the install made, closed so the installed system imports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZpoolExport(pub String);

impl ZpoolExport {
    pub fn argv(&self) -> Vec<OsString> {
        vec![os("export"), os(self.0.as_str())]
    }

    pub fn invocation(&self, zpool: &Program) -> Invocation {
        Invocation::new(zpool).args(self.argv())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(argv: Vec<OsString>) -> String {
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn cryptsetup_argv() {
        let dev = PathBuf::from("/dev/disk/by-id/ata-X-part2");
        assert_eq!(
            words(
                Cryptsetup::AddKey {
                    device: dev.clone(),
                    existing_key_file: "/run/k/install.key".into(),
                    new_key_file: "/dev/disk/by-partlabel/kcore-luks-key".into(),
                    new_keyfile_size: Some(4096),
                }
                .argv()
            ),
            "luksAddKey --key-file /run/k/install.key --new-keyfile-size 4096 \
             /dev/disk/by-id/ata-X-part2 /dev/disk/by-partlabel/kcore-luks-key"
        );
        assert_eq!(
            words(
                Cryptsetup::RemoveKey {
                    device: dev.clone(),
                    key_file: "/run/k/install.key".into()
                }
                .argv()
            ),
            "luksRemoveKey --key-file /run/k/install.key /dev/disk/by-id/ata-X-part2"
        );
        assert_eq!(
            words(
                Cryptsetup::TestOpen {
                    device: dev.clone(),
                    with: TestKey::TokenOnly
                }
                .argv()
            ),
            "open --test-passphrase --token-only /dev/disk/by-id/ata-X-part2"
        );
        assert_eq!(
            words(
                Cryptsetup::TestOpen {
                    device: dev,
                    with: TestKey::KeyFile {
                        file: "/dev/sdc1".into(),
                        size: Some(4096)
                    }
                }
                .argv()
            ),
            "open --test-passphrase --key-file /dev/sdc1 --keyfile-size 4096 \
             /dev/disk/by-id/ata-X-part2"
        );
        assert_eq!(
            words(Cryptsetup::Close("crypted".into()).argv()),
            "close crypted"
        );
    }

    #[test]
    fn cryptenroll_argv() {
        let base = |enrol| SystemdCryptenroll {
            device: "/dev/disk/by-id/ata-X-part2".into(),
            unlock_key_file: "/run/k/install.key".into(),
            enrol,
        };
        assert_eq!(
            words(base(Enrol::RecoveryKey).argv()),
            "--unlock-key-file=/run/k/install.key --recovery-key /dev/disk/by-id/ata-X-part2"
        );
        assert_eq!(
            words(
                base(Enrol::Tpm2 {
                    pcrs: vec![0, 2, 7]
                })
                .argv()
            ),
            "--unlock-key-file=/run/k/install.key --tpm2-device=auto --tpm2-pcrs=0+2+7 \
             /dev/disk/by-id/ata-X-part2"
        );
    }

    #[test]
    fn sgdisk_and_umount_argv() {
        assert_eq!(
            words(
                SgdiskSinglePartition {
                    disk: "/dev/disk/by-id/usb-KEY".into(),
                    label: "kcore-luks-key".into()
                }
                .argv()
            ),
            "--zap-all --new=1:0:0 --change-name=1:kcore-luks-key /dev/disk/by-id/usb-KEY"
        );
        assert_eq!(words(UmountRecursive("/mnt".into()).argv()), "-R /mnt");
        assert_eq!(words(ZpoolExport("tank0".into()).argv()), "export tank0");
    }
}
