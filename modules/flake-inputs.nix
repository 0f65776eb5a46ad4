# Glue between the kcore flake and its modules (added by the flake's `nixosModules`, not by
# modules/default.nix): the kcore package built by this flake, and disko from the flake's own
# `disko` input, both as the tool and as the source the agent validates layouts against, with
# the `lib/` of the nixpkgs it follows. Using one revision for both means a layout that
# validates is a layout the installed disko formats the same way.
#
# One glue module per option owner, each with a `key`: the module system deduplicates
# modules by key (or by file path), not anonymous functions, so a configuration that
# imports several kcore modules (`default` plus `agent`, or two VM-test roles) gets each
# `lib.mkDefault` exactly once; a second identical definition of a `types.package` option
# would be refused as "defined multiple times". Each glue sets only options of the module
# it is paired with, so every `nixosModules.*` evaluates on its own.
#
# disko's NixOS module is NOT imported here: a consumer imports the disko module of its own
# choice (its own input, ideally with `kcore.inputs.disko.follows = "disko"`), see
# docs/nixos.md "Using the modules from another flake".
{
  self,
  disko,
  nixpkgs,
}:
{
  agent = {
    key = "kcore-flake-glue-agent";
    imports = [
      (
        { lib, pkgs, ... }:
        let
          inherit (pkgs.stdenv.hostPlatform) system;
        in
        {
          services.kcore.agent = {
            package = lib.mkDefault self.packages.${system}.kcore;
            diskoPackage = lib.mkDefault disko.packages.${system}.disko;
            settings.disko = {
              diskoSource = lib.mkDefault "${disko}";
              nixpkgsLib = lib.mkDefault "${nixpkgs}/lib";
            };
          };
        }
      )
    ];
  };

  controller = {
    key = "kcore-flake-glue-controller";
    imports = [
      (
        { lib, pkgs, ... }:
        {
          services.kcore.controller.package =
            lib.mkDefault
              self.packages.${pkgs.stdenv.hostPlatform.system}.kcore;
        }
      )
    ];
  };
}
