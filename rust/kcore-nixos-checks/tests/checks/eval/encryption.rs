//! kcore.diskEncryption: TPM2 unlock enrolled at install (PCRs 0+2+7, a re-enrol command, the
//! boot editor off), key-file unlock from the installer's key device, and the removed
//! first-boot enrolment.

use super::*;

#[test]
fn tpm2_unlock_is_enrolled_at_install_and_reenrolled_with_pcrs_0_2_7() {
    let Some(h) = Harness::get("tpm2_unlock_is_enrolled_at_install_and_reenrolled_with_pcrs_0_2_7")
    else {
        return;
    };
    let out = h.outputs(&encrypted(json!({})));
    assert_eq!(out["initrdSystemd"], json!(true));
    // The device is the same on every node (disko's partlabel of kcore-disko's OS disk).
    assert_eq!(
        out["luks"]["crypted"],
        json!({
            "device": "/dev/disk/by-partlabel/disk-os-root",
            "crypttabExtraOpts": ["tpm2-device=auto"],
            "keyFile": null,
            "keyFileSize": null,
            "allowDiscards": false
        })
    );
    // Nothing enrols on the installed system any more.
    assert_eq!(out["units"]["kcore-tpm2-enroll"], Value::Null);
    assert_eq!(out["systemdBootEditor"], json!(false));
    let script = out["tpm2ReenrollScript"].as_str().unwrap();
    let want = format!(
        "exec {} --wipe-slot=tpm2 \\\n  --tpm2-device=auto --tpm2-pcrs=0+2+7 /dev/disk/by-partlabel/disk-os-root",
        fake("systemd", "systemd-cryptenroll")
    );
    assert!(script.contains(&want), "{script}");
    let tmpfiles: Vec<&str> = out["tmpfiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(tmpfiles.contains(&"d /etc/kcore/recovery 0700 root root -"));
    assert!(tmpfiles.contains(&"z /etc/kcore/recovery/luks-recovery-key.txt 0400 root root -"));

    // Other PCRs reach the re-enrol command.
    let out = h.outputs(&encrypted(json!({ "tpm2Pcrs": [7, 11] })));
    let script = out["tpm2ReenrollScript"].as_str().unwrap();
    assert!(script.contains("--tpm2-pcrs=7+11 "), "{script}");
}

#[test]
fn key_file_unlock_reads_the_installers_key_device() {
    let Some(h) = Harness::get("key_file_unlock_reads_the_installers_key_device") else {
        return;
    };
    let out = h.outputs(&encrypted(json!({ "unlock": "keyFile" })));
    assert_eq!(
        out["luks"]["crypted"]["keyFile"],
        json!("/dev/disk/by-partlabel/kcore-luks-key")
    );
    assert_eq!(out["luks"]["crypted"]["keyFileSize"], json!(4096));
    assert_eq!(out["luks"]["crypted"]["crypttabExtraOpts"], json!([]));
    assert_eq!(out["tpm2ReenrollScript"], Value::Null);
    assert_eq!(out["initrdSystemd"], json!(false));
}

/// temporaryKeyFile (the first-boot enrolment's key) is removed with a message saying why.
#[test]
fn the_first_boot_enrolment_option_is_removed_with_a_message() {
    let Some(h) = Harness::get("the_first_boot_enrolment_option_is_removed_with_a_message") else {
        return;
    };
    let failed = h.failed_assertions(&encrypted(
        json!({ "temporaryKeyFile": "/var/lib/kcore/luks-temporary.key" }),
    ));
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(
        failed[0].contains("kcore.diskEncryption.temporaryKeyFile")
            && failed[0].contains("enrols it during\n`kctl node install`"),
        "{}",
        failed[0]
    );
}
