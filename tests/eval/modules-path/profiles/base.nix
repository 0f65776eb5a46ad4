# Stand-in for nixpkgs' nixos/modules/profiles/base.nix: the installer's default host id
# (`networking.hostId = lib.mkDefault "8425e349"`), the one example hosts must not share.
{ lib, ... }:
{
  networking.hostId = lib.mkDefault "8425e349";
}
