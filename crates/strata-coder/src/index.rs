//! A file index of an image: every path of the root file system the image's layers make, with
//! its kind and owner, and the content of the small files the checks and the account need.
//!
//! The index is built either from layer tars (reading them bottom first, decompressing gzip or
//! zstd and applying OCI whiteouts), or from the [`Entry`] lists the build pipeline holds before
//! the layers are written. Paths are kept relative to the root, `/`-separated, without `.` or
//! `..`. Symbolic links are resolved inside the image, never on the host.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use strata_fstree::{Content, Entry, EntryKind};
use strata_oci::compress::{Compression, decompress};
use strata_oci::whiteout::{self, Whiteout};

/// Most symbolic links followed while resolving one path (Linux's limit).
const MAX_LINKS: usize = 40;

/// Files under these directories keep their content when read from a layer tar, up to
/// [`KEEP_LIMIT`] bytes each: the account databases, sudoers, skeleton files. Files named
/// `busybox` keep theirs too, so the check can read which applets they provide.
const KEEP_PREFIXES: &[&str] = &["etc/"];
/// Largest file whose content a layer index keeps.
const KEEP_LIMIT: u64 = 1 << 20;
/// Largest busybox binary whose content a layer index keeps, for its applet list.
const KEEP_BUSYBOX_LIMIT: u64 = 16 << 20;

/// Whether a layer index keeps the content of the regular file at `key` of `size` bytes.
fn keeps(key: &str, size: u64) -> bool {
    let base = key.rsplit('/').next().unwrap_or(key);
    (size <= KEEP_LIMIT && KEEP_PREFIXES.iter().any(|p| key.starts_with(p)))
        || (base == "busybox" && size <= KEEP_BUSYBOX_LIMIT)
}

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory.
    Directory,
    /// A regular file; `data` is `None` when the index did not keep its bytes.
    File {
        /// Size in bytes.
        size: u64,
        /// Where the bytes are, when kept.
        data: Option<Content>,
    },
    /// A symbolic link, its target verbatim.
    Symlink(String),
    /// A hard link to another path of the image (relative, normalised).
    Hardlink(String),
    /// A device, FIFO or anything else that is none of the above.
    Other,
}

/// One path of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// What it is.
    pub kind: NodeKind,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Node {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Directory)
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        matches!(self.kind, NodeKind::File { .. })
    }
}

/// A path after every symbolic link in it was followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The final path, absolute (`/usr/bin/busybox`).
    pub path: String,
    /// What is there (for a hard link: what it links to).
    pub node: Node,
}

