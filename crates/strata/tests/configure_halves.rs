//! A configure layer per half (issue 12), end to end: the base half is the real Debian mirror's
//! essential set plus test packages, the user half test packages; the test packages are built
//! by the test with `dpkg-deb`, published in a signed local repository served on 127.0.0.1 as
//! the security suite (`bookworm-security`), and their maintainer scripts record every run in
//! `/var/lib/strata-test/runs`, so the test sees exactly which scripts ran.
//!
//! Needs gpg, dpkg-deb and podman (a missing one fails the test under `CI=true`).

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::{Digest, Sha256};

/// Serves `root` over HTTP on an ephemeral port of 127.0.0.1 until the process ends.
fn serve(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
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
                let resp = if !rel.split('/').any(|c| c == "..") && file.is_file() {
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

fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home).args([
        "--batch",
        "--quiet",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]);
    c
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A test package: control fields, maintainer scripts, files.
struct Pkg {
    name: &'static str,
    fields: &'static str,
    scripts: Vec<(&'static str, String)>,
    files: Vec<(&'static str, &'static str)>,
}

/// A script that appends `line` to the runs file (then runs `body`).
fn recording(line: &str, body: &str) -> String {
    format!(
        "#!/bin/sh\nset -e\nmkdir -p /var/lib/strata-test\n{body}\necho \"{line}\" >>/var/lib/strata-test/runs\n"
    )
}

fn packages() -> Vec<Pkg> {
    vec![
        Pkg {
            name: "strata-base-probe",
            fields: "",
            scripts: vec![
                (
                    "postinst",
                    "#!/bin/sh\nset -e\nmkdir -p /var/lib/strata-test\ncase \"$1\" in\n\
                     configure) echo \"base-probe configure\" >>/var/lib/strata-test/runs; \
                     touch /var/lib/strata-test/base-configured ;;\n\
                     triggered) echo \"base-probe triggered $2\" >>/var/lib/strata-test/runs ;;\n\
                     esac\n"
                        .to_owned(),
                ),
                (
                    "triggers",
                    "interest /usr/share/strata-test-hooks\ninterest-noawait strata-test-named\n"
                        .to_owned(),
                ),
            ],
            files: vec![("usr/share/strata-test-hooks/base", "base\n")],
        },
        Pkg {
            name: "strata-user-probe",
            fields: "Depends: strata-base-probe\n",
            scripts: vec![
                ("preinst", recording("user-probe preinst", "")),
                (
                    "postinst",
                    recording(
                        "user-probe configure",
                        "[ -e /var/lib/strata-test/base-configured ] || \
                         { echo 'strata-base-probe is not configured' >&2; exit 1; }",
                    ),
                ),
            ],
            files: vec![("usr/share/strata-test-hooks/user", "user\n")],
        },
        Pkg {
            name: "strata-pre-a",
            fields: "Pre-Depends: strata-pre-b\n",
            scripts: vec![
                (
                    "preinst",
                    recording(
                        "pre-a preinst",
                        "[ -e /var/lib/strata-test/pre-b-configured ] || \
                         { echo 'strata-pre-b is not configured before strata-pre-a preinst' >&2; exit 1; }",
                    ),
                ),
                ("postinst", recording("pre-a configure", "")),
            ],
            files: vec![("usr/share/doc/strata-pre-a/README", "a\n")],
        },
        Pkg {
            name: "strata-pre-b",
            fields: "",
            scripts: vec![(
                "postinst",
                recording(
                    "pre-b configure",
                    "touch /var/lib/strata-test/pre-b-configured",
                ),
            )],
            files: vec![("usr/share/doc/strata-pre-b/README", "b\n")],
        },
        Pkg {
            name: "strata-user-other",
            fields: "",
            scripts: vec![
                ("postinst", recording("user-other configure", "")),
                // A named trigger of a base package, as a Python module package activates
                // python3's byte-compilation.
                (
                    "triggers",
                    "activate-noawait strata-test-named\n".to_owned(),
                ),
            ],
            files: vec![("usr/share/doc/strata-user-other/README", "o\n")],
        },
    ]
}

/// Builds the packages, publishes them as a signed `bookworm-security` suite and returns the
/// repository's URL and a keyring directory (Debian's keys and the test key).
fn publish(dir: &Path) -> (String, PathBuf) {
    let home = dir.join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let uid = "strata halves test <halves@strata.test>";
    run_ok(gpg(&home).args(["--quick-gen-key", uid, "ed25519", "sign", "never"]));
    let www = dir.join("www");
    let dists = www.join("dists/bookworm-security");
    let bin = dists.join("main/binary-amd64");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(www.join("pool")).unwrap();
    let mut index = String::new();
    for p in packages() {
        let root = dir.join(format!("build-{}", p.name));
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        let control = format!(
            "Package: {}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\n{}Description: test\n",
            p.name, p.fields
        );
        std::fs::write(root.join("DEBIAN/control"), &control).unwrap();
        for (name, text) in &p.scripts {
            let path = root.join("DEBIAN").join(name);
            std::fs::write(&path, text).unwrap();
            let mode = if *name == "triggers" { 0o644 } else { 0o755 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        for (path, text) in &p.files {
            let f = root.join(path);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, text).unwrap();
        }
        // dpkg --audit wants the md5sums a Debian package build writes.
        run_ok(
            Command::new("sh")
                .arg("-c")
                .arg("find usr -type f | sort | xargs md5sum >DEBIAN/md5sums")
                .current_dir(&root),
        );
        let deb = dir.join(format!("{}.deb", p.name));
        run_ok(
            Command::new("dpkg-deb")
                .args(["--root-owner-group", "-Zxz", "--build"])
                .arg(&root)
                .arg(&deb),
        );
        let bytes = std::fs::read(&deb).unwrap();
        let rel = format!("pool/{}.deb", p.name);
        std::fs::write(www.join(&rel), &bytes).unwrap();
        index.push_str(control.trim_end());
        index.push_str(&format!(
            "\nFilename: {rel}\nSize: {}\nSHA256: {}\n\n",
            bytes.len(),
            sha256(&bytes)
        ));
    }
    std::fs::write(bin.join("Packages"), &index).unwrap();
    let release = format!(
        "Origin: strata\nLabel: strata\nSuite: bookworm-security\nCodename: bookworm-security\n\
         Date: Sat, 01 Jan 2022 00:00:00 UTC\nArchitectures: amd64 all\nComponents: main\n\
         SHA256:\n {} {} main/binary-amd64/Packages\n",
        sha256(index.as_bytes()),
        index.len()
    );
    std::fs::write(dists.join("Release"), &release).unwrap();
    run_ok(
        gpg(&home)
            .args([
                "--digest-algo",
                "SHA256",
                "--local-user",
                uid,
                "--clearsign",
                "--output",
            ])
            .arg(dists.join("InRelease"))
            .arg(dists.join("Release")),
    );
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let exported = run_ok(gpg(&home).args(["--export", uid]));
    std::fs::write(keys.join("test.gpg"), exported.stdout).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../strata-debian/keys/debian-archive-keyring.gpg"),
        keys.join("debian.gpg"),
    )
    .unwrap();
    (serve(www), keys)
}

fn spec(name: &str, url: &str, user: &[&str]) -> String {
    let user: Vec<String> = user.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "[image]\nname = \"{name}\"\n\n[base]\ndebian = {{ packages = [\"strata-base-probe\"], \
         security_mirror = \"{url}\", keyring = \"keys\" }}\n\n[user]\ndebian = {{ packages = [{}] }}\n",
        user.join(", ")
    )
}

/// `strata build` of the spec to `dest` with `args`; the `--json` result.
fn build(work: &Work, dest: &str, args: &[&str]) -> Build {
    let o = run_ok(
        work.strata_debian()
            .arg("build")
            .arg(work.spec())
            .arg("--output")
            .arg(dest)
            .arg("--json")
            .args(args),
    );
    Build {
        json: serde_json::from_slice(&o.stdout).expect("build --json output"),
    }
}

fn layer<'a>(b: &'a Build, part: &str) -> &'a serde_json::Value {
    b.layers()
        .iter()
        .find(|l| l["part"] == part)
        .unwrap_or_else(|| panic!("no {part} layer in {:?}", b.layers()))
}

