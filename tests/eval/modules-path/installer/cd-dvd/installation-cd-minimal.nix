# Stand-in for nixpkgs' nixos/modules/installer/cd-dvd/installation-cd-minimal.nix, for the
# offline harness (`modulesPath` points here). What of it the kcore installer meets:
# - iso-image.nix: renames isoImage.isoBaseName to image.baseName
#   (`lib.mkRenamedOptionModuleWith { sinceRelease = 2505; ... }`) and sets
#   `image.baseName = "nixos${edition}-${label}-${system}"` at normal priority, so a host
#   must use lib.mkForce; `isoImage.storeContents` is an untyped list; `isoImage.edition`
#   is "minimal" here;
# - image/file-options.nix: `image.baseName` (str);
# - installation-cd-base.nix imports profiles/base.nix and profiles/installation-device.nix
#   (their stand-ins are beside this file's);
# - iso-image.nix: `system.build.isoImage` is make-iso9660-image.nix called with
#   `isoName = config.image.fileName` ("<baseName>.iso") and `storeContents`; here a fake
#   derivation of that name whose text lists the store contents, so `nix build
#   .#installer-iso` is seen to evaluate and to carry what it should.
{ config, lib, pkgs, ... }:
{
  imports = [
    ../../profiles/base.nix
    ../../profiles/installation-device.nix
    (lib.mkRenamedOptionModuleWith {
      sinceRelease = 2505;
      from = [
        "isoImage"
        "isoBaseName"
      ];
      to = [
        "image"
        "baseName"
      ];
    })
  ];

  options = {
    image.baseName = lib.mkOption { type = lib.types.str; };
    isoImage.storeContents = lib.mkOption {
      default = [ ];
    };
    isoImage.edition = lib.mkOption {
      type = lib.types.str;
      default = "";
    };
  };

  config = {
    isoImage.edition = lib.mkDefault "minimal";
    image.baseName = "nixos-minimal-25.11-${pkgs.stdenv.hostPlatform.system}";
    system.build.isoImage = pkgs.writeText "${config.image.baseName}.iso" (
      builtins.toJSON (map toString config.isoImage.storeContents)
    );
  };
}
