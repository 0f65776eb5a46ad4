# Declarations of the NixOS options the kcore modules, the example hosts and the VM test nodes
# set or read, for the offline evaluation harness (eval.nix, flake-outputs.nix): nixpkgs' lib
# is available here, NixOS' modules are not. disko's option is in disko-stub.nix, the
# qemu-vm test options in qemu-vm-stub.nix, the profiles the hosts import under modules-path/.
#
# Each stub mirrors the nixpkgs declaration it names (nixpkgs 25.11, files under
# nixos/modules/): the same type, hence the same merge behaviour (a `listOf` concatenates, so
# `wantedBy = [ ]` does not empty it; a `types.package` is unique, so two equal definitions at
# one priority are an error; an `attrsOf submodule` merges per attribute), and the same
# default. Only the options used are declared: a kcore file that starts setting another
# NixOS option fails here ("The option `...' does not exist") until it is added, with its
# source. Descriptions are left out.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  opt =
    type: default:
    mkOption {
      inherit type default;
    };
  # An option without a default (reading it unset is an error, as on NixOS).
  req = type: mkOption { inherit type; };

  # system/boot/systemd/... unit options (lib/systemd-unit-options.nix `unitOption`): a
  # primitive or a list of primitives; lists concatenate.
  primitive = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
  ];
  unitOption = types.either primitive (types.listOf primitive);
  # lib/systemd-types.nix `unitNameType`.
  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

  # lib/systemd-unit-options.nix: commonUnitOptions + serviceOptions, the ones used.
  serviceType = types.submodule {
    options = {
      description = opt types.singleLineStr "";
      wantedBy = opt (types.listOf unitNameType) [ ];
      requiredBy = opt (types.listOf unitNameType) [ ];
      wants = opt (types.listOf unitNameType) [ ];
      requires = opt (types.listOf unitNameType) [ ];
      after = opt (types.listOf unitNameType) [ ];
      before = opt (types.listOf unitNameType) [ ];
      restartTriggers = opt (types.listOf types.unspecified) [ ];
      path = opt (types.listOf (types.oneOf [
        types.package
        types.str
      ])) [ ];
      environment = opt (types.attrsOf (types.nullOr (types.oneOf [
        types.str
        types.path
        types.package
      ]))) { };
      serviceConfig = opt (types.attrsOf unitOption) { };
      unitConfig = opt (types.attrsOf unitOption) { };
    };
  };

  # system/etc/etc.nix: `environment.etc.<name>`.
  etcType = types.submodule {
    options = {
      source = opt types.path null;
      mode = opt types.str "symlink";
    };
  };

  # system/boot/luksroot.nix: `boot.initrd.luks.devices.<name>`.
  luksType = types.submodule {
    options = {
      device = req types.str;
      keyFile = opt (types.nullOr types.str) null;
      keyFileSize = opt (types.nullOr types.int) null;
      allowDiscards = opt types.bool false;
      crypttabExtraOpts = opt (types.listOf types.singleLineStr) [ ];
    };
  };

  # config/users-groups.nix: `users.users.<name>` (openssh.authorizedKeys, isSystemUser,
  # group) and `users.groups.<name>`.
  userType = types.submodule {
    options.openssh.authorizedKeys.keys = opt (types.listOf types.singleLineStr) [ ];
    options.isSystemUser = opt types.bool false;
    options.group = opt types.str "";
  };
  groupType = types.submodule { options.gid = opt (types.nullOr types.int) null; };

  # tasks/filesystems.nix: `fileSystems.<mountpoint>`.
  fileSystemType = types.submodule {
    options = {
      device = opt (types.nullOr types.str) null;
      fsType = opt types.str "auto";
      options = opt (types.nonEmptyListOf types.str) [ "defaults" ];
    };
  };
