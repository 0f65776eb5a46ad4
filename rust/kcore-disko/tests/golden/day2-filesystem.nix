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
            volumes = {
              size = "100%";
              content = {
                type = "filesystem";
                format = "ext4";
                mountpoint = "/var/lib/kcore/volumes3";
              };
            };
          };
        };
      };
    };
  };
}
