//! kcore-disko end to end: golden fragments for every backend, levels 1-3 on them and on
//! every disko example, broken copies failing at the right place, and plans against
//! block-device snapshot fixtures for each refusal code; `corpus`: public layouts against
//! disko's own CLI verdict; `shapes`: one minimal reproducer per accepted shape and per
//! defect of issue 16.
//!
//! Level 2/3 need `nix-instantiate` (Debian: nix-bin); level 3 also the disko source and
//! nixpkgs lib (`KCORE_TEST_DISKO`, `KCORE_TEST_NIXPKGS_LIB`, or the cache fallback). A test
//! without them prints `SKIP: <why>` and returns. Regenerate goldens with `UPDATE_EXPECT=1`.

#![allow(clippy::unwrap_used)] // test helpers may unwrap, like the tests themselves

mod corpus;
mod corpus_cases;
mod shapes;

use std::path::{Path, PathBuf};

use expect_test::expect_file;
use kcore_disko::eval::{Evaluator, ValidateError, validate_file};
use kcore_disko::plan::{ActionKind, BuildPlan, ChangeClass, Plan, RefusalCode};
use kcore_disko::spec::{Backend, DataDiskMode, LuksMode, PbkdfSpec, PbkdfType, ThinPoolSpec};
use kcore_disko::{
    BlockSnapshot, DeepInputs, DeviceTree, StorageSpec, render_data_disk, render_fragment, syntax,
};

const OS: &str = "/dev/disk/by-id/ata-Samsung_SSD_870_S4EWNX0R100001";
const D0: &str = "/dev/disk/by-id/ata-WDC_WD20EFRX_WD-WCC4M0000002";
const D1: &str = "/dev/disk/by-id/ata-WDC_WD20EFRX_WD-WCC4M0000003";
const D2: &str = "/dev/disk/by-id/ata-WDC_WD20EFRX_WD-WCC4M0000004";

pub(crate) fn evaluator() -> Option<Evaluator> {
    match Evaluator::new(None) {
        Ok(e) => Some(e),
        Err(e) => {
            eprintln!("SKIP: levels 2/3 need nix-instantiate: {e}");
            None
        }
    }
}

pub(crate) fn deep_inputs() -> Option<DeepInputs> {
    let inputs = DeepInputs::from_env();
    if inputs.is_none() {
        eprintln!(
            "SKIP: level 3 needs KCORE_TEST_DISKO and KCORE_TEST_NIXPKGS_LIB (or ~/.cache/kcore/test-inputs/{{disko,nixpkgs-lib}})"
        );
    }
    inputs
}

