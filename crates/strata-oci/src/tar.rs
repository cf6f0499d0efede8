//! Deterministic POSIX tar (pax interchange format) writing.
//!
//! Every entry gets a 512-byte ustar header (magic `ustar\0`, version `00`). Whatever a ustar
//! header cannot hold exactly — a long or non-ASCII path or link target, a size, owner or time
//! out of range, extended attributes — goes into a pax extended header (typeflag `x`) right
//! before it. Nothing in the output depends on the host or the moment it was written: owner
//! names are empty, there is no atime or ctime, modification times are clamped to
//! `SOURCE_DATE_EPOCH`, pax headers have fixed names and sorted records.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::Path;

use strata_fstree::{Content, Entry, EntryKind};

use crate::layer::LayerError;

/// Settings of the tar writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TarOptions {
    /// Modification times later than this (seconds since the epoch) are clamped to it.
    pub source_date_epoch: i64,
}

/// Size of a tar block.
const BLOCK: usize = 512;

/// Largest read from a host file at once.
const READ_CHUNK: usize = 1 << 20;

/// Writes a deterministic tar of `entries` (already in image order) to `out`; returns bytes
/// written.
///
/// The archive ends with the two zero blocks of the end-of-archive marker. Host files are read
/// when their entry is written; one whose size differs from the entry's is an error.
pub fn write_tar<'a, W: Write>(
    entries: impl IntoIterator<Item = &'a Entry>,
    opts: &TarOptions,
    out: W,
) -> Result<u64, LayerError> {
    let mut w = BufWriter::with_capacity(
        256 * 1024,
        Counting {
            inner: out,
            count: 0,
        },
    );
    write_entries(entries, opts, &mut w)?;
    w.flush().map_err(LayerError::Write)?;
    Ok(w.get_ref().count)
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the entries and the end-of-archive marker to `out`, unbuffered: the caller buffers.
pub(crate) fn write_entries<'a, W: Write>(
    entries: impl IntoIterator<Item = &'a Entry>,
    opts: &TarOptions,
    out: &mut W,
) -> Result<(), LayerError> {
    let mut buf = Vec::new();
    for entry in entries {
        write_entry(entry, opts, out, &mut buf)?;
    }
    out.write_all(&[0u8; 2 * BLOCK]).map_err(LayerError::Write)
}

