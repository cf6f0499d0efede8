//! Unpacking an image's layers into a root file system kept in the store.
//!
//! `<store>/v1/sources/rootfs/<config hex>-<id map>/` holds the unpacked image. It is built in
//! a temporary directory beside it under a per-image lock and renamed into place when
//! complete, so a concurrent run either waits or sees the finished tree, never half of it.
//! Layers apply bottom first with OCI whiteouts (`.wh.NAME` removes `NAME` of lower layers,
//! `.wh..wh..opq` empties a directory of lower layers' entries). Member names with `..` are
//! refused, and symlinks met on the way are resolved inside the rootfs, never on the host.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use strata_oci::compress::Compression;
use strata_oci::whiteout::Whiteout;
use strata_store::Store;

use crate::SandboxError;
use crate::idmap::IdMapping;
use crate::paths::{clean_member, resolve_in_root};

/// One layer blob to unpack.
#[derive(Debug, Clone)]
pub struct LayerFile {
    /// The blob file.
    pub path: PathBuf,
    /// Its compression.
    pub compression: Compression,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SandboxError {
    let path = path.to_owned();
    move |source| SandboxError::Io {
        action,
        path,
        source,
    }
}

fn layer_err(layer: &Path, entry: &Path, reason: impl Into<String>) -> SandboxError {
    SandboxError::Layer {
        layer: layer.to_owned(),
        entry: entry.display().to_string(),
        reason: reason.into(),
    }
}

/// Removes whatever is at `path` (not following a symlink there).
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn reader(layer: &LayerFile) -> Result<Box<dyn Read>, SandboxError> {
    let file = BufReader::with_capacity(
        1 << 20,
        File::open(&layer.path).map_err(io_err("open", &layer.path))?,
    );
    strata_oci::compress::decompress(file, layer.compression)
        .map_err(io_err("decompress", &layer.path))
}

/// Applies the layers, bottom first, onto the directory `root`. File owners are kept where
/// the process may set them (root, or root of a user namespace with a wide id map); device
/// nodes are skipped where they cannot be created.
pub fn unpack_layers(root: &Path, layers: &[LayerFile]) -> Result<(), SandboxError> {
    let mut dir_times: BTreeMap<PathBuf, SystemTime> = BTreeMap::new();
    for layer in layers {
        apply_layer(root, layer, &mut dir_times)?;
    }
    // Directory times last: creating entries changed them.
    for (dir, time) in dir_times.iter().rev() {
        if let Ok(f) = File::open(dir) {
            let _ = f.set_modified(time.to_owned());
        }
    }
    Ok(())
}

fn apply_layer(
    root: &Path,
    layer: &LayerFile,
    dir_times: &mut BTreeMap<PathBuf, SystemTime>,
) -> Result<(), SandboxError> {
    let mut archive = tar::Archive::new(reader(layer)?);
    // Paths (as in the archive) this layer created, and their parents: an opaque whiteout
    // only hides what lower layers put there.
    let mut created: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().map_err(io_err("read", &layer.path))? {
        let mut entry = entry.map_err(io_err("read", &layer.path))?;
        let raw = entry
            .path()
            .map_err(io_err("read", &layer.path))?
            .into_owned();
        let member = clean_member(&raw)
            .ok_or_else(|| layer_err(&layer.path, &raw, "escapes the root file system"))?;
        let Some(name) = member.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the root itself
        };
        let parent_rel = member.parent().unwrap_or(Path::new("")).to_owned();
        let parent = resolve_in_root(root, &parent_rel, true)
            .map_err(|e| layer_err(&layer.path, &raw, e.to_string()))?;
        let whiteout = strata_oci::whiteout::parse(&name);
        if whiteout == Some(Whiteout::Opaque) {
            if let Ok(children) = fs::read_dir(&parent) {
                for child in children.flatten() {
                    if !created.contains(&parent_rel.join(child.file_name())) {
                        remove_any(&child.path()).map_err(io_err("remove", &child.path()))?;
                    }
                }
            }
            continue;
        }
        if let Some(Whiteout::Remove(hidden)) = whiteout {
            let victim = parent.join(hidden);
            remove_any(&victim).map_err(io_err("remove", &victim))?;
            continue;
        }
        let mut p = member.clone();
        loop {
            created.insert(p.clone());
            match p.parent() {
                Some(up) if !up.as_os_str().is_empty() => p = up.to_owned(),
                _ => break,
            }
        }
        fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
        let dest = parent.join(&name);
        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = (
            header.uid().unwrap_or(0) as u32,
            header.gid().unwrap_or(0) as u32,
        );
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(header.mtime().unwrap_or(0));
        let kind = header.entry_type();
        // Extended attributes (file capabilities, ACLs) as GNU tar and Docker write them;
        // set where permitted, after the content and owner.
        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let Ok(key) = ext.key()
                    && let Some(name) = key.strip_prefix("SCHILY.xattr.")
                {
                    xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                }
            }
        }
        let set_xattrs = |path: &Path| {
            for (name, value) in &xattrs {
                let _ = xattr::set(path, name, value);
            }
        };
        if kind.is_dir() {
            match fs::symlink_metadata(&dest) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove_any(&dest).map_err(io_err("replace", &dest))?;
                    fs::create_dir(&dest).map_err(io_err("create", &dest))?;
                }
                Err(_) => fs::create_dir(&dest).map_err(io_err("create", &dest))?,
            }
            let _ = lchown(&dest, Some(uid), Some(gid));
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
                .map_err(io_err("set the mode of", &dest))?;
            set_xattrs(&dest);
            dir_times.insert(dest, mtime);
            continue;
        }
        remove_any(&dest).map_err(io_err("replace", &dest))?;
        if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(io_err("read", &layer.path))?
                .ok_or_else(|| layer_err(&layer.path, &raw, "symlink without a target"))?;
            std::os::unix::fs::symlink(&target, &dest).map_err(io_err("create", &dest))?;
            let _ = lchown(&dest, Some(uid), Some(gid));
            let secs = header.mtime().unwrap_or(0) as nix::sys::time::time_t;
            let when = nix::sys::time::TimeSpec::new(secs, 0);
            let _ = nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &dest,
                &when,
                &when,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            );
        } else if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(io_err("read", &layer.path))?
                .ok_or_else(|| layer_err(&layer.path, &raw, "hard link without a target"))?;
            let target_rel = clean_member(&target)
                .ok_or_else(|| layer_err(&layer.path, &raw, "hard link escapes the root"))?;
            let source = resolve_in_root(root, &target_rel, false)
                .map_err(|e| layer_err(&layer.path, &raw, e.to_string()))?;
            fs::hard_link(&source, &dest).map_err(io_err("link", &dest))?;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            use nix::sys::stat::{Mode, SFlag, makedev, mknod};
            let sflag = if kind.is_fifo() {
                SFlag::S_IFIFO
            } else if kind.is_block_special() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFCHR
            };
            let dev = makedev(
                header.device_major().ok().flatten().unwrap_or(0).into(),
                header.device_minor().ok().flatten().unwrap_or(0).into(),
            );
            // Device nodes need real root; in a user namespace they are skipped (the sandbox
            // bind-mounts the devices it offers).
            if mknod(&dest, sflag, Mode::from_bits_truncate(mode), dev).is_ok() {
                let _ = lchown(&dest, Some(uid), Some(gid));
            }
        } else {
            let mut out = File::options()
                .write(true)
                .create_new(true)
                .open(&dest)
                .map_err(io_err("create", &dest))?;
            io::copy(&mut entry, &mut out).map_err(io_err("write", &dest))?;
            let _ = lchown(&dest, Some(uid), Some(gid));
            // After chown, which clears set-id bits.
            out.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io_err("set the mode of", &dest))?;
            set_xattrs(&dest);
            let _ = out.set_modified(mtime);
        }
    }
    Ok(())
}

