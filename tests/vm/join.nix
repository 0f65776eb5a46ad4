# An agent joins a controller over mTLS, on two machines, with the operator's real steps
# (lib.nix): `kctl create cluster`, `kctl create csr` on the node, `kctl create node-cert`.
{ self }:
let
  vm = import ./lib.nix { inherit self; };
in
{
  name = "kcore-join";

  nodes = {
    controller = vm.controller;
    node =
      { pkgs, ... }:
      {
        imports = [ (vm.agent "node-1" "controller:9090") ];
        environment.systemPackages = [ pkgs.curl ];
      };
  };

  testScript = ''
    ${vm.helpers}
    start_all()

    with subtest("the operator creates the cluster; the controller starts with its PKI"):
        start_controller(controller)

    with subtest("the node gets a certificate for its own key and starts"):
        start_agent(controller, node, "node-1")

    with subtest("the agent registers over mTLS and the node is Ready"):
        controller.wait_until_succeeds("kctl get node node-1 | grep -qw Ready", timeout=120)

    with subtest("a client without a certificate is refused in the TLS handshake"):
        # Not any failure (DNS, closed port, firewall): the controller is reachable, and the
        # handshake itself fails because no client certificate was sent. curl reports a
        # handshake failure as 35 (SSL connect error) or, with TLS 1.3, where the server
        # checks the certificate after the handshake, as 56 (receive error) with the alert.
        status, out = node.execute(
            "curl --silent --show-error --insecure https://controller:9090/v1/nodes 2>&1"
        )
        assert status in (35, 56), f"curl exit {status}: {out}"
        assert "alert" in out.lower() or "certificate" in out.lower(), out
  '';
}
