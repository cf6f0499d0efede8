//! Live tests against the real Debian mirror (network access to deb.debian.org only).

use std::path::PathBuf;
use std::time::Instant;

use strata_debian::{
    DebianError, Lock, NoReporter, Request, fetch, fetch_offline, merged_usr_symlinks, missing,
    resolve,
};

/// Whether deb.debian.org answers; live tests are skipped (loudly) when it does not.
fn mirror_reachable() -> bool {
    use std::net::ToSocketAddrs;
    let ok = ("deb.debian.org", 80)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(10)).is_ok()
        });
    strata_test_support::require_that(
        ok,
        "deb.debian.org is not reachable (these tests use the real Debian mirror)",
    )
}

fn cache_dir() -> PathBuf {
    let d = std::env::temp_dir().join("strata-debian-test-cache");
    std::fs::create_dir_all(&d).expect("cache dir");
    d
}

fn request(pkgs: &[&str]) -> Request {
    Request {
        packages: pkgs.iter().map(|s| s.to_string()).collect(),
        ..Request::default()
    }
}

#[test]
fn resolve_and_fetch_bash_coreutils() {
    if !mirror_reachable() {
        return;
    }
    let t = Instant::now();
    let lock =
        resolve(&request(&["bash", "coreutils"]), &cache_dir(), &NoReporter).expect("resolve");
    eprintln!(
        "resolved {} packages in {:?}",
        lock.packages.len(),
        t.elapsed()
    );
    assert_eq!(lock.releases.len(), 3);
    let names: Vec<&str> = lock.packages.iter().map(|p| p.name.as_str()).collect();
    for n in [
        "bash",
        "coreutils",
        "libc6",
        "dpkg",
        "base-files",
        "usr-is-merged",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert!(!names.contains(&"usrmerge"));
    let t = Instant::now();
    let pkgs = fetch(&lock, &cache_dir(), &NoReporter).expect("fetch");
    eprintln!("fetched {} packages in {:?}", pkgs.len(), t.elapsed());
    let bash = pkgs.iter().find(|p| p.locked.name == "bash").expect("bash");
    let paths: Vec<&str> = bash
        .tree
        .entries()
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert!(paths.contains(&"usr/bin/bash"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.starts_with("bin/")));
    assert!(bash.paths.contains(&"/bin/bash".to_string()));
    assert!(
        bash.control
            .control()
            .is_some_and(|c| c.contains("Package: bash"))
    );

    // The lock survives TOML, and the warm cache serves an offline fetch.
    let text = lock.to_toml().expect("toml");
    let back = Lock::from_toml(&text).expect("parse");
    assert_eq!(back, lock);
    let t = Instant::now();
    let again = fetch_offline(&back, &cache_dir(), &NoReporter).expect("offline fetch");
    eprintln!(
        "warm offline fetch of {} packages in {:?}",
        again.len(),
        t.elapsed()
    );
    assert_eq!(again.len(), pkgs.len());
    for (a, b) in again.iter().zip(&pkgs) {
        assert_eq!(a.tree, b.tree);
    }
    // Every hard link follows its target, a regular file of the same tree.
    for p in &pkgs {
        let entries = p.tree.entries();
        for (i, e) in entries.iter().enumerate() {
            if let strata_fstree::EntryKind::Hardlink { target } = &e.kind {
                let t = entries[..i]
                    .iter()
                    .find(|x| &x.path == target)
                    .unwrap_or_else(|| {
                        panic!("{}: {} links to later {target}", p.locked.name, e.path)
                    });
                assert!(matches!(t.kind, strata_fstree::EntryKind::File { .. }));
            }
        }
    }
    let links = merged_usr_symlinks(pkgs.iter().map(|p| &p.tree));
    let names: Vec<&str> = links.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, ["bin", "lib", "lib64", "sbin"]);

    // An empty cache has nothing: offline fails naming the packages.
    let empty = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        missing(&lock, empty.path()).expect("missing").len(),
        lock.packages.len()
    );
    match fetch_offline(&lock, empty.path(), &NoReporter) {
        Err(DebianError::Offline { missing }) => {
            assert!(missing.iter().any(|m| m.starts_with("bash ")))
        }
        other => panic!(
            "expected an offline error, got {:?}",
            other.map(|v| v.len())
        ),
    }
}

#[test]
fn armored_keyring_directory_verifies_the_real_archive() {
    if !mirror_reachable() {
        return;
    }
    let dir = std::path::Path::new("/etc/apt/trusted.gpg.d");
    let has_asc = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .any(|e| e.path().extension().is_some_and(|x| x == "asc"))
        })
        .unwrap_or(false);
    if !strata_test_support::require_that(
        has_asc,
        &format!(
            "no armored keys in {} (Debian 12's debian-archive-keyring has them)",
            dir.display()
        ),
    ) {
        return;
    }
    let req = Request {
        keyring: Some(dir.to_owned()),
        ..request(&["bash"])
    };
    let lock = resolve(&req, &cache_dir(), &NoReporter).expect("resolve with .asc keys");
    assert!(lock.packages.iter().any(|p| p.name == "bash"));
}

#[test]
fn dev_set_trees_are_well_formed() {
    if !mirror_reachable() {
        return;
    }
    let req = request(&["git", "curl", "ca-certificates", "sudo", "python3"]);
    let lock = resolve(&req, &cache_dir(), &NoReporter).expect("resolve");
    let t = Instant::now();
    let pkgs = fetch(&lock, &cache_dir(), &NoReporter).expect("fetch");
    eprintln!("fetched {} packages in {:?}", pkgs.len(), t.elapsed());
    let mut hardlinks = 0;
    for p in &pkgs {
        let entries = p.tree.entries();
        for (i, e) in entries.iter().enumerate() {
            let first = e.path.as_str().split('/').next().unwrap_or("");
            assert!(
                !strata_debian::MERGED_DIRS.contains(&first),
                "{}: {} not under usr/",
                p.locked.name,
                e.path
            );
            match &e.kind {
                strata_fstree::EntryKind::Hardlink { target } => {
                    hardlinks += 1;
                    assert!(
                        entries[..i].iter().any(|x| &x.path == target
                            && matches!(x.kind, strata_fstree::EntryKind::File { .. })),
                        "{}: {} links to {target}, not an earlier file",
                        p.locked.name,
                        e.path
                    );
                }
                strata_fstree::EntryKind::File {
                    content: strata_fstree::Content::Host(path),
                    size,
                } => {
                    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(u64::MAX);
                    assert_eq!(len, *size, "{}: {}", p.locked.name, e.path);
                }
                _ => {}
            }
        }
    }
    assert!(hardlinks > 0, "git ships hard links");
    // setuid sudo survives extraction.
    let sudo = pkgs.iter().find(|p| p.locked.name == "sudo").expect("sudo");
    let bin = sudo
        .tree
        .entries()
        .iter()
        .find(|e| e.path.as_str() == "usr/bin/sudo")
        .expect("usr/bin/sudo");
    assert_eq!(bin.mode & 0o4000, 0o4000);
}
