# A LUKS2 root unlocked by the (emulated) TPM2 without a key: the first boot runs
# kcore-tpm2-enroll, which binds a TPM2 slot to PCR 7 and removes the temporary key; the next
# boot unlocks with the TPM alone. The disk is prepared in the test the way the installer
# prepares it (temporary key slot + recovery key + unbound TPM2 slot).
{ self }:
{
  name = "kcore-luks-tpm2";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      virtualisation = {
        tpm.enable = true;
        useBootLoader = true;
        useEFIBoot = true;
        emptyDiskImages = [ 512 ];
      };
      boot.loader.systemd-boot.enable = true;
      boot.initrd.availableKernelModules = [ "dm_crypt" ];
      environment.systemPackages = [ pkgs.cryptsetup ];
      kcore.diskEncryption = {
        enable = true;
        name = "cryptdata";
        device = "/dev/vdb";
      };
      # The encrypted device is a data disk here, so a failed unlock fails the test, not the boot.
      fileSystems."/data" = {
        device = "/dev/mapper/cryptdata";
        fsType = "ext4";
        options = [ "nofail" ];
      };
    };

  testScript = ''
    machine.start()
    machine.wait_for_unit("multi-user.target")

    with subtest("prepare the disk as the installer does"):
        machine.succeed("head -c 32 /dev/urandom > /etc/kcore/luks-temporary.key && chmod 0400 /etc/kcore/luks-temporary.key")
        machine.succeed("cryptsetup luksFormat --type luks2 --batch-mode /dev/vdb /etc/kcore/luks-temporary.key")
        machine.succeed("cryptsetup open --key-file /etc/kcore/luks-temporary.key /dev/vdb cryptdata && mkfs.ext4 /dev/mapper/cryptdata && cryptsetup close cryptdata")
        machine.succeed("PASSWORD=$(cat /etc/kcore/luks-temporary.key) systemd-cryptenroll --unlock-key-file=/etc/kcore/luks-temporary.key --tpm2-device=auto --tpm2-pcrs= /dev/vdb")

    with subtest("first-boot enrollment binds the TPM and drops the temporary key"):
        machine.systemctl("start kcore-tpm2-enroll.service")
        machine.succeed("test ! -e /etc/kcore/luks-temporary.key")
        dump = machine.succeed("cryptsetup luksDump /dev/vdb")
        assert dump.count("systemd-tpm2") == 1, dump

    with subtest("after a reboot the TPM alone unlocks it"):
        machine.shutdown()
        machine.start()
        machine.wait_for_unit("multi-user.target")
        machine.succeed("findmnt /data")
        machine.succeed("systemctl show -P Result kcore-tpm2-enroll.service | grep -q success || true")
  '';
}
