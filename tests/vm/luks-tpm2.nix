# A LUKS2 root unlocked by the (emulated) TPM2, no key typed. Follows nixpkgs'
# systemd-initrd-luks-tpm2 test: the machine first boots unencrypted, prepares /dev/vdb the
# way the kcore installer does (temporary key slot + TPM2 slot without PCRs + the temporary
# key inside the encrypted root), then boots the `luks` specialisation from it. There
# kcore-tpm2-enroll binds a new TPM2 slot to PCR 7 and removes the temporary credentials;
# the next boot unlocks with that slot alone.
{ self }:
{
  name = "kcore-luks-tpm2";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      virtualisation = {
        emptyDiskImages = [ 512 ];
        useBootLoader = true;
        useEFIBoot = true;
        mountHostNixStore = true;
        tpm.enable = true;
      };
      boot.loader.systemd-boot.enable = true;
      boot.initrd.availableKernelModules = [ "tpm_tis" ];
      environment.systemPackages = [ pkgs.cryptsetup ];

      specialisation.luks.configuration = {
        kcore.diskEncryption = {
          enable = true;
          name = "cryptroot";
          device = "/dev/vdb";
        };
        virtualisation.rootDevice = "/dev/mapper/cryptroot";
      };
    };

  testScript = ''
    machine.wait_for_unit("multi-user.target")

    with subtest("prepare /dev/vdb as the installer does"):
        machine.succeed("head -c 64 /dev/urandom > /tmp/tmp.key")
        machine.succeed("cryptsetup luksFormat -q --type luks2 --iter-time=1 /dev/vdb /tmp/tmp.key")
        machine.succeed("systemd-cryptenroll --unlock-key-file=/tmp/tmp.key --tpm2-device=auto --tpm2-pcrs= /dev/vdb")
        machine.succeed("cryptsetup open --key-file /tmp/tmp.key /dev/vdb cryptroot")
        machine.succeed("mkfs.ext4 -q /dev/mapper/cryptroot && mount /dev/mapper/cryptroot /mnt")
        machine.succeed("install -D -m 0400 /tmp/tmp.key /mnt/etc/kcore/luks-temporary.key")
        machine.succeed("umount /mnt && cryptsetup close cryptroot")
        # Kept by the test driver: /tmp will be on the new root.
        tmp_key = machine.succeed("base64 -w0 /tmp/tmp.key").strip()

    with subtest("first boot from the encrypted root: enrollment binds PCR 7, drops the temporary key"):
        machine.succeed("bootctl set-default nixos-generation-1-specialisation-luks.conf && sync")
        machine.crash()
        machine.wait_for_unit("multi-user.target")
        assert "/dev/mapper/cryptroot on / type ext4" in machine.succeed("mount")
        machine.wait_until_succeeds("test ! -e /etc/kcore/luks-temporary.key")
        dump = machine.succeed("cryptsetup luksDump /dev/vdb")
        assert dump.count("systemd-tpm2") == 1, dump
        machine.succeed(f"echo {tmp_key} | base64 -d > /run/tmp.key")
        machine.fail("cryptsetup open --test-passphrase --key-file /run/tmp.key /dev/vdb")

    with subtest("the next boot unlocks with the PCR-bound TPM2 slot alone"):
        machine.crash()
        machine.wait_for_unit("multi-user.target")
        assert "/dev/mapper/cryptroot on / type ext4" in machine.succeed("mount")
  '';
}
