//! Several repositories per request, each signed by its own key (issue 13): two local
//! archives made by the test (packages built with `dpkg-deb`, Releases signed with two
//! throwaway `gpg` keys), served over HTTP on 127.0.0.1 or read through `file://`.
//!
//! Without `gpg` or `dpkg-deb` the tests are skipped locally and fail under `CI=true`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use strata_debian::{DebianError, NoReporter, Repo, Request, Session, fetch, resolve, resolve_in};

fn tools_present() -> bool {
    let ok = ["gpg", "dpkg-deb"]
        .iter()
        .all(|t| Command::new(t).arg("--version").output().is_ok());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "gpg or dpkg-deb missing: apt-get install gnupg dpkg-dev"
        );
        eprintln!("gpg or dpkg-deb missing; skipping");
    }
    ok
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

/// Serves `root` over HTTP on an ephemeral port of 127.0.0.1 until the process ends.
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
                let rel = line.split_whitespace().nth(1).unwrap_or("/");
                let rel = rel.trim_start_matches('/');
                let file = root.join(rel);
                let resp = match std::fs::read(&file) {
                    Ok(body) if !rel.split('/').any(|c| c == "..") => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = stream.write_all(&resp);
            });
        }
    });
    format!("http://{addr}")
}

/// A GnuPG home holding the test's keys.
struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn new(dir: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let home = dir.join("gnupg");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
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

    /// A new signing key; its fingerprint.
    fn key(&self, uid: &str) -> String {
        run(self
            .cmd()
            .args(["--quick-gen-key", uid, "ed25519", "sign", "never"]));
        let out = run(self.cmd().args(["--with-colons", "--list-keys", uid]));
        out.lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("fingerprint")
            .to_owned()
    }

    /// Exports a public key, armored or binary.
    fn export(&self, fpr: &str, to: &Path, armor: bool) {
        let mut c = self.cmd();
        if armor {
            c.arg("--armor");
        }
        let out = c.args(["--export", fpr]).output().expect("export");
        assert!(out.status.success() && !out.stdout.is_empty());
        std::fs::write(to, out.stdout).unwrap();
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
}

/// A package to publish: its control text (`Package`, `Version`, ...), built with a
/// postinst that leaves a marker.
struct Pkg {
    component: &'static str,
    control: String,
}

fn pkg(component: &'static str, name: &str, version: &str, extra: &str) -> Pkg {
    Pkg {
        component,
        control: format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@t>\n{extra}Description: test\n"
        ),
    }
}

/// One archive directory with a suite.
struct Archive {
    www: PathBuf,
    url: String,
}

impl Archive {
    fn new(dir: &Path, name: &str) -> Self {
        let www = dir.join(name);
        std::fs::create_dir_all(&www).unwrap();
        let url = serve(www.clone());
        Self { www, url }
    }

    fn file_url(&self) -> String {
        format!("file://{}", self.www.display())
    }

