//! Reading `.deb` files: the `ar` container, `control.tar.*` and `data.tar.*` as streams, and
//! the mapping of the data archive to a [`Tree`] in the merged-/usr layout.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata_fstree::{Content, Entry, EntryKind, ImagePath, Tree};

use crate::DebianError;
use crate::cache::{Cache, temp_file};

/// The control archive of a package: `control`, `md5sums`, `conffiles`, maintainer scripts
/// and any other member, by file name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlFiles {
    /// File name (`control`, `postinst`, ...) → bytes.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl ControlFiles {
    /// A member by name.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// The `control` file as text.
    pub fn control(&self) -> Option<&str> {
        self.get("control")
            .and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The paths listed in `conffiles`.
    pub fn conffiles(&self) -> Vec<String> {
        self.get("conffiles")
            .map(|b| {
                String::from_utf8_lossy(b)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// First path components that merged /usr turns into symlinks to their `usr/` counterparts.
pub const MERGED_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32", "libo32"];

/// Maps a package path to its merged-/usr location (`lib/x` → `usr/lib/x`).
pub fn merged_usr(path: &str) -> String {
    let first = path.split('/').next().unwrap_or("");
    if MERGED_DIRS.contains(&first) {
        format!("usr/{path}")
    } else {
        path.to_owned()
    }
}

/// Lexically normalises a `/`-separated path; `None` when it climbs above the root.
fn normalize(parts: impl Iterator<Item = String>) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for p in parts {
        match p.as_str() {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            _ => out.push(p),
        }
    }
    Some(out)
}

/// Rewrites a symlink target so it still points at the same file after the link moved from
/// `old` to `new` and files under the merged directories moved under `usr/`. Targets that
/// climb out of the root are made absolute (clamped at the root, as the kernel resolves them).
fn relink(old: &str, new: &str, target: &str) -> String {
    if target.starts_with('/') {
        return target.to_owned();
    }
    let old_dir = old.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let joined = old_dir
        .split('/')
        .chain(target.split('/'))
        .map(str::to_owned);
    let Some(resolved) = normalize(joined) else {
        // Climbs above the root: clamp like the kernel does inside the image.
        let mut clamped: Vec<&str> = Vec::new();
        for p in old_dir.split('/').chain(target.split('/')) {
            match p {
                "" | "." => {}
                ".." => {
                    clamped.pop();
                }
                _ => clamped.push(p),
            }
        }
        return format!("/{}", merged_usr(&clamped.join("/")));
    };
    if old == new {
        return target.to_owned();
    }
    let dest = merged_usr(&resolved.join("/"));
    let dest: Vec<&str> = dest.split('/').filter(|s| !s.is_empty()).collect();
    let new_dir: Vec<&str> = new
        .rsplit_once('/')
        .map(|(d, _)| d.split('/').collect())
        .unwrap_or_default();
    let common = new_dir
        .iter()
        .zip(dest.iter())
        .take_while(|(a, b)| a == b)
        .count();
    let mut rel: Vec<&str> = vec![".."; new_dir.len() - common];
    rel.extend(&dest[common..]);
    if rel.is_empty() {
        ".".to_owned()
    } else {
        rel.join("/")
    }
}

/// What one `.deb` holds once extracted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Extracted {
    pub control: ControlFiles,
    /// Paths as dpkg lists them (`/.`, `/bin`, `/bin/bash`), in archive order.
    pub paths: Vec<String>,
    pub entries: Vec<ManifestEntry>,
    /// The uncompressed `data.tar`, kept whole in the cache under this name (the SHA256 of
    /// the `.deb` it came from): file entries point into it.
    pub pack: String,
    /// Its length.
    pub pack_size: u64,
}

/// A serialisable tree entry (file bytes referenced by their offset in the kept `data.tar`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ManifestEntry {
    pub path: String,
    pub kind: String,
    /// Symlink / hardlink: target.
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub size: u64,
    /// File: where its bytes start in the kept `data.tar`.
    #[serde(default)]
    pub offset: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    #[serde(default)]
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Extracted {
    /// The tree, with file bytes referenced in the content store.
    pub(crate) fn tree(&self, cache: &Cache, name: &str) -> Result<Tree, DebianError> {
        let bad = |message: String| DebianError::BadArchive {
            file: name.to_owned(),
            message,
        };
        let mut entries = Vec::with_capacity(self.entries.len());
        for m in &self.entries {
            let path = ImagePath::new(&m.path).map_err(|e| bad(e.to_string()))?;
            let kind = match m.kind.as_str() {
                "dir" => EntryKind::Directory,
                "file" => EntryKind::File {
                    content: if m.size == 0 {
                        Content::Inline(Arc::from(Vec::new()))
                    } else {
                        Content::HostAt {
                            path: cache.pack_path(&self.pack),
                            offset: m.offset,
                        }
                    },
                    size: m.size,
                },
                "symlink" => EntryKind::Symlink {
                    target: m.target.clone(),
                },
                "hardlink" => EntryKind::Hardlink {
                    target: ImagePath::new(&m.target).map_err(|e| bad(e.to_string()))?,
                },
                other => return Err(bad(format!("unknown entry kind {other}"))),
            };
            entries.push(Entry {
                path,
                kind,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                mtime: m.mtime,
                xattrs: m.xattrs.clone(),
            });
        }
        relead_hardlinks(&mut entries, name)?;
        Ok(Tree::from_entries(entries))
    }

    /// Whether the kept `data.tar` this extraction points into is present with its size.
    pub(crate) fn content_present(&self, cache: &Cache) -> bool {
        self.pack.len() == 64
            && fs::metadata(cache.pack_path(&self.pack)).is_ok_and(|md| md.len() == self.pack_size)
    }
}

/// Makes the first path (in image order) of every hard-link group the regular file and the
/// others links to it, since a tree's hard link must follow its target.
fn relead_hardlinks(entries: &mut [Entry], name: &str) -> Result<(), DebianError> {
    let index: BTreeMap<ImagePath, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.clone(), i))
        .collect();
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let EntryKind::Hardlink { target } = &e.kind {
            let Some(&t) = index.get(target) else {
                return Err(DebianError::BadArchive {
                    file: name.to_owned(),
                    message: format!("hard link {} to missing {target}", e.path),
                });
            };
            groups.entry(t).or_default().push(i);
        }
    }
    for (t, links) in groups {
        if !matches!(entries[t].kind, EntryKind::File { .. }) {
            return Err(DebianError::BadArchive {
                file: name.to_owned(),
                message: format!(
                    "hard link to {}, which is not a regular file",
                    entries[t].path
                ),
            });
        }
        let Some(&leader) = links
            .iter()
            .min_by(|a, b| entries[**a].path.cmp(&entries[**b].path))
        else {
            continue;
        };
        if entries[leader].path > entries[t].path {
            continue;
        }
        // The leader takes the file (hard links share content and metadata).
        let file = entries[t].clone();
        let leader_path = entries[leader].path.clone();
        entries[leader] = Entry {
            path: leader_path.clone(),
            ..file
        };
        entries[t].kind = EntryKind::Hardlink {
            target: leader_path.clone(),
        };
        for &l in &links {
            if l != leader {
                entries[l].kind = EntryKind::Hardlink {
                    target: leader_path.clone(),
                };
            }
        }
    }
    Ok(())
}

