# The prebuilt system for nodes with the `filesystem` storage backend (see ../installed-node.nix);
# TPM2 unlock; the installer ISO carries it as the agent's `install.systems.filesystem`.
{
  imports = [ (import ../installed-node.nix { unlock = "tpm2"; }) ];

  kcore.storage.backend = "filesystem";
}
