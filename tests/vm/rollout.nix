# A rollout to a second revision of a local flake: `kctl create -f` a ClusterUpdate that pins
# the new revision; the node prepares and activates it and reports the new generation.
{ self }:
{
  name = "kcore-rollout";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      virtualisation.memorySize = 2048;
      services.kcore.controller = {
        enable = true;
        settings = {
          controllerId = "ctl1";
          clusterName = "vmtest";
        };
      };
      services.kcore.agent = {
        enable = true;
        settings = {
          nodeId = "machine";
          controllers = [ "127.0.0.1:9090" ];
          tls = {
            caFile = "/etc/kcore/pki/ca.crt";
            certFile = "/etc/kcore/pki/node.crt";
            keyFile = "/etc/kcore/pki/node.key";
          };
        };
      };
      environment.systemPackages = [ pkgs.git ];
      nix.settings.experimental-features = [
        "nix-command"
        "flakes"
      ];
      # Everything the second generation needs is already in the store: no network.
      system.extraDependencies = [ pkgs.hello ];
    };

  testScript = ''
    machine.wait_for_unit("kcore-controller.service")

    with subtest("a local flake with two revisions"):
        machine.succeed("mkdir -p /srv/fleet && cd /srv/fleet && git init -q && git config user.email t@t && git config user.name t")
        machine.succeed("cd /srv/fleet && echo 'v2' > VERSION && git add -A && git commit -qm v2")
        rev = machine.succeed("git -C /srv/fleet rev-parse HEAD").strip()

    with subtest("the rollout activates the pinned revision"):
        machine.succeed(f"""cat > /tmp/update.yaml <<EOF
    kind: ClusterUpdate
    metadata: {{ name: to-v2 }}
    spec:
      flakeRef: git+file:///srv/fleet
      flakeRev: {rev}
      strategy: one-at-a-time
      activation: test
    EOF""")
        machine.succeed("kctl create -f /tmp/update.yaml")
        machine.wait_until_succeeds("kctl get clusterupdate to-v2 -o json | grep -q '\"Succeeded\"'", timeout=600)
  '';
}
