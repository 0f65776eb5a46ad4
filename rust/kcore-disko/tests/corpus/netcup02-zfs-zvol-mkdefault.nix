# source: github.com/pbek/nixcfg hosts/netcup02/disk-config.zfs.nix @ 0daa6c457575ec671f6791c9e24347035f341026
# covers: lib.mkDefault wrapper, hybrid BIOS (EF02) + EFI, ZFS datasets and a zvol (no content), pool postCreateHook
# changed: nothing
{ lib, ... }:
{
  disko.devices = {
    disk.disk1 = {
      device = lib.mkDefault "/dev/vda";
      type = "disk";
      content = {
        type = "gpt";
        partitions = {
          boot = {
            name = "boot";
            size = "1M";
            type = "EF02";
          };
          esp = {
            name = "ESP";
            size = "500M";
            type = "EF00";
            content = {
              type = "filesystem";
              format = "vfat";
              mountpoint = "/boot";
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
    zpool = {
      zroot = {
        type = "zpool";
        rootFsOptions = {
          compression = "zstd";
          "com.sun:auto-snapshot" = "false";
        };
        postCreateHook = "zfs snapshot zroot@blank";

        datasets = {
          root = {
            type = "zfs_fs";
            mountpoint = "/";
            options = {
              mountpoint = "legacy";
            };
          };
          home = {
            type = "zfs_fs";
            mountpoint = "/home";
            options = {
              mountpoint = "legacy";
            };
          };
          nix = {
            type = "zfs_fs";
            mountpoint = "/nix";
            options = {
              mountpoint = "legacy";
            };
          };
          docker = {
            type = "zfs_fs";
            mountpoint = "/var/lib/docker/volumes";
            options = {
              mountpoint = "legacy";
            };
          };
          swap = {
            type = "zfs_volume";
            size = "2G";
            options = {
              logbias = "throughput";
              "com.sun:auto-snapshot" = "false";
              sync = "always";
              primarycache = "metadata";
            };
          };
        };
      };
    };
  };
}
