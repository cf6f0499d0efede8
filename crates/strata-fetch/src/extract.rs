//! Safe extraction of downloaded archives.
//!
//! Every entry name is checked before anything is written: absolute names, `..` components,
//! links whose target leaves the extraction root, entries below a link, hard links to anything
//! but an earlier regular file, devices, FIFOs and repeated paths are all refused, so an archive
//! can write nothing outside `dest` in the image (nor outside the extraction directory on the
//! host). Owners in the archive are ignored (the spec's `uid`/`gid` apply); permission bits are
//! kept without setuid and setgid.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Seek};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The archive formats `unpack` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArchiveKind {
    /// A gzip-compressed tar (`.tar.gz`, `.tgz`).
    TarGz,
    /// An xz-compressed tar (`.tar.xz`).
    TarXz,
    /// A zstd-compressed tar (`.tar.zst`).
    TarZst,
    /// A bzip2-compressed tar (`.tar.bz2`).
    TarBz2,
    /// An uncompressed tar (`.tar`).
    Tar,
    /// A zip archive (`.zip`).
    Zip,
}

/// Every `unpack` value, as written in a spec.
pub const ARCHIVE_NAMES: &[&str] = &["tar.gz", "tar.xz", "tar.zst", "tar.bz2", "tar", "zip"];

impl ArchiveKind {
    /// The kind named by an `unpack` value (`tar.gz`, `tgz`, `tar.xz`, `tar.zst`, `tar.bz2`,
    /// `tar`, `zip`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "tar.gz" | "tgz" => Self::TarGz,
            "tar.xz" => Self::TarXz,
            "tar.zst" => Self::TarZst,
            "tar.bz2" => Self::TarBz2,
            "tar" => Self::Tar,
            "zip" => Self::Zip,
            _ => return None,
        })
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Self::TarGz => "tar.gz",
            Self::TarXz => "tar.xz",
            Self::TarZst => "tar.zst",
            Self::TarBz2 => "tar.bz2",
            Self::Tar => "tar",
            Self::Zip => "zip",
        }
    }
}

