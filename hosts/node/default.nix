# The generic node the installer ISO carries prebuilt (hosts/installer): filesystem backend,
# OS disk /dev/vda and one data disk /dev/vdb. An install onto this layout needs no network.
# disko.nix is rendered by kcore-disko from storage.json (checked by kcore-nixos-checks).
{ modulesPath, ... }:
{
  imports = [
    ../node-common.nix
    # Its disks are virtio (/dev/vda, /dev/vdb): virtio_pci/virtio_blk etc. in the initrd.
    "${modulesPath}/profiles/qemu-guest.nix"
  ];

  networking.hostName = "kcore-node";
  # Every node installed from this prebuilt system shares this id until its own
  # configuration sets one; it only matters for ZFS, and this host's backend is filesystem.
  networking.hostId = "0d4e8a52";

  kcore.storage.layout = ./disko.nix;

  # Replaced by the node's own id at install (kctl writes it into the node's configuration).
  services.kcore.agent.settings.nodeId = "node";
}
