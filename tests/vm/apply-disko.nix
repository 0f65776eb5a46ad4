# Day 2: `kctl node apply-disko` turns an extra virtual disk (/dev/vdb) of a
# controller-managed node into a new volume mount, /var/lib/kcore/volumes1. The dry run
# touches nothing; `installer-only` refuses the apply.
{ self }:
let
  vm = import ./lib.nix { inherit self; };
in
{
  name = "kcore-apply-disko";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [
        vm.controller
        (vm.agent "machine" "machine:9090")
      ];
      virtualisation.emptyDiskImages = [ 1024 ];
      # disko's CLI builds its format script for the fragment inside the VM, which has no
      # binary cache. Build that script here, as disko's own VM tests do (lib/tests.nix), with
      # the arguments the agent's `disko --mode format,mount --root-mountpoint / FILE` passes to
      # disko's cli.nix, so the VM's store already holds it (and its gptfdisk, parted, ... ).
      # The build dependencies cover what differs if the in-VM evaluation does not hit the
      # same derivation (as nixpkgs' offline rebuild tests do).
      system.extraDependencies = [
        (import "${self.inputs.disko}/cli.nix" {
          inherit pkgs;
          mode = "format,mount";
          rootMountPoint = "/";
          diskoFile = ./fixtures/data1.nix;
        })
      ];
      system.includeBuildDependencies = true;
      virtualisation.memorySize = 2048;
      kcore.storage.managementMode = "controller-managed";
      # What kcore-disko renders for the generic node's second data disk (checked against the
      # renderer by kcore-nixos-checks).
      environment.etc."kcore/test/data1.nix".source = ./fixtures/data1.nix;
    };

  testScript = ''
    ${vm.helpers}
    machine.start()
    start_controller(machine)
    start_agent(machine, machine, "machine")
    apply = "kctl --node machine:9091 node apply-disko -f /etc/kcore/test/data1.nix"

    with subtest("the dry run plans and touches nothing"):
        machine.succeed(apply)
        machine.fail("findmnt /var/lib/kcore/volumes1")

    with subtest("apply formats and mounts the new disk and keeps the fragment"):
        machine.succeed(f"{apply} --apply")
        machine.succeed("findmnt /var/lib/kcore/volumes1")
        # The agent keeps the applied fragment under settings.disko.stateDir, named after
        # the devices it declares.
        machine.succeed("grep -qF '\"/var/lib/kcore/volumes1\"' /var/lib/kcore/disko/data1.nix")

    with subtest("installer-only refuses every apply"):
        machine.succeed("echo installer-only > /var/lib/kcore/disko-management-mode")
        machine.fail(f"{apply} --apply")
  '';
}
