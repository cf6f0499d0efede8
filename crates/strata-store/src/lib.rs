//! The local store.
//!
//! ```text
//! <root>/v1/blobs/sha256/<hex>     blobs by digest (layers, configs, manifests)
//! <root>/v1/layers/<key>.json      layer records: which blob a layer input hash produced
//! <root>/v1/images/<hex>.json      images built here (the roots kept by `gc`)
//! <root>/v1/sources/<kind>/        caches owned by content sources
//! <root>/v1/tmp/                   temporary files, renamed into place when complete
//! <root>/v1/locks/                 lock files
//! ```
//!
//! Every write goes to `tmp/` first and is renamed into place, so readers never see a partial
//! file. Builds hold the store lock shared and `gc` holds it exclusively; building one layer
//! key holds that key's lock, so two processes never build the same layer at once.

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

/// Version of the on-disk layout; a change that old strata versions cannot read bumps it.
const LAYOUT: &str = "v1";

/// A store failure, with the path involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("store: cannot {action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A record file is not valid JSON of the expected shape.
    #[error("store: corrupt record `{path}`")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The extra sweep of [`Store::gc_with`] failed.
    #[error("store: {what}")]
    Sweep {
        /// What was being swept.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A digest string is not `sha256:<64 hex>`.
    #[error("store: `{0}` is not a sha256 digest")]
    BadDigest(String),
    /// Bytes did not hash to the digest they were stored under.
    #[error("store: blob `{path}` should have digest {expected} but has {actual}")]
    DigestMismatch {
        /// The file.
        path: PathBuf,
        /// The digest it was stored as.
        expected: String,
        /// The digest of its bytes.
        actual: String,
    },
}

type Result<T> = std::result::Result<T, StoreError>;

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// An image recorded as built: `gc` keeps every blob it lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `NAME:TAG` of the image.
    pub reference: String,
    /// Digest of its manifest.
    pub manifest: String,
    /// Every blob it uses: manifest, config and layers.
    pub blobs: Vec<String>,
}

/// What `gc` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs_removed: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Layer records deleted (their blob was gone).
    pub records_removed: usize,
    /// Entries the extra sweep of [`Store::gc_with`] removed (`strata run`'s unpacked root
    /// file systems of images the store no longer records).
    pub rootfs_removed: usize,
}

