# The prebuilt system for nodes with the `zfs` storage backend (see ../installed-node.nix);
# the installer ISO carries it as the agent's `install.systems.zfs`.
{
  imports = [ ../installed-node.nix ];

  kcore.storage.backend = "zfs";
}
