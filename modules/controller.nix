# services.kcore.controller: the controller daemon (HTTPS, port 9090), the cluster's state
# (SQLite in its StateDirectory) and authority (the sub-CA that signs node certificates).
#
# `settings` follows RFC 42 (freeform YAML, keys = the controller's serde fields, see
# docs/configuration.md) and is rendered to /etc/kcore/controller.yaml. The daemon runs as a
# dynamic user with no capabilities; everything it writes lives in its state directory.
#
# Keys: the operator's files (`credentials.*`, root-owned 0600 anywhere, sops/agenix paths
# included) reach the dynamic user through `LoadCredential=`: systemd copies them into
# $CREDENTIALS_DIRECTORY (/run/credentials/kcore-controller.service, readable only by the
# unit) before each start, and the rendered settings point there. The sub-CA is the
# exception: `kctl rotate sub-ca` makes the daemon rewrite it, so it lives in the state
# directory, seeded from `credentials.subCa*` on a start that finds it missing.
#
# `nodeConfig = "runtime"` (systems installed by `kctl node install --run-controller`, and
# every prebuilt node closure, hosts/installed-node.nix): the installer writes
# /etc/kcore/controller.yaml and /etc/kcore/controller/{ca,controller,sub-ca}.crt and
# controller.key itself, the unit starts only when that file exists (so the same closure
# serves workers), and the sub-CA key is not installed: kcore-controller fetches it from a
# peer over mTLS on its first start (membership.rs) into /var/lib/kcore-controller. Files
# written before the unit ever ran cannot belong to a DynamicUser, so this mode runs as the
# static user `kcore-controller`, which tmpfiles makes the owner of /etc/kcore/controller
# (the daemon rewrites sub-ca.crt there on a rotation).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.kcore.controller;
  klib = import ./lib.nix { inherit lib; };
  settingsFormat = pkgs.formats.yaml { };

  stateDir = "/var/lib/kcore-controller";
  configPath = "/etc/kcore/controller.yaml";
  runtime = cfg.nodeConfig == "runtime";
  # The installer's certificate directory (contract: /etc/kcore/controller/*).
  runtimePkiDir = "/etc/kcore/controller";
  user = "kcore-controller";
  configFile = settingsFormat.generate "controller.yaml" (klib.dropNulls cfg.settings);

  # systemd's $CREDENTIALS_DIRECTORY of a system service (`%d`), a fixed path.
  credentialsDir = "/run/credentials/kcore-controller.service";

  # Credential name (the file name under credentialsDir) of each `credentials.*` option.
  credentialNames = {
    caFile = "ca-bundle.crt";
    certFile = "controller.crt";
    keyFile = "controller.key";
    subCaCertFile = "sub-ca.crt";
    subCaKeyFile = "sub-ca.key";
  };

  credentialOption =
    name: what:
    lib.mkOption {
      type = klib.runtimePath;
      default = "/var/lib/kcore/controller-pki/${credentialNames.${name}}";
      description = ''
        The operator's copy of the controller's ${what} (PEM): any path on the host, may stay
        root-owned 0600. Passed to the unit with `LoadCredential=` (the unit does not start
        while it is missing); never copied into the Nix store.
      '';
    };
  # The initial sub-CA: only read while the state directory has none, so it may be dropped
  # (set to null) once the controller has started with it.
  seedOption =
    name: what:
    lib.mkOption {
      type = lib.types.nullOr klib.runtimePath;
      default = "/var/lib/kcore/controller-pki/${credentialNames.${name}}";
      description = ''
        The operator's copy of the controller's ${what} (PEM), root-owned anywhere. Copied
        into the state directory (`settings.tls.${name}`) on a start that finds none there,
        through `LoadCredential=`. `null`: no seeding (the unit then needs no such file, e.g.
        after the first start, once the file may be removed from the host).
      '';
    };

  # Non-null credentials, as `LoadCredential=` entries.
  loadedCredentials = lib.filterAttrs (_: file: file != null) cfg.credentials;

  tlsOption =
    name: default: what:
    lib.mkOption {
      type = klib.runtimePath;
      inherit default;
      description = ''
        Path the daemon reads its ${what} from. The default is the unit's credential copy of
        `credentials.${name}`; change `credentials.${name}` rather than this.
      '';
    };
  subCaOption =
    name: what:
    lib.mkOption {
      type = klib.runtimePath;
      default = "${stateDir}/pki/${credentialNames.${name}}";
      description = ''
        Path of the controller's ${what} (PEM), in the state directory: `kctl rotate sub-ca`
        makes the daemon rewrite it. Seeded from `credentials.${name}` when missing at start.
      '';
    };
