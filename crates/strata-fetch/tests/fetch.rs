//! The download source against a real HTTP server on 127.0.0.1: verification, redirects,
//! retries, the cache, offline builds, every archive format and a corpus of malicious archives.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Route, Server, dir, file, hardlink, sha256, symlink, tar};
use strata_fetch::{
    ArchiveKind, Cache, ExtractError, FetchError, FetchInput, FetchOptions, FetchSource, Http,
    NoReporter, extract::extract,
};
use strata_fstree::{EntryKind, ImagePath, Tree};
use strata_source::{Source, SourceContext, SourceError};

fn input(url: &str, sha256: Option<&str>, dest: &str) -> FetchInput {
    FetchInput {
        url: url.to_owned(),
        sha256: sha256.map(str::to_owned),
        dest: ImagePath::new(dest).expect("dest"),
        mode: None,
        uid: None,
        gid: None,
        unpack: None,
        strip_components: 0,
        context: "strata.toml:3:1: base.fetch[0]".to_owned(),
    }
}

fn resolve(
    cache: &Path,
    lock: &Path,
    inputs: Vec<FetchInput>,
    options: FetchOptions,
) -> Result<Vec<(String, Tree, String)>, SourceError> {
    let src = FetchSource::new(inputs, lock.to_owned(), options);
    let session = strata_source::Session::new();
    let ctx = SourceContext::new(cache, "amd64", &session);
    let res = src.resolve(&ctx)?;
    Ok(res
        .objects
        .into_iter()
        .map(|o| (o.id, o.tree, o.cache_key))
        .collect())
}

/// The download error under a source error.
fn cause(e: &SourceError) -> String {
    let mut out = e.to_string();
    let mut s = std::error::Error::source(e);
    while let Some(c) = s {
        out.push_str(": ");
        out.push_str(&c.to_string());
        s = c.source();
    }
    out
}

fn file_bytes(tree: &Tree, path: &str) -> Vec<u8> {
    let e = tree
        .entries()
        .iter()
        .find(|e| e.path.as_str() == path)
        .unwrap_or_else(|| panic!("{path} in the tree"));
    match &e.kind {
        EntryKind::File { content, size } => content.read(*size).expect("content"),
        other => panic!("{path} is {other:?}"),
    }
}

#[test]
fn verified_download_cached_by_hash_and_offline() {
    let server = Server::start();
    let body = b"#!/bin/sh\necho tool\n".to_vec();
    let sha = sha256(&body);
    let url = server.route("/tool", Route::Bytes(body.clone()));
    let work = tempfile::tempdir().expect("tempdir");
    let (cache, lock) = (work.path().join("cache"), work.path().join("strata.lock"));

    let mut i = input(&url, Some(&sha), "/usr/local/bin/tool");
    i.mode = Some(0o755);
    let objs = resolve(&cache, &lock, vec![i.clone()], FetchOptions::default()).expect("resolve");
    assert_eq!(objs.len(), 1);
    let (id, tree, key) = &objs[0];
    assert_eq!(id, "fetch:/usr/local/bin/tool");
    assert_eq!(file_bytes(tree, "usr/local/bin/tool"), body);
    assert_eq!(tree.entries()[0].mode, 0o755);
    assert_eq!(server.hits("/tool"), 1);

    // A second spec with the same file (another dest, another URL even) downloads nothing.
    let other = input(
        &format!("{}/elsewhere", server.base),
        Some(&sha),
        "/opt/tool",
    );
    let objs2 = resolve(&cache, &lock, vec![other], FetchOptions::default()).expect("cached");
    assert_eq!(file_bytes(&objs2[0].1, "opt/tool"), body);
    assert_eq!(server.total_hits(), 1, "the cache served the second spec");

    // Offline from the cache gives the same object.
    let offline = FetchOptions {
        offline: true,
        locked: false,
    };
    let objs3 = resolve(&cache, &lock, vec![i.clone()], offline).expect("offline");
    assert_eq!(&objs3[0].2, key, "same cache key offline");
    assert_eq!(server.total_hits(), 1);

    // Offline with an empty cache names the URL and the hash.
    let empty = work.path().join("empty");
    let err = resolve(&empty, &lock, vec![i.clone()], offline).expect_err("not cached");
    let msg = cause(&err);
    assert!(
        msg.contains("--offline") && msg.contains(&sha) && msg.contains(&url),
        "{msg}"
    );

    // A cached file that was corrupted is downloaded again, not used.
    let cached = Cache::open(&cache).expect("cache").file_path(&sha);
    std::fs::write(&cached, b"tampered").expect("tamper");
    let objs4 = resolve(&cache, &lock, vec![i], FetchOptions::default()).expect("again");
    assert_eq!(file_bytes(&objs4[0].1, "usr/local/bin/tool"), body);
    assert_eq!(server.hits("/tool"), 2);
}

