# A LUKS2 root unlocked by the (emulated) TPM2, no key typed. Follows nixpkgs'
# systemd-initrd-luks-tpm2 test: the machine first boots unencrypted, prepares /dev/vdb the
# way the kcore installer does (temporary key slot + TPM2 slot without PCRs + the temporary
# key inside the encrypted root), then boots the `luks` specialisation from it. There
# kcore-tpm2-enroll binds a new TPM2 slot to PCR 7 and removes the temporary credentials;
# the next boot unlocks with that slot alone, and a changed PCR 7 makes the TPM refuse it.
{ self }:
{
  name = "kcore-luks-tpm2";

  nodes.machine =
    {
      config,
      lib,
      pkgs,
      ...
    }:
    {
      imports = [ self.nixosModules.default ];
      virtualisation = {
        emptyDiskImages = [ 512 ];
        useBootLoader = true;
        useEFIBoot = true;
        # Only OVMFFull has the TCG2 (measured boot) support that extends PCR 7; with the
        # default OVMF the PCRs stay unset and systemd does not enforce the policy.
        efi.OVMF = pkgs.OVMFFull.fd;
        mountHostNixStore = true;
        tpm.enable = true;
      };
      boot.loader.systemd-boot.enable = true;
      environment.systemPackages = [
        pkgs.cryptsetup
        # Opens (tests) the volume with its systemd-tpm2 token alone; cryptsetup loads the
        # token plugin from systemd's lib/cryptsetup (as kcore-tpm2-enroll does).
        (pkgs.writeShellScriptBin "tpm2-token-opens" ''
          LD_LIBRARY_PATH=${config.systemd.package}/lib/cryptsetup exec cryptsetup open \
            --test-passphrase --token-only --token-type systemd-tpm2 "$1"
        '')
        # Extends PCR 7 as a changed Secure Boot state would.
        (pkgs.writeShellScriptBin "pcr7-extend" ''
          exec ${config.systemd.package}/lib/systemd/systemd-pcrextend --pcr=7 "$1"
        '')
      ];

      specialisation.luks.configuration = {
        kcore.diskEncryption = {
          enable = true;
          name = "cryptroot";
          device = "/dev/vdb";
        };
        # qemu-vm.nix sets boot.initrd.luks.devices = mkVMOverride { } (its default file
        # systems have no LUKS): the device must be declared at that priority too, as in
        # nixpkgs' systemd-initrd-luks-tpm2 test, or the initrd never opens it.
        boot.initrd.luks.devices = lib.mkVMOverride {
          cryptroot = {
            device = "/dev/vdb";
            crypttabExtraOpts = [ "tpm2-device=auto" ];
          };
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
        machine.succeed("install -D -m 0400 /tmp/tmp.key /mnt/var/lib/kcore/luks-temporary.key")
        machine.succeed("umount /mnt && cryptsetup close cryptroot")
        # Kept by the test driver: /tmp will be on the new root.
        tmp_key = machine.succeed("base64 -w0 /tmp/tmp.key").strip()

    with subtest("first boot from the encrypted root: enrollment binds PCR 7, drops the temporary key"):
        machine.succeed("bootctl set-default nixos-generation-1-specialisation-luks.conf && sync")
        machine.crash()
        machine.wait_for_unit("multi-user.target")
        assert "/dev/mapper/cryptroot on / type ext4" in machine.succeed("mount")
        machine.wait_until_succeeds("test ! -e /var/lib/kcore/luks-temporary.key")
        dump = machine.succeed("cryptsetup luksDump /dev/vdb")
        assert dump.count("systemd-tpm2") == 1, dump
        machine.succeed(f"echo {tmp_key} | base64 -d > /run/tmp.key")
        machine.fail("cryptsetup open --test-passphrase --key-file /run/tmp.key /dev/vdb")

    with subtest("the next boot unlocks with the PCR-bound TPM2 slot alone"):
        machine.crash()
        machine.wait_for_unit("multi-user.target")
        assert "/dev/mapper/cryptroot on / type ext4" in machine.succeed("mount")

    with subtest("a changed PCR 7 makes the TPM refuse the slot"):
        # Extending PCR 7 (as a different Secure Boot state would) changes the policy the
        # slot is sealed to; the token alone must no longer open the volume.
        machine.succeed("tpm2-token-opens /dev/vdb")
        machine.succeed("pcr7-extend kcore-test-changed-policy")
        machine.fail("tpm2-token-opens /dev/vdb")
  '';
}
