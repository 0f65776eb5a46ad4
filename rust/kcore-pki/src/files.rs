//! Writing keys and certificates so a crash never leaves a half-written or
//! world-readable file behind.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `contents` to `path` atomically: a temporary file in the same directory,
/// created with `mode` before any byte is written (keys: 0600), fsynced, renamed over
/// `path`, then the directory is fsynced so the rename survives a power cut.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".kcore-tmp-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    // tempfile applies the mode through open(2), which the umask can narrow; set it
    // explicitly so the result is exactly `mode`.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Reads a PEM file; the error names `what` (e.g. "tls.keyFile") and the path.
pub fn read_pem_file(what: &str, path: &Path) -> Result<String, crate::PkiError> {
    fs::read_to_string(path).map_err(|source| crate::PkiError::Io {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_with_exact_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&path, b"new secret", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new secret");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("node.key")]);
    }

    #[test]
    fn missing_directory_is_an_error_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("x.pem");
        assert!(write_atomically(&path, b"x", 0o644).is_err());
        assert!(!path.exists());
    }
}