/// The unpacked root file system of an image: `key` names the image (its config digest hex
/// is a good key: it lists the layers' diff ids), `layers` are its blobs bottom first.
/// Unpacks once per key and id mapping; later calls return the kept directory at once.
pub fn prepare_rootfs(
    store: &Store,
    key: &str,
    layers: &[LayerFile],
    ids: &IdMapping,
) -> Result<PathBuf, SandboxError> {
    make_kept(store, key, ids, |temp| unpack_rootfs(temp, layers, ids))
}

/// Where the root file system `key` is kept for `ids`, and the name of its lock.
fn kept_path(store: &Store, key: &str, ids: &IdMapping) -> Result<(PathBuf, String), SandboxError> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(SandboxError::Invalid(format!(
            "`{key}` is not a root file system key"
        )));
    }
    let name = format!("{key}-{}", ids.cache_key());
    Ok((
        store.source_dir("rootfs")?.join(&name),
        format!("rootfs-{name}"),
    ))
}

/// The kept root file system `key`, made by `make` (into a new temporary directory beside it,
/// renamed into place when complete) under its lock unless it is kept already.
fn make_kept(
    store: &Store,
    key: &str,
    ids: &IdMapping,
    make: impl FnOnce(&Path) -> Result<(), SandboxError>,
) -> Result<PathBuf, SandboxError> {
    let (dest, lock) = kept_path(store, key, ids)?;
    if dest.is_dir() {
        return Ok(dest);
    }
    let _lock = store.lock_key(&lock)?;
    if dest.is_dir() {
        return Ok(dest);
    }
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let temp = dest.with_file_name(format!(".tmp-{name}"));
    // A previous attempt that died half-way (we hold the lock, so nobody else is at it).
    if fs::symlink_metadata(&temp).is_ok() {
        crate::spawn::remove_tree(ids, &temp)?;
    }
    if let Err(e) = make(&temp) {
        if fs::symlink_metadata(&temp).is_ok() {
            let _ = crate::spawn::remove_tree(ids, &temp);
        }
        return Err(e);
    }
    fs::rename(&temp, &dest).map_err(io_err("rename into place", &dest))?;
    Ok(dest)
}