    /// Builds the packages and writes `dists/SUITE` signed by `key`.
    fn publish(&self, gpg: &Gpg, key: &str, suite: &str, origin: &str, pkgs: &[Pkg]) {
        use std::os::unix::fs::PermissionsExt;
        let mut components: Vec<&str> = pkgs.iter().map(|p| p.component).collect();
        components.sort();
        components.dedup();
        let dists = self.www.join("dists").join(suite);
        let mut release_files = String::new();
        for comp in &components {
            let mut index = String::new();
            for p in pkgs.iter().filter(|p| p.component == *comp) {
                let name = p
                    .control
                    .lines()
                    .next()
                    .unwrap()
                    .trim_start_matches("Package: ");
                let version = p
                    .control
                    .lines()
                    .nth(1)
                    .unwrap()
                    .trim_start_matches("Version: ");
                let root = self.www.join(format!("build/{name}-{version}"));
                let _ = std::fs::remove_dir_all(&root);
                std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
                std::fs::create_dir_all(root.join(format!("usr/share/{name}"))).unwrap();
                std::fs::write(root.join(format!("usr/share/{name}/version")), version).unwrap();
                std::fs::write(root.join("DEBIAN/control"), &p.control).unwrap();
                let postinst = root.join("DEBIAN/postinst");
                std::fs::write(
                    &postinst,
                    format!("#!/bin/sh\necho {name} {version} > /var/lib/{name}.configured\n"),
                )
                .unwrap();
                std::fs::set_permissions(&postinst, std::fs::Permissions::from_mode(0o755))
                    .unwrap();
                let rel = format!("pool/{comp}/{name}_{version}_all.deb");
                let deb = self.www.join(&rel);
                std::fs::create_dir_all(deb.parent().unwrap()).unwrap();
                run(Command::new("dpkg-deb")
                    .args(["--root-owner-group", "-Zgzip", "--build"])
                    .arg(&root)
                    .arg(&deb));
                let bytes = std::fs::read(&deb).unwrap();
                index.push_str(p.control.trim_end());
                index.push_str(&format!(
                    "\nFilename: {rel}\nSize: {}\nSHA256: {}\n\n",
                    bytes.len(),
                    sha256(&bytes)
                ));
            }
            let rel = format!("{comp}/binary-amd64/Packages");
            let path = dists.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &index).unwrap();
            release_files.push_str(&format!(
                " {} {} {rel}\n",
                sha256(index.as_bytes()),
                index.len()
            ));
        }
        let release = format!(
            "Origin: {origin}\nLabel: {origin}\nSuite: {suite}\nCodename: {suite}\nDate: Sat, 01 Jan 2022 00:00:00 UTC\nArchitectures: amd64\nComponents: {}\nSHA256:\n{release_files}",
            components.join(" ")
        );
        std::fs::write(dists.join("Release"), release).unwrap();
        gpg.clearsign(key, &dists.join("Release"), &dists.join("InRelease"));
    }
}

/// Two archives with two keys: `main` (key A, armored keyring) has `libfoo` and `apt`;
/// `vendor` (key B, binary keyring) has `vendor-tool`, which depends on `libfoo`.
struct Setup {
    dir: tempfile::TempDir,
    gpg: Gpg,
    key_a: String,
    key_b: String,
    main: Archive,
    vendor: Archive,
    keyring_a: PathBuf,
    keyring_b: PathBuf,
}

fn setup() -> Option<Setup> {
    if !tools_present() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let gpg = Gpg::new(dir.path());
    let key_a = gpg.key("main archive <main@strata.test>");
    let key_b = gpg.key("vendor archive <vendor@strata.test>");
    let keyring_a = dir.path().join("main.asc");
    let keyring_b = dir.path().join("vendor.gpg");
    gpg.export(&key_a, &keyring_a, true);
    gpg.export(&key_b, &keyring_b, false);
    let main = Archive::new(dir.path(), "main");
    let vendor = Archive::new(dir.path(), "vendor");
    main.publish(
        &gpg,
        &key_a,
        "test",
        "strata",
        &[
            pkg("main", "libfoo", "1.2-1", ""),
            pkg("main", "apt", "2.6.1", ""),
            pkg("main", "tool", "2.0-1", ""),
        ],
    );
    vendor.publish(
        &gpg,
        &key_b,
        "stable",
        "vendor",
        &[
            pkg("main", "vendor-tool", "3.1", "Depends: libfoo (>= 1.0)\n"),
            pkg("main", "tool", "1.0-1", ""),
        ],
    );
    Some(Setup {
        dir,
        gpg,
        key_a,
        key_b,
        main,
        vendor,
        keyring_a,
        keyring_b,
    })
}

impl Setup {
    fn request(&self, pkgs: &[&str], vendor_priority: i32) -> Request {
        Request {
            packages: pkgs.iter().map(|s| s.to_string()).collect(),
            suite: "test".into(),
            mirror: self.main.url.clone(),
            security_mirror: None,
            updates: false,
            components: vec!["main".into()],
            architecture: "amd64".into(),
            keyring: Some(self.keyring_a.clone()),
            recommends: false,
            essential: false,
            repos: vec![Repo {
                name: "vendor".into(),
                uri: self.vendor.url.clone(),
                suites: vec!["stable".into()],
                components: vec!["main".into()],
                keyring: Some(self.keyring_b.clone()),
                priority: vendor_priority,
                architectures: Vec::new(),
            }],
        }
    }
}

