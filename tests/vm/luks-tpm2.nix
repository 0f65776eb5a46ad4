# A LUKS2 root unlocked by the (emulated) TPM2, no key typed. Follows nixpkgs'
# systemd-initrd-luks-tpm2 test: the machine first boots unencrypted and prepares /dev/vdb
# the way the install-mode agent does (install key, recovery key slot, TPM2 slot bound to
# PCRs 0+2+7 enrolled from this same boot environment, install key slot removed), then boots
# the `luks` specialisation from it: the TPM2 slot alone unlocks, so the policy read before
# the install is the one the installed system meets. A changed PCR 7 makes the TPM refuse
# it; the recovery key still opens the volume.
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
        # token plugin from systemd's lib/cryptsetup.
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

    with subtest("enrol /dev/vdb as the install-mode agent does"):
        machine.succeed("head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /tmp/install.key")
        machine.succeed("cryptsetup luksFormat -q --type luks2 --iter-time=1 /dev/vdb /tmp/install.key")
        recovery = machine.succeed("systemd-cryptenroll --unlock-key-file=/tmp/install.key --recovery-key /dev/vdb").strip()
        machine.succeed("systemd-cryptenroll --unlock-key-file=/tmp/install.key --tpm2-device=auto --tpm2-pcrs=0+2+7 /dev/vdb")
        machine.succeed("tpm2-token-opens /dev/vdb")
        machine.succeed("cryptsetup open --key-file /tmp/install.key /dev/vdb cryptroot")
        machine.succeed("mkfs.ext4 -q /dev/mapper/cryptroot && cryptsetup close cryptroot")
        machine.succeed("cryptsetup luksRemoveKey --key-file /tmp/install.key /dev/vdb")
        machine.fail("cryptsetup open --test-passphrase --key-file /tmp/install.key /dev/vdb")

    with subtest("the installed system unlocks with the TPM2 slot alone"):
        machine.succeed("bootctl set-default nixos-generation-1-specialisation-luks.conf && sync")
        machine.crash()
        machine.wait_for_unit("multi-user.target")
        assert "/dev/mapper/cryptroot on / type ext4" in machine.succeed("mount")
        dump = machine.succeed("cryptsetup luksDump /dev/vdb")
        assert dump.count("systemd-tpm2") == 1, dump
        assert dump.count("systemd-recovery") == 1, dump

    with subtest("a changed PCR 7 makes the TPM refuse the slot"):
        # Extending PCR 7 (as a different Secure Boot state would) changes the policy the
        # slot is sealed to; the token alone must no longer open the volume.
        machine.succeed("tpm2-token-opens /dev/vdb")
        machine.succeed("pcr7-extend kcore-test-changed-policy")
        machine.fail("tpm2-token-opens /dev/vdb")

    with subtest("the recovery key kctl keeps still opens it"):
        machine.succeed(f"printf %s '{recovery}' > /run/recovery.key")
        machine.succeed("cryptsetup open --test-passphrase --key-file /run/recovery.key /dev/vdb")
  '';
}
