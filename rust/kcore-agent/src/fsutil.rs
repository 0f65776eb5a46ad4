//! Writing files the agent owns (applied disko fragments, the node's Nix configuration,
//! operation results): to a temporary file in the same directory, fsync, keep the previous
//! version as `<name>.bak` (not for operation results), then rename over. A crash leaves
//! either the old or the new file, never a half-written one.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Write `contents` to `path` atomically, keeping the previous file as `<path>.bak`.
/// Returns the backup's path when there was a previous file.
pub fn write_with_backup(path: &Path, contents: &[u8]) -> std::io::Result<Option<PathBuf>> {
    let backup = if path.exists() {
        let mut name = path.as_os_str().to_owned();
        name.push(".bak");
        let backup = PathBuf::from(name);
        // A copy, not a rename: `path` must exist at every moment.
        std::fs::copy(path, &backup)?;
        std::fs::File::open(&backup)?.sync_all()?;
        Some(backup)
    } else {
        None
    };
    write_atomic(path, contents)?;
    Ok(backup)
}

/// Write `contents` to `path` atomically without a backup (files that are rewritten often
/// and whose previous version is of no use, such as a finished operation's result).
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".kcore-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Make the rename durable; not every filesystem supports fsync on directories.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_write_then_backup_of_the_previous() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/frag.nix");
        assert_eq!(write_with_backup(&path, b"one").unwrap(), None);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
        let bak = write_with_backup(&path, b"two").unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(std::fs::read_to_string(&bak).unwrap(), "one");
        assert!(bak.ends_with("frag.nix.bak"));
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