#[test]
fn hash_mismatch_names_both_hashes_and_the_url_and_keeps_nothing() {
    let server = Server::start();
    let url = server.route("/evil", Route::Bytes(b"not what was pinned".to_vec()));
    let work = tempfile::tempdir().expect("tempdir");
    let (cache, lock) = (work.path().join("cache"), work.path().join("strata.lock"));
    let pinned = "0".repeat(64);
    let err = resolve(
        &cache,
        &lock,
        vec![input(&url, Some(&pinned), "/x")],
        FetchOptions::default(),
    )
    .expect_err("mismatch");
    let msg = cause(&err);
    let actual = sha256(b"not what was pinned");
    assert!(msg.starts_with("strata.toml:3:1: base.fetch[0]"), "{msg}");
    assert!(
        msg.contains(&format!("expected {pinned}, got {actual}")) && msg.contains(&url),
        "{msg}"
    );
    let c = Cache::open(&cache).expect("cache");
    assert!(
        !c.file_path(&actual).exists(),
        "mismatching bytes are not cached"
    );
    let tmp: Vec<_> = std::fs::read_dir(cache.join("tmp")).expect("tmp").collect();
    assert!(tmp.is_empty(), "no partial file left: {tmp:?}");
}

#[test]
fn redirect_is_followed_and_locked_with_its_final_url() {
    let server = Server::start();
    let body = b"release binary".to_vec();
    let target = server.route("/cdn/tool-1.0", Route::Bytes(body.clone()));
    let url = server.route("/releases/latest", Route::Redirect(target.clone()));
    let work = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(&work.path().join("cache")).expect("cache");
    let d = Http::new()
        .download(&url, None, &cache, &NoReporter)
        .expect("download");
    assert_eq!(d.sha256, sha256(&body));
    assert_eq!(d.size, body.len() as u64);
    assert_eq!(d.final_url, target);
    assert_eq!(std::fs::read(&d.path).expect("cached"), body);
}

#[test]
fn dropped_connection_is_retried() {
    let server = Server::start();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let url = server.route("/flaky", Route::DropFirst(2, body.clone()));
    let work = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(&work.path().join("cache")).expect("cache");
    let http = Http::new().with_backoff(Duration::from_millis(10));
    let d = http
        .download(&url, Some(&sha256(&body)), &cache, &NoReporter)
        .expect("third attempt succeeds");
    assert_eq!(server.hits("/flaky"), 3);
    assert_eq!(std::fs::read(&d.path).expect("cached"), body);

    // More drops than retries: a clear error, nothing kept.
    let url = server.route("/dead", Route::DropFirst(100, body.clone()));
    let err = http
        .download(&url, None, &cache, &NoReporter)
        .expect_err("gives up");
    assert!(matches!(err, FetchError::Http { .. }), "{err}");
    assert!(err.to_string().contains("/dead"), "{err}");
    assert_eq!(server.hits("/dead"), 4, "one try and three retries");
}

