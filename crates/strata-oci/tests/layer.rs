//! Layer writer tests: pinned digests, thread independence, round trips, GNU tar agreement.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};
use strata_fstree::{Content, Entry, EntryKind, ImagePath, Tree};
use strata_oci::compress::Compression;
use strata_oci::layer::{LayerDigests, LayerError, LayerOptions, compress_tar, write_layer};
use strata_oci::tar::{TarOptions, write_tar};

const SDE: i64 = 1_700_000_000;

fn p(s: &str) -> ImagePath {
    ImagePath::new(s).expect("valid image path")
}

fn long_dir() -> String {
    format!("usr/share/{}/{}", "a".repeat(60), "b".repeat(60))
}

fn long_name() -> String {
    format!("usr/share/{}", "c".repeat(120))
}

fn long_target() -> String {
    format!("/{}/target", "x".repeat(150))
}

/// The fixture tree; the host file lives in `dir`.
fn fixture(dir: &Path) -> Tree {
    let host = dir.join("passwd");
    std::fs::write(&host, b"root:x:0:0:root:/root:/bin/sh\n").expect("write host file");

    let mut hostname = Entry::inline_file(p("etc/hostname"), 0o644, &b"strata\n"[..]);
    hostname.mtime = 1_000;
    let mut passwd = Entry::inline_file(p("etc/passwd"), 0o644, &b""[..]);
    passwd.kind = EntryKind::File {
        content: Content::Host(host),
        size: 30,
    };
    passwd.mtime = SDE - 5;
    let mut sudo = Entry::inline_file(p("usr/bin/sudo"), 0o104755, &b"#!/bin/sh\nexit 0\n"[..]);
    sudo.mtime = 4_000_000_000; // clamped
    let mut tool = Entry::inline_file(p("usr/bin/tool"), 0o750, &b"tool body\n"[..]);
    tool.uid = 1000;
    tool.gid = 1001;
    let mut hard = tool.clone();
    hard.path = p("usr/bin/tool-hard");
    hard.kind = EntryKind::Hardlink {
        target: p("usr/bin/tool"),
    };
    let link = Entry::symlink(p("usr/bin/link"), "tool");
    let longlink = Entry::symlink(p("usr/bin/longlink"), long_target());
    let mut cap = Entry::inline_file(p("usr/bin/cap"), 0o755, &b"cap\n"[..]);
    cap.xattrs
        .insert("user.strata.test".to_owned(), b"hello\0world".to_vec());
    let mut bigid = Entry::inline_file(p("var/big-id"), 0o600, &b"x"[..]);
    bigid.uid = 3_000_000;
    bigid.gid = 3_000_001;
    let mut tmp = Entry::directory(p("tmp"), 0o1777);
    tmp.mtime = SDE + 1;
    let deep = Entry::inline_file(
        p(&format!("{}/file.txt", long_dir())),
        0o644,
        &b"deep\n"[..],
    );
    let wide = Entry::inline_file(p(&long_name()), 0o644, &b"wide\n"[..]);
    let accented = Entry::inline_file(p("etc/caf\u{e9}"), 0o644, &b"\xc3\xa9\n"[..]);
    let mut opt = Entry::directory(p("opt"), 0o700);
    opt.uid = 7;
    Tree::from_entries([
        hostname, passwd, sudo, tool, hard, link, longlink, cap, bigid, tmp, deep, wide, accented,
        opt,
    ])
    .with_parents()
}

fn layer(entries: &[&Entry], compression: Compression, threads: usize) -> (LayerDigests, Vec<u8>) {
    let mut blob = Vec::new();
    let opts = LayerOptions {
        compression,
        threads,
        source_date_epoch: SDE,
    };
    let d = write_layer(entries, &opts, &mut blob).expect("write layer");
    assert_eq!(d.size, blob.len() as u64);
    assert_eq!(d.digest, sha256(&blob));
    (d, blob)
}

fn tar_of(entries: &[&Entry]) -> Vec<u8> {
    let mut tar = Vec::new();
    let n = write_tar(
        entries.iter().copied(),
        &TarOptions {
            source_date_epoch: SDE,
        },
        &mut tar,
    )
    .expect("write tar");
    assert_eq!(n, tar.len() as u64);
    tar
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn decompress(c: Compression, blob: &[u8]) -> Vec<u8> {
    match c {
        Compression::Gzip => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(blob)
                .read_to_end(&mut out)
                .expect("valid gzip");
            out
        }
        Compression::Zstd => zstd::decode_all(blob).expect("valid zstd"),
        Compression::None => blob.to_vec(),
    }
}

