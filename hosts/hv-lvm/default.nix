# Example hypervisor: VM volumes as LVM thin volumes on two data disks.
# disko.nix is rendered by kcore-disko from storage.json (checked by kcore-nixos-checks).
{
  imports = [ ../node-common.nix ];

  networking.hostName = "hv-lvm";
  networking.hostId = "a93c0d67";

  kcore.storage = {
    backend = "lvm";
    layout = ./disko.nix;
  };

  services.kcore.agent.settings = {
    nodeId = "hv-lvm";
    dcId = "DC1";
  };
}
