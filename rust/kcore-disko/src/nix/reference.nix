# What disko's own CLI says of a layout file, without pkgs: cli.nix imports the file, calls
# it when it is a function with `{ inherit lib; } // args` (the disko script passes `mode`
# and `diskoFile`), and evaluates `.disko.devices` with default.nix's `eval` (disko's
# `toplevel` type). `format` and `mount` are default.nix's pkgs-free outputs of that `eval`
# (`_create`, `_mount`); forcing both is what the CLI needs before it builds any script.
{ diskoFile, disko, nixpkgsLib }:
let
  lib = import (/. + nixpkgsLib);
  d = import (/. + disko + "/default.nix") { inherit lib; };
  file = /. + diskoFile;
  args = { mode = "format,mount"; diskoFile = file; };
  diskoConfig = import file;
  diskFormat = if builtins.isFunction diskoConfig then diskoConfig ({ inherit lib; } // args) else diskoConfig;
  create = d.format diskFormat;
  mount = if (d.config diskFormat) ? fileSystems then d.mount diskFormat else "";
in
builtins.deepSeq [ create mount ] true
