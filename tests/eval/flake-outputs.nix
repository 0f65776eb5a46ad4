# Evaluates the kcore flake's real exports offline with stand-in inputs, for
# rust/kcore-nixos-checks/tests (flake::*, hosts::*, vm::*). nixpkgs' package set and its NixOS
# modules are not available here, only nixpkgs' real `lib/` (the module system itself), so:
# - `nixpkgs` is that `lib/` plus a `nixosSystem` that evaluates the host's modules with
#   `lib.evalModules` against nixos-stubs.nix (the NixOS options kcore does not declare, typed
#   and merged as nixpkgs does), `modulesPath` = modules-path/ (stand-ins of the nixpkgs
#   profiles the hosts import), and `legacyPackages` from fake-pkgs.nix whose `callPackage`
#   really evaluates pkgs/kcore/package.nix with a `buildRustPackage` that returns its
#   arguments;
# - `disko` is a source path, its package from fake-pkgs.nix and disko-stub.nix as its NixOS
#   module.
#
#   nix-instantiate --eval --strict --json --readonly-mode tests/eval/flake-outputs.nix \
#     --argstr nixpkgsLib /path/to/nixpkgs/lib --argstr select summary
#
# `select`: `summary` (output names, the package's arguments, what the glue hands the
# modules), `modules` (every non-empty combination of nixosModules, each under tryEval; `only
# = "a,b"` evaluates one combination without it, to see its error), `hosts` (each
# nixosConfiguration), `vmTests` (each node of each tests/vm test, and its specialisations).
# `configJSON` is added to the `summary` evaluation and to every host.
{
  nixpkgsLib,
  configJSON ? "{}",
  select ? "summary",
  only ? "",
}:
let
  lib = import nixpkgsLib;
  fake = import ./fake-pkgs.nix { inherit lib; };
  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];
  extraConfig = {
    config = builtins.fromJSON configJSON;
  };

  pkgsFor =
    system:
    fake
    // {
      stdenv = fake.stdenv // {
        hostPlatform.system = system;
      };
      rustPlatform.buildRustPackage = args: {
        type = "derivation";
        name = "${args.pname}-${args.version}";
        outPath = "/nix/store/00000000000000000000000000000000-${args.pname}-${args.version}";
        # mkDerivation keeps `version` on the derivation; the image's tag reads it.
        inherit (args) version;
        inherit args;
      };
      callPackage =
        fn: overrides:
        let
          f = import fn;
        in
        # As nixpkgs' callPackage: only the arguments the function declares (lib included).
        f (builtins.intersectAttrs (lib.functionArgs f) ({ inherit lib; } // pkgsFor system) // overrides);
    };
  pkgs = pkgsFor "x86_64-linux";

  # What NixOS adds to every system, reduced to the stubs.
  nixosBase = [
    ./nixos-stubs.nix
    { _module.args.pkgs = pkgs; }
  ];
  nixosSpecialArgs = {
    modulesPath = toString ./modules-path;
  };
  evalNixos =
    {
      modules,
      specialArgs ? { },
    }:
    lib.evalModules {
      modules = nixosBase ++ modules;
      specialArgs = nixosSpecialArgs // specialArgs;
    };

  nixpkgs = {
    outPath = "/nix/store/00000000000000000000000000000000-nixpkgs-source";
    lib = lib // {
      nixosSystem =
        args:
        evalNixos {
          modules = args.modules ++ [ extraConfig ];
          specialArgs = args.specialArgs or { };
        };
    };
    legacyPackages = lib.genAttrs systems pkgsFor;
  };
  disko = {
    outPath = "/nix/store/00000000000000000000000000000000-disko-source";
    nixosModules.disko = ./disko-stub.nix;
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

  failedAssertions = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  names = map (p: p.name);
  unitsOf =
    config:
    lib.mapAttrs (_: u: {
      inherit (u)
        wantedBy
        after
        before
        requires
        wants
        environment
        serviceConfig
        unitConfig
        ;
      path = map (p: p.name or p) u.path;
    }) (lib.filterAttrs (n: _: lib.hasPrefix "kcore-" n) config.systemd.services);
  etcText = config: lib.mapAttrs (_: e: e.source.text or null) config.environment.etc;

  # --- every combination of nixosModules -------------------------------------------------
  moduleNames = lib.attrNames self.nixosModules;
  subsets = lib.foldr (
    n: acc: acc ++ map (s: [ n ] ++ s) acc
  ) [ [ ] ] moduleNames;
  # Turns on whatever the combination declares, with the least configuration each needs.
  probe =
    { options, ... }:
    {
      config = lib.mkMerge [
        (lib.optionalAttrs (options ? services.kcore.agent) {
          services.kcore.agent = {
            enable = true;
            settings = {
              nodeId = "node-1";
              mode = "install";
            };
          };
        })
        (lib.optionalAttrs (options ? services.kcore.controller) {
          services.kcore.controller = {
            enable = true;
            settings = {
              controllerId = "ctl1";
              clusterName = "lab";
            };
          };
        })
        (lib.optionalAttrs (options ? kcore.diskEncryption) {
          kcore.diskEncryption = {
            enable = true;
            device = "/dev/disk/by-partlabel/disk-os-root";
          };
        })
        (lib.optionalAttrs (options ? kcore.storage.enable) {
          kcore.storage.enable = true;
        })
      ];
    };
  evalCombination =
    combo:
    let
      ev = evalNixos {
        modules = [
          ./disko-stub.nix
          probe
        ]
        ++ map (n: self.nixosModules.${n}) combo;
      };
      inherit (ev) config options;
    in
    {
      failed = failedAssertions config;
      agentPackage =
        if options ? services.kcore.agent then config.services.kcore.agent.package.name else null;
      controllerPackage =
        if options ? services.kcore.controller then
          config.services.kcore.controller.package.name
        else
          null;
      etc = etcText config;
      units = unitsOf config;
      tmpfiles = config.systemd.tmpfiles.rules;
    };
  combinations = map (
    combo:
    let
      r = builtins.tryEval (
        let
          v = evalCombination combo;
        in
        builtins.deepSeq v v
      );
    in
    {
      modules = combo;
      inherit (r) success;
      value = if r.success then r.value else null;
    }
  ) (lib.filter (s: s != [ ]) subsets);

  # --- hosts ------------------------------------------------------------------------------
  hostReport =
    _: host:
    let
      inherit (host) config options;
    in
    {
      failed = failedAssertions config;
      inherit (config) warnings;
      hostId = config.networking.hostId;
      hostName = config.networking.hostName;
      etc = etcText config;
      agentConfig = (etcText config)."kcore/node-agent.yaml" or null;
      controllerConfig = (etcText config)."kcore/controller.yaml" or null;
      units = unitsOf config;
      zfsExtraPools = config.boot.zfs.extraPools;
      # kcore.storage's import script of runtime-mode zfs systems (writeShellScript's text).
      zfsImportScript = config.systemd.services.kcore-zfs-import.serviceConfig.ExecStart.text or null;
      luks = config.boot.initrd.luks.devices;
      initrdSystemd = config.boot.initrd.systemd.enable;
      initrdModules = config.boot.initrd.availableKernelModules;
      systemdBootEditor = config.boot.loader.systemd-boot.editor;
      ssh = config.services.openssh.settings // {
        inherit (config.services.openssh) enable;
      };
      rootKeys = config.users.users.root.openssh.authorizedKeys.keys or [ ];
      diskoDevices = config.disko.devices;
      systemPackages = names config.environment.systemPackages;
      allowedTCPPorts = config.networking.firewall.allowedTCPPorts;
      lvmThin = config.services.lvm.boot.thin.enable;
      fileSystems = lib.mapAttrs (_: f: { inherit (f) device fsType options; }) config.fileSystems;
      users = lib.mapAttrs (_: u: { inherit (u) isSystemUser group; }) config.users.users;
      tmpfiles = config.systemd.tmpfiles.rules;
      # The `--defaults` file of a runtime-mode agent (its restart trigger), as text.
      agentDefaults =
        if options ? services.kcore.agent && config.services.kcore.agent.nodeConfig == "runtime" then
          (lib.head config.systemd.services.kcore-agent.restartTriggers).text
        else
          null;
    }
    // lib.optionalAttrs (options ? image.baseName) {
      imageBaseName = config.image.baseName;
      storeContents = builtins.length config.isoImage.storeContents;
    };

  # --- VM tests ---------------------------------------------------------------------------
  vmTestFiles = lib.filterAttrs (n: t: t == "regular" && lib.hasSuffix ".nix" n && n != "lib.nix") (
    builtins.readDir ../vm
  );
  nodeReport =
    ev:
    let
      inherit (ev) config;
    in
    {
      failed = failedAssertions config;
      units = lib.mapAttrs (_: u: u.wantedBy) (
        lib.filterAttrs (n: _: lib.hasPrefix "kcore-" n) config.systemd.services
      );
      # Forces the packages (a `types.package` defined twice fails here) and each unit.
      systemPackages = names config.environment.systemPackages;
      execStart = lib.mapAttrs (_: u: u.serviceConfig.ExecStart or null) (
        lib.filterAttrs (n: _: lib.hasPrefix "kcore-" n) config.systemd.services
      );
      luks = config.boot.initrd.luks.devices;
      ovmf = config.virtualisation.efi.OVMF.name;
      tpm = config.virtualisation.tpm.enable;
      initrdModules = config.boot.initrd.availableKernelModules;
      extraDependencies = builtins.length (
        lib.concatMap (d: d.value) ev.options.system.extraDependencies.definitionsWithLocations
      );
      specialisations = lib.mapAttrs (
        _: s:
        let
          sev = ev.extendModules { modules = [ s.configuration ]; };
        in
        {
          failed = failedAssertions sev.config;
          luks = sev.config.boot.initrd.luks.devices;
          initrdSystemd = sev.config.boot.initrd.systemd.enable;
          units = lib.attrNames (
            lib.filterAttrs (n: _: lib.hasPrefix "kcore-" n) sev.config.systemd.services
          );
        }
      ) config.specialisation;
    };
  vmTests = lib.mapAttrs' (
    file: _:
    let
      t = import (../vm + "/${file}") { inherit self; };
    in
    lib.nameValuePair (lib.removeSuffix ".nix" file) {
      inherit (t) name testScript;
      nodes = lib.mapAttrs (
        _: node:
        nodeReport (evalNixos {
          modules = [
            ./qemu-vm-stub.nix
            node
          ];
        })
      ) t.nodes;
    }
  ) vmTestFiles;

  # --- summary ----------------------------------------------------------------------------
  evaluated = evalNixos {
    modules = [
      ./disko-stub.nix
      self.nixosModules.default
      extraConfig
    ];
  };
  kcore = self.packages.x86_64-linux.kcore;
  summary = {
    inherit (flake) description;
    nixosModules = moduleNames;
    nixosConfigurations = lib.attrNames self.nixosConfigurations;
    packages = lib.mapAttrs (_: lib.attrNames) self.packages;
    checks = lib.mapAttrs (_: lib.attrNames) self.checks;
    overlay = lib.attrNames (self.overlays.default pkgs { });
    package = {
      inherit (kcore.args)
        pname
        version
        doCheck
        cargoBuildFlags
        cargoTestFlags
        checkFlags
        postFixup
        postInstall
        ;
      nativeBuildInputs = names kcore.args.nativeBuildInputs;
      lockFile = toString kcore.args.cargoLock.lockFile;
      inherit (kcore.args.meta) mainProgram;
      # `src` is not evaluated: lib.fileset needs builtins.readFileType (Nix >= 2.14), and the
      # Nix here is 2.8.
    };
    provisionDiskImage =
      let
        image = self.packages.x86_64-linux.provision-disk-image;
      in
      {
        inherit (image.args) name tag config;
        contents = map toString image.args.contents;
        kcore = toString kcore;
      };
    # Cargo workspace member directory -> package name (for package::*).
    workspace = lib.genAttrs (lib.importTOML ../../rust/Cargo.toml).workspace.members (
      m: (lib.importTOML (../../rust + "/${m}/Cargo.toml")).package.name
    );
    paths = {
      kcore = toString kcore;
      disko = disko.outPath;
      nixpkgs = nixpkgs.outPath;
    };
    # `nix build .#installer-iso`: the ISO's name and its store contents (the stub's text).
    installerIso = {
      inherit (self.packages.x86_64-linux.installer-iso) name text;
    };
    agentConfig = evaluated.config.environment.etc."kcore/node-agent.yaml".source.text or null;
    agentExecStart = evaluated.config.systemd.services.kcore-agent.serviceConfig.ExecStart or null;
  };
in
if select == "summary" then
  summary
else if select == "modules" then
  if only != "" then evalCombination (lib.splitString "," only) else combinations
else if select == "hosts" then
  lib.mapAttrs hostReport self.nixosConfigurations
else if select == "vmTests" then
  vmTests
else
  throw "flake-outputs.nix: unknown select ${builtins.toJSON select}"