#[test]
fn credentials_are_sent_but_never_shown() {
    let server = Server::start();
    let body = b"private".to_vec();
    // "bob:s3cret" in base64.
    let path = "/private";
    server.route(
        path,
        Route::Auth("Basic Ym9iOnMzY3JldA==".into(), body.clone()),
    );
    let url = format!(
        "http://bob:s3cret@{}{path}",
        &server.base["http://".len()..]
    );
    let work = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(&work.path().join("cache")).expect("cache");
    let d = Http::new()
        .download(&url, None, &cache, &NoReporter)
        .expect("authorised");
    assert_eq!(std::fs::read(&d.path).expect("cached"), body);
    assert!(!d.final_url.contains("s3cret"));

    let err = Http::new()
        .download(&url, Some(&"1".repeat(64)), &cache, &NoReporter)
        .expect_err("mismatch");
    let msg = err.to_string();
    assert!(
        msg.contains("***@") && !msg.contains("s3cret") && !msg.contains("bob"),
        "{msg}"
    );

    let bad = format!("http://bob:wrong@{}{path}", &server.base["http://".len()..]);
    let err = Http::new()
        .download(&bad, None, &cache, &NoReporter)
        .expect_err("401");
    let msg = err.to_string();
    assert!(msg.contains("401") && !msg.contains("wrong"), "{msg}");
}

#[test]
fn locked_and_offline_refuse_an_unpinned_url_and_the_lock_pins_it() {
    let server = Server::start();
    let body = b"data".to_vec();
    let url = server.route("/data", Route::Bytes(body.clone()));
    let work = tempfile::tempdir().expect("tempdir");
    let (cache, lock) = (work.path().join("cache"), work.path().join("strata.lock"));
    let i = input(&url, None, "/data");
    for (flag, options) in [
        (
            "--locked",
            FetchOptions {
                locked: true,
                offline: false,
            },
        ),
        (
            "--offline",
            FetchOptions {
                locked: false,
                offline: true,
            },
        ),
    ] {
        let err = resolve(&cache, &lock, vec![i.clone()], options).expect_err(flag);
        let msg = cause(&err);
        assert!(
            msg.contains(flag) && msg.contains("strata lock") && msg.contains(&url),
            "{msg}"
        );
    }
    assert_eq!(server.total_hits(), 0);

    // Unlocked builds download to learn the hash; a lock file then pins it.
    resolve(&cache, &lock, vec![i.clone()], FetchOptions::default()).expect("unlocked");
    let mut l = strata_fetch::FetchLock::default();
    l.insert(strata_fetch::LockedDownload {
        url: url.clone(),
        sha256: sha256(&body),
        size: 4,
        final_url: url.clone(),
    });
    std::fs::write(
        &lock,
        format!("version = 1\n{}", l.to_toml().expect("toml")),
    )
    .expect("lock");
    let objs = resolve(
        &cache,
        &lock,
        vec![i],
        FetchOptions {
            locked: true,
            offline: true,
        },
    )
    .expect("pinned by the lock, served by the cache");
    assert_eq!(file_bytes(&objs[0].1, "data"), body);
    assert_eq!(server.total_hits(), 1);
}

/// The tar every archive test packs: a directory, an executable, a symlink and a hard link, all
/// below one top directory (as release tarballs have them).
fn sample_tar() -> Vec<u8> {
    tar(&[
        dir("go/"),
        dir("go/bin/"),
        file("go/bin/go", 0o755, b"#!/bin/sh\necho go\n"),
        file("go/VERSION", 0o644, b"go1.21.1\n"),
        symlink("go/bin/golang", "go"),
        hardlink("go/bin/go2", "go/bin/go"),
    ])
}

fn check_sample(tree: &Tree, prefix: &str) {
    let find = |p: &str| {
        tree.entries()
            .iter()
            .find(|e| e.path.as_str() == format!("{prefix}{p}"))
            .unwrap_or_else(|| panic!("{prefix}{p} in {tree:?}"))
            .clone()
    };
    assert_eq!(
        file_bytes(tree, &format!("{prefix}bin/go")),
        b"#!/bin/sh\necho go\n"
    );
    assert_eq!(find("bin/go").mode, 0o755);
    assert_eq!(find("VERSION").mode, 0o644);
    assert!(matches!(find("bin/golang").kind, EntryKind::Symlink { ref target } if target == "go"));
    assert!(
        matches!(find("bin/go").kind, EntryKind::Hardlink { .. })
            || matches!(find("bin/go2").kind, EntryKind::Hardlink { .. }),
        "one of the two names is a hard link to the other"
    );
}

