# Test flake for kcore-agent's apply-nix tests (used through tests/support/nixos-rebuild).
# No nixpkgs here: the "system" is a plain derivation built with /bin/sh whose output is the
# node configuration kcore-agent wrote next to this file, so every applied configuration is
# a different store path. A configuration containing KCORE_TEST_FAIL_BUILD fails the build.
{
  # No inputs and nothing read from its own outputs (deadnix: no unused `self`).
  outputs = _: {
    packages.x86_64-linux.default = builtins.derivation {
      name = "kcore-test-system";
      system = "x86_64-linux";
      builder = "/bin/sh";
      config = builtins.readFile ./kcore-node.nix;
      args = [
        "-c"
        ''
          case "$config" in *KCORE_TEST_FAIL_BUILD*) echo "build failed on purpose" >&2; exit 1 ;; esac
          echo "$config" > "$out"
        ''
      ];
    };
  };
}