fn golden_specs() -> Vec<(&'static str, StorageSpec)> {
    let one = vec![D0.to_string()];
    let three = vec![D0.to_string(), D1.to_string(), D2.to_string()];
    let mut fs3 = StorageSpec::new(OS, three.clone(), Backend::Filesystem);
    fs3.luks.mode = LuksMode::Keyfile;
    fs3.luks.key_file = Some("/etc/kcore/luks/root.key".into());
    let mut lvm3 = StorageSpec::new(OS, three.clone(), Backend::Lvm);
    lvm3.lvm.thin_pool = Some(ThinPoolSpec {
        name: "thinpool".into(),
        size: "90%".into(),
    });
    let mut zfs3 = StorageSpec::new(OS, three, Backend::Zfs);
    zfs3.data_disk_mode = DataDiskMode::Mirror;
    zfs3.zfs.pool_name = "tank1".into();
    zfs3.zfs.dataset_prefix = "kcore/volumes".into();
    let mut fast = StorageSpec::new(OS, one.clone(), Backend::Filesystem);
    fast.luks.pbkdf = Some(PbkdfSpec {
        kind: PbkdfType::Pbkdf2,
        iterations: Some(1000),
        memory_kib: None,
    });
    vec![
        (
            "filesystem-1",
            StorageSpec::new(OS, one.clone(), Backend::Filesystem),
        ),
        ("filesystem-3", fs3),
        ("lvm-1", StorageSpec::new(OS, one.clone(), Backend::Lvm)),
        ("lvm-3", lvm3),
        ("zfs-1", StorageSpec::new(OS, one, Backend::Zfs)),
        ("zfs-3", zfs3),
        ("filesystem-1-pbkdf2", fast),
    ]
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Render every golden case and the day-2 fragments; all pass levels 1 and 2, and 3 if possible.
#[tokio::test]
async fn golden_fragments_render_and_validate() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, spec) in golden_specs() {
        let text = render_fragment(&spec).unwrap();
        expect_file![format!("../golden/{name}.nix")].assert_eq(&text);
        files.push(write(dir.path(), &format!("{name}.nix"), &text));
    }
    for backend in [Backend::Filesystem, Backend::Lvm, Backend::Zfs] {
        let spec = StorageSpec::new(OS, vec![D0.into()], backend);
        let name = format!("day2-{}", backend.as_str());
        let text = render_data_disk(&spec, D2, 3).unwrap();
        expect_file![format!("../golden/{name}.nix")].assert_eq(&text);
        files.push(write(dir.path(), &format!("{name}.nix"), &text));
    }
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert_eq!(syntax::check("f", &text), vec![], "{}", file.display());
    }
    let Some(ev) = evaluator() else { return };
    let deep = deep_inputs();
    for file in &files {
        let v = validate_file(&ev, file, deep.as_ref())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if let Some(out) = &v.deep {
            assert!(
                out.create.contains("sgdisk"),
                "{}: no sgdisk in the create script",
                file.display()
            );
        }
    }
    let zfs3 = ev
        .level2(&dir.path().join("zfs-3.nix"), None)
        .await
        .unwrap();
    assert_eq!(zfs3.zpool["tank1"].mode, "mirror");
    assert!(zfs3.zpool["tank1"].datasets.contains_key("kcore/volumes"));
    if let Some(deep) = deep {
        let out = ev
            .level3(&dir.path().join("zfs-3.nix"), &deep)
            .await
            .unwrap();
        assert!(out.create.contains("zpool create"), "{}", out.create);
        let out = ev
            .level3(&dir.path().join("lvm-3.nix"), &deep)
            .await
            .unwrap();
        assert!(
            out.create.contains("vg_kcore") && out.create.contains("thin"),
            "{}",
            out.create
        );
        let out = ev
            .level3(&dir.path().join("filesystem-3.nix"), &deep)
            .await
            .unwrap();
        assert!(
            out.create.contains("/etc/kcore/luks/root.key"),
            "keyfile missing from create script"
        );
        assert!(
            out.mount.contains("/var/lib/kcore/volumes2"),
            "{}",
            out.mount
        );
        let out = ev
            .level3(&dir.path().join("filesystem-1-pbkdf2.nix"), &deep)
            .await
            .unwrap();
        assert!(
            out.create.contains("--pbkdf")
                && out.create.contains("pbkdf2")
                && out.create.contains("--pbkdf-force-iterations")
                && out.create.contains("1000"),
            "pbkdf settings missing from the create script:\n{}",
            out.create
        );
    }
}

fn disko_examples(deep: &DeepInputs) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deep.disko.join("example"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "nix"))
        .collect();
    files.sort();
    files
}

