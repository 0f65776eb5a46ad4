# SSH access for the example hosts (imported by node-common.nix and controller/default.nix;
# a file, not a host). Key-only root login: `kcore.hosts.operatorSshKeys` are the operators'
# public keys, set in the host (or in a module of the consumer's own flake). Without any,
# only a key the installer wrote to /root/.ssh/authorized_keys lets anyone in, and the build
# warns.
{ config, lib, ... }:
let
  keys = config.kcore.hosts.operatorSshKeys;
in
{
  options.kcore.hosts.operatorSshKeys = lib.mkOption {
    type = lib.types.listOf lib.types.singleLineStr;
    default = [ ];
    example = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... ops@example.org" ];
    description = ''
      Public keys allowed to log in as root over SSH (passwords are off). Becomes
      `users.users.root.openssh.authorizedKeys.keys`.
    '';
  };

  config = {
    services.openssh = {
      enable = true;
      settings = {
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        PermitRootLogin = "prohibit-password";
      };
    };
    users.users.root.openssh.authorizedKeys.keys = keys;
    warnings = lib.optional (keys == [ ]) ''
      kcore.hosts.operatorSshKeys is empty: nobody can log into ${config.networking.hostName} over
      SSH unless /root/.ssh/authorized_keys exists on the machine. Set it to the operators'
      public keys (docs/nixos.md "Hosts").
    '';
  };
}