in
{
  options = {
    # misc/assertions.nix
    assertions = opt (types.listOf types.unspecified) [ ];
    warnings = opt (types.listOf types.str) [ ];

    # system/etc/etc.nix
    environment.etc = opt (types.attrsOf etcType) { };
    # config/system-path.nix
    environment.systemPackages = opt (types.listOf types.package) [ ];

    # tasks/network-interfaces.nix (8 hex digits)
    networking.hostId = opt (types.nullOr (types.strMatching "[0-9a-f]{8}")) null;
    networking.hostName = opt (types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$") "nixos";
    # services/networking/firewall.nix
    networking.firewall.allowedTCPPorts = opt (types.listOf types.port) [ ];

    # tasks/filesystems.nix
    boot.supportedFilesystems = opt (types.coercedTo (types.listOf types.str) (
      fss: lib.genAttrs fss (_: true)
    ) (types.attrsOf types.bool)) { };
    # tasks/filesystems/zfs.nix
    boot.zfs.extraPools = opt (types.listOf types.str) [ ];
    boot.zfs.package = opt types.package pkgs.zfs;
    # system/boot/systemd/initrd.nix
    boot.initrd.systemd.enable = opt types.bool false;
    # system/boot/luksroot.nix
    boot.initrd.luks.devices = opt (types.attrsOf luksType) { };
    # system/boot/stage-1.nix
    boot.initrd.secrets = opt (types.attrsOf (types.nullOr types.path)) { };
    # system/boot/kernel.nix
    boot.initrd.availableKernelModules = opt (types.listOf types.str) [ ];
    boot.initrd.kernelModules = opt (types.listOf types.str) [ ];
    # system/boot/loader/efi.nix
    boot.loader.efi.efiSysMountPoint = opt types.str "/boot";
    boot.loader.efi.canTouchEfiVariables = opt types.bool false;
    # system/boot/loader/systemd-boot/systemd-boot.nix: the editor is on by default.
    boot.loader.systemd-boot.enable = opt types.bool false;
    boot.loader.systemd-boot.editor = opt types.bool true;
    # system/boot/loader/grub/grub.nix: on unless the system is a container (no container
    # here), `package` pkgs.grub2; systemd-boot.nix turns it off (see `config` below).
    boot.loader.grub.enable = opt types.bool true;
    boot.loader.grub.package = opt types.package pkgs.grub2;

    # tasks/lvm.nix
    services.lvm.boot.thin.enable = opt types.bool false;

    # services/networking/ssh/sshd.nix (settings: freeform with typed keys)
    services.openssh.enable = opt types.bool false;
    services.openssh.settings = opt (types.submodule {
      freeformType = types.attrsOf (types.oneOf [
        types.bool
        types.int
        types.str
      ]);
      options = {
        PasswordAuthentication = opt types.bool true;
        KbdInteractiveAuthentication = opt types.bool true;
        PermitRootLogin = opt (types.enum [
          "yes"
          "without-password"
          "prohibit-password"
          "forced-commands-only"
          "no"
        ]) "prohibit-password";
      };
    }) { };
    # config/users-groups.nix
    users.users = opt (types.attrsOf userType) { };
    users.groups = opt (types.attrsOf groupType) { };
    # tasks/filesystems.nix
    fileSystems = opt (types.attrsOf fileSystemType) { };

    # system/boot/systemd.nix
    systemd.package = opt types.package pkgs.systemd;
    systemd.services = opt (types.attrsOf serviceType) { };
    # system/boot/systemd/tmpfiles.nix
    systemd.tmpfiles.rules = opt (types.listOf types.str) [ ];

    # services/system/nix-daemon.nix, config/nix.nix
    nix.package = opt types.package pkgs.nix;
    nix.settings = opt (types.submodule {
      freeformType = types.attrsOf types.anything;
      options.experimental-features = opt (types.listOf types.str) [ ];
      options.substituters = opt (types.listOf types.str) [ ];
    }) { };

    # misc/nixpkgs.nix
    nixpkgs.hostPlatform = opt (types.either types.str types.attrs) "x86_64-linux";
    # misc/version.nix
    system.stateVersion = opt types.str "25.11";
    # system/activation/top-level.nix: a lazy attrset; installer/tools/tools.nix puts
    # nixos-rebuild in it unconditionally.
    system.build = opt (types.lazyAttrsOf types.unspecified) { };
    system.extraDependencies = opt (types.listOf types.pathInStore) [ ];
    system.includeBuildDependencies = opt types.bool false;

    # system/activation/specialisation.nix: each configuration extends this system
    # (inheritParentConfig); the harness evaluates it with extendModules.
    specialisation = opt (types.attrsOf (types.submodule {
      options.inheritParentConfig = opt types.bool true;
      options.configuration = opt types.deferredModule { };
    })) { };
  };

  # system/boot/loader/systemd-boot/systemd-boot.nix: `boot.loader.grub.enable = mkDefault
  # false` when systemd-boot is enabled.
  config.boot.loader.grub.enable = lib.mkIf config.boot.loader.systemd-boot.enable (
    lib.mkDefault false
  );
  # installer/tools/tools.nix: nixos-rebuild; system/activation/top-level.nix: `toplevel`,
  # the system's closure (here a fake store path named after the host).
  config.system.build = {
    inherit (pkgs) nixos-rebuild;
    toplevel = pkgs.writeText "nixos-system-${config.networking.hostName}" "";
  };
}