#[test]
fn a_vendor_package_depending_on_the_main_archive_resolves_fetches_and_pins_its_repository() {
    let Some(s) = setup() else { return };
    let cache = tempfile::tempdir().unwrap();
    let lock = resolve(
        &s.request(&["vendor-tool", "apt"], 500),
        cache.path(),
        &NoReporter,
    )
    .expect("resolve");
    let by_name = |n: &str| lock.packages.iter().find(|p| p.name == n).expect(n);
    let tool = by_name("vendor-tool");
    assert_eq!(tool.repo, "vendor");
    assert_eq!(tool.mirror, s.vendor.url);
    assert_eq!(tool.depends, ["libfoo"]);
    assert_eq!(by_name("libfoo").repo, "main");
    assert_eq!(by_name("libfoo").mirror, s.main.url);
    assert_eq!(lock.releases.len(), 2, "both Releases are locked");
    // The lock text records the repository of every package.
    let text = lock.to_toml().unwrap();
    assert!(text.contains("repo = \"vendor\""), "{text}");
    assert!(text.contains("repo = \"main\""), "{text}");

    let pkgs = fetch(&lock, cache.path(), &NoReporter).expect("fetch");
    let tool = pkgs
        .iter()
        .find(|p| p.locked.name == "vendor-tool")
        .unwrap();
    let postinst = tool.control.get("postinst").map(String::from_utf8_lossy);
    assert!(postinst.is_some_and(|s| s.contains("vendor-tool.configured")));

    // The image's apt reads both archives, each with its own key.
    let req = s.request(&["vendor-tool", "apt"], 500);
    let refs: Vec<&strata_debian::Package> = pkgs.iter().collect();
    let entries = strata_debian::system::generate(&refs, Some(&req)).expect("system files");
    let text_of = |path: &str| -> Option<Vec<u8>> {
        entries
            .iter()
            .find(|e| e.path.as_str() == path)
            .map(|e| match &e.kind {
                strata_fstree::EntryKind::File {
                    content: strata_fstree::Content::Inline(b),
                    ..
                } => b.to_vec(),
                other => panic!("{path}: {other:?}"),
            })
    };
    let sources = String::from_utf8(
        text_of("etc/apt/sources.list.d/vendor.sources").expect("vendor.sources"),
    )
    .unwrap();
    assert!(
        sources.contains(&format!("URIs: {}\n", s.vendor.url)),
        "{sources}"
    );
    assert!(sources.contains("Suites: stable\n"), "{sources}");
    assert!(
        sources.contains("Signed-By: /etc/apt/keyrings/vendor.gpg\n"),
        "{sources}"
    );
    assert_eq!(
        text_of("etc/apt/keyrings/vendor.gpg").unwrap(),
        std::fs::read(&s.keyring_b).unwrap()
    );
    let main =
        String::from_utf8(text_of("etc/apt/sources.list.d/debian.sources").unwrap()).unwrap();
    assert!(
        main.contains("Signed-By: /etc/apt/keyrings/main.asc\n"),
        "{main}"
    );
    assert_eq!(
        text_of("etc/apt/keyrings/main.asc").unwrap(),
        std::fs::read(&s.keyring_a).unwrap()
    );
    // apt's own check of the image's sources, against both archives, when apt is here.
    if Command::new("apt-get").arg("--version").output().is_ok() {
        apt_sees_both(&s, &sources, &main);
    }
}

/// Runs the host's apt on a private root with the generated sources and keyrings: `apt-get
/// update`, then `apt-get install --simulate` must plan the vendor package and its
/// main-archive dependency from their archives.
fn apt_sees_both(s: &Setup, vendor_sources: &str, main_sources: &str) {
    let root = s.dir.path().join("aptroot");
    for d in [
        "etc/apt/sources.list.d",
        "etc/apt/keyrings",
        "etc/apt/preferences.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(
        root.join("etc/apt/sources.list.d/vendor.sources"),
        vendor_sources.replace(
            "/etc/apt/keyrings",
            &root.join("etc/apt/keyrings").display().to_string(),
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("etc/apt/sources.list.d/debian.sources"),
        main_sources.replace(
            "/etc/apt/keyrings",
            &root.join("etc/apt/keyrings").display().to_string(),
        ),
    )
    .unwrap();
    std::fs::copy(&s.keyring_b, root.join("etc/apt/keyrings/vendor.gpg")).unwrap();
    std::fs::copy(&s.keyring_a, root.join("etc/apt/keyrings/main.asc")).unwrap();
    let apt = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.arg("-o")
            .arg(format!("Dir={}", root.display()))
            .args([
                "-o",
                "Dir::State::status=var/lib/dpkg/status",
                "-o",
                "APT::Architecture=amd64",
                "-o",
                "Debug::NoLocking=1",
                "-o",
                "Dir::Etc::trusted=/dev/null",
                "-o",
                "Dir::Etc::TrustedParts=/nonexistent",
            ])
            .args(args);
        c
    };
    run(&mut apt(&["update"]));
    let plan = run(&mut apt(&["install", "--simulate", "vendor-tool"]));
    assert!(
        plan.contains("Inst vendor-tool (3.1 vendor:stable"),
        "{plan}"
    );
    assert!(plan.contains("Inst libfoo (1.2-1 strata:test"), "{plan}");
}

