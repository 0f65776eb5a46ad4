# Stand-in for what nixpkgs' NixOS test framework adds to every VM test node, for the offline
# harness: nixos/modules/virtualisation/qemu-vm.nix (the options the kcore VM tests set, with
# qemu-vm's types and defaults) and its config line that matters to a LUKS root:
#   boot.initrd.luks.devices = (if cfg.useDefaultFilesystems then mkVMOverride else mkDefault) { };
# (mkVMOverride = mkOverride 10, lib/modules.nix): with the default file systems, a LUKS
# device declared at normal priority is discarded; a test must use lib.mkVMOverride.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  cfg = config.virtualisation;
  opt =
    type: default:
    mkOption {
      inherit type default;
    };
in
{
  options.virtualisation = {
    memorySize = opt types.ints.positive 1024;
    cores = opt types.ints.positive 1;
    emptyDiskImages = opt (types.listOf types.ints.positive) [ ];
    useBootLoader = opt types.bool false;
    useEFIBoot = opt types.bool false;
    useDefaultFilesystems = opt types.bool true;
    mountHostNixStore = opt types.bool (!cfg.useBootLoader);
    rootDevice = opt (types.nullOr types.path) "/dev/disk/by-label/nixos";
    tpm.enable = opt types.bool false;
    # (pkgs.OVMF.override { secureBoot = cfg.useSecureBoot; }).fd
    efi.OVMF = opt types.package pkgs.OVMF.fd;
  };

  config.boot.initrd.luks.devices =
    (if cfg.useDefaultFilesystems then lib.mkVMOverride else lib.mkDefault)
      { };
}
