//! The download source: files fetched from pinned URLs as image content.
//!
//! A spec half's `fetch` entries name a URL, the SHA-256 of its bytes and where they go in the
//! image, either as one file or unpacked from an archive ([`ArchiveKind`]). Bytes are never used
//! unless their hash matches; verified downloads are kept in the store's source directory by
//! hash ([`cache::Cache`]), so a second spec with the same file downloads nothing and
//! `--offline` builds from the cache. Archives are extracted by [`extract`], which refuses
//! entries that would land outside `dest`.
//!
//! A missing `sha256` is taken from the spec's lock file (the `[[fetch]]` tables, see
//! [`FetchLock`]), which `strata lock` fills in along with the size and the URL after
//! redirects. [`FetchSource`] implements [`strata_source::Source`] with one store object per
//! download (id `fetch:DEST`), so the layer planner treats downloads like packages.

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

pub mod cache;
pub mod extract;
pub mod http;
mod lock;

pub use cache::Cache;
pub use extract::{ArchiveKind, ExtractError};
pub use http::{Downloaded, Http, redact};
pub use lock::{FetchLock, LockedDownload};

use std::path::PathBuf;

use strata_fstree::{Content, Entry, EntryKind, ImagePath, Tree, WalkOptions, walk};
use strata_source::{Resolution, Source, SourceContext, SourceError, StoreObject, hash_parts};
use strata_spec::{FetchEntry, Part, Spec};

/// Mode of a downloaded file that is not unpacked, when the entry has no `mode`.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// A failure of the download source.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The bytes at a URL do not have the pinned hash.
    #[error("SHA-256 mismatch for {url}: expected {expected}, got {actual}")]
    HashMismatch {
        /// The URL (credentials removed).
        url: String,
        /// The pinned hash.
        expected: String,
        /// The hash of what was downloaded.
        actual: String,
    },
    /// The download failed (after retries, for transient failures).
    #[error("cannot download {url}: {message}")]
    Http {
        /// The URL (credentials removed).
        url: String,
        /// What went wrong.
        message: String,
    },
    /// `--offline` and the file is not in the cache.
    #[error("--offline: {url} (sha256 {sha256}) is not in the download cache")]
    NotCached {
        /// The URL (credentials removed).
        url: String,
        /// The hash looked for.
        sha256: String,
    },
    /// `--locked` or `--offline` and neither the spec nor the lock file pins the hash.
    #[error(
        "{flag}: {url} has no sha256 in the spec and none in the lock file {}; run `strata lock` first",
        lock.display()
    )]
    Unpinned {
        /// `--locked` or `--offline`.
        flag: &'static str,
        /// The URL (credentials removed).
        url: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// A local file could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done (`write`, `rename`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An archive could not be unpacked.
    #[error("cannot unpack {url}")]
    Extract {
        /// The URL (credentials removed).
        url: String,
        /// The cause.
        #[source]
        source: ExtractError,
    },
    /// The unpacked tree could not be read back.
    #[error("cannot read the unpacked files of {url}")]
    Walk {
        /// The URL (credentials removed).
        url: String,
        /// The cause.
        #[source]
        source: strata_fstree::WalkError,
    },
    /// The lock file cannot be read or parsed.
    #[error("lock file {}: {message}", path.display())]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Progress of downloads, for a UI to show.
pub trait Reporter: Send + Sync {
    /// A human-readable message (`downloading URL`, a retry).
    fn message(&self, _msg: &str) {}
    /// `bytes` of `total` (0 when unknown) of `url` (credentials removed) have arrived.
    fn download(&self, _url: &str, _bytes: u64, _total: u64) {}
}

/// A [`Reporter`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReporter;

impl Reporter for NoReporter {}

/// How the download source treats the lock file and the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchOptions {
    /// Every URL must have its hash pinned by the spec or the lock file.
    pub locked: bool,
    /// Use no network: every file must be in the cache.
    pub offline: bool,
}

/// One `fetch` entry with the spec resolved away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchInput {
    /// The URL, possibly with credentials (never shown).
    pub url: String,
    /// The pinned SHA-256 (lowercase hex), if the spec gives it.
    pub sha256: Option<String>,
    /// Where the file, or the archive's content, goes in the image.
    pub dest: ImagePath,
    /// Mode of the file (default [`DEFAULT_FILE_MODE`]), or of `dest` when unpacking.
    pub mode: Option<u32>,
    /// Owner of every entry (default 0).
    pub uid: Option<u32>,
    /// Group of every entry (default 0).
    pub gid: Option<u32>,
    /// Unpack the download as this kind of archive into `dest`.
    pub unpack: Option<ArchiveKind>,
    /// Leading path components to drop from archive entries.
    pub strip_components: u32,
    /// Where the entry is written in the spec, for messages (`strata.toml:7:3: base.fetch[0]`).
    pub context: String,
}