/// An archive that cannot be extracted safely or at all.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// An entry was refused.
    #[error("entry `{entry}`: {reason}")]
    Refused {
        /// The entry's name as the archive has it.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// The archive is malformed or a file could not be written.
    #[error("{0}")]
    Read(String),
    /// Writing the extracted files failed.
    #[error("cannot write `{}`", path.display())]
    Write {
        /// The host path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What an archive entry is.
enum Item<'a> {
    Dir,
    File(&'a mut dyn Read),
    Symlink(String),
    Hardlink(String),
}

/// The state of one extraction: what was written, for the checks.
struct Extraction<'a> {
    root: &'a Path,
    strip: u32,
    seen: BTreeMap<String, bool>,
    links: BTreeSet<String>,
    dirs: Vec<(String, u32)>,
}

fn refuse(entry: &str, reason: impl Into<String>) -> ExtractError {
    ExtractError::Refused {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

impl Extraction<'_> {
    /// The entry's path below the root after stripping, or `None` to skip it.
    fn path(&self, raw: &str) -> Result<Option<String>, ExtractError> {
        if raw.starts_with('/') {
            return Err(refuse(raw, "absolute path"));
        }
        if raw.contains('\0') || raw.contains('\\') {
            return Err(refuse(raw, "the name holds a NUL byte or a backslash"));
        }
        let mut parts = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(refuse(raw, "the path climbs out with `..`")),
                p => parts.push(p),
            }
        }
        let strip = self.strip as usize;
        if parts.len() <= strip {
            return Ok(None);
        }
        Ok(Some(parts[strip..].join("/")))
    }

    fn host(&self, path: &str) -> std::path::PathBuf {
        self.root.join(path)
    }

    fn add(&mut self, raw: &str, item: Item<'_>, mode: u32) -> Result<(), ExtractError> {
        let Some(path) = self.path(raw)? else {
            return Ok(());
        };
        let is_dir = matches!(item, Item::Dir);
        if let Some(&was_dir) = self.seen.get(&path) {
            if was_dir && is_dir {
                return Ok(());
            }
            return Err(refuse(
                raw,
                format!("`{path}` appears twice in the archive"),
            ));
        }
        // Nothing may be written below a link: the link could lead anywhere on the host.
        let mut prefix = String::new();
        for part in path.split('/') {
            if !prefix.is_empty() {
                if self.links.contains(&prefix) {
                    return Err(refuse(raw, format!("it lies below the link `{prefix}`")));
                }
                if self.seen.get(&prefix) == Some(&false) {
                    return Err(refuse(raw, format!("it lies below the file `{prefix}`")));
                }
                prefix.push('/');
            }
            prefix.push_str(part);
        }
        let host = self.host(&path);
        let werr = |source| ExtractError::Write {
            path: host.clone(),
            source,
        };
        if let Some(parent) = host.parent() {
            fs::create_dir_all(parent).map_err(werr)?;
        }
        let mode = mode & 0o1777;
        match item {
            Item::Dir => {
                match fs::create_dir(&host) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && host.is_dir() => {}
                    Err(e) => return Err(werr(e)),
                }
                self.dirs.push((path.clone(), mode));
            }
            Item::File(reader) => {
                let mut f = fs::File::create_new(&host).map_err(werr)?;
                io::copy(reader, &mut f).map_err(|e| ExtractError::Read(e.to_string()))?;
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(werr)?;
            }
            Item::Symlink(target) => {
                if target.starts_with('/') {
                    return Err(refuse(
                        raw,
                        format!("the link points to the absolute path `{target}`"),
                    ));
                }
                // Resolve the target lexically from the link's directory.
                let mut at: Vec<&str> = path.split('/').collect();
                at.pop();
                for part in target.split('/') {
                    match part {
                        "" | "." => {}
                        ".." => {
                            if at.pop().is_none() {
                                return Err(refuse(
                                    raw,
                                    format!("the link target `{target}` points outside dest"),
                                ));
                            }
                        }
                        p => at.push(p),
                    }
                }
                std::os::unix::fs::symlink(&target, &host).map_err(werr)?;
                self.links.insert(path.clone());
            }
            Item::Hardlink(target) => {
                let Some(t) = self.path(&target)? else {
                    return Err(refuse(
                        raw,
                        format!("the hard link target `{target}` is stripped"),
                    ));
                };
                if self.seen.get(&t) != Some(&false) || self.links.contains(&t) {
                    return Err(refuse(
                        raw,
                        format!("the hard link target `{target}` is not an earlier regular file"),
                    ));
                }
                fs::hard_link(self.host(&t), &host).map_err(werr)?;
            }
        }
        self.seen.insert(path, is_dir);
        Ok(())
    }

    /// Gives directories their modes last, deepest first, so read-only ones were writable
    /// while being filled.
    fn finish(mut self) -> Result<(), ExtractError> {
        self.dirs.sort();
        for (path, mode) in self.dirs.iter().rev() {
            let host = self.host(path);
            fs::set_permissions(&host, fs::Permissions::from_mode(*mode)).map_err(|source| {
                ExtractError::Write {
                    path: host.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }
}

/// Extracts `archive` of `kind` into the existing, empty directory `root`, dropping `strip`
/// leading components of every name (entries with no more components are skipped).
pub fn extract<R: Read + Seek>(
    archive: R,
    kind: ArchiveKind,
    strip: u32,
    root: &Path,
) -> Result<(), ExtractError> {
    let mut x = Extraction {
        root,
        strip,
        seen: BTreeMap::new(),
        links: BTreeSet::new(),
        dirs: Vec::new(),
    };
    let archive = io::BufReader::new(archive);
    match kind {
        ArchiveKind::Zip => extract_zip(archive, &mut x)?,
        ArchiveKind::Tar => extract_tar(archive, &mut x)?,
        ArchiveKind::TarGz => extract_tar(flate2::read::MultiGzDecoder::new(archive), &mut x)?,
        ArchiveKind::TarXz => extract_tar(liblzma::read::XzDecoder::new(archive), &mut x)?,
        ArchiveKind::TarBz2 => {
            extract_tar(bzip2::read::MultiBzDecoder::new(archive), &mut x)?;
        }
        ArchiveKind::TarZst => {
            let z = zstd::stream::read::Decoder::with_buffer(archive)
                .map_err(|e| ExtractError::Read(e.to_string()))?;
            extract_tar(z, &mut x)?;
        }
    }
    x.finish()
}

fn extract_tar(r: impl Read, x: &mut Extraction<'_>) -> Result<(), ExtractError> {
    use tar::EntryType;
    let bad = |e: io::Error| ExtractError::Read(format!("malformed tar: {e}"));
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path_bytes();
        let name = std::str::from_utf8(&raw)
            .map_err(|_| refuse(&String::from_utf8_lossy(&raw), "the name is not UTF-8"))?
            .to_owned();
        let mode = entry.header().mode().map_err(bad)?;
        let link = || -> Result<String, ExtractError> {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| refuse(&name, "the link has no target"))?;
            std::str::from_utf8(&target)
                .map(str::to_owned)
                .map_err(|_| refuse(&name, "the link target is not UTF-8"))
        };
        let item_kind = entry.header().entry_type();
        match item_kind {
            EntryType::Directory => x.add(&name, Item::Dir, mode)?,
            EntryType::Regular | EntryType::Continuous => {
                x.add(&name, Item::File(&mut entry), mode)?;
            }
            EntryType::Symlink => {
                let t = link()?;
                x.add(&name, Item::Symlink(t), mode)?;
            }
            EntryType::Link => {
                let t = link()?;
                x.add(&name, Item::Hardlink(t), mode)?;
            }
            EntryType::XGlobalHeader | EntryType::XHeader => {}
            EntryType::Char | EntryType::Block => {
                return Err(refuse(&name, "device nodes cannot be unpacked"));
            }
            EntryType::Fifo => return Err(refuse(&name, "FIFOs cannot be unpacked")),
            other => {
                return Err(refuse(
                    &name,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ));
            }
        }
    }
    Ok(())
}

fn extract_zip(r: impl Read + Seek, x: &mut Extraction<'_>) -> Result<(), ExtractError> {
    let bad = |e: zip::result::ZipError| ExtractError::Read(format!("malformed zip: {e}"));
    let mut archive = zip::ZipArchive::new(r).map_err(bad)?;
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).map_err(bad)?;
        let name = std::str::from_utf8(file.name_raw())
            .map_err(|_| {
                refuse(
                    &String::from_utf8_lossy(file.name_raw()),
                    "the name is not UTF-8",
                )
            })?
            .to_owned();
        let unix = file.unix_mode();
        // S_IFMT bits of the Unix mode, when the archive was made on Unix.
        let fmt = unix.map(|m| m & 0o170000);
        if let Some(f) = fmt
            && !matches!(f, 0 | 0o100000 | 0o040000 | 0o120000)
        {
            return Err(refuse(
                &name,
                "device nodes, FIFOs and sockets cannot be unpacked",
            ));
        }
        if file.is_symlink() {
            let mut target = String::new();
            file.read_to_string(&mut target)
                .map_err(|_| refuse(&name, "the link target is not UTF-8"))?;
            x.add(&name, Item::Symlink(target), 0o777)?;
        } else if file.is_dir() {
            x.add(&name, Item::Dir, unix.unwrap_or(0o755))?;
        } else {
            x.add(&name, Item::File(&mut file), unix.unwrap_or(0o644))?;
        }
    }
    Ok(())
}