#[test]
fn every_archive_format_unpacks_with_strip_components() {
    let server = Server::start();
    let raw = sample_tar();
    let zip = common::zip(&[
        ("go/", None, 0o755, b""),
        ("go/bin/", None, 0o755, b""),
        ("go/bin/go", None, 0o755, b"#!/bin/sh\necho go\n"),
        ("go/VERSION", None, 0o644, b"go1.21.1\n"),
        ("go/bin/golang", Some("go"), 0o777, b""),
    ]);
    let formats: Vec<(ArchiveKind, Vec<u8>)> = vec![
        (ArchiveKind::TarGz, common::gzip(&raw)),
        (ArchiveKind::TarXz, common::xz(&raw)),
        (ArchiveKind::TarZst, common::zstd(&raw)),
        (ArchiveKind::TarBz2, common::bzip2(&raw)),
        (ArchiveKind::Tar, raw.clone()),
        (ArchiveKind::Zip, zip),
    ];
    let work = tempfile::tempdir().expect("tempdir");
    let (cache, lock) = (work.path().join("cache"), work.path().join("strata.lock"));
    let mut keys = Vec::new();
    for (kind, bytes) in formats {
        let url = server.route(&format!("/go.{}", kind.name()), Route::Bytes(bytes.clone()));
        let mut i = input(&url, Some(&sha256(&bytes)), "/usr/local/go");
        i.unpack = Some(kind);
        i.strip_components = 1;
        i.uid = Some(1000);
        let objs = resolve(&cache, &lock, vec![i.clone()], FetchOptions::default())
            .unwrap_or_else(|e| panic!("{}: {}", kind.name(), cause(&e)));
        let tree = &objs[0].1;
        assert_eq!(tree.entries()[0].path.as_str(), "usr/local/go");
        assert!(tree.entries().iter().all(|e| e.uid == 1000 && e.gid == 0));
        if kind == ArchiveKind::Zip {
            assert_eq!(
                file_bytes(tree, "usr/local/go/bin/go"),
                b"#!/bin/sh\necho go\n"
            );
            let link = tree
                .entries()
                .iter()
                .find(|e| e.path.as_str() == "usr/local/go/bin/golang");
            assert!(
                matches!(link.map(|e| &e.kind), Some(EntryKind::Symlink { target }) if target == "go")
            );
        } else {
            check_sample(tree, "usr/local/go/");
        }
        // Without strip_components the top directory stays.
        i.strip_components = 0;
        let objs0 = resolve(&cache, &lock, vec![i], FetchOptions::default()).expect("no strip");
        assert!(
            objs0[0]
                .1
                .entries()
                .iter()
                .any(|e| e.path.as_str() == "usr/local/go/go/bin/go"),
            "{}",
            kind.name()
        );
        keys.push(objs[0].2.clone());
    }
    keys.dedup();
    assert_eq!(keys.len(), 6, "each format's object has its own cache key");
    // Unpacking again uses the extracted copy: no new directory appears.
    let count = std::fs::read_dir(cache.join("unpacked-v1"))
        .expect("unpacked")
        .count();
    assert_eq!(count, 12);
}

/// Extracts `bytes` into a fresh directory; returns the error and the directory's parent, which
/// must hold nothing but the (possibly partial) root.
fn extract_bad(
    kind: ArchiveKind,
    bytes: &[u8],
    strip: u32,
) -> (ExtractError, PathBuf, tempfile::TempDir) {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("sub").join("root");
    std::fs::create_dir_all(&root).expect("root");
    let err = extract(std::io::Cursor::new(bytes.to_vec()), kind, strip, &root)
        .expect_err("malicious archive refused");
    (err, work.path().to_owned(), work)
}

