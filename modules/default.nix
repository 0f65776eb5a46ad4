# Every kcore NixOS module. Needs disko's NixOS module in the same configuration (for
# `disko.devices`); the kcore flake's `nixosModules.default` adds it, and the flake inputs.
{
  imports = [
    ./agent.nix
    ./controller.nix
    ./storage.nix
    ./disk-encryption.nix
  ];
}
