# source: github.com/caden-parajuli/nix-system-config hosts/nixus/disko-config.nix @ 20e02f37628defbe169243f8a1094600f700fc40
# covers: a `let` binding around the module, ZFS mirror as an explicit `mode.topology` vdev, two ESPs
# changed: nothing
let
  harddisk1 = "/dev/disk/by-id/ata-HITACHI_HUA723020ALA640_YGKMG0WG";
  harddisk2 = "/dev/disk/by-id/ata-HITACHI_HUA723020ALA640_YGGD1LVA";
in
{
  disko.devices = {
    disk = {
      data1 = {
        type = "disk";
        device = "${harddisk1}";
        content = {
          type = "gpt";
          partitions = {
            ESP = {
              size = "1G";
              type = "EF00";
              content = {
                type = "filesystem";
                format = "vfat";
                mountpoint = "/boot";
                mountOptions = [ "umask=0077" ];
              };
            };
            zfs = {
              size = "100%";
              content = {
                type = "zfs";
                pool = "zroot";
              };
            };
          };
        };
      };

      data2 = {
        type = "disk";
        device = "${harddisk2}";
        content = {
          type = "gpt";
          partitions = {
            ESP = {
              size = "1G";
              type = "EF00";
              content = {
                type = "filesystem";
                format = "vfat";
                mountpoint = "/boot2";
                mountOptions = [ "umask=0077" ];
              };
            };
            zfs = {
              size = "100%";
              content = {
                type = "zfs";
                pool = "zroot";
              };
            };
          };
        };
      };
    };

    zpool = {
      zroot = {
        type = "zpool";
        # mode = "mirror";
        mode = {
          topology = {
            type = "topology";
            vdev = [
              {
                mode = "mirror";
                members = ["data1"
                  "data2"
                ];
              }
            ];
          };
        };

        rootFsOptions = {
          compression = "zstd";
          acltype = "posixacl";
          xattr = "sa";
          atime = "off";
          "com.sun:auto-snapshot" = "true";
        };
        options.ashift = "12";
        datasets = {
          "root" = {
            type = "zfs_fs";
            mountpoint = "/";
          };
          "root/nix" = {
            type = "zfs_fs";
            options.mountpoint = "/nix";
            mountpoint = "/nix";
          };
        };
      };
    };
  };
}