const GOLDEN_DIFF_ID: &str =
    "sha256:7ea61b43ff4323de5282ffdab92ec79fd5fb479a1505b9c1f6e3dd061b43818a";
const GOLDEN_GZIP: &str = "sha256:8da66043fc11a78c545a347d2227784b751921f49299a7f7aa917a00f883ec8f";
const GOLDEN_ZSTD: &str = "sha256:7eb64c8ab335346154816c235393386943caff9d04ed90a9b597e73ca8c3005d";

#[test]
fn golden_digests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = fixture(dir.path());
    let entries: Vec<&Entry> = tree.entries().iter().collect();
    let mut got = Vec::new();
    for c in Compression::ALL {
        let (d, _) = layer(&entries, c, 2);
        println!("{c}: diff_id {} digest {}", d.diff_id, d.digest);
        got.push(d);
    }
    assert_eq!(got[0].diff_id, GOLDEN_DIFF_ID);
    assert_eq!(got[1].diff_id, GOLDEN_DIFF_ID);
    assert_eq!(got[2].diff_id, GOLDEN_DIFF_ID);
    assert_eq!(got[0].digest, GOLDEN_GZIP);
    assert_eq!(got[1].digest, GOLDEN_ZSTD);
    assert_eq!(got[2].digest, GOLDEN_DIFF_ID);
}

#[test]
fn round_trip_matches_tar() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = fixture(dir.path());
    let entries: Vec<&Entry> = tree.entries().iter().collect();
    let tar = tar_of(&entries);
    assert_eq!(tar.len() % 512, 0);
    assert!(tar.ends_with(&[0u8; 1024]));
    for c in Compression::ALL {
        let (d, blob) = layer(&entries, c, 2);
        assert_eq!(d.diff_id, sha256(&tar), "{c}");
        assert_eq!(d.uncompressed_size, tar.len() as u64, "{c}");
        assert_eq!(decompress(c, &blob), tar, "{c}");
    }
}

/// Deterministic text-like data: compressible, but not trivially.
fn pseudo_text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "layer", "image", "tar", "gzip", "zstd", "digest", "strata", "blob", "config", "manifest",
        "root", "usr", "bin", "lib", "\n", "0x7f",
    ];
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x & 15) as usize].as_bytes());
        out.push(b' ' + ((x >> 8) % 3) as u8);
        if x >> 60 == 0 {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

#[test]
fn output_does_not_depend_on_threads() {
    let mut entries = vec![
        Entry::directory(p("data"), 0o755),
        Entry::inline_file(p("data/big"), 0o644, pseudo_text(12 << 20, 1)),
        Entry::inline_file(p("data/small"), 0o644, pseudo_text(3000, 2)),
    ];
    entries.push(Entry::inline_file(
        p("data/zz"),
        0o644,
        pseudo_text(5 << 20, 3),
    ));
    let refs: Vec<&Entry> = entries.iter().collect();
    let tar = tar_of(&refs);
    for c in [Compression::Gzip, Compression::Zstd] {
        let (one, blob) = layer(&refs, c, 1);
        assert_eq!(one.diff_id, sha256(&tar));
        assert!(one.size < one.uncompressed_size / 2, "{c}: {one:?}");
        for threads in [2, 4] {
            let (d, _) = layer(&refs, c, threads);
            assert_eq!(d, one, "{c} with {threads} threads");
        }
        assert_eq!(decompress(c, &blob), tar, "{c}");
    }
}

/// A layer kept uncompressed and compressed later is the layer written compressed at once.
#[test]
fn compressing_a_kept_tar_gives_the_directly_written_blob() {
    let entries = [
        Entry::directory(p("data"), 0o755),
        Entry::inline_file(p("data/big"), 0o644, pseudo_text(6 << 20, 4)),
        Entry::inline_file(p("data/small"), 0o644, pseudo_text(3000, 5)),
    ];
    let refs: Vec<&Entry> = entries.iter().collect();
    let (plain, tar) = layer(&refs, Compression::None, 1);
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let (direct, direct_blob) = layer(&refs, c, 2);
        let mut blob = Vec::new();
        let opts = LayerOptions {
            compression: c,
            threads: 3,
            source_date_epoch: SDE,
        };
        let later = compress_tar(tar.as_slice(), &opts, &mut blob).expect("compress");
        assert_eq!(later, direct, "{c}");
        assert_eq!(blob, direct_blob, "{c}");
        assert_eq!(later.diff_id, plain.diff_id, "{c}");
    }
}