/// Every example layout shipped with disko passes levels 1-3.
#[tokio::test]
async fn every_disko_example_passes_all_levels() {
    let Some(ev) = evaluator() else { return };
    let Some(deep) = deep_inputs() else { return };
    let files = disko_examples(&deep);
    assert!(files.len() > 20, "only {} examples found", files.len());
    let mut failures = Vec::new();
    for file in &files {
        if let Err(e) = validate_file(&ev, file, Some(&deep)).await {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} examples failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// Broken copies of every example fail at the right place: a deleted closing brace at level
/// 1 (line:column), a misspelt content type and a missing required `format` at level 2
/// (option path), and the missing `format` also at level 3 through disko's own types.
#[tokio::test]
async fn broken_disko_examples_fail_with_positions() {
    let Some(ev) = evaluator() else { return };
    let Some(deep) = deep_inputs() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut braces, mut types, mut formats) = (0, 0, 0);
    for file in disko_examples(&deep) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&file).unwrap();

        // 1. Delete the last closing brace: rnix reports the end of the file.
        let cut = text.rfind('}').unwrap();
        let broken = format!("{}{}", &text[..cut], &text[cut + 1..]);
        let path = write(dir.path(), &format!("brace-{name}"), &broken);
        match validate_file(&ev, &path, Some(&deep)).await {
            Err(ValidateError::Invalid(f)) => {
                assert_eq!(f[0].level, 1, "{name}: {f:?}");
                let line: usize = f[0].location.rsplit(':').nth(1).unwrap().parse().unwrap();
                let brace_line = text[..cut].matches('\n').count() + 1;
                assert!(
                    line >= brace_line,
                    "{name}: error at line {line}, brace was on {brace_line}"
                );
                braces += 1;
            }
            other => panic!("{name}: deleted brace not caught: {other:?}"),
        }

        // 2. Misspell the first `type = "filesystem"`.
        if text.contains("type = \"filesystem\"") {
            let broken = text.replacen("type = \"filesystem\"", "type = \"filesytem\"", 1);
            let path = write(dir.path(), &format!("type-{name}"), &broken);
            match ev.level2(&path, Some(&deep.nixpkgs_lib)).await {
                Err(ValidateError::Invalid(f)) => {
                    assert_eq!(f[0].level, 2, "{name}: {f:?}");
                    assert!(
                        f[0].location.starts_with("disko.devices.")
                            && f[0].location.ends_with(".type"),
                        "{name}: {f:?}"
                    );
                    assert!(f[0].message.contains("\"filesytem\""), "{name}: {f:?}");
                    types += 1;
                }
                other => panic!("{name}: misspelt type not caught: {other:?}"),
            }
        }

        // 3. Remove the `format = "...";` line of the first filesystem.
        let lines: Vec<&str> = text.lines().collect();
        if let Some(i) = lines.iter().position(|l| {
            l.trim_start().starts_with("format = \"")
                && !l.contains("\"gpt\"")
                && !l.contains("\"msdos\"")
        }) {
            let mut kept = lines.clone();
            kept.remove(i);
            let path = write(dir.path(), &format!("format-{name}"), &kept.join("\n"));
            match ev.level2(&path, Some(&deep.nixpkgs_lib)).await {
                Err(ValidateError::Invalid(f)) => {
                    assert_eq!(f[0].level, 2, "{name}: {f:?}");
                    assert!(f[0].location.ends_with("content.format"), "{name}: {f:?}");
                }
                other => panic!("{name}: missing format not caught at level 2: {other:?}"),
            }
            match ev.level3(&path, &deep).await {
                Err(ValidateError::Invalid(f)) => {
                    assert!(
                        f[0].location.starts_with("disko.devices.")
                            && f[0].location.ends_with(".format"),
                        "{name}: level 3 said {f:?}"
                    );
                }
                other => panic!("{name}: missing format not caught at level 3: {other:?}"),
            }
            formats += 1;
        }
    }
    assert!(
        braces > 20 && types > 10 && formats > 10,
        "too few broken copies: {braces} {types} {formats}"
    );
}

// ---- plans against block-device snapshots ----

fn fixture(name: &str) -> BlockSnapshot {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("devices-{name}.json"));
    BlockSnapshot::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn tree(ev: &Evaluator, text: &str) -> DeviceTree {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "f.nix", text);
    ev.level2(&path, None).await.unwrap()
}

async fn trees(ev: &Evaluator, current: &[&str], new: &[&str]) -> (DeviceTree, DeviceTree) {
    let spec = |d: &[&str]| {
        StorageSpec::new(
            OS,
            d.iter().map(|s| s.to_string()).collect(),
            Backend::Filesystem,
        )
    };
    let cur = tree(ev, &render_fragment(&spec(current)).unwrap()).await;
    let new = tree(ev, &render_fragment(&spec(new)).unwrap()).await;
    (cur, new)
}

