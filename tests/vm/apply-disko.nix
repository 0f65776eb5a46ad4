# Day 2: `kctl node apply-disko` turns an extra virtual disk (/dev/vdb) of a
# controller-managed node into a new volume mount, /var/lib/kcore/volumes1. The dry run
# touches nothing; `installer-only` refuses the apply.
{ self }:
let
  vm = import ./lib.nix { inherit self; };
in
{
  name = "kcore-apply-disko";

  nodes.machine = {
    imports = [
      vm.controller
      (vm.agent "machine" "machine:9090")
    ];
    virtualisation.emptyDiskImages = [ 1024 ];
    kcore.storage.managementMode = "controller-managed";
    # The fragment kcore-disko renders for a filesystem data disk at index 1.
    environment.etc."kcore/test/data1.nix".text = ''
      {
        disko.devices.disk.data1 = {
          type = "disk";
          device = "/dev/vdb";
          content = {
            type = "gpt";
            partitions.volumes = {
              size = "100%";
              content = {
                type = "filesystem";
                format = "ext4";
                mountpoint = "/var/lib/kcore/volumes1";
              };
            };
          };
        };
      }
    '';
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
        machine.succeed("ls /etc/kcore/disko | grep -q .")

    with subtest("installer-only refuses every apply"):
        machine.succeed("echo installer-only > /etc/kcore/disko-management-mode")
        machine.fail(f"{apply} --apply")
  '';
}
