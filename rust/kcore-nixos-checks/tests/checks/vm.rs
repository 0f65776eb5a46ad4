//! The VM tests' node configurations (tests/vm/*.nix), evaluated as the NixOS test framework
//! would build them, on nixpkgs' lib with tests/eval/qemu-vm-stub.nix standing in for
//! qemu-vm.nix (its types and its `mkVMOverride { }` of `boot.initrd.luks.devices`), each
//! specialisation through `extendModules`. The VMs themselves need a binary cache and KVM
//! (`nix flake check`); what can be decided by evaluation is checked here.

use serde_json::{Value, json};

use crate::support::{Harness, names_in};

fn vm_tests(h: &Harness) -> serde_json::Map<String, Value> {
    match h.flake("vmTests", &json!({}), "") {
        Ok(Value::Object(m)) => m,
        other => panic!("vmTests: {other:?}"),
    }
}

/// Every node of every VM test (and every specialisation) evaluates with no failed assertion,
/// and its test script renders (a Nix interpolation error in it would stop the check).
#[test]
fn every_vm_test_node_evaluates() {
    let Some(h) = Harness::get("every_vm_test_node_evaluates") else {
        return;
    };
    let tests = vm_tests(&h);
    let mut want: Vec<String> = names_in("tests/vm", false)
        .into_iter()
        .filter(|f| f.ends_with(".nix") && f != "lib.nix")
        .map(|f| f.trim_end_matches(".nix").to_string())
        .collect();
    want.sort();
    let mut have: Vec<String> = tests.keys().cloned().collect();
    have.sort();
    assert_eq!(have, want);
    for (name, t) in &tests {
        assert!(t["testScript"].as_str().unwrap().len() > 100, "{name}: {t}");
        for (node, r) in t["nodes"].as_object().unwrap() {
            assert_eq!(r["failed"], json!([]), "{name}.{node}");
            // Every kcore unit runs this flake's package (defined once per node even where
            // a node imports two kcore roles, as vm-apply-disko does).
            for (unit, exec) in r["execStart"].as_object().unwrap() {
                assert!(
                    exec.to_string().contains("-kcore-"),
                    "{name}.{node}: {unit} runs {exec}"
                );
            }
            for (spec, s) in r["specialisations"].as_object().unwrap() {
                assert_eq!(s["failed"], json!([]), "{name}.{node}.{spec}");
            }
        }
    }
}

/// Units the tests start themselves are not started at boot: `wantedBy` is a list, so only
/// `lib.mkForce [ ]` empties it.
#[test]
fn units_started_by_the_tests_are_not_wanted_at_boot() {
    let Some(h) = Harness::get("units_started_by_the_tests_are_not_wanted_at_boot") else {
        return;
    };
    let tests = vm_tests(&h);
    for (test, node, unit) in [
        ("join", "controller", "kcore-controller"),
        ("join", "node", "kcore-agent"),
        ("apply-disko", "machine", "kcore-controller"),
        ("apply-disko", "machine", "kcore-agent"),
    ] {
        assert_eq!(
            tests[test]["nodes"][node]["units"][unit],
            json!([]),
            "{test}.{node}: {unit}.wantedBy"
        );
    }
}

