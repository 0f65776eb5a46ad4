# Where in the user's file each option path was written: the position of the deepest
# attribute along the path that the file spells out (`builtins.unsafeGetAttrPos`), looking
# through `mkIf`/`mkDefault`/`mkOverride` (their `content`) and `mkMerge` (each of its
# `contents`), so a finding at level 2 or 3 names a line of the file, not only a path.
# `load` is the shared loader (load.nix), applied by eval.rs before the arguments.
load:
{ fragment, nixpkgsLib ? "", paths }:
let
  lib = if nixpkgsLib == "" then throw "kcore: no nixpkgs lib" else import (/. + nixpkgsLib);
  loaded = load { inherit fragment lib; hasLib = nixpkgsLib != ""; };
  m = loaded.module ({ config = { }; options = { }; } // (if nixpkgsLib == "" then { } else { inherit lib; }));
  plain = v: builtins.isAttrs v && !(v ? _type);
  top = if plain m && m ? config && !(m ? disko) then m.config else m;
  flat =
    v:
    if builtins.isAttrs v && v ? _type then
      builtins.concatMap flat (
        if v._type == "merge" then v.contents else if v ? content then [ v.content ] else [ ]
      )
    else
      [ v ];
  step =
    acc: name:
    let
      hits = builtins.filter (x: builtins.isAttrs x && x ? ${name}) (builtins.concatMap flat acc.vals);
    in
    if builtins.length hits == 0 then
      acc // { vals = [ ]; }
    else
      {
        vals = map (x: x.${name}) hits;
        pos = builtins.unsafeGetAttrPos name (builtins.head hits);
      };
  find = path: (builtins.foldl' step { vals = [ top ]; pos = null; } path).pos;
in
map find (builtins.fromJSON paths)
