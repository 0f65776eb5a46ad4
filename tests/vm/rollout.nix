# A rollout to a second revision of a local flake, as a node performs it: prepare
# (`nixos-rebuild build`) and activate (`nixos-rebuild switch`) with the flake URL pinned to
# the revision (`git+file://...?rev=<rev>#<host>`, DESIGN.md "Rollouts"), then revert to the
# previous generation. The ClusterUpdate API that drives these steps across a fleet is not
# part of this test; this pins the Nix side a node runs. Modelled on nixpkgs'
# nixos-rebuild tests: the VM carries the build dependencies of its own system so it can
# build the fleet's generations without a binary cache.
{ self }:
let
  # The nixpkgs this flake (and so the test VM) is built from, also the fleet's.
  nixpkgs = self.inputs.nixpkgs.outPath;
in
{
  name = "kcore-rollout";

  nodes.machine =
    {
      lib,
      pkgs,
      modulesPath,
      ...
    }:
    {
      imports = [
        "${modulesPath}/profiles/installation-device.nix"
        "${modulesPath}/profiles/base.nix"
      ];
      nix.settings = {
        substituters = lib.mkForce [ ];
        experimental-features = [
          "nix-command"
          "flakes"
        ];
      };
      system.includeBuildDependencies = true;
      system.extraDependencies = [ nixpkgs ];
      environment.systemPackages = [ pkgs.git ];
      virtualisation = {
        cores = 2;
        memorySize = 4096;
      };
    };

  testScript =
    let
      # The fleet's flake: one host, built from the machine's generated hardware config and
      # a configuration.nix whose only change between revisions is /etc/fleet-version.
      flake = builtins.toFile "flake.nix" ''
        {
          inputs.nixpkgs.url = "path:${nixpkgs}";
          outputs =
            { nixpkgs, ... }:
            {
              nixosConfigurations.machine = nixpkgs.lib.nixosSystem {
                modules = [
                  ./configuration.nix
                  ./hardware-configuration.nix
                  "''${nixpkgs}/nixos/modules/testing/test-instrumentation.nix"
                ];
              };
            };
        }
      '';
      configuration =
        version:
        builtins.toFile "configuration.nix" ''
          {
            boot.loader.grub = {
              enable = true;
              device = "/dev/vda";
              forceInstall = true;
            };
            documentation.enable = false;
            environment.etc."fleet-version".text = "${version}";
          }
        '';
    in
    ''
      machine.start()
      machine.succeed("udevadm settle")
      machine.wait_for_unit("multi-user.target")

      def commit(version_file, message):
          machine.copy_from_host(version_file, "/srv/fleet/configuration.nix")
          machine.succeed(f"git -C /srv/fleet add -A && git -C /srv/fleet commit -q -m {message}")
          return machine.succeed("git -C /srv/fleet rev-parse HEAD").strip()

      with subtest("a local flake with two revisions"):
          machine.succeed("mkdir -p /srv/fleet && git -C /srv/fleet init -q")
          machine.succeed("git -C /srv/fleet config user.email ops@example.org && git -C /srv/fleet config user.name ops")
          machine.succeed("nixos-generate-config --dir /srv/fleet && rm /srv/fleet/configuration.nix")
          machine.copy_from_host("${flake}", "/srv/fleet/flake.nix")
          machine.succeed("git -C /srv/fleet add -A && nix flake lock /srv/fleet")
          rev1 = commit("${configuration "1"}", "v1")
          rev2 = commit("${configuration "2"}", "v2")

      def url(rev):
          return f"'git+file:///srv/fleet?rev={rev}#machine'"

      with subtest("revision 1 is the current generation"):
          machine.succeed(f"nixos-rebuild switch --flake {url(rev1)}")
          assert machine.succeed("cat /etc/fleet-version") == "1"

      with subtest("prepare, then activate the pinned second revision"):
          machine.succeed(f"cd /tmp && nixos-rebuild build --flake {url(rev2)}")
          machine.succeed(f"nixos-rebuild switch --flake {url(rev2)}")
          assert machine.succeed("cat /etc/fleet-version") == "2"

      with subtest("revert to the previous generation"):
          machine.succeed("nixos-rebuild switch --rollback")
          assert machine.succeed("cat /etc/fleet-version") == "1"
    '';
}