impl FetchInput {
    /// The input for one spec entry.
    pub fn from_entry(e: &FetchEntry) -> Self {
        Self {
            url: e.url.clone(),
            sha256: e.sha256.clone(),
            dest: e.dest.clone(),
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            unpack: e.unpack.as_deref().and_then(ArchiveKind::from_name),
            strip_components: e.strip_components.unwrap_or(0),
            context: format!("{}: {}", e.location, e.key),
        }
    }
}

/// The download source of one spec half.
pub struct FetchSource {
    inputs: Vec<FetchInput>,
    lock_file: PathBuf,
    options: FetchOptions,
    reporter: Box<dyn Reporter>,
}

impl FetchSource {
    /// A source for these entries; `lock_file` is the spec's lock file (it need not exist).
    pub fn new(inputs: Vec<FetchInput>, lock_file: PathBuf, options: FetchOptions) -> Self {
        Self {
            inputs,
            lock_file,
            options,
            reporter: Box::new(NoReporter),
        }
    }

    /// The `fetch` entries of one half of `spec`, or `None` when it has none.
    pub fn from_spec(spec: &Spec, part: Part, options: FetchOptions) -> Option<Self> {
        let entries = &spec.half(part).fetch;
        if entries.is_empty() {
            return None;
        }
        Some(Self::new(
            entries.iter().map(FetchInput::from_entry).collect(),
            lock_path(&spec.path),
            options,
        ))
    }

    /// Reports download progress to `reporter`.
    pub fn with_reporter(mut self, reporter: Box<dyn Reporter>) -> Self {
        self.reporter = reporter;
        self
    }

    /// The verified file of one input, downloading it unless the cache has it.
    fn blob(
        &self,
        input: &FetchInput,
        lock: Option<&FetchLock>,
        cache: &Cache,
        http: &Http,
    ) -> Result<(String, PathBuf), FetchError> {
        let pinned = input.sha256.clone().or_else(|| {
            lock.and_then(|l| l.get(&input.url))
                .map(|d| d.sha256.clone())
        });
        match pinned {
            Some(sha) => {
                if let Some(path) = cache.verified(&sha)? {
                    return Ok((sha, path));
                }
                if self.options.offline {
                    return Err(FetchError::NotCached {
                        url: redact(&input.url),
                        sha256: sha,
                    });
                }
                let d = http.download(&input.url, Some(&sha), cache, self.reporter.as_ref())?;
                Ok((d.sha256, d.path))
            }
            None => {
                let flag = if self.options.offline {
                    "--offline"
                } else if self.options.locked {
                    "--locked"
                } else {
                    let d = http.download(&input.url, None, cache, self.reporter.as_ref())?;
                    self.reporter.message(&format!(
                        "{}: {} is not pinned; its sha256 is {} (`strata lock` records it)",
                        input.context,
                        redact(&input.url),
                        d.sha256
                    ));
                    return Ok((d.sha256, d.path));
                };
                Err(FetchError::Unpinned {
                    flag,
                    url: redact(&input.url),
                    lock: self.lock_file.clone(),
                })
            }
        }
    }

