# The fleet flake of kcore's rollout tests (tests/support/fleet/README.md). The test rig copies
# this directory into a fresh git repository and commits a `hosts/<node>.json` per node, once
# per revision, so every revision is pinned by its commit (`git+file:///...?rev=<sha>`).
#
# No nixpkgs here: each toplevel is a plain derivation built with /bin/sh (this machine's Nix
# runs without a sandbox) that looks like a NixOS system where the agent reads it:
#
#   bin/switch-to-configuration   the STAND-IN next to this file, acting on $KCORE_FAKE_ROOT
#   kernel, initrd                links into a per-`kernel` string derivation, so two hosts
#   kernel-modules                (or revisions) with one kernel string share them, as nixpkgs'
#                                 toplevels share the kernel package
#   init-interface-version        from `init` (default "systemd 1"); a change makes the
#                                 stand-in exit 100 on switch/test, as the real one does
#   behaviour/{activate,health,seconds}   what the stand-in does when activating this system
#   host.json                     the file it came from (so every revision of a host whose
#                                 file changed is a new store path)
#   switch-inhibitors             the host's `inhibitors` ({"name": "value"}) as JSON, as
#                                 nixpkgs' system.switch.inhibitors writes it
#
# A host's file: {"activate": "ok|fail", "health": "ok|degraded|never", "kernel": "<string>",
# "seconds": <activation time>, "inhibitors": {...} (optional)}; a missing host is a missing attribute, so `nix build` fails.
{
  outputs = _: {
    nixosConfigurations =
      let
        hostFiles = builtins.readDir ./hosts;
        names = map (f: builtins.substring 0 (builtins.stringLength f - 5) f) (
          builtins.filter (f: builtins.match ".*\\.json" f != null) (builtins.attrNames hostFiles)
        );
        kernelOf =
          kernel:
          builtins.derivation {
            name = "kcore-fleet-kernel";
            system = "x86_64-linux";
            builder = "/bin/sh";
            inherit kernel;
            args = [
              "-c"
              ''
                /bin/mkdir -p "$out/lib/modules"
                echo "$kernel" > "$out/bzImage"
                echo "initrd for $kernel" > "$out/initrd"
                echo "$kernel" > "$out/lib/modules/version"
              ''
            ];
          };
        toplevelOf =
          name:
          let
            text = builtins.readFile (./hosts + "/${name}.json");
            host = builtins.fromJSON text;
            kernel = kernelOf (host.kernel or "6.6.0");
          in
          builtins.derivation {
            name = "kcore-fleet-system-${name}";
            system = "x86_64-linux";
            builder = "/bin/sh";
            hostJson = text;
            activate = host.activate or "ok";
            health = host.health or "ok";
            seconds = toString (host.seconds or 0);
            init = host.init or "systemd 1";
            # nixpkgs' system.switch.inhibitors, written as JSON as switchable-system.nix
            # does; absent when the host names none.
            inhibitors = if host ? inhibitors then builtins.toJSON host.inhibitors else "";
            stc = ./switch-to-configuration;
            inherit kernel;
            args = [
              "-c"
              ''
                /bin/mkdir -p "$out/bin" "$out/behaviour"
                /bin/cp "$stc" "$out/bin/switch-to-configuration"
                /bin/chmod +x "$out/bin/switch-to-configuration"
                /bin/ln -s "$kernel/bzImage" "$out/kernel"
                /bin/ln -s "$kernel/initrd" "$out/initrd"
                /bin/ln -s "$kernel/lib" "$out/kernel-modules"
                printf '%s' "$init" > "$out/init-interface-version"
                printf '%s' "$activate" > "$out/behaviour/activate"
                printf '%s' "$health" > "$out/behaviour/health"
                printf '%s' "$seconds" > "$out/behaviour/seconds"
                printf '%s' "$hostJson" > "$out/host.json"
                [ -z "$inhibitors" ] || printf '%s' "$inhibitors" > "$out/switch-inhibitors"
              ''
            ];
          };
      in
      builtins.listToAttrs (
        map (name: {
          inherit name;
          value.config =
            let
              host = builtins.fromJSON (builtins.readFile (./hosts + "/${name}.json"));
              kernel = kernelOf (host.kernel or "6.6.0");
            in
            {
              system.build.toplevel = toplevelOf name;
              # What a rollout plan evaluates instead of building (kcore-nix's
              # HOST_PLAN_EXPR), the same paths the toplevel links, under the option
              # names nixpkgs' kernel.nix uses.
              boot.kernelPackages.kernel = kernel;
              system.boot.loader.kernelFile = "bzImage";
              system.build.initialRamdisk = kernel;
              system.boot.loader.initrdFile = "initrd";
              system.modulesTree = "${kernel}/lib";
              system.switch.inhibitors = host.inhibitors or { };
            };
        }) names
      );
  };
}
