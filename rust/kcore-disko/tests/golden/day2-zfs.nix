# Rendered by kcore-disko from a node's storage spec. Do not edit: re-render instead.
{
  disko.devices = {
    disk = {
      # A data disk: one GPT partition over the whole disk.
      data3 = {
        type = "disk";
        device = "/dev/disk/by-id/ata-WDC_WD20EFRX_WD-WCC4M0000004";
        content = {
          type = "gpt";
          partitions = {
            zfs = {
              size = "100%";
              content = {
                type = "zfs";
                pool = "tank0";
              };
            };
          };
        };
      };
    };
    zpool = {
      tank0 = {
        type = "zpool";
        mode = "";
        rootFsOptions = {
          compression = "zstd";
          "com.sun:auto-snapshot" = "false";
        };
        # The pool root stays unmounted; volumes are zvols under the dataset prefix.
        datasets = {
          kcore = {
            type = "zfs_fs";
            options.mountpoint = "none";
          };
        };
      };
    };
  };
}
