//! kcore.diskEncryption: TPM2 unlock with first-boot enrollment, key-file unlock.

use super::*;

#[test]
fn tpm2_unlock_uses_systemd_initrd_and_first_boot_enrollment() {
    let Some(h) = Harness::get("tpm2_unlock_uses_systemd_initrd_and_first_boot_enrollment") else {
        return;
    };
    let out = h.outputs(&encrypted(json!({})));
    assert_eq!(out["initrdSystemd"], json!(true));
    assert_eq!(
        out["luks"]["crypted"],
        json!({
            "device": "/dev/disk/by-partlabel/disk-os-root",
            "crypttabExtraOpts": ["tpm2-device=auto"],
            "keyFile": null,
            "allowDiscards": false
        })
    );
    let unit = &out["units"]["kcore-tpm2-enroll"];
    assert_eq!(
        unit["unitConfig"]["ConditionPathExists"],
        json!("/var/lib/kcore/luks-temporary.key")
    );
    assert_eq!(unit["serviceConfig"]["Type"], json!("oneshot"));
    assert_eq!(unit["after"], json!(["cryptsetup.target", "tpm2.target"]));
    assert_eq!(
        unit["serviceConfig"]["ExecStart"],
        json!(format!("{FAKE_STORE}kcore-tpm2-enroll"))
    );
    let script = out["tpm2EnrollScript"].as_str().unwrap();
    let cryptsetup = fake("cryptsetup", "cryptsetup");
    // Order: prove the temporary key still opens the volume; enroll the PCR-bound slot;
    // prove the TPM2 token alone opens it; only then drop the key's slot; the file last.
    let steps = [
        format!("if {cryptsetup} open --test-passphrase --key-file=\"$tmp\" \"$dev\"; then"),
        format!(
            "{} --unlock-key-file=\"$tmp\" --tpm2-device=auto",
            fake("systemd", "systemd-cryptenroll")
        ),
        "--tpm2-pcrs=7 --wipe-slot=tpm2 \"$dev\"".to_string(),
        format!(
            "{cryptsetup} open --test-passphrase --token-only --token-type systemd-tpm2 \"$dev\""
        ),
        format!("{cryptsetup} luksRemoveKey --key-file=\"$tmp\" \"$dev\""),
        "fi".to_string(),
        "rm --force -- \"$tmp\"".to_string(),
    ];
    let mut at = 0;
    for step in &steps {
        let found = script[at..]
            .find(step.as_str())
            .unwrap_or_else(|| panic!("step {step:?} missing or out of order in:\n{script}"));
        at += found + step.len();
    }
    assert!(
        script.contains("tmp=/var/lib/kcore/luks-temporary.key\n"),
        "{script}"
    );
    assert!(
        script.contains("dev=/dev/disk/by-partlabel/disk-os-root\n"),
        "{script}"
    );
    let tmpfiles: Vec<&str> = out["tmpfiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(tmpfiles.contains(&"d /etc/kcore/recovery 0700 root root -"));
    assert!(tmpfiles.contains(&"z /etc/kcore/recovery/luks-recovery-key.txt 0400 root root -"));
}

#[test]
fn key_file_unlock_has_no_tpm_enrollment() {
    let Some(h) = Harness::get("key_file_unlock_has_no_tpm_enrollment") else {
        return;
    };
    let out = h.outputs(&encrypted(json!({
        "unlock": "keyFile",
        "keyFile": "/dev/disk/by-id/usb-Key-0:0"
    })));
    assert_eq!(
        out["luks"]["crypted"]["keyFile"],
        json!("/dev/disk/by-id/usb-Key-0:0")
    );
    assert_eq!(out["luks"]["crypted"]["crypttabExtraOpts"], json!([]));
    assert_eq!(out["units"]["kcore-tpm2-enroll"], Value::Null);
    assert_eq!(out["initrdSystemd"], json!(false));
}
