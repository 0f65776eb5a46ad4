# A stand-in for nixpkgs' `pkgs`, for the offline evaluation harness (eval.nix): nixpkgs'
# package set cannot be downloaded here, only its `lib/`.
#
# What is faked, and how:
# - packages are attribute sets that lib treats as derivations (`type = "derivation"`) with a
#   fixed, obviously fake store path `/nix/store/000...0-<name>`; nothing is built;
# - `writeText name text` (and `writeShellScript`) returns such a fake derivation that also
#   carries `text`, so the harness can read back what a module would have written to the store;
# - OVMF and OVMFFull carry an `fd` output, as nixpkgs' do;
# - `dockerTools.buildLayeredImage` returns a fake image that keeps its arguments;
# - `formats.yaml { }` has a `type` equivalent to nixpkgs' (JSON-like values: null, bool, int,
#   float, string, path, lists and attribute sets of those) and a `generate` that writes the
#   value as JSON. JSON is a subset of YAML, and nixpkgs' generator produces YAML of the same
#   value, so the test compares data (parsed maps), not formatting.
{ lib }:
let
  fakeDrv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };

  writeText = name: text: fakeDrv name // { inherit text; };

  yamlValue =
    let
      valueType =
        lib.types.nullOr (
          lib.types.oneOf [
            lib.types.bool
            lib.types.int
            lib.types.float
            lib.types.str
            lib.types.path
            (lib.types.attrsOf valueType)
            (lib.types.listOf valueType)
          ]
        )
        // {
          description = "YAML value";
        };
    in
    valueType;
in
{
  inherit writeText;
  writeShellScript = writeText;
  writeShellScriptBin = writeText;

  OVMF = fakeDrv "OVMF" // {
    fd = fakeDrv "OVMF-fd";
  };
  OVMFFull = fakeDrv "OVMFFull" // {
    fd = fakeDrv "OVMFFull-fd";
  };

  formats.yaml = _: {
    type = yamlValue;
    generate = name: value: writeText name (builtins.toJSON value);
  };

  # nixpkgs' pkgs/build-support/docker/default.nix: buildLayeredImage takes { name, tag,
  # contents, config, ... } and returns the image tarball; here a fake derivation that
  # keeps its arguments for the harness to read.
  dockerTools.buildLayeredImage =
    args:
    fakeDrv "${args.name}.tar.gz"
    // {
      inherit args;
    };

  stdenv = fakeDrv "stdenv" // {
    hostPlatform.system = "x86_64-linux";
  };
  # `pkgs.path`, the nixpkgs source tree the package set comes from.
  path = "/nix/store/00000000000000000000000000000000-nixpkgs";
}
// lib.genAttrs [
  "busybox"
  "coreutils"
  "curl"
  "git"
  "grub2"
  "jq"
  "installShellFiles"
  "makeInitrdNGTool"
  "makeWrapper"
  "stdenvNoCC"
  "cryptsetup"
  "disko"
  "gptfdisk"
  "nixos-install-tools"
  "iproute2"
  "kcore"
  "lvm2"
  "nix"
  "nixos-rebuild"
  "qemu_kvm"
  "systemd"
  "thin-provisioning-tools"
  "util-linux"
  "zfs"
] fakeDrv
