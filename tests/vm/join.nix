# An agent joins a controller over mTLS, on two machines.
# The PKI is made the way an operator makes it (`kctl create cluster`, issue 5) on the
# controller machine; the node's key is generated on the node and only its CSR travels.
{ self }:
{
  name = "kcore-join";

  nodes = {
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
      # Started by the test once its PKI exists.
      systemd.services.kcore-controller.wantedBy = [ ];
    };

    node = {
      imports = [ self.nixosModules.default ];
      services.kcore.agent = {
        enable = true;
        openFirewall = true;
        settings = {
          nodeId = "node-1";
          controllers = [ "controller:9090" ];
          tls = {
            caFile = "/etc/kcore/pki/ca.crt";
            certFile = "/etc/kcore/pki/node.crt";
            keyFile = "/etc/kcore/pki/node.key";
          };
        };
      };
      systemd.services.kcore-agent.wantedBy = [ ];
    };
  };

  testScript = ''
    start_all()

    with subtest("the operator creates the cluster PKI"):
        controller.succeed("kctl create cluster --controller controller:9090 --context vmtest")
        controller.succeed("kctl rotate sub-ca --install-dir /var/lib/private/kcore-controller/pki")
        controller.systemctl("start kcore-controller")
        controller.wait_for_open_port(9090)

    with subtest("the node gets a certificate for its own key"):
        controller.succeed("kctl config view --ca > /tmp/ca.crt")
        controller.copy_from_vm("/tmp/ca.crt", "")
        node.copy_from_host("ca.crt", "/etc/kcore/pki/ca.crt")
        node.systemctl("start kcore-agent")
        node.wait_for_unit("kcore-agent.service")
        node.wait_for_open_port(9091)

    with subtest("the node registers and is Ready"):
        controller.wait_until_succeeds("kctl get nodes -o json | grep -q '\"node-1\"'")
        controller.wait_until_succeeds("kctl get node node-1 | grep -q Ready")
        # A client without a certificate is refused by the controller.
        node.fail("curl --fail --insecure https://controller:9090/v1/nodes")
  '';
}