fn codes(plan: &Plan, target: &str) -> Vec<RefusalCode> {
    plan.targets
        .iter()
        .find(|t| t.name == target)
        .unwrap()
        .refusals
        .iter()
        .map(|r| r.code)
        .collect()
}

/// Adding a blank disk to an installed node is additive and allowed, and symlinked names of
/// the same disk (by-id, wwn, by-path) resolve to one identity.
#[tokio::test]
async fn adding_a_blank_disk_is_additive() {
    let Some(ev) = evaluator() else { return };
    let snap = fixture("blank");
    let (cur, new) = trees(&ev, &[D0], &[D0, D1]).await;
    let plan = Plan::build(&new, Some(&cur), &snap);
    assert!(!plan.is_refused(), "{plan:#?}");
    assert_eq!(plan.class, ChangeClass::Additive);
    let data1 = plan.targets.iter().find(|t| t.name == "data1").unwrap();
    assert_eq!(data1.actions[0].kind, ActionKind::NewDisk);
    let id = data1.identity.as_ref().unwrap();
    assert_eq!(
        (id.kname.as_str(), id.serial.as_deref(), id.size),
        ("sdc", Some("WD-WCC4M0000003"), 2000409772032)
    );
    assert!(
        id.by_id
            .contains(&"/dev/disk/by-id/wwn-0x50014ee000000003".to_string()),
        "{id:?}"
    );
    let os = plan.targets.iter().find(|t| t.name == "os").unwrap();
    assert_eq!(os.actions[0].kind, ActionKind::Keep);
    for alias in [
        "/dev/sdc",
        "/dev/disk/by-path/pci-0000:00:17.0-ata-3",
        "/dev/disk/by-id/wwn-0x50014ee000000003",
    ] {
        assert_eq!(snap.resolve(alias).unwrap().kname, "sdc", "{alias}");
    }
    // The hash is stable across builds and changes with the content.
    assert_eq!(plan.hash, Plan::build(&new, Some(&cur), &snap).hash);
    let (_, other) = trees(&ev, &[D0], &[D0, D2]).await;
    assert_ne!(plan.hash, Plan::build(&other, Some(&cur), &snap).hash);
    let json = serde_json::to_string(&plan).unwrap();
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert!(back.verify());
}

/// Each fixture puts the new disk (sdc) into one unsafe state; the plan refuses it with the
/// matching stable code.
#[tokio::test]
async fn each_refusal_code_has_a_fixture() {
    let Some(ev) = evaluator() else { return };
    let (cur, new) = trees(&ev, &[D0], &[D0, D1]).await;
    for (fixture_name, expected) in [
        ("mounted", RefusalCode::TargetMounted),
        ("swap", RefusalCode::TargetSwap),
        ("holders", RefusalCode::TargetHasHolders),
        ("zfs-member", RefusalCode::TargetZfsMember),
        ("has-data", RefusalCode::TargetHasData),
        ("multipath", RefusalCode::TargetAmbiguous),
    ] {
        let plan = Plan::build(&new, Some(&cur), &fixture(fixture_name));
        let got = codes(&plan, "data1");
        assert!(got.contains(&expected), "{fixture_name}: {got:?}");
        assert!(
            codes(&plan, "os").is_empty() && codes(&plan, "data0").is_empty(),
            "{fixture_name}: {plan:#?}"
        );
    }
    let snap = fixture("blank");
    // The OS disk as a new data disk.
    let (cur2, new2) = trees(&ev, &[D0], &[D0, "/dev/sda"]).await;
    let plan = Plan::build(&new2, Some(&cur2), &snap);
    assert!(
        codes(&plan, "data1").contains(&RefusalCode::TargetIsOsDisk),
        "{plan:#?}"
    );
    // A disk that does not exist.
    let (cur3, new3) = trees(&ev, &[D0], &[D0, "/dev/disk/by-id/ata-NOPE"]).await;
    assert_eq!(
        codes(&Plan::build(&new3, Some(&cur3), &snap), "data1"),
        [RefusalCode::TargetNotFound]
    );
    // The same disk twice under two names.
    let (cur4, new4) = trees(
        &ev,
        &[D0],
        &[D0, D1, "/dev/disk/by-path/pci-0000:00:17.0-ata-3"],
    )
    .await;
    let plan = Plan::build(&new4, Some(&cur4), &snap);
    assert!(
        codes(&plan, "data1").contains(&RefusalCode::TargetAmbiguous),
        "{plan:#?}"
    );
    assert!(
        codes(&plan, "data2").contains(&RefusalCode::TargetAmbiguous),
        "{plan:#?}"
    );
    // A fresh install over a machine whose disks carry data: every disk is refused.
    let fresh = Plan::build(&new, None, &snap);
    assert!(codes(&fresh, "os").contains(&RefusalCode::TargetIsOsDisk));
    assert!(codes(&fresh, "data0").contains(&RefusalCode::TargetMounted));
    assert!(
        codes(&fresh, "data1").is_empty(),
        "blank sdc is fine: {fresh:#?}"
    );
}

