//! Snapshots of unpacked root file systems, compared path by path.

#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What a path in a root file system is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// One path of a root file system: its kind and metadata (mode is `None` for symlinks, whose
/// permission bits mean nothing).
#[derive(Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub mode: Option<u32>,
    pub uid: u32,
    pub gid: u32,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Dir => "dir".to_owned(),
            Kind::File(c) if c.len() <= 64 => format!("file {:?}", String::from_utf8_lossy(c)),
            Kind::File(c) => format!("file ({} bytes)", c.len()),
            Kind::Symlink(t) => format!("symlink -> {t}"),
        };
        match self.mode {
            Some(m) => write!(f, "{kind} {m:04o} {}:{}", self.uid, self.gid),
            None => write!(f, "{kind} {}:{}", self.uid, self.gid),
        }
    }
}

impl Node {
    pub fn dir(mode: u32, uid: u32, gid: u32) -> Self {
        Self {
            kind: Kind::Dir,
            mode: Some(mode),
            uid,
            gid,
        }
    }
    pub fn file(contents: impl AsRef<[u8]>, mode: u32, uid: u32, gid: u32) -> Self {
        Self {
            kind: Kind::File(contents.as_ref().to_vec()),
            mode: Some(mode),
            uid,
            gid,
        }
    }
    pub fn symlink(target: &str, uid: u32, gid: u32) -> Self {
        Self {
            kind: Kind::Symlink(target.to_owned()),
            mode: None,
            uid,
            gid,
        }
    }
}

/// A root file system: every path under it (relative, `/`-separated, without a leading `/`)
/// with its node, plus the inode of every regular file.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub nodes: BTreeMap<String, Node>,
    pub inodes: BTreeMap<String, u64>,
}

/// Reads the whole tree under `root` (not `root` itself).
pub fn snapshot(root: &Path) -> Snapshot {
    let mut snap = Snapshot::default();
    walk(root, "", &mut snap);
    snap
}

fn walk(dir: &Path, prefix: &str, snap: &mut Snapshot) {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("UTF-8 name")
        })
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(&path).expect("lstat");
        let ft = meta.file_type();
        let (kind, mode) = if ft.is_symlink() {
            let target = fs::read_link(&path).expect("readlink");
            (Kind::Symlink(target.to_string_lossy().into_owned()), None)
        } else if ft.is_dir() {
            (Kind::Dir, Some(meta.mode() & 0o7777))
        } else if ft.is_file() {
            snap.inodes.insert(rel.clone(), meta.ino());
            (
                Kind::File(fs::read(&path).expect("read file")),
                Some(meta.mode() & 0o7777),
            )
        } else {
            panic!("unexpected file type at {}", path.display());
        };
        snap.nodes.insert(
            rel.clone(),
            Node {
                kind,
                mode,
                uid: meta.uid(),
                gid: meta.gid(),
            },
        );
        if ft.is_dir() {
            walk(&path, &rel, snap);
        }
    }
}

/// Asserts two path maps are equal, listing every difference.
pub fn assert_same_tree(actual: &BTreeMap<String, Node>, expected: &BTreeMap<String, Node>) {
    let mut problems = Vec::new();
    for (path, want) in expected {
        match actual.get(path) {
            None => problems.push(format!("missing /{path} (expected {want:?})")),
            Some(got) if got != want => {
                problems.push(format!("/{path}: got {got:?}, expected {want:?}"))
            }
            Some(_) => {}
        }
    }
    for (path, got) in actual {
        if !expected.contains_key(path) {
            problems.push(format!("unexpected /{path} ({got:?})"));
        }
    }
    assert!(
        problems.is_empty(),
        "unpacked rootfs differs from the spec's trees:\n  {}",
        problems.join("\n  ")
    );
}