/// Writes one entry: its pax header if it needs one, its ustar header, its content.
fn write_entry<W: Write>(
    entry: &Entry,
    opts: &TarOptions,
    out: &mut W,
    buf: &mut Vec<u8>,
) -> Result<(), LayerError> {
    let mut name = entry.path.as_str().to_owned();
    let (typeflag, size, link) = match &entry.kind {
        EntryKind::Directory => {
            name.push('/');
            (b'5', 0, None)
        }
        EntryKind::File { size, .. } => (b'0', *size, None),
        EntryKind::Symlink { target } => (b'2', 0, Some(target.as_str())),
        EntryKind::Hardlink { target } => (b'1', 0, Some(target.as_str())),
    };
    let mtime = entry.mtime.min(opts.source_date_epoch);

    let mut header = Header::new(typeflag);
    let mut pax = Vec::new();
    match split_ustar_path(&name) {
        Some((prefix, base)) => {
            header.set_bytes(NAME, base.as_bytes());
            header.set_bytes(PREFIX, prefix.as_bytes());
        }
        None => {
            header.set_bytes(NAME, ascii_placeholder(&name, NAME.1).as_bytes());
            pax.push(("path".to_owned(), name.as_bytes().to_vec()));
        }
    }
    if let Some(link) = link {
        if link.is_ascii() && link.len() <= LINKNAME.1 {
            header.set_bytes(LINKNAME, link.as_bytes());
        } else {
            header.set_bytes(LINKNAME, ascii_placeholder(link, LINKNAME.1).as_bytes());
            pax.push(("linkpath".to_owned(), link.as_bytes().to_vec()));
        }
    }
    header.set_octal(MODE, u64::from(entry.mode & 0o7777));
    for (field, value, key) in [(UID, entry.uid, "uid"), (GID, entry.gid, "gid")] {
        if !header.set_octal(field, u64::from(value)) {
            pax.push((key.to_owned(), value.to_string().into_bytes()));
        }
    }
    if !header.set_octal(SIZE, size) {
        pax.push(("size".to_owned(), size.to_string().into_bytes()));
    }
    let ustar_mtime = u64::try_from(mtime)
        .ok()
        .filter(|&t| header.set_octal(MTIME, t));
    if ustar_mtime.is_none() {
        pax.push(("mtime".to_owned(), mtime.to_string().into_bytes()));
    }
    for (key, value) in &entry.xattrs {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(LayerError::InvalidXattr {
                path: entry.path.to_string(),
                name: key.clone(),
            });
        }
        pax.push((format!("SCHILY.xattr.{key}"), value.clone()));
    }

    if !pax.is_empty() {
        pax.sort();
        let mut records = Vec::new();
        for (key, value) in &pax {
            push_pax_record(&mut records, key, value);
        }
        let mut ph = Header::new(b'x');
        let pax_name = format!("PaxHeaders/{}", entry.path.file_name());
        ph.set_bytes(NAME, ascii_placeholder(&pax_name, NAME.1).as_bytes());
        ph.set_octal(MODE, 0o644);
        ph.set_octal(UID, 0);
        ph.set_octal(GID, 0);
        ph.set_octal(MTIME, ustar_mtime.unwrap_or(0));
        if !ph.set_octal(SIZE, records.len() as u64) {
            // Only reachable with gigabytes of extended attributes.
            return Err(LayerError::InvalidXattr {
                path: entry.path.to_string(),
                name: "(all: too large)".to_owned(),
            });
        }
        out.write_all(&ph.finish()).map_err(LayerError::Write)?;
        write_padded(out, &records)?;
    }
    out.write_all(&header.finish()).map_err(LayerError::Write)?;

    if let EntryKind::File { content, size } = &entry.kind {
        match content {
            Content::Inline(bytes) => {
                if bytes.len() as u64 != *size {
                    return Err(LayerError::SizeMismatch {
                        path: entry.path.absolute().into(),
                        expected: *size,
                        actual: bytes.len() as u64,
                    });
                }
                write_padded(out, bytes)?;
            }
            Content::Host(path) => copy_host_bytes(path, None, *size, out, buf)?,
            Content::HostAt { path, offset } => {
                copy_host_bytes(path, Some(*offset), *size, out, buf)?
            }
        }
    }
    Ok(())
}

/// The header block(s) of one member of an archive strata writes around layers (a
/// docker-archive's `manifest.json`, config and `DIGEST/layer.tar`): owned by root, mode 0644
/// (0755 for a directory), mtime 0. A name a ustar header cannot hold (over 100 bytes without
/// a usable split, or not ASCII) gets a pax `path` record, never a truncated name. The
/// member's content, padded to a block with [`padding`], follows.
pub fn member_header(name: &str, is_dir: bool, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK);
    let mut header = Header::new(if is_dir { b'5' } else { b'0' });
    let mut pax = Vec::new();
    match split_ustar_path(name) {
        Some((prefix, base)) => {
            header.set_bytes(NAME, base.as_bytes());
            header.set_bytes(PREFIX, prefix.as_bytes());
        }
        None => {
            header.set_bytes(NAME, ascii_placeholder(name, NAME.1).as_bytes());
            push_pax_record(&mut pax, "path", name.as_bytes());
        }
    }
    header.set_octal(MODE, if is_dir { 0o755 } else { 0o644 });
    header.set_octal(UID, 0);
    header.set_octal(GID, 0);
    header.set_octal(MTIME, 0);
    if !header.set_octal(SIZE, size) {
        push_pax_record(&mut pax, "size", size.to_string().as_bytes());
    }
    if !pax.is_empty() {
        let mut ph = Header::new(b'x');
        ph.set_bytes(NAME, b"PaxHeaders/member");
        ph.set_octal(MODE, 0o644);
        ph.set_octal(UID, 0);
        ph.set_octal(GID, 0);
        ph.set_octal(MTIME, 0);
        // The records are a path and a size: far below the field's 8 GiB limit.
        ph.set_octal(SIZE, pax.len() as u64);
        out.extend_from_slice(&ph.finish());
        let len = pax.len() as u64;
        out.extend_from_slice(&pax);
        out.extend_from_slice(padding(len));
    }
    out.extend_from_slice(&header.finish());
    out
}

