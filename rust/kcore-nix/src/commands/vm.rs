//! The programs behind a VM's volume and guest (issue 17): `qemu-system-x86_64` (the guest),
//! `qemu-img` (an image's format and size, and writing it into a volume) and `zfs` (a zvol).
//! The LVM volumes are [`super::LvmChange`] variants, beside provision-disk's.
//!
//! Flags as QEMU 10's `qemu-options.hx` and `docs/tools/qemu-img.rst` give them:
//! `-nodefaults` (no default devices: no NIC, no VGA, no serial/parallel/floppy/CD),
//! `-nic none` (no network at all), `-display none`, `-machine q35,accel=kvm|tcg`,
//! `-cpu host` (KVM) or `-cpu max` (TCG: every feature TCG emulates), `-smp N`, `-m SIZE`
//! (`M` suffix = MiB), `-drive file=F,format=raw,if=virtio,cache=none|writeback,discard=unmap`,
//! `-chardev file,id=ID,path=P,append=on` + `-serial chardev:ID` (the console appended to a
//! log, never truncated at a restart), `-qmp unix:PATH,server=on,wait=off` (the control
//! socket a clean stop talks to); `qemu-img info --output=json F` (`format`,
//! `virtual-size`), `qemu-img convert -n -f FMT -O raw SRC DST` (`-n`: write into an existing
//! target, which keeps the volume's own size). ZFS as `zfs-create(8)` / `zfs-destroy(8)` /
//! `zfs-set(8)` give it: `zfs create -V SIZE -o volmode=dev NAME`, `zfs destroy NAME` (never
//! `-r`: a zvol kcore made has no children, and one with children is not kcore's to destroy),
//! `zfs set volsize=SIZE NAME`, `zfs list -H -p -o name,volsize -t volume NAME`.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::runner::{Invocation, Program};

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

/// How the guest's CPU is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    /// Hardware virtualisation (`/dev/kvm`), with the host's CPU model.
    Kvm,
    /// QEMU's emulator: slow, but works without `/dev/kvm`.
    Tcg,
}

impl Accelerator {
    pub fn as_str(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        }
    }
}

/// `qemu-system-x86_64`: one guest, its volume as the only disk, no network device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuSystem {
    /// The VM's name (`-name guest=...`, shown by `ps` and in QMP).
    pub name: String,
    pub accelerator: Accelerator,
    pub cpus: u32,
    pub memory_mib: u64,
    /// The volume: a file or a block device, raw.
    pub disk: PathBuf,
    /// Whether the disk is a block device (LV, zvol): opened with `cache=none` (O_DIRECT);
    /// a file keeps the host page cache (`cache=writeback`), which also works on file
    /// systems without O_DIRECT (tmpfs).
    pub disk_is_block_device: bool,
    /// The serial console, appended to this file.
    pub console_log: PathBuf,
    /// The QMP control socket.
    pub qmp_socket: PathBuf,
}

impl QemuSystem {
    pub fn argv(&self) -> Vec<OsString> {
        let cpu = match self.accelerator {
            Accelerator::Kvm => "host",
            Accelerator::Tcg => "max",
        };
        let cache = if self.disk_is_block_device {
            "none"
        } else {
            "writeback"
        };
        // QEMU's option parser splits on ',' and reads ",," as a literal comma.
        let esc = |p: &std::path::Path| p.display().to_string().replace(',', ",,");
        vec![
            os("-name"),
            os(format!("guest={}", self.name.replace(',', ",,"))),
            os("-nodefaults"),
            os("-nic"),
            os("none"),
            os("-display"),
            os("none"),
            os("-machine"),
            os(format!("q35,accel={}", self.accelerator.as_str())),
            os("-cpu"),
            os(cpu),
            os("-smp"),
            os(self.cpus.to_string()),
            os("-m"),
            os(format!("{}M", self.memory_mib)),
            os("-drive"),
            os(format!(
                "file={},format=raw,if=virtio,cache={cache},discard=unmap",
                esc(&self.disk)
            )),
            os("-chardev"),
            os(format!(
                "file,id=console,path={},append=on",
                esc(&self.console_log)
            )),
            os("-serial"),
            os("chardev:console"),
            os("-qmp"),
            os(format!("unix:{},server=on,wait=off", esc(&self.qmp_socket))),
        ]
    }

    pub fn invocation(&self, qemu: &Program) -> Invocation {
        Invocation::new(qemu).args(self.argv())
    }
}

/// `qemu-img`: read an image's format and size, write it into a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuImg {
    /// `qemu-img info --output=json FILE`.
    Info { file: PathBuf },
    /// `qemu-img convert -n -f FORMAT -O raw SOURCE TARGET`: the image's contents written into
    /// an existing volume (`-n`: the target is not created, so it keeps its size).
    ConvertInto {
        source: PathBuf,
        format: String,
        target: PathBuf,
    },
}

