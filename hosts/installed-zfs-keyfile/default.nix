# The prebuilt system for nodes with the `zfs` storage backend installed with
# `--luks keyfile --luks-key-device DEV` (see ../installed-node.nix): the initrd unlocks the
# root with the key device's `kcore-luks-key` partition; the installer ISO carries it as the
# agent's `install.keyfileSystems.zfs`.
{
  imports = [ (import ../installed-node.nix { unlock = "keyFile"; }) ];

  kcore.storage.backend = "zfs";
}
