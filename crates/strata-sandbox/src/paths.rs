//! Resolving paths inside a root file system without ever leaving it.
//!
//! An image's symlinks are resolved the way the kernel would resolve them after `chroot`:
//! an absolute target starts again at the root and `..` stops at the root. So a symlink
//! `/etc -> /host-etc` or `../../..` in a layer can never lead a write out of the rootfs on
//! the host.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Most symlinks followed while resolving one path (the kernel's limit).
const MAX_LINKS: usize = 40;

/// The components of `path` as a relative path inside a root: `.`, `/` and empty parts
/// dropped, `..` kept (resolved later against the root).
fn parts(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Resolves `path` (absolute or relative, read as relative to `root`) to a host path under
/// `root`, following symlinks scoped to `root`. The last component is followed only when
/// `follow_last` is set, so a caller about to replace a symlink gets the link itself.
pub fn resolve_in_root(root: &Path, path: &Path, follow_last: bool) -> io::Result<PathBuf> {
    let mut queue = parts(path);
    let mut out: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = queue.pop_front() {
        if part == ".." {
            out.pop();
            continue;
        }
        let mut candidate = root.to_owned();
        candidate.extend(&out);
        candidate.push(&part);
        let follow = follow_last || !queue.is_empty();
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if follow && meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links resolving `{}`",
                        path.display()
                    )));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.has_root() {
                    out.clear();
                }
                let mut rest = parts(&target);
                rest.extend(queue);
                queue = rest;
            }
            _ => out.push(part),
        }
    }
    let mut resolved = root.to_owned();
    resolved.extend(&out);
    Ok(resolved)
}

/// Checks that a layer member name stays inside the root: no `..` component. Returns the
/// name as a relative path without `.` or leading `/`.
pub fn clean_member(name: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib")).expect("mkdir");
        symlink("usr/lib", root.join("lib")).expect("symlink");
        symlink("/etc", root.join("abs")).expect("symlink");
        symlink("../../../../..", root.join("up")).expect("symlink");
        symlink("loop", root.join("loop")).expect("symlink");
        let r = |p: &str, f| resolve_in_root(root, Path::new(p), f).expect("resolve");
        assert_eq!(r("/lib/x", true), root.join("usr/lib/x"));
        assert_eq!(r("abs/passwd", true), root.join("etc/passwd"));
        assert_eq!(r("up/etc", true), root.join("etc"));
        assert_eq!(r("../../etc", true), root.join("etc"));
        assert_eq!(r("lib", false), root.join("lib"));
        assert_eq!(r("lib", true), root.join("usr/lib"));
        assert!(resolve_in_root(root, Path::new("loop/x"), true).is_err());
    }

    #[test]
    fn member_names() {
        assert_eq!(clean_member(Path::new("./a/b")), Some(PathBuf::from("a/b")));
        assert_eq!(clean_member(Path::new("/a")), Some(PathBuf::from("a")));
        assert_eq!(clean_member(Path::new("a/../../b")), None);
    }
}
