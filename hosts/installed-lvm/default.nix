# The prebuilt system for nodes with the `lvm` storage backend (see ../installed-node.nix);
# the installer ISO carries it as the agent's `install.systems.lvm`.
{
  imports = [ ../installed-node.nix ];

  kcore.storage.backend = "lvm";
}
