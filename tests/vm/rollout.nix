# A real ClusterUpdate (docs/rollouts.md) through kctl, the controller and the agent, on one
# machine that is both the controller's host and the rollout's node (a controller's own
# node in the rollout): a local fleet flake with three revisions pinned by commit
# (`git+file:///srv/fleet?rev=<sha>`), the machine installed at the first; then
# `kctl update cluster plan`, `apply` of the second (the agent prepares it with `nix build`
# and activates it with switch-to-configuration in a transient unit, the health gate
# passes), and `apply` of the third, whose activation script fails: the agent reverts to the
# second on its own and the rollout halts.
#
# The fleet's configuration imports kcore's own modules the way the machine does (this
# flake as the fleet's `kcore` input, with lib.nix's controller and agent roles), so the
# new generations keep the controller and the agent. Modelled on nixpkgs' nixos-rebuild
# tests (`system.includeBuildDependencies`, no binary cache) and driven with the test
# driver's `succeed`/`wait_until_succeeds` (nixos/lib/test-driver). activation.mode is
# `switch`: the fleet's initrd differs from the one the VM booted, and a reboot of the VM
# under test is not what this test is about (trial boots are covered by the Rust rig).
{ self }:
let
  vm = import ./lib.nix { inherit self; };
  # The nixpkgs and disko this flake (and so the test VM) is built from, also the fleet's.
  nixpkgs = self.inputs.nixpkgs.outPath;
  disko = self.inputs.disko.outPath;
