# The prebuilt system for nodes with the `filesystem` storage backend (see ../installed-node.nix);
# the installer ISO carries it as the agent's `install.systems.filesystem`.
{
  imports = [ ../installed-node.nix ];

  kcore.storage.backend = "filesystem";
}