/// Changing an existing disk is destructive: dropping it, or reformatting it.
#[tokio::test]
async fn changes_to_existing_disks_are_destructive() {
    let Some(ev) = evaluator() else { return };
    let snap = fixture("blank");
    let (cur, new) = trees(&ev, &[D0, D1], &[D0]).await;
    let plan = Plan::build(&new, Some(&cur), &snap);
    assert_eq!(plan.class, ChangeClass::Destructive);
    let lvm = StorageSpec::new(OS, vec![D0.into()], Backend::Lvm);
    let new = tree(&ev, &render_fragment(&lvm).unwrap()).await;
    let (cur, _) = trees(&ev, &[D0], &[D0]).await;
    let plan = Plan::build(&new, Some(&cur), &snap);
    let data0 = plan.targets.iter().find(|t| t.name == "data0").unwrap();
    assert_eq!(plan.class, ChangeClass::Destructive);
    assert!(
        data0.actions.iter().any(|a| a.kind == ActionKind::Remove),
        "{plan:#?}"
    );
    assert!(
        data0
            .actions
            .iter()
            .all(|a| a.class == ChangeClass::Destructive),
        "{plan:#?}"
    );
}

/// A live snapshot of this machine parses, and every device and link in it resolves back to
/// a device of the snapshot.
#[tokio::test]
async fn live_snapshot_of_this_machine_resolves() {
    let snap = match BlockSnapshot::capture_live(None).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIP: cannot take a live snapshot here: {e}");
            return;
        }
    };
    assert!(snap.live);
    for dev in snap.all() {
        assert!(!dev.kname.is_empty(), "{dev:?}");
        if !dev.path.is_empty() {
            assert!(
                snap.resolve(&dev.path).is_some(),
                "{} does not resolve",
                dev.path
            );
        }
    }
    for (link, target) in &snap.links {
        assert!(
            Path::new(link).starts_with("/dev/disk"),
            "{link} -> {target} is not a /dev/disk link"
        );
    }
    let json = serde_json::to_string(&snap).unwrap();
    let back = BlockSnapshot::from_json(&json).unwrap();
    assert_eq!(back.lsblk, snap.lsblk);
}

// ---- restricted, bounded evaluation (security probe D4, D12) ----