#[test]
fn empty_layer() {
    for c in Compression::ALL {
        let (d, blob) = layer(&[], c, 2);
        assert_eq!(d.uncompressed_size, 1024);
        assert_eq!(decompress(c, &blob), vec![0u8; 1024]);
    }
}

/// A header as a reader that honours pax records sees it.
#[derive(Debug, Default)]
struct Parsed {
    path: String,
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    link: String,
    data: Vec<u8>,
    xattrs: BTreeMap<String, Vec<u8>>,
    had_pax: bool,
}

fn octal(field: &[u8]) -> u64 {
    let s = std::str::from_utf8(field).expect("ascii octal");
    let s = s.trim_end_matches('\0').trim();
    u64::from_str_radix(s, 8).expect("octal number")
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8(field[..end].to_vec()).expect("utf-8 field")
}

/// A strict little ustar/pax reader.
fn parse(tar: &[u8]) -> Vec<Parsed> {
    let mut out = Vec::new();
    let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut at = 0;
    loop {
        let h = &tar[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            assert!(tar[at..].iter().all(|&b| b == 0));
            assert_eq!(tar.len() - at, 1024, "exactly two zero blocks at the end");
            return out;
        }
        assert_eq!(&h[257..263], b"ustar\0");
        assert_eq!(&h[263..265], b"00");
        assert!(h[265..329].iter().all(|&b| b == 0), "empty uname/gname");
        assert_eq!(&h[329..345], b"0000000\x000000000\x00");
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        assert_eq!(octal(&h[148..155]), sum, "checksum");
        let size = octal(&h[124..136]) as usize;
        let body = &tar[at + 512..at + 512 + size];
        at += 512 + size.div_ceil(512) * 512;
        let typeflag = h[156];
        if typeflag == b'x' {
            assert!(cstr(&h[..100]).starts_with("PaxHeaders/"));
            assert!(octal(&h[136..148]) as i64 <= SDE);
            let mut rest = body;
            let mut keys = Vec::new();
            while !rest.is_empty() {
                let sp = rest.iter().position(|&b| b == b' ').expect("space");
                let len: usize = std::str::from_utf8(&rest[..sp])
                    .expect("len")
                    .parse()
                    .expect("len");
                let rec = &rest[sp + 1..len];
                assert_eq!(rest[len - 1], b'\n');
                let eq = rec.iter().position(|&b| b == b'=').expect("=");
                let key = String::from_utf8(rec[..eq].to_vec()).expect("key");
                keys.push(key.clone());
                pax.insert(key, rec[eq + 1..rec.len() - 1].to_vec());
                rest = &rest[len..];
            }
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted, "sorted pax records");
            continue;
        }
        let text = |k: &str| {
            pax.get(k)
                .map(|v| String::from_utf8(v.clone()).expect("utf-8"))
        };
        let prefix = cstr(&h[345..500]);
        let name = cstr(&h[..100]);
        let ustar_path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let mut e = Parsed {
            path: text("path").unwrap_or(ustar_path),
            typeflag,
            mode: octal(&h[100..108]) as u32,
            uid: text("uid").map_or(octal(&h[108..116]), |v| v.parse().expect("uid")),
            gid: text("gid").map_or(octal(&h[116..124]), |v| v.parse().expect("gid")),
            mtime: text("mtime").map_or(octal(&h[136..148]) as i64, |v| v.parse().expect("t")),
            link: text("linkpath").unwrap_or_else(|| cstr(&h[157..257])),
            data: body.to_vec(),
            had_pax: !pax.is_empty(),
            ..Parsed::default()
        };
        for (k, v) in &pax {
            if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                e.xattrs.insert(name.to_owned(), v.clone());
            }
        }
        pax.clear();
        out.push(e);
    }
}