/// A layer that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Reading a layer failed.
    #[error("cannot read layer `{path}`")]
    Layer {
        /// The layer blob (or the archive holding it).
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The files of an image, by path.
#[derive(Debug, Clone, Default)]
pub struct FileIndex {
    nodes: BTreeMap<String, Node>,
}

/// Normalises an image path to the index's key form: relative, no `.`/`..`/empty components.
/// `..` at the root stays at the root, as it does in a container.
pub fn key_of(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The range bound just after every descendant key of `key` (`/` + 1 is `0`).
fn descendants_end(key: &str) -> String {
    format!("{key}0")
}

impl FileIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of paths.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the index has no paths.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every path, relative (`etc/passwd`), in sorted order, with its node.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Builds an index from entries in layer order (bottom first): a later entry for a path
    /// replaces an earlier one, as extracting them in that order would.
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Self {
        let mut index = Self::new();
        for e in entries {
            index.insert(e.path.as_str(), node_of_entry(e));
        }
        index
    }

    /// Puts `node` at `path`. A non-directory replaces everything below the path, as it does
    /// when a layer puts a file where a lower layer had a directory.
    pub fn insert(&mut self, path: &str, node: Node) {
        let key = key_of(path);
        if key.is_empty() {
            return;
        }
        if !node.is_dir() {
            self.remove_children(&key);
        }
        self.nodes.insert(key, node);
    }

    /// Removes `path` and everything below it.
    pub fn remove(&mut self, path: &str) {
        let key = key_of(path);
        self.remove_children(&key);
        self.nodes.remove(&key);
    }

    /// Removes everything below `dir`, keeping `dir` itself.
    pub fn remove_children(&mut self, dir: &str) {
        let key = key_of(dir);
        if key.is_empty() {
            self.nodes.clear();
            return;
        }
        let start = format!("{key}/");
        let doomed: Vec<String> = self
            .nodes
            .range(start..descendants_end(&key))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Everything below `dir` (not following symbolic links), in sorted order, with absolute
    /// paths.
    pub fn descendants(&self, dir: &str) -> Vec<(String, &Node)> {
        let key = key_of(dir);
        let start = if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        };
        let end = if key.is_empty() {
            "\u{10ffff}".to_owned()
        } else {
            descendants_end(&key)
        };
        self.nodes
            .range(start..end)
            .map(|(k, v)| (format!("/{k}"), v))
            .collect()
    }

    /// The node at `path` itself, without following symbolic links.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&key_of(path))
    }

    /// Follows every symbolic link in `path` (the last component too), inside the image.
    /// Returns `None` when the path does not exist or the links loop. A directory that only
    /// exists because entries live below it counts as a root-owned 0755 directory.
    pub fn resolve(&self, path: &str) -> Option<Resolved> {
        let key = self.resolve_key(path)?;
        if key.is_empty() {
            return Some(Resolved {
                path: "/".to_owned(),
                node: implicit_dir(),
            });
        }
        let node = match self.nodes.get(&key) {
            Some(Node {
                kind: NodeKind::Hardlink(target),
                ..
            }) => self.nodes.get(target)?.clone(),
            Some(n) => n.clone(),
            None if self.has_children(&key) => implicit_dir(),
            None => return None,
        };
        Some(Resolved {
            path: format!("/{key}"),
            node,
        })
    }

    fn has_children(&self, key: &str) -> bool {
        self.nodes
            .range(format!("{key}/")..descendants_end(key))
            .next()
            .is_some()
    }

    /// The key `path` ends at after following its links, whether or not anything is there.
    fn resolve_key(&self, path: &str) -> Option<String> {
        let mut todo: VecDeque<String> = path.split('/').map(str::to_owned).collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            cur.push(c);
            let key = cur.join("/");
            if let Some(Node {
                kind: NodeKind::Symlink(target),
                ..
            }) = self.nodes.get(&key)
            {
                hops += 1;
                if hops > MAX_LINKS {
                    return None;
                }
                cur.pop();
                if target.starts_with('/') {
                    cur.clear();
                }
                for part in target.split('/').rev() {
                    todo.push_front(part.to_owned());
                }
            }
        }
        Some(cur.join("/"))
    }

    /// The bytes of the regular file at `path` (links followed). `Ok(None)` when there is no
    /// such file or the index did not keep its content.
    pub fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        match self.resolve(path) {
            Some(Resolved {
                node:
                    Node {
                        kind:
                            NodeKind::File {
                                data: Some(d),
                                size,
                            },
                        ..
                    },
                ..
            }) => d.read(size).map(Some),
            _ => Ok(None),
        }
    }

    /// Looks `name` up in the `:`-separated `path_env` like a shell does: the first directory
    /// holding an executable regular file of that name. Returns the path found on `PATH`
    /// (`/bin/sh`) and what it resolves to.
    pub fn which(&self, name: &str, path_env: &str) -> Option<(String, Resolved)> {
        for dir in path_env.split(':').filter(|d| d.starts_with('/')) {
            let candidate = format!("{}/{name}", dir.trim_end_matches('/'));
            if let Some(r) = self.resolve(&candidate)
                && r.node.is_file()
                && r.node.mode & 0o111 != 0
            {
                return Some((candidate, r));
            }
        }
        None
    }

    /// Applies one uncompressed layer tar on top of the index: whiteouts (`.wh.NAME`) and
    /// opaque markers (`.wh..wh..opq`) remove lower content, then the layer's entries are added.
    pub fn apply_layer(&mut self, tar_stream: impl Read) -> io::Result<()> {
        let mut archive = tar::Archive::new(tar_stream);
        let mut removals: Vec<(String, bool)> = Vec::new();
        let mut added: Vec<(String, Node)> = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = entry.path()?.to_string_lossy().into_owned();
            let key = key_of(&raw);
            if key.is_empty() {
                continue;
            }
            let (parent, base) = match key.rsplit_once('/') {
                Some((p, b)) => (p.to_owned(), b.to_owned()),
                None => (String::new(), key.clone()),
            };
            match whiteout::parse(&base) {
                Some(Whiteout::Opaque) => {
                    removals.push((parent, true));
                    continue;
                }
                Some(Whiteout::Remove(hidden)) => {
                    let target = if parent.is_empty() {
                        hidden.to_owned()
                    } else {
                        format!("{parent}/{hidden}")
                    };
                    removals.push((target, false));
                    continue;
                }
                None => {}
            }
            let header = entry.header();
            let mode = header.mode().unwrap_or(0o644) & 0o7777;
            let uid = u32::try_from(header.uid().unwrap_or(0)).unwrap_or(u32::MAX);
            let gid = u32::try_from(header.gid().unwrap_or(0)).unwrap_or(u32::MAX);
            let kind = match header.entry_type() {
                tar::EntryType::Directory => NodeKind::Directory,
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.size();
                    let data = if keeps(&key, size) {
                        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                        entry.read_to_end(&mut bytes)?;
                        Some(Content::Inline(bytes.into()))
                    } else {
                        None
                    };
                    NodeKind::File { size, data }
                }
                tar::EntryType::Symlink => NodeKind::Symlink(
                    entry
                        .link_name()?
                        .map(|l| l.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                tar::EntryType::Link => NodeKind::Hardlink(key_of(
                    &entry
                        .link_name()?
                        .map(|l| l.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                )),
                _ => NodeKind::Other,
            };
            added.push((
                key,
                Node {
                    kind,
                    mode,
                    uid,
                    gid,
                },
            ));
        }
        for (path, opaque) in removals {
            if opaque {
                self.remove_children(&path);
            } else {
                self.remove(&path);
            }
        }
        // A hard link inside this layer points at this layer's file; resolve it now so a later
        // layer replacing the target does not change what the link shows.
        for (key, node) in added {
            let node = match &node.kind {
                NodeKind::Hardlink(target) => match self.nodes.get(target) {
                    Some(t) if t.is_file() => Node {
                        kind: t.kind.clone(),
                        ..node
                    },
                    _ => node,
                },
                _ => node,
            };
            self.insert(&key, node);
        }
        Ok(())
    }

    /// Applies a layer blob (gzip, zstd or plain tar, told apart by their magic bytes).
    pub fn apply_layer_file(&mut self, path: &Path) -> Result<(), IndexError> {
        let err = |source| IndexError::Layer {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(err)?;
        self.apply_layer_stream(BufReader::with_capacity(1 << 20, file))
            .map_err(err)
    }

    /// Applies a layer from a buffered stream, sniffing its compression.
    pub fn apply_layer_stream(&mut self, mut stream: impl BufRead) -> io::Result<()> {
        let compression = Compression::sniff(stream.fill_buf()?);
        self.apply_layer(decompress(stream, compression)?)
    }
}

fn implicit_dir() -> Node {
    Node {
        kind: NodeKind::Directory,
        mode: 0o755,
        uid: 0,
        gid: 0,
    }
}

fn node_of_entry(e: &Entry) -> Node {
    let kind = match &e.kind {
        EntryKind::Directory => NodeKind::Directory,
        EntryKind::File { content, size } => NodeKind::File {
            size: *size,
            data: Some(content.clone()),
        },
        EntryKind::Symlink { target } => NodeKind::Symlink(target.clone()),
        EntryKind::Hardlink { target } => NodeKind::Hardlink(target.as_str().to_owned()),
    };
    Node {
        kind,
        mode: e.mode & 0o7777,
        uid: e.uid,
        gid: e.gid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &str, u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_uid(0);
            h.set_gid(0);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, path, data).expect("append link");
                }
                _ => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_bytes())
                        .expect("append");
                }
            }
        }
        b.into_inner().expect("finish tar")
    }

    #[test]
    fn whiteouts_opaque_dirs_and_links() {
        use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};
        let lower = tar_of(&[
            ("bin/", D, "", 0o755),
            ("bin/busybox", F, "bb", 0o755),
            ("bin/sh", S, "busybox", 0o777),
            ("etc/", D, "", 0o755),
            ("etc/old", F, "x", 0o644),
            ("etc/keep", F, "k", 0o644),
            ("opt/a/", D, "", 0o755),
            ("opt/a/one", F, "1", 0o644),
            ("usr/bin", S, "../bin", 0o777),
        ]);
        let upper = tar_of(&[
            ("etc/.wh.old", F, "", 0o644),
            ("opt/a/.wh..wh..opq", F, "", 0o644),
            ("opt/a/two", F, "2", 0o644),
            ("etc/passwd", F, "root:x:0:0::/root:/bin/sh\n", 0o644),
            ("etc/passwd-link", H, "etc/passwd", 0o644),
        ]);
        let mut index = FileIndex::new();
        index.apply_layer(&lower[..]).expect("lower");
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&upper).expect("gzip");
            e.finish().expect("gzip")
        };
        index.apply_layer_stream(&gz[..]).expect("upper");

        assert!(index.get("etc/old").is_none());
        assert!(index.get("etc/keep").is_some());
        assert!(index.get("opt/a/one").is_none());
        assert!(index.get("opt/a/two").is_some());
        let sh = index.resolve("/usr/bin/sh").expect("sh resolves");
        assert_eq!(sh.path, "/bin/busybox");
        let (found, _) = index
            .which("sh", "/usr/local/bin:/usr/bin:/bin")
            .expect("on PATH");
        assert_eq!(found, "/usr/bin/sh");
        assert_eq!(
            index.read("/etc/passwd-link").expect("read"),
            Some(b"root:x:0:0::/root:/bin/sh\n".to_vec())
        );
        assert!(index.resolve("/opt").expect("implicit").node.is_dir());
    }

    #[test]
    fn symlink_loops_do_not_resolve() {
        let mut index = FileIndex::new();
        let link = |t: &str| Node {
            kind: NodeKind::Symlink(t.to_owned()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        };
        index.insert("a", link("b"));
        index.insert("b", link("/a"));
        assert!(index.resolve("/a").is_none());
        index.insert("c", link("../../../etc"));
        index.insert("etc/x", implicit_dir());
        assert_eq!(index.resolve("/c/x").expect("clamped").path, "/etc/x");
    }
}
