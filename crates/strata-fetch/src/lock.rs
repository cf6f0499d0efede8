//! The `[[fetch]]` tables of a spec's lock file.
//!
//! The lock file is shared with the Debian source: its other keys are left alone here, and
//! [`FetchLock::to_toml`] gives the text `strata lock` appends after the Debian part.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::FetchError;
use crate::http::strip_credentials;

/// One locked download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedDownload {
    /// The URL as written in the spec, without credentials.
    pub url: String,
    /// SHA-256 of its bytes (lowercase hex).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The URL the bytes came from after redirects, without credentials.
    pub final_url: String,
}

/// The locked downloads of a spec, by URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchLock {
    by_url: BTreeMap<String, LockedDownload>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    fetch: Vec<LockedDownload>,
}

#[derive(Serialize)]
struct FileOut<'a> {
    fetch: Vec<&'a LockedDownload>,
}

impl FetchLock {
    /// The lock of a URL (credentials in it are ignored).
    pub fn get(&self, url: &str) -> Option<&LockedDownload> {
        self.by_url.get(&strip_credentials(url).0)
    }

    /// Adds or replaces the lock of a URL.
    pub fn insert(&mut self, d: LockedDownload) {
        self.by_url.insert(d.url.clone(), d);
    }

    /// Every locked download, by URL.
    pub fn downloads(&self) -> impl Iterator<Item = &LockedDownload> {
        self.by_url.values()
    }

    /// Number of locked downloads.
    pub fn len(&self) -> usize {
        self.by_url.len()
    }

    /// Whether nothing is locked.
    pub fn is_empty(&self) -> bool {
        self.by_url.is_empty()
    }

    /// The `[[fetch]]` tables as TOML text (deterministic: sorted by URL).
    pub fn to_toml(&self) -> Result<String, FetchError> {
        let out = FileOut {
            fetch: self.by_url.values().collect(),
        };
        toml::to_string(&out).map_err(|e| FetchError::LockFile {
            path: "(lock)".into(),
            message: e.to_string(),
        })
    }

    /// Parses the `[[fetch]]` tables of a lock file's text; `path` is for messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, FetchError> {
        let bad = |message: String| FetchError::LockFile {
            path: path.to_owned(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut lock = FetchLock::default();
        for d in file.fetch {
            if !crate::cache::is_sha256(&d.sha256) {
                return Err(bad(format!(
                    "fetch entry {}: invalid sha256 `{}`",
                    d.url, d.sha256
                )));
            }
            lock.insert(d);
        }
        Ok(lock)
    }

    /// Reads the lock file at `path`; `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, FetchError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_toml(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FetchError::LockFile {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_ignores_other_keys_and_credentials() {
        let mut lock = FetchLock::default();
        lock.insert(LockedDownload {
            url: "https://example.org/b".into(),
            sha256: "b".repeat(64),
            size: 2,
            final_url: "https://cdn.example.org/b".into(),
        });
        lock.insert(LockedDownload {
            url: "https://example.org/a".into(),
            sha256: "a".repeat(64),
            size: 1,
            final_url: "https://example.org/a".into(),
        });
        let text = format!(
            "version = 1\n[base.request]\nx = 1\n\n{}",
            lock.to_toml().expect("toml")
        );
        let back = FetchLock::from_toml(&text, Path::new("s.lock")).expect("parse");
        assert_eq!(back, lock);
        assert!(text.find("example.org/a") < text.find("example.org/b"));
        assert_eq!(
            back.get("https://user:secret@example.org/a")
                .map(|d| d.size),
            Some(1)
        );
        let bad = "[[fetch]]\nurl = \"u\"\nsha256 = \"zz\"\nsize = 1\nfinal_url = \"u\"\n";
        let err = FetchLock::from_toml(bad, Path::new("s.lock")).expect_err("bad hash");
        assert!(err.to_string().contains("s.lock"), "{err}");
    }
}