#[test]
fn headers_are_strict_and_clamped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = fixture(dir.path());
    let entries: Vec<&Entry> = tree.entries().iter().collect();
    let parsed = parse(&tar_of(&entries));
    let names: Vec<&str> = parsed.iter().map(|e| e.path.as_str()).collect();
    let expected: Vec<String> = tree
        .entries()
        .iter()
        .map(|e| match e.kind {
            EntryKind::Directory => format!("{}/", e.path),
            _ => e.path.to_string(),
        })
        .collect();
    assert_eq!(names, expected);
    let get = |n: &str| {
        parsed
            .iter()
            .find(|e| e.path == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    let sudo = get("usr/bin/sudo");
    assert_eq!(sudo.mtime, SDE, "future mtime clamped");
    assert_eq!(sudo.mode, 0o4755);
    assert!(!sudo.had_pax);
    assert_eq!(get("etc/hostname").mtime, 1_000);
    assert_eq!(get("tmp/").mtime, SDE);
    assert_eq!(get("tmp/").mode, 0o1777);
    assert_eq!(get("tmp/").typeflag, b'5');
    let hard = get("usr/bin/tool-hard");
    assert_eq!((hard.typeflag, hard.link.as_str()), (b'1', "usr/bin/tool"));
    assert!(hard.data.is_empty());
    assert_eq!(get("usr/bin/link").link, "tool");
    assert_eq!(get("usr/bin/longlink").link, long_target());
    assert!(get(&long_name()).had_pax);
    assert!(
        !get(&format!("{}/file.txt", long_dir())).had_pax,
        "prefix split"
    );
    assert!(get("etc/caf\u{e9}").had_pax);
    assert_eq!(get("var/big-id").uid, 3_000_000);
    assert_eq!(get("var/big-id").gid, 3_000_001);
    assert_eq!(get("usr/bin/tool").uid, 1000);
    assert_eq!(get("usr/bin/tool").gid, 1001);
    assert_eq!(
        get("usr/bin/cap").xattrs.get("user.strata.test"),
        Some(&b"hello\0world".to_vec())
    );
    assert_eq!(get("etc/passwd").data, b"root:x:0:0:root:/root:/bin/sh\n");
}

#[test]
fn size_mismatch_names_path_and_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = dir.path().join("f");
    std::fs::write(&host, b"12345").expect("write");
    for size in [3u64, 9] {
        let mut e = Entry::inline_file(p("f"), 0o644, &b""[..]);
        e.kind = EntryKind::File {
            content: Content::Host(host.clone()),
            size,
        };
        for c in Compression::ALL {
            let opts = LayerOptions {
                compression: c,
                threads: 2,
                source_date_epoch: SDE,
            };
            let err = write_layer(&[&e], &opts, std::io::sink()).expect_err("size differs");
            assert!(
                matches!(err, LayerError::SizeMismatch { ref path, expected, actual: 5 }
                    if *path == host && expected == size),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&host.display().to_string()) && msg.contains(&size.to_string()));
        }
    }
    let missing = dir.path().join("missing");
    let mut e = Entry::inline_file(p("f"), 0o644, &b""[..]);
    e.kind = EntryKind::File {
        content: Content::Host(missing.clone()),
        size: 1,
    };
    let err = write_tar([&e], &TarOptions::default(), std::io::sink()).expect_err("missing");
    assert!(matches!(err, LayerError::Read { ref path, .. } if *path == missing));
}

fn size_of(e: &Entry) -> u64 {
    match e.kind {
        EntryKind::File { size, .. } => size,
        _ => 0,
    }
}

/// Files whose bytes sit inside a larger host file (a package's kept data.tar) are written
/// from their offset, and a host file that ends too early is an error naming it.
#[test]
fn content_at_an_offset_of_a_host_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pack = dir.path().join("pack");
    std::fs::write(&pack, b"headerHELLOmiddleWORLD!trailer").expect("write");
    let at = |name: &str, offset: u64, size: u64| {
        let mut e = Entry::inline_file(p(name), 0o644, &b""[..]);
        e.kind = EntryKind::File {
            content: Content::HostAt {
                path: pack.clone(),
                offset,
            },
            size,
        };
        e
    };
    let a = at("a", 6, 5);
    let b = at("b", 17, 6);
    let mut tar = Vec::new();
    write_tar([&a, &b], &TarOptions::default(), &mut tar).expect("tar");
    let mut ar = tar::Archive::new(&tar[..]);
    let got: Vec<(String, Vec<u8>)> = ar
        .entries()
        .expect("entries")
        .map(|e| {
            let mut e = e.expect("entry");
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read");
            (e.path().expect("path").display().to_string(), data)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".to_owned(), b"HELLO".to_vec()),
            ("b".to_owned(), b"WORLD!".to_vec())
        ]
    );
    assert_eq!(b_content(&b), b"WORLD!");
    let short = at("c", 25, 10);
    let err = write_tar([&short], &TarOptions::default(), std::io::sink()).expect_err("short");
    assert!(
        matches!(err, LayerError::SizeMismatch { ref path, expected: 10, actual: 5 } if *path == pack),
        "{err:?}"
    );
}

fn b_content(e: &Entry) -> Vec<u8> {
    match &e.kind {
        EntryKind::File { content, size } => content.read(*size).expect("read"),
        _ => Vec::new(),
    }
}