/// Runs `work` as root of a user namespace with `ids` (so it can set other owners), or as it
/// is when this is the host's root.
fn as_image_root(
    ids: &IdMapping,
    work: impl FnOnce() -> Result<(), SandboxError>,
) -> Result<(), SandboxError> {
    if ids.is_host_root() {
        work()
    } else {
        crate::spawn::in_user_namespace(ids, move || work().map_err(|e| crate::chain(&e)))
    }
}

/// The key a root file system of exactly the layers with these diff ids (bottom first) is kept
/// under ([`keep_rootfs`]), so that an image whose lowest layers are those finds it
/// ([`prepare_rootfs_over_kept`]).
pub fn layers_key<'a>(diff_ids: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"strata-kept-layers-v1\0");
    for id in diff_ids {
        h.update(id.as_bytes());
        h.update(b"\0");
    }
    format!("layers-{}", &hex::encode(h.finalize())[..48])
}

/// [`prepare_rootfs`] for an image whose lowest layers may be kept unpacked already (by
/// [`keep_rootfs`] under their [`layers_key`]; `diff_ids[i]` is `layers[i]`'s): the longest
/// such run of layers is cloned with hard links and only the layers above it are unpacked,
/// giving the tree an unpack of every layer gives. The kept files are shared, never written
/// through (unpacking replaces a file, it never writes into one); the result is as read-only
/// as [`prepare_rootfs`]'s (an overlay lower, a tree to copy or read).
pub fn prepare_rootfs_over_kept(
    store: &Store,
    key: &str,
    layers: &[LayerFile],
    diff_ids: &[&str],
    ids: &IdMapping,
) -> Result<PathBuf, SandboxError> {
    if diff_ids.len() != layers.len() {
        return Err(SandboxError::Invalid(format!(
            "{} diff ids for {} layers",
            diff_ids.len(),
            layers.len()
        )));
    }
    let base = store.source_dir("rootfs")?;
    let kept = (1..=layers.len()).rev().find_map(|n| {
        let dir = base.join(format!(
            "{}-{}",
            layers_key(diff_ids[..n].iter().copied()),
            ids.cache_key()
        ));
        dir.is_dir().then_some((dir, n))
    });
    let Some((kept, n)) = kept else {
        return prepare_rootfs(store, key, layers, ids);
    };
    make_kept(store, key, ids, |temp| {
        let (temp, rest) = (temp.to_owned(), layers[n..].to_vec());
        as_image_root(ids, move || {
            // `cp -a -l`: directories copied with their owners, modes, times and extended
            // attributes, every other file a hard link to the kept one.
            let out = std::process::Command::new("cp")
                .args(["-a", "-l", "--"])
                .arg(&kept)
                .arg(&temp)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(io_err("run cp for", &temp))?;
            if !out.status.success() {
                return Err(SandboxError::Invalid(format!(
                    "cp -a -l of `{}`: {}",
                    kept.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            unpack_more(&temp, &rest)
        })
    })
}

/// A new directory's path beside the kept root file systems, for a run that unpacks an image
/// anyway and may keep it afterwards with [`keep_rootfs`] (a rename, so it must be on the same
/// file system). `label` tells runs apart; a leftover of a run that died goes with `strata gc`.
pub fn rootfs_build_dir(store: &Store, label: &str) -> Result<PathBuf, SandboxError> {
    if label.is_empty()
        || !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(SandboxError::Invalid(format!(
            "`{label}` is not a root file system label"
        )));
    }
    Ok(store.source_dir("rootfs")?.join(format!(".build-{label}")))
}

/// Adds `layers` (bottom first) to `built`, a directory [`unpack_rootfs`] made of an image's
/// lower layers in [`rootfs_build_dir`], and keeps it as the root file system `key`: what
/// [`prepare_rootfs`] with the lower layers and then `layers` gives, directory times included.
/// `built` is gone afterwards, kept or not (when `key` is already kept, that one is used).
pub fn keep_rootfs(
    store: &Store,
    key: &str,
    built: &Path,
    layers: &[LayerFile],
    ids: &IdMapping,
) -> Result<PathBuf, SandboxError> {
    let result = keep_rootfs_inner(store, key, built, layers, ids);
    if fs::symlink_metadata(built).is_ok() {
        let _ = crate::spawn::remove_tree(ids, built);
    }
    result
}

fn keep_rootfs_inner(
    store: &Store,
    key: &str,
    built: &Path,
    layers: &[LayerFile],
    ids: &IdMapping,
) -> Result<PathBuf, SandboxError> {
    let (dest, lock) = kept_path(store, key, ids)?;
    let _lock = store.lock_key(&lock)?;
    if dest.is_dir() {
        return Ok(dest);
    }
    let (root, layers) = (built.to_owned(), layers.to_vec());
    as_image_root(ids, move || unpack_more(&root, &layers))?;
    fs::rename(built, &dest).map_err(io_err("rename into place", &dest))?;
    Ok(dest)
}

/// [`unpack_layers`] into a directory that already holds the layers below: the directories
/// whose entries the new layers change keep the times they had, unless a layer names them,
/// as one unpack of every layer would leave them.
fn unpack_more(root: &Path, layers: &[LayerFile]) -> Result<(), SandboxError> {
    let mut dir_times: BTreeMap<PathBuf, SystemTime> = BTreeMap::new();
    for layer in layers {
        let mut archive = tar::Archive::new(reader(layer)?);
        for entry in archive.entries().map_err(io_err("read", &layer.path))? {
            let entry = entry.map_err(io_err("read", &layer.path))?;
            let raw = entry.path().map_err(io_err("read", &layer.path))?;
            let member = clean_member(&raw)
                .ok_or_else(|| layer_err(&layer.path, &raw, "escapes the root file system"))?;
            // The directory the member lands in, as unpacking resolves it (symlinks scoped
            // to the root), and the directories above it.
            let parent_rel = member.parent().unwrap_or(Path::new(""));
            let Ok(parent) = resolve_in_root(root, parent_rel, true) else {
                continue;
            };
            let mut up = Some(parent.as_path());
            while let Some(dir) = up.filter(|d| d.starts_with(root)) {
                if dir_times.contains_key(dir) {
                    break;
                }
                if let Ok(m) = fs::symlink_metadata(dir)
                    && m.is_dir()
                    && let Ok(t) = m.modified()
                {
                    dir_times.insert(dir.to_owned(), t);
                }
                up = dir.parent();
            }
        }
    }
    for layer in layers {
        apply_layer(root, layer, &mut dir_times)?;
    }
    for (dir, time) in dir_times.iter().rev() {
        if let Ok(f) = File::open(dir) {
            let _ = f.set_modified(time.to_owned());
        }
    }
    Ok(())
}

/// Removes the kept root file systems (see [`prepare_rootfs`]) whose image key is not in
/// `keep`, and leftovers of unpacks that died. Returns how many were removed. The caller
/// holds the store lock exclusively, so no run is using them.
pub fn remove_unused_rootfs(
    store: &Store,
    keep: &std::collections::BTreeSet<String>,
    ids: &IdMapping,
) -> Result<usize, SandboxError> {
    let base = store.source_dir("rootfs")?;
    let mut removed = 0;
    for entry in fs::read_dir(&base)
        .map_err(io_err("list", &base))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        // `KEY-IDMAP`, where KEY is the image config digest's hex (64 characters).
        let wanted = !name.starts_with('.') && name.get(..64).is_some_and(|k| keep.contains(k));
        if !wanted {
            crate::spawn::remove_tree(ids, &entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Unpacks `layers` (bottom first) into the new directory `dest`, as the owners they name
/// (inside a user namespace with `ids` when not root). On failure nothing is left at `dest`.
pub fn unpack_rootfs(
    dest: &Path,
    layers: &[LayerFile],
    ids: &IdMapping,
) -> Result<(), SandboxError> {
    let temp = dest;
    fs::create_dir(temp).map_err(io_err("create", temp))?;
    fs::set_permissions(temp, fs::Permissions::from_mode(0o755))
        .map_err(io_err("set the mode of", temp))?;
    let result = if ids.is_host_root() {
        unpack_layers(temp, layers)
    } else {
        // As root of a user namespace with the caller's id map, so owners other than the
        // caller can be set (within the subordinate range).
        let layers = layers.to_vec();
        let target = temp.to_owned();
        crate::spawn::in_user_namespace(ids, move || {
            unpack_layers(&target, &layers).map_err(|e| crate::chain(&e))
        })
    };
    if let Err(e) = result {
        let _ = crate::spawn::remove_tree(ids, temp);
        return Err(e);
    }
    Ok(())
}

/// Unpacks `layers` (bottom first) into the new directory `dest`, to be stacked as an overlay
/// layer above `lower` (an unpacked image, e.g. from [`prepare_rootfs`]): `dest` over `lower`
/// then shows what unpacking `lower`'s layers and then `layers` into one directory would.
/// Parents that `layers` name only implicitly are created with `lower`'s owner, mode and time,
/// so the overlay shows them as they were. Returns `Ok(false)`, with nothing at `dest`, where
/// stacking cannot give that result: a layer removes something (a whiteout), a path's
/// parent is a symbolic link or not a directory in `lower`, or a layer replaces a directory
/// of `lower` by a non-directory or the other way round. The caller unpacks everything then.
pub fn unpack_over(
    dest: &Path,
    lower: &Path,
    layers: &[LayerFile],
    ids: &IdMapping,
) -> Result<bool, SandboxError> {
    // The members' paths and whether each is a directory, from the layers' tar headers.
    let mut members: BTreeMap<PathBuf, bool> = BTreeMap::new();
    for layer in layers {
        let mut archive = tar::Archive::new(reader(layer)?);
        for entry in archive.entries().map_err(io_err("read", &layer.path))? {
            let entry = entry.map_err(io_err("read", &layer.path))?;
            let raw = entry.path().map_err(io_err("read", &layer.path))?;
            let member = clean_member(&raw)
                .ok_or_else(|| layer_err(&layer.path, &raw, "escapes the root file system"))?;
            let Some(name) = member.file_name() else {
                continue;
            };
            if strata_oci::whiteout::parse(&name.to_string_lossy()).is_some() {
                return Ok(false);
            }
            members.insert(member, entry.header().entry_type().is_dir());
        }
    }
    // Every parent of a member must be a plain directory in `lower` (or absent there); a
    // member must not change a directory of `lower` into something else or back.
    let mut parents: BTreeMap<PathBuf, ()> = BTreeMap::new();
    for (member, is_dir) in &members {
        match fs::symlink_metadata(lower.join(member)) {
            Ok(m) if m.is_dir() != *is_dir => return Ok(false),
            _ => {}
        }
        let mut up = member.parent();
        while let Some(p) = up.filter(|p| !p.as_os_str().is_empty()) {
            match fs::symlink_metadata(lower.join(p)) {
                Ok(m) if !m.is_dir() => return Ok(false),
                Ok(_) if !members.contains_key(p) => {
                    parents.insert(p.to_owned(), ());
                }
                _ => {}
            }
            up = p.parent();
        }
    }
    fs::create_dir(dest).map_err(io_err("create", dest))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755))
        .map_err(io_err("set the mode of", dest))?;
    let work = {
        let (dest, lower) = (dest.to_owned(), lower.to_owned());
        let layers = layers.to_vec();
        let parents: Vec<PathBuf> = parents.into_keys().collect();
        move || -> Result<(), SandboxError> {
            use std::os::unix::fs::MetadataExt;
            let mut times = Vec::new();
            // Shallow first (the map's order), so each parent exists before its children.
            for p in &parents {
                let from = lower.join(p);
                let to = dest.join(p);
                let m = fs::symlink_metadata(&from).map_err(io_err("read", &from))?;
                fs::create_dir(&to).map_err(io_err("create", &to))?;
                let _ = lchown(&to, Some(m.uid()), Some(m.gid()));
                fs::set_permissions(&to, fs::Permissions::from_mode(m.mode() & 0o7777))
                    .map_err(io_err("set the mode of", &to))?;
                times.push((to, m.modified().ok()));
            }
            unpack_layers(&dest, &layers)?;
            for (dir, time) in times.iter().rev() {
                if let (Ok(f), Some(t)) = (File::open(dir), time) {
                    let _ = f.set_modified(*t);
                }
            }
            Ok(())
        }
    };
    let result = if ids.is_host_root() {
        work()
    } else {
        crate::spawn::in_user_namespace(ids, move || work().map_err(|e| crate::chain(&e)))
    };
    if let Err(e) = result {
        let _ = crate::spawn::remove_tree(ids, dest);
        return Err(e);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(dir: &Path, name: &str, entries: &[(&str, Option<&str>)]) -> LayerFile {
        let path = dir.join(name);
        let mut b = tar::Builder::new(File::create(&path).expect("create"));
        for (member, content) in entries {
            let mut h = tar::Header::new_gnu();
            match content {
                Some(text) if text.starts_with("->") => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_mode(0o777);
                    h.set_link_name(&text[2..]).expect("link");
                    b.append_data(&mut h, member, io::empty()).expect("append");
                }
                Some(text) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(text.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, member, text.as_bytes())
                        .expect("append");
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, member, io::empty()).expect("append");
                }
            }
        }
        b.finish().expect("finish");
        LayerFile {
            path,
            compression: Compression::None,
        }
    }

    #[test]
    fn whiteouts_and_opaque_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        fs::create_dir(&root).expect("mkdir");
        let l1 = layer(
            dir.path(),
            "l1.tar",
            &[
                ("etc", None),
                ("etc/a", Some("a")),
                ("etc/b", Some("b")),
                ("opt", None),
                ("opt/old", Some("old")),
                ("usr", None),
                ("usr/lib", None),
                ("lib", Some("->usr/lib")),
            ],
        );
        let l2 = layer(
            dir.path(),
            "l2.tar",
            &[
                ("etc/.wh.a", Some("")),
                ("opt/new", Some("new")),
                ("opt/.wh..wh..opq", Some("")),
                ("lib/libx.so", Some("x")),
            ],
        );
        unpack_layers(&root, &[l1, l2]).expect("unpack");
        assert!(!root.join("etc/a").exists(), "whiteout removes a");
        assert_eq!(fs::read_to_string(root.join("etc/b")).expect("b"), "b");
        assert!(
            !root.join("opt/old").exists(),
            "opaque hides the lower layer"
        );
        assert_eq!(
            fs::read_to_string(root.join("opt/new")).expect("new"),
            "new"
        );
        assert_eq!(
            fs::read_to_string(root.join("usr/lib/libx.so")).expect("x"),
            "x"
        );
    }

    #[test]
    fn extended_attributes_are_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        fs::create_dir(&root).expect("mkdir");
        let path = dir.path().join("x.tar");
        let mut b = tar::Builder::new(File::create(&path).expect("create"));
        b.append_pax_extensions([("SCHILY.xattr.user.strata", b"yes".as_slice())])
            .expect("pax");
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "f", b"x".as_slice()).expect("append");
        b.finish().expect("finish");
        drop(b);
        unpack_layers(
            &root,
            &[LayerFile {
                path,
                compression: Compression::None,
            }],
        )
        .expect("unpack");
        if xattr::SUPPORTED_PLATFORM
            && xattr::set(dir.path().join("x.tar"), "user.probe", b"1").is_ok()
        {
            assert_eq!(
                xattr::get(root.join("f"), "user.strata").expect("get"),
                Some(b"yes".to_vec())
            );
        }
    }

    #[test]
    fn escaping_members_and_symlinks_stay_inside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir(&root).expect("mkdir");
        fs::create_dir(&outside).expect("mkdir");
        let evil_link = layer(
            dir.path(),
            "link.tar",
            &[
                ("escape", Some(&format!("->{}", outside.display()))),
                ("escape/pwned", Some("x")),
                ("up", Some("->../../../..")),
                ("up/pwned2", Some("y")),
            ],
        );
        unpack_layers(&root, &[evil_link]).expect("unpack");
        assert!(
            !outside.join("pwned").exists(),
            "nothing written through an absolute link"
        );
        assert!(
            root.join(outside.strip_prefix("/").expect("abs"))
                .join("pwned")
                .exists()
        );
        assert!(root.join("pwned2").exists(), "`..` stops at the root");
        // A raw `..` member is refused.
        let path = dir.path().join("dotdot.tar");
        let mut raw = Vec::new();
        {
            let mut h = tar::Header::new_old();
            h.as_mut_bytes()[..10].copy_from_slice(b"../evil\0\0\0");
            h.set_size(0);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            raw.extend_from_slice(h.as_bytes());
            raw.extend_from_slice(&[0u8; 1024]);
        }
        fs::write(&path, raw).expect("write");
        let err = unpack_layers(
            &root,
            &[LayerFile {
                path,
                compression: Compression::None,
            }],
        )
        .expect_err("refused");
        assert!(err.to_string().contains("escapes"), "{err}");
    }

    /// Every path under `root` with its kind, mode, size, content and time.
    fn listing(root: &Path) -> Vec<String> {
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        let mut queue = vec![root.to_owned()];
        while let Some(dir) = queue.pop() {
            for e in fs::read_dir(&dir).expect("list").flatten() {
                let m = fs::symlink_metadata(e.path()).expect("stat");
                let content = if m.is_file() {
                    fs::read_to_string(e.path()).expect("read")
                } else if m.is_symlink() {
                    fs::read_link(e.path()).expect("link").display().to_string()
                } else {
                    queue.push(e.path());
                    String::new()
                };
                let rel = e.path().strip_prefix(root).expect("under").to_owned();
                out.push(format!(
                    "{} {:o} {content} {}",
                    rel.display(),
                    m.mode(),
                    m.mtime()
                ));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_kept_build_directory_equals_one_unpack_of_every_layer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("store");
        let ids = IdMapping::detect();
        let lower = layer(
            dir.path(),
            "lower.tar",
            &[
                ("etc", None),
                ("etc/a", Some("a")),
                ("usr", None),
                ("usr/lib", None),
                ("lib", Some("->usr/lib")),
                ("opt", None),
                ("opt/gone", Some("x")),
                ("usr/kept", Some("k")),
            ],
        );
        // Adds below directories it does not name (their times must stay), through a link,
        // replaces a file and removes one.
        let top = layer(
            dir.path(),
            "top.tar",
            &[
                ("etc/a", Some("changed")),
                ("etc/new", Some("n")),
                ("lib/libx.so", Some("so")),
                ("opt/.wh.gone", Some("")),
                ("var", None),
                ("var/new.log", Some("l")),
            ],
        );
        let built = rootfs_build_dir(&store, "test-1").expect("build dir");
        unpack_rootfs(&built, std::slice::from_ref(&lower), &ids).expect("unpack lower");
        let kept = keep_rootfs(
            &store,
            "kept-test",
            &built,
            std::slice::from_ref(&top),
            &ids,
        )
        .expect("keep");
        assert!(
            !built.exists(),
            "the build directory was renamed into place"
        );
        let whole =
            prepare_rootfs(&store, "whole-test", &[lower.clone(), top], &ids).expect("prepare");
        assert_ne!(kept, whole);
        let listed = listing(&kept);
        assert!(
            listed.iter().any(|l| l.starts_with("usr/lib/libx.so ")),
            "{listed:?}"
        );
        assert!(
            !listed.iter().any(|l| l.starts_with("opt/gone")),
            "{listed:?}"
        );
        assert_eq!(listed, listing(&whole));
        // Keeping again under a kept key uses the kept one and removes the new directory.
        let again = rootfs_build_dir(&store, "test-2").expect("build dir");
        unpack_rootfs(&again, std::slice::from_ref(&lower), &ids).expect("unpack lower");
        assert_eq!(
            keep_rootfs(&store, "kept-test", &again, &[], &ids).expect("keep"),
            kept
        );
        assert!(!again.exists());
        assert!(rootfs_build_dir(&store, "../x").is_err());

        // An image over those layers starts from the kept tree: hard links to its files, the
        // layers above unpacked, the same tree as unpacking every layer.
        let (lower_id, top_id) = ("sha256:lower", "sha256:top");
        let built = rootfs_build_dir(&store, "test-3").expect("build dir");
        unpack_rootfs(&built, std::slice::from_ref(&lower), &ids).expect("unpack lower");
        let base = keep_rootfs(&store, &layers_key([lower_id]), &built, &[], &ids).expect("keep");
        let top = layer(dir.path(), "top2.tar", &[("etc/a", Some("changed"))]);
        let over = prepare_rootfs_over_kept(
            &store,
            "over-test",
            &[lower.clone(), top.clone()],
            &[lower_id, top_id],
            &ids,
        )
        .expect("over kept");
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| fs::metadata(p).expect("stat").ino();
        assert_eq!(ino(&over.join("usr/kept")), ino(&base.join("usr/kept")));
        assert_eq!(fs::read_to_string(base.join("etc/a")).expect("read"), "a");
        let whole = prepare_rootfs(&store, "whole-2", &[lower.clone(), top.clone()], &ids)
            .expect("prepare");
        assert_eq!(listing(&over), listing(&whole));
        // Nothing kept for other layers: an unpack of every layer.
        let other = prepare_rootfs_over_kept(&store, "other", &[lower, top], &["x", "y"], &ids)
            .expect("no kept");
        assert_ne!(ino(&other.join("usr/kept")), ino(&base.join("usr/kept")));
    }
}
