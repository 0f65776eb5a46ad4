//! Nix profile generations as a type: a profile is a symlink (`/nix/var/nix/profiles/system`)
//! to `system-<N>-link`, which points at a store path. Parse the directory once and pass
//! [`Generation`] values around instead of re-reading links (after lanzaboote's
//! `generation.rs`). `nix-env --list-generations` reads the same links; so does the boot
//! loader installer when it writes one entry per generation.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

/// One generation of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// `N` of `<profile>-<N>-link`.
    pub number: u64,
    /// The store path the generation points at (a NixOS system's toplevel).
    pub store_path: PathBuf,
    /// When the generation link was made (the link's own modification time).
    pub created: OffsetDateTime,
}

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read the profile {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the profile {path} points at {target}, which is not one of its generation links (<name>-<N>-link)"
    )]
    NotAGeneration { path: PathBuf, target: PathBuf },
}

/// A profile: `dir/name` is the current link, `dir/name-<N>-link` the generations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub path: PathBuf,
}

impl Profile {
    /// The NixOS system profile.
    pub fn system() -> Profile {
        Profile::new("/nix/var/nix/profiles/system")
    }

    pub fn new(path: impl Into<PathBuf>) -> Profile {
        Profile { path: path.into() }
    }

    fn dir_and_name(&self) -> (PathBuf, String) {
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (dir, name)
    }

    /// `N` when `file_name` is `<name>-<N>-link`.
    fn number_of(name: &str, file_name: &str) -> Option<u64> {
        file_name
            .strip_prefix(name)?
            .strip_prefix('-')?
            .strip_suffix("-link")?
            .parse()
            .ok()
    }

    fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> ProfileError + '_ {
        move |source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    fn generation_at(&self, link: &Path, number: u64) -> Result<Generation, ProfileError> {
        let store_path = std::fs::read_link(link).map_err(Self::read_error(link))?;
        let created = std::fs::symlink_metadata(link)
            .and_then(|m| m.modified())
            .map(OffsetDateTime::from)
            .map_err(Self::read_error(link))?;
        Ok(Generation {
            number,
            store_path,
            created,
        })
    }

    /// Every generation, oldest first.
    pub fn generations(&self) -> Result<Vec<Generation>, ProfileError> {
        let (dir, name) = self.dir_and_name();
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(Self::read_error(&dir))? {
            let entry = entry.map_err(Self::read_error(&dir))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if let Some(number) = Self::number_of(&name, &file_name) {
                found.push(self.generation_at(&entry.path(), number)?);
            }
        }
        found.sort_by_key(|g| g.number);
        Ok(found)
    }

    /// The generation the profile link points at now.
    pub fn current(&self) -> Result<Generation, ProfileError> {
        let target = std::fs::read_link(&self.path).map_err(Self::read_error(&self.path))?;
        let (dir, name) = self.dir_and_name();
        let file_name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let number =
            Self::number_of(&name, &file_name).ok_or_else(|| ProfileError::NotAGeneration {
                path: self.path.clone(),
                target: target.clone(),
            })?;
        self.generation_at(&dir.join(file_name), number)
    }

    /// The generation before `number`, if any (what a revert goes back to).
    pub fn previous(&self, number: u64) -> Result<Option<Generation>, ProfileError> {
        Ok(self
            .generations()?
            .into_iter()
            .filter(|g| g.number < number)
            .max_by_key(|g| g.number))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A profile directory as Nix leaves it: `system-1-link`, `system-2-link`,
    /// `system -> system-2-link`, plus unrelated entries.
    fn profile_dir() -> (tempfile::TempDir, Profile) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        symlink(
            "/nix/store/aaa-nixos-system-hv1-25.11",
            p.join("system-1-link"),
        )
        .unwrap();
        symlink(
            "/nix/store/bbb-nixos-system-hv1-25.11",
            p.join("system-2-link"),
        )
        .unwrap();
        symlink(
            "/nix/store/ccc-nixos-system-hv1-25.11",
            p.join("system-10-link"),
        )
        .unwrap();
        symlink("system-2-link", p.join("system")).unwrap();
        symlink("/nix/store/zzz-user-env", p.join("default-1-link")).unwrap();
        std::fs::write(p.join("system-x-link"), "").unwrap();
        let profile = Profile::new(p.join("system"));
        (dir, profile)
    }

    #[test]
    fn generations_are_parsed_once_and_ordered_by_number() {
        let (_dir, profile) = profile_dir();
        let all = profile.generations().unwrap();
        let numbers: Vec<u64> = all.iter().map(|g| g.number).collect();
        assert_eq!(numbers, [1, 2, 10], "numeric order, other profiles ignored");
        assert_eq!(
            all[2].store_path,
            Path::new("/nix/store/ccc-nixos-system-hv1-25.11")
        );
        let now = OffsetDateTime::now_utc();
        assert!(all.iter().all(|g| g.created <= now));
    }

    #[test]
    fn current_and_previous() {
        let (_dir, profile) = profile_dir();
        let current = profile.current().unwrap();
        assert_eq!(current.number, 2);
        assert_eq!(
            current.store_path,
            Path::new("/nix/store/bbb-nixos-system-hv1-25.11")
        );
        assert_eq!(profile.previous(2).unwrap().unwrap().number, 1);
        assert_eq!(profile.previous(10).unwrap().unwrap().number, 2);
        assert!(profile.previous(1).unwrap().is_none());
    }

    #[test]
    fn errors_name_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Profile::new(dir.path().join("system"));
        let err = missing.current().unwrap_err().to_string();
        assert!(
            err.contains("cannot read the profile") && err.contains("system"),
            "{err}"
        );
        symlink("/nix/store/x", dir.path().join("system")).unwrap();
        let err = missing.current().unwrap_err().to_string();
        assert!(err.contains("not one of its generation links"), "{err}");
    }
}
