# Shared by the VM tests: a machine module that runs a controller and/or an agent with the
# file locations `kctl` uses, and the Python steps that give them a real cluster PKI.
{ self }:
rec {
  # `kctl create cluster --context vmtest` writes the controller's files here (root's HOME).
  ctlFiles = "/root/.kcore/vmtest/controllers/ctl1";
  # The controller's StateDirectory before systemd links /var/lib/kcore-controller to it
  # (DynamicUser); systemd chowns it to the dynamic user when the unit starts.
  ctlPki = "/var/lib/private/kcore-controller/pki";

  controller = {
    imports = [ self.nixosModules.default ];
    services.kcore.controller = {
      enable = true;
      openFirewall = true;
      settings = {
        controllerId = "ctl1";
        clusterName = "vmtest";
      };
    };
    # Started by the test once its PKI is in place.
    systemd.services.kcore-controller.wantedBy = [ ];
  };

  agent = nodeId: controllerAddr: {
    imports = [ self.nixosModules.default ];
    services.kcore.agent = {
      enable = true;
      openFirewall = true;
      settings = {
        inherit nodeId;
        controllers = [ controllerAddr ];
        tls = {
          caFile = "/etc/kcore/pki/ca.crt";
          certFile = "/etc/kcore/pki/node.crt";
          keyFile = "/etc/kcore/pki/node.key";
        };
      };
    };
    # Started by the test once it has a certificate.
    systemd.services.kcore-agent.wantedBy = [ ];
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
        node.succeed(f"kctl create csr --node-id {node_id} --cluster vmtest --dns {node.name}"
                     " --key-out /etc/kcore/pki/node.key --csr-out /tmp/node.csr")
        csr = node.succeed("cat /tmp/node.csr")
        ctl.succeed(f"cat > /tmp/node.csr <<'EOF'\n{csr}EOF")
        ctl.succeed(f"kctl create node-cert --node-id {node_id} --csr /tmp/node.csr"
                    " --out /tmp/node.crt --ca-out /tmp/ca.crt")
        for name in ["node.crt", "ca.crt"]:
            pem = ctl.succeed(f"cat /tmp/{name}")
            node.succeed(f"cat > /etc/kcore/pki/{name} <<'EOF'\n{pem}EOF")
        node.systemctl("start kcore-agent.service")
        node.wait_for_open_port(9091)
  '';
}
