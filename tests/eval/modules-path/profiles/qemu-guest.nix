# Stand-in for nixpkgs' nixos/modules/profiles/qemu-guest.nix: the virtio drivers in the
# initrd (the part of it kcore's virtio example host relies on).
{
  boot.initrd.availableKernelModules = [
    "virtio_net"
    "virtio_pci"
    "virtio_mmio"
    "virtio_blk"
    "virtio_scsi"
    "9p"
    "9pnet_virtio"
  ];
  boot.initrd.kernelModules = [
    "virtio_balloon"
    "virtio_console"
    "virtio_rng"
    "virtio_gpu"
  ];
}
