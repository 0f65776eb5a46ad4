# The user's layout file as one module, the same way for level 2 and level 3: called with
# its default arguments (as disko's cli.nix calls a function: `{ inherit lib; } // args`),
# its `imports` dropped unevaluated (a standalone check cannot see them), and every other
# option beside `disko` accepted by a lazy freeform type and never forced.
# `hasLib = false` (level 2 without a nixpkgs lib): `lib` is not passed, so a defaulted
# `lib ? null` keeps its default and a required one is refused by name.
{ fragment, lib, hasLib ? true }:
let
  raw = import (/. + fragment);
  fargs = if builtins.isFunction raw then builtins.functionArgs raw else { };
  # What a layout may ask for: `lib`, and what the module system passes a NixOS module.
  # `pkgs` and `modulesPath` are not available: forcing them is an error saying so.
  unavailable = name: throw "kcore: the layout uses the module argument `${name}', which a standalone disko check does not have; use only `lib` inside `disko.devices`";
  known = (if hasLib then [ "lib" ] else [ ]) ++ [ "config" "options" "pkgs" "modulesPath" "specialArgs" ];
  required = builtins.filter (n: !fargs.${n} && !(builtins.elem n known)) (builtins.attrNames fargs);
  call =
    args:
    if !builtins.isFunction raw then
      raw
    else if builtins.elem "lib" required then
      throw "kcore: this layout is a function of `lib`, and no nixpkgs lib was given: pass one (kctl --nixpkgs-lib DIR, the agent's disko.nixpkgsLib)"
    else if required != [ ] then
      throw "kcore: the layout is a function whose argument `${builtins.head required}' has no default: give it one (`${builtins.head required} ? ...`), as disko's CLI passes only `lib` and its own options"
    else
      raw (builtins.intersectAttrs fargs (args // { pkgs = unavailable "pkgs"; modulesPath = unavailable "modulesPath"; }));
  strip = m: if builtins.isAttrs m && !(m ? _type) then removeAttrs m [ "imports" ] else m;
  plain = v: builtins.isAttrs v && !(v ? _type);
  # Names beside `disko` at the top level (or under an explicit `config`), for a note.
  beside =
    m:
    let
      top = if plain m then builtins.attrNames m else [ ];
      cfg = if plain m && m ? config && plain m.config then builtins.attrNames m.config else [ ];
      explicit = builtins.elem "config" top || builtins.elem "options" top;
    in
    builtins.filter (n: !(builtins.elem n [ "disko" "imports" "_file" "key" "config" "options" "disabledModules" ])) (
      if explicit then cfg else top
    );
  evaluated = call { inherit lib; config = { }; options = { }; };
in
{
  # `config` and `options` are named so the module system passes them on to the file.
  # deadnix: skip
  module = { config, options, ... }@args: strip (call args);
  notes = {
    beside = beside evaluated;
    imports = plain evaluated && evaluated ? imports;
  };
}