/// vm-luks-tpm2: the encrypted root survives qemu-vm's `mkVMOverride { }` (declared with
/// lib.mkVMOverride, as nixpkgs' systemd-initrd-luks-tpm2 test does), in the systemd initrd,
/// on firmware that measures PCR 7 (OVMFFull); the script enrols PCRs 0+2+7 as the
/// installer does and checks that a changed PCR 7 is refused and the recovery key opens it.
#[test]
fn luks_tpm2_test_opens_its_root_and_tests_a_changed_pcr() {
    let Some(h) = Harness::get("luks_tpm2_test_opens_its_root_and_tests_a_changed_pcr") else {
        return;
    };
    let t = &vm_tests(&h)["luks-tpm2"];
    let machine = &t["nodes"]["machine"];
    assert_eq!(machine["ovmf"], json!("OVMFFull-fd"));
    assert_eq!(machine["tpm"], json!(true));
    let luks = &machine["specialisations"]["luks"];
    assert_eq!(
        luks["luks"]["cryptroot"]["device"],
        json!("/dev/vdb"),
        "{luks}"
    );
    assert_eq!(
        luks["luks"]["cryptroot"]["crypttabExtraOpts"],
        json!(["tpm2-device=auto"])
    );
    assert_eq!(luks["initrdSystemd"], json!(true));
    // Enrolled as the install-mode agent does, before the encrypted boot: no first-boot unit.
    assert!(
        !luks["units"]
            .as_array()
            .unwrap()
            .contains(&json!("kcore-tpm2-enroll"))
    );
    // tpm2.nix (and qemu-vm with tpm.enable) add the TPM driver; the test does not.
    assert!(
        !machine["initrdModules"]
            .as_array()
            .unwrap()
            .contains(&json!("tpm_tis"))
    );
    let script = t["testScript"].as_str().unwrap();
    let extend = script
        .find("pcr7-extend")
        .expect("no PCR change in the script");
    let refused = script[extend..]
        .find("machine.fail(\"tpm2-token-opens /dev/vdb\")")
        .is_some();
    assert!(refused, "no refused unlock after the PCR change:\n{script}");
    assert!(script.contains("--tpm2-pcrs=0+2+7 /dev/vdb"), "{script}");
    let recovered = script[extend..]
        .find("--test-passphrase --key-file /run/recovery.key")
        .is_some();
    assert!(
        recovered,
        "the recovery key is not tried after the PCR change:\n{script}"
    );
}

/// vm-join asserts the TLS refusal itself, and vm-apply-disko the fragment file the agent
/// keeps, and carries the fragment's disko script in the VM's store.
#[test]
fn vm_test_assertions_check_the_real_outcome() {
    let Some(h) = Harness::get("vm_test_assertions_check_the_real_outcome") else {
        return;
    };
    let tests = vm_tests(&h);
    let join = tests["join"]["testScript"].as_str().unwrap();
    assert!(join.contains("assert status in (35, 56)"), "{join}");
    assert!(!join.contains("node.fail(\"curl"), "{join}");
    let apply = tests["apply-disko"]["testScript"].as_str().unwrap();
    assert!(apply.contains("/var/lib/kcore/disko/data1.nix"), "{apply}");
    assert!(
        apply.contains("/var/lib/kcore/disko-management-mode"),
        "{apply}"
    );
    assert_eq!(
        tests["apply-disko"]["nodes"]["machine"]["extraDependencies"],
        json!(1)
    );
    // Controller and agent on one machine: the package once in the system.
    let pkgs = &tests["apply-disko"]["nodes"]["machine"]["systemPackages"];
    assert_eq!(
        pkgs.as_array()
            .unwrap()
            .iter()
            .filter(|p| p.as_str().unwrap().starts_with("kcore-"))
            .count(),
        2,
        "agent and controller each add this flake's kcore: {pkgs}"
    );
}

/// vm-installed: the node runs the installed systems' runtime modes (agent with
/// `--defaults`, controller conditioned), and the script checks both skipped units before
/// the installer's files exist and the registration after.
#[test]
fn installed_test_runs_the_runtime_modes_and_checks_registration() {
    let Some(h) = Harness::get("installed_test_runs_the_runtime_modes_and_checks_registration")
    else {
        return;
    };
    let t = &vm_tests(&h)["installed"];
    let node = &t["nodes"]["node"];
    assert_eq!(node["failed"], json!([]));
    let exec = node["execStart"]["kcore-agent"].as_str().unwrap();
    assert!(
        exec.contains(" --defaults /nix/store/")
            && exec.ends_with(" --config /etc/kcore/node-agent.yaml"),
        "{exec}"
    );
    let script = t["testScript"].as_str().unwrap();
    let skipped = script.find("== \"no\"").expect("no skipped-unit check");
    let started = script
        .find("start kcore-agent.service")
        .expect("the agent is never started");
    assert!(skipped < started, "{script}");
    assert!(
        script.contains("kctl get node node-1 | grep -qw Ready"),
        "{script}"
    );
}