impl QemuImg {
    pub fn argv(&self) -> Vec<OsString> {
        match self {
            QemuImg::Info { file } => {
                vec![os("info"), os("--output=json"), file.as_os_str().to_owned()]
            }
            QemuImg::ConvertInto {
                source,
                format,
                target,
            } => vec![
                os("convert"),
                os("-n"),
                os("-f"),
                os(format.as_str()),
                os("-O"),
                os("raw"),
                source.as_os_str().to_owned(),
                target.as_os_str().to_owned(),
            ],
        }
    }

    pub fn invocation(&self, qemu_img: &Program) -> Invocation {
        Invocation::new(qemu_img).args(self.argv())
    }
}

/// `zfs` changes and reads for one zvol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZfsVolume {
    /// `zfs create -V BYTES -o volmode=dev NAME` (`volmode=dev`: the host does not probe
    /// the guest's partitions).
    Create { dataset: String, size_bytes: u64 },
    /// `zfs destroy NAME`.
    Destroy { dataset: String },
    /// `zfs set volsize=BYTES NAME`.
    Resize { dataset: String, size_bytes: u64 },
    /// `zfs list -H -p -o name,volsize -t volume NAME`: exit 0 with one line when it exists.
    List { dataset: String },
}

impl ZfsVolume {
    pub fn argv(&self) -> Vec<OsString> {
        match self {
            ZfsVolume::Create {
                dataset,
                size_bytes,
            } => vec![
                os("create"),
                os("-V"),
                os(size_bytes.to_string()),
                os("-o"),
                os("volmode=dev"),
                os(dataset.as_str()),
            ],
            ZfsVolume::Destroy { dataset } => vec![os("destroy"), os(dataset.as_str())],
            ZfsVolume::Resize {
                dataset,
                size_bytes,
            } => vec![
                os("set"),
                os(format!("volsize={size_bytes}")),
                os(dataset.as_str()),
            ],
            ZfsVolume::List { dataset } => vec![
                os("list"),
                os("-H"),
                os("-p"),
                os("-o"),
                os("name,volsize"),
                os("-t"),
                os("volume"),
                os(dataset.as_str()),
            ],
        }
    }

    pub fn invocation(&self, zfs: &Program) -> Invocation {
        Invocation::new(zfs).args(self.argv())
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
    fn a_guest_has_its_volume_a_console_log_a_control_socket_and_no_network() {
        let q = QemuSystem {
            name: "my-vm".into(),
            accelerator: Accelerator::Tcg,
            cpus: 2,
            memory_mib: 1024,
            disk: "/var/lib/kcore/volumes/my-vm.raw".into(),
            disk_is_block_device: false,
            console_log: "/var/log/kcore/vms/my,vm.log".into(),
            qmp_socket: "/var/lib/kcore/vms/my-vm.qmp".into(),
        };
        let argv = strings(q.argv());
        assert_eq!(
            argv.join(" "),
            "-name guest=my-vm -nodefaults -nic none -display none -machine q35,accel=tcg \
             -cpu max -smp 2 -m 1024M \
             -drive file=/var/lib/kcore/volumes/my-vm.raw,format=raw,if=virtio,cache=writeback,discard=unmap \
             -chardev file,id=console,path=/var/log/kcore/vms/my,,vm.log,append=on \
             -serial chardev:console -qmp unix:/var/lib/kcore/vms/my-vm.qmp,server=on,wait=off"
        );
        let kvm = QemuSystem {
            accelerator: Accelerator::Kvm,
            disk_is_block_device: true,
            ..q
        };
        let argv = strings(kvm.argv()).join(" ");
        assert!(argv.contains("accel=kvm -cpu host"), "{argv}");
        assert!(argv.contains("cache=none"), "{argv}");
    }

    #[test]
    fn qemu_img_and_zfs_words() {
        assert_eq!(
            strings(
                QemuImg::Info {
                    file: "/i/a.img".into()
                }
                .argv()
            ),
            ["info", "--output=json", "/i/a.img"]
        );
        assert_eq!(
            strings(
                QemuImg::ConvertInto {
                    source: "/i/a.img".into(),
                    format: "qcow2".into(),
                    target: "/dev/vg/kcore-a".into()
                }
                .argv()
            ),
            [
                "convert",
                "-n",
                "-f",
                "qcow2",
                "-O",
                "raw",
                "/i/a.img",
                "/dev/vg/kcore-a"
            ]
        );
        let ds = || "tank0/kcore/a".to_string();
        for (change, line) in [
            (
                ZfsVolume::Create {
                    dataset: ds(),
                    size_bytes: 1 << 30,
                },
                "create -V 1073741824 -o volmode=dev tank0/kcore/a",
            ),
            (
                ZfsVolume::Destroy { dataset: ds() },
                "destroy tank0/kcore/a",
            ),
            (
                ZfsVolume::Resize {
                    dataset: ds(),
                    size_bytes: 2 << 30,
                },
                "set volsize=2147483648 tank0/kcore/a",
            ),
            (
                ZfsVolume::List { dataset: ds() },
                "list -H -p -o name,volsize -t volume tank0/kcore/a",
            ),
        ] {
            assert_eq!(strings(change.argv()).join(" "), line);
        }
    }
}
