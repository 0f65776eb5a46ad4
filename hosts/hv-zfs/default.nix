# Example hypervisor: VM volumes as zvols in a mirrored ZFS pool.
# disko.nix is rendered by kcore-disko from storage.json (checked by kcore-nixos-checks).
{
  imports = [ ../node-common.nix ];

  networking.hostName = "hv-zfs";
  # ZFS refuses to import a pool last used under another host id: unique per host, and not
  # nixpkgs' installer default (8425e349, profiles/base.nix), which every live ISO shares.
  networking.hostId = "5e2f9b14";

  kcore.storage = {
    backend = "zfs";
    layout = ./disko.nix;
  };

  services.kcore.agent.settings = {
    nodeId = "hv-zfs";
    dcId = "DC2";
  };
}
