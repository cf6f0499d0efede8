//! The download cache: verified files by SHA-256, and their unpacked trees.
//!
//! Layout under the source's cache directory (`STORE/sources/fetch`):
//! `files-v1/AB/ABCD…` (the verified bytes), `unpacked-v1/KEY/` (an archive extracted, keyed by
//! its hash, kind and `strip_components`) and `tmp/` (partial downloads and extractions, moved
//! into place only when complete, so nothing half-written is ever used).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::FetchError;
use crate::extract::{ArchiveKind, extract};

const FILES: &str = "files-v1";
const UNPACKED: &str = "unpacked-v1";

/// Whether `s` is 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The cache directory of the download source.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FetchError {
    let path = path.to_owned();
    move |source| FetchError::Io {
        action,
        path,
        source,
    }
}

/// SHA-256 and size of a file.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(h.finalize()), size))
}

impl Cache {
    /// Opens (creating) the cache in `root`.
    pub fn open(root: &Path) -> Result<Self, FetchError> {
        for sub in [FILES, UNPACKED, "tmp"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(io("create", &d))?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// Where the verified file with this hash lives.
    pub fn file_path(&self, sha256: &str) -> PathBuf {
        self.root.join(FILES).join(&sha256[..2]).join(sha256)
    }

    /// The cached file with this hash, if present and intact (it is hashed again: a corrupt
    /// copy is removed and reported as absent).
    pub fn verified(&self, sha256: &str) -> Result<Option<PathBuf>, FetchError> {
        if !is_sha256(sha256) {
            return Ok(None);
        }
        let path = self.file_path(sha256);
        match hash_file(&path) {
            Ok((h, _)) if h == sha256 => Ok(Some(path)),
            Ok(_) => {
                let _ = fs::remove_file(&path);
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// A new temporary path in the cache (on the same file system as its final place).
    pub(crate) fn temp(&self, what: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}.{}.{n}", std::process::id()))
    }

    /// Moves a verified temporary file into place as the file with this hash.
    pub(crate) fn commit(&self, tmp: &Path, sha256: &str) -> Result<PathBuf, FetchError> {
        let path = self.file_path(sha256);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        fs::rename(tmp, &path).map_err(io("rename", tmp))?;
        Ok(path)
    }

    /// The directory holding the archive `blob` (with hash `sha256`) unpacked, extracting it
    /// first unless an earlier build did. `url` names the download in errors.
    pub fn unpacked(
        &self,
        sha256: &str,
        kind: ArchiveKind,
        strip: u32,
        blob: &Path,
        url: impl Fn() -> String,
    ) -> Result<PathBuf, FetchError> {
        let dir = self
            .root
            .join(UNPACKED)
            .join(format!("{sha256}-{}-{strip}", kind.name()));
        let root = dir.join("root");
        if root.is_dir() {
            return Ok(root);
        }
        let tmp = self.temp("unpack");
        let tmp_root = tmp.join("root");
        fs::create_dir_all(&tmp_root).map_err(io("create", &tmp_root))?;
        let result = fs::File::open(blob)
            .map_err(io("read", blob))
            .and_then(|f| {
                extract(f, kind, strip, &tmp_root)
                    .map_err(|source| FetchError::Extract { url: url(), source })
            });
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        match fs::rename(&tmp, &dir) {
            Ok(()) => Ok(root),
            // Another build unpacked the same archive meanwhile: use its copy.
            Err(_) if root.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(root)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(io("rename", &tmp)(e))
            }
        }
    }
}