/// The zeros that complete a block after `len` bytes of member content.
pub fn padding(len: u64) -> &'static [u8] {
    const ZEROS: [u8; BLOCK] = [0u8; BLOCK];
    let rem = (len % BLOCK as u64) as usize;
    if rem == 0 { &[] } else { &ZEROS[rem..] }
}

/// Writes `data` followed by zeros up to the next block boundary.
fn write_padded<W: Write>(out: &mut W, data: &[u8]) -> Result<(), LayerError> {
    out.write_all(data).map_err(LayerError::Write)?;
    write_padding(out, data.len() as u64)
}

/// Writes the zeros that complete a block after `len` bytes of content.
fn write_padding<W: Write>(out: &mut W, len: u64) -> Result<(), LayerError> {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        out.write_all(&[0u8; BLOCK][rem..])
            .map_err(LayerError::Write)?;
    }
    Ok(())
}

/// Copies `size` bytes of the host file `path` to `out`, padded to a block. `offset: None`:
/// the bytes are the whole file, and a file shorter or longer than `size` is an error.
/// `Some(o)`: they start at `o` inside a larger file, which must not end before them.
fn copy_host_bytes<W: Write>(
    path: &Path,
    offset: Option<u64>,
    size: u64,
    out: &mut W,
    buf: &mut Vec<u8>,
) -> Result<(), LayerError> {
    let read_err = |source| LayerError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    if let Some(o) = offset {
        file.seek(io::SeekFrom::Start(o)).map_err(read_err)?;
    }
    // A whole file is read one byte past `size`, so a grown file shows up in the last read.
    let extra = u64::from(offset.is_none());
    let want = usize::try_from(size.saturating_add(extra))
        .unwrap_or(usize::MAX)
        .min(READ_CHUNK);
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let mut copied = 0u64;
    loop {
        let left = (size - copied).saturating_add(extra);
        if left == 0 {
            break;
        }
        let room = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = match file.read(&mut buf[..room]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        if copied + n as u64 > size {
            let actual = file
                .metadata()
                .map(|m| m.len())
                .unwrap_or(copied + n as u64)
                .max(copied + n as u64);
            return Err(LayerError::SizeMismatch {
                path: path.to_owned(),
                expected: size,
                actual,
            });
        }
        out.write_all(&buf[..n]).map_err(LayerError::Write)?;
        copied += n as u64;
    }
    if copied != size {
        return Err(LayerError::SizeMismatch {
            path: path.to_owned(),
            expected: size,
            actual: copied,
        });
    }
    write_padding(out, size)
}

/// A header field: offset and length.
type Field = (usize, usize);

const NAME: Field = (0, 100);
const MODE: Field = (100, 8);
const UID: Field = (108, 8);
const GID: Field = (116, 8);
const SIZE: Field = (124, 12);
const MTIME: Field = (136, 12);
const CHKSUM: Field = (148, 8);
const TYPEFLAG: usize = 156;
const LINKNAME: Field = (157, 100);
const MAGIC: Field = (257, 6);
const VERSION: Field = (263, 2);
const DEVMAJOR: Field = (329, 8);
const DEVMINOR: Field = (337, 8);
const PREFIX: Field = (345, 155);

/// A ustar header being filled in.
struct Header([u8; BLOCK]);

impl Header {
    /// A header of the given type with magic, version and zero device numbers; every other
    /// field is empty (uname and gname stay empty for good).
    fn new(typeflag: u8) -> Self {
        let mut h = Header([0u8; BLOCK]);
        h.0[TYPEFLAG] = typeflag;
        h.set_bytes(MAGIC, b"ustar\0");
        h.set_bytes(VERSION, b"00");
        h.set_octal(DEVMAJOR, 0);
        h.set_octal(DEVMINOR, 0);
        h
    }

    /// Copies `bytes` (at most the field's length) to the start of a field.
    fn set_bytes(&mut self, (at, len): Field, bytes: &[u8]) {
        let n = bytes.len().min(len);
        self.0[at..at + n].copy_from_slice(&bytes[..n]);
    }

    /// Stores `value` as zero-padded octal digits followed by a NUL; returns false (leaving the
    /// field zero) when it does not fit.
    fn set_octal(&mut self, (at, len): Field, value: u64) -> bool {
        let digits = len - 1;
        if digits < 22 && value >> (3 * digits) != 0 {
            self.set_octal((at, len), 0);
            return false;
        }
        let mut v = value;
        for i in (0..digits).rev() {
            self.0[at + i] = b'0' + (v & 7) as u8;
            v >>= 3;
        }
        self.0[at + digits] = 0;
        true
    }

    /// Computes the checksum and returns the finished block.
    fn finish(mut self) -> [u8; BLOCK] {
        self.0[CHKSUM.0..CHKSUM.0 + CHKSUM.1].fill(b' ');
        let sum: u32 = self.0.iter().map(|&b| u32::from(b)).sum();
        // Six octal digits, NUL, space: the traditional layout every reader accepts.
        self.set_octal((CHKSUM.0, 7), u64::from(sum));
        self.0[CHKSUM.0 + 7] = b' ';
        self.0
    }
}

/// Splits a path into ustar `prefix` and `name` fields, or `None` when it needs a pax `path`
/// record (too long to split, or not ASCII).
fn split_ustar_path(path: &str) -> Option<(&str, &str)> {
    if !path.is_ascii() {
        return None;
    }
    if path.len() <= NAME.1 {
        return Some(("", path));
    }
    // The prefix only grows as the split moves right, so the leftmost slash that leaves a
    // short enough name is the only candidate.
    let bytes = path.as_bytes();
    let split =
        (1..bytes.len() - 1).find(|&i| bytes[i] == b'/' && bytes.len() - i - 1 <= NAME.1)?;
    (split <= PREFIX.1).then(|| (&path[..split], &path[split + 1..]))
}

/// An ASCII stand-in of at most `max` bytes for a name carried by a pax record, for readers
/// that ignore pax headers.
fn ascii_placeholder(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_ascii() && c != '\0' { c } else { '_' })
        .take(max)
        .collect()
}

