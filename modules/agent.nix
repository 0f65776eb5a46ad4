# services.kcore.agent: the node agent daemon (HTTPS, port 9091).
#
# `settings` follows RFC 42: a freeform YAML attribute set whose keys are the agent's serde
# fields one to one (docs/configuration.md), with a few typed sub-options for the keys this
# module reads itself or that operators set most. It is rendered to /etc/kcore/node-agent.yaml.
# The `storage` keys are derived from `kcore.storage` (storage.nix, imported here), the one
# place where a node's backend and names are declared.
#
# Mutable state lives under /var/lib/kcore (applied disko fragments, operation results, the
# management mode); /etc/kcore holds only the rendered configuration.
#
# `nodeConfig = "runtime"` is for the prebuilt systems `kctl node install` puts on a node
# (hosts/installed-*): one closure for every node, so the node's own values (id, DC,
# controllers, certificates, storage names) cannot be in it. The installer writes them to
# /etc/kcore/node-agent.yaml; `settings` then becomes a store file passed as `--defaults`,
# which the agent deep-merges under that file (maps key by key, the file wins, lists are
# replaced; docs/configuration.md).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.kcore.agent;
  klib = import ./lib.nix { inherit lib; };
  settingsFormat = pkgs.formats.yaml { };

  configPath = "/etc/kcore/node-agent.yaml";
  runtime = cfg.nodeConfig == "runtime";
  # In runtime mode the same settings are the `--defaults` file, not /etc/kcore's.
  configFile = settingsFormat.generate (
    if runtime then "node-agent-defaults.yaml" else "node-agent.yaml"
  ) (klib.dropNulls cfg.settings);

  tlsOption =
    name: example:
    lib.mkOption {
      type = lib.types.nullOr klib.runtimePath;
      default = null;
      inherit example;
      description = "Path of the node's ${name} (PEM). A path on the node, never copied into the Nix store.";
    };
