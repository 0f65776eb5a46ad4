//! Offline evaluation checks of kcore's NixOS modules (`modules/`) against nixpkgs' lib.
//! The library is empty: the checks live in `tests/`.