/// Appends the pax record `"<len> <key>=<value>\n"`, where `len` counts the whole record.
fn push_pax_record(records: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut len = body + 1;
    while body + decimal_digits(len) != len {
        len = body + decimal_digits(len);
    }
    records.extend_from_slice(format!("{len} {key}=").as_bytes());
    records.extend_from_slice(value);
    records.push(b'\n');
}

/// Number of decimal digits of `n`.
fn decimal_digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for key_len in 0..120 {
            let key = "k".repeat(key_len);
            let mut r = Vec::new();
            push_pax_record(&mut r, &key, b"v");
            let text = String::from_utf8(r.clone()).expect("ascii");
            let (len, _) = text.split_once(' ').expect("space");
            assert_eq!(len.parse::<usize>().expect("number"), r.len(), "{text}");
        }
    }

    #[test]
    fn long_member_names_are_kept_whole() {
        let name = format!("{}/layer.tar", "d".repeat(150));
        let mut bytes = member_header(&name, false, 3);
        bytes.extend_from_slice(b"abc");
        bytes.extend_from_slice(padding(3));
        bytes.extend_from_slice(&[0u8; 2 * BLOCK]);
        let mut archive = ::tar::Archive::new(&bytes[..]);
        let mut entries = archive.entries().expect("entries");
        let entry = entries.next().expect("one entry").expect("entry");
        assert_eq!(entry.path().expect("path").to_str(), Some(name.as_str()));
        assert_eq!(entry.size(), 3);
    }

    #[test]
    fn ustar_split() {
        assert_eq!(split_ustar_path("usr/bin/env"), Some(("", "usr/bin/env")));
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        assert_eq!(split_ustar_path(&long), Some((&long[..120], &long[121..])));
        assert_eq!(split_ustar_path(&"x".repeat(101)), None);
        assert_eq!(split_ustar_path(&format!("{}/f", "d".repeat(156))), None);
        assert_eq!(split_ustar_path("caf\u{e9}"), None);
    }

    #[test]
    fn octal_fields() {
        let mut h = Header::new(b'0');
        assert!(h.set_octal(MODE, 0o4755));
        assert_eq!(&h.0[100..108], b"0004755\0");
        assert!(h.set_octal(UID, 0o7777777));
        assert!(!h.set_octal(GID, 0o10000000));
        assert_eq!(&h.0[116..124], b"0000000\0");
        let block = h.finish();
        let sum: u32 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        assert_eq!(&block[148..156], format!("{sum:06o}\0 ").as_bytes());
    }
}
