//! The download cache (content-addressed by SHA256, written atomically) and HTTP access.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::{DebianError, Reporter};

/// Name of the versioned subdirectory of the cache this crate owns.
pub(crate) const CACHE_DIR: &str = "debian-v1";

/// Version of the extraction manifests in `trees/`; bump when extraction changes.
const TREE_FORMAT: u32 = 4;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The cache directory layout: `files/` holds verified downloads by SHA256, `packs/` each
/// package's uncompressed `data.tar` by SHA256, `trees/` extraction manifests by the `.deb`'s SHA256.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    root: PathBuf,
    agent: ureq::Agent,
}

fn io_err(path: &Path, e: io::Error) -> DebianError {
    DebianError::Io {
        path: path.to_owned(),
        source: e,
    }
}

/// Hex SHA256 of a byte slice.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees a partial file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DebianError> {
    write_via_temp(path, bytes, true)
}

/// [`write_atomic`], with an `fsync` of the temporary file before the rename when `sync`.
fn write_via_temp(path: &Path, bytes: &[u8], sync: bool) -> Result<(), DebianError> {
    let (tmp, mut f) = temp_file(path)?;
    let res = f
        .write_all(bytes)
        .and_then(|()| if sync { f.sync_all() } else { Ok(()) })
        .map_err(|e| io_err(&tmp, e));
    drop(f);
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(path, e)
    })
}

/// Creates a fresh temporary file next to `path` (creating its directory).
pub(crate) fn temp_file(path: &Path) -> Result<(PathBuf, File), DebianError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        ".tmp-{}-{}-{}",
        std::process::id(),
        n,
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    );
    let tmp = dir.join(name);
    // The directory usually exists: try first, so thousands of files do not each take the
    // parent directory's lock for a `mkdir` that fails.
    let f = match File::create(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
            File::create(&tmp)
        }
        other => other,
    }
    .map_err(|e| io_err(&tmp, e))?;
    Ok((tmp, f))
}