in
{
  options.services.kcore.controller = {
    enable = lib.mkEnableOption "the kcore controller";

    package = lib.mkPackageOption pkgs "kcore" { };

    credentials =
      lib.mapAttrs credentialOption {
        caFile = "CA bundle trusted for clients (root CA and sub-CAs)";
        certFile = "certificate";
        keyFile = "private key";
      }
      // lib.mapAttrs seedOption {
        subCaCertFile = "initial sub-CA certificate";
        subCaKeyFile = "initial sub-CA private key";
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
        `settings`: this module renders `settings` to `${configPath}` and hands the key
        files over with `LoadCredential=`. `runtime` (systems installed by `kctl node
        install`): the installer wrote `${configPath}` and `${runtimePkiDir}/`; `settings`
        and `credentials` are not used, the unit starts only when `${configPath}` exists and
        runs as the static user `${user}`, owner of `${runtimePkiDir}`.
      '';
    };

    settings = lib.mkOption {
      default = { };
      description = ''
        Contents of `${configPath}`, see `docs/configuration.md`. Keys are camelCase and must be
        keys the controller knows: it refuses to start on an unknown key. `null` values are
        left out, so the controller's own default applies.
      '';
      example = lib.literalExpression ''
        {
          controllerId = "ctl1";
          clusterName = "lab";
          dcId = "DC1";
          peers = [ "ctl2.example.org:9090" ];
          requireManualApproval = true;
        }
      '';
      type = lib.types.submodule {
        freeformType = settingsFormat.type;
        options = {
          controllerId = lib.mkOption {
            type = lib.types.nullOr (lib.types.strMatching "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?");
            default = null;
            example = "ctl1";
            description = "Identity of this controller (required with `nodeConfig = \"settings\"`).";
          };
          clusterName = lib.mkOption {
            type = lib.types.nullOr (lib.types.strMatching "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?");
            default = null;
            example = "lab";
            description = "Cluster name, the `<cluster>` in `kcore://<cluster>/<role>/<id>` certificate identities (required with `nodeConfig = \"settings\"`).";
          };
          dcId = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = null;
            example = "DC1";
            description = "Data centre of this controller; `null` leaves the controller's default (`default`).";
          };
          listen = lib.mkOption {
            type = lib.types.str;
            default = "0.0.0.0:9090";
            description = "Address and port the controller serves HTTPS on (keep the port above 1024: the unit has no capabilities).";
          };
          requireManualApproval = lib.mkOption {
            type = lib.types.bool;
            default = false;
            description = "Hold newly registered nodes as `Pending` until `kctl node approve`.";
          };
          peers = lib.mkOption {
            type = lib.types.listOf lib.types.str;
            default = [ ];
            example = [ "ctl2.example.org:9090" ];
            description = "Other controllers (`host:port`) to replicate state with.";
          };
          databasePath = lib.mkOption {
            type = klib.runtimePath;
            default = "${stateDir}/state.sqlite";
            description = "SQLite database; must lie in the state directory, the only place the unit may write.";
          };
          tls = {
            caFile = tlsOption "caFile" "${credentialsDir}/ca-bundle.crt" "CA bundle";
            certFile = tlsOption "certFile" "${credentialsDir}/controller.crt" "certificate";
            keyFile = tlsOption "keyFile" "${credentialsDir}/controller.key" "private key";
            subCaCertFile = subCaOption "subCaCertFile" "sub-CA certificate (signs node CSRs)";
            subCaKeyFile = subCaOption "subCaKeyFile" "sub-CA private key";
          };
        };
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion =
          runtime || (cfg.settings.controllerId != null && cfg.settings.clusterName != null);
        message = ''
          services.kcore.controller: settings.controllerId and settings.clusterName are required.
          Set both (e.g. "ctl1" and "lab"), or set services.kcore.controller.nodeConfig =
          "runtime" on a system installed by `kctl node install` (they are then read from
          ${configPath}).
        '';
      }
      {
        assertion = lib.hasPrefix "${stateDir}/" cfg.settings.databasePath;
        message = ''
          services.kcore.controller.settings.databasePath must be under ${stateDir}/ (the unit's
          StateDirectory, the only writable place for its dynamic user); it is ${builtins.toJSON cfg.settings.databasePath}.
        '';
      }
      {
        assertion = klib.listenPort cfg.settings.listen >= 1024;
        message = ''
          services.kcore.controller.settings.listen uses a privileged port, but the unit has no
          capabilities (CAP_NET_BIND_SERVICE). Use a port >= 1024, e.g. "0.0.0.0:9090".
        '';
      }
    ];

    environment.etc."kcore/controller.yaml" = lib.mkIf (!runtime) { source = configFile; };

    users = lib.mkIf runtime {
      users.${user} = {
        isSystemUser = true;
        group = user;
      };
      groups.${user} = { };
    };
    # The installer wrote these as root (key 0600); `Z` with mode `-` only hands them to the
    # service user, keeping each file's mode. They exist only on controller nodes.
    systemd.tmpfiles.rules = lib.mkIf runtime [ "Z ${runtimePkiDir} - ${user} ${user} -" ];

    environment.systemPackages = [ cfg.package ];

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [
      (klib.listenPort cfg.settings.listen)
    ];

    systemd.services.kcore-controller = {
      description = "kcore controller";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      restartTriggers = lib.optional (!runtime) configFile;
      # Runtime mode: only nodes installed with --run-controller have the file; the same
      # closure leaves the unit inactive on a worker.
      unitConfig = lib.mkIf runtime { ConditionPathExists = configPath; };
      serviceConfig = lib.mkMerge [
        (lib.mkIf runtime {
          User = user;
          Group = user;
          # sub-ca.crt is rewritten there by a sub-CA fetch or rotation (ProtectSystem=strict
          # makes /etc read-only otherwise).
          ReadWritePaths = [ runtimePkiDir ];
        })
        (lib.mkIf (!runtime) {
          LoadCredential = lib.mapAttrsToList (
            name: file: "${credentialNames.${name}}:${file}"
          ) loadedCredentials;
          # Seeds the sub-CA into the state directory on the first start (and after an operator
          # removed it); an existing one, possibly rotated, is never overwritten. Runs as the
          # dynamic user, inside the same sandbox.
          ExecStartPre =
            [
              (lib.escapeShellArgs [
                (lib.getExe' pkgs.coreutils "mkdir")
                "-p"
                "-m"
                "0700"
                (dirOf cfg.settings.tls.subCaKeyFile)
                (dirOf cfg.settings.tls.subCaCertFile)
              ])
            ]
            ++ map (
              name:
              lib.escapeShellArgs [
                (lib.getExe' pkgs.coreutils "cp")
                "--update=none"
                "${credentialsDir}/${credentialNames.${name}}"
                cfg.settings.tls.${name}
              ]
            ) (lib.filter (name: loadedCredentials ? ${name}) [
              "subCaKeyFile"
              "subCaCertFile"
            ]);
          DynamicUser = true;
        })
        {
          ExecStart = lib.escapeShellArgs [
            (lib.getExe' cfg.package "kcore-controller")
            "--config"
            configPath
          ];
          Restart = "on-failure";
          RestartSec = 5;

          StateDirectory = "kcore-controller";
          StateDirectoryMode = "0700";
          WorkingDirectory = stateDir;
          # Every node keeps one mTLS connection open for its heartbeats; the default soft
          # limit of 1024 descriptors would turn the 1,000th node away.
          LimitNOFILE = 65536;

          # No capabilities at all: it only serves a port above 1024 and writes its state dir.
          CapabilityBoundingSet = "";
          AmbientCapabilities = "";
          NoNewPrivileges = true;
          PrivateTmp = true;
          PrivateDevices = true;
          PrivateUsers = true;
          ProtectSystem = "strict";
          ProtectHome = true;
          ProtectHostname = true;
          ProtectClock = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          ProtectControlGroups = true;
          ProtectProc = "invisible";
          ProcSubset = "pid";
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
          ];
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          RemoveIPC = true;
          SystemCallArchitectures = "native";
          SystemCallFilter = [
            "@system-service"
            "~@privileged"
            "~@resources"
          ];
          UMask = "0077";
        }
      ];
    };
  };
}
