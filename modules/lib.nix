# Small helpers shared by the kcore modules. Imported with `import ./lib.nix { inherit lib; }`;
# not a module itself.
{ lib }:
{
  # TLS material, keys and other runtime files are referenced by absolute path and never copied
  # into the world-readable Nix store: a Nix path literal (`./node.key`) is refused by the type.
  runtimePath = lib.types.pathWith {
    inStore = false;
    absolute = true;
  };

  # A path that also appears in line-oriented files (systemd-tmpfiles rules) or unit settings:
  # limited to characters that need no quoting there (no blanks, quotes, `%` specifiers or
  # `$` variables), so nothing is spliced into those lines unchecked.
  plainPath = lib.types.strMatching "/[A-Za-z0-9._/+:@,=-]*";

  # The TCP port of a `host:port` / `[v6]:port` listen address, for `openFirewall`.
  listenPort =
    listen:
    let
      port = lib.last (lib.splitString ":" listen);
    in
    if builtins.match "[0-9]+" port == null then
      throw "kcore: cannot read a TCP port from the listen address ${builtins.toJSON listen}; use host:port"
    else
      lib.toInt port;

  # Drops `null` leaves, and attribute sets left empty by that, so that unset optional keys
  # are left to the daemon's own defaults instead of being written as `key: null` or as an
  # empty section (`tls: {}` would be a section with its required keys missing).
  dropNulls =
    let
      go =
        v:
        if builtins.isAttrs v && !(lib.isDerivation v) then
          lib.filterAttrs (_: x: x != null && x != { }) (lib.mapAttrs (_: go) v)
        else if builtins.isList v then
          map go v
        else
          v;
    in
    go;
}
