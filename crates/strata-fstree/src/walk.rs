use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Content, Dest, Entry, EntryKind, ImagePath, PathError, Tree};

/// How a host path is mapped into the image.
#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    /// Mode of the top entry (the file itself, or the directory `dest`); the host's otherwise.
    pub mode: Option<u32>,
    /// Owner of every entry; 0 otherwise (the host's owner is never copied).
    pub uid: Option<u32>,
    /// Group of every entry; 0 otherwise.
    pub gid: Option<u32>,
}

/// A host path that could not be walked.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// Reading the host file system failed.
    #[error("cannot read `{path}`")]
    Io {
        /// The host path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file name is not UTF-8.
    #[error("file name of `{0}` is not UTF-8")]
    NotUtf8(PathBuf),
    /// A device node, FIFO or socket, which image trees cannot carry.
    #[error(
        "`{0}` is a device, FIFO or socket; only files, directories and symlinks can go into an image"
    )]
    Unsupported(PathBuf),
    /// `dest = "/"` for something that is not a directory.
    #[error(
        "`{0}` is not a directory; only a directory's contents can be copied to the image root `/`"
    )]
    RootNotDir(PathBuf),
    /// The destination is not a usable image path.
    #[error(transparent)]
    Path(#[from] PathError),
}

/// Walks `src` (a file, symlink or directory) and maps it to `dest` in the image.
///
/// Returns the tree and a *fingerprint*: a hash of every entry's host metadata (size, mtime,
/// ctime, inode, mode, link target) that changes whenever the content may have changed. It lets
/// a cache skip re-reading content that has not been touched, the way git's index does.
///
/// With [`Dest::Root`], `src` must be a directory: its entries (not itself) become the image's
/// top level, and `opts.mode`, which applies to the top entry, applies to none.
pub fn walk(src: &Path, dest: &Dest, opts: &WalkOptions) -> Result<(Tree, String), WalkError> {
    let mut entries = Vec::new();
    let mut fingerprint = Sha256::new();
    let meta = lstat(src)?;
    match dest {
        Dest::Path(dest) => visit(
            src,
            dest.clone(),
            &meta,
            opts,
            true,
            &mut entries,
            &mut fingerprint,
        )?,
        Dest::Root if meta.is_dir() => {
            visit_children(src, None, opts, &mut entries, &mut fingerprint)?
        }
        Dest::Root => return Err(WalkError::RootNotDir(src.to_owned())),
    }
    entries.sort_by(|a: &(Entry, Option<(u64, u64)>), b| a.0.path.cmp(&b.0.path));

    // Within one tree a file with several names becomes one file and hard links to it; the
    // first name in image order holds the data.
    let mut first_name: HashMap<(u64, u64), ImagePath> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (mut entry, inode) in entries {
        if let Some(key) = inode {
            match first_name.get(&key) {
                Some(target) => {
                    entry.kind = EntryKind::Hardlink {
                        target: target.clone(),
                    }
                }
                None => {
                    first_name.insert(key, entry.path.clone());
                }
            }
        }
        out.push(entry);
    }
    Ok((Tree::from_entries(out), hex::encode(fingerprint.finalize())))
}

fn lstat(path: &Path) -> Result<fs::Metadata, WalkError> {
    fs::symlink_metadata(path).map_err(|source| WalkError::Io {
        path: path.to_owned(),
        source,
    })
}

type Walked = (Entry, Option<(u64, u64)>);

