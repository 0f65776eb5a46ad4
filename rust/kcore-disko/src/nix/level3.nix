# Level 3: the same module as level 2 under disko's own `toplevel` type, down to the create
# and mount scripts disko would run (`_create`, `_mount`; as disko's default.nix `eval`).
# `load` is the shared loader (load.nix), applied by eval.rs before the arguments.
load:
{ fragment, disko, nixpkgsLib }:
let
  lib = import (/. + nixpkgsLib);
  diskoLib = import (/. + disko + "/lib") { inherit lib; };
  loaded = load { inherit fragment lib; };
  evaluated = lib.evalModules {
    modules = [
      {
        options.disko.devices = lib.mkOption { type = diskoLib.toplevel; };
        config._module.freeformType = lib.types.lazyAttrsOf lib.types.raw;
      }
      (lib.setDefaultModuleLocation fragment loaded.module)
    ];
  };
  devices = evaluated.config.disko.devices;
in
# disko's _mount reads _config.fileSystems, which only exists when something is mounted.
{ create = devices._create; mount = if devices._config ? fileSystems then devices._mount else ""; }
