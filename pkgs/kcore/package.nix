# All kcore binaries (kcore-agent, kcore-controller, kctl) from the Cargo workspace in rust/.
{
  lib,
  rustPlatform,
  makeWrapper,
  installShellFiles,
  nix,
  disko,
  lvm2,
  zfs,
  cryptsetup,
  systemd,
  util-linux,
}:
let
  workspace = lib.importTOML ../../rust/Cargo.toml;

  # Tests that read files outside rust/ (docs/, tests/support/: the Nix build's source is
  # rust/ alone), skipped in the Nix build and run by `cargo test` in the repository.
  # rust/kcore-nixos-checks (package::*) finds every test that reaches outside rust/ and
  # fails until it is listed here, and fails on a name that matches no test.
  testsNeedingTheRepository = [
    # kcore-nix: docs/kcore-nix.md
    "the_documentation_lists_every_tool"
    # kcore-api: docs/wire-protocol.md
    "the_wire_protocol_doc_lists_every_code"
    # kctl/tests/it/node.rs: tests/support stand-ins (disko, systemd-run, nixos-rebuild)
    "node_inventory_from_an_install_mode_agent_with_k_and_fingerprint"
    "apply_disko_shows_the_plan_then_applies_its_hash_with_disko_stand_in"
    "apply_nix_writes_and_rebuilds_with_nixos_rebuild_stand_in"
    "a_fingerprint_mismatch_names_both_fingerprints_plainly"
    "agent_inventory_and_agent_errors_are_printed_escaped"
    "an_install_mode_agent_reached_with_the_context_gets_the_k_and_fingerprint_hint"
    "k_against_a_managed_agent_says_to_drop_k"
    "a_managed_agent_with_another_identity_names_what_was_expected_and_got"
    "luks_mode_auto_is_tpm2_on_a_node_with_a_tpm_and_keyfile_without"
    # kctl/tests/it/install.rs: the install stand-ins in tests/support/install
    "a_failed_step_exits_3_naming_it_and_the_agent_keeps_serving"
    "a_refused_disk_exits_1_with_its_code_and_nothing_runs"
    "dry_run_prints_the_plan_and_writes_nothing_and_no_terminal_needs_yes"
    "k_prints_the_fingerprint_it_accepted"
    "on_a_terminal_the_operator_types_the_hostname"
    "run_controller_has_the_controller_csr_signed_by_the_new_route"
    "the_node_target_errors_name_the_flag_to_fix"
    "yes_installs_streams_steps_stores_the_recovery_key_and_reboots"
    "zfs_mirror_flags_reach_the_layout_and_the_installed_config"
    # kctl/tests/it/update.rs: the fleet flake in tests/support/fleet, scripts/demo-rollout.sh
    "update_cluster_apply_waits_for_approve_and_a_failed_rollout_exits_1"
    "update_cluster_get_watch_prints_each_change_until_the_rollout_ends_and_exits_1_when_it_failed"
    "update_cluster_plan_shows_targets_waves_and_each_agents_evaluation_and_changes_nothing"
    "demo_rollout_script_plans_applies_and_halts_on_the_failing_revision"
    # kcore-agent/tests/it/rollout.rs: the fleet flake and stand-ins in tests/support/fleet
    "rollout_prepare_builds_the_pinned_host_and_fails_for_a_missing_one_with_fleet_flake"
    "rollout_activate_switches_to_a_new_generation_with_fleet_flake"
    "rollout_activation_failure_reverts_to_the_previous_generation_with_fleet_flake"
    "rollout_degraded_system_reverts_and_names_the_failed_units_with_fleet_flake"
    "rollout_health_that_never_arrives_reverts_after_the_timeout_with_fleet_flake"
    "rollout_kernel_change_boots_a_trial_and_a_healthy_one_becomes_the_default_with_fleet_flake"
    "rollout_kernel_change_unhealthy_after_the_trial_boot_reverts_with_one_reboot_with_fleet_flake"
    "rollout_agent_restart_mid_activation_reattaches_without_a_second_activation_with_fleet_flake"
    "rollout_a_trial_entry_that_never_comes_up_falls_back_and_reverts_with_fleet_flake"
    "rollout_switch_answered_100_falls_back_to_a_trial_boot_with_fleet_flake"
    # kcore-agent/tests/it/rollout_fleet.rs: a controller and five agents on the fleet flake
    "rollout_fleet_one_at_a_time_moves_five_real_agents_each_activated_once_with_fleet_flake"
    "rollout_fleet_a_failing_activation_halts_and_that_node_is_reverted_with_fleet_flake"
    "rollout_fleet_an_agent_restarted_mid_step_reattaches_and_the_rollout_succeeds_with_fleet_flake"
    # kcore-agent/tests/it (tls, disko, nix, ops, restricted): tests/support stand-ins
    "managed_mode_serves_admins_over_mtls_with_real_inventory"
    "managed_mode_refuses_no_cert_other_ca_and_expired_cert"
    "nodes_read_only_their_own_inventory_and_never_apply"
    "install_mode_is_self_signed_pinnable_and_serves_inventory_only"
    "disko_dry_run_validates_deeply_plans_and_touches_nothing"
    "disko_management_modes_are_read_per_request_with_disko_stand_in"
    "disko_plan_hash_must_match_and_in_use_targets_are_refused_with_disko_stand_in"
    "disko_timeout_is_capped_and_kills_the_process_group_with_disko_stand_in"
    "apply_nix_validates_writes_and_rebuilds_with_nixos_rebuild_stand_in"
    "apply_nix_failed_test_never_switches_with_nixos_rebuild_stand_in"
    "apply_nix_runs_one_rebuild_at_a_time_with_nixos_rebuild_stand_in"
    "operation_results_survive_an_agent_restart_with_nixos_rebuild_stand_in"
    "apply_nix_timeout_stops_the_unit_with_systemd_run_and_systemctl_stand_ins"
    "a_deeply_nested_layout_gets_a_short_answer"
    "concurrent_evaluations_beyond_the_bound_are_refused_busy"
    "install_mode_closes_a_client_that_never_speaks"
    "messages_quote_only_the_submitted_text"
    "other_cluster_certificates_bad_paths_and_wrong_methods_get_envelopes"
    "runaway_evaluations_stop_at_their_bounds_and_the_agent_keeps_serving"
    "submitted_nix_reads_no_file_environment_or_network"
    "an_agent_restart_during_a_disko_apply_re_attaches_to_its_unit_with_disko_stand_in"
    "a_disko_unit_that_ended_while_the_agent_was_down_reports_its_exit_status_with_disko_stand_in"
    "lanes_refuse_a_second_disk_apply_but_not_system_work_beside_it_with_disko_stand_in"
  ];

  # Tools the binaries run by name when their configuration does not give a path: kctl's
  # `disko validate --deep` (nix-instantiate), the agent's inventory and disk commands (lsblk,
  # lvm, zpool/zfs, cryptsetup), systemd-run/systemctl for apply-nix, disko.
  runtimeTools = [
    nix
    disko
    lvm2
    zfs
    cryptsetup
    systemd
    util-linux
  ];
