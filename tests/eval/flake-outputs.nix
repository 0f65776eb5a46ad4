# Evaluates the kcore flake's `outputs` function offline with stand-in inputs, for
# rust/kcore-nixos-checks/tests (flake::*). nixpkgs' package set and `lib.nixosSystem` are not
# available here, so:
# - `nixpkgs` is nixpkgs' real `lib/` plus a `nixosSystem` that only records its arguments,
#   and `legacyPackages` built from fake-pkgs.nix whose `callPackage` really evaluates
#   pkgs/kcore/package.nix with a `buildRustPackage` that returns its arguments;
# - `disko` is a source path, its package from fake-pkgs.nix and an empty NixOS module (the
#   option it declares, `disko.devices`, is in nixos-stubs.nix).
# It returns the output names and what the flake glue gives the modules.
{
  nixpkgsLib,
  configJSON ? "{}",
}:
let
  lib = import nixpkgsLib;
  fake = import ./fake-pkgs.nix { inherit lib; };
  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];

  pkgsFor =
    system:
    fake
    // {
      stdenv.hostPlatform.system = system;
      pkg-config = fake.coreutils // {
        name = "pkg-config";
      };
      rustPlatform.buildRustPackage = args: {
        type = "derivation";
        name = "${args.pname}-${args.version}";
        outPath = "/nix/store/00000000000000000000000000000000-${args.pname}-${args.version}";
        inherit args;
      };
      callPackage =
        fn: overrides:
        let
          f = import fn;
        in
        f ({ inherit lib; } // builtins.intersectAttrs (lib.functionArgs f) (pkgsFor system) // overrides);
    };

  nixpkgs = {
    outPath = "/nix/store/00000000000000000000000000000000-nixpkgs-source";
    lib = lib // {
      nixosSystem = args: { nixosSystemArgs = args; };
    };
    legacyPackages = lib.genAttrs systems pkgsFor;
  };
  disko = {
    outPath = "/nix/store/00000000000000000000000000000000-disko-source";
    nixosModules.disko = { };
    packages = lib.genAttrs systems (_: {
      disko = fake.disko;
    });
  };
  flake = import ../../flake.nix;
  self =
    flake.outputs {
      inherit self nixpkgs disko;
    }
    // {
      outPath = "/nix/store/00000000000000000000000000000000-kcore-source";
      inputs = {
        inherit nixpkgs disko;
      };
    };

  # The flake's nixosModules.default (modules + glue + disko's module) on the stubs.
  evaluated = lib.evalModules {
    modules = [
      ./nixos-stubs.nix
      self.nixosModules.default
      { _module.args.pkgs = pkgsFor "x86_64-linux"; }
      { config = builtins.fromJSON configJSON; }
    ];
  };
  kcore = self.packages.x86_64-linux.kcore;
in
{
  inherit (flake) description;
  nixosModules = lib.attrNames self.nixosModules;
  nixosConfigurations = lib.attrNames self.nixosConfigurations;
  packages = lib.mapAttrs (_: lib.attrNames) self.packages;
  checks = lib.mapAttrs (_: lib.attrNames) self.checks;
  overlay = lib.attrNames (self.overlays.default (pkgsFor "x86_64-linux") { });
  package = {
    inherit (kcore.args) pname version doCheck;
    lockFile = toString kcore.args.cargoLock.lockFile;
    inherit (kcore.args.meta) mainProgram;
    # `src` is not evaluated: lib.fileset needs builtins.readFileType (Nix >= 2.14), and the
    # Nix here is 2.8.
  };
  paths = {
    kcore = toString kcore;
    disko = disko.outPath;
    nixpkgs = nixpkgs.outPath;
  };
  agentConfig = evaluated.config.environment.etc."kcore/node-agent.yaml".source.text;
  agentExecStart = evaluated.config.systemd.services.kcore-agent.serviceConfig.ExecStart;
}