fn gnu_tar(args: &[&str]) -> Option<String> {
    if !strata_test_support::require(&["tar"]) {
        return None;
    }
    let out = Command::new("tar").args(args).output().ok()?;
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn gnu_tar_agrees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = fixture(dir.path());
    let entries: Vec<&Entry> = tree.entries().iter().collect();
    let (_, blob) = layer(&entries, Compression::Gzip, 2);
    let archive = dir.path().join("layer.tar.gz");
    std::fs::write(&archive, &blob).expect("write archive");
    let archive = archive.to_str().expect("utf-8 temp path");

    let Some(listing) = gnu_tar(&["--numeric-owner", "-tvzf", archive]) else {
        return;
    };
    assert!(!listing.contains("PaxHeaders"), "{listing}");
    assert!(
        listing.contains("usr/bin/tool-hard link to usr/bin/tool"),
        "{listing}"
    );
    assert!(listing.contains("usr/bin/link -> tool"), "{listing}");
    assert!(
        listing.contains(&format!("-> {}", long_target())),
        "{listing}"
    );
    assert!(listing.contains("-rwsr-xr-x 0/0"), "{listing}");
    assert!(listing.contains("1000/1001"), "{listing}");
    assert!(listing.contains("3000000/3000001"), "{listing}");
    assert!(listing.contains(&format!("{}/", long_dir())), "{listing}");
    assert!(listing.contains(&long_name()), "{listing}");
    assert!(listing.contains("etc/caf\u{e9}"), "{listing}");
    assert_eq!(listing.lines().count(), tree.len());

    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    let root_s = root.to_str().expect("utf-8 temp path");
    gnu_tar(&[
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=user.*",
        "-xpzf",
        archive,
        "-C",
        root_s,
    ]);
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    for e in tree.entries() {
        let host = root.join(e.path.as_str());
        let meta = std::fs::symlink_metadata(&host).expect("extracted");
        if is_root {
            assert_eq!((meta.uid(), meta.gid()), (e.uid, e.gid), "{}", e.path);
        }
        match &e.kind {
            EntryKind::Directory => assert!(meta.is_dir()),
            EntryKind::File { content, .. } => {
                assert_eq!(
                    meta.permissions().mode() & 0o7777,
                    e.mode & 0o7777,
                    "{}",
                    e.path
                );
                let want = content.read(size_of(e)).expect("read content");
                assert_eq!(std::fs::read(&host).expect("read"), want, "{}", e.path);
                assert_eq!(meta.mtime(), e.mtime.min(SDE), "{}", e.path);
            }
            EntryKind::Symlink { target } => {
                assert_eq!(
                    std::fs::read_link(&host).expect("link").to_str(),
                    Some(target.as_str())
                );
            }
            EntryKind::Hardlink { target } => {
                let other = std::fs::metadata(root.join(target.as_str())).expect("target");
                assert_eq!(meta.ino(), other.ino(), "{}", e.path);
            }
        }
    }
    match xattr::get(root.join("usr/bin/cap"), "user.strata.test") {
        Ok(v) => assert_eq!(v.as_deref(), Some(&b"hello\0world"[..])),
        Err(e) => {
            strata_test_support::require_that(
                false,
                &format!("extended attributes are not readable in the temp dir: {e}"),
            );
        }
    }
    let tmp = std::fs::metadata(root.join("tmp")).expect("tmp");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    assert_eq!(tmp.mtime(), SDE);
}

/// An output that accepts `room` bytes and then fails.
struct FailingWriter {
    room: usize,
}

impl std::io::Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::Error::other("disk full"));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn errors_stop_the_pipeline() {
    let big = Entry::inline_file(p("big"), 0o644, pseudo_text(6 << 20, 9));
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("gone");
    let mut gone = Entry::inline_file(p("zz-gone"), 0o644, &b""[..]);
    gone.kind = EntryKind::File {
        content: Content::Host(missing.clone()),
        size: 4,
    };
    for c in Compression::ALL {
        let opts = LayerOptions {
            compression: c,
            threads: 2,
            source_date_epoch: SDE,
        };
        // The output fails: the tar thread must not stay blocked on a full channel.
        let err = write_layer(&[&big], &opts, FailingWriter { room: 1000 }).expect_err("full");
        assert!(matches!(err, LayerError::Write(_)), "{c}: {err:?}");
        // The input fails after a few blocks went through: its error is the one reported.
        let err = write_layer(&[&big, &gone], &opts, std::io::sink()).expect_err("missing");
        assert!(
            matches!(err, LayerError::Read { ref path, .. } if *path == missing),
            "{c}: {err:?}"
        );
    }
}