/// Reads the `.deb` at `path` (named `name` in errors), storing file contents in the
/// cache's content store.
/// Reads the `.deb` at `path` (whose SHA256 is `deb_sha256`, which names the kept
/// `data.tar`). `verified`: that SHA256 was checked against a signed index, so the xz
/// members' own CRC64 checks are skipped (they would guard the same bytes again).
pub(crate) fn extract(
    cache: &Cache,
    path: &Path,
    deb_sha256: &str,
    verified: bool,
    name: &str,
    warn: &mut dyn FnMut(String),
) -> Result<Extracted, DebianError> {
    let bad = |message: String| DebianError::BadArchive {
        file: name.to_owned(),
        message,
    };
    let ioerr = |e: io::Error| bad(e.to_string());
    let f = File::open(path).map_err(|e| DebianError::Io {
        path: path.to_owned(),
        source: e,
    })?;
    let mut r = BufReader::with_capacity(256 * 1024, f);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(ioerr)?;
    if &magic != b"!<arch>\n" {
        return Err(bad("not an ar archive".into()));
    }
    let mut control = None;
    let mut data = None;
    loop {
        let mut hdr = [0u8; 60];
        match read_full(&mut r, &mut hdr).map_err(ioerr)? {
            0 => break,
            60 => {}
            _ => return Err(bad("truncated ar member header".into())),
        }
        if &hdr[58..60] != b"`\n" {
            return Err(bad("bad ar member header".into()));
        }
        let member = String::from_utf8_lossy(&hdr[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_owned();
        let size: u64 = String::from_utf8_lossy(&hdr[48..58])
            .trim()
            .parse()
            .map_err(|_| bad(format!("bad size of ar member {member}")))?;
        let mut body = (&mut r).take(size);
        if member == "debian-binary" {
            let mut v = String::new();
            body.read_to_string(&mut v).map_err(ioerr)?;
            if !v.starts_with("2.") {
                return Err(bad(format!("unsupported deb format {}", v.trim())));
            }
        } else if let Some(comp) = member.strip_prefix("control.tar") {
            control = Some(read_control(
                decompress(comp, &mut body, verified).map_err(ioerr)?,
                name,
            )?);
        } else if let Some(comp) = member.strip_prefix("data.tar") {
            data = Some(read_data(
                cache,
                decompress(comp, &mut body, verified).map_err(ioerr)?,
                deb_sha256,
                name,
                warn,
            )?);
        }
        // Skip whatever is left of the member, and the padding byte.
        io::copy(&mut body, &mut io::sink()).map_err(ioerr)?;
        if size % 2 == 1 {
            let mut pad = [0u8; 1];
            let _ = r.read(&mut pad).map_err(ioerr)?;
        }
    }
    let control = control.ok_or_else(|| bad("no control.tar member".into()))?;
    let data = data.ok_or_else(|| bad("no data.tar member".into()))?;
    Ok(Extracted {
        control,
        paths: data.paths,
        entries: data.entries,
        pack: data.pack,
        pack_size: data.pack_size,
    })
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn decompress<'a>(
    ext: &str,
    r: &'a mut dyn Read,
    verified: bool,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match ext {
        ".xz" => {
            let mut flags = liblzma::stream::CONCATENATED;
            if verified {
                flags |= liblzma::stream::IGNORE_CHECK;
            }
            let stream = liblzma::stream::Stream::new_stream_decoder(u64::MAX, flags)
                .map_err(io::Error::other)?;
            Box::new(liblzma::read::XzDecoder::new_stream(r, stream))
        }
        ".gz" => Box::new(flate2::read::GzDecoder::new(r)),
        ".zst" => Box::new(zstd::stream::read::Decoder::new(r)?),
        "" => Box::new(r),
        other => {
            return Err(io::Error::other(format!(
                "unsupported compression `{other}`"
            )));
        }
    })
}

/// A member path from a tar header, relative, without `./`; `None` for the root itself.
fn member_path(raw: &[u8], name: &str) -> Result<Option<String>, DebianError> {
    let s = std::str::from_utf8(raw).map_err(|_| DebianError::BadArchive {
        file: name.to_owned(),
        message: format!("non-UTF-8 path {}", String::from_utf8_lossy(raw)),
    })?;
    let mut parts = Vec::new();
    for p in s.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                return Err(DebianError::UnsafePath {
                    package: name.to_owned(),
                    path: s.to_owned(),
                });
            }
            _ => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(parts.join("/")))
}

