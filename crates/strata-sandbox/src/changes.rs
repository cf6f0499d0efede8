//! What a run changed: the overlay's upper directory read back as a list of changes, for a
//! step that turns a run's effects into a layer (the Debian *configure* layer).
//!
//! overlayfs records a deletion as a character device 0:0 (or, under fuse-overlayfs on some
//! file systems, a `.wh.NAME` file) and a directory that replaced a lower one as *opaque*
//! (the `user.overlay.opaque`/`trusted.overlay.opaque` xattr set to `y`, or a
//! `.wh..wh..opq` file). Everything else in the upper directory was added or modified.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::SandboxError;
use strata_oci::whiteout::Whiteout;

/// One change of a run, relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A file, symlink or directory that was added or modified (its content is at
    /// `upper/path`).
    Upsert(PathBuf),
    /// A path that was deleted (an OCI layer writes `.wh.NAME`).
    Delete(PathBuf),
    /// A directory whose lower content is hidden (an OCI layer writes `.wh..wh..opq`).
    Opaque(PathBuf),
}

fn opaque(path: &Path) -> bool {
    ["user.overlay.opaque", "trusted.overlay.opaque"]
        .iter()
        .any(|name| matches!(xattr::get(path, name), Ok(Some(v)) if v == b"y"))
}

/// The changes recorded in an overlay upper directory, sorted by path (parents first).
pub fn scan_upper(upper: &Path) -> Result<Vec<Change>, SandboxError> {
    let mut out = Vec::new();
    walk(upper, Path::new(""), &mut out)?;
    out.sort_by(|a, b| key(a).cmp(key(b)));
    Ok(out)
}

fn key(c: &Change) -> &Path {
    match c {
        Change::Upsert(p) | Change::Delete(p) | Change::Opaque(p) => p,
    }
}

fn walk(upper: &Path, rel: &Path, out: &mut Vec<Change>) -> Result<(), SandboxError> {
    let dir = upper.join(rel);
    let entries = fs::read_dir(&dir).map_err(|source| SandboxError::Io {
        action: "list",
        path: dir.clone(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| SandboxError::Io {
            action: "list",
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let path = rel.join(&name);
        let meta = entry.metadata().map_err(|source| SandboxError::Io {
            action: "stat",
            path: entry.path(),
            source,
        })?;
        let whiteout = strata_oci::whiteout::parse(&name_str);
        if whiteout == Some(Whiteout::Opaque) {
            out.push(Change::Opaque(rel.to_owned()));
        } else if let Some(Whiteout::Remove(hidden)) = whiteout {
            out.push(Change::Delete(rel.join(hidden)));
        } else if meta.file_type().is_char_device() && meta.rdev() == 0 {
            out.push(Change::Delete(path));
        } else {
            out.push(Change::Upsert(path.clone()));
            if meta.is_dir() {
                if opaque(&entry.path()) {
                    out.push(Change::Opaque(path.clone()));
                }
                walk(upper, &path, out)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_files_and_additions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let up = dir.path();
        fs::create_dir_all(up.join("etc/alternatives")).expect("mkdir");
        fs::write(up.join("etc/alternatives/awk"), "").expect("write");
        fs::write(up.join("etc/.wh.old.conf"), "").expect("write");
        fs::create_dir(up.join("var")).expect("mkdir");
        fs::write(up.join("var/.wh..wh..opq"), "").expect("write");
        let changes = scan_upper(up).expect("scan");
        assert!(changes.contains(&Change::Upsert("etc/alternatives/awk".into())));
        assert!(changes.contains(&Change::Delete("etc/old.conf".into())));
        assert!(changes.contains(&Change::Opaque("var".into())));
        assert!(
            changes
                .iter()
                .position(|c| c == &Change::Upsert("etc".into()))
                < changes
                    .iter()
                    .position(|c| c == &Change::Upsert("etc/alternatives".into()))
        );
    }
}