#[test]
fn a_release_signed_by_another_key_is_refused_naming_the_repository_and_key() {
    let Some(s) = setup() else { return };
    let cache = tempfile::tempdir().unwrap();
    let mut req = s.request(&["vendor-tool"], 500);
    // The vendor's Release is signed with key B; give the repository key A.
    req.repos[0].keyring = Some(s.keyring_a.clone());
    let err = resolve(&req, cache.path(), &NoReporter).expect_err("wrong key");
    let msg = err.to_string();
    assert!(matches!(err, DebianError::Untrusted { .. }), "{msg}");
    assert!(msg.contains("repository `vendor`"), "{msg}");
    assert!(msg.contains(&s.vendor.url), "{msg}");
    assert!(msg.contains(&s.key_a), "the keyring's key: {msg}");
    let cause = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(cause.contains("unknown key"), "{cause}");
    assert!(
        cause
            .to_ascii_uppercase()
            .contains(&s.key_b[s.key_b.len() - 16..]),
        "the signer: {cause}"
    );
    // Without a keyring the repository is refused before anything is fetched.
    req.repos[0].keyring = None;
    let err = resolve(&req, cache.path(), &NoReporter).expect_err("no keyring");
    assert!(err.to_string().contains("`vendor`"), "{err}");
}

#[test]
fn pin_priority_beats_a_higher_version_and_a_tie_names_both_repositories() {
    let Some(s) = setup() else { return };
    let cache = tempfile::tempdir().unwrap();
    let pick = |priority: i32| {
        let lock =
            resolve(&s.request(&["tool"], priority), cache.path(), &NoReporter).expect("resolve");
        let t = lock
            .packages
            .iter()
            .find(|p| p.name == "tool")
            .unwrap()
            .clone();
        (t.version, t.repo)
    };
    assert_eq!(
        pick(500),
        ("2.0-1".into(), "main".into()),
        "highest version at equal pins"
    );
    assert_eq!(
        pick(990),
        ("1.0-1".into(), "vendor".into()),
        "the higher pin wins"
    );
    assert_eq!(pick(100), ("2.0-1".into(), "main".into()));

    // The same version with other contents in both, at equal pins: an error naming both.
    s.vendor.publish(
        &s.gpg,
        &s.key_b,
        "stable",
        "vendor",
        &[pkg("main", "tool", "2.0-1", "Depends: libfoo\n")],
    );
    let err = resolve(&s.request(&["tool"], 500), cache.path(), &NoReporter).expect_err("tie");
    let msg = err.to_string();
    assert!(matches!(err, DebianError::Ambiguous { .. }), "{msg}");
    assert!(
        msg.contains("`main`") && msg.contains("`vendor`") && msg.contains("2.0-1"),
        "{msg}"
    );
}

#[test]
fn each_session_starts_empty_so_a_republished_archive_is_seen() {
    let Some(s) = setup() else { return };
    let cache = tempfile::tempdir().unwrap();
    let version = |session: &Session| {
        let lock = resolve_in(
            session,
            &s.request(&["libfoo"], 500),
            cache.path(),
            &NoReporter,
        )
        .expect("resolve");
        lock.packages[0].version.clone()
    };
    let first = Session::new();
    assert_eq!(version(&first), "1.2-1");
    s.main.publish(
        &s.gpg,
        &s.key_a,
        "test",
        "strata",
        &[pkg("main", "libfoo", "1.3-1", "")],
    );
    // One session keeps what it verified (the user half resolves against the same Release) ...
    assert_eq!(version(&first), "1.2-1");
    // ... and a new one (the next build) sees the archive as it is now.
    assert_eq!(version(&Session::new()), "1.3-1");
}

