{
  description = "kcore: install, join, store and roll out clusters of NixOS hypervisor nodes";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    disko = {
      url = "github:nix-community/disko";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      disko,
    }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The flake's store paths (kcore package, disko tool and source, nixpkgs lib) for the
      # modules, one keyed glue module per option owner; see modules/flake-inputs.nix.
      glue = import ./modules/flake-inputs.nix { inherit self disko nixpkgs; };
      # A key makes a module imported twice (e.g. `default` and `agent`) count once.
      kcoreModule = name: imports: {
        key = "kcore-nixosModules-${name}";
        inherit imports;
      };

      # Every directory under hosts/ is a nixosConfiguration of the same name.
      hostNames = lib.attrNames (
        lib.filterAttrs (_: type: type == "directory") (builtins.readDir ./hosts)
      );
      mkHost =
        name:
        lib.nixosSystem {
          modules = [
            self.nixosModules.default
            # kcore does not import disko's module itself (a consumer brings its own); the
            # example hosts use this flake's input.
            disko.nixosModules.disko
            ./hosts/${name}
          ];
          specialArgs = {
            kcoreFlake = self;
          };
        };
    in
    {
      # Each evaluates on its own and together with any other (tests: flake::*).
      # `agent` brings `kcore.storage` (the agent's `settings.storage` is derived from it);
      # `storage` is `kcore.storage` alone (disko layouts of any host, e.g. a controller).
      nixosModules = {
        default = kcoreModule "default" [
          ./modules
          glue.agent
          glue.controller
        ];
        agent = kcoreModule "agent" [
          ./modules/agent.nix
          glue.agent
        ];
        controller = kcoreModule "controller" [
          ./modules/controller.nix
          glue.controller
        ];
        storage = kcoreModule "storage" [ ./modules/storage.nix ];
        diskEncryption = kcoreModule "diskEncryption" [ ./modules/disk-encryption.nix ];
      };

      overlays.default = final: _prev: {
        kcore = final.callPackage ./pkgs/kcore/package.nix { };
      };

      packages = forAllSystems (
        pkgs:
        let
          inherit (pkgs.stdenv.hostPlatform) system;
        in
        {
          # kctl's `disko` on PATH is this flake's disko input, the revision the modules use.
          kcore = pkgs.callPackage ./pkgs/kcore/package.nix {
            inherit (disko.packages.${system}) disko;
          };
          default = self.packages.${system}.kcore;
          # provision-disk as an init-container image (docs/agent.md).
          provision-disk-image = pkgs.callPackage ./pkgs/provision-disk-image/package.nix {
            inherit (self.packages.${system}) kcore;
          };
        }
        # hosts/installer is an x86_64 system: `packages.<system>` only holds what builds
        # for <system>.
        // lib.optionalAttrs (system == "x86_64-linux") {
          installer-iso = self.nixosConfigurations.installer.config.system.build.isoImage;
        }
      );

      nixosConfigurations = lib.genAttrs hostNames mkHost;

      checks = forAllSystems (
        pkgs:
        let
          inherit (pkgs.stdenv.hostPlatform) system;
          vmTest = file: pkgs.testers.runNixOSTest (import file { inherit self; });
        in
        {
          # hosts/*/disko.nix, tests/vm/fixtures and the .nix files under rust/ (golden files,
          # fixtures) are kcore-disko's output or its test data (checked against the renderer
          # by kcore-nixos-checks), not hand-formatted. The rest is formatted by hand, nixfmt
          # being unavailable where it is developed: this check has not run yet
          # (docs/nixos.md "Linters").
          formatting =
            pkgs.runCommand "kcore-nixfmt-check" { nativeBuildInputs = [ pkgs.nixfmt ]; }
              ''
                find ${self} -name '*.nix' -not -path '*/rust/*' \
                  -not -path '*/hosts/*/disko.nix' -not -path '*/tests/vm/fixtures/*' -print0 \
                  | xargs -0 nixfmt --check
                touch $out
              '';
          inherit (self.packages.${system}) kcore;
        }
        # Every host evaluates and builds (srvos-style: each host is a check).
        // lib.optionalAttrs (system == "x86_64-linux") (
          lib.mapAttrs' (
            name: host: lib.nameValuePair "host-${name}" host.config.system.build.toplevel
          ) self.nixosConfigurations
          // {
            vm-join = vmTest ./tests/vm/join.nix;
            vm-apply-disko = vmTest ./tests/vm/apply-disko.nix;
            vm-luks-tpm2 = vmTest ./tests/vm/luks-tpm2.nix;
            vm-rollout = vmTest ./tests/vm/rollout.nix;
            vm-installed = vmTest ./tests/vm/installed.nix;
          }
        )
      );

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.kcore ];
          packages = [
            pkgs.cargo
            pkgs.clippy
            pkgs.rustfmt
            pkgs.rust-analyzer
            pkgs.nixfmt
            pkgs.qemu_kvm
          ];
        };
      });
    };
}
