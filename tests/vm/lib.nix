# Shared by the VM tests: a machine module that runs a controller and/or an agent with the
# file locations `kctl` uses, and the Python steps that give them a real cluster PKI.
{ self }:
let
  inherit (self.inputs.nixpkgs) lib;
in
rec {
  # `kctl create cluster --context vmtest` writes the controller's files here (root's HOME).
  ctlFiles = "/root/.kcore/vmtest/controllers/ctl1";
  # Where the operator puts the controller's keys (services.kcore.controller.credentials'
  # default), root-owned 0600: the unit gets them through LoadCredential=, so nothing has to
  # be owned by its dynamic user.
  ctlPki = "/var/lib/kcore/controller-pki";
  # The node's mTLS files (hosts/node-common.nix uses the same place).
  nodePki = "/var/lib/kcore/pki";

  # kcore does not import disko's module itself; the tests use this flake's input.
  kcoreModules = [
    self.nixosModules.default
    self.inputs.disko.nixosModules.disko
  ];

  controller = {
    imports = kcoreModules;
    services.kcore.controller = {
      enable = true;
      openFirewall = true;
      settings = {
        controllerId = "ctl1";
        clusterName = "vmtest";
      };
    };
    # Started by the test once its PKI is in place. mkForce: wantedBy is a list, and a
    # plain `[ ]` would only be concatenated with the module's [ "multi-user.target" ].
    systemd.services.kcore-controller.wantedBy = lib.mkForce [ ];
  };

  agent = nodeId: controllerAddr: {
    imports = kcoreModules;
    services.kcore.agent = {
      enable = true;
      openFirewall = true;
      settings = {
        inherit nodeId;
        controllers = [ controllerAddr ];
        tls = {
          caFile = "${nodePki}/ca.crt";
          certFile = "${nodePki}/node.crt";
          keyFile = "${nodePki}/node.key";
        };
      };
    };
    # Started by the test once it has a certificate (mkForce, as above).
    systemd.services.kcore-agent.wantedBy = lib.mkForce [ ];
  };

  # Python helpers, put at the top of a test script (column 0) and called in its subtests.
  # start_controller: the operator creates the cluster on `ctl` and starts the controller.
  # start_agent: `node` makes its key and CSR (the key never leaves it), the operator on `ctl`
  # has the controller sign it, and the agent starts with the certificate.
  helpers = ''
    def start_controller(ctl):
        ctl.succeed(f"kctl create cluster --controller {ctl.name}:9090 --context vmtest")
        ctl.succeed("install -d -m 0700 ${ctlPki}")
        for src, dst in [("ca.crt", "ca-bundle.crt"), ("controller.crt", "controller.crt"),
                         ("controller.key", "controller.key"), ("sub-ca.crt", "sub-ca.crt"),
                         ("sub-ca.key", "sub-ca.key")]:
            ctl.succeed(f"install -m 0600 ${ctlFiles}/{src} ${ctlPki}/{dst}")
        ctl.systemctl("start kcore-controller.service")
        ctl.wait_for_open_port(9090)


    def start_agent(ctl, node, node_id):
        node.succeed("install -d -m 0700 ${nodePki}")
        node.succeed(f"kctl create csr --node-id {node_id} --cluster vmtest --dns {node.name}"
                     " --key-out ${nodePki}/node.key --csr-out /tmp/node.csr")
        csr = node.succeed("cat /tmp/node.csr")
        ctl.succeed(f"cat > /tmp/node.csr <<'EOF'\n{csr}EOF")
        ctl.succeed(f"kctl create node-cert --node-id {node_id} --csr /tmp/node.csr"
                    " --out /tmp/node.crt --ca-out /tmp/ca.crt")
        for name in ["node.crt", "ca.crt"]:
            pem = ctl.succeed(f"cat /tmp/{name}")
            node.succeed(f"cat > ${nodePki}/{name} <<'EOF'\n{pem}EOF")
        node.systemctl("start kcore-agent.service")
        node.wait_for_open_port(9091)
  '';
}
