# The roles of tests/vm/rollout.nix's machine, the same in the test machine and in every
# revision of its fleet flake (which imports this file from its `kcore` input), so the
# controller and agent units do not change across revisions: kcore's controller and agent
# (lib.nix), git for the agent's `nix build` of git+file URLs, jq for the test script. The
# hostname keeps `machine` (the controller's certificate name) resolving to this machine
# through nss-myhostname once a fleet revision replaces the test driver's /etc/hosts.
{ self }:
{ pkgs, ... }:
let
  vm = import ./lib.nix { inherit self; };
in
{
  imports = [
    vm.controller
    (vm.agent "machine" "machine:9090")
  ];
  networking.hostName = "machine";
  systemd.services.kcore-agent.path = [ pkgs.git ];
  environment.systemPackages = [
    pkgs.git
    pkgs.jq
  ];
}
