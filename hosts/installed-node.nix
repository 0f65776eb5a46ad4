# The system `kctl node install` puts on a node, one prebuilt closure per storage backend and
# LUKS unlock (hosts/installed-{filesystem,lvm,zfs} unlock the root with the TPM2,
# hosts/installed-{filesystem,lvm,zfs}-keyfile with the key device's `kcore-luks-key`
# partition; each sets `kcore.storage.backend`; the installer ISO carries all six). One
# closure fits every node, so nothing here is node-specific: the node's id,
# DC, controllers, certificates and storage names are runtime files the install writes under
# /etc/kcore (docs/nixos.md "Installed systems"), and every device is named by the partition
# labels disko gives kcore-disko's layout (`disk-<disk>-<partition>`, disko
# lib/types/gpt.nix `label`), never by a disk's by-id path. Not a host itself (a file, not a
# directory under hosts/): a function of the unlock, imported as
# `(import ../installed-node.nix { unlock = "tpm2"; })`, returning the NixOS module.
{
  # "tpm2" or "keyFile" (kcore.diskEncryption.unlock): fixed in the initrd, hence one closure
  # per mode; the install-mode agent picks install.systems or install.keyfileSystems by the
  # plan's LUKS mode.
  unlock ? "tpm2",
}:
{
  lib,
  config,
  modulesPath,
  ...
}:
let
  storage = config.kcore.storage;
  # kcore-disko's data-disk template: one partition `volumes` per data disk, mounted at
  # volumes, volumes1, ... (filesystem backend). Up to this many are mounted; a node with
  # fewer has no such partitions, hence `nofail`.
  maxFilesystemDataDisks = 8;
  volumeMount = i: {
    name =
      if i == 0 then storage.filesystemVolumeDir else "${storage.filesystemVolumeDir}${toString i}";
    value = {
      device = "/dev/disk/by-partlabel/disk-data${toString i}-volumes";
      fsType = "ext4";
      # nofail: a node installed with fewer data disks boots anyway; the short device timeout
      # keeps the boot from waiting 90 s for each absent one.
      options = [
        "nofail"
        "x-systemd.device-timeout=5s"
      ];
    };
  };
in
{
  imports = [
    ./operator-ssh.nix
    # Storage, USB and virtio drivers of most machines in the initrd: the closure is built
    # before the machine it boots is known (the installer ISO uses the same profile).
    "${modulesPath}/profiles/all-hardware.nix"
  ];

  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
  # The release these systems were written against; never change it on an installed node.
  system.stateVersion = "25.11";

  # The hostname is a runtime value too (the agent reports the one in node-agent.yaml); the
  # kernel's stays generic (one name per closure) until the operator's configuration sets it.
  networking.hostName =
    "kcore-node-${storage.backend}" + lib.optionalString (unlock == "keyFile") "-keyfile";
  # Needed by ZFS, shared by every node installed from these closures: ZFS uses it to refuse
  # importing a pool last used by another host, which a pool moved between nodes of the
  # same install would no longer get (docs/nixos.md).
  networking.hostId = lib.mkDefault "6b636f72";

  boot.loader.systemd-boot.enable = true;
  # kcore.diskEncryption sets the editor off and asserts it (the TPM2 policy does not
  # measure the kernel command line); stated here too, as on every example host.
  boot.loader.systemd-boot.editor = false;
  boot.loader.efi.canTouchEfiVariables = true;

  # kcore-disko's OS disk: ESP `disk-os-ESP` on /boot (umask 0077 as in its template), LUKS2
  # `disk-os-root` opened as `crypted` holding ext4 /.
  fileSystems = {
    "/" = {
      device = "/dev/mapper/crypted";
      fsType = "ext4";
    };
    "/boot" = {
      device = "/dev/disk/by-partlabel/disk-os-ESP";
      fsType = "vfat";
      options = [ "umask=0077" ];
    };
  }
  // lib.optionalAttrs (storage.backend == "filesystem") (
    lib.listToAttrs (lib.genList volumeMount maxFilesystemDataDisks)
  );

  # TPM2 or the key device (`--luks keyfile --luks-key-device DEV`): the initrd's choice is
  # fixed in the closure, so each mode has its own prebuilt system (docs/install.md
  # "Key-file nodes"). Key-file mode reads the partition the install-mode agent makes on the
  # key device (GPT, partlabel kcore-luks-key, the key in its first 4096 bytes).
  kcore.diskEncryption = {
    enable = true;
    inherit unlock;
  }
  // lib.optionalAttrs (unlock == "keyFile") {
    keyFile = "/dev/disk/by-partlabel/kcore-luks-key";
    keyFileSize = 4096;
  };

  # Written by the installer as `installer-only` (contract: /etc/kcore/disko-management-mode).
  kcore.storage.managementModeFile = "/etc/kcore/disko-management-mode";

  services.kcore.agent = {
    enable = true;
    # /etc/kcore/node-agent.yaml (written by the installer) holds the node's values.
    nodeConfig = "runtime";
    # Controllers and kctl reach the agent on its port; mTLS guards it.
    openFirewall = true;
  };

  # In every closure, started only on a node installed with --run-controller (the unit
  # needs /etc/kcore/controller.yaml); its sub-CA key comes from a peer on first start.
  services.kcore.controller = {
    enable = true;
    nodeConfig = "runtime";
    # Agents and kctl connect to it; mTLS guards it. Nothing listens on a worker.
    openFirewall = true;
  };
}