/// An open store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Store {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let root = root.join(LAYOUT);
        for dir in [
            "blobs/sha256",
            "layers",
            "images",
            "sources",
            "tmp",
            "locks",
        ] {
            let d = root.join(dir);
            fs::create_dir_all(&d).map_err(io_err("create", &d))?;
        }
        Ok(Self { root })
    }

    /// The default location: `$STRATA_STORE`, else `$XDG_CACHE_HOME/strata`, else
    /// `~/.cache/strata`.
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("STRATA_STORE") {
            return PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("strata");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
        PathBuf::from(home).join(".cache/strata")
    }

    /// The versioned root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory for temporary files of this store's users (pushes, pulls, runs); on the
    /// store's file system, so finished files are renamed into place.
    pub fn scratch_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A directory a content source may use for its caches.
    pub fn source_dir(&self, kind: &str) -> Result<PathBuf> {
        let d = self.root.join("sources").join(kind);
        fs::create_dir_all(&d).map_err(io_err("create", &d))?;
        Ok(d)
    }

    /// The store-wide lock: shared for builds, exclusive for `gc`.
    pub fn lock_store(&self, exclusive: bool) -> Result<Lock> {
        let path = self.root.join("locks/store.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        if exclusive {
            file.lock().map_err(io_err("lock", &path))?;
        } else {
            file.lock_shared().map_err(io_err("lock", &path))?;
        }
        Ok(Lock { _file: file })
    }

    /// Exclusive lock on one key (e.g. a layer input hash), so only one process builds it.
    pub fn lock_key(&self, key: &str) -> Result<Lock> {
        let path = self.root.join("locks").join(format!("{key}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        file.lock().map_err(io_err("lock", &path))?;
        Ok(Lock { _file: file })
    }

    /// Path of the blob with `digest` (which may not exist).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest_hex(digest)?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &str) -> Result<bool> {
        Ok(self.blob_path(digest)?.is_file())
    }

    /// A new temporary file inside the store, for writing a blob before [`Store::commit_blob`].
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        let dir = self.root.join("tmp");
        tempfile::NamedTempFile::new_in(&dir).map_err(io_err("create a temporary file in", &dir))
    }

    /// Moves a completely written temporary file into place as the blob `digest`. The caller
    /// vouches for the digest (it hashed the bytes while writing them).
    pub fn commit_blob(&self, temp: tempfile::NamedTempFile, digest: &str) -> Result<PathBuf> {
        let dest = self.blob_path(digest)?;
        temp.as_file()
            .sync_data()
            .map_err(io_err("sync", temp.path()))?;
        temp.persist(&dest).map_err(|e| StoreError::Io {
            action: "rename into",
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(dest)
    }

    /// Stores `bytes` as a blob and returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        if !self.has_blob(&digest)? {
            let mut temp = self.temp_file()?;
            temp.write_all(bytes)
                .map_err(io_err("write", temp.path()))?;
            self.commit_blob(temp, &digest)?;
        }
        Ok(digest)
    }

    /// Reads a whole blob.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(io_err("read", &path))
    }

    /// Re-hashes a blob and fails if its bytes do not match its name.
    pub fn verify_blob(&self, digest: &str) -> Result<()> {
        let path = self.blob_path(digest)?;
        let mut file = File::open(&path).map_err(io_err("open", &path))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(io_err("read", &path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let actual = format!("sha256:{}", hex::encode(h.finalize()));
        if actual != digest {
            return Err(StoreError::DigestMismatch {
                path,
                expected: digest.to_owned(),
                actual,
            });
        }
        Ok(())
    }

    /// The layer record stored under `key`, if any and if its blob is still present.
    pub fn layer_record<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let path = self.root.join("layers").join(format!("{key}.json"));
        read_json(&path)
    }

    /// Records what the layer input `key` produced.
    pub fn put_layer_record<T: Serialize>(&self, key: &str, record: &T) -> Result<()> {
        let path = self.root.join("layers").join(format!("{key}.json"));
        self.write_json(&path, record)
    }

    /// Records a built image so `gc` keeps its blobs.
    pub fn record_image(&self, record: &ImageRecord) -> Result<()> {
        let name = hex::encode(Sha256::digest(record.reference.as_bytes()));
        let path = self.root.join("images").join(format!("{name}.json"));
        self.write_json(&path, record)
    }

    /// Every recorded image.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            if let Some(rec) = read_json(&entry.path())? {
                out.push(rec);
            }
        }
        out.sort_by(|a: &ImageRecord, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// The hex digests of every blob a recorded image uses (manifest, config, layers).
    pub fn used_blobs(&self) -> Result<BTreeSet<String>> {
        Ok(self
            .images()?
            .into_iter()
            .flat_map(|r| r.blobs)
            .filter_map(|d| digest_hex(&d).ok().map(str::to_owned))
            .collect())
    }

    /// Removes every blob no recorded image uses, the layer records pointing at removed
    /// blobs, and leftover temporary files. Holds the store lock exclusively.
    pub fn gc<T: DeserializeOwned + BlobRef>(&self) -> Result<GcReport> {
        let _lock = self.lock_store(true)?;
        self.gc_locked::<T>()
    }

    fn gc_locked<T: DeserializeOwned + BlobRef>(&self) -> Result<GcReport> {
        let keep = self.used_blobs()?;
        let mut report = GcReport::default();
        let blobs = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&blobs).map_err(io_err("list", &blobs))? {
            let entry = entry.map_err(io_err("list", &blobs))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).map_err(io_err("remove", &entry.path()))?;
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
        }
        let layers = self.root.join("layers");
        for entry in fs::read_dir(&layers).map_err(io_err("list", &layers))? {
            let entry = entry.map_err(io_err("list", &layers))?;
            let gone = match read_json::<T>(&entry.path()) {
                Ok(Some(rec)) => !self.has_blob(rec.blob_digest()).unwrap_or(false),
                _ => true,
            };
            if gone {
                fs::remove_file(entry.path()).map_err(io_err("remove", &entry.path()))?;
                report.records_removed += 1;
            }
        }
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_err("list", &tmp))?.flatten() {
            let _ = fs::remove_file(entry.path());
        }
        Ok(report)
    }

    /// [`Store::gc`], then, under the same exclusive lock (so no build or run is using them),
    /// `sweep` with the hex digests of the blobs still in use: for directories other crates
    /// keep in the store (`strata run`'s root file systems). Its count is
    /// [`GcReport::rootfs_removed`].
    pub fn gc_with<T, E>(
        &self,
        what: &'static str,
        sweep: impl FnOnce(&Store, &BTreeSet<String>) -> std::result::Result<usize, E>,
    ) -> Result<GcReport>
    where
        T: DeserializeOwned + BlobRef,
        E: std::error::Error + Send + Sync + 'static,
    {
        let _lock = self.lock_store(true)?;
        let mut report = self.gc_locked::<T>()?;
        let used = self.used_blobs()?;
        report.rootfs_removed = sweep(self, &used).map_err(|e| StoreError::Sweep {
            what,
            source: Box::new(e),
        })?;
        Ok(report)
    }

    fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Corrupt {
            path: path.to_owned(),
            source,
        })?;
        let mut temp = self.temp_file()?;
        temp.write_all(&bytes)
            .map_err(io_err("write", temp.path()))?;
        temp.persist(path).map_err(|e| StoreError::Io {
            action: "rename into",
            path: path.to_owned(),
            source: e.error,
        })?;
        Ok(())
    }
}

