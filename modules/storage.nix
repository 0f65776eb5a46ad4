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
        description = "ZFS pool holding VM volumes (backend `zfs`); imported at boot.";
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
      # The volume pool usually has no file system in fileSystems, so import it explicitly.
      boot.zfs.extraPools = lib.mkIf (cfg.backend == "zfs") [ cfg.zfs.poolName ];

      # nixpkgs' lvm.nix installs thin-provisioning-tools (system and initrd) and points
      # lvm.conf at them.
      services.lvm.boot.thin.enable = lib.mkIf thin true;
    })
  ];
}
