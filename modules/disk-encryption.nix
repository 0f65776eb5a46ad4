# kcore.diskEncryption: the OS disk is LUKS2, unlocked at boot by the TPM2 (systemd initrd,
# `tpm2-device=auto`) or by a key file that is not on the unencrypted ESP.
#
# TPM2 flow: the installer formats the LUKS2 container with a temporary key (kept as
# `temporaryKeyFile` inside the encrypted root), adds a recovery key (saved to
# `recoveryKeyFile`) and enrolls the TPM2 without PCR binding so that the first boot unlocks.
# On that first boot `kcore-tpm2-enroll` binds a new TPM2 slot to `tpm2Pcrs`, wipes the unbound
# slot, proves the new slot opens the volume, then removes the temporary key's slot and the
# file; it does not run again once the file is gone.
#
# What the default, PCR 7 alone, protects: PCR 7 measures the Secure Boot policy, not the
# kernel, its command line or the initrd. Without Secure Boot (kcore does not set it up) it is
# the same for anything booted on this machine, so the seal only protects a disk pulled out of
# the machine; see docs/nixos.md "TPM2 unlock: what it protects".
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
    cfg.keyFile != null
    && (
      lib.any (p: cfg.keyFile == p || lib.hasPrefix "${p}/" cfg.keyFile) unencryptedPrefixes
      || lib.hasAttr cfg.keyFile config.boot.initrd.secrets
    );

  cryptenroll = lib.getExe' config.systemd.package "systemd-cryptenroll";
  cryptsetup = lib.getExe' pkgs.cryptsetup "cryptsetup";

  # Idempotent at every step, and the temporary key is given up only once the new slot is
  # proven: a boot that stops half-way retries, and nothing is removed before its successor
  # works.
  # - The temporary key no longer opens the volume (an earlier run removed its slot, then
  #   failed to delete the file): only the file is left to delete.
  # - Otherwise: enroll the PCR-bound slot (`--wipe-slot=tpm2` removes the installer's
  #   unbound TPM2 slot; the slot being enrolled is never wiped), open the volume with the
  #   TPM2 token alone (`--token-only`: no key file, no prompt) to prove it works, and only
  #   then remove the temporary key's slot and the file. The recovery key's slot stays.
  enrollScript = pkgs.writeShellScript "kcore-tpm2-enroll" ''
    set -eu
    tmp=${lib.escapeShellArg cfg.temporaryKeyFile}
    dev=${lib.escapeShellArg cfg.device}
    if ${cryptsetup} open --test-passphrase --key-file="$tmp" "$dev"; then
      ${cryptenroll} --unlock-key-file="$tmp" --tpm2-device=auto \
        --tpm2-pcrs=${lib.concatMapStringsSep "+" toString cfg.tpm2Pcrs} --wipe-slot=tpm2 "$dev"
      ${cryptsetup} open --test-passphrase --token-only --token-type systemd-tpm2 "$dev"
      ${cryptsetup} luksRemoveKey --key-file="$tmp" "$dev"
    fi
    rm --force -- "$tmp"
  '';
