//! Tests against a local apt repository made by the test: packages built with `dpkg-deb`,
//! indices written by hand, signed with a throwaway OpenPGP key made with `gpg`, served over
//! HTTP on 127.0.0.1. Skipped (with a message) when `gpg` or `dpkg-deb` is missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use strata_debian::{DebianError, NoReporter, Request, fetch, resolve};
use strata_fstree::EntryKind;

fn link_target(k: &EntryKind) -> Option<&str> {
    match k {
        EntryKind::Symlink { target } => Some(target),
        _ => None,
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Serves `root` over HTTP/1.0 on an ephemeral port until the process ends.
fn serve(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let rel = path.trim_start_matches('/');
                let file = root.join(rel);
                let ok = !rel.split('/').any(|c| c == "..") && file.is_file();
                let resp = if ok {
                    let body = std::fs::read(&file).unwrap_or_default();
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend(body);
                    r
                } else {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_vec()
                };
                let _ = stream.write_all(&resp);
            });
        }
    });
    format!("http://{addr}")
}

/// A throwaway GnuPG home with keys.
struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn new(dir: &Path) -> Self {
        let home = dir.join("gnupg");
        std::fs::create_dir_all(&home).expect("gnupg home");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        }
        Self { home }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &self.home).args([
            "--batch",
            "--quiet",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        c
    }

    /// Generates a key; returns its fingerprint.
    fn new_key(&self, uid: &str, expire: &str) -> String {
        run(self
            .cmd()
            .args(["--quick-gen-key", uid, "ed25519", "sign", expire]));
        let out = run(self.cmd().args(["--with-colons", "--list-keys", uid]));
        out.lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("fingerprint")
            .to_owned()
    }

    /// Adds a signing subkey (RSA 3072); returns its fingerprint.
    fn add_subkey(&self, primary: &str) -> String {
        run(self
            .cmd()
            .args(["--quick-add-key", primary, "rsa3072", "sign", "never"]));
        let out = run(self.cmd().args(["--with-colons", "--list-keys", primary]));
        out.lines()
            .filter(|l| l.starts_with("fpr:"))
            .nth(1)
            .and_then(|l| l.split(':').nth(9))
            .expect("subkey fingerprint")
            .to_owned()
    }

    fn export(&self, fpr: &str, to: &Path) {
        let out = self.cmd().args(["--export", fpr]).output().expect("export");
        assert!(out.status.success() && !out.stdout.is_empty());
        std::fs::write(to, out.stdout).expect("write key");
    }

    fn clearsign(&self, key: &str, input: &Path, output: &Path) {
        let _ = std::fs::remove_file(output);
        run(self
            .cmd()
            .args(["--digest-algo", "SHA256", "--local-user"])
            .arg(format!("{key}!"))
            .arg("--clearsign")
            .arg("--output")
            .arg(output)
            .arg(input));
    }

    fn detach_sign(&self, key: &str, input: &Path, output: &Path) {
        let _ = std::fs::remove_file(output);
        run(self
            .cmd()
            .args(["--digest-algo", "SHA256", "--local-user"])
            .arg(format!("{key}!"))
            .args(["--armor", "--detach-sign", "--output"])
            .arg(output)
            .arg(input));
    }
}

/// Builds a `.deb` with dpkg-deb from a control text and files (path, bytes, mode).
fn build_deb(
    work: &Path,
    name: &str,
    control: &str,
    files: &[(&str, &[u8], u32)],
    links: &[(&str, &str)],
) -> PathBuf {
    let root = work.join(format!("build-{name}"));
    std::fs::create_dir_all(root.join("DEBIAN")).expect("mkdir");
    std::fs::write(root.join("DEBIAN/control"), control).expect("control");
    std::fs::write(root.join("DEBIAN/postinst"), "#!/bin/sh\nexit 0\n").expect("postinst");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.join("DEBIAN/postinst"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
    }
    for (path, bytes, mode) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, bytes).expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).expect("chmod");
        }
    }
    for (link, target) in links {
        let p = root.join(link);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        if let Some(t) = target.strip_prefix("hard:") {
            std::fs::hard_link(root.join(t), &p).expect("hardlink");
        } else {
            #[cfg(unix)]
            std::os::unix::fs::symlink(target, &p).expect("symlink");
        }
    }
    let out = work.join(format!("{name}.deb"));
    // Every compression dpkg-deb offers: xz (Debian), zstd (Ubuntu), gzip, none.
    let comp = match name {
        "beta" => "-Zzstd",
        "usr-is-merged" => "-Zgzip",
        "broken" => "-Znone",
        _ => "-Zxz",
    };
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", comp, "--build"])
        .arg(&root)
        .arg(&out));
    out
}

