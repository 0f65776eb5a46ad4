//! Locating a program once: an explicit path (flag or configuration key), then an
//! environment variable, then `PATH`, with an error that names every place tried and the fix.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use std::os::unix::fs::PermissionsExt;

use super::RunError;

/// Where a [`Program`]'s path came from (for logs and error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramSource {
    /// Given explicitly (a command-line flag or a configuration key).
    Explicit,
    /// Taken from the named environment variable.
    Env(String),
    /// Found on `PATH`.
    Path,
}

/// An external program whose executable has been located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    name: String,
    path: PathBuf,
    source: ProgramSource,
}

impl Program {
    /// Locate `name`: the `explicit` path first, then the environment variable `env_var`,
    /// then `PATH`. An explicit value or variable holding a bare name (no '/') is looked up
    /// on `PATH`; anything else is a path that must be an executable file.
    ///
    /// The error names the program, every place that was tried and how to provide it.
    pub fn resolve(
        name: &str,
        explicit: Option<&Path>,
        env_var: &str,
    ) -> Result<Program, RunError> {
        resolve_with(name, explicit, env_var, std::env::var_os(env_var))
    }

    /// The program's well-known name (`nix-instantiate`), not its path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The resolved executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the path came from.
    pub fn source(&self) -> &ProgramSource {
        &self.source
    }
}

/// [`Program::resolve`] with the environment variable's value passed in, so tests need not
/// mutate the process environment (`set_var` is unsafe in edition 2024).
fn resolve_with(
    name: &str,
    explicit: Option<&Path>,
    env_var: &str,
    env_value: Option<OsString>,
) -> Result<Program, RunError> {
    let not_found = |detail: String, fix: String| RunError::NotFound {
        program: name.to_owned(),
        env_var: env_var.to_owned(),
        detail,
        fix,
    };
    if let Some(path) = explicit {
        let path = locate(path).map_err(|why| {
            not_found(
                format!("the configured path {} {why}", path.display()),
                format!(
                    "point the setting at the `{name}` executable, or leave it unset to use \
                         ${env_var} or PATH"
                ),
            )
        })?;
        return Ok(Program {
            name: name.to_owned(),
            path,
            source: ProgramSource::Explicit,
        });
    }
    if let Some(value) = env_value.filter(|v| !v.is_empty()) {
        let as_path = Path::new(&value);
        let path = locate(as_path).map_err(|why| {
            not_found(
                format!("{env_var}={} {why}", as_path.display()),
                format!("set {env_var} to the absolute path of `{name}`, or unset it to use PATH"),
            )
        })?;
        return Ok(Program {
            name: name.to_owned(),
            path,
            source: ProgramSource::Env(env_var.to_owned()),
        });
    }
    match which::which(name) {
        Ok(path) => Ok(Program {
            name: name.to_owned(),
            path,
            source: ProgramSource::Path,
        }),
        Err(_) => Err(not_found(
            format!("no path was configured, ${env_var} is not set, and `{name}` is not on PATH"),
            format!("install it and put it on PATH, or set {env_var}=/absolute/path/to/{name}"),
        )),
    }
}

/// A bare name (`nix-instantiate`) is looked up on PATH; anything with a '/' is a path that
/// must be an executable file.
fn locate(path: &Path) -> Result<PathBuf, String> {
    if path.is_absolute() || path.components().count() > 1 {
        check_executable(path)
    } else {
        which::which(path).map_err(|e| format!("is not on PATH ({e})"))
    }
}

/// Checks that `path` is an executable regular file; returns it made absolute (relative
/// paths would change meaning with `current_dir`).
fn check_executable(path: &Path) -> Result<PathBuf, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be used ({e})"))?;
    if !meta.is_file() {
        return Err("is not a regular file".to_owned());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("is not executable (no x permission bit)".to_owned());
    }
    std::path::absolute(path).map_err(|e| format!("cannot be made absolute ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_prefers_explicit_then_env_then_path() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("fake-tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

        let explicit = Program::resolve("sh", Some(&exe), "KCORE_TEST_RESOLVE_A").unwrap();
        assert_eq!(explicit.path(), exe);
        assert_eq!(explicit.source(), &ProgramSource::Explicit);

        // A bare explicit name is looked up on PATH, like a bare variable value.
        let bare_explicit = resolve_with("x", Some(Path::new("sh")), "V", None).unwrap();
        assert!(bare_explicit.path().is_absolute() && bare_explicit.path().ends_with("sh"));
        assert_eq!(bare_explicit.source(), &ProgramSource::Explicit);

        // The explicit path wins over the variable.
        let both = resolve_with("sh", Some(&exe), "V", Some("/bin/false".into())).unwrap();
        assert_eq!(both.path(), exe);

        // Then the variable: an absolute path, or a bare name looked up on PATH.
        let env = resolve_with("x", None, "V", Some(exe.clone().into())).unwrap();
        assert_eq!(env.path(), exe);
        assert_eq!(env.source(), &ProgramSource::Env("V".into()));
        let bare = resolve_with("x", None, "V", Some("sh".into())).unwrap();
        assert!(bare.path().is_absolute() && bare.path().ends_with("sh"));

        // An empty variable counts as unset.
        let empty = resolve_with("sh", None, "V", Some("".into())).unwrap();
        assert_eq!(empty.source(), &ProgramSource::Path);

        // A variable that points nowhere is an error naming the variable, not a silent
        // fall-through to PATH (the operator asked for that binary).
        let err = resolve_with("sh", None, "KCORE_SH", Some(dir.path().join("gone").into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("KCORE_SH="), "{err}");
        assert!(
            err.contains("set KCORE_SH to the absolute path of `sh`"),
            "{err}"
        );

        let from_path = Program::resolve("sh", None, "KCORE_TEST_RESOLVE_UNSET").unwrap();
        assert_eq!(from_path.source(), &ProgramSource::Path);
        assert!(from_path.path().is_absolute());
    }

    #[test]
    fn resolve_errors_name_the_program_the_variable_and_the_fix() {
        let err = Program::resolve(
            "kcore-surely-missing-tool",
            None,
            "KCORE_SURELY_MISSING_TOOL",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`kcore-surely-missing-tool` not found"),
            "{msg}"
        );
        assert!(
            msg.contains("KCORE_SURELY_MISSING_TOOL=/absolute/path/to/kcore-surely-missing-tool"),
            "{msg}"
        );
        assert!(err.argv().is_empty());

        let dir = tempfile::tempdir().unwrap();
        let not_exec = dir.path().join("plain");
        std::fs::write(&not_exec, "x").unwrap();
        let msg = Program::resolve("disko", Some(&not_exec), "KCORE_DISKO")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("is not executable"), "{msg}");
        assert!(msg.contains(&not_exec.display().to_string()), "{msg}");
        let msg = Program::resolve("disko", Some(dir.path()), "KCORE_DISKO")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("is not a regular file"), "{msg}");
        let missing = dir.path().join("nope");
        let msg = Program::resolve("disko", Some(&missing), "KCORE_DISKO")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("cannot be used"), "{msg}");
    }
}