in
rustPlatform.buildRustPackage {
  pname = "kcore";
  inherit (workspace.workspace.package) version;

  # Only the Cargo workspace, without a local build directory: a change to the modules, the
  # hosts or the docs does not rebuild the binaries.
  src = lib.fileset.toSource {
    root = ../../rust;
    fileset = lib.fileset.difference ../../rust (lib.fileset.maybeMissing ../../rust/target);
  };

  cargoLock.lockFile = ../../rust/Cargo.lock;

  # The three binaries only, not the test-only crates (kcore-nixos-checks, the storage bed).
  cargoBuildFlags = [
    "--package"
    "kcore-agent"
    "--package"
    "kcore-controller"
    "--package"
    "kctl"
  ];

  # rusqlite bundles SQLite and ring builds its own assembly: only a C compiler is needed.
  nativeBuildInputs = [
    makeWrapper
    installShellFiles
  ];

  # kctl's completions, generated by the binary just built (`kctl completion SHELL`, from
  # the parser itself), installed where bash-completion, zsh and fish look
  # (nixpkgs pkgs/by-name/in/installShellFiles: share/bash-completion/completions,
  # share/zsh/site-functions, share/fish/vendor_completions.d). Runs the host binary, so
  # it assumes a native build (the package is not cross-compiled).
  postInstall = ''
    installShellCompletion --cmd kctl \
      --bash <("$out/bin/kctl" completion bash) \
      --zsh <("$out/bin/kctl" completion zsh) \
      --fish <("$out/bin/kctl" completion fish)
  '';

  # Every crate's tests except the two test-only crates, which drive the repository's Nix
  # tree and QEMU (they would only print SKIP here) ...
  cargoTestFlags = [
    "--workspace"
    "--exclude"
    "kcore-nixos-checks"
    "--exclude"
    "kcore-storage-bed"
  ];
  # ... and except the tests that need files outside rust/ (above).
  checkFlags = map (name: "--skip=${name}") testsNeedingTheRepository;
  doCheck = true;

  # As lanzaboote wraps lzbt: the tools are found without the caller's PATH. --suffix, so a
  # PATH the caller sets (the NixOS unit's `path`) still wins.
  postFixup = ''
    for bin in kcore-agent kcore-controller kctl; do
      wrapProgram "$out/bin/$bin" --suffix PATH : ${lib.makeBinPath runtimeTools}
    done
  '';

  meta = {
    description = "Install, join, store and roll out clusters of NixOS hypervisor nodes";
    license = lib.licenses.mit;
    mainProgram = "kctl";
    platforms = lib.platforms.linux;
  };
}