/// Writes an `ar` archive by hand (for a hostile `.deb` dpkg-deb would not build).
fn write_ar(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        out.extend(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                0,
                0,
                0,
                "100644",
                data.len()
            )
            .as_bytes(),
        );
        out.extend(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// A tar with raw (unchecked) paths: (path, type, data, link target).
fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, data, link) in entries {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..path.len()].copy_from_slice(path.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(*kind);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        out.extend(h.as_bytes());
        out.extend(*data);
        out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    }
    out.extend([0u8; 1024]);
    out
}

/// A hand-made `.deb` with the given control text and raw data.tar entries.
fn raw_deb(control: &str, data: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
    let control_tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(control.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "./control", control.as_bytes())
            .expect("append");
        b.into_inner().expect("tar")
    };
    write_ar(&[
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar", control_tar),
        ("data.tar", raw_tar(data)),
    ])
}

struct Repo {
    dir: tempfile::TempDir,
    gpg: Gpg,
    key: String,
    url: String,
    debs: Vec<(String, PathBuf, String)>,
}

struct Publish<'a> {
    valid_until: Option<&'a str>,
    sign_with: Option<&'a str>,
    inrelease: bool,
}

impl Default for Publish<'_> {
    fn default() -> Self {
        Self {
            valid_until: None,
            sign_with: None,
            inrelease: true,
        }
    }
}

impl Repo {
    fn new() -> Option<Self> {
        if !strata_test_support::require(&["gpg", "dpkg-deb"]) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let gpg = Gpg::new(dir.path());
        let key = gpg.new_key("strata test archive <archive@strata.test>", "never");
        let url = serve(dir.path().join("www"));
        Some(Self {
            dir,
            gpg,
            key,
            url,
            debs: Vec::new(),
        })
    }

