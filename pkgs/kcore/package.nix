# All kcore binaries (kcore-agent, kcore-controller, kctl) from the Cargo workspace in rust/.
{
  lib,
  rustPlatform,
  pkg-config,
}:
let
  workspace = lib.importTOML ../../rust/Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "kcore";
  inherit (workspace.workspace.package) version;

  # Only the Cargo workspace, without a local build directory: a change to the modules, the
  # hosts or the docs does not rebuild the binaries.
  src = lib.fileset.toSource {
    root = ../../rust;
    fileset = lib.fileset.difference ../../rust (lib.fileset.maybeMissing ../../rust/target);
  };

  cargoLock.lockFile = ../../rust/Cargo.lock;

  # rusqlite bundles SQLite and ring builds its own assembly: only a C compiler is needed.
  nativeBuildInputs = [ pkg-config ];

  # Tests that need tools absent from the build sandbox (nix-instantiate, QEMU, nixpkgs lib)
  # print SKIP and return; the rest run here.
  doCheck = true;

  meta = {
    description = "Install, join, store and roll out clusters of NixOS hypervisor nodes";
    license = lib.licenses.mit;
    mainProgram = "kctl";
    platforms = lib.platforms.linux;
  };
}
