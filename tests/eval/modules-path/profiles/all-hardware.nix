# Stand-in for nixpkgs' nixos/modules/profiles/all-hardware.nix (imported by
# hosts/installed-node.nix, as by the installer ISO): storage and USB drivers for most
# machines in the initrd. A few of its entries, enough to see that the profile is imported.
{
  boot.initrd.availableKernelModules = [
    "ahci"
    "nvme"
    "sd_mod"
    "xhci_pci"
    "usb_storage"
    "virtio_pci"
    "virtio_blk"
  ];
}
