//! pkgs/kcore/package.nix as `nix build` would run it: the build's source is `rust/` alone, so
//! every test that reads a file outside `rust/` (docs/, tests/support/, ...) must be skipped
//! there (`checkFlags`), found here by reading the workspace's sources; the binaries are
//! wrapped with their runtime tools; only the three binaries are built.

use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

use crate::support::{Harness, repo_root};

/// A test (or a helper of the tests of a file) that reads a path outside rust/.
#[derive(Debug)]
struct OutsideRead {
    file: PathBuf,
    line: usize,
    /// The enclosing function, and whether it is itself a test.
    function: String,
    is_test: bool,
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            if name != "target" {
                rs_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// `base/rel` with `..` and `.` resolved textually (the target need not exist).
fn resolve(base: &Path, rel: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(rel.trim_start_matches('/')).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The string literals of a line.
fn literals(line: &str) -> Vec<&str> {
    line.split('"').skip(1).step_by(2).collect()
}

fn is_test_attr(line: &str) -> bool {
    let l = line.trim();
    l.starts_with("#[test]") || l.starts_with("#[tokio::test")
}

/// The name of a `fn` declared on this line, if any.
fn fn_name(line: &str) -> Option<String> {
    let rest = line.trim_start();
    let rest = rest.strip_prefix("pub ").unwrap_or(rest);
    let rest = rest.strip_prefix("async ").unwrap_or(rest);
    let rest = rest.strip_prefix("fn ")?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Whether the `fn` at `lines[i]` carries a test attribute (attributes and doc comments above it).
fn is_test_fn(lines: &[&str], i: usize) -> bool {
    lines[..i]
        .iter()
        .rev()
        .take_while(|l| {
            let t = l.trim();
            t.starts_with("#[") || t.starts_with("///") || t.starts_with("//")
        })
        .any(|l| is_test_attr(l))
}

/// The test functions of a file.
fn tests_in(lines: &[&str]) -> Vec<String> {
    (0..lines.len())
        .filter_map(|i| fn_name(lines[i]).filter(|_| is_test_fn(lines, i)))
        .collect()
}

/// Every place a crate's code reads a path outside rust/: `include_str!`/`include_bytes!`
/// relative to the file, and `CARGO_MANIFEST_DIR`-relative literals (on the same or the next
/// two lines).
fn outside_reads(rust: &Path, crate_dir: &Path, file: &Path) -> Vec<OutsideRead> {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut targets: Vec<PathBuf> = Vec::new();
        if line.contains("include_str!(") || line.contains("include_bytes!(") {
            targets.extend(
                literals(line)
                    .into_iter()
                    .map(|l| resolve(file.parent().unwrap(), l)),
            );
        }
        if line.contains("CARGO_MANIFEST_DIR") {
            for l in lines[i..(i + 3).min(lines.len())]
                .iter()
                .flat_map(|l| literals(l))
                .filter(|l| l.contains(".."))
            {
                targets.push(resolve(crate_dir, l));
            }
        }
        if targets.iter().any(|t| !t.starts_with(rust)) {
            let (function, is_test) = (0..=i)
                .rev()
                .find_map(|j| fn_name(lines[j]).map(|n| (n, is_test_fn(&lines, j))))
                .unwrap_or_else(|| ("<item outside any fn>".into(), false));
            found.push(OutsideRead {
                file: file.to_path_buf(),
                line: i + 1,
                function,
                is_test,
            });
        }
    }
    found
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The packages `cargoTestFlags` excludes (`--exclude NAME`).
fn excluded(test_flags: &[String]) -> Vec<String> {
    test_flags
        .windows(2)
        .filter(|w| w[0] == "--exclude")
        .map(|w| w[1].clone())
        .collect()
}

#[test]
fn the_nix_build_skips_exactly_the_tests_that_need_files_outside_rust() {
    let Some(h) =
        Harness::get("the_nix_build_skips_exactly_the_tests_that_need_files_outside_rust")
    else {
        return;
    };
    let out = h.flake_outputs(&json!({}));
    let pkg = &out["package"];
    let skips: Vec<String> = strings(&pkg["checkFlags"])
        .into_iter()
        .map(|f| {
            f.strip_prefix("--skip=")
                .unwrap_or_else(|| panic!("checkFlags entry {f} is not --skip=NAME"))
                .to_string()
        })
        .collect();
    let excluded = excluded(&strings(&pkg["cargoTestFlags"]));

    let rust = std::fs::canonicalize(repo_root().join("rust")).unwrap();
    // Workspace members and their package names, read from the Cargo.toml files by Nix's
    // fromTOML (tests/eval/flake-outputs.nix `workspace`).
    let members = out["workspace"].as_object().unwrap();
    assert!(members.len() >= 8, "{members:?}");
    let mut missing = Vec::new();
    let mut all_tests = Vec::new();
    for (member, package) in members {
        let crate_dir = rust.join(member);
        let package = package.as_str().unwrap().to_string();
        let mut files = Vec::new();
        rs_files(&crate_dir, &mut files);
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            let tests = tests_in(&lines);
            all_tests.extend(tests.iter().cloned());
            if excluded.contains(&package) {
                continue;
            }
            for read in outside_reads(&rust, &crate_dir, &file) {
                // A test reading outside rust/ is skipped by name; a helper doing it takes
                // every test of its file with it.
                let needed: Vec<String> = if read.is_test {
                    vec![read.function.clone()]
                } else {
                    tests.clone()
                };
                for t in needed {
                    if !skips.iter().any(|s| t.contains(s.as_str())) {
                        missing.push(format!(
                            "{} ({}:{} in fn {}{})",
                            t,
                            read.file.strip_prefix(&rust).unwrap().display(),
                            read.line,
                            read.function,
                            if read.is_test { "" } else { ", a helper" }
                        ));
                    }
                }
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "tests that read files outside rust/ but run in the Nix build (add them to \
         testsNeedingTheRepository in pkgs/kcore/package.nix):\n{}",
        missing.join("\n")
    );
    // And no stale entry: each skip names an existing test (libtest matches substrings).
    for s in &skips {
        assert!(
            all_tests.iter().any(|t| t.contains(s.as_str())),
            "checkFlags skips {s}, which is no test in rust/"
        );
    }
    // The scan finds what it must (guards against a scan that finds nothing).
    assert!(skips.contains(&"the_documentation_lists_every_tool".to_string()));
    assert!(
        excluded.contains(&"kcore-storage-bed".to_string()),
        "{excluded:?}"
    );
}

#[test]
fn the_package_builds_three_wrapped_binaries() {
    let Some(h) = Harness::get("the_package_builds_three_wrapped_binaries") else {
        return;
    };
    let pkg = &h.flake_outputs(&json!({}))["package"];
    assert_eq!(
        pkg["cargoBuildFlags"],
        json!([
            "--package",
            "kcore-agent",
            "--package",
            "kcore-controller",
            "--package",
            "kctl"
        ])
    );
    assert_eq!(
        pkg["nativeBuildInputs"],
        json!(["makeWrapper", "installShellFiles"])
    );
    // kctl's completions for the three shells, from the binary itself.
    let install = pkg["postInstall"].as_str().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        assert!(
            install.contains(&format!(
                "--{shell} <(\"$out/bin/kctl\" completion {shell})"
            )),
            "{install}"
        );
    }
    assert_eq!(pkg["doCheck"], json!(true));
    let fixup = pkg["postFixup"].as_str().unwrap();
    for bin in ["kcore-agent", "kcore-controller", "kctl"] {
        assert!(fixup.contains(bin), "{fixup}");
    }
    assert!(fixup.contains("wrapProgram"), "{fixup}");
    for tool in [
        "nix",
        "disko",
        "lvm2",
        "zfs",
        "cryptsetup",
        "systemd",
        "util-linux",
    ] {
        assert!(
            fixup.contains(&format!("-{tool}/bin")),
            "{tool} not on the wrapper's PATH: {fixup}"
        );
    }
}

#[test]
fn the_provision_disk_image_runs_the_packaged_agent() {
    let Some(h) = Harness::get("the_provision_disk_image_runs_the_packaged_agent") else {
        return;
    };
    let image = &h.flake_outputs(&json!({}))["provisionDiskImage"];
    let kcore = image["kcore"].as_str().unwrap();
    assert_eq!(image["name"], "kcore-provision-disk");
    assert_eq!(image["tag"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(image["contents"], json!([kcore]));
    assert_eq!(
        image["config"]["Entrypoint"],
        json!([format!("{kcore}/bin/kcore-agent"), "provision-disk"])
    );
    assert_eq!(image["config"]["Env"], json!(["MARKER_DIR=/var/lib/kcore"]));
}