in
{
  name = "kcore-rollout";

  nodes.machine =
    {
      lib,
      modulesPath,
      ...
    }:
    {
      imports = [
        "${modulesPath}/profiles/installation-device.nix"
        "${modulesPath}/profiles/base.nix"
        (import ./fixtures/rollout-roles.nix { inherit self; })
      ];
      nix.settings = {
        substituters = lib.mkForce [ ];
        experimental-features = [
          "nix-command"
          "flakes"
        ];
      };
      system.includeBuildDependencies = true;
      system.extraDependencies = [
        nixpkgs
        disko
        self.outPath
      ];
      virtualisation = {
        cores = 2;
        memorySize = 4096;
      };
    };

  testScript =
    let
      # The fleet: kcore's modules from this flake (its inputs following the fleet's, all
      # local paths, so locking needs no network), the machine's generated hardware
      # configuration, and a configuration.nix per revision.
      flake = builtins.toFile "flake.nix" ''
        {
          inputs = {
            nixpkgs.url = "path:${nixpkgs}";
            disko = {
              url = "path:${disko}";
              inputs.nixpkgs.follows = "nixpkgs";
            };
            kcore = {
              url = "path:${self}";
              inputs.nixpkgs.follows = "nixpkgs";
              inputs.disko.follows = "disko";
            };
          };
          outputs =
            { nixpkgs, kcore, ... }:
            {
              nixosConfigurations.machine = nixpkgs.lib.nixosSystem {
                specialArgs = { inherit kcore; };
                modules = [
                  ./configuration.nix
                  ./hardware-configuration.nix
                  ./kcore.nix
                  "''${nixpkgs}/nixos/modules/testing/test-instrumentation.nix"
                ];
              };
            };
        }
      '';
      # The machine's own roles, from the fleet's kcore input.
      kcoreNix = builtins.toFile "kcore.nix" ''
        { kcore, ... }:
        {
          imports = [ (import "''${kcore}/tests/vm/fixtures/rollout-roles.nix" { self = kcore; }) ];
        }
      '';
      # One revision: /etc/fleet-version says which; `broken` adds an activation script
      # that fails, so switch-to-configuration exits 2.
      configuration =
        version: broken:
        builtins.toFile "configuration.nix" ''
          {
            boot.loader.grub = {
              enable = true;
              device = "/dev/vda";
              forceInstall = true;
            };
            documentation.enable = false;
            nix.settings.experimental-features = [ "nix-command" "flakes" ];
            environment.etc."fleet-version".text = "${version}";
            ${if broken then ''system.activationScripts.kcoreFleetBroken.text = "false";'' else ""}
          }
        '';
      rollout = name: builtins.toFile "${name}.yaml.in" ''
        kind: ClusterUpdate
        metadata: { name: ${name} }
        spec:
          target: { version: "${name}", flake_ref: "git+file:///srv/fleet", flake_rev: "@REV@" }
          selector: { node_ids: [machine] }
          strategy: { strategy_type: one-at-a-time }
          activation: { mode: switch, health_timeout_seconds: 300 }
          approval_policy: auto
          max_failures: 0
      '';
    in
    ''
      ${vm.helpers}
      import json

      machine.start()
      machine.wait_for_unit("multi-user.target")

      def commit(version_file, message):
          machine.copy_from_host(version_file, "/srv/fleet/configuration.nix")
          machine.succeed(f"git -C /srv/fleet add -A && git -C /srv/fleet commit -q -m {message}")
          return machine.succeed("git -C /srv/fleet rev-parse HEAD").strip()

      def phase(name):
          # `get` exits 1 for a halted rollout; the JSON is printed all the same.
          _, out = machine.execute(f"kctl update cluster get {name} -o json")
          return json.loads(out).get("status", {}).get("phase") if out.strip() else None

      def write(name, template, rev):
          machine.copy_from_host(template, f"/tmp/{name}.yaml.in")
          machine.succeed(f"sed 's/@REV@/{rev}/' /tmp/{name}.yaml.in > /tmp/{name}.yaml")

      with subtest("a local fleet flake with three revisions, the third broken"):
          machine.succeed("mkdir -p /srv/fleet && git -C /srv/fleet init -q")
          machine.succeed("git -C /srv/fleet config user.email ops@example.org && git -C /srv/fleet config user.name ops")
          machine.succeed("nixos-generate-config --dir /srv/fleet && rm /srv/fleet/configuration.nix")
          machine.copy_from_host("${flake}", "/srv/fleet/flake.nix")
          machine.copy_from_host("${kcoreNix}", "/srv/fleet/kcore.nix")
          machine.succeed("git -C /srv/fleet add -A && nix flake lock /srv/fleet")
          rev1 = commit("${configuration "1" false}", "v1")
          rev2 = commit("${configuration "2" false}", "v2")
          rev3 = commit("${configuration "3" true}", "v3")

      with subtest("the machine runs revision 1, then its controller and agent start"):
          machine.succeed(f"nixos-rebuild switch --flake 'git+file:///srv/fleet?rev={rev1}#machine'")
          assert machine.succeed("cat /etc/fleet-version") == "1"
          start_controller(machine)
          start_agent(machine, machine, "machine")
          machine.wait_until_succeeds("kctl get node machine | grep -qw Ready", timeout=120)

      with subtest("plan revision 2: one target, its host evaluated on the node"):
          write("r2", "${rollout "r2"}", rev2)
          plan = json.loads(machine.succeed("kctl update cluster plan -f /tmp/r2.yaml -o json"))
          assert plan["waves"] == [["machine"]], plan
          node = plan["nodes"][0]["node"]
          assert node["hostExists"] and node["targetSystem"].startswith("/nix/store/"), plan
          # The plan changed nothing.
          assert machine.succeed("cat /etc/fleet-version") == "1"

      with subtest("apply revision 2: prepared, switched, healthy"):
          machine.succeed("kctl update cluster apply -f /tmp/r2.yaml")
          machine.wait_until_succeeds("test \"$(kctl update cluster get r2 -o json | jq -r .status.phase)\" = succeeded", timeout=1800)
          assert machine.succeed("cat /etc/fleet-version") == "2"
          assert machine.succeed("readlink -f /run/current-system") == machine.succeed("readlink -f /nix/var/nix/profiles/system")

      with subtest("apply revision 3: its activation fails, the node reverts, the rollout halts"):
          write("r3", "${rollout "r3"}", rev3)
          machine.succeed("kctl update cluster apply -f /tmp/r3.yaml")
          machine.wait_until_succeeds("test \"$(kctl update cluster get r3 -o json | jq -r .status.phase)\" = halted", timeout=1800)
          assert phase("r3") == "halted"
          assert machine.succeed("cat /etc/fleet-version") == "2"
          out = machine.fail("kctl update cluster get r3")
          assert "reverted" in out and "exited 2" in out, out
    '';
}
