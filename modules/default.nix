# Every kcore NixOS module. `kcore.storage.layout` / `diskoFragments` need a disko NixOS module
# in the same configuration, which kcore does not import (docs/nixos.md "Using the modules
# from another flake"); the kcore flake's `nixosModules.default` adds the flake glue.
{
  imports = [
    ./agent.nix
    ./controller.nix
    ./storage.nix
    ./disk-encryption.nix
  ];
}
