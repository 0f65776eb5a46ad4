# disko's NixOS module, reduced to the option kcore sets: `disko.devices` (disko module.nix,
# `devices = lib.mkOption { type = diskoLib.toplevel; default = { }; }`). Its top-level
# device kinds (disko lib/default.nix `toplevel`) are each an attribute set of named
# devices; their contents are checked by kcore-disko's own validation against disko's types,
# not here. A separate module so that a configuration without any disko module can be
# evaluated too (kcore.storage then asserts).
{ lib, ... }:
{
  options.disko.devices = lib.mkOption {
    type = lib.types.submodule {
      options = lib.genAttrs [
        "disk"
        "mdadm"
        "zpool"
        "lvm_vg"
        "nodev"
      ] (_: lib.mkOption {
        type = lib.types.attrsOf lib.types.anything;
        default = { };
      });
    };
    default = { };
  };
}
