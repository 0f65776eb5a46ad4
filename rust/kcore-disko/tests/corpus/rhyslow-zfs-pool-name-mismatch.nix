# source: github.com/ckgxrg-salt/dotfiles rhyslow/disko.nix (as indexed by the code search)
# covers: ZFS, swap partition, quoted names; a real defect: the partition joins pool "neoradilopa" but the pool declared is "rhyslow" (so that pool has no member)
# changed: nothing
# kctl-stricter: which this fragment does not define | disko evaluates it; its script would fail at format time, as no pool "neoradilopa" is created
{ ... }:
#========== Disks ==========#
{
  disko.devices = {
    # Physical disks
    disk = {
      "nvme" = {
        type = "disk";
        device = "/dev/nvme0n1";
        content = {
          type = "gpt";
          partitions = {
            "ESP" = {
              size = "512M";
              type = "EF00";
              content = {
                type = "filesystem";
                format = "vfat";
                mountpoint = "/boot";
                mountOptions = [
                  "fmask=0022"
                  "dmask=0022"
                ];
              };
            };
            "SWAP" = {
              size = "34G";
              content = {
                type = "swap";
              };
            };
            "NeoRadilopa" = {
              size = "100%";
              content = {
                type = "zfs";
                pool = "neoradilopa";
              };
            };
          };
        };
      };
    };

    # Primary zpool
    zpool = {
      "rhyslow" = {
        type = "zpool";
        options = {
          cachefile = "none";
          ashift = "12";
        };
        rootFsOptions = {
          acltype = "posix";
          compression = "zstd";
          reservation = "1G";
          xattr = "sa";
        };
        mountpoint = "/";

        datasets = {
          "home" = {
            type = "zfs_fs";
            mountpoint = "/home";
          };
          "nix" = {
            type = "zfs_fs";
            mountpoint = "/nix";
          };
          "var" = {
            type = "zfs_fs";
            mountpoint = "/var";
          };
        };
      };
    };
  };
}