fn read_control(r: Box<dyn Read + '_>, name: &str) -> Result<ControlFiles, DebianError> {
    let bad = |message: String| DebianError::BadArchive {
        file: name.to_owned(),
        message: format!("control.tar: {message}"),
    };
    let mut ar = tar::Archive::new(r);
    let mut files = BTreeMap::new();
    for e in ar.entries().map_err(|e| bad(e.to_string()))? {
        let mut e = e.map_err(|e| bad(e.to_string()))?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let Some(p) = member_path(&e.path_bytes(), name)? else {
            continue;
        };
        if p.contains('/') {
            continue;
        }
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).map_err(|e| bad(e.to_string()))?;
        files.insert(p, buf);
    }
    if !files.contains_key("control") {
        return Err(bad("no control file".into()));
    }
    Ok(ControlFiles { files })
}

/// What reading a `data.tar` gives.
struct DataResult {
    paths: Vec<String>,
    entries: Vec<ManifestEntry>,
    pack: String,
    pack_size: u64,
}

/// A reader that copies everything read through it to `out`.
struct Tee<R, W> {
    inner: R,
    out: W,
    len: u64,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        self.len += n as u64;
        Ok(n)
    }
}

/// Reads the data archive's entries while keeping the uncompressed archive whole in the
/// cache (named by the `.deb`'s SHA256, which determines it): file entries are recorded by
/// their offset in it, so a package becomes one file on disk, not one per member.
fn read_data(
    cache: &Cache,
    r: Box<dyn Read + '_>,
    deb_sha256: &str,
    name: &str,
    warn: &mut dyn FnMut(String),
) -> Result<DataResult, DebianError> {
    let pack = deb_sha256.to_ascii_lowercase();
    if pack.len() != 64 || !pack.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DebianError::BadArchive {
            file: name.to_owned(),
            message: format!("invalid SHA256 `{deb_sha256}`"),
        });
    }
    let dest = cache.pack_path(&pack);
    let (tmp, f) = temp_file(&dest)?;
    let mut tee = Tee {
        inner: r,
        out: io::BufWriter::with_capacity(256 * 1024, f),
        len: 0,
    };
    let result = read_entries(&mut tee, name, warn).and_then(|(paths, entries)| {
        let bad = |e: io::Error| DebianError::BadArchive {
            file: name.to_owned(),
            message: format!("data.tar: {e}"),
        };
        // The rest of the stream (end-of-archive blocks), so the kept file is the whole tar.
        io::copy(&mut tee, &mut io::sink()).map_err(bad)?;
        tee.out.flush().map_err(bad)?;
        Ok((paths, entries))
    });
    let Tee { out, len, .. } = tee;
    drop(out);
    let (paths, entries) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if fs::metadata(&dest).is_ok_and(|m| m.len() == len) {
        let _ = fs::remove_file(&tmp);
    } else {
        let moved = dest
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::rename(&tmp, &dest));
        if let Err(e) = moved {
            let _ = fs::remove_file(&tmp);
            return Err(DebianError::Io {
                path: dest,
                source: e,
            });
        }
    }
    Ok(DataResult {
        paths,
        entries,
        pack,
        pack_size: len,
    })
}

