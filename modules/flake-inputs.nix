# Glue between the kcore flake and its modules (added by the flake's `nixosModules`, not by
# modules/default.nix): the kcore package built by this flake, and disko from the flake's own
# `disko` input, both as the tool and as the source the agent validates layouts against, with
# the `lib/` of the nixpkgs it follows. Using one revision for both means a layout that
# validates is a layout the installed disko formats the same way.
{
  self,
  disko,
  nixpkgs,
}:
{ lib, pkgs, ... }:
let
  inherit (pkgs.stdenv.hostPlatform) system;
in
{
  imports = [ disko.nixosModules.disko ];

  services.kcore.agent = {
    package = lib.mkDefault self.packages.${system}.kcore;
    diskoPackage = lib.mkDefault disko.packages.${system}.disko;
    settings.disko = {
      diskoSource = lib.mkDefault "${disko}";
      nixpkgsLib = lib.mkDefault "${nixpkgs}/lib";
    };
  };
  services.kcore.controller.package = lib.mkDefault self.packages.${system}.kcore;
}
