# Example controller: the controller daemon on an encrypted single-disk machine.
# disko.nix is rendered by kcore-disko from storage.json (checked by kcore-nixos-checks).
{ lib, ... }:
{
  imports = [ ../operator-ssh.nix ];

  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
  system.stateVersion = "25.11";

  networking.hostName = "controller";
  # Unique per example host (hosts::example_hosts_have_unique_host_ids); ZFS needs it, the
  # others carry one so a copied host never shares the installer's default (8425e349).
  networking.hostId = "c7a1d3e0";

  boot.loader.systemd-boot.enable = true;
  # As in node-common.nix: the editor would let the console bypass the TPM2-unlocked root.
  boot.loader.systemd-boot.editor = false;
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
}
