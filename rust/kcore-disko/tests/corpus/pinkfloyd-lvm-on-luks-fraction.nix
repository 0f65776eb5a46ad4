# source: github.com/camillemndn/infra machines/pinkfloyd/disko.nix (as indexed by the code search)
# covers: LVM on LUKS, `lvm_vg.pool = ...` dotted form, a fractional LV size "16.5G"
# changed: nothing
{
  disko.devices = {
    disk.main = {
      type = "disk";
      device = "/dev/disk/by-id/nvme-SM2P41C3_NVMe_ADATA_512GB_2M242L1E8EF1";
      content = {
        type = "gpt";
        partitions = {
          ESP = {
            size = "512M";
            type = "EF00";
            content = {
              type = "filesystem";
              format = "vfat";
              mountpoint = "/boot";
              mountOptions = [ "umask=0077" ];
            };
          };

          luks = {
            size = "100%";
            content = {
              type = "luks";
              name = "crypted";
              passwordFile = "/tmp/secret.key";
              settings.allowDiscards = true;
              content = {
                type = "lvm_pv";
                vg = "pool";
              };
            };
          };
        };
      };
    };

    lvm_vg.pool = {
      type = "lvm_vg";
      lvs = {
        root = {
          size = "100%";
          content = {
            type = "filesystem";
            format = "ext4";
            mountpoint = "/";
            mountOptions = [ "defaults" ];
          };
        };

        swap = {
          size = "16.5G";
          content.type = "swap";
        };
      };
    };
  };
}