#[test]
fn malicious_archives_are_refused() {
    let device = common::Raw {
        name: "dev/sda",
        kind: b'4',
        link: "",
        mode: 0o600,
        data: b"",
    };
    let chardev = common::Raw {
        name: "dev/null",
        kind: b'3',
        link: "",
        mode: 0o666,
        data: b"",
    };
    let fifo = common::Raw {
        name: "pipe",
        kind: b'6',
        link: "",
        mode: 0o644,
        data: b"",
    };
    let corpus: Vec<(&str, Vec<u8>, u32, &str)> = vec![
        (
            "dotdot",
            tar(&[file("../evil", 0o644, b"x")]),
            0,
            "climbs out",
        ),
        (
            "nested dotdot",
            tar(&[file("a/../../evil", 0o644, b"x")]),
            0,
            "climbs out",
        ),
        (
            "dotdot after strip",
            tar(&[file("top/../../evil", 0o644, b"x")]),
            1,
            "climbs out",
        ),
        (
            "absolute",
            tar(&[file("/etc/evil", 0o644, b"x")]),
            0,
            "absolute path",
        ),
        (
            "symlink up",
            tar(&[symlink("l", "../../../etc")]),
            0,
            "points outside dest",
        ),
        (
            "symlink deep up",
            tar(&[dir("a/"), symlink("a/l", "../../etc")]),
            0,
            "points outside dest",
        ),
        (
            "symlink absolute",
            tar(&[symlink("l", "/etc")]),
            0,
            "absolute path",
        ),
        (
            "write through a link",
            tar(&[dir("d/"), symlink("l", "d"), file("l/evil", 0o644, b"x")]),
            0,
            "below the link",
        ),
        (
            "link chain",
            tar(&[dir("d/"), symlink("d/x", ".."), symlink("d/x/y", "..")]),
            0,
            "below the link",
        ),
        (
            "hardlink out",
            tar(&[hardlink("h", "../../etc/passwd")]),
            0,
            "climbs out",
        ),
        (
            "hardlink absolute",
            tar(&[hardlink("h", "/etc/passwd")]),
            0,
            "absolute path",
        ),
        (
            "hardlink to a link",
            tar(&[symlink("l", "x"), hardlink("h", "l")]),
            0,
            "not an earlier regular file",
        ),
        ("block device", tar(&[device]), 0, "device"),
        ("char device", tar(&[chardev]), 0, "device"),
        ("fifo", tar(&[fifo]), 0, "FIFO"),
        (
            "duplicate file",
            tar(&[file("a", 0o644, b"1"), file("a", 0o644, b"2")]),
            0,
            "appears twice",
        ),
        (
            "duplicate after strip",
            tar(&[file("x/a", 0o644, b"1"), file("y/a", 0o644, b"2")]),
            1,
            "appears twice",
        ),
        (
            "file then dir",
            tar(&[file("a", 0o644, b"1"), dir("a/")]),
            0,
            "appears twice",
        ),
        (
            "below a file",
            tar(&[file("a", 0o644, b"1"), file("a/b", 0o644, b"2")]),
            0,
            "below the file",
        ),
    ];
    for (name, bytes, strip, want) in corpus {
        for (kind, packed) in [
            (ArchiveKind::Tar, bytes.clone()),
            (ArchiveKind::TarGz, common::gzip(&bytes)),
        ] {
            let (err, parent, _keep) = extract_bad(kind, &packed, strip);
            let msg = err.to_string();
            assert!(msg.contains(want), "{name} ({}): {msg}", kind.name());
            let escaped: Vec<_> = walkdir(&parent)
                .into_iter()
                .filter(|p| !p.starts_with(parent.join("sub/root")) && *p != parent.join("sub"))
                .collect();
            assert!(
                escaped.is_empty(),
                "{name}: wrote outside root: {escaped:?}"
            );
        }
    }

    let zips: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "zip dotdot",
            common::zip(&[("../evil", None, 0o644, b"x")]),
            "climbs out",
        ),
        (
            "zip absolute",
            common::zip(&[("/etc/evil", None, 0o644, b"x")]),
            "absolute path",
        ),
        (
            "zip symlink up",
            common::zip(&[("l", Some("../../etc"), 0o777, b"")]),
            "points outside",
        ),
        (
            "zip write through link",
            common::zip(&[
                ("d/", None, 0o755, b""),
                ("l", Some("d"), 0o777, b""),
                ("l/x", None, 0o644, b"x"),
            ]),
            "below the link",
        ),
        (
            "zip duplicate",
            common::zip(&[
                ("a", None, 0o644, b"1"),
                ("b/", None, 0o755, b""),
                ("b", None, 0o644, b"2"),
            ]),
            "appears twice",
        ),
    ];
    for (name, bytes, want) in zips {
        let (err, parent, _keep) = extract_bad(ArchiveKind::Zip, &bytes, 0);
        let msg = err.to_string();
        assert!(msg.contains(want), "{name}: {msg}");
        let escaped: Vec<_> = walkdir(&parent)
            .into_iter()
            .filter(|p| !p.starts_with(parent.join("sub/root")) && *p != parent.join("sub"))
            .collect();
        assert!(
            escaped.is_empty(),
            "{name}: wrote outside root: {escaped:?}"
        );
    }
}