    fn object(
        &self,
        input: &FetchInput,
        lock: Option<&FetchLock>,
        cache: &Cache,
        http: &Http,
    ) -> Result<StoreObject, FetchError> {
        let (sha, blob) = self.blob(input, lock, cache, http)?;
        let tree = match input.unpack {
            None => {
                let size = std::fs::metadata(&blob)
                    .map_err(|source| FetchError::Io {
                        action: "read",
                        path: blob.clone(),
                        source,
                    })?
                    .len();
                let mut entry = Entry::inline_file(input.dest.clone(), 0, Vec::new());
                entry.kind = EntryKind::File {
                    content: Content::Host(blob),
                    size,
                };
                entry.mode = input.mode.unwrap_or(DEFAULT_FILE_MODE);
                entry.uid = input.uid.unwrap_or(0);
                entry.gid = input.gid.unwrap_or(0);
                entry.mtime = i64::MAX;
                Tree::from_entries([entry])
            }
            Some(kind) => {
                let root = cache.unpacked(&sha, kind, input.strip_components, &blob, || {
                    redact(&input.url)
                })?;
                let opts = WalkOptions {
                    mode: input.mode,
                    uid: input.uid,
                    gid: input.gid,
                };
                let (tree, _) = walk(&root, &strata_fstree::Dest::Path(input.dest.clone()), &opts)
                    .map_err(|source| FetchError::Walk {
                        url: redact(&input.url),
                        source,
                    })?;
                // Host times of the extraction are not content: every entry takes the build's
                // SOURCE_DATE_EPOCH (the layer writer clamps to it).
                Tree::from_entries(tree.entries().iter().cloned().map(|mut e| {
                    e.mtime = i64::MAX;
                    e
                }))
            }
        };
        let unpack = match input.unpack {
            Some(k) => format!("{}/{}", k.name(), input.strip_components),
            None => "file".to_owned(),
        };
        let attrs = format!("{:?}/{:?}/{:?}", input.mode, input.uid, input.gid);
        Ok(StoreObject {
            id: format!("fetch:{}", input.dest.absolute()),
            tree,
            references: Vec::new(),
            cache_key: hash_parts([
                b"fetch-v1".as_slice(),
                sha.as_bytes(),
                unpack.as_bytes(),
                input.dest.as_str().as_bytes(),
                attrs.as_bytes(),
            ]),
        })
    }
}

/// The lock file of a spec (`strata.toml` → `strata.lock`), shared with the Debian source.
pub fn lock_path(spec_path: &std::path::Path) -> PathBuf {
    spec_path.with_extension("lock")
}

impl Source for FetchSource {
    fn kind(&self) -> &'static str {
        "fetch"
    }

    fn resolve(&self, ctx: &SourceContext<'_>) -> Result<Resolution, SourceError> {
        let wrap = |context: &str, e: FetchError| SourceError::Entry {
            context: context.to_owned(),
            message: "cannot fetch the download".to_owned(),
            source: Some(Box::new(e)),
        };
        let lock = FetchLock::read(&self.lock_file).map_err(|e| SourceError::Other {
            source_kind: "fetch",
            message: "cannot use the lock file".to_owned(),
            source: Some(Box::new(e)),
        })?;
        let cache = Cache::open(ctx.cache_dir).map_err(|e| SourceError::Other {
            source_kind: "fetch",
            message: "cannot open the download cache".to_owned(),
            source: Some(Box::new(e)),
        })?;
        let http = Http::new();
        let mut out = Resolution::default();
        ctx.reporter
            .items_started("downloads fetched", self.inputs.len() as u64);
        for input in &self.inputs {
            let mut obj = self
                .object(input, lock.as_ref(), &cache, &http)
                .map_err(|e| wrap(&input.context, e))?;
            ctx.reporter.item_done(&redact(&input.url));
            if out.objects.iter().any(|o| o.id == obj.id) {
                obj.id = format!("{}#{}", obj.id, out.objects.len());
            }
            out.roots.push(obj.id.clone());
            out.objects.push(obj);
        }
        Ok(out)
    }
}

/// Locks every `fetch` entry of both halves of `spec`: each URL is downloaded (or found in the
/// cache by its pinned hash) and verified, and its hash, size and final URL recorded.
pub fn lock_spec(
    spec: &Spec,
    cache_dir: &std::path::Path,
    reporter: &dyn Reporter,
) -> Result<Option<FetchLock>, FetchError> {
    let entries: Vec<&FetchEntry> = [Part::Base, Part::User]
        .iter()
        .flat_map(|p| spec.half(*p).fetch.iter())
        .collect();
    if entries.is_empty() {
        return Ok(None);
    }
    let cache = Cache::open(cache_dir)?;
    let http = Http::new();
    let mut lock = FetchLock::default();
    for e in entries {
        if lock.get(&e.url).is_some() {
            continue;
        }
        let d = http.download(&e.url, e.sha256.as_deref(), &cache, reporter)?;
        lock.insert(LockedDownload {
            url: redact_free(&e.url),
            sha256: d.sha256,
            size: d.size,
            final_url: redact_free(&d.final_url),
        });
    }
    Ok(Some(lock))
}

/// A URL as it may be written to a lock file: without credentials.
fn redact_free(url: &str) -> String {
    http::strip_credentials(url).0
}
