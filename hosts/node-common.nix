# What every example kcore hypervisor host shares: UEFI boot, the LUKS2 root of the
# kcore-disko layout (partition `root` of disk `os`, opened as `crypted`), and the agent with
# the mTLS material `kctl` installs under /etc/kcore/pki. Not a host itself (a file, not a
# directory under hosts/).
{ lib, ... }:
{
  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
  # The release these examples were written against; never change it on an installed node.
  system.stateVersion = "25.11";

  boot.loader.systemd-boot.enable = true;
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
        caFile = "/etc/kcore/pki/ca.crt";
        certFile = "/etc/kcore/pki/node.crt";
        keyFile = "/etc/kcore/pki/node.key";
      };
    };
  };

  # Operators reach nodes with SSH keys only.
  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };
}