in
{
  imports = [ ./storage.nix ];

  options.services.kcore.agent = {
    enable = lib.mkEnableOption "the kcore node agent";

    package = lib.mkPackageOption pkgs "kcore" { };

    diskoPackage = lib.mkPackageOption pkgs "disko" {
      extraDescription = ''
        Used for `apply-disko`. The kcore flake sets it to its own `disko` input, so that the
        tool that formats disks and the source used to validate layouts
        (`settings.disko.diskoSource`) are the same revision.
      '';
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the TCP port of `settings.listen` in the firewall.";
    };

    nodeConfig = lib.mkOption {
      type = lib.types.enum [
        "settings"
        "runtime"
      ];
      default = "settings";
      description = ''
        Where the node's own values come from. `settings`: this module renders `settings` to
        `${configPath}`. `runtime` (systems installed by `kctl node install`): the installer
        wrote `${configPath}` (nodeId, dcId, hostname, controllers, tls, storage names) and
        `settings` holds only what every node shares (store paths of tools, disko source);
        the agent runs with `--defaults <settings as a store file> --config ${configPath}`
        and does not start while that file is missing. Node-specific keys (`nodeId`, `tls.*`,
        `controllers`) must then be left unset.
      '';
    };

    settings = lib.mkOption {
      default = { };
      description = ''
        Contents of `${configPath}`, see `docs/configuration.md`. Keys are camelCase and must be
        keys the agent knows: it refuses to start on an unknown key. `null` values are left out,
        so the agent's own default applies. The `storage` section is set from `kcore.storage`.
      '';
      example = lib.literalExpression ''
        {
          nodeId = "node-1";
          dcId = "DC1";
          controllers = [ "ctl1.example.org:9090" ];
          tls = {
            caFile = "/var/lib/kcore/pki/ca.crt";
            certFile = "/var/lib/kcore/pki/node.crt";
            keyFile = "/var/lib/kcore/pki/node.key";
          };
        }
      '';
      type = lib.types.submodule {
        freeformType = settingsFormat.type;
        options = {
          nodeId = lib.mkOption {
            type = lib.types.nullOr (lib.types.strMatching "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?");
            default = null;
            example = "node-1";
            description = ''
              Identity of this node in the cluster (lower-case letters, digits and `-`).
              Required with `nodeConfig = "settings"`; left unset with `"runtime"` (the
              installer's file has it).
            '';
          };
          dcId = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = null;
            example = "DC1";
            description = "Data centre this node belongs to; `null` leaves the agent's default (`default`).";
          };
          listen = lib.mkOption {
            type = lib.types.str;
            default = "0.0.0.0:9091";
            description = "Address and port the agent serves HTTPS on.";
          };
          mode = lib.mkOption {
            type = lib.types.enum [
              "managed"
              "install"
            ];
            default = "managed";
            description = ''
              `managed`: mTLS with the cluster CA, all routes. `install`: the live ISO, a
              self-signed certificate, the inventory and install routes (`kctl node install`).
            '';
          };
          controllers = lib.mkOption {
            type = lib.types.listOf lib.types.str;
            default = [ ];
            example = [
              "ctl1.example.org:9090"
              "ctl2.example.org:9090"
            ];
            description = "Controllers (`host:port`), tried in order for registration and heartbeats.";
          };
          tls = {
            caFile = tlsOption "cluster CA certificate" "/var/lib/kcore/pki/ca.crt";
            certFile = tlsOption "certificate" "/var/lib/kcore/pki/node.crt";
            keyFile = tlsOption "private key" "/var/lib/kcore/pki/node.key";
          };
          disko = {
            managementModeFile = lib.mkOption {
              type = klib.runtimePath;
              default = config.kcore.storage.managementModeFile;
              defaultText = lib.literalExpression "config.kcore.storage.managementModeFile";
              description = "File holding the disko management mode; the agent reads it on every request.";
            };
            stateDir = lib.mkOption {
              type = klib.runtimePath;
              default = "/var/lib/kcore/disko";
              description = ''
                Where the agent keeps applied disko fragments (and their `.bak`); its operation
                results go to `operations/` beside it. Runtime state, so under /var/lib.
              '';
            };
            diskoSource = lib.mkOption {
              type = lib.types.nullOr lib.types.str;
              default = null;
              defaultText = lib.literalMD "the kcore flake's `disko` input, when the module comes from the flake";
              description = ''
                Store path of the disko source tree. Enables the deep validation level (layouts
                evaluated through disko's own types), with `nixpkgsLib`.
              '';
            };
            nixpkgsLib = lib.mkOption {
              type = lib.types.nullOr lib.types.str;
              default = null;
              defaultText = lib.literalMD "`lib/` of the kcore flake's `nixpkgs` input, when the module comes from the flake";
              description = "Store path of nixpkgs' `lib/` directory, used with `diskoSource`.";
            };
          };
          # Declared (not freeform) so that its definitions may depend on `settings.mode`:
          # freeform keys decide the shape of `settings` itself, so they cannot.
          binaries = lib.mkOption {
            type = lib.types.attrsOf lib.types.str;
            default = { };
            example = {
              nixos-install = "/run/current-system/sw/bin/nixos-install";
            };
            description = ''
              Program name -> executable the agent runs (kcore-nix's tools). This module fills in
              store paths for the programs of `settings.mode`; unset programs are looked up on
              PATH.
            '';
          };
          nix.configPath = lib.mkOption {
            type = klib.runtimePath;
            default = "/etc/nixos/kcore-node.nix";
            description = ''
              The NixOS module `apply-nix` writes (the previous version kept as `.bak`), then
              `nixos-rebuild test` and `switch`. This module does not import it: the host's own
              entry point (`/etc/nixos/configuration.nix`, or the flake in `/etc/nixos`) must
              list it in `imports` for an apply to change anything; see `docs/nixos.md`.
            '';
          };
        };
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = runtime || cfg.settings.nodeId != null;
        message = ''
          services.kcore.agent: settings.nodeId is unset. Set it (e.g. "node-1"), or set
          services.kcore.agent.nodeConfig = "runtime" on a system installed by `kctl node install`
          (the node's id is then read from ${configPath}).
        '';
      }
      {
        assertion =
          !runtime
          || (
            cfg.settings.nodeId == null
            && cfg.settings.controllers == [ ]
            && cfg.settings.tls.caFile == null
            && cfg.settings.tls.certFile == null
            && cfg.settings.tls.keyFile == null
          );
        message = ''
          services.kcore.agent: nodeConfig = "runtime" takes the node's own values from
          ${configPath}, written by the installer, which wins over settings. Remove
          settings.nodeId, settings.controllers and settings.tls.* from the configuration
          (this closure is shared by every node), or use nodeConfig = "settings".
        '';
      }
      {
        assertion =
          runtime
          || cfg.settings.mode != "managed"
          || (
            cfg.settings.tls.caFile != null
            && cfg.settings.tls.certFile != null
            && cfg.settings.tls.keyFile != null
          );
        message = ''
          services.kcore.agent: managed mode needs mTLS material. Set
          services.kcore.agent.settings.tls.{caFile,certFile,keyFile} to paths on the node
          (kctl writes them at install), or set settings.mode = "install" on a live ISO.
        '';
      }
      {
        assertion =
          (cfg.settings.disko.diskoSource == null) == (cfg.settings.disko.nixpkgsLib == null);
        message = ''
          services.kcore.agent: settings.disko.diskoSource and settings.disko.nixpkgsLib go together:
          set both (the kcore flake's nixosModules do) or neither.
        '';
      }
    ];

    # A managed node keeps its VM volumes through kcore.storage; the live ISO (install mode)
    # has none.
    kcore.storage.enable = lib.mkDefault (cfg.settings.mode == "managed");

    services.kcore.agent.settings.storage = {
      inherit (config.kcore.storage) backend filesystemVolumeDir imageCacheDir;
      lvm = {
        inherit (config.kcore.storage.lvm) vgName lvPrefix;
      };
      zfs = {
        inherit (config.kcore.storage.zfs) poolName datasetPrefix;
      };
    };

    services.kcore.agent.settings.binaries = lib.mkMerge [
      {
        # Explicit store paths: the agent does not depend on the PATH it was started with.
        # Keys are program names (kcore-nix's tools); any program kcore runs may be listed.
        nix-instantiate = lib.mkDefault "${config.nix.package}/bin/nix-instantiate";
        nixos-rebuild = lib.mkDefault "${config.system.build.nixos-rebuild}/bin/nixos-rebuild";
        systemd-run = lib.mkDefault "${config.systemd.package}/bin/systemd-run";
        disko = lib.mkDefault (lib.getExe' cfg.diskoPackage "disko");
        lsblk = lib.mkDefault (lib.getExe' pkgs.util-linux "lsblk");
        # VMs (docs/vms.md): the guest runs in its own transient unit, so these are store
        # paths rather than entries of the agent unit's PATH. qemu_kvm is nixpkgs' qemu built
        # for the host's CPU only; it ships qemu-img too
        # (pkgs/applications/virtualization/qemu/default.nix, `hostCpuOnly`).
        qemu-system-x86_64 = lib.mkDefault (lib.getExe' pkgs.qemu_kvm "qemu-system-x86_64");
        qemu-img = lib.mkDefault (lib.getExe' pkgs.qemu_kvm "qemu-img");
        # Rollout trial boots on GRUB nodes (docs/rollouts.md): the grub-reboot of the GRUB
        # that install-grub.pl installs with (it calls "$grub/sbin/grub-install" the same way).
        grub-reboot = lib.mkIf config.boot.loader.grub.enable (
          lib.mkDefault "${config.boot.loader.grub.package}/sbin/grub-reboot"
        );
      }
      # Install mode: every program the install routes run (docs/agent.md "Install mode"),
      # as kcore-nix's tool names: disko formats, nixos-install installs (nixpkgs
      # pkgs/by-name/ni/nixos-install, in nixos-install-tools), systemd-cryptenroll enrols
      # the recovery key and the TPM2 (systemd ships it: pkgs/os-specific/linux/systemd),
      # cryptsetup proves and removes keys and closes the LUKS device, sgdisk partitions the
      # key device, umount -R and vgchange -an (lvm2's bin output links every LVM command to
      # `lvm`: pkgs/os-specific/linux/lvm2/common.nix) or zpool export release the disks
      # after the install, zpool status -P tells an imported pool's member from an exported
      # one (the live ISO has ZFS: nixos/modules/profiles/base.nix supportedFilesystems),
      # and systemctl reboots.
      (lib.mkIf (cfg.settings.mode == "install") {
        cryptsetup = lib.mkDefault (lib.getExe' pkgs.cryptsetup "cryptsetup");
        systemd-cryptenroll = lib.mkDefault (
          lib.getExe' config.systemd.package "systemd-cryptenroll"
        );
        systemctl = lib.mkDefault (lib.getExe' config.systemd.package "systemctl");
        nixos-install = lib.mkDefault (lib.getExe' pkgs.nixos-install-tools "nixos-install");
        sgdisk = lib.mkDefault (lib.getExe' pkgs.gptfdisk "sgdisk");
        umount = lib.mkDefault (lib.getExe' pkgs.util-linux "umount");
        vgchange = lib.mkDefault (lib.getExe' pkgs.lvm2 "vgchange");
        zpool = lib.mkDefault (lib.getExe' config.boot.zfs.package "zpool");
      })
    ];

    environment.etc."kcore/node-agent.yaml" = lib.mkIf (!runtime) { source = configFile; };

    environment.systemPackages = [ cfg.package ];

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [
      (klib.listenPort cfg.settings.listen)
    ];

    systemd.services.kcore-agent = {
      description = "kcore node agent";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # The unit reads the file from /etc; restart it when the rendered file changes.
      restartTriggers = [ configFile ];
      # Runtime mode: the installer's file is the node's identity; without it there is
      # nothing to run (a failed condition shows in `systemctl status`, no restart loop).
      unitConfig = lib.mkIf runtime { ConditionPathExists = configPath; };
      # Tools the agent and disko's scripts call by name (disko's create scripts expect them):
      # disko; lsblk (util-linux); LVM and LUKS for inventory and provision-disk; `ip -json
      # addr` (iproute2); nix, which disko's CLI builds its scripts with; and nix and
      # nixos-rebuild for a `settings.binaries` entry left unset (then resolved on PATH).
      # NixOS adds coreutils, findutils, grep, sed and systemd to every unit's PATH itself.
      # No thin-provisioning-tools: nixpkgs' lvm.nix points lvm.conf's thin_check_executable
      # (and friends) at them when services.lvm.boot.thin.enable, for every lvm command.
      path = [
        cfg.diskoPackage
        pkgs.util-linux
        pkgs.lvm2
        pkgs.cryptsetup
        pkgs.iproute2
        config.nix.package
        config.system.build.nixos-rebuild
      ]
      ++ lib.optional (config.kcore.storage.backend == "zfs") config.boot.zfs.package;
      environment = {
        # Builds started by the agent's children (disko building its scripts,
        # nix-instantiate) go through nix-daemon, which sandboxes them in its own namespaces;
        # a root client would otherwise build in-process and need the namespaces
        # RestrictNamespaces= denies.
        # No NIX_PATH: disko's own wrapper prefixes `nixpkgs=<the nixpkgs it was built
        # from>` (disko package.nix `--prefix NIX_PATH`).
        NIX_REMOTE = "daemon";
      };
      serviceConfig = {
        ExecStart = lib.escapeShellArgs (
          [ (lib.getExe' cfg.package "kcore-agent") ]
          ++ lib.optionals runtime [
            "--defaults"
            configFile
          ]
          ++ [
            "--config"
            configPath
          ]
        );
        Restart = "on-failure";
        RestartSec = 5;
        # LogsDirectory= creates /var/log/kcore-agent: the transient units of long operations
        # (apply-disko's disko, apply-nix's rebuild steps; they get this unit's PATH) append to
        # <unit>.log there (opened by PID 1, so the directory must exist before the first
        # apply), and the agent follows and streams those files. Not a relaxation: no
        # namespace or user comes with it for a root unit.
        LogsDirectory = "kcore-agent";

        # Relaxed on purpose (the agent manages disks and activates systems):
        # - runs as root: partitions, LUKS, LVM and ZFS need CAP_SYS_ADMIN and raw block devices,
        #   so no User=, no CapabilityBoundingSet= and no DevicePolicy= narrowing;
        # - no ProtectSystem=, ProtectHome=, PrivateTmp=, PrivateDevices=, ProtectKernelTunables=,
        #   ProtectKernelModules=, ProtectControlGroups=: each one gives the unit its own mount
        #   namespace, and the file systems disko mounts for new volumes must be visible to the
        #   whole host, not only inside the agent's namespace (mounts made in a unit's namespace
        #   do not propagate back to the host); lvm and zpool also write /sys and load modules;
        # - PrivateDevices= stays false and there is no DeviceAllow=: the agent creates and
        #   opens partitions, LUKS mappings, LVs and zvols whose device nodes appear at run time;
        # - no ReadWritePaths= (nor ReadOnlyPaths=, PrivateMounts=): without ProtectSystem= the
        #   whole file system is writable, and these would themselves create the mount
        #   namespace avoided above. The agent writes settings.nix.configPath (in /etc/nixos
        #   by default), settings.disko.stateDir and the rest of /var/lib/kcore (management
        #   mode, operations, PKI at install) and /var/log/kcore-agent;
        # - no MemoryDenyWriteExecute=: it is inherited by the children (nix, lvm, zfs tools,
        #   disko's shell scripts), which are not audited for W^X;
        # - UMask 0022, not 0077: volume mount points it creates must stay traversable by the
        #   hypervisor; the agent writes private keys with an explicit 0600 mode.
        UMask = "0022";

        # Kept:
        NoNewPrivileges = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        RestrictRealtime = true;
        # disko and nixos-rebuild run in transient units started through systemd-run (by
        # PID 1), so they are not affected by these filters.
        RestrictNamespaces = true;
        SystemCallArchitectures = "native";
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
          # udev settle (used by disko) and NIC inventory talk netlink.
          "AF_NETLINK"
        ];
      };
    };
  };
}
