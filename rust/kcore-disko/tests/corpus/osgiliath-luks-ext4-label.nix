# source: github.com/EdgarSaldivar/nixos-config hosts/osgiliath/disko.nix (as indexed by the code search)
# covers: LUKS with an absolute passwordFile and ext4 inside, a partition `label`
# changed: nothing
 {
  disko.devices = {
    disk = {
      my-disk = {
        device = "/dev/vda";
        type = "disk";
        content = {
          type = "gpt";
          partitions = {
            BOOT = {
              type = "EF00";
              size = "512M";
              label = "BOOT";
              content = {
                type = "filesystem";
                format = "vfat";
                mountpoint = "/boot";
                mountOptions = [ "defaults" ];
              };
            };
            luks = {
              size = "100%";
              content = {
                type = "luks";
                name = "crypted";
                extraOpenArgs = [ "--allow-discards" ];
                #passwordphrase = "123";
                passwordFile = "/tmp/secret.txt";
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
    };
  };
}