fn read_entries(
    r: &mut dyn Read,
    name: &str,
    warn: &mut dyn FnMut(String),
) -> Result<(Vec<String>, Vec<ManifestEntry>), DebianError> {
    let bad = |message: String| DebianError::BadArchive {
        file: name.to_owned(),
        message: format!("data.tar: {message}"),
    };
    let mut ar = tar::Archive::new(r);
    let mut paths = vec!["/.".to_owned()];
    let mut entries = Vec::new();
    for e in ar.entries().map_err(|e| bad(e.to_string()))? {
        let mut e = e.map_err(|e| bad(e.to_string()))?;
        let Some(orig) = member_path(&e.path_bytes(), name)? else {
            continue;
        };
        let hdr = e.header();
        let kind_t = hdr.entry_type();
        let mode = hdr.mode().map_err(|e| bad(e.to_string()))? & 0o7777;
        let uid = u32::try_from(hdr.uid().map_err(|e| bad(e.to_string()))?).unwrap_or(0);
        let gid = u32::try_from(hdr.gid().map_err(|e| bad(e.to_string()))?).unwrap_or(0);
        let mtime = i64::try_from(hdr.mtime().map_err(|e| bad(e.to_string()))?).unwrap_or(0);
        let mut xattrs = BTreeMap::new();
        if let Ok(Some(exts)) = e.pax_extensions() {
            for ext in exts.flatten() {
                if let Ok(k) = ext.key()
                    && let Some(attr) = k.strip_prefix("SCHILY.xattr.")
                {
                    xattrs.insert(attr.to_owned(), ext.value_bytes().to_vec());
                }
            }
        }
        let path = merged_usr(&orig);
        let mut offset = 0;
        let (kind, target, size) = match kind_t {
            // A top-level `bin`, `lib`, ... directory becomes `usr/bin`, ...: the old path
            // itself is left to the root symlink.
            tar::EntryType::Directory => ("dir", String::new(), 0),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                // The bytes are not read here: the archive reader passes them on to the kept
                // copy of the archive when it moves to the next entry.
                offset = e.raw_file_position();
                ("file", String::new(), e.size())
            }
            tar::EntryType::Symlink => {
                let t = e
                    .link_name_bytes()
                    .ok_or_else(|| bad(format!("symlink {orig} without target")))?;
                let t = String::from_utf8(t.to_vec())
                    .map_err(|_| bad(format!("non-UTF-8 symlink target of {orig}")))?;
                ("symlink", relink(&orig, &path, &t), 0)
            }
            tar::EntryType::Link => {
                let t = e
                    .link_name_bytes()
                    .ok_or_else(|| bad(format!("hardlink {orig} without target")))?;
                let t = member_path(&t, name)?
                    .ok_or_else(|| bad(format!("hardlink {orig} to the root")))?;
                ("hardlink", merged_usr(&t), 0)
            }
            other => {
                warn(format!(
                    "{name}: skipping {orig}: unsupported entry type {other:?}"
                ));
                continue;
            }
        };
        paths.push(format!("/{orig}"));
        entries.push(ManifestEntry {
            path,
            kind: kind.to_owned(),
            target,
            size,
            offset,
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        });
    }
    Ok((paths, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_usr_paths() {
        assert_eq!(merged_usr("bin/bash"), "usr/bin/bash");
        assert_eq!(
            merged_usr("lib64/ld-linux-x86-64.so.2"),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(merged_usr("usr/bin/env"), "usr/bin/env");
        assert_eq!(merged_usr("library/x"), "library/x");
    }

    #[test]
    fn symlink_targets_follow_the_move() {
        // Same directory: unchanged.
        assert_eq!(
            relink(
                "lib/x86_64-linux-gnu/libz.so.1",
                "usr/lib/x86_64-linux-gnu/libz.so.1",
                "libz.so.1.2"
            ),
            "libz.so.1.2"
        );
        // Pointing into /usr from /lib: recomputed.
        assert_eq!(
            relink(
                "lib/x/libfoo.so",
                "usr/lib/x/libfoo.so",
                "../../usr/lib/x/libfoo.so.1"
            ),
            "libfoo.so.1"
        );
        // From /sbin to /bin.
        assert_eq!(relink("sbin/a", "usr/sbin/a", "../bin/b"), "../bin/b");
        // Not moved: unchanged.
        assert_eq!(
            relink("usr/bin/a", "usr/bin/a", "../../bin/b"),
            "../../bin/b"
        );
        // Absolute: unchanged.
        assert_eq!(relink("bin/a", "usr/bin/a", "/usr/bin/b"), "/usr/bin/b");
        // Escaping the root: clamped and absolute.
        assert_eq!(
            relink("usr/a", "usr/a", "../../../etc/passwd"),
            "/etc/passwd"
        );
    }

    #[test]
    fn hard_link_groups_lead_with_the_first_path() {
        let p = |s: &str| ImagePath::new(s).expect("path");
        let file = Entry::inline_file(p("usr/bin/z"), 0o755, b"x".to_vec());
        let mut link = Entry::inline_file(p("usr/bin/a"), 0o644, Vec::new());
        link.kind = EntryKind::Hardlink {
            target: p("usr/bin/z"),
        };
        let mut link2 = link.clone();
        link2.path = p("usr/bin/m");
        let mut entries = vec![file, link, link2];
        relead_hardlinks(&mut entries, "t").expect("ok");
        let tree = Tree::from_entries(entries);
        let e = tree.entries();
        assert_eq!(e[0].path.as_str(), "usr/bin/a");
        assert!(matches!(e[0].kind, EntryKind::File { size: 1, .. }));
        assert_eq!(e[0].mode, 0o755);
        for other in &e[1..] {
            assert_eq!(
                other.kind,
                EntryKind::Hardlink {
                    target: p("usr/bin/a")
                }
            );
        }
    }

    #[test]
    fn unsafe_member_paths() {
        assert!(member_path(b"./usr/../../etc/x", "p").is_err());
        assert_eq!(member_path(b"./", "p").ok().flatten(), None);
        assert_eq!(
            member_path(b"./usr/bin/x", "p").ok().flatten().as_deref(),
            Some("usr/bin/x")
        );
    }
}
