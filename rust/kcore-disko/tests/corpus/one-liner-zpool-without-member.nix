# source: github.com/vennsofar/nix-one-liner zfs-over-legacy.nix (as indexed by the code search)
# covers: swap partition with resumeDevice, a ZFS pool; a real defect: no partition joins pool "zroot" (the last one is `type = "filesystem"; format = "zfs"`)
# changed: nothing
# kctl-stricter: has no member | disko evaluates it, but its script would run `zpool create zroot` with no devices
{
  disko.devices = {
    disk = {
      main = {
        type = "disk";
        device = "/dev/sda";
        content = {
          type = "gpt";
          partitions = {
            ESP = {
              size = "1500M";
              type = "EF00";
              content = {
                type = "filesystem";
                format = "vfat";
                mountpoint = "/boot";
                mountOptions = [ "umask=0077" ];
              };
            };
			swap = {
				size = "30G";
				content = {
					type = "swap";
					resumeDevice = true;
				};
			};
            primary = {
              size = "100%";
              content = {
                type = "filesystem";
                format = "zfs";
              };
            };
          };
        };
      };
    };
    zpool = {
      zroot = {
        type = "zpool";
        datasets = {
          "root" = {
            type = "zfs_fs";
            options.mountpoint = "none";
          };
          "root/zfs_fs" = {
            type = "zfs_fs";
            mountpoint = "/zfs_fs";
            options."com.sun:auto-snapshot" = "true";
          };
        };
      };
    };
  };
}
