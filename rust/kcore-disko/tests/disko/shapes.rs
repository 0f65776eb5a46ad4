//! Issue 16, one minimal reproducer each: the shapes disko's CLI accepts that kctl must
//! accept too (module-system wrappers, NixOS options beside `disko`, `imports`, defaulted
//! arguments; levels 2 and 3 reading the same devices), and the defects kctl must refuse
//! with a position in the user's file (relative key files, non-string ZFS properties, a disk
//! without content, a pool without member, an undeclared pool, an error inside disko's own
//! files).

use std::path::Path;

use kcore_disko::eval::{Finding, ValidateError, validate_file};

use super::{deep_inputs, evaluator, write};

/// A GPT disk `main` on `device` (a Nix expression) with one ext4 root partition.
fn gpt_disk(device: &str) -> String {
    format!(
        r#"{{ type = "disk"; device = {device}; content = {{ type = "gpt"; partitions.root = {{ size = "100%"; content = {{ type = "filesystem"; format = "ext4"; mountpoint = "/"; }}; }}; }}; }}"#
    )
}

/// `file:LINE:` of the first line of `text` containing `marker`.
fn line_of(file: &Path, text: &str, marker: &str) -> String {
    let n = text.lines().position(|l| l.contains(marker)).unwrap() + 1;
    format!("{}:{n}:", std::fs::canonicalize(file).unwrap().display())
}

/// The findings of a refused file (levels 1-3).
async fn refused(file: &Path) -> Vec<Finding> {
    let (ev, deep) = (evaluator().unwrap(), deep_inputs().unwrap());
    match validate_file(&ev, file, Some(&deep)).await {
        Err(ValidateError::Invalid(findings)) => findings,
        other => panic!("{} should be refused: {other:?}", file.display()),
    }
}

#[tokio::test]
async fn shape_wrappers_anywhere_are_resolved_by_the_module_system() {
    let (Some(ev), Some(deep)) = (evaluator(), deep_inputs()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let disk = gpt_disk("\"/dev/sda\"");
    for (name, devices) in [
        (
            "mkDefault",
            format!("disk.main = {};", gpt_disk("lib.mkDefault \"/dev/sda\"")),
        ),
        (
            "mkForce",
            format!("disk.main = {};", gpt_disk("lib.mkForce \"/dev/sda\"")),
        ),
        (
            "mkOverride",
            format!(
                "disk.main = {};",
                gpt_disk("lib.mkOverride 900 \"/dev/sda\"")
            ),
        ),
        ("mkIf", format!("disk.main = lib.mkIf true {disk};")),
        (
            "mkMerge",
            format!("disk = lib.mkMerge [ {{ main = {disk}; }} {{ }} ];"),
        ),
    ] {
        let text = format!("{{ lib, ... }}: {{ disko.devices = {{ {devices} }}; }}");
        let file = write(dir.path(), &format!("{name}.nix"), &text);
        let v = validate_file(&ev, &file, Some(&deep))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.tree.disk["main"].device, "/dev/sda", "{name}");
        assert!(v.deep.unwrap().create.contains("/dev/sda"), "{name}");
    }
    // The module form: `config = lib.mkIf …` reading an option the file declares itself.
    let text = format!(
        r#"{{ config, lib, ... }}: {{
  options.my.root = lib.mkOption {{ type = lib.types.str; default = "/dev/sda"; }};
  config = lib.mkIf true {{ disko.devices.disk.main = {}; }};
}}"#,
        gpt_disk("config.my.root")
    );
    let file = write(dir.path(), "module-form.nix", &text);
    let v = validate_file(&ev, &file, Some(&deep)).await.unwrap();
    assert_eq!(v.tree.disk["main"].device, "/dev/sda");
}

#[tokio::test]
async fn shape_nixos_options_beside_disko_are_a_note() {
    let (Some(ev), Some(deep)) = (evaluator(), deep_inputs()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // `pkgs` is not available: an option beside `disko` that uses it is never forced.
    let text = format!(
        r#"{{ lib, pkgs, ... }}: {{
  boot.loader.grub.devices = [ "/dev/sda" ];
  boot.zfs.extraPools = [ "tank" ];
  fileSystems."/data" = {{ device = "/dev/sdb1"; fsType = "ext4"; }};
  services.openssh.package = pkgs.openssh;
  disko.devices.disk.main = {};
}}"#,
        gpt_disk("\"/dev/sda\"")
    );
    let file = write(dir.path(), "beside.nix", &text);
    let v = validate_file(&ev, &file, Some(&deep)).await.unwrap();
    assert_eq!(
        v.notes,
        [
            "`boot`, `fileSystems`, `services` beside `disko`: NixOS options, not disko's; not checked"
        ]
    );
}

