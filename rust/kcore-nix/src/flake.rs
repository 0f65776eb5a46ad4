//! Flake URLs that pin a revision, built from a rollout's `flake_ref` and `flake_rev`.
//!
//! A rollout must build the same thing on every node, today and when it is retried or rolled
//! back, so the URL handed to `nixos-rebuild`/`nix build` has to name one commit:
//!
//! | `flake_ref` | pinned URL |
//! |---|---|
//! | `github:o/r`, `gitlab:o/r`, `sourcehut:~o/r` (optionally `?dir=..&host=..`) | `github:o/r/<rev>` (query kept) |
//! | `git+https://h/r.git`, `git+ssh://`, `git+http://`, `git+git://`, `git+file:///abs` | `...?rev=<rev>` merged into the existing query (`ref=` is kept: it tells Nix which branch to fetch) |
//!
//! Refused, each with a message that says what to use instead: `path:` and bare paths
//! (not fetchable by other nodes, not pinned), indirect registry refs (`nixpkgs`,
//! `flake:x`: their meaning depends on each machine's registry), tarball/`https:`/`file:`
//! URLs (kcore cannot prove the content is the commit `flake_rev` names), refs that
//! already carry a different revision or a branch where a revision must go, `#` fragments
//! (kcore appends `#<host>` itself), and any `flake_rev` that is not 40 lowercase hex digits.
//!
//! [`nixos_rebuild_target`] and [`toplevel_installable`] then add the host's output.

/// Why a `flake_ref`/`flake_rev` pair cannot be turned into a pinned URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlakeError {
    #[error(
        "flake_rev {rev:?} is not a full commit id ({why}); give the 40-character lowercase hex \
         sha, e.g. the output of `git rev-parse HEAD`"
    )]
    BadRev { rev: String, why: String },
    #[error(
        "flake_ref is empty; give a ref every node can fetch, such as github:owner/repo or \
         git+https://host/repo.git"
    )]
    Empty,
    #[error("flake_ref {flake_ref:?} contains {what}; remove it")]
    BadChar { flake_ref: String, what: String },
    #[error(
        "flake_ref {flake_ref:?} contains a '#' fragment; give the flake only (kcore appends \
         #<host> itself)"
    )]
    Fragment { flake_ref: String },
    #[error(
        "flake_ref {flake_ref:?} is a local path, which other nodes cannot fetch and which is not \
         pinned to a commit; push it to a git remote and use github:owner/repo or \
         git+https://host/repo.git (or git+file:///abs/path for a repository present on every node)"
    )]
    LocalPath { flake_ref: String },
    #[error(
        "flake_ref {flake_ref:?} is an indirect (registry) ref whose meaning depends on each \
         machine's flake registry; use a direct ref such as github:owner/repo"
    )]
    Indirect { flake_ref: String },
    #[error(
        "flake_ref {flake_ref:?} uses the {scheme:?} scheme, where kcore cannot pin flake_rev; \
         use github:, gitlab:, sourcehut: or git+https:// / git+ssh:// / git+file://"
    )]
    Unpinnable { flake_ref: String, scheme: String },
    #[error(
        "flake_ref {flake_ref:?} already names {what} {value:?}, which conflicts with flake_rev \
         {rev}; remove it from flake_ref (the rollout's flake_rev pins the revision)"
    )]
    Conflict {
        flake_ref: String,
        what: &'static str,
        value: String,
        rev: String,
    },
    #[error(
        "host {host:?} cannot name a flake output; use letters, digits, '_' and '-' only (a \
         node id)"
    )]
    BadHost { host: String },
    #[error("flake_ref {flake_ref:?} is malformed: {problem}; expected {expected}")]
    Malformed {
        flake_ref: String,
        problem: String,
        expected: &'static str,
    },
}

/// `<url>#<host>`, the argument of `nixos-rebuild --flake`, which builds
/// `nixosConfigurations.<host>`. The host must be a plain attribute name (letters, digits,
/// `_`, `-`; validated node ids always are): a `.` would be read as a path separator and
/// quotes or `#`/`?` would change the URL's meaning.
pub fn nixos_rebuild_target(pinned_url: &str, host: &str) -> Result<String, FlakeError> {
    check_host(host)?;
    Ok(format!("{pinned_url}#{host}"))
}