#[test]
fn an_ubuntu_shaped_archive_through_a_file_mirror() {
    let Some(s) = setup() else { return };
    let ubuntu = Archive::new(s.dir.path(), "ubuntu");
    ubuntu.publish(
        &s.gpg,
        &s.key_a,
        "jammy",
        "Ubuntu",
        &[
            pkg("main", "libc-bin", "2.35-0ubuntu3", ""),
            pkg(
                "universe",
                "bat",
                "0.19.0-1ubuntu0.1",
                "Depends: libc-bin (>= 2.34)\n",
            ),
        ],
    );
    let cache = tempfile::tempdir().unwrap();
    let req = Request {
        packages: vec!["bat".into()],
        suite: "jammy".into(),
        mirror: ubuntu.file_url(),
        security_mirror: None,
        updates: false,
        components: vec!["main".into(), "universe".into()],
        architecture: "amd64".into(),
        keyring: Some(s.keyring_a.clone()),
        recommends: false,
        essential: false,
        repos: Vec::new(),
    };
    let lock = resolve(&req, cache.path(), &NoReporter).expect("resolve jammy");
    let names: Vec<&str> = lock.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["bat", "libc-bin"]);
    assert!(lock.packages[0].filename.starts_with("pool/universe/"));
    assert_eq!(lock.releases[0].suite, "jammy");
    let pkgs = fetch(&lock, cache.path(), &NoReporter).expect("fetch from file://");
    assert_eq!(pkgs.len(), 2);
    // A missing file mirror says which file.
    let req = Request {
        mirror: format!("file://{}/nowhere", s.dir.path().display()),
        ..req
    };
    let err = resolve(&req, cache.path(), &NoReporter).expect_err("no archive there");
    assert!(err.to_string().contains("nowhere"), "{err}");
    let _ = (&s.key_b, &s.keyring_b);
}

/// Counts what a source reports.
#[derive(Default)]
struct Counting {
    started: std::sync::Mutex<Vec<(String, u64)>>,
    done: std::sync::atomic::AtomicU64,
}

impl strata_source::Reporter for Counting {
    fn items_started(&self, what: &str, total: u64) {
        self.started.lock().unwrap().push((what.to_owned(), total));
    }
    fn item_done(&self, _item: &str) {
        self.done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn the_source_reports_packages_fetched_and_keeps_its_memos_in_the_builds_session() {
    use strata_source::Source;
    let Some(s) = setup() else { return };
    let cache = tempfile::tempdir().unwrap();
    let input = strata_debian::DebianInput {
        part: strata_spec::Part::Base,
        base: Some(s.request(&["vendor-tool"], 500)),
        user: None,
        lock_file: s.dir.path().join("no.lock"),
        configure: false,
        context: "strata.toml:1:1: base.debian".into(),
        debconf: Vec::new(),
        debconf_base: Vec::new(),
    };
    let source = strata_debian::DebianSource::new(input);
    let session = strata_source::Session::new();
    let reporter = Counting::default();
    let ctx = strata_source::SourceContext {
        reporter: &reporter,
        ..strata_source::SourceContext::new(cache.path(), "amd64", &session)
    };
    let res = source.resolve(&ctx).expect("resolve");
    // vendor-tool and libfoo, and the merged-/usr object.
    assert_eq!(res.objects.len(), 3);
    assert_eq!(
        *reporter.started.lock().unwrap(),
        [("Debian packages fetched".to_owned(), 2)]
    );
    assert_eq!(reporter.done.load(std::sync::atomic::Ordering::SeqCst), 2);

    // The same session resolves nothing again: republished archives are not read ...
    s.main.publish(
        &s.gpg,
        &s.key_a,
        "test",
        "strata",
        &[pkg("main", "libfoo", "9.0", "")],
    );
    let again = source.resolve(&ctx).expect("resolve again");
    assert_eq!(again.objects, res.objects);
    // ... while a new build's session sees them.
    let fresh = strata_source::Session::new();
    let ctx = strata_source::SourceContext {
        session: &fresh,
        ..ctx
    };
    let fresh_res = source.resolve(&ctx).expect("resolve in a new session");
    let ids: Vec<&str> = fresh_res.objects.iter().map(|o| o.id.as_str()).collect();
    assert!(ids.contains(&"deb:libfoo_9.0_all"), "{ids:?}");
    assert!(res.objects.iter().any(|o| o.id == "deb:libfoo_1.2-1_all"));
}
