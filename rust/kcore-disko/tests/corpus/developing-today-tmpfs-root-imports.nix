# source: github.com/developing-today/code hosts/disks/tmpfs/root/default.nix (as indexed by the code search)
# covers: tmpfs root (nodev), `imports` using the host's own lib extension (lib.from-root), a required argument (`inputs`) without a default
# changed: nothing
# TODO: consider if there's a better way to configure this, possibly a function that generates the module?
#       or maybe add a few 'standard' tmpfs disk sizes?
{ inputs, lib, ... }:
{
  imports = [
    (lib.from-root "hosts/disks")
  ];
  disko.devices = {
    nodev."/" = {
      fsType = "tmpfs";
      mountOptions = [
        "defaults"
        "size=2G" # 4 8 16 ?
        "mode=755"
      ];
    };
  };
}
