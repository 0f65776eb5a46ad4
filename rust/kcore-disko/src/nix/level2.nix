# Level 2: the layout's `disko.devices` after the module system resolved `mkDefault`,
# `mkIf`, `mkMerge`, `mkOverride` and `mkForce` anywhere in it, as plain data, with notes on
# what the check ignored. Without a nixpkgs lib there is no module system: the file must then
# be plain data (a function of nothing but defaulted arguments, or an attribute set).
# `load` is the shared loader (load.nix), applied by eval.rs before the arguments.
load:
{ fragment, nixpkgsLib ? "" }:
let
  noLib = nixpkgsLib == "";
  lib = if noLib then throw "kcore: no nixpkgs lib" else import (/. + nixpkgsLib);
  loaded = load { inherit fragment lib; hasLib = !noLib; };
  evaluated = lib.evalModules {
    modules = [
      {
        options.disko.devices = lib.mkOption { type = lib.types.lazyAttrsOf lib.types.anything; default = { }; };
        # disko's own other options (`disko.enableConfig`, ...) and every NixOS option beside
        # `disko`: accepted unevaluated, `raw` so nothing in them is forced.
        config._module.freeformType = lib.types.lazyAttrsOf lib.types.raw;
      }
      (lib.setDefaultModuleLocation fragment loaded.module)
    ];
  };
  plainValue = loaded.module { config = { }; options = { }; };
in
if noLib then
  {
    devices = plainValue.disko.devices or { };
    beside = builtins.filter (n: n != "disko") (builtins.attrNames plainValue);
    imports = loaded.notes.imports;
  }
else
  {
    devices = evaluated.config.disko.devices;
    beside = builtins.filter (n: n != "disko" && n != "_module") (builtins.attrNames evaluated.config);
    imports = loaded.notes.imports;
  }
