# Declarations of exactly the NixOS (and disko) options the kcore modules set or read, for the
# offline evaluation harness (eval.nix): nixpkgs' lib is available here, NixOS is not.
#
# Each option has a real type, close to the NixOS one, so a misspelt option name or a value of
# the wrong type fails the evaluation just as on NixOS ("The option `...' does not exist").
# Nothing else is declared: a kcore module that starts setting a new NixOS option makes the
# harness fail until the option is added here, which keeps this list honest.
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  opt =
    type: default:
    mkOption {
      inherit type default;
    };

  # systemd unit settings: NixOS' `unitOption` (a scalar or a list of scalars).
  unitValue = types.oneOf [
    types.bool
    types.int
    types.str
    (types.listOf (
      types.oneOf [
        types.bool
        types.int
        types.str
      ]
    ))
  ];

  serviceType = types.submodule {
    options = {
      description = opt types.str "";
      wantedBy = opt (types.listOf types.str) [ ];
      wants = opt (types.listOf types.str) [ ];
      after = opt (types.listOf types.str) [ ];
      before = opt (types.listOf types.str) [ ];
      requires = opt (types.listOf types.str) [ ];
      restartTriggers = opt (types.listOf types.unspecified) [ ];
      path = opt (types.listOf types.package) [ ];
      environment = opt (types.attrsOf types.str) { };
      serviceConfig = opt (types.attrsOf unitValue) { };
      unitConfig = opt (types.attrsOf unitValue) { };
    };
  };

  etcType = types.submodule {
    options = {
      source = opt types.path null;
      mode = opt types.str "symlink";
    };
  };

  luksType = types.submodule {
    options = {
      device = mkOption { type = types.str; };
      keyFile = opt (types.nullOr types.str) null;
      crypttabExtraOpts = opt (types.listOf types.str) [ ];
    };
  };

  # disko's top-level device types (disko/lib/default.nix: `devices`), each an attribute set
  # of named devices. The device contents are not typed here: kcore-disko's own validation
  # checks them against disko's types.
  diskoDevicesType = types.submodule {
    options = lib.genAttrs [
      "disk"
      "mdadm"
      "zpool"
      "lvm_vg"
      "nodev"
    ] (_: opt (types.attrsOf types.anything) { });
  };
in
{
  options = {
    assertions = opt (types.listOf types.unspecified) [ ];
    warnings = opt (types.listOf types.str) [ ];

    environment.etc = opt (types.attrsOf etcType) { };
    environment.systemPackages = opt (types.listOf types.package) [ ];

    networking.hostId = opt (types.nullOr (types.strMatching "[0-9a-f]{8}")) null;
    networking.firewall.allowedTCPPorts = opt (types.listOf types.port) [ ];

    boot.supportedFilesystems = opt (types.coercedTo (types.listOf types.str) (
      fss: lib.genAttrs fss (_: true)
    ) (types.attrsOf types.bool)) { };
    boot.zfs.extraPools = opt (types.listOf types.str) [ ];
    boot.zfs.package = opt types.package pkgs.zfs;
    boot.initrd.systemd.enable = opt types.bool false;
    boot.initrd.luks.devices = opt (types.attrsOf luksType) { };
    boot.initrd.secrets = opt (types.attrsOf (types.nullOr types.path)) { };
    boot.loader.efi.efiSysMountPoint = opt types.str "/boot";

    services.lvm.boot.thin.enable = opt types.bool false;

    systemd.package = opt types.package pkgs.systemd;
    systemd.services = opt (types.attrsOf serviceType) { };
    systemd.tmpfiles.rules = opt (types.listOf types.str) [ ];

    nix.package = opt types.package pkgs.nix;

    # NixOS: installer/tools/tools.nix puts nixos-rebuild here.
    system.build = opt (types.lazyAttrsOf types.unspecified) {
      inherit (pkgs) nixos-rebuild;
    };

    disko.devices = opt diskoDevicesType { };
  };
}
