# The prebuilt system for nodes with the `lvm` storage backend installed with
# `--luks keyfile --luks-key-device DEV` (see ../installed-node.nix): the initrd unlocks the
# root with the key device's `kcore-luks-key` partition; the installer ISO carries it as the
# agent's `install.keyfileSystems.lvm`.
{
  imports = [ (import ../installed-node.nix { unlock = "keyFile"; }) ];

  kcore.storage.backend = "lvm";
}
