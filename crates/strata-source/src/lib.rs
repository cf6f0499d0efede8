//! Content sources and the store objects they produce.
//!
//! A *source* turns one part of a spec (`tree`, `debian`, `nix`, ...) into *store objects*:
//! named file trees with references to other objects, a DAG like Nix store paths. The layer
//! planner decides which objects share a layer; the OCI writer turns them into tars. Every
//! source implements [`Source`], so the build pipeline treats them all alike.

mod tree;

pub use tree::{TreeInput, TreeSource};

use std::path::Path;

use sha2::{Digest, Sha256};
use strata_fstree::Tree;

/// A named file tree with references to other objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreObject {
    /// Unique, stable name (`tree:/etc/motd`, `deb:bash_5.2.15-2+b7_amd64`, a Nix store path).
    pub id: String,
    /// The files it puts into the image.
    pub tree: Tree,
    /// Ids of the objects it needs.
    pub references: Vec<String>,
    /// Hash of everything that determines the tree's bytes: equal keys mean equal content, so a
    /// cache may reuse a layer built for the same key without reading the files again.
    pub cache_key: String,
}

impl StoreObject {
    /// Bytes of file content in the object.
    pub fn size(&self) -> u64 {
        self.tree.content_size()
    }
}

/// What a source made of its part of the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Every object, dependencies included.
    pub objects: Vec<StoreObject>,
    /// The objects the spec asked for directly (roots of the popularity contest).
    pub roots: Vec<String>,
    /// Small generated files that tie the objects together (profile links, `/bin/sh`,
    /// `/etc/passwd`, ...). They go into the image's last layer, the customisation layer.
    pub customisation: Vec<strata_fstree::Entry>,
    /// Environment the content needs (`PATH`, `SSL_CERT_FILE`); the spec's `[config] env`
    /// overrides it. A `PATH` from several sources is joined in order; an entry keyed
    /// [`PATH_BEFORE_SYSTEM`] adds directories to `PATH` ahead of the system's own.
    pub env: Vec<(String, String)>,
}

/// Key of a [`Resolution::env`] entry whose value (`:`-separated directories) goes into the
/// image's `PATH` ahead of the system directories (`/usr/local/bin`, `/usr/bin`, ...), which
/// otherwise come first when several sources contribute to `PATH`. A Python venv's `bin` uses
/// it, so that its `python3` is the one found by name. The key itself never reaches the image.
pub const PATH_BEFORE_SYSTEM: &str = "PATH (before system)";

impl Resolution {
    /// Appends another resolution of the same half.
    pub fn extend(&mut self, other: Resolution) {
        self.objects.extend(other.objects);
        self.roots.extend(other.roots);
        self.customisation.extend(other.customisation);
        self.env.extend(other.env);
    }
}

/// Where a source may keep downloads and what it builds for.
pub struct SourceContext<'a> {
    /// A directory the source owns for its caches (inside the strata store).
    pub cache_dir: &'a Path,
    /// OCI architecture of the image (`amd64`, `arm64`).
    pub architecture: &'a str,
}

/// A source that could not produce its objects.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A spec entry could not be read; `context` says which entry (file, line, key).
    #[error("{context}: {message}")]
    Entry {
        /// Where the entry is, e.g. `strata.toml:7:3: base.tree[0]`.
        context: String,
        /// What is wrong.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Any other failure of a source.
    #[error("{source_kind} source: {message}")]
    Other {
        /// The source (`tree`, `debian`, `nix`).
        source_kind: &'static str,
        /// What went wrong.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// A content source.
pub trait Source {
    /// The spec key this source reads (`tree`, `debian`, `nix`).
    fn kind(&self) -> &'static str;

    /// Produces the store objects for its part of the spec.
    fn resolve(&self, ctx: &SourceContext<'_>) -> Result<Resolution, SourceError>;
}

/// Hashes a sequence of byte strings unambiguously (each is length-prefixed).
pub fn hash_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}
