# kcore.storage: the node's VM-volume storage backend and its names, its day-2 disko fragments
# and the runtime support the backend needs.
#
# This is the one place a node's storage is declared: the agent's `settings.storage` is derived
# from it (agent.nix), and the disko fragments are merged into `disko.devices` with the
# install-time layout. `layout`/`diskoFragments` need a disko NixOS module in the
# configuration, whichever one the consumer imports (an assertion says so when there is none);
# the rest (`enable`: volume directories, ZFS, LVM thin support) needs nothing else.
{
  config,
  options,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.kcore.storage;
  klib = import ./lib.nix { inherit lib; };

  # A fragment is what kcore-disko renders and the agent keeps under /var/lib/kcore/disko: a file
  # (or the attribute set it evaluates to) of the form `{ disko.devices = { ... }; }`.
  fragmentType = lib.types.either lib.types.path (lib.types.attrsOf lib.types.anything);
  allFragments = lib.optional (cfg.layout != null) cfg.layout ++ cfg.diskoFragments;
  fragmentValue = f: if builtins.isAttrs f then f else import f;
  fragmentDevices = f: (fragmentValue f).disko.devices or { };
  badFragments = lib.filter (
    f: !((fragmentValue f) ? disko.devices)
  ) allFragments;

  # Thin pools declared by the fragments (disko's lvm_vg type: lvs.<name>.lvm_type = "thin-pool").
  fragmentThinPools = lib.concatMap (
    f:
    lib.concatMap (
      vg: lib.filter (lv: (lv.lvm_type or null) == "thin-pool") (lib.attrValues (vg.lvs or { }))
    ) (lib.attrValues ((fragmentDevices f).lvm_vg or { }))
  ) allFragments;

  thin = cfg.backend == "lvm" && cfg.lvm.thinProvisioning;

  # The prebuilt systems `kctl node install` puts on a node (services.kcore.agent.nodeConfig
  # = "runtime", agent.nix) are one closure for every node: the pool the operator named
  # (`--zfs-pool-name`) is not known at build time, so it is not a static
  # `boot.zfs.extraPools` entry; the installer writes it to `zfsPoolsFile` and
  # kcore-zfs-import.service imports what that file names. `or`: storage.nix also works
  # without agent.nix.
  runtimeFiles = (config.services.kcore.agent.nodeConfig or "settings") == "runtime";
  zfsPoolsFile = "/etc/kcore/zfs-pools";
  # Read line by line; every name is checked against ZFS's pool-name rules (zpool-create(8):
  # a letter first, then letters, digits, `_`, `-`, `.`, `:`; `mirror`, `raidz`, `draid`,
  # `spare` and `log` reserved, also as prefixes but `log`, and `c<digit>...` which looks like
  # a disk, libzfs zfs_namecheck.c `pool_namecheck`; at most 255 characters) before it
  # is an argument, always one quoted argument. Space, also allowed by ZFS, is refused: the
  # installer never writes one. The import flags are nixpkgs' import units' (`zpool import -d
  # <devNodes> -N`, nixos/modules/tasks/filesystems/zfs.nix `poolImport`), retried for 60 s as
  # there while the pool's disks may not be discovered yet; no `-f`: the install exports the
  # pool cleanly before its reboot.
  zfsImportScript = pkgs.writeShellScript "kcore-zfs-import" ''
    set -u
    zpool=${lib.escapeShellArg "${config.boot.zfs.package}/bin/zpool"}
    pools=${lib.escapeShellArg zfsPoolsFile}
    status=0
    while IFS= read -r pool || [ -n "$pool" ]; do
      [ -n "$pool" ] || continue
      if ! [[ "$pool" =~ ^[A-Za-z][A-Za-z0-9_.:-]*$ ]] || [ "''${#pool}" -gt 255 ]; then
        echo "kcore-zfs-import: $pools: invalid pool name '$pool' (a letter, then letters, digits, _ - . :); skipped" >&2
        status=1
        continue
      fi
      case "$pool" in
        mirror* | raidz* | draid* | spare* | log | c[0-9]*)
          echo "kcore-zfs-import: $pools: '$pool' is a name ZFS reserves; skipped" >&2
          status=1
          continue
          ;;
      esac
      if "$zpool" list "$pool" >/dev/null 2>&1; then
        echo "ZFS pool $pool already imported"
        continue
      fi
      imported=0
      for _ in $(seq 1 60); do
        if "$zpool" import -N -d /dev/disk/by-id "$pool"; then
          imported=1
          break
        fi
        sleep 1
      done
      if [ "$imported" = 1 ]; then
        echo "Successfully imported $pool"
      else
        echo "kcore-zfs-import: could not import ZFS pool $pool from /dev/disk/by-id" >&2
        status=1
      fi
    done < "$pools"
    exit "$status"
  '';

  # Whether some disko NixOS module (the consumer's own, or this flake's input) is imported.
  hasDisko = options ? disko.devices;

  # Whether some fragment declares the device the backend's names point at.
  declares = type: name: lib.any (f: ((fragmentDevices f).${type} or { }) ? ${name}) allFragments;
  backendDevice =
    {
      filesystem = null;
      lvm = {
        type = "lvm_vg";
        name = cfg.lvm.vgName;
        option = "lvm.vgName";
      };
      zfs = {
        type = "zpool";
        name = cfg.zfs.poolName;
        option = "zfs.poolName";
      };
    }
    .${cfg.backend};
