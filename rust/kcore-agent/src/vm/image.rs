//! A VM's image: an `http(s)://` URL downloaded once into `storage.imageCacheDir` and reused
//! by later VMs, or a path on the node used where it is; then written into the volume.
//!
//! - The cache entry of a URL is `<cache>/<sha256 of the URL>.img` with `.json` beside it
//!   (URL, SHA-256 of the content, size, format). The download goes to a temporary file in
//!   the same directory, hashed as it arrives, bounded by `vm.imageMaxBytes` (checked against
//!   `Content-Length` first and against the bytes received) and `vm.downloadTimeoutSeconds`,
//!   and is renamed into place only when complete and (with `spec.imageSha256`) matching:
//!   an interrupted or refused download leaves nothing.
//! - Progress goes to the caller every 5 % (or 64 MiB without a length), and ends up in the
//!   VM's `VmReport.message`.
//! - The format (raw or qcow2, nothing else) and virtual size come from `qemu-img info`; the
//!   content is written with `qemu-img convert -n` into the existing volume, which keeps the
//!   volume's size; an image larger than the volume is refused before anything is written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kcore_nix::commands::QemuImg;
use kcore_nix::programs::QEMU_IMG;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{VmError, VmHost};

/// What the cache keeps about a downloaded image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedImage {
    pub url: String,
    pub sha256: String,
    pub size_bytes: u64,
}

/// An image ready to be written into a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub path: PathBuf,
    /// `raw` or `qcow2`.
    pub format: String,
    pub virtual_size: u64,
    /// Known for downloads (computed) and for local files with an expected checksum.
    pub sha256: Option<String>,
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The cache file of `url`.
pub fn cache_path(cache: &Path, url: &str) -> PathBuf {
    cache.join(format!("{}.img", hex_sha256(url.as_bytes())))
}

/// The image `source` names, downloaded (or found in the cache) and inspected.
pub async fn fetch(
    host: &VmHost,
    source: &str,
    expected_sha256: Option<&str>,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<Image, VmError> {
    let expected = expected_sha256.map(str::to_ascii_lowercase);
    let (path, sha256) = if source.starts_with("http://") || source.starts_with("https://") {
        let (path, meta) = cached_or_download(host, source, expected.as_deref(), progress).await?;
        (path, Some(meta.sha256))
    } else {
        let path = PathBuf::from(source);
        let sha = match &expected {
            Some(_) => Some(hash_file(&path).await?),
            None => None,
        };
        (path, sha)
    };
    if let (Some(want), Some(got)) = (&expected, &sha256)
        && want != got
    {
        return Err(VmError::Refused(format!(
            "spec.imageSha256: the image {source} has SHA-256 {got}, not {want}; \
             correct the checksum or the image"
        )));
    }
    let (format, virtual_size) = inspect(host, &path).await?;
    Ok(Image {
        path,
        format,
        virtual_size,
        sha256,
    })
}

async fn hash_file(path: &Path) -> Result<String, VmError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&p).map_err(|e| VmError::io(&p, e))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| VmError::io(&p, e))?;
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| VmError::Refused(format!("hashing {} failed: {e}", path.display())))?
}

/// `qemu-img info`: the format (raw or qcow2 only) and the virtual size.
async fn inspect(host: &VmHost, path: &Path) -> Result<(String, u64), VmError> {
    #[derive(Deserialize)]
    struct Info {
        format: String,
        #[serde(rename = "virtual-size")]
        virtual_size: u64,
    }
    let program = host.tools.resolve(QEMU_IMG)?;
    let info: Info = QemuImg::Info {
        file: path.to_path_buf(),
    }
    .invocation(&program)
    .timeout(Duration::from_secs(60))
    .capture_json()
    .await?;
    if info.format != "raw" && info.format != "qcow2" {
        return Err(VmError::Refused(format!(
            "spec.image: {} is a {} image; kcore takes raw or qcow2 (convert it with qemu-img)",
            path.display(),
            info.format
        )));
    }
    Ok((info.format, info.virtual_size))
}

