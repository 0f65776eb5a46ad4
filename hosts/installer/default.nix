# The kcore live ISO (`nix build .#installer-iso`): the agent in install mode on port 9091
# (self-signed TLS, the inventory route only; it prints its certificate fingerprint
# on the console), kctl, disko, nixos-install, this flake's source and the prebuilt closure of
# the generic node (hosts/node), so installing that layout needs no network.
{
  config,
  lib,
  modulesPath,
  kcoreFlake,
  ...
}:
let
  genericNode = kcoreFlake.nixosConfigurations.node;
in
{
  imports = [
    "${modulesPath}/installer/cd-dvd/installation-cd-minimal.nix"
    # Key-only root SSH with kcore.hosts.operatorSshKeys, as on the installed hosts: the
    # ISO's root has an empty password, which sshd refuses, so a headless install needs a key.
    ../operator-ssh.nix
  ];

  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";

  # iso-image.nix sets image.baseName itself at normal priority (isoImage.isoBaseName is
  # only its pre-25.05 alias, which would conflict with it).
  image.baseName = lib.mkForce "kcore-installer";

  services.kcore.agent = {
    enable = true;
    openFirewall = true;
    settings = {
      nodeId = "installer";
      mode = "install";
    };
  };

  # kctl comes with the agent's package (agent.nix), nixos-install with the installer
  # profile (tools.nix).
  environment.systemPackages = [ config.services.kcore.agent.diskoPackage ];

  # This flake's source, for `nixos-install --flake /etc/kcore/flake#<host>`.
  environment.etc."kcore/flake".source = kcoreFlake.outPath;

  # Offline install: the generic node's system and its disko script (destroy, format, mount
  # its layout at /mnt), and the flake inputs so the flake evaluates without fetching anything.
  # That covers installing exactly hosts/node; nixpkgs' installation-device profile (imported
  # through installation-cd-minimal) adds stdenv, stdenvNoCC, busybox, jq and
  # makeInitrdNGTool. Anything that changes the node's configuration (its nodeId included)
  # rebuilds derivations whose other build inputs are not here: docs/nixos.md "Installer".
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
}