/// `<url>#nixosConfigurations.<host>.config.system.build.toplevel`, the installable that
/// `nix build` uses to build a host's system without `nixos-rebuild`.
pub fn toplevel_installable(pinned_url: &str, host: &str) -> Result<String, FlakeError> {
    check_host(host)?;
    Ok(format!(
        "{pinned_url}#nixosConfigurations.{host}.config.system.build.toplevel"
    ))
}

/// What a rollout plan evaluates of a host at a pinned revision, without building it: a
/// function of `url` (a [`pinned_flake_url`]) and `host` for [`crate::queries::NixEval`]
/// (`.flakes()`, `--argstr url … --argstr host …`). It answers `{hostExists: false, hosts}`
/// when the flake has no such `nixosConfigurations` attribute, else `{hostExists: true,
/// toplevel, kernel, initrd, kernelModules, switchInhibitors}`: the store paths the
/// toplevel's `kernel`, `initrd` and `kernel-modules` links will point at, spelled as
/// nixpkgs' `nixos/modules/system/boot/kernel.nix` makes them (`${kernel}/${kernelFile}`,
/// `${initialRamdisk}/${initrdFile}`, `${modulesTree}`; `null` when
/// `boot.kernel.enable`/`boot.initrd.enable` is off, as for containers), and
/// `system.switch.inhibitors` (`{}` where nixpkgs has none). Evaluating an output path
/// does not build it.
pub const HOST_PLAN_EXPR: &str = r#"{ url, host }:
let
  configs = (builtins.getFlake url).nixosConfigurations or { };
in
if !(builtins.hasAttr host configs) then
  { hostExists = false; hosts = builtins.attrNames configs; }
else
  let
    c = configs.${host}.config;
    kernelOn = c.boot.kernel.enable or true;
    initrdOn = c.boot.initrd.enable or true;
  in
  {
    hostExists = true;
    toplevel = c.system.build.toplevel.outPath;
    kernel =
      if kernelOn then "${c.boot.kernelPackages.kernel}/${c.system.boot.loader.kernelFile}" else null;
    initrd =
      if initrdOn then "${c.system.build.initialRamdisk}/${c.system.boot.loader.initrdFile}" else null;
    kernelModules = if kernelOn then "${c.system.modulesTree}" else null;
    switchInhibitors = c.system.switch.inhibitors or { };
  }
"#;

fn check_host(host: &str) -> Result<(), FlakeError> {
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(FlakeError::BadHost {
            host: host.to_owned(),
        })
    }
}

/// Schemes with `owner/repo[/rev]` paths.
const FORGE_SCHEMES: &[&str] = &["github", "gitlab", "sourcehut"];
/// Git transports where the revision goes into `?rev=`.
const GIT_SCHEMES: &[&str] = &["git+https", "git+ssh", "git+http", "git+git", "git+file"];

/// Check that `rev` is a full lowercase hex commit id.
pub fn check_rev(rev: &str) -> Result<(), FlakeError> {
    let bad = |why: String| FlakeError::BadRev {
        rev: rev.to_owned(),
        why,
    };
    if rev.len() != 40 {
        return Err(bad(format!("{} characters, not 40", rev.chars().count())));
    }
    if let Some(c) = rev.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(bad(if c.is_ascii_hexdigit() {
            format!("upper-case {c:?}: write it in lower case")
        } else {
            format!("{c:?} is not a hex digit")
        }));
    }
    Ok(())
}

