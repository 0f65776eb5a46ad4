# Offline evaluation harness of the kcore NixOS modules (modules/), run by
# rust/kcore-nixos-checks/tests. It evaluates the modules with nixpkgs' `lib.evalModules`
# against the option declarations in nixos-stubs.nix and the fake `pkgs` of fake-pkgs.nix, for
# a configuration given as JSON, and returns what the tests assert on. The flake's real
# exports (modules with the glue, hosts, VM test nodes) are evaluated by flake-outputs.nix.
#
#   nix-instantiate --eval --strict --json --readonly-mode tests/eval/eval.nix \
#     --argstr nixpkgsLib /path/to/nixpkgs/lib --argstr configJSON '{ ... }' --argstr select outputs
#
# `disko = false` leaves disko's module (disko-stub.nix) out, as a consumer that imports none.
#
# `select = "options"` returns the kcore options' documentation entries.
# `select = "assertions"` returns only the messages of the failed assertions (a configuration
# under test may be deliberately wrong); `select = "outputs"` returns the rendered files,
# units and merged devices, and fails if any assertion fails.
{
  nixpkgsLib,
  configJSON,
  select ? "outputs",
  disko ? true,
}:
let
  lib = import nixpkgsLib;
  pkgs = import ./fake-pkgs.nix { inherit lib; };

  evaluated = lib.evalModules {
    modules = [
      ./nixos-stubs.nix
      ../../modules/default.nix
      { _module.args.pkgs = pkgs; }
      # The configuration under test, a plain data module.
      { config = builtins.fromJSON configJSON; }
    ]
    ++ lib.optional disko ./disko-stub.nix;
  };
  inherit (evaluated) config;

  failed = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  etcText =
    name:
    if config.environment.etc ? ${name} then config.environment.etc.${name}.source.text else null;

  unit =
    name:
    if config.systemd.services ? ${name} then
      {
        inherit (config.systemd.services.${name})
          serviceConfig
          unitConfig
          wantedBy
          after
          before
          requires
          environment
          ;
        path = map (p: p.name) config.systemd.services.${name}.path;
      }
    else
      null;

  outputs = {
    agentConfig = etcText "kcore/node-agent.yaml";
    controllerConfig = etcText "kcore/controller.yaml";
    units = lib.genAttrs [
      "kcore-agent"
      "kcore-controller"
      "kcore-tpm2-enroll"
      "kcore-zfs-import"
    ] unit;
    # kcore.storage's import script of runtime-mode zfs systems (a fake writeShellScript).
    zfsImportScript = config.systemd.services.kcore-zfs-import.serviceConfig.ExecStart.text or null;
    diskoDevices = config.disko.devices or null;
    tmpfiles = config.systemd.tmpfiles.rules;
    # kcore.diskEncryption's re-enrolment command (a writeShellScriptBin: fake, with its text).
    tpm2ReenrollScript =
      let
        found = lib.filter (p: p.name == "kcore-tpm2-reenroll") config.environment.systemPackages;
      in
      if found == [ ] then null else (lib.head found).text;
    systemdBootEditor = config.boot.loader.systemd-boot.editor;
    allowedTCPPorts = config.networking.firewall.allowedTCPPorts;
    supportedFilesystems = config.boot.supportedFilesystems;
    zfsExtraPools = config.boot.zfs.extraPools;
    lvmThin = config.services.lvm.boot.thin.enable;
    systemPackages = map (p: p.name) config.environment.systemPackages;
    initrdSystemd = config.boot.initrd.systemd.enable;
    luks = config.boot.initrd.luks.devices;
    warnings = config.warnings;
  };
  # The kcore options as the NixOS manual would list them (not the stubs' options).
  kcoreOptions = map (o: {
    inherit (o) name;
    description = o.description or null;
    hasExample = o ? example;
    hasDefault = o ? default;
  }) (
    lib.filter (
      o:
      o.visible
      && !o.internal
      && (lib.hasPrefix "services.kcore." o.name || lib.hasPrefix "kcore." o.name)
    ) (
      lib.optionAttrSetToDocList evaluated.options
    )
  );
in
if select == "assertions" then
  failed
else if select == "options" then
  kcoreOptions
else if failed != [ ] then
  throw "kcore eval harness: failed assertions:\n${lib.concatStringsSep "\n" failed}"
else
  outputs
