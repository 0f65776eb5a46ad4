# What every example kcore hypervisor host shares: UEFI boot, the LUKS2 root of the
# kcore-disko layout (partition `root` of disk `os`, opened as `crypted`), and the agent with
# the mTLS material `kctl` installs under /var/lib/kcore/pki, key-only SSH (operator-ssh.nix). Not a host itself (a file, not a
# directory under hosts/).
{ lib, ... }:
{
  imports = [ ./operator-ssh.nix ];

  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
  # The release these examples were written against; never change it on an installed node.
  system.stateVersion = "25.11";

  boot.loader.systemd-boot.enable = true;
  # The boot menu's editor lets anyone at the console add `init=/bin/sh` to the kernel
  # command line, and the default TPM2 seal (PCR 7) does not measure the command line: with
  # the editor on, the TPM would unlock the disk for that shell (nixpkgs' systemd-boot.nix
  # recommends false).
  boot.loader.systemd-boot.editor = false;
  boot.loader.efi.canTouchEfiVariables = true;

  kcore.diskEncryption = {
    enable = true;
    device = "/dev/disk/by-partlabel/disk-os-root";
  };

  services.kcore.agent = {
    enable = true;
    # Controllers and kctl reach the agent on its port; mTLS guards it.
    openFirewall = true;
    settings = {
      controllers = [ "controller.example.org:9090" ];
      tls = {
        caFile = "/var/lib/kcore/pki/ca.crt";
        certFile = "/var/lib/kcore/pki/node.crt";
        keyFile = "/var/lib/kcore/pki/node.key";
      };
    };
  };
}
