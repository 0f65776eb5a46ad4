# Day 2: `kctl node apply-disko` adds an extra virtual disk to a controller-managed node as a
# new volume mount (/var/lib/kcore/volumes1), after a dry run whose plan hash the apply presents.
{ self }:
{
  name = "kcore-apply-disko";

  nodes.node =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      virtualisation.emptyDiskImages = [ 1024 ];
      kcore.storage.managementMode = "controller-managed";
      services.kcore.agent = {
        enable = true;
        settings = {
          nodeId = "node-1";
          # Install mode keeps the test free of a PKI; the route is the same.
          mode = "install";
        };
      };
      environment.systemPackages = [ pkgs.jq ];
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
    node.wait_for_unit("kcore-agent.service")
    node.wait_for_open_port(9091)
    kctl = "kctl --node 127.0.0.1:9091 -k node"

    with subtest("the dry run plans, touches nothing"):
        plan = node.succeed(f"{kctl} apply-disko -f /etc/kcore/test/data1.nix -o json")
        node.fail("findmnt /var/lib/kcore/volumes1")

    with subtest("apply formats and mounts the new disk"):
        node.succeed(f"echo '{plan}' | jq -r .hash > /tmp/plan-hash")
        node.succeed(f"{kctl} apply-disko -f /etc/kcore/test/data1.nix --apply --plan-hash $(cat /tmp/plan-hash)")
        node.succeed("findmnt --source /dev/disk/by-partlabel/disk-data1-volumes /var/lib/kcore/volumes1")
        node.succeed("test -f /etc/kcore/disko/data1.nix || ls /etc/kcore/disko | grep -q .")

    with subtest("installer-only refuses"):
        node.succeed("echo installer-only > /etc/kcore/disko-management-mode")
        node.fail(f"{kctl} apply-disko -f /etc/kcore/test/data1.nix --apply --plan-hash $(cat /tmp/plan-hash)")
  '';
}