/// Levels 2 and 3 read only the fragment (and the disko and nixpkgs lib trees): a secret
/// beside it is refused, not planned; an error inside nixpkgs lib does not quote lib's
/// lines; the memory bound stops a runaway fragment; a deeply nested fragment gets a short
/// list of findings.
#[tokio::test]
async fn evaluation_is_restricted_and_bounded() {
    let Some(ev) = evaluator() else { return };
    let Some(deep) = deep_inputs() else { return };
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "KCORE-DISKO-SECRET\n").unwrap();
    let secret = std::fs::canonicalize(secret).unwrap();
    let disk = |device: &str| {
        format!(
            "{{ lib ? null, ... }}: {{ disko.devices.disk.a = {{ type = \"disk\"; device = {device}; content = {{ type = \"filesystem\"; format = \"ext4\"; }}; }}; }}"
        )
    };
    for (name, device) in [
        (
            "readfile",
            format!(
                "\"/dev/disk/by-id/x\" + builtins.readFile {}",
                secret.display()
            ),
        ),
        (
            "shadow",
            "throw (builtins.readFile /etc/shadow)".to_string(),
        ),
        ("passwd", "import /etc/passwd".to_string()),
        (
            "readdir",
            "builtins.toJSON (builtins.attrNames (builtins.readDir /root))".to_string(),
        ),
    ] {
        let path = write(dir.path(), &format!("{name}.nix"), &disk(&device));
        for level in [2, 3] {
            let result = if level == 2 {
                ev.level2(&path, Some(&deep.nixpkgs_lib)).await.map(|_| ())
            } else {
                ev.level3(&path, &deep).await.map(|_| ())
            };
            let Err(ValidateError::Invalid(findings)) = result else {
                panic!("{name} level {level}: {result:?}")
            };
            let text = format!("{findings:?}");
            assert!(
                text.contains("forbidden in restricted mode"),
                "{name}: {text}"
            );
            assert!(
                !text.contains("KCORE-DISKO-SECRET") && !text.contains("root:"),
                "{name} level {level} leaked: {text}"
            );
        }
    }
    // getEnv reads "" (the evaluation succeeds, the device is just the prefix).
    let path = write(
        dir.path(),
        "env.nix",
        &disk("\"/dev/disk/by-id/x\" + builtins.getEnv \"HOME\""),
    );
    let tree = ev.level2(&path, None).await.unwrap();
    assert_eq!(tree.disk["a"].device, "/dev/disk/by-id/x");

    // An error raised inside nixpkgs lib names its position but does not quote lib.
    let path = write(
        dir.path(),
        "lib-error.nix",
        "{ lib, ... }: { disko.devices.disk.a = { type = \"disk\"; device = lib.strings.escapeShellArg { }; }; }",
    );
    let Err(ValidateError::Invalid(findings)) = ev.level2(&path, Some(&deep.nixpkgs_lib)).await
    else {
        panic!("expected a level-2 error")
    };
    let text = format!("{findings:?}");
    assert!(text.contains("cannot coerce a set to a string"), "{text}");
    assert!(!text.contains("toString arg"), "{text}");

    // The memory bound.
    let small = ev.clone().with_bounds(kcore_nix::EvalBounds {
        memory_mib: 256,
        ..ev.bounds()
    });
    let path = write(
        dir.path(),
        "bomb.nix",
        &disk(
            "toString (builtins.length (builtins.attrNames (builtins.listToAttrs (builtins.genList (i: { name = toString i; value = i; }) 20000000))))",
        ),
    );
    let result = small.level2(&path, None).await;
    assert!(
        matches!(
            result,
            Err(ValidateError::Bound(kcore_nix::EvalError::MemoryBound(256)))
        ),
        "{result:?}"
    );

    // D12: 1,025 near-identical level-1 findings became a handful.
    let nested = format!("{}1{}", "{ a = ".repeat(5000), " ; }".repeat(5000));
    let path = write(dir.path(), "nested.nix", &nested);
    let Err(ValidateError::Invalid(findings)) = validate_file(&ev, &path, Some(&deep)).await else {
        panic!("nested fragment accepted")
    };
    assert!(findings.len() <= kcore_disko::MAX_REPORTED, "{findings:?}");
    assert!(findings.iter().all(|f| f.level == 1));
    assert!(format!("{findings:?}").len() < 8 * 1024, "{findings:?}");
}