async fn cached_or_download(
    host: &VmHost,
    url: &str,
    expected: Option<&str>,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<(PathBuf, CachedImage), VmError> {
    let cache = &host.storage.image_cache_dir;
    let path = cache_path(cache, url);
    let meta_path = path.with_extension("json");
    if let Ok(bytes) = std::fs::read(&meta_path)
        && let Ok(meta) = serde_json::from_slice::<CachedImage>(&bytes)
        && meta.url == url
        && std::fs::metadata(&path).is_ok_and(|m| m.len() == meta.size_bytes)
    {
        progress(format!("image {url} is in the cache ({})", path.display()));
        return Ok((path, meta));
    }
    std::fs::create_dir_all(cache).map_err(|e| VmError::io(cache, e))?;
    let timeout = Duration::from_secs(host.vm.download_timeout_seconds);
    let meta = tokio::time::timeout(timeout, download(host, url, &path, expected, progress))
        .await
        .map_err(|_| {
            VmError::Download(format!(
                "{url}: not complete within {timeout:?} (vm.downloadTimeoutSeconds)"
            ))
        })??;
    let json = serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other);
    json.and_then(|j| crate::fsutil::write_atomic(&meta_path, &j))
        .map_err(|e| VmError::io(&meta_path, e))?;
    Ok((path, meta))
}

fn http_client() -> Result<reqwest::Client, VmError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| VmError::Download(format!("TLS set-up: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| VmError::Download(format!("HTTP client set-up: {e}")))
}

async fn download(
    host: &VmHost,
    url: &str,
    dest: &Path,
    expected: Option<&str>,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<CachedImage, VmError> {
    let limit = host.vm.image_max_bytes;
    let mut response = http_client()?
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| VmError::Download(format!("{url}: {e}")))?;
    let total = response.content_length();
    if let Some(total) = total
        && total > limit
    {
        return Err(VmError::Download(format!(
            "{url} is {total} bytes, more than vm.imageMaxBytes ({limit})"
        )));
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    // Removed on every early return: an interrupted download leaves nothing.
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(dir)
        .map_err(|e| VmError::io(dir, e))?;
    let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(|e| VmError::io(dir, e))?);
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut next_note: u64 = 0;
    progress(format!("downloading {url}"));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| VmError::Download(format!("{url}: {e}")))?
    {
        received += chunk.len() as u64;
        if received > limit {
            return Err(VmError::Download(format!(
                "{url} sent more than vm.imageMaxBytes ({limit}) bytes"
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| VmError::io(tmp.path(), e))?;
        if received >= next_note {
            progress(match total {
                Some(t) if t > 0 => format!(
                    "downloading {url}: {received} of {t} bytes ({}%)",
                    received * 100 / t
                ),
                _ => format!("downloading {url}: {received} bytes"),
            });
            next_note = received + total.map_or(64 << 20, |t| (t / 20).max(1));
        }
    }
    if let Some(t) = total
        && received != t
    {
        return Err(VmError::Download(format!(
            "{url}: got {received} of {t} bytes"
        )));
    }
    file.sync_all()
        .await
        .map_err(|e| VmError::io(tmp.path(), e))?;
    drop(file);
    let sha256 = hex::encode(hasher.finalize());
    if let Some(want) = expected
        && want != sha256
    {
        // Checked before the rename: a refused download does not enter the cache.
        return Err(VmError::Refused(format!(
            "spec.imageSha256: {url} has SHA-256 {sha256}, not {want}; correct the checksum \
             or the image"
        )));
    }
    tmp.persist(dest).map_err(|e| VmError::io(dest, e.error))?;
    progress(format!(
        "downloaded {url}: {received} bytes, sha256 {sha256}"
    ));
    Ok(CachedImage {
        url: url.to_string(),
        sha256,
        size_bytes: received,
    })
}

/// Write `image` into the volume at `target` of `volume_bytes` (raw, existing).
pub async fn write_into(
    host: &VmHost,
    image: &Image,
    target: &Path,
    volume_bytes: u64,
) -> Result<(), VmError> {
    if image.virtual_size > volume_bytes {
        return Err(VmError::Refused(format!(
            "spec.storageSizeBytes: the image {} is {} bytes, more than the volume's {volume_bytes}; \
             ask for at least {} bytes",
            image.path.display(),
            image.virtual_size,
            image.virtual_size
        )));
    }
    let program = host.tools.resolve(QEMU_IMG)?;
    QemuImg::ConvertInto {
        source: image.path.clone(),
        format: image.format.clone(),
        target: target.to_path_buf(),
    }
    .invocation(&program)
    .timeout(Duration::from_secs(host.vm.download_timeout_seconds))
    .output()
    .await?;
    Ok(())
}