    fn work(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    fn add(&mut self, name: &str, deb: PathBuf, control: &str) {
        self.debs.push((name.to_owned(), deb, control.to_owned()));
    }

    fn add_packages(&mut self) {
        let work = self.work();
        let alpha_ctl = "Package: alpha\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: t <t@t>\nDepends: beta (>= 2), usrmerge | usr-is-merged\nDescription: test\n";
        let deb = build_deb(
            &work,
            "alpha",
            alpha_ctl,
            &[
                ("bin/alpha", b"#!/bin/sh\necho alpha\n", 0o755),
                ("lib/x86_64-linux-gnu/libalpha.so.1.0", b"ELF", 0o644),
                ("usr/share/doc/alpha/README", b"hello", 0o644),
                ("usr/bin/suid", b"x", 0o4755),
            ],
            &[
                ("lib/x86_64-linux-gnu/libalpha.so.1", "libalpha.so.1.0"),
                (
                    "lib/x86_64-linux-gnu/libalpha.so",
                    "../../usr/lib/x86_64-linux-gnu/libalpha.so.1.0",
                ),
                (
                    "usr/share/doc/alpha/README.copy",
                    "hard:usr/share/doc/alpha/README",
                ),
            ],
        );
        self.add("alpha", deb, alpha_ctl);
        let beta_ctl = "Package: beta\nVersion: 2.0\nArchitecture: all\nMaintainer: t <t@t>\nDepends: alpha\nDescription: test\n";
        let deb = build_deb(
            &work,
            "beta",
            beta_ctl,
            &[("usr/share/beta/data", b"beta", 0o644)],
            &[],
        );
        self.add("beta", deb, beta_ctl);
        let uim_ctl = "Package: usr-is-merged\nVersion: 37\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n";
        let deb = build_deb(&work, "usr-is-merged", uim_ctl, &[], &[]);
        self.add("usr-is-merged", deb, uim_ctl);
        let um_ctl = "Package: usrmerge\nVersion: 37\nArchitecture: all\nMaintainer: t <t@t>\nDepends: perl\nDescription: test\n";
        let deb = build_deb(&work, "usrmerge", um_ctl, &[], &[]);
        self.add("usrmerge", deb, um_ctl);
        let broken_ctl = "Package: broken\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\nDepends: beta (>= 3)\nDescription: test\n";
        let deb = build_deb(&work, "broken", broken_ctl, &[], &[]);
        self.add("broken", deb, broken_ctl);
        // A hostile package whose data.tar escapes the root.
        let evil_ctl = "Package: evil\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\nDescription: test\n";
        let reg = tar::EntryType::Regular;
        let evil = raw_deb(
            evil_ctl,
            &[
                ("./usr/share/ok", reg, b"ok", ""),
                ("./usr/../../../tmp/strata-evil", reg, b"evil", ""),
            ],
        );
        let path = work.join("evil.deb");
        std::fs::write(&path, evil).expect("write evil");
        self.add("evil", path, evil_ctl);
        // Odd but harmless-once-neutralised entries: a device node, links leaving the root.
        let odd_ctl = "Package: odd\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\nDescription: test\n";
        let odd = raw_deb(
            odd_ctl,
            &[
                ("./dev/", tar::EntryType::Directory, b"", ""),
                ("./dev/null", tar::EntryType::Char, b"", ""),
                ("./usr/", tar::EntryType::Directory, b"", ""),
                (
                    "./usr/shadow",
                    tar::EntryType::Symlink,
                    b"",
                    "../../../../etc/shadow",
                ),
                ("./usr/abs", tar::EntryType::Symlink, b"", "/etc/passwd"),
                ("./sbin/tool", reg, b"tool", ""),
                ("./sbin/tool2", tar::EntryType::Link, b"", "./sbin/tool"),
            ],
        );
        let path = work.join("odd.deb");
        std::fs::write(&path, odd).expect("write odd");
        self.add("odd", path, odd_ctl);
    }

    /// Writes pool, Packages(.xz), Release and its signature.
    fn publish(&self, opts: &Publish<'_>) {
        let www = self.work().join("www");
        let dists = www.join("dists/test");
        let bin = dists.join("main/binary-amd64");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::fs::create_dir_all(www.join("pool/main")).expect("mkdir");
        let mut packages = String::new();
        for (name, deb, control) in &self.debs {
            let bytes = std::fs::read(deb).expect("deb");
            let rel = format!("pool/main/{name}.deb");
            std::fs::write(www.join(&rel), &bytes).expect("pool");
            packages.push_str(control.trim_end());
            packages.push_str(&format!(
                "\nFilename: {rel}\nSize: {}\nSHA256: {}\n\n",
                bytes.len(),
                sha256(&bytes)
            ));
        }
        std::fs::write(bin.join("Packages"), &packages).expect("Packages");
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(packages.as_bytes(), 6)
            .read_to_end(&mut xz)
            .expect("xz");
        std::fs::write(bin.join("Packages.xz"), &xz).expect("Packages.xz");
        let mut release = String::from(
            "Origin: strata\nLabel: strata\nSuite: test\nCodename: test\nDate: Sat, 01 Jan 2022 00:00:00 UTC\nArchitectures: amd64\nComponents: main\n",
        );
        if let Some(v) = opts.valid_until {
            release.push_str(&format!("Valid-Until: {v}\n"));
        }
        release.push_str("SHA256:\n");
        for (p, b) in [
            ("main/binary-amd64/Packages", packages.as_bytes().to_vec()),
            ("main/binary-amd64/Packages.xz", xz.clone()),
        ] {
            release.push_str(&format!(" {} {} {p}\n", sha256(&b), b.len()));
        }
        std::fs::write(dists.join("Release"), &release).expect("Release");
        let key = opts.sign_with.unwrap_or(&self.key);
        let _ = std::fs::remove_file(dists.join("InRelease"));
        let _ = std::fs::remove_file(dists.join("Release.gpg"));
        if opts.inrelease {
            self.gpg
                .clearsign(key, &dists.join("Release"), &dists.join("InRelease"));
        } else {
            self.gpg
                .detach_sign(key, &dists.join("Release"), &dists.join("Release.gpg"));
        }
    }

    fn keyring(&self, fpr: &str) -> PathBuf {
        let p = self.work().join(format!("key-{fpr}.gpg"));
        self.gpg.export(fpr, &p);
        p
    }

    fn request(&self, pkgs: &[&str], keyring: PathBuf) -> Request {
        Request {
            packages: pkgs.iter().map(|s| s.to_string()).collect(),
            suite: "test".into(),
            mirror: self.url.clone(),
            security_mirror: None,
            updates: false,
            components: vec!["main".into()],
            architecture: "amd64".into(),
            keyring: Some(keyring),
            recommends: false,
            essential: true,
            repos: Vec::new(),
        }
    }
}

fn setup() -> Option<Repo> {
    let mut repo = Repo::new()?;
    repo.add_packages();
    Some(repo)
}

#[test]
fn good_signature_resolves_and_extracts() {
    let Some(repo) = setup() else { return };
    repo.publish(&Publish::default());
    let cache = tempfile::tempdir().expect("cache");
    let req = repo.request(&["alpha"], repo.keyring(&repo.key));
    let lock = resolve(&req, cache.path(), &NoReporter).expect("resolve");
    let names: Vec<&str> = lock.packages.iter().map(|p| p.name.as_str()).collect();
    // The alpha ↔ beta cycle resolves; usr-is-merged wins over usrmerge.
    assert_eq!(names, ["alpha", "beta", "usr-is-merged"]);
    let alpha = &lock.packages[0];
    assert_eq!(alpha.depends, ["beta", "usr-is-merged"]);
    assert!(lock.matches(&req));

    let pkgs = fetch(&lock, cache.path(), &NoReporter).expect("fetch");
    let alpha = pkgs
        .iter()
        .find(|p| p.locked.name == "alpha")
        .expect("alpha");
    let find = |path: &str| {
        alpha
            .tree
            .entries()
            .iter()
            .find(|e| e.path.as_str() == path)
            .unwrap_or_else(|| panic!("{path} missing"))
    };
    assert!(alpha.tree.entries().iter().all(|e| {
        let first = e.path.as_str().split('/').next().unwrap_or("");
        !["bin", "lib", "sbin", "lib64"].contains(&first)
    }));
    let bin = find("usr/bin/alpha");
    assert_eq!(bin.mode, 0o755);
    assert_eq!(bin.uid, 0);
    match &bin.kind {
        EntryKind::File { content, size } => {
            assert_eq!(*size, 21);
            // The bytes are read from the package's data.tar kept in the cache.
            let strata_fstree::Content::HostAt { path, .. } = content else {
                panic!("expected content in the kept data.tar, got {content:?}")
            };
            assert!(path.starts_with(cache.path()));
            assert_eq!(
                content.read(*size).expect("content"),
                b"#!/bin/sh\necho alpha\n"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(find("usr/bin/suid").mode, 0o4755);
    assert_eq!(
        link_target(&find("usr/lib/x86_64-linux-gnu/libalpha.so.1").kind),
        Some("libalpha.so.1.0")
    );
    // A relative link that pointed from /lib into /usr/lib still reaches the same file.
    assert_eq!(
        link_target(&find("usr/lib/x86_64-linux-gnu/libalpha.so").kind),
        Some("libalpha.so.1.0")
    );
    let hl = find("usr/share/doc/alpha/README.copy");
    let readme = find("usr/share/doc/alpha/README");
    let linked = match (&hl.kind, &readme.kind) {
        (EntryKind::Hardlink { target }, _) => target.as_str() == "usr/share/doc/alpha/README",
        (_, EntryKind::Hardlink { target }) => target.as_str() == "usr/share/doc/alpha/README.copy",
        _ => false,
    };
    assert!(
        linked,
        "hard link not kept: {:?} / {:?}",
        hl.kind, readme.kind
    );
    assert!(alpha.paths.contains(&"/bin/alpha".to_string()));
    assert!(alpha.paths.contains(&"/bin".to_string()));
    assert!(alpha.control.get("postinst").is_some());
    // zstd- and gzip-compressed data.tar members (beta, usr-is-merged) were read too.
    let beta = pkgs.iter().find(|p| p.locked.name == "beta").expect("beta");
    assert!(
        beta.tree
            .entries()
            .iter()
            .any(|e| e.path.as_str() == "usr/share/beta/data")
    );
    assert!(
        alpha
            .control
            .control()
            .is_some_and(|c| c.contains("Package: alpha"))
    );

    // A second fetch reads the extraction back from the cache.
    let again = fetch(&lock, cache.path(), &NoReporter).expect("fetch again");
    assert_eq!(again[0].tree, pkgs[0].tree);
}

#[test]
fn release_gpg_fallback_and_subkey() {
    let Some(repo) = setup() else { return };
    let sub = repo.gpg.add_subkey(&repo.key);
    repo.publish(&Publish {
        sign_with: Some(&sub),
        inrelease: false,
        ..Publish::default()
    });
    let cache = tempfile::tempdir().expect("cache");
    let lock = resolve(
        &repo.request(&["beta"], repo.keyring(&repo.key)),
        cache.path(),
        &NoReporter,
    )
    .expect("resolve via Release + Release.gpg signed by a subkey");
    assert_eq!(lock.packages.len(), 3);
}

#[test]
fn tampered_packages_rejected() {
    let Some(repo) = setup() else { return };
    repo.publish(&Publish::default());
    let bin = repo.work().join("www/dists/test/main/binary-amd64");
    let orig = std::fs::read(bin.join("Packages.xz")).expect("read");
    let mut bad = orig.clone();
    let n = bad.len();
    bad[n / 2] ^= 0x55;
    std::fs::write(bin.join("Packages.xz"), &bad).expect("write");
    let cache = tempfile::tempdir().expect("cache");
    let err = resolve(
        &repo.request(&["alpha"], repo.keyring(&repo.key)),
        cache.path(),
        &NoReporter,
    )
    .expect_err("tampered index must fail");
    let msg = err.to_string();
    assert!(matches!(err, DebianError::HashMismatch { .. }), "{msg}");
    assert!(msg.contains(&sha256(&orig)), "{msg}");
    assert!(msg.contains(&sha256(&bad)), "{msg}");
    assert!(msg.contains("Packages"), "{msg}");
}

#[test]
fn altered_deb_rejected() {
    let Some(repo) = setup() else { return };
    repo.publish(&Publish::default());
    let cache = tempfile::tempdir().expect("cache");
    let lock = resolve(
        &repo.request(&["beta"], repo.keyring(&repo.key)),
        cache.path(),
        &NoReporter,
    )
    .expect("resolve");
    let deb = repo.work().join("www/pool/main/beta.deb");
    let orig = std::fs::read(&deb).expect("read");
    let mut bad = orig.clone();
    let n = bad.len();
    bad[n - 10] ^= 1;
    std::fs::write(&deb, &bad).expect("write");
    let err = fetch(&lock, cache.path(), &NoReporter).expect_err("altered deb must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("beta.deb") && msg.contains(&sha256(&orig)) && msg.contains(&sha256(&bad)),
        "{msg}"
    );
    // Nothing unverified was left in the cache: after repair the fetch succeeds.
    std::fs::write(&deb, &orig).expect("restore");
    fetch(&lock, cache.path(), &NoReporter).expect("fetch after repair");
}

#[test]
fn wrong_key_rejected() {
    let Some(repo) = setup() else { return };
    repo.publish(&Publish::default());
    let other = repo.gpg.new_key("someone else <x@strata.test>", "never");
    let cache = tempfile::tempdir().expect("cache");
    let err = resolve(
        &repo.request(&["alpha"], repo.keyring(&other)),
        cache.path(),
        &NoReporter,
    )
    .expect_err("wrong key must fail");
    assert!(matches!(err, DebianError::Signature { .. }), "{err}");
    // The built-in Debian keys do not sign this repository either.
    let mut req = repo.request(&["alpha"], PathBuf::new());
    req.keyring = None;
    let err = resolve(&req, cache.path(), &NoReporter).expect_err("debian keys must not verify");
    assert!(matches!(err, DebianError::Signature { .. }), "{err}");
}

#[test]
fn expired_release_rejected() {
    let Some(repo) = setup() else { return };
    repo.publish(&Publish {
        valid_until: Some("Sun, 02 Jan 2022 00:00:00 UTC"),
        ..Publish::default()
    });
    let cache = tempfile::tempdir().expect("cache");
    let err = resolve(
        &repo.request(&["alpha"], repo.keyring(&repo.key)),
        cache.path(),
        &NoReporter,
    )
    .expect_err("expired release must fail");
    assert!(matches!(err, DebianError::Expired { .. }), "{err}");
    assert!(err.to_string().contains("02 Jan 2022"), "{err}");
}

#[test]
fn expired_key_rejected() {
    let Some(repo) = setup() else { return };
    let short = repo
        .gpg
        .new_key("short lived <short@strata.test>", "seconds=2");
    repo.publish(&Publish {
        sign_with: Some(&short),
        ..Publish::default()
    });
    let keyring = repo.keyring(&short);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let cache = tempfile::tempdir().expect("cache");
    let err = resolve(
        &repo.request(&["alpha"], keyring),
        cache.path(),
        &NoReporter,
    )
    .expect_err("expired key must fail");
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn unsatisfiable_and_escaping_packages() {
    let Some(repo) = setup() else { return };
    repo.publish(&Publish::default());
    let cache = tempfile::tempdir().expect("cache");
    let keyring = repo.keyring(&repo.key);
    let err = resolve(
        &repo.request(&["broken"], keyring.clone()),
        cache.path(),
        &NoReporter,
    )
    .expect_err("unsatisfiable");
    let msg = err.to_string();
    assert!(
        msg.contains("broken") && msg.contains("beta (>= 3)") && msg.contains("2.0"),
        "{msg}"
    );
    let err = resolve(
        &repo.request(&["nonexistent"], keyring.clone()),
        cache.path(),
        &NoReporter,
    )
    .expect_err("unknown");
    assert!(matches!(err, DebianError::UnknownPackage { .. }), "{err}");

    let lock = resolve(&repo.request(&["evil"], keyring), cache.path(), &NoReporter)
        .expect("resolve evil");
    let err = fetch(&lock, cache.path(), &NoReporter).expect_err("escaping entry refused");
    assert!(matches!(err, DebianError::UnsafePath { .. }), "{err}");
    assert!(!Path::new("/tmp/strata-evil").exists());
}

#[test]
fn device_nodes_skipped_and_links_neutralised() {
    let Some(repo) = setup() else { return };
    repo.publish(&Publish::default());
    let cache = tempfile::tempdir().expect("cache");
    let lock = resolve(
        &repo.request(&["odd"], repo.keyring(&repo.key)),
        cache.path(),
        &NoReporter,
    )
    .expect("resolve");
    let pkgs = fetch(&lock, cache.path(), &NoReporter).expect("fetch");
    let odd = pkgs.iter().find(|p| p.locked.name == "odd").expect("odd");
    let get = |p: &str| odd.tree.entries().iter().find(|e| e.path.as_str() == p);
    assert!(get("dev/null").is_none(), "device node must be skipped");
    assert_eq!(
        link_target(&get("usr/shadow").expect("shadow").kind),
        Some("/etc/shadow")
    );
    assert_eq!(
        link_target(&get("usr/abs").expect("abs").kind),
        Some("/etc/passwd")
    );
    match &get("usr/sbin/tool2").expect("hardlink").kind {
        EntryKind::Hardlink { target } => assert_eq!(target.as_str(), "usr/sbin/tool"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(get("sbin").is_none() && get("usr/sbin/tool").is_some());
}

/// The Debian source, on this signed local repository, passes the shared source suite
/// (`strata_test_support::source_suite`): the same request twice gives the same objects and
/// cache keys, references (here a dependency cycle, alpha ⇄ beta) are closed, and an
/// unknown package is reported at the spec's `base.debian`.
#[test]
fn debian_source_passes_the_source_suite() {
    use strata_debian::{DebianInput, DebianSource};
    use strata_source::{Source, SourceContext};
    use strata_spec::Part;
    use strata_test_support::source_suite::{check_source, check_source_error};

    let Some(repo) = setup() else { return };
    repo.publish(&Publish::default());
    let keyring = repo.keyring(&repo.key);
    let work = tempfile::tempdir().expect("tempdir");
    let cache = work.path().join("cache");
    std::fs::create_dir_all(&cache).expect("cache dir");
    let session = strata_source::Session::new();
    let ctx = SourceContext::new(&cache, "amd64", &session);
    let input = |packages: &[&str], lock: &str| DebianInput {
        part: Part::Base,
        base: Some(repo.request(packages, keyring.clone())),
        user: None,
        lock_file: work.path().join(lock),
        configure: false,
        context: "strata.toml:4:1: base.debian".to_owned(),
        debconf: Vec::new(),
        debconf_base: Vec::new(),
    };
    let make = || -> Box<dyn Source> { Box::new(DebianSource::new(input(&["alpha"], "a.lock"))) };
    let resolution = check_source(&make, &ctx);
    let ids: Vec<&str> = resolution.objects.iter().map(|o| o.id.as_str()).collect();
    assert!(
        ids.iter().any(|i| i.contains("alpha")) && ids.iter().any(|i| i.contains("beta")),
        "{ids:?}"
    );

    let broken = DebianSource::new(input(&["nonexistent"], "b.lock"));
    check_source_error(
        &broken,
        &ctx,
        "strata.toml:4:1: base.debian",
        &["nonexistent"],
    );
}
