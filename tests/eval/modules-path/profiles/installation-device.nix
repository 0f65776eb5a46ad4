# Stand-in for nixpkgs' nixos/modules/profiles/installation-device.nix (imported by
# tests/vm/rollout.nix): the options it sets that the test relies on.
{ lib, pkgs, ... }:
{
  services.openssh.enable = lib.mkDefault true;
  system.extraDependencies = map (name: pkgs.${name}) [
    "stdenv"
    "stdenvNoCC"
    "busybox"
    "jq"
    "makeInitrdNGTool"
  ];
}