fn visit(
    host: &Path,
    dest: ImagePath,
    meta: &fs::Metadata,
    opts: &WalkOptions,
    top: bool,
    out: &mut Vec<Walked>,
    fingerprint: &mut Sha256,
) -> Result<(), WalkError> {
    let io_err = |source| WalkError::Io {
        path: host.to_owned(),
        source,
    };
    let ft = meta.file_type();
    let mut inode = None;
    let kind = if ft.is_dir() {
        EntryKind::Directory
    } else if ft.is_file() {
        if meta.nlink() > 1 {
            inode = Some((meta.dev(), meta.ino()));
        }
        EntryKind::File {
            content: Content::Host(host.to_owned()),
            size: meta.len(),
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(host).map_err(io_err)?;
        let target = target
            .into_os_string()
            .into_string()
            .map_err(|_| WalkError::NotUtf8(host.to_owned()))?;
        EntryKind::Symlink { target }
    } else {
        return Err(WalkError::Unsupported(host.to_owned()));
    };
    let mode = match (top, opts.mode) {
        (true, Some(mode)) => mode,
        _ => meta.mode() & 0o7777,
    };
    let xattrs = read_xattrs(host, &ft).map_err(io_err)?;

    // Everything that could change the bytes written for this entry.
    fingerprint.update(dest.as_str().as_bytes());
    fingerprint.update([0]);
    for n in [
        meta.mode() as i64,
        meta.len() as i64,
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
        meta.ino() as i64,
        meta.dev() as i64,
    ] {
        fingerprint.update(n.to_le_bytes());
    }
    if let EntryKind::Symlink { target } = &kind {
        fingerprint.update(target.as_bytes());
        fingerprint.update([0]);
    }
    for (k, v) in &xattrs {
        fingerprint.update(k.as_bytes());
        fingerprint.update([0]);
        fingerprint.update(v);
    }

    let is_dir = matches!(kind, EntryKind::Directory);
    out.push((
        Entry {
            path: dest.clone(),
            kind,
            mode,
            uid: opts.uid.unwrap_or(0),
            gid: opts.gid.unwrap_or(0),
            mtime: meta.mtime(),
            xattrs,
        },
        inode,
    ));

    if is_dir {
        visit_children(host, Some(&dest), opts, out, fingerprint)?;
    }
    Ok(())
}

/// Visits the entries of the directory `host`, which map to `dest` (`None`: the image root).
fn visit_children(
    host: &Path,
    dest: Option<&ImagePath>,
    opts: &WalkOptions,
    out: &mut Vec<Walked>,
    fingerprint: &mut Sha256,
) -> Result<(), WalkError> {
    let io_err = |source| WalkError::Io {
        path: host.to_owned(),
        source,
    };
    let mut children = Vec::new();
    for child in fs::read_dir(host).map_err(io_err)? {
        let child = child.map_err(io_err)?;
        let name = child
            .file_name()
            .into_string()
            .map_err(|_| WalkError::NotUtf8(child.path()))?;
        children.push(name);
    }
    children.sort();
    for name in children {
        let child_host = host.join(&name);
        let child_meta = lstat(&child_host)?;
        let child_dest = match dest {
            Some(dest) => dest.join(&name)?,
            None => ImagePath::new(&name)?,
        };
        visit(
            &child_host,
            child_dest,
            &child_meta,
            opts,
            false,
            out,
            fingerprint,
        )?;
    }
    Ok(())
}

/// Extended attributes worth carrying into an image: file capabilities and `user.*`. Others
/// (SELinux labels, ACLs of the build host) describe the host, not the content.
fn read_xattrs(
    path: &Path,
    ft: &fs::FileType,
) -> io::Result<std::collections::BTreeMap<String, Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    if ft.is_symlink() {
        return Ok(out);
    }
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc_enotsup()) => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names {
        let Some(name) = name.to_str() else { continue };
        let wanted = name == "security.capability" || name.starts_with("user.");
        if wanted && let Some(value) = xattr::get(path, name)? {
            out.insert(name.to_owned(), value);
        }
    }
    Ok(out)
}

fn libc_enotsup() -> i32 {
    95
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn walks_sorted_with_hardlinks_and_owner_override() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir(root.join("b")).expect("mkdir");
        fs::write(root.join("b/z"), "z").expect("write");
        fs::write(root.join("a"), "hello").expect("write");
        fs::hard_link(root.join("a"), root.join("c")).expect("link");
        std::os::unix::fs::symlink("a", root.join("d")).expect("symlink");
        fs::set_permissions(root.join("b/z"), fs::Permissions::from_mode(0o4755)).expect("chmod");

        let dest = Dest::new("/opt/x").expect("path");
        let opts = WalkOptions {
            mode: Some(0o700),
            uid: Some(1000),
            gid: None,
        };
        let (tree, fp1) = walk(root, &dest, &opts).expect("walk");
        let paths: Vec<&str> = tree.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "opt/x",
                "opt/x/a",
                "opt/x/b",
                "opt/x/b/z",
                "opt/x/c",
                "opt/x/d"
            ]
        );
        let e = &tree.entries();
        assert_eq!(e[0].mode, 0o700, "top entry takes the mode override");
        assert_eq!(e[3].mode, 0o4755, "setuid kept");
        assert!(e.iter().all(|e| e.uid == 1000 && e.gid == 0));
        assert_eq!(
            e[4].kind,
            EntryKind::Hardlink {
                target: ImagePath::new("opt/x/a").expect("path")
            }
        );
        assert_eq!(e[5].kind, EntryKind::Symlink { target: "a".into() });

        let (_, fp2) = walk(root, &dest, &opts).expect("walk");
        assert_eq!(fp1, fp2, "unchanged tree keeps its fingerprint");
        fs::write(root.join("b/z"), "zz").expect("write");
        let (_, fp3) = walk(root, &dest, &opts).expect("walk");
        assert_ne!(fp1, fp3, "a changed file changes the fingerprint");
    }

    #[test]
    fn dest_root_copies_a_directorys_contents_to_the_top() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
        fs::write(root.join("usr/bin/env"), "#!").expect("write");
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).expect("symlink");
        let dest = Dest::new("/").expect("root");
        assert_eq!(dest, Dest::Root);
        assert_eq!(Dest::new("//."), Ok(Dest::Root));
        let (tree, _) = walk(root, &dest, &WalkOptions::default()).expect("walk");
        let paths: Vec<&str> = tree.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["bin", "usr", "usr/bin", "usr/bin/env"]);
        let file = root.join("usr/bin/env");
        assert!(matches!(
            walk(&file, &dest, &WalkOptions::default()),
            Err(WalkError::RootNotDir(p)) if p == file
        ));
    }
}
