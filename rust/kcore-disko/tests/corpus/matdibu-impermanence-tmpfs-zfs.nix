# source: github.com/matdibu/nix-config profiles/impermanence/disk.nix (as indexed by the code search)
# covers: tmpfs root (nodev) beside a disk; real defects: the disk has no device (its `inherit device;` is commented out) and its zfs partition names a pool "tank" the file does not declare (another file of that repository adds them)
# changed: nothing
{
  disko.devices = {
    nodev."/" = {
      fsType = "tmpfs";
      mountOptions = [
        "mode=755"
        "noatime"
      ];
    };
    disk = {
      "root" = {
        # inherit device;
        type = "disk";
        content = {
          type = "gpt";
          partitions = {
            ESP = {
              size = "500M";
              type = "EF00";
              content = {
                type = "filesystem";
                format = "vfat";
                mountpoint = "/boot";
                mountOptions = [
                  "fmask=0137"
                  "dmask=0027"
                  "noatime"
                ];
              };
            };
            zfs = {
              size = "100%";
              content = {
                type = "zfs";
                pool = "tank";
              };
            };
          };
        };
      };
    };
  };
}