in
{
  options.kcore.storage = {
    enable = lib.mkEnableOption ''
      the VM-volume storage of a kcore node: its directories, the management-mode file and the
      backend's boot support (ZFS pool import, LVM thin tools). `services.kcore.agent` turns it
      on in managed mode. `layout` and `diskoFragments` are merged into `disko.devices` either way
    '';

    backend = lib.mkOption {
      type = lib.types.enum [
        "filesystem"
        "lvm"
        "zfs"
      ];
      default = "filesystem";
      description = ''
        Where VM volumes live: image files under `filesystemVolumeDir`, LVM logical volumes in
        `lvm.vgName`, or ZFS volumes under `zfs.poolName`/`zfs.datasetPrefix`.
      '';
    };

    filesystemVolumeDir = lib.mkOption {
      type = klib.plainPath;
      default = "/var/lib/kcore/volumes";
      description = ''
        Directory for volume files (backend `filesystem`). Further volume mounts added on day 2
        follow the pattern `/var/lib/kcore/volumes1`, `volumes2`, ...
      '';
    };

    imageCacheDir = lib.mkOption {
      type = klib.plainPath;
      default = "/var/lib/kcore/images";
      description = "Directory where downloaded VM images are cached.";
    };

    lvm = {
      vgName = lib.mkOption {
        type = lib.types.str;
        default = "vg_kcore";
        description = "Volume group holding VM volumes (backend `lvm`).";
      };
      lvPrefix = lib.mkOption {
        type = lib.types.str;
        default = "kcore-";
        description = "Prefix of the logical volumes kcore creates; other LVs in the group are left alone.";
      };
      thinProvisioning = lib.mkOption {
        type = lib.types.bool;
        default = fragmentThinPools != [ ];
        defaultText = lib.literalMD "`true` when a disko fragment declares an LV with `lvm_type = \"thin-pool\"`";
        description = "Install the thin-provisioning tools (`thin_check`, ...) in the system and the initrd.";
      };
    };

    zfs = {
      poolName = lib.mkOption {
        type = lib.types.str;
        default = "tank0";
        description = ''
          ZFS pool holding VM volumes (backend `zfs`); imported at boot (`boot.zfs.extraPools`).
          Systems whose agent has `nodeConfig = "runtime"` import the pools named in
          /etc/kcore/zfs-pools instead (kcore-zfs-import.service), which the installer writes.
        '';
      };
      datasetPrefix = lib.mkOption {
        type = lib.types.str;
        default = "kcore";
        description = "Dataset under the pool where kcore creates volumes.";
      };
    };

    layout = lib.mkOption {
      type = lib.types.nullOr fragmentType;
      default = null;
      example = lib.literalExpression "./disko.nix";
      description = ''
        The node's install-time disko layout (OS disk and data disks), `{ disko.devices = { ... }; }`
        as `kcore-disko` renders it for the installer (a file, or the attribute set itself).
        Merged into `disko.devices`, like `diskoFragments`.
      '';
    };

    diskoFragments = lib.mkOption {
      type = lib.types.listOf fragmentType;
      default = [ ];
      example = lib.literalExpression "[ ./disko/data1.nix ]";
      description = ''
        Day-2 disko fragments of this node, each `{ disko.devices = { ... }; }` as rendered by
        `kcore-disko` (a file, or the attribute set itself). They are merged into
        `disko.devices`, so the volumes they create are mounted on every boot. Copy the
        fragments `kctl node apply-disko` applied (`/var/lib/kcore/disko/*.nix` on the node) into
        the host's configuration. Needs `managementMode = "controller-managed"`.
      '';
    };

    managementMode = lib.mkOption {
      type = lib.types.enum [
        "installer-only"
        "controller-managed"
      ];
      default = "installer-only";
      description = ''
        Content written to `managementModeFile` when that file does not exist yet. An existing
        file is never overwritten by a rebuild (it is the node's runtime state: change it on
        the node). `installer-only` refuses every `apply-disko`; `controller-managed` allows
        additive changes only.
      '';
    };

    managementModeFile = lib.mkOption {
      type = klib.plainPath;
      default = "/var/lib/kcore/disko-management-mode";
      description = "File holding the disko management mode, read by the agent on every request (runtime state, so under /var/lib).";
    };
  };

  config = lib.mkMerge [
    {
      assertions = [
        {
          assertion = allFragments == [ ] || hasDisko;
          message = ''
            kcore.storage.layout / diskoFragments are set, but no disko NixOS module is imported
            (the option disko.devices does not exist). Import one, e.g. your flake's
            `disko.nixosModules.disko` (with `kcore.inputs.disko.follows = "disko"`), or
            `kcore.inputs.disko.nixosModules.disko`; see docs/nixos.md.
          '';
        }
        {
          assertion = badFragments == [ ];
          message = ''
            kcore.storage.layout / diskoFragments: ${toString (lib.length badFragments)} fragment(s) have
            no `disko.devices` attribute. Each fragment must be `{ disko.devices = { ... }; }`, as
            kcore-disko renders it.
          '';
        }
        {
          assertion = cfg.diskoFragments == [ ] || cfg.managementMode == "controller-managed";
          message = ''
            kcore.storage.diskoFragments is set while kcore.storage.managementMode is
            "installer-only": day-2 fragments exist only on controller-managed nodes. Set
            kcore.storage.managementMode = "controller-managed" (and the node's
            ${cfg.managementModeFile}), or put the install-time layout in kcore.storage.layout.
          '';
        }
      ];
    }

    # Only when a disko module declares the option: setting an undeclared option is an error
    # even under mkIf. `options` is computed from declarations alone, so this is no recursion.
    (lib.optionalAttrs hasDisko {
      disko.devices = lib.mkMerge (map fragmentDevices allFragments);
    })

    (lib.mkIf cfg.enable {
      # No hostId assertion for ZFS: nixpkgs' zfs.nix asserts "ZFS requires networking.hostId
      # to be set" itself.
      assertions = [
        {
          assertion =
            allFragments == [ ]
            || backendDevice == null
            || declares backendDevice.type backendDevice.name;
          message = ''
            kcore.storage.backend = "${cfg.backend}" names ${backendDevice.type or ""} ${builtins.toJSON (backendDevice.name or "")},
            but no fragment in kcore.storage.layout / diskoFragments declares it. Set
            kcore.storage.${backendDevice.option or "backend"} to the layout's name, or re-render the layout
            for this backend with kcore-disko.
          '';
        }
      ];

      # `f` creates the file with this content only when it does not exist: a rebuild never
      # overwrites the mode an operator (or the controller) set on the node.
      systemd.tmpfiles.rules = [
        "d /var/lib/kcore 0755 root root -"
        "f ${cfg.managementModeFile} 0644 root root - ${cfg.managementMode}"
        "d ${cfg.imageCacheDir} 0755 root root -"
      ]
      ++ lib.optional (cfg.backend == "filesystem") "d ${cfg.filesystemVolumeDir} 0755 root root -";

      boot.supportedFilesystems = lib.mkIf (cfg.backend == "zfs") { zfs = true; };
      # The volume pool usually has no file system in fileSystems, so import it explicitly:
      # by name in a system configured in Nix, from the installer's file in a prebuilt one.
      boot.zfs.extraPools = lib.mkIf (cfg.backend == "zfs" && !runtimeFiles) [ cfg.zfs.poolName ];

      # Ordered as nixpkgs' own zfs-import-<pool> units (nixos/modules/tasks/filesystems/zfs.nix
      # `createImportService`: requires/after udev-settle, after modules-load, before and
      # wanted by local-fs.target, no default dependencies, oneshot RemainAfterExit), and as
      # they are through zfs-import.target: before zfs-mount.service (zfs.target's mounts) and
      # the agent, which opens the pool.
      systemd.services.kcore-zfs-import = lib.mkIf (cfg.backend == "zfs" && runtimeFiles) {
        description = "Import the ZFS pools named in ${zfsPoolsFile}";
        requires = [ "systemd-udev-settle.service" ];
        after = [
          "systemd-udev-settle.service"
          "systemd-modules-load.service"
        ];
        before = [
          "local-fs.target"
          "zfs-import.target"
          "zfs-mount.service"
          "kcore-agent.service"
        ];
        wantedBy = [
          "local-fs.target"
          "zfs-import.target"
        ];
        unitConfig = {
          DefaultDependencies = "no";
          ConditionPathExists = zfsPoolsFile;
        };
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = zfsImportScript;
        };
      };

      # nixpkgs' lvm.nix installs thin-provisioning-tools (system and initrd) and points
      # lvm.conf at them.
      services.lvm.boot.thin.enable = lib.mkIf thin true;
    })
  ];
}