#[test]
fn a_refused_archive_leaves_no_unpacked_tree_in_the_cache() {
    let server = Server::start();
    let bytes = common::gzip(&tar(&[
        file("ok", 0o644, b"1"),
        file("../evil", 0o644, b"x"),
    ]));
    let url = server.route("/bad.tar.gz", Route::Bytes(bytes.clone()));
    let work = tempfile::tempdir().expect("tempdir");
    let (cache, lock) = (work.path().join("cache"), work.path().join("strata.lock"));
    let mut i = input(&url, Some(&sha256(&bytes)), "/opt/x");
    i.unpack = Some(ArchiveKind::TarGz);
    let err = resolve(&cache, &lock, vec![i], FetchOptions::default()).expect_err("refused");
    let msg = cause(&err);
    assert!(
        msg.contains("cannot unpack") && msg.contains("../evil"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_dir(cache.join("unpacked-v1"))
            .expect("dir")
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(cache.join("tmp")).expect("dir").count(),
        0
    );
}

fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[derive(Default)]
struct Counting {
    started: std::sync::Mutex<Vec<(String, u64)>>,
    done: std::sync::Mutex<Vec<String>>,
}

impl strata_source::Reporter for Counting {
    fn items_started(&self, what: &str, total: u64) {
        self.started
            .lock()
            .expect("lock")
            .push((what.to_owned(), total));
    }
    fn item_done(&self, item: &str) {
        self.done.lock().expect("lock").push(item.to_owned());
    }
}

/// A build shows how many downloads it has fetched, each named by its URL without credentials.
#[test]
fn the_source_reports_each_download_to_the_builds_reporter() {
    let server = Server::start();
    let (a, b) = (b"one\n".to_vec(), b"two\n".to_vec());
    let (sha_a, sha_b) = (sha256(&a), sha256(&b));
    let url_a = server.route("/a", Route::Bytes(a));
    let url_b = server.route("/b", Route::Bytes(b));
    let secret = url_b.replacen("http://", "http://user:hunter2@", 1);
    let work = tempfile::tempdir().expect("tempdir");
    let src = FetchSource::new(
        vec![
            input(&url_a, Some(&sha_a), "/opt/a"),
            input(&secret, Some(&sha_b), "/opt/b"),
        ],
        work.path().join("strata.lock"),
        FetchOptions::default(),
    );
    let session = strata_source::Session::new();
    let reporter = Counting::default();
    let cache = work.path().join("cache");
    let ctx = SourceContext {
        reporter: &reporter,
        ..SourceContext::new(&cache, "amd64", &session)
    };
    src.resolve(&ctx).expect("resolve");
    assert_eq!(
        *reporter.started.lock().expect("lock"),
        [("downloads fetched".to_owned(), 2)]
    );
    let done = reporter.done.lock().expect("lock").clone();
    assert_eq!(done.len(), 2, "{done:?}");
    assert_eq!(done[0], url_a);
    assert!(
        !done[1].contains("hunter2") && done[1].ends_with("/b"),
        "{done:?}"
    );
}
