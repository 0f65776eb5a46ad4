//! Typed runners for the external programs kcore drives (`nix-instantiate`, `nix`,
//! `nixos-rebuild`, `disko`, `systemd-run`, `lsblk`, ...): argument vectors only, never a
//! shell. Also Nix string escaping and pinned flake URLs.
