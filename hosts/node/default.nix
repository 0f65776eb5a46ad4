# An example node configured in Nix (nodeConfig "settings"): filesystem backend, OS disk
# /dev/vda and one data disk /dev/vdb; its spec is the apply-disko VM test's. The installer
# ISO carries hosts/installed-* instead, whose node values are runtime files.
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

  # A node configured in Nix names itself; installed nodes read theirs from node-agent.yaml.
  services.kcore.agent.settings.nodeId = "node";
}
