# A node as `kctl node install` leaves it (hosts/installed-node.nix's runtime modes): the
# agent and controller units wait for the installer's files; once /etc/kcore/node-agent.yaml
# and /etc/kcore/tls/ are written as the install writes them, the agent runs with
# `--defaults <store file> --config /etc/kcore/node-agent.yaml` and registers. The
# controller unit stays inactive on this worker (no /etc/kcore/controller.yaml).
{ self }:
let
  vm = import ./lib.nix { inherit self; };
  tls = "/etc/kcore/tls";
in
{
  name = "kcore-installed";

  nodes = {
    controller = vm.controller;
    node = {
      imports = vm.kcoreModules;
      services.kcore.agent = {
        enable = true;
        nodeConfig = "runtime";
      };
      services.kcore.controller = {
        enable = true;
        nodeConfig = "runtime";
      };
    };
  };

  testScript = ''
    start_all()
    node.wait_for_unit("multi-user.target")

    with subtest("without the installer's files both units are skipped, not failed"):
        for unit in ["kcore-agent", "kcore-controller"]:
            assert node.succeed(f"systemctl show -P ConditionResult {unit}").strip() == "no"

    with subtest("the installer's files start the agent in managed mode"):
        controller.succeed("kctl create cluster --controller controller:9090 --context vmtest")
        controller.succeed("install -d -m 0700 ${vm.ctlPki}")
        for src, dst in [("ca.crt", "ca-bundle.crt"), ("controller.crt", "controller.crt"),
                         ("controller.key", "controller.key"), ("sub-ca.crt", "sub-ca.crt"),
                         ("sub-ca.key", "sub-ca.key")]:
            controller.succeed(f"install -m 0600 ${vm.ctlFiles}/{src} ${vm.ctlPki}/{dst}")
        controller.systemctl("start kcore-controller.service")
        controller.wait_for_open_port(9090)
        node.succeed("install -d -m 0755 ${tls}")
        node.succeed("kctl create csr --node-id node-1 --cluster vmtest --dns node"
                     " --key-out ${tls}/node.key --csr-out /tmp/node.csr")
        csr = node.succeed("cat /tmp/node.csr")
        controller.succeed(f"cat > /tmp/node.csr <<'EOF'\n{csr}EOF")
        controller.succeed("kctl create node-cert --node-id node-1 --csr /tmp/node.csr"
                           " --out /tmp/node.crt --ca-out /tmp/ca.crt")
        for name in ["node.crt", "ca.crt"]:
            pem = controller.succeed(f"cat /tmp/{name}")
            node.succeed(f"cat > ${tls}/{name} <<'EOF'\n{pem}EOF")
        node.succeed("cat > /etc/kcore/node-agent.yaml <<'EOF'\n"
                     "nodeId: node-1\ndcId: DC2\nhostname: node\nmode: managed\n"
                     "controllers: [\"controller:9090\"]\nlabels: {}\n"
                     "tls: {caFile: ${tls}/ca.crt, certFile: ${tls}/node.crt, keyFile: ${tls}/node.key}\n"
                     "storage: {backend: filesystem}\nEOF")
        node.systemctl("start kcore-agent.service")
        node.wait_for_open_port(9091)
        controller.wait_until_succeeds("kctl get node node-1 | grep -qw Ready", timeout=120)
        assert "DC2" in controller.succeed("kctl get nodes -o wide")
        assert node.succeed("systemctl show -P ConditionResult kcore-controller").strip() == "no"
  '';
}