in
{
  options.kcore.diskEncryption = {
    enable = lib.mkEnableOption "LUKS2 encryption of the OS disk (kcore nodes always enable it)";

    name = lib.mkOption {
      type = lib.types.strMatching "[A-Za-z0-9_-]+";
      default = "crypted";
      description = "Name of the opened device (`/dev/mapper/<name>`), as in the disko layout (kcore-disko names it `crypted`).";
    };

    device = lib.mkOption {
      type = klib.plainPath;
      example = "/dev/disk/by-partlabel/disk-os-root";
      description = "The LUKS2 partition of the OS disk (a stable `/dev/disk/by-*` path).";
    };

    unlock = lib.mkOption {
      type = lib.types.enum [
        "tpm2"
        "keyFile"
      ];
      default = "tpm2";
      description = ''
        `tpm2`: the systemd initrd unlocks with the TPM2 (`tpm2-device=auto`), enrolled on first
        boot. `keyFile`: the initrd reads `keyFile` (for machines without a TPM).
      '';
    };

    keyFile = lib.mkOption {
      type = lib.types.nullOr klib.plainPath;
      default = null;
      example = "/dev/disk/by-id/usb-Vendor_Key_0123-0:0";
      description = ''
        Key file (or raw key device) read in the initrd when `unlock = "keyFile"`. Never on the
        ESP, `/boot` or in `boot.initrd.secrets`: those are readable without the key.
      '';
    };

    tpm2Pcrs = lib.mkOption {
      type = lib.types.listOf (lib.types.ints.between 0 23);
      default = [ 7 ];
      description = ''
        PCRs the TPM2 slot is bound to on first boot. 7 is the Secure Boot policy: without
        Secure Boot it only protects a disk pulled out of the machine (docs/nixos.md).
      '';
    };

    temporaryKeyFile = lib.mkOption {
      type = klib.plainPath;
      default = "/var/lib/kcore/luks-temporary.key";
      description = "Temporary key the installer leaves inside the encrypted root; removed (file and slot) after TPM2 enrollment.";
    };

    recoveryKeyFile = lib.mkOption {
      type = klib.plainPath;
      # Fixed by the design (DESIGN.md, kcore.diskEncryption): operators and the install
      # flow look for the recovery key here. It is the one piece of /etc that is written
      # at install time; everything else mutable lives under /var/lib/kcore.
      default = "/etc/kcore/recovery/luks-recovery-key.txt";
      description = "Where the installer saves the LUKS recovery key; kept at mode 0400, owner root.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.unlock != "keyFile" || cfg.keyFile != null;
        message = ''
          kcore.diskEncryption.unlock = "keyFile" needs kcore.diskEncryption.keyFile (a key file or
          raw key device that is not on the ESP), or use unlock = "tpm2" on a machine with a TPM.
        '';
      }
      {
        assertion = cfg.keyFile == null || !(lib.hasPrefix builtins.storeDir cfg.keyFile);
        message = ''
          kcore.diskEncryption.keyFile = ${builtins.toJSON cfg.keyFile} is in the Nix store, which every
          user can read. Keep the key on a removable key device, or use unlock = "tpm2".
        '';
      }
      {
        assertion = !keyFileOnUnencrypted;
        message = ''
          kcore.diskEncryption.keyFile = ${builtins.toJSON cfg.keyFile} is on the unencrypted ESP /boot
          (or in boot.initrd.secrets, which end up there): anyone with the disk could read it.
          Use a removable key device (/dev/disk/by-id/usb-...) or unlock = "tpm2".
        '';
      }
    ];

    # TPM2 unlock in the initrd needs systemd's cryptsetup there.
    boot.initrd.systemd.enable = lib.mkIf (cfg.unlock == "tpm2") true;

    boot.initrd.luks.devices.${cfg.name} = {
      inherit (cfg) device;
      # mkDefault: disko's luks type already sets this from the kcore-disko layout; a second
      # identical entry would only duplicate the crypttab option.
      crypttabExtraOpts = lib.mkDefault (lib.optional (cfg.unlock == "tpm2") "tpm2-device=auto");
      keyFile = lib.mkIf (cfg.unlock == "keyFile") cfg.keyFile;
    };

    systemd.tmpfiles.rules = [
      "d ${dirOf cfg.recoveryKeyFile} 0700 root root -"
      # `z` only fixes owner and mode of an existing file; it never creates or reads it.
      "z ${cfg.recoveryKeyFile} 0400 root root -"
    ];

    systemd.services.kcore-tpm2-enroll = lib.mkIf (cfg.unlock == "tpm2") {
      description = "Bind the LUKS2 root to this system's TPM2 PCRs (first boot)";
      wantedBy = [ "multi-user.target" ];
      # tpm2.target: the TPM device is there (systemd's tpm2 generator).
      wants = [ "tpm2.target" ];
      after = [
        "cryptsetup.target"
        "tpm2.target"
      ];
      unitConfig.ConditionPathExists = cfg.temporaryKeyFile;
      # cryptsetup loads the systemd-tpm2 token plugin by file name (nixpkgs' cryptsetup is
      # patched so): it is in systemd's lib/cryptsetup, not in cryptsetup's own directory.
      environment.LD_LIBRARY_PATH = "${config.systemd.package}/lib/cryptsetup";
      serviceConfig = {
        Type = "oneshot";
        ExecStart = enrollScript;
        # Needs root and the TPM/block devices; no network.
        PrivateNetwork = true;
        NoNewPrivileges = true;
        UMask = "0077";
      };
    };
  };
}