#[tokio::test]
async fn shape_imports_are_a_note_and_never_forced() {
    let (Some(ev), Some(deep)) = (evaluator(), deep_inputs()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, imports) in [
        ("empty", "[ ]"),
        // The host's own lib extension and a file outside the layout: neither is evaluated.
        (
            "host-lib",
            "[ (lib.from-root \"hosts/disks\") ./hardware-configuration.nix ]",
        ),
    ] {
        let text = format!(
            "{{ lib, ... }}: {{ imports = {imports}; disko.devices.disk.main = {}; }}",
            gpt_disk("\"/dev/sda\"")
        );
        let file = write(dir.path(), &format!("{name}.nix"), &text);
        let v = validate_file(&ev, &file, Some(&deep))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.notes.len(), 1, "{name}: {:?}", v.notes);
        assert!(
            v.notes[0].starts_with("`imports` is not evaluated"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn shape_defaulted_arguments_are_used_and_a_required_one_is_named() {
    let (Some(ev), Some(deep)) = (evaluator(), deep_inputs()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{{ lib, disks ? [ \"/dev/vdb\" ], ... }}: {{ disko.devices.disk.main = {}; }}",
        gpt_disk("builtins.head disks")
    );
    let file = write(dir.path(), "defaults.nix", &text);
    let v = validate_file(&ev, &file, Some(&deep)).await.unwrap();
    assert_eq!(v.tree.disk["main"].device, "/dev/vdb");

    let text = format!(
        "{{ lib, inputs, ... }}: {{ disko.devices.disk.main = {}; }}",
        gpt_disk("inputs.disk")
    );
    let file = write(dir.path(), "required.nix", &text);
    let findings = refused(&file).await;
    assert_eq!(findings[0].level, 2);
    assert!(
        findings[0]
            .message
            .contains("argument `inputs' has no default"),
        "{}",
        findings[0]
    );

    // Level 2 without a nixpkgs lib: a defaulted `lib ? null` keeps its default, a required
    // `lib` is refused saying what is missing.
    let text = format!(
        "{{ lib ? null, ... }}: {{ disko.devices.disk.main = {}; }}",
        gpt_disk("if lib == null then \"/dev/sda\" else \"/dev/sdx\"")
    );
    let file = write(dir.path(), "lib-default.nix", &text);
    assert_eq!(
        ev.level2(&file, None).await.unwrap().disk["main"].device,
        "/dev/sda"
    );
    let text = format!(
        "{{ lib, ... }}: {{ disko.devices.disk.main = {}; }}",
        gpt_disk("\"/dev/sda\"")
    );
    let file = write(dir.path(), "lib-required.nix", &text);
    let Err(ValidateError::Invalid(findings)) = ev.level2(&file, None).await else {
        panic!("a function of lib needs a nixpkgs lib");
    };
    assert!(
        findings[0].message.contains("no nixpkgs lib was given"),
        "{}",
        findings[0]
    );
}

#[tokio::test]
async fn shape_levels_2_and_3_read_the_same_devices() {
    let (Some(ev), Some(deep)) = (evaluator(), deep_inputs()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A disk switched off by mkIf and a device overridden by priority: both levels must see
    // one disk on /dev/sda, none on /dev/sdx or /dev/sdy.
    let text = format!(
        "{{ lib, ... }}: {{ disko.devices.disk = {{ main = {}; off = lib.mkIf false {}; }}; }}",
        gpt_disk("lib.mkMerge [ (lib.mkDefault \"/dev/sdx\") \"/dev/sda\" ]"),
        gpt_disk("\"/dev/sdy\"")
    );
    let file = write(dir.path(), "same.nix", &text);
    let v = validate_file(&ev, &file, Some(&deep)).await.unwrap();
    assert_eq!(v.tree.disk.keys().collect::<Vec<_>>(), ["main"]);
    assert_eq!(v.tree.disk["main"].device, "/dev/sda");
    let create = v.deep.unwrap().create;
    assert!(create.contains("/dev/sda"));
    assert!(!create.contains("/dev/sdx") && !create.contains("/dev/sdy"));
}

/// A LUKS root on /dev/sda with `luks_options` inside the luks set.
fn luks_layout(luks_options: &str) -> String {
    format!(
        r#"{{
  disko.devices.disk.main = {{
    type = "disk";
    device = "/dev/sda";
    content = {{
      type = "gpt";
      partitions.root = {{
        size = "100%";
        content = {{
          type = "luks";
          name = "crypted";
          {luks_options}
          content = {{ type = "filesystem"; format = "ext4"; mountpoint = "/"; }};
        }};
      }};
    }};
  }};
}}
"#
    )
}

#[tokio::test]
async fn defect_relative_key_files_are_refused_at_their_line() {
    if evaluator().is_none() || deep_inputs().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, option, path) in [
        (
            "passwordFile",
            "passwordFile = \"secret.key\";",
            "passwordFile",
        ),
        ("keyFile", "keyFile = \"./disk.key\";", "keyFile"),
        (
            "settings.keyFile",
            "settings.keyFile = \"keys/disk.key\";",
            "settings.keyFile",
        ),
    ] {
        let text = luks_layout(option);
        let file = write(dir.path(), &format!("{name}.nix"), &text);
        let f = &refused(&file).await[0];
        assert_eq!(f.level, 2, "{name}: {f}");
        assert_eq!(
            f.location,
            format!("disko.devices.disk.main.content.partitions.root.content.{path}")
        );
        assert!(f.message.contains("is not an absolute path"), "{f}");
        let at = line_of(&file, &text, option);
        assert!(
            f.position.as_deref().unwrap().starts_with(&at),
            "{name}: {f}"
        );
    }
}

/// A pool `tank` on the whole of /dev/sda, with `pool_options` inside the zpool set.
fn zfs_layout(pool_options: &str) -> String {
    format!(
        r#"{{
  disko.devices.disk.main = {{ type = "disk"; device = "/dev/sda"; content = {{ type = "zfs"; pool = "tank"; }}; }};
  disko.devices.zpool.tank = {{
    type = "zpool";
    {pool_options}
  }};
}}
"#
    )
}

#[tokio::test]
async fn defect_non_string_zfs_properties_are_refused_at_their_line() {
    if evaluator().is_none() || deep_inputs().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, option, path, fix) in [
        (
            "options",
            "options.autotrim = true;",
            "options.autotrim",
            "write \"on\"",
        ),
        (
            "rootFsOptions",
            "rootFsOptions.atime = false;",
            "rootFsOptions.atime",
            "write \"off\"",
        ),
        (
            "number",
            "options.ashift = 12;",
            "options.ashift",
            "write \"12\"",
        ),
    ] {
        let text = zfs_layout(option);
        let file = write(dir.path(), &format!("{name}.nix"), &text);
        let f = &refused(&file).await[0];
        assert_eq!(f.level, 2, "{name}: {f}");
        assert_eq!(f.location, format!("disko.devices.zpool.tank.{path}"));
        assert!(f.message.contains(fix), "{name}: {f}");
        let at = line_of(&file, &text, option);
        assert!(
            f.position.as_deref().unwrap().starts_with(&at),
            "{name}: {f}"
        );
    }
}

#[tokio::test]
async fn defect_disk_without_content_is_refused_at_the_disk() {
    let (Some(ev), Some(deep)) = (evaluator(), deep_inputs()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = "{\n  disko.devices.disk.main = {\n    type = \"disk\";\n    device = \"/dev/sda\";\n  };\n}\n";
    let file = write(dir.path(), "no-content.nix", text);
    let f = &refused(&file).await[0];
    assert_eq!(
        (f.level, f.location.as_str()),
        (2, "disko.devices.disk.main.content")
    );
    assert!(f.message.contains("a disk needs content"), "{f}");
    let at = line_of(&file, text, "disk.main");
    assert!(f.position.as_deref().unwrap().starts_with(&at), "{f}");

    // Level 3 alone (disko's own types) fails inside disko's disk.nix on the same file: kctl
    // reports it at the user's disk, with disko's message kept as the detail.
    let Err(ValidateError::Invalid(findings)) = ev.level3(&file, &deep).await else {
        panic!("level 3 should refuse a disk without content");
    };
    let f = &findings[0];
    assert_eq!(
        (f.level, f.location.as_str()),
        (3, "disko.devices.disk.main")
    );
    assert!(f.message.contains("disko's own evaluation fails"), "{f}");
    let detail = f.detail.as_deref().unwrap();
    assert!(
        detail.contains("value is null while a set was expected"),
        "{f}"
    );
    assert!(detail.contains("lib/types/disk.nix"), "{f}");
    assert!(f.position.as_deref().unwrap().starts_with(&at), "{f}");
}

#[tokio::test]
async fn defect_pool_without_member_and_undeclared_pool_are_refused() {
    if evaluator().is_none() || deep_inputs().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{{\n  disko.devices.disk.main = {};\n  disko.devices.zpool.tank = {{ type = \"zpool\"; }};\n}}\n",
        gpt_disk("\"/dev/sda\"")
    );
    let file = write(dir.path(), "no-member.nix", &text);
    let f = &refused(&file).await[0];
    assert_eq!(
        (f.level, f.location.as_str()),
        (2, "disko.devices.zpool.tank")
    );
    assert!(f.message.contains("has no member"), "{f}");
    assert!(
        f.position
            .as_deref()
            .unwrap()
            .starts_with(&line_of(&file, &text, "zpool.tank")),
        "{f}"
    );

    let text = "{\n  disko.devices.disk.main = {\n    type = \"disk\";\n    device = \"/dev/sda\";\n    content = { type = \"zfs\"; pool = \"tnak\"; };\n  };\n}\n";
    let file = write(dir.path(), "undeclared.nix", text);
    let f = &refused(&file).await[0];
    assert_eq!(
        (f.level, f.location.as_str()),
        (2, "disko.devices.disk.main.content.pool")
    );
    assert!(
        f.message.contains("which this fragment does not define"),
        "{f}"
    );
    assert!(
        f.position
            .as_deref()
            .unwrap()
            .starts_with(&line_of(&file, text, "pool = \"tnak\"")),
        "{f}"
    );
}
