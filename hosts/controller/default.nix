# Example controller: the controller daemon on an encrypted single-disk machine.
# disko.nix is rendered by kcore-disko from storage.json (checked by kcore-nixos-checks).
{ lib, ... }:
{
  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
  system.stateVersion = "25.11";

  networking.hostName = "controller";

  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;

  kcore.storage.layout = ./disko.nix;
  kcore.diskEncryption = {
    enable = true;
    device = "/dev/disk/by-partlabel/disk-os-root";
  };

  services.kcore.controller = {
    enable = true;
    # Agents and kctl connect to it; mTLS guards it.
    openFirewall = true;
    settings = {
      controllerId = "ctl1";
      clusterName = "lab";
      dcId = "DC1";
      requireManualApproval = true;
    };
  };

  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };
}
