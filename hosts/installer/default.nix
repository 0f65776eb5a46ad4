# The kcore live ISO (`nix build .#installer-iso`): the agent in install mode on port 9091
# (self-signed TLS, inventory and install routes only; it prints its certificate fingerprint
# on the console), kctl, disko, nixos-install, this flake's source and the prebuilt closure of
# the generic node (hosts/node), so installing that layout needs no network.
{
  config,
  lib,
  pkgs,
  modulesPath,
  kcoreFlake,
  ...
}:
let
  genericNode = kcoreFlake.nixosConfigurations.node;
in
{
  imports = [ "${modulesPath}/installer/cd-dvd/installation-cd-minimal.nix" ];

  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";

  isoImage.isoBaseName = "kcore-installer";

  services.kcore.agent = {
    enable = true;
    openFirewall = true;
    settings = {
      nodeId = "installer";
      mode = "install";
    };
  };

  environment.systemPackages = [
    config.services.kcore.agent.package # kctl
    config.services.kcore.agent.diskoPackage
    pkgs.nixos-install-tools
  ];

  # This flake's source, for `nixos-install --flake /etc/kcore/flake#<host>`.
  environment.etc."kcore/flake".source = kcoreFlake.outPath;

  # Offline install: the generic node's system and its disko script (destroy, format, mount
  # its layout at /mnt), and the flake inputs so the flake evaluates without fetching anything.
  isoImage.storeContents = [
    genericNode.config.system.build.toplevel
    genericNode.config.system.build.diskoScript
    kcoreFlake.inputs.nixpkgs.outPath
    kcoreFlake.inputs.disko.outPath
  ];
  nix.settings.experimental-features = [
    "nix-command"
    "flakes"
  ];
  nix.registry.nixpkgs.flake = kcoreFlake.inputs.nixpkgs;
}
