//! The file-tree model shared by every content source and by the layer writer.
//!
//! A [`Tree`] is a list of [`Entry`] values kept in *image order*: paths compared component by
//! component, so a directory always comes right before its contents. Sources build trees (from
//! host directories with [`walk`], from packages, from generated files) and the OCI writer turns a
//! tree into a deterministic tar stream.

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

/// The colon-separated account databases (`/etc/passwd`, `/etc/group`, shadow files).
pub mod passwd;
mod path;
mod walk;

pub use path::{Dest, ImagePath, PathError};
pub use walk::{WalkError, WalkOptions, walk};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the bytes of a regular file come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A file on the host, read when the layer is written.
    Host(PathBuf),
    /// Bytes held in memory (generated files such as `/etc/passwd`).
    Inline(Arc<[u8]>),
    /// The entry's bytes start at `offset` in a host file that holds more than this one file:
    /// an uncompressed archive kept whole (a Debian package's `data.tar`), so extracting a
    /// package creates one file instead of one per member.
    HostAt {
        /// The host file.
        path: PathBuf,
        /// Where the entry's bytes start in it.
        offset: u64,
    },
}

impl Content {
    /// Reads all `size` bytes of the content into memory.
    pub fn read(&self, size: u64) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        match self {
            Content::Inline(b) => Ok(b.to_vec()),
            Content::Host(p) => std::fs::read(p),
            Content::HostAt { path, offset } => {
                let mut f = std::fs::File::open(path)?;
                f.seek(SeekFrom::Start(*offset))?;
                let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                f.take(size).read_to_end(&mut out)?;
                if out.len() as u64 != size {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} ends before byte {}", path.display(), offset + size),
                    ));
                }
                Ok(out)
            }
        }
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file of `size` bytes.
    File {
        /// Where to read the bytes from.
        content: Content,
        /// Size in bytes; the writer fails if the content no longer has this size.
        size: u64,
    },
    /// A symbolic link to `target` (kept verbatim, relative or absolute).
    Symlink {
        /// The link target.
        target: String,
    },
    /// A hard link to an earlier entry of the same tree.
    Hardlink {
        /// The path of the entry this one links to.
        target: ImagePath,
    },
}

/// One file, directory or link of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where the entry lives in the image.
    pub path: ImagePath,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits, including setuid, setgid and sticky (`0o7777` mask).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time in seconds since the epoch (the writer clamps it).
    pub mtime: i64,
    /// Extended attributes, by name.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Entry {
    /// A directory owned by root with the given mode.
    pub fn directory(path: ImagePath, mode: u32) -> Self {
        Self::new(path, EntryKind::Directory, mode)
    }

    /// A regular file owned by root holding `bytes`.
    pub fn inline_file(path: ImagePath, mode: u32, bytes: impl Into<Arc<[u8]>>) -> Self {
        let bytes: Arc<[u8]> = bytes.into();
        let size = bytes.len() as u64;
        Self::new(
            path,
            EntryKind::File {
                content: Content::Inline(bytes),
                size,
            },
            mode,
        )
    }

    /// A symbolic link owned by root.
    pub fn symlink(path: ImagePath, target: impl Into<String>) -> Self {
        Self::new(
            path,
            EntryKind::Symlink {
                target: target.into(),
            },
            0o777,
        )
    }

    fn new(path: ImagePath, kind: EntryKind, mode: u32) -> Self {
        Self {
            path,
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
        }
    }

    /// Bytes of file content this entry carries (0 for anything but regular files).
    pub fn content_size(&self) -> u64 {
        match &self.kind {
            EntryKind::File { size, .. } => *size,
            _ => 0,
        }
    }
}

/// A set of entries in image order, at most one per path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    entries: Vec<Entry>,
}

impl Tree {
    /// Builds a tree from entries in any order. When two entries share a path the later one
    /// wins, as it would when the entries were extracted one after the other.
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>) -> Self {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // Walks already produce sorted, unique paths: keep them without re-sorting.
        if entries.windows(2).all(|w| w[0].path < w[1].path) {
            return Self { entries };
        }
        let mut by_path: BTreeMap<ImagePath, Entry> = BTreeMap::new();
        for entry in entries {
            by_path.insert(entry.path.clone(), entry);
        }
        Self {
            entries: by_path.into_values().collect(),
        }
    }

    /// Adds the missing parent directories (mode 0755, root) of every entry, so the tree
    /// unpacks the same with any tool.
    pub fn with_parents(self) -> Self {
        let mut all: BTreeMap<ImagePath, Entry> = BTreeMap::new();
        for entry in self.entries {
            let mut parent = entry.path.parent();
            while let Some(p) = parent {
                if all.contains_key(&p) {
                    break;
                }
                parent = p.parent();
                all.insert(p.clone(), Entry::directory(p, 0o755));
            }
            all.insert(entry.path.clone(), entry);
        }
        Self {
            entries: all.into_values().collect(),
        }
    }

    /// The entries, in image order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Total bytes of file content.
    pub fn content_size(&self) -> u64 {
        self.entries.iter().map(Entry::content_size).sum()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Merges several trees into one; for a path present in several, the last tree wins.
    pub fn merge<'a>(trees: impl IntoIterator<Item = &'a Tree>) -> Self {
        Self::from_entries(trees.into_iter().flat_map(|t| t.entries.iter().cloned()))
    }
}
