# kcore.diskEncryption: the OS disk is LUKS2, unlocked at boot by the TPM2 (systemd initrd,
# `tpm2-device=auto`) or by a key on a separate key device, never on the unencrypted ESP.
#
# Every key is made at install time by the install-mode agent (docs/install.md,
# docs/storage.md "LUKS keys"), not on the installed system: a random install key formats the
# container; a recovery key gets its own slot (kept at `recoveryKeyFile` and handed to kctl);
# in TPM2 mode the TPM2 is enrolled with the PCR policy `tpm2Pcrs` (default 0+2+7: firmware,
# option ROMs, Secure Boot state), which reads the same on the live ISO and on the installed
# system and does not change with a new NixOS generation; in key-file mode 4096 random bytes
# at the start of the key device's `kcore-luks-key` partition get a slot. The install key's
# slot is then removed. This module only configures the unlock; the first-boot enrolment
# service and its `temporaryKeyFile` of earlier versions are gone (mkRemovedOptionModule).
#
# What 0+2+7 protects, and what not (docs/storage.md): a disk pulled out of the machine, and
# a machine whose firmware, option ROMs or Secure Boot state changed, do not unlock by
# themselves (the recovery key does, then `kcore-tpm2-reenroll`). The kernel, initrd and
# command line are not measured: hence the systemd-boot editor is off here.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.kcore.diskEncryption;
  klib = import ./lib.nix { inherit lib; };

  espMount = config.boot.loader.efi.efiSysMountPoint;
  # Places whose content is readable without the LUKS key: the ESP and /boot, and initrd
  # secrets (appended to the initrd, which lives on the ESP with systemd-boot).
  unencryptedPrefixes = lib.unique [
    espMount
    "/boot"
    "/efi"
  ];
  keyFileOnUnencrypted =
    lib.any (p: cfg.keyFile == p || lib.hasPrefix "${p}/" cfg.keyFile) unencryptedPrefixes
    || lib.hasAttr cfg.keyFile config.boot.initrd.secrets;

  pcrs = lib.concatMapStringsSep "+" toString cfg.tpm2Pcrs;

  # Re-binds the TPM2 slot to `tpm2Pcrs` after a firmware, option-ROM or Secure Boot change
  # (the boot that follows such a change asks for the recovery key). systemd-cryptenroll
  # asks for an existing key (the recovery key) on the terminal, enrols the new slot and
  # wipes the old TPM2 slot in the same call (`--wipe-slot=tpm2` never wipes the slot being
  # enrolled).
  reenroll = pkgs.writeShellScriptBin "kcore-tpm2-reenroll" ''
    set -eu
    exec ${lib.getExe' config.systemd.package "systemd-cryptenroll"} --wipe-slot=tpm2 \
      --tpm2-device=auto --tpm2-pcrs=${pcrs} ${lib.escapeShellArg cfg.device}
  '';
in
{
  imports = [
    (lib.mkRemovedOptionModule [ "kcore" "diskEncryption" "temporaryKeyFile" ] ''
      kcore no longer enrols the TPM2 on first boot: the install-mode agent enrols it during
      `kctl node install` (PCRs kcore.diskEncryption.tpm2Pcrs) and removes the install key
      itself, so there is no temporary key on the installed system. Remove the setting; see
      docs/storage.md "LUKS keys".
    '')
  ];

  options.kcore.diskEncryption = {
    enable = lib.mkEnableOption "LUKS2 encryption of the OS disk (kcore nodes always enable it)";

    name = lib.mkOption {
      type = lib.types.strMatching "[A-Za-z0-9_-]+";
      default = "crypted";
      description = "Name of the opened device (`/dev/mapper/<name>`), as in the disko layout (kcore-disko names it `crypted`).";
    };

    device = lib.mkOption {
      type = klib.plainPath;
      # disko names GPT partitions `<type>-<disk>-<partition>` (lib/types/gpt.nix `label`), and
      # kcore-disko's layout calls the OS disk `os` and its LUKS partition `root`: the same
      # path on every node, so one prebuilt closure fits all of them.
      default = "/dev/disk/by-partlabel/disk-os-root";
      description = "The LUKS2 partition of the OS disk (a stable `/dev/disk/by-*` path).";
    };

    unlock = lib.mkOption {
      type = lib.types.enum [
        "tpm2"
        "keyFile"
      ];
      default = "tpm2";
      description = ''
        `tpm2`: the systemd initrd unlocks with the TPM2 (`tpm2-device=auto`), enrolled at
        install. `keyFile`: the initrd reads the key from `keyFile` (machines without a TPM).
      '';
    };

    keyFile = lib.mkOption {
      type = klib.plainPath;
      # The partition the install-mode agent makes on the `--luks-key-device` (GPT, one
      # partition, partlabel kcore-luks-key, the key in its first 4096 bytes).
      default = "/dev/disk/by-partlabel/kcore-luks-key";
      example = "/dev/disk/by-id/usb-Vendor_Key_0123-0:0-part1";
      description = ''
        Raw key device read in the initrd when `unlock = "keyFile"` (its first `keyFileSize`
        bytes are the key). A device under `/dev/`: a file would have to be on a file system
        the initrd can read before the root is open, i.e. the unencrypted ESP.
      '';
    };

    keyFileSize = lib.mkOption {
      type = lib.types.ints.positive;
      default = 4096;
      description = ''
        Bytes of `keyFile` that are the key (luksroot.nix `keyFileSize`: needed for a raw
        device, which is larger than its key). The installer writes 4096.
      '';
    };

    tpm2Pcrs = lib.mkOption {
      type = lib.types.listOf (lib.types.ints.between 0 23);
      default = [
        0
        2
        7
      ];
      description = ''
        PCRs the TPM2 slot is bound to: the installer enrols with them, and
        `kcore-tpm2-reenroll` re-enrols with them. 0 (firmware), 2 (option ROMs) and 7
        (Secure Boot state) read the same on the live ISO and the installed system and survive
        new generations; the kernel and its command line are not measured (docs/storage.md).
        Keep it equal to the install-mode agent's `install.tpm2Pcrs`.
      '';
    };

    recoveryKeyFile = lib.mkOption {
      type = klib.plainPath;
      # Fixed by the design (DESIGN.md, kcore.diskEncryption): operators and the install
      # flow look for the recovery key here; kctl keeps the copy that matters.
      default = "/etc/kcore/recovery/luks-recovery-key.txt";
      description = "Where the installer saves the LUKS recovery key; kept at mode 0400, owner root.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        # An ESP path gets the message below instead, which says why more precisely.
        assertion = cfg.unlock != "keyFile" || lib.hasPrefix "/dev/" cfg.keyFile || keyFileOnUnencrypted;
        message = ''
          kcore.diskEncryption.keyFile = ${builtins.toJSON cfg.keyFile} is not a device: the initrd
          reads it before the root is unlocked, so a file would have to be on the unencrypted
          ESP. Use the key device the installer made (the default,
          /dev/disk/by-partlabel/kcore-luks-key) or unlock = "tpm2".
        '';
      }
      {
        assertion = cfg.unlock != "keyFile" || !keyFileOnUnencrypted;
        message = ''
          kcore.diskEncryption.keyFile = ${builtins.toJSON cfg.keyFile} is on the unencrypted ESP /boot
          (or in boot.initrd.secrets, which end up there): anyone with the disk could read it.
          Use a removable key device (/dev/disk/by-partlabel/kcore-luks-key) or unlock = "tpm2".
        '';
      }
      {
        assertion = cfg.unlock != "tpm2" || !config.boot.loader.systemd-boot.editor;
        message = ''
          kcore.diskEncryption: boot.loader.systemd-boot.editor is on, and the TPM2 policy
          (PCRs ${pcrs}) does not measure the kernel command line: anyone at the console could
          boot `init=/bin/sh` with the disk unlocked. Remove the setting
          boot.loader.systemd-boot.editor = true (kcore sets it to false).
        '';
      }
    ];

    # nixpkgs nixos/modules/system/boot/loader/systemd-boot/systemd-boot.nix, option `editor`
    # (default true): "It is recommended to set this to false, as it allows gaining root
    # access by passing init=/bin/sh as a kernel parameter." mkDefault so that a host setting
    # it meets the assertion above with its own message instead of a definition conflict.
    boot.loader.systemd-boot.editor = lib.mkDefault false;

    # TPM2 unlock in the initrd needs systemd's cryptsetup there.
    boot.initrd.systemd.enable = lib.mkIf (cfg.unlock == "tpm2") true;

    boot.initrd.luks.devices.${cfg.name} = lib.mkMerge [
      {
        inherit (cfg) device;
        # mkDefault: disko's luks type already sets this from the kcore-disko layout; a second
        # identical entry would only duplicate the crypttab option.
        crypttabExtraOpts = lib.mkDefault (lib.optional (cfg.unlock == "tpm2") "tpm2-device=auto");
      }
      (lib.mkIf (cfg.unlock == "keyFile") {
        inherit (cfg) keyFile keyFileSize;
      })
    ];

    environment.systemPackages = lib.optional (cfg.unlock == "tpm2") reenroll;

    systemd.tmpfiles.rules = [
      "d ${dirOf cfg.recoveryKeyFile} 0700 root root -"
      # `z` only fixes owner and mode of an existing file; it never creates or reads it.
      "z ${cfg.recoveryKeyFile} 0400 root root -"
    ];
  };
}