fn parts(b: &Build) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in b.layers() {
        let p = l["part"].as_str().unwrap().to_owned();
        if out.last() != Some(&p) {
            out.push(p);
        }
    }
    out
}

/// The runs file of a docker-archive, read in podman.
fn runs(archive: &Path, b: &Build) -> Vec<String> {
    runs_then(archive, b, "")
}

/// [`runs`], then the output of the shell command `then`.
fn runs_then(archive: &Path, b: &Build, then: &str) -> Vec<String> {
    podman_load(archive);
    let image = LoadedImage {
        tool: "podman",
        reference: format!("localhost/{}", b.reference()),
    };
    let o = run_ok(
        podman_run()
            .args(["--network=none", "--user", "root"])
            .arg(&image.reference)
            .args(["sh", "-c"])
            .arg(format!(
                "cat /var/lib/strata-test/runs; dpkg --audit; \
                 dpkg-query -W -f '${{db:Status-Abbrev}}\\n' | sort -u; {then}"
            )),
    );
    stdout(&o).lines().map(str::to_owned).collect()
}

#[test]
fn each_half_is_configured_once_into_its_own_layer() {
    if !require(&["gpg", "dpkg-deb", "podman"]) {
        return;
    }
    let work = Work::new();
    let (url, keys) = publish(work.root());
    std::fs::rename(&keys, work.spec_dir().join("keys")).unwrap();
    let name = unique_name("deb-halves");

    // One spec to an OCI layout (gzip), a docker-archive (uncompressed), zstd: the scripts of
    // each half run once, in the first build.
    work.write_spec(&spec(&name, &url, &["strata-user-probe"]));
    let oci = format!("oci:{}", work.out("oci").display());
    let first = build(&work, &oci, &[]);
    assert_eq!(
        parts(&first),
        ["base", "base-configure", "user", "user-configure"],
        "layer order (no account, so no customisation layer)"
    );
    assert_eq!(layer(&first, "base-configure")["cached"], false);
    assert_eq!(layer(&first, "user-configure")["cached"], false);
    let archive = work.out("a.tar");
    let plain = build(&work, &format!("docker-archive:{}", archive.display()), &[]);
    let zstd = build(
        &work,
        &format!("oci:{}", work.out("zstd").display()),
        &["--compression", "zstd"],
    );
    for (b, what) in [(&plain, "docker-archive"), (&zstd, "zstd")] {
        for part in ["base-configure", "user-configure"] {
            assert_eq!(layer(b, part)["cached"], true, "{what}: {part} ran again");
            assert_eq!(
                layer(b, part)["diff_id"],
                layer(&first, part)["diff_id"],
                "{what}: {part} content"
            );
        }
    }
    assert_eq!(plain.json["config_digest"], first.json["config_digest"]);
    assert_eq!(zstd.json["config_digest"], first.json["config_digest"]);
    // dpkg's trigger interests are in place, and dpkg in the image acts on them: a file
    // trigger and a named trigger activated after the build reach the base package.
    let mut lines = runs_then(
        &archive,
        &plain,
        "echo ==; cat /var/lib/dpkg/triggers/File /var/lib/dpkg/triggers/strata-test-named; \
         dpkg-trigger --no-await /usr/share/strata-test-hooks/base; dpkg --triggers-only -a; \
         dpkg-trigger --no-await strata-test-named; dpkg --triggers-only -a; \
         dpkg --audit; echo ==; tail -n 2 /var/lib/strata-test/runs",
    );
    let at = lines.iter().position(|l| l == "==").unwrap();
    let after: Vec<String> = lines.drain(at..).collect();
    let sep = after.iter().rposition(|l| l == "==").unwrap();
    let state: Vec<&str> = after[1..sep]
        .iter()
        .map(String::as_str)
        .filter(|l| !l.starts_with("Processing triggers for "))
        .collect();
    assert!(
        state.contains(&"/usr/share/strata-test-hooks strata-base-probe")
            && state.last() == Some(&"strata-base-probe/noawait"),
        "dpkg's trigger interests (triggers/File, then triggers/strata-test-named; dpkg \
         --audit clean): {after:?}"
    );
    let mut later: Vec<&str> = after[sep + 1..].iter().map(String::as_str).collect();
    later.sort();
    assert_eq!(
        later,
        [
            "base-probe triggered /usr/share/strata-test-hooks",
            "base-probe triggered strata-test-named"
        ],
        "triggers activated in the image run: {after:?}"
    );
    assert_eq!(
        lines[..2],
        ["base-probe configure", "user-probe preinst"],
        "{lines:?}"
    );
    lines.sort();
    assert_eq!(
        lines,
        [
            "base-probe configure",
            "base-probe triggered /usr/share/strata-test-hooks",
            "ii ",
            "user-probe configure",
            "user-probe preinst",
        ],
        "a user package's file activates the base package's file trigger; dpkg is clean"
    );

    // A dotfile in [user] (tree content) goes above the user configure layer: adding it,
    // then changing it, runs no script and leaves both configure layers and the image name.
    let dotfiles = work.spec_dir().join("dotfiles");
    std::fs::create_dir_all(&dotfiles).unwrap();
    std::fs::write(dotfiles.join(".probe-rc"), "first\n").unwrap();
    let dotted = format!(
        "{}tree = [{{ src = \"dotfiles/.probe-rc\", dest = \"/root/.probe-rc\", mode = 0o644 }}]\n",
        spec(&name, &url, &["strata-user-probe"])
    );
    work.write_spec(&dotted);
    let with_file = build(&work, &oci, &[]);
    std::fs::write(dotfiles.join(".probe-rc"), "second\n").unwrap();
    let archive = work.out("dot.tar");
    let changed = build(&work, &format!("docker-archive:{}", archive.display()), &[]);
    assert_eq!(
        parts(&changed),
        [
            "base",
            "base-configure",
            "user",
            "user-configure",
            "user-content"
        ],
        "the user half's files lie above its configure layer"
    );
    for b in [&with_file, &changed] {
        for part in ["base-configure", "user-configure"] {
            assert_eq!(layer(b, part)["cached"], true, "a dotfile re-ran {part}");
            assert_eq!(
                layer(b, part)["diff_id"],
                layer(&first, part)["diff_id"],
                "a dotfile changed {part}"
            );
        }
        assert_eq!(b.name(), first.name(), "the image name is the base's");
    }
    assert_eq!(
        layer(&with_file, "base-configure")["digest"],
        layer(&first, "base-configure")["digest"],
        "one base configure blob"
    );
    assert_ne!(
        layer(&changed, "user-content")["diff_id"],
        layer(&with_file, "user-content")["diff_id"]
    );
    let mut dotted_runs = runs_then(&archive, &changed, "cat /root/.probe-rc");
    assert_eq!(
        dotted_runs.pop().as_deref(),
        Some("second"),
        "the changed dotfile is in the image"
    );
    dotted_runs.sort();
    assert_eq!(dotted_runs, lines, "a dotfile ran a script");

    // Add packages to [user]: no base script runs, the base blob and the image name stay; a
    // Pre-Depends is configured before the preinst that needs it.
    work.write_spec(&spec(&name, &url, &["strata-user-probe", "strata-pre-a"]));
    let archive = work.out("b.tar");
    let more = build(&work, &format!("docker-archive:{}", archive.display()), &[]);
    assert_eq!(layer(&more, "base-configure")["cached"], true);
    assert_eq!(
        layer(&more, "base-configure")["digest"],
        layer(&plain, "base-configure")["digest"]
    );
    assert_eq!(layer(&more, "user-configure")["cached"], false);
    assert_eq!(more.name(), first.name(), "the image name is the base's");
    let lines = runs(&archive, &more);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("base-probe configure"))
            .count(),
        1,
        "{lines:?}"
    );
    let at = |s: &str| {
        lines
            .iter()
            .position(|l| l == s)
            .unwrap_or_else(|| panic!("no `{s}` in {lines:?}"))
    };
    assert!(at("pre-b configure") < at("pre-a preinst"), "{lines:?}");
    assert!(
        at("user-probe preinst") < at("user-probe configure"),
        "{lines:?}"
    );
    assert!(
        at("base-probe configure") < at("user-probe configure"),
        "{lines:?}"
    );
    at("pre-a configure");
    at("base-probe triggered /usr/share/strata-test-hooks");
    assert_eq!(lines.last().map(String::as_str), Some("ii "), "{lines:?}");

    // Another [user] half over the same base shares its configure blob.
    work.write_spec(&spec(&name, &url, &["strata-user-other"]));
    let archive = work.out("other.tar");
    let other = build(&work, &format!("docker-archive:{}", archive.display()), &[]);
    let lines = runs(&archive, &other);
    assert!(
        lines
            .iter()
            .any(|l| l == "base-probe triggered strata-test-named"),
        "a user package's `activate` reaches the base package's named trigger: {lines:?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("ii "), "{lines:?}");
    assert_eq!(layer(&other, "base-configure")["cached"], true);
    assert_eq!(
        layer(&other, "base-configure")["diff_id"],
        layer(&first, "base-configure")["diff_id"],
        "two user halves, one base configure layer"
    );
    assert_eq!(
        layer(&other, "base-configure")["digest"],
        layer(&plain, "base-configure")["digest"],
        "two user halves, one base configure blob"
    );
    assert_ne!(
        layer(&other, "user-configure")["diff_id"],
        layer(&first, "user-configure")["diff_id"]
    );
    assert_eq!(other.name(), first.name());

    // The user configure steps ran over the configured base kept unpacked in the store (only
    // the user packages unpacked for each run), and that gives the layer that unpacking the
    // whole image gives.
    let kept = |store: &Path| -> Vec<String> {
        let out = run_ok(Command::new("find").arg(store).args([
            "-mindepth",
            "1",
            "-maxdepth",
            "4",
            "-type",
            "d",
            "-path",
            "*/rootfs/layers-*",
        ]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(kept(&work.store()).len(), 1, "one kept configured base");
    let whole = work.out("store-whole");
    let o = run_ok(
        Command::new(strata_bin())
            .arg("--store")
            .arg(&whole)
            .env("STRATA_DEBIAN_CACHE", shared_debian_cache())
            .env("STRATA_CONFIGURE_UNPACK_ALL", "1")
            .env_remove("SOURCE_DATE_EPOCH")
            .arg("build")
            .arg(work.spec())
            .arg("--output")
            .arg(format!("oci:{}", work.out("whole-oci").display()))
            .arg("--json"),
    );
    let unpacked = Build {
        json: serde_json::from_slice(&o.stdout).expect("build --json output"),
    };
    assert!(
        kept(&whole).is_empty(),
        "the whole image was unpacked instead"
    );
    assert_eq!(
        layer(&unpacked, "user-configure")["diff_id"],
        layer(&other, "user-configure")["diff_id"],
        "over the kept base or over the whole image: one user configure layer"
    );
    let diff_ids = |b: &Build| -> Vec<serde_json::Value> {
        b.layers().iter().map(|l| l["diff_id"].clone()).collect()
    };
    assert_eq!(diff_ids(&unpacked), diff_ids(&other));

    // The base half's run leaves the configured base it unpacked anyway (the first user half
    // then unpacks only its own packages): a store whose one build has no user packages holds
    // it, under the key the user half looks for, and it is what unpacking the image's layers
    // gives (the first store's kept base, removed and unpacked again by a new user half's run).
    let snapshot = |dir: &str| -> String {
        let o = run_ok(
            Command::new("sh")
                .arg("-ec")
                .arg(
                    "cd \"$1\"; find . -mindepth 1 -printf '%P %y %m %U %G %s %T@ %l\\n'; \
             find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum",
                )
                .args(["sh", dir]),
        );
        stdout(&o)
    };
    let base_only = work.out("store-base");
    work.write_spec(&spec(&name, &url, &[]));
    let o = run_ok(
        Command::new(strata_bin())
            .arg("--store")
            .arg(&base_only)
            .env("STRATA_DEBIAN_CACHE", shared_debian_cache())
            .env_remove("SOURCE_DATE_EPOCH")
            .arg("build")
            .arg(work.spec())
            .arg("--output")
            .arg(format!("oci:{}", work.out("base-oci").display())),
    );
    let left = kept(&base_only);
    assert_eq!(
        left.len(),
        1,
        "the base half's run kept its root file system: {}",
        stderr(&o)
    );
    let first_kept = kept(&work.store()).remove(0);
    assert_eq!(
        Path::new(&left[0]).file_name(),
        Path::new(&first_kept).file_name(),
        "the key the user half looks for"
    );
    let left_by_base = snapshot(&left[0]);
    run_ok(Command::new("rm").arg("-rf").arg(&first_kept));
    work.write_spec(&spec(
        &name,
        &url,
        &["strata-user-probe", "strata-user-other"],
    ));
    build(&work, &format!("oci:{}", work.out("both").display()), &[]);
    let unpacked = snapshot(&first_kept);
    let differ: Vec<&str> = {
        let (a, b): (BTreeSet<&str>, BTreeSet<&str>) =
            (left_by_base.lines().collect(), unpacked.lines().collect());
        a.symmetric_difference(&b).copied().collect()
    };
    assert!(
        differ.is_empty() && !unpacked.is_empty(),
        "the kept base equals an unpack of the image's base layers; these differ: {differ:#?}"
    );
}