/// The URL for `flake_ref` pinned to `flake_rev` (see the module docs for the rules).
pub fn pinned_flake_url(flake_ref: &str, flake_rev: &str) -> Result<String, FlakeError> {
    check_rev(flake_rev)?;
    let owned = || flake_ref.to_owned();
    if flake_ref.is_empty() {
        return Err(FlakeError::Empty);
    }
    if let Some(c) = flake_ref
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(FlakeError::BadChar {
            flake_ref: owned(),
            what: format!("the character {c:?}"),
        });
    }
    if flake_ref.contains('#') {
        return Err(FlakeError::Fragment { flake_ref: owned() });
    }
    if flake_ref.starts_with(['/', '.', '~']) {
        return Err(FlakeError::LocalPath { flake_ref: owned() });
    }
    let Some((scheme, rest)) = flake_ref.split_once(':') else {
        return Err(FlakeError::Indirect { flake_ref: owned() });
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, parse_query(flake_ref, query)?),
        None => (rest, Vec::new()),
    };
    match scheme {
        "path" => Err(FlakeError::LocalPath { flake_ref: owned() }),
        "flake" => Err(FlakeError::Indirect { flake_ref: owned() }),
        s if FORGE_SCHEMES.contains(&s) => pin_forge(flake_ref, scheme, path, query, flake_rev),
        s if GIT_SCHEMES.contains(&s) => pin_git(flake_ref, scheme, path, query, flake_rev),
        _ => Err(FlakeError::Unpinnable {
            flake_ref: owned(),
            scheme: scheme.to_owned(),
        }),
    }
}

type Query<'a> = Vec<(&'a str, Option<&'a str>)>;

fn parse_query<'a>(flake_ref: &str, query: &'a str) -> Result<Query<'a>, FlakeError> {
    let mut params = Vec::new();
    for part in query.split('&') {
        if part.is_empty() {
            return Err(FlakeError::Malformed {
                flake_ref: flake_ref.to_owned(),
                problem: "empty query parameter".to_owned(),
                expected: "key=value pairs separated by '&'",
            });
        }
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (part, None),
        };
        if params.iter().any(|(k, _)| *k == key) {
            return Err(FlakeError::Malformed {
                flake_ref: flake_ref.to_owned(),
                problem: format!("query parameter {key:?} appears twice"),
                expected: "each parameter once",
            });
        }
        params.push((key, value));
    }
    Ok(params)
}

fn render_query(params: &Query<'_>) -> String {
    if params.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = params
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => (*k).to_owned(),
        })
        .collect();
    format!("?{}", parts.join("&"))
}

fn pin_forge(
    flake_ref: &str,
    scheme: &str,
    path: &str,
    mut query: Query<'_>,
    rev: &str,
) -> Result<String, FlakeError> {
    let segments: Vec<&str> = path.split('/').collect();
    if !(2..=3).contains(&segments.len()) || segments.iter().any(|s| s.is_empty()) {
        return Err(FlakeError::Malformed {
            flake_ref: flake_ref.to_owned(),
            problem: format!("{path:?} is not owner/repo"),
            expected: "github:owner/repo (gitlab:, sourcehut: likewise)",
        });
    }
    if let Some(third) = segments.get(2)
        && *third != rev
    {
        return Err(FlakeError::Conflict {
            flake_ref: flake_ref.to_owned(),
            what: "the ref or revision",
            value: (*third).to_owned(),
            rev: rev.to_owned(),
        });
    }
    for (key, value) in &query {
        // On forges a branch and a revision are alternatives; a branch here means the
        // operator expected to follow it, which a pinned rollout does not do.
        let conflicting = match *key {
            "ref" => true,
            "rev" => *value != Some(rev),
            _ => false,
        };
        if conflicting {
            return Err(FlakeError::Conflict {
                flake_ref: flake_ref.to_owned(),
                what: if *key == "ref" {
                    "the branch"
                } else {
                    "the revision"
                },
                value: value.unwrap_or_default().to_owned(),
                rev: rev.to_owned(),
            });
        }
    }
    query.retain(|(k, _)| *k != "rev");
    Ok(format!(
        "{scheme}:{}/{}/{rev}{}",
        segments[0],
        segments[1],
        render_query(&query)
    ))
}

