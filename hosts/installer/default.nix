# The kcore live ISO (`nix build .#installer-iso`): the agent in install mode on port 9091
# (self-signed TLS, the inventory and install routes; it prints its certificate fingerprint
# on the console), kctl, disko, nixos-install, this flake's source and the prebuilt node
# systems of each storage backend, TPM2 (hosts/installed-<backend>) and key-file
# (hosts/installed-<backend>-keyfile), which `kctl node install` copies onto the node with
# `nixos-install --system`: an install needs no network (docs/install.md).
{
  config,
  lib,
  pkgs,
  modulesPath,
  kcoreFlake,
  ...
}:
let
  backends = [
    "filesystem"
    "lvm"
    "zfs"
  ];
  hostConfig = name: kcoreFlake.nixosConfigurations.${name}.config;
  installed = backend: hostConfig "installed-${backend}";
  systemOf = backend: (installed backend).system.build.toplevel;
  # The same backend's system with key-file unlock (hosts/installed-<backend>-keyfile).
  keyfileSystemOf = backend: (hostConfig "installed-${backend}-keyfile").system.build.toplevel;
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
      # The closures `install/run` installs, by backend: `systems` in TPM2 mode,
      # `keyfileSystems` in key-file mode (docs/configuration.md `install`).
      # root (/mnt), stateDir (/run/kcore-install, a tmpfs) and tpm2Pcrs are the agent's
      # defaults; tpm2Pcrs must equal kcore.diskEncryption.tpm2Pcrs of those systems.
      install = {
        systems = lib.genAttrs backends (b: "${systemOf b}");
        keyfileSystems = lib.genAttrs backends (b: "${keyfileSystemOf b}");
        tpm2Pcrs = (installed "lvm").kcore.diskEncryption.tpm2Pcrs;
      };
    };
  };

  # kctl comes with the agent's package (agent.nix). nixos-install is also in the
  # installer profile (tools.nix); listed so the ISO has it whatever the profile.
  environment.systemPackages = [
    config.services.kcore.agent.diskoPackage
    pkgs.nixos-install-tools
  ];

  # This flake's source, to read or to build a node's own configuration from.
  environment.etc."kcore/flake".source = kcoreFlake.outPath;

  # Offline install: the six prebuilt systems (the agent's install.systems and
  # install.keyfileSystems reference them, so they are in the ISO's closure anyway; listed
  # for clarity), and the flake inputs so the flake evaluates without fetching anything. disko builds the layout's script on the node
  # from the flake's disko input and nixpkgs (the agent's settings.disko.*).
  isoImage.storeContents = map systemOf backends ++ map keyfileSystemOf backends ++ [
    kcoreFlake.inputs.nixpkgs.outPath
    kcoreFlake.inputs.disko.outPath
  ];
  nix.settings.experimental-features = [
    "nix-command"
    "flakes"
  ];
}
