# The generic node the installer ISO carries prebuilt (hosts/installer): filesystem backend,
# OS disk /dev/vda and one data disk /dev/vdb. An install onto this layout needs no network.
# disko.nix is rendered by kcore-disko from storage.json (checked by kcore-nixos-checks).
{
  imports = [ ../node-common.nix ];

  networking.hostName = "kcore-node";

  kcore.storage.layout = ./disko.nix;

  # Replaced by the node's own id at install (kctl writes it into the node's configuration).
  services.kcore.agent.settings.nodeId = "node";
}
