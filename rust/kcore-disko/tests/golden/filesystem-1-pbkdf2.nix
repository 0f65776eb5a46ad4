# Rendered by kcore-disko from a node's storage spec. Do not edit: re-render instead.
{
  disko.devices = {
    disk = {
      # OS disk: GPT, 512M ESP on /boot, the rest one LUKS2 container holding ext4 /.
      os = {
        type = "disk";
        device = "/dev/disk/by-id/ata-Samsung_SSD_870_S4EWNX0R100001";
        content = {
          type = "gpt";
          partitions = {
            ESP = {
              type = "EF00";
              size = "512M";
              content = {
                type = "filesystem";
                format = "vfat";
                mountpoint = "/boot";
                mountOptions = [ "umask=0077" ];
              };
            };
            root = {
              size = "100%";
              content = {
                type = "luks";
                name = "crypted";
                extraFormatArgs = [ "--type" "luks2" "--pbkdf" "pbkdf2" "--pbkdf-force-iterations" "1000" ];
                # Formatted with the passphrase in passwordFile; the TPM2 key (PCRs 0+2+7)
                # is enrolled at install (kctl node install) or with kcore-tpm2-reenroll,
                # never at boot: docs/storage.md "LUKS keys".
                passwordFile = "/tmp/kcore-luks-install.key";
                settings = {
                  allowDiscards = true;
                  crypttabExtraOpts = [ "tpm2-device=auto" ];
                };
                content = {
                  type = "filesystem";
                  format = "ext4";
                  mountpoint = "/";
                };
              };
            };
          };
        };
      };
      # A data disk: one GPT partition over the whole disk.
      data0 = {
        type = "disk";
        device = "/dev/disk/by-id/ata-WDC_WD20EFRX_WD-WCC4M0000002";
        content = {
          type = "gpt";
          partitions = {
            volumes = {
              size = "100%";
              content = {
                type = "filesystem";
                format = "ext4";
                mountpoint = "/var/lib/kcore/volumes";
              };
            };
          };
        };
      };
    };
  };
}
