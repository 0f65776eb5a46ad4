# The few NixOS options the example hosts (hosts/*) set besides kcore's own, declared so the
# harness can evaluate a host (eval.nix `host` argument). Same rule as nixos-stubs.nix: each
# with a real type, nothing more than the hosts use.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  opt =
    type: default:
    mkOption {
      inherit type default;
    };
in
{
  options = {
    nixpkgs.hostPlatform = opt types.str "x86_64-linux";
    system.stateVersion = opt types.str "";
    networking.hostName = opt (types.strMatching "[A-Za-z0-9-]{1,63}") "nixos";
    boot.loader.systemd-boot.enable = opt types.bool false;
    boot.loader.efi.canTouchEfiVariables = opt types.bool false;
    services.openssh.enable = opt types.bool false;
    services.openssh.settings = opt (types.attrsOf types.anything) { };
  };
}