impl Cache {
    pub(crate) fn new(
        cache: &Path,
        dns: &std::sync::Arc<crate::dns::DnsCache>,
    ) -> Result<Self, DebianError> {
        let root = cache.join(CACHE_DIR);
        fs::create_dir_all(&root).map_err(|e| io_err(&root, e))?;
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // Every download worker keeps its connection to the mirror between requests.
            .max_idle_connections_per_host(32)
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::default(),
            crate::dns::CachingResolver(dns.clone()),
        );
        Ok(Self { root, agent })
    }

    /// Where a verified download with this SHA256 lives.
    pub(crate) fn file_path(&self, sha256: &str) -> PathBuf {
        self.root.join("files").join(&sha256[..2]).join(sha256)
    }

    /// Where a package's uncompressed `data.tar` with this SHA256 is kept.
    pub(crate) fn pack_path(&self, sha256: &str) -> PathBuf {
        self.root.join("packs").join(&sha256[..2]).join(sha256)
    }

    /// Where the extraction manifest of the `.deb` with this SHA256 lives.
    pub(crate) fn tree_path(&self, deb_sha256: &str) -> PathBuf {
        self.root
            .join("trees")
            .join(format!("{deb_sha256}.v{TREE_FORMAT}.json"))
    }

    /// The path of the cached file with this SHA256 if it is present and intact.
    pub(crate) fn cached_verified(
        &self,
        name: &str,
        size: Option<u64>,
        sha256: &str,
    ) -> Result<Option<PathBuf>, DebianError> {
        let sha256 = sha256.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DebianError::Parse {
                file: name.to_owned(),
                message: format!("invalid SHA256 `{sha256}`"),
            });
        }
        let path = self.file_path(&sha256);
        match hash_file(&path) {
            Ok((len, h)) if h == sha256 && size.is_none_or(|s| s == len) => Ok(Some(path)),
            _ => Ok(None),
        }
    }

    /// GETs a small document; `Ok(None)` on 404 / 410. Transient failures (a dropped
    /// connection, a 5xx) are retried a few times, as apt does.
    pub(crate) fn get(&self, url: &str) -> Result<Option<Vec<u8>>, DebianError> {
        with_retries(|| self.get_once(url))
    }

    fn get_once(&self, url: &str) -> Result<Option<Vec<u8>>, DebianError> {
        let Some(mut reader) = self.open(url)? else {
            return Ok(None);
        };
        let mut body = Vec::new();
        reader
            .read_to_end(&mut body)
            .map_err(|e| DebianError::Http {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Some(body))
    }

    /// A reader of the document at `url` (`http://`, `https://` or a `file://` mirror on
    /// this machine); `Ok(None)` when there is no such document.
    fn open(&self, url: &str) -> Result<Option<Box<dyn Read + Send>>, DebianError> {
        if let Some(path) = file_url_path(url) {
            return match File::open(&path) {
                Ok(f) => Ok(Some(Box::new(f))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err(&path, e)),
            };
        }
        match self.agent.get(url).call() {
            Ok(r) => Ok(Some(Box::new(r.into_body().into_reader()))),
            Err(ureq::Error::StatusCode(404 | 410)) => Ok(None),
            Err(e) => Err(DebianError::Http {
                url: url.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    /// Returns the path of the verified file with this SHA256, downloading it from `url` when
    /// it is missing from the cache or the cached copy is corrupt. `name` names the file in
    /// errors. Size and hash are checked before the file is moved into place.
    pub(crate) fn fetch_verified(
        &self,
        url: &str,
        name: &str,
        size: Option<u64>,
        sha256: &str,
        reporter: &dyn Reporter,
    ) -> Result<PathBuf, DebianError> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DebianError::Parse {
                file: name.to_owned(),
                message: format!("invalid SHA256 `{sha256}`"),
            });
        }
        let sha256 = sha256.to_ascii_lowercase();
        let path = self.file_path(&sha256);
        if path.exists() {
            match hash_file(&path) {
                Ok((len, h)) if h == sha256 && size.is_none_or(|s| s == len) => return Ok(path),
                _ => {
                    reporter.message(&format!(
                        "cached {name} is corrupt ({}); downloading it again",
                        path.display()
                    ));
                    let _ = fs::remove_file(&path);
                }
            }
        }
        with_retries(|| self.download_verified(url, name, size, &sha256, &path, reporter))?;
        Ok(path)
    }

    /// One download of `url` into a temporary file, checked, then renamed to `path`.
    fn download_verified(
        &self,
        url: &str,
        name: &str,
        size: Option<u64>,
        sha256: &str,
        path: &Path,
        reporter: &dyn Reporter,
    ) -> Result<(), DebianError> {
        let mut reader = self.open(url)?.ok_or_else(|| DebianError::NotFound {
            url: url.to_owned(),
        })?;
        let (tmp, mut f) = temp_file(path)?;
        let result = (|| {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            let expected = size.unwrap_or(0);
            loop {
                let n = reader.read(&mut buf).map_err(|e| DebianError::Http {
                    url: url.to_owned(),
                    message: e.to_string(),
                })?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                f.write_all(&buf[..n]).map_err(|e| io_err(&tmp, e))?;
                total += n as u64;
                reporter.download(name, total, expected);
                if let Some(s) = size
                    && total > s
                {
                    break;
                }
            }
            f.sync_all().map_err(|e| io_err(&tmp, e))?;
            if let Some(s) = size
                && total != s
            {
                return Err(DebianError::SizeMismatch {
                    file: name.to_owned(),
                    expected: s,
                    actual: total,
                });
            }
            let actual = hex::encode(hasher.finalize());
            if actual != sha256 {
                return Err(DebianError::HashMismatch {
                    file: name.to_owned(),
                    expected: sha256.to_owned(),
                    actual,
                });
            }
            Ok(())
        })();
        drop(f);
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err(path, e)
        })?;
        Ok(())
    }
}

/// The local path of a `file://` URL (`file:///srv/mirror/dists/...`), percent escapes
/// decoded; `None` for any other URL.
pub(crate) fn file_url_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("file://")?;
    // `file://localhost/path` names the same file as `file:///path`.
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = bytes.get(i + 1..i + 3)
            && let Ok(h) = std::str::from_utf8(h)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    Some(PathBuf::from(std::ffi::OsString::from_vec(out)))
}

/// Writes `bytes` to `path` through a temporary file and a rename, without `fsync`: for
/// files that are checked against their SHA256 whenever they are read.
pub(crate) fn write_checked_later(path: &Path, bytes: &[u8]) -> Result<(), DebianError> {
    write_via_temp(path, bytes, false)
}

/// Runs `op` up to three times while it fails with a network error (never on a checksum or
/// signature failure, which must stop the build), waiting 0.2 s, then 0.8 s.
fn with_retries<T>(mut op: impl FnMut() -> Result<T, DebianError>) -> Result<T, DebianError> {
    let mut delay = std::time::Duration::from_millis(200);
    for _ in 0..2 {
        match op() {
            Err(DebianError::Http { .. }) => {
                std::thread::sleep(delay);
                delay *= 4;
            }
            other => return other,
        }
    }
    op()
}

/// Length and hex SHA256 of a file.
pub(crate) fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((total, hex::encode(hasher.finalize())))
}