fn pin_git<'a>(
    flake_ref: &str,
    scheme: &str,
    path: &str,
    mut query: Query<'a>,
    rev: &'a str,
) -> Result<String, FlakeError> {
    let Some(location) = path.strip_prefix("//") else {
        return Err(FlakeError::Malformed {
            flake_ref: flake_ref.to_owned(),
            problem: format!("{scheme}: must be followed by //"),
            expected: "git+https://host/path (git+file:///absolute/path for local repositories)",
        });
    };
    if scheme == "git+file" && !location.starts_with('/') {
        return Err(FlakeError::Malformed {
            flake_ref: flake_ref.to_owned(),
            problem: "git+file needs an absolute path".to_owned(),
            expected: "git+file:///absolute/path",
        });
    }
    if scheme != "git+file" && location.split('/').next().is_none_or(str::is_empty) {
        return Err(FlakeError::Malformed {
            flake_ref: flake_ref.to_owned(),
            problem: "no host".to_owned(),
            expected: "git+https://host/path",
        });
    }
    match query.iter().find(|(k, _)| *k == "rev") {
        Some((_, value)) if *value != Some(rev) => {
            return Err(FlakeError::Conflict {
                flake_ref: flake_ref.to_owned(),
                what: "the revision",
                value: value.unwrap_or_default().to_owned(),
                rev: rev.to_owned(),
            });
        }
        Some(_) => {}
        None => query.push(("rev", Some(rev))),
    }
    Ok(format!("{scheme}:{path}{}", render_query(&query)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REV: &str = "0123456789abcdef0123456789abcdef01234567";
    const OTHER: &str = "fedcba9876543210fedcba9876543210fedcba98";

    #[test]
    fn forges_get_the_rev_as_a_path_segment() {
        let cases = [
            ("github:o/r", format!("github:o/r/{REV}")),
            ("gitlab:group/proj", format!("gitlab:group/proj/{REV}")),
            (
                "sourcehut:~user/repo",
                format!("sourcehut:~user/repo/{REV}"),
            ),
            ("github:o/r?dir=sub", format!("github:o/r/{REV}?dir=sub")),
            (
                "gitlab:o/r?host=git.example.org&dir=nix",
                format!("gitlab:o/r/{REV}?host=git.example.org&dir=nix"),
            ),
            // Already pinned to the same revision: accepted, normalised to the path form.
            (&*format!("github:o/r/{REV}"), format!("github:o/r/{REV}")),
            (
                &*format!("github:o/r?rev={REV}"),
                format!("github:o/r/{REV}"),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(pinned_flake_url(input, REV).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn git_urls_get_a_rev_query_parameter() {
        let cases = [
            (
                "git+https://example.org/r.git",
                format!("git+https://example.org/r.git?rev={REV}"),
            ),
            (
                "git+https://example.org/r.git?ref=release",
                format!("git+https://example.org/r.git?ref=release&rev={REV}"),
            ),
            (
                "git+ssh://git@example.org/o/r?dir=nix&shallow=1",
                format!("git+ssh://git@example.org/o/r?dir=nix&shallow=1&rev={REV}"),
            ),
            (
                "git+file:///srv/flake",
                format!("git+file:///srv/flake?rev={REV}"),
            ),
            (
                &*format!("git+https://h/r?rev={REV}&ref=main"),
                format!("git+https://h/r?rev={REV}&ref=main"),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(pinned_flake_url(input, REV).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn targets_name_the_host_configuration() {
        let url = pinned_flake_url("github:o/r", REV).unwrap();
        assert_eq!(
            nixos_rebuild_target(&url, "node-1").unwrap(),
            format!("github:o/r/{REV}#node-1")
        );
        assert_eq!(
            toplevel_installable(&url, "node_1").unwrap(),
            format!("github:o/r/{REV}#nixosConfigurations.node_1.config.system.build.toplevel")
        );
        for bad in ["", "a.b", "a b", "a#b", "a?b", "\"a\"", "${x}", "ä"] {
            let err = nixos_rebuild_target(&url, bad).unwrap_err();
            assert!(matches!(err, FlakeError::BadHost { .. }), "{bad:?}");
            assert!(toplevel_installable(&url, bad).is_err());
        }
    }

    #[test]
    fn bad_revs_are_refused_with_the_reason() {
        for (rev, why) in [
            ("", "0 characters"),
            ("abc123", "6 characters"),
            (&*REV.to_uppercase(), "lower case"),
            (&*format!("{}g", &REV[..39]), "'g' is not a hex digit"),
            (&*format!("{REV}0"), "41 characters"),
            ("main", "4 characters"),
            (&*format!("{} ", &REV[..39]), "' ' is not a hex digit"),
        ] {
            let err = pinned_flake_url("github:o/r", rev).unwrap_err();
            assert!(matches!(err, FlakeError::BadRev { .. }), "{rev:?}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(why), "{rev:?}: {msg}");
            assert!(msg.contains("40-character lowercase hex"), "{msg}");
        }
    }

    #[test]
    fn unpinnable_refs_are_refused() {
        type Check = fn(&FlakeError) -> bool;
        let refused: &[(&str, Check)] = &[
            ("", |e| matches!(e, FlakeError::Empty)),
            ("path:/srv/flake", |e| {
                matches!(e, FlakeError::LocalPath { .. })
            }),
            ("/srv/flake", |e| matches!(e, FlakeError::LocalPath { .. })),
            ("./flake", |e| matches!(e, FlakeError::LocalPath { .. })),
            (".", |e| matches!(e, FlakeError::LocalPath { .. })),
            ("nixpkgs", |e| matches!(e, FlakeError::Indirect { .. })),
            ("flake:nixpkgs", |e| {
                matches!(e, FlakeError::Indirect { .. })
            }),
            ("https://example.org/x.tar.gz", |e| {
                matches!(e, FlakeError::Unpinnable { .. })
            }),
            ("tarball+https://example.org/x", |e| {
                matches!(e, FlakeError::Unpinnable { .. })
            }),
            ("file:///srv/x.tar.gz", |e| {
                matches!(e, FlakeError::Unpinnable { .. })
            }),
            ("hg+https://example.org/r", |e| {
                matches!(e, FlakeError::Unpinnable { .. })
            }),
            ("github:o/r/main", |e| {
                matches!(e, FlakeError::Conflict { .. })
            }),
            ("github:o/r?ref=main", |e| {
                matches!(e, FlakeError::Conflict { .. })
            }),
            ("github:o/r#host", |e| {
                matches!(e, FlakeError::Fragment { .. })
            }),
            ("github:o", |e| matches!(e, FlakeError::Malformed { .. })),
            ("github:o//r", |e| matches!(e, FlakeError::Malformed { .. })),
            ("github:o/r/x/y", |e| {
                matches!(e, FlakeError::Malformed { .. })
            }),
            ("github:o/r?dir=a&dir=b", |e| {
                matches!(e, FlakeError::Malformed { .. })
            }),
            ("github:o/r?", |e| matches!(e, FlakeError::Malformed { .. })),
            ("git+https:example.org/r", |e| {
                matches!(e, FlakeError::Malformed { .. })
            }),
            ("git+https:///r", |e| {
                matches!(e, FlakeError::Malformed { .. })
            }),
            ("git+file://relative/r", |e| {
                matches!(e, FlakeError::Malformed { .. })
            }),
            ("github:o/r name", |e| {
                matches!(e, FlakeError::BadChar { .. })
            }),
            ("github:o/r\n", |e| matches!(e, FlakeError::BadChar { .. })),
        ];
        for (input, is_expected) in refused {
            let err = pinned_flake_url(input, REV).unwrap_err();
            assert!(is_expected(&err), "{input:?} gave {err:?}");
        }
        let conflicting_rev = format!("github:o/r/{OTHER}");
        let msg = pinned_flake_url(&conflicting_rev, REV)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(OTHER) && msg.contains(REV), "{msg}");
        let msg = pinned_flake_url(&format!("git+https://h/r?rev={OTHER}"), REV)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("conflicts with flake_rev"), "{msg}");
        let msg = pinned_flake_url("path:/srv/flake", REV)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("git+https://"),
            "the error says what to use: {msg}"
        );
    }
}