/// A layer record names the blob it stands for, so `gc` can drop records of removed blobs.
pub trait BlobRef {
    /// The digest of the blob.
    fn blob_digest(&self) -> &str;
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// The hex part of a `sha256:<hex>` digest, checked with [`strata_oci::Digest`] (the store
/// keeps sha256 blobs only).
pub fn digest_hex(digest: &str) -> Result<&str> {
    match strata_oci::Digest::parse(digest) {
        Ok(d) if d.algorithm() == "sha256" => Ok(&digest["sha256:".len()..]),
        _ => Err(StoreError::BadDigest(digest.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Rec {
        digest: String,
    }
    impl BlobRef for Rec {
        fn blob_digest(&self) -> &str {
            &self.digest
        }
    }

    #[test]
    fn blobs_records_and_gc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let kept = store.put_blob(b"kept").expect("put");
        let dropped = store.put_blob(b"dropped").expect("put");
        assert_eq!(store.put_blob(b"kept").expect("put again"), kept);
        store.verify_blob(&kept).expect("verify");
        store
            .put_layer_record(
                "k1",
                &Rec {
                    digest: dropped.clone(),
                },
            )
            .expect("record");
        store
            .record_image(&ImageRecord {
                reference: "strata/x:y".into(),
                manifest: kept.clone(),
                blobs: vec![kept.clone()],
            })
            .expect("image");
        let report = store.gc::<Rec>().expect("gc");
        assert_eq!(report.blobs_removed, 1);
        assert_eq!(report.records_removed, 1);
        assert!(store.has_blob(&kept).expect("has"));
        assert!(!store.has_blob(&dropped).expect("has"));
        assert!(store.layer_record::<Rec>("k1").expect("read").is_none());
    }

    #[test]
    fn corrupt_blob_is_reported_with_both_digests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let d = store.put_blob(b"abc").expect("put");
        fs::write(store.blob_path(&d).expect("path"), b"abd").expect("tamper");
        let msg = store.verify_blob(&d).expect_err("mismatch").to_string();
        assert!(msg.contains(&d) && msg.contains("but has sha256:"), "{msg}");
        assert!(digest_hex("sha256:zz").is_err());
    }
}
