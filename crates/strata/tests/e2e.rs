//! End-to-end tests: the real `strata` binary builds images from small specs, and tools no one
//! here wrote (skopeo, umoci, podman, docker, coreutils, gzip, zstd) check the results.
//!
//! Every test has its own temp directory and store, so they run in parallel. Tests that need an
//! external tool fail when it is missing: `scripts/test` installs them.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::*;
use serde_json::Value;

const COMPRESSIONS: [&str; 3] = ["gzip", "zstd", "none"];

/// Podman with the settings this machine needs.
fn podman_run(image: &str, args: &[&str]) -> std::process::Output {
    run_ok(
        strata_test_support::podman_run()
            .args(["--network=none", image])
            .args(args),
    )
}

/// Copies the host's static busybox into `spec/bb/bin/busybox` with an `sh` symlink.
fn add_busybox(work: &Work) {
    let host = Path::new("/bin/busybox");
    assert!(
        host.exists(),
        "/bin/busybox is missing; scripts/test installs busybox-static"
    );
    let bytes = fs::read(host).expect("read /bin/busybox");
    work.file("bb/bin/busybox", bytes, 0o755);
    work.symlink("bb/bin/sh", "busybox");
}

/// Deterministic pseudo-random bytes (big enough to span several compression chunks).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Half random, half repetitive, so compressors have something to do.
        if (out.len() / 4096) % 2 == 0 {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            out.extend_from_slice(b"strata! ");
        }
    }
    out.truncate(len);
    out
}

/// Reads a JSON blob from an OCI layout.
fn layout_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = dir.join("blobs/sha256").join(hex);
    fs::read(&path).unwrap_or_else(|e| panic!("read blob {}: {e}", path.display()))
}

fn layout_json(dir: &Path, digest: &str) -> Value {
    serde_json::from_slice(&layout_blob(dir, digest)).expect("blob is JSON")
}

fn all_cached(build: &Build) -> Vec<bool> {
    build
        .layers()
        .iter()
        .map(|l| {
            l["cached"]
                .as_bool()
                .unwrap_or_else(|| panic!("layer has no boolean `cached`: {l}"))
        })
        .collect()
}

fn objects(layer: &Value) -> Vec<String> {
    layer["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("layer has no `objects` array: {layer}"))
        .iter()
        .map(|o| o.as_str().expect("object name is a string").to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// skopeo

#[test]
fn skopeo_inspects_and_copies_oci_layout() {
    if !require(&["skopeo"]) {
        return;
    }
    let work = Work::new();
    work.file("files/a.txt", "alpha\n", 0o644);
    work.file("files/sub/b.txt", "beta\n", 0o644);
    work.file("tool", "#!/bin/sh\n", 0o755);
    work.file("home/.rc", "rc\n", 0o600);
    let spec = r#"
[image]
name = "strata-e2e/skopeo"
title = "skopeo test"

[base]
tree = [
  { src = "files", dest = "/srv/files" },
  { src = "tool", dest = "/usr/bin/tool" },
]

[user]
tree = [ { src = "home", dest = "/home/u", uid = 1000, gid = 1000 } ]

[config]
labels = { "org.example.e2e" = "yes" }
"#;
    work.write_spec(spec);

    for compression in COMPRESSIONS {
        let out = work.out(&format!("oci-{compression}"));
        let dest = format!("oci:{}", out.display());
        let build = work.build(&dest, &["--compression", compression]);
        let image = format!("oci:{}:{}", out.display(), build.tag());
        let inspected = json_stdout(&run_ok(Command::new("skopeo").args(["inspect", &image])));

        assert_eq!(
            inspected["Digest"].as_str(),
            Some(build.digest()),
            "skopeo sees another manifest digest than strata printed ({compression})"
        );
        assert_eq!(
            inspected["Architecture"].as_str(),
            Some(host_oci_arch()),
            "architecture defaults to the host's ({compression})"
        );
        assert_eq!(inspected["Os"].as_str(), Some("linux"));
        let skopeo_layers: Vec<&str> = inspected["Layers"]
            .as_array()
            .expect("skopeo Layers")
            .iter()
            .map(|l| l.as_str().expect("layer digest"))
            .collect();
        let strata_layers: Vec<&str> = build
            .layers()
            .iter()
            .map(|l| l["digest"].as_str().expect("digest"))
            .collect();
        assert_eq!(
            skopeo_layers.len(),
            3,
            "three tree entries give three layers ({compression}): {inspected:#}"
        );
        assert_eq!(
            skopeo_layers, strata_layers,
            "skopeo's layers and strata's --json layers differ ({compression})"
        );
        let want_type = match compression {
            "gzip" => "application/vnd.oci.image.layer.v1.tar+gzip",
            "zstd" => "application/vnd.oci.image.layer.v1.tar+zstd",
            _ => "application/vnd.oci.image.layer.v1.tar",
        };
        let raw = json_stdout(&run_ok(
            Command::new("skopeo").args(["inspect", "--raw", &image]),
        ));
        let raw_layers = raw["layers"].as_array().expect("manifest layers");
        assert_eq!(raw_layers.len(), 3, "raw manifest layers: {raw:#}");
        for l in raw_layers {
            assert_eq!(
                l["mediaType"].as_str(),
                Some(want_type),
                "layer media type for --compression {compression}"
            );
        }
        assert_eq!(
            inspected["Labels"]["org.example.e2e"].as_str(),
            Some("yes"),
            "config labels reach the image config"
        );

        // skopeo copy re-reads every blob and checks it against its digest.
        let copy = work.out(&format!("copy-{compression}"));
        run_ok(Command::new("skopeo").args([
            "copy",
            "--quiet",
            &image,
            &format!("dir:{}", copy.display()),
        ]));
    }

    // An explicit architecture is what skopeo reports.
    let arm = spec.replace(
        "title = \"skopeo test\"",
        "title = \"skopeo test\"\narchitecture = \"arm64\"",
    );
    let arm_spec = work.spec_dir().join("arm.toml");
    fs::write(&arm_spec, arm).expect("write arm.toml");
    let out = work.out("oci-arm64");
    let build = work.build_spec(&arm_spec, &format!("oci:{}", out.display()), &[]);
    let inspected =
        json_stdout(&run_ok(Command::new("skopeo").args([
            "inspect",
            &format!("oci:{}:{}", out.display(), build.tag()),
        ])));
    assert_eq!(
        inspected["Architecture"].as_str(),
        Some("arm64"),
        "image.architecture = \"arm64\" is the image's architecture"
    );
}

// ---------------------------------------------------------------------------------------------
// umoci: the unpacked rootfs equals the spec's trees

const LONG_DIR: &str = "a-directory-name-that-is-quite-long-0123456789-0123456789-012";
const LONG_FILE: &str = "a-file-name-that-is-also-quite-long-0123456789-0123456789-0.txt";

/// Writes the rich fixture of the umoci test and returns the spec text.
fn write_rich_fixture(work: &Work) -> &'static str {
    work.dir("app", 0o755);
    work.file("app/bin/tool", "tool\n", 0o4755);
    work.file("app/bin/sgid", "sgid\n", 0o2750);
    work.dir("app/bin", 0o755);
    work.file("app/secret/key", "key\n", 0o600);
    work.dir("app/secret", 0o700);
    work.dir("app/shared", 0o1777);
    work.file("app/data/a.txt", "alpha\n", 0o644);
    work.hardlink("app/data/hard.txt", "app/data/a.txt");
    work.dir("app/data", 0o755);
    work.symlink("app/link-rel", "data/a.txt");
    work.symlink("app/link-abs", "/etc/motd");
    work.symlink("app/dangling", "nowhere");
    work.file("app/deep/n1/n2/n3/n4/leaf.txt", "leaf\n", 0o644);
    for d in [
        "deep",
        "deep/n1",
        "deep/n1/n2",
        "deep/n1/n2/n3",
        "deep/n1/n2/n3/n4",
    ] {
        work.dir(&format!("app/{d}"), 0o755);
    }
    work.dir("app/empty", 0o755);
    work.file(&format!("app/{LONG_DIR}/{LONG_FILE}"), "long\n", 0o644);
    work.dir(&format!("app/{LONG_DIR}"), 0o755);
    work.symlink("app/longlink", &format!("{LONG_DIR}/{LONG_FILE}"));
    work.file("motd", "base motd\n", 0o644);
    work.file("run.sh", "#!/bin/sh\necho run\n", 0o644);
    work.file("over-a", "first\n", 0o644);
    work.file("over-b", "second\n", 0o640);
    work.file("motd-user", "user motd\n", 0o644);
    work.file("dot/.profile", "export A=1\n", 0o600);
    work.file("dot/.config/app.toml", "x = 1\n", 0o644);
    work.dir("dot/.config", 0o755);
    work.dir("dot", 0o755);
    r#"
[image]
name = "strata-e2e/umoci"

[base]
tree = [
  { src = "app", dest = "/opt/app", uid = 1234, gid = 5678 },
  { src = "motd", dest = "/etc/motd", mode = "0640", uid = 1000, gid = 1001 },
  { src = "run.sh", dest = "/usr/local/bin/run", mode = 0o755 },
  { src = "over-a", dest = "/etc/over" },
  { src = "over-b", dest = "/etc/over" },
]

[user]
tree = [
  { src = "dot", dest = "/home/dev", uid = 1000, gid = 1000 },
  { src = "motd-user", dest = "/etc/motd" },
]
"#
}

/// The rootfs the rich fixture must unpack to.
fn rich_expected() -> BTreeMap<String, Node> {
    let mut m = BTreeMap::new();
    let mut put = |p: &str, n: Node| {
        m.insert(p.to_owned(), n);
    };
    let root_dir = Node::dir(0o755, 0, 0);
    for d in ["etc", "opt", "usr", "usr/local", "usr/local/bin", "home"] {
        put(d, root_dir.clone());
    }
    // Later entries win: the user half's /etc/motd over the base's, over-b over over-a.
    put("etc/motd", Node::file("user motd\n", 0o644, 0, 0));
    put("etc/over", Node::file("second\n", 0o640, 0, 0));
    put(
        "usr/local/bin/run",
        Node::file("#!/bin/sh\necho run\n", 0o755, 0, 0),
    );

    let (u, g) = (1234, 5678);
    put("opt/app", Node::dir(0o755, u, g));
    put("opt/app/bin", Node::dir(0o755, u, g));
    put("opt/app/bin/tool", Node::file("tool\n", 0o4755, u, g));
    put("opt/app/bin/sgid", Node::file("sgid\n", 0o2750, u, g));
    put("opt/app/secret", Node::dir(0o700, u, g));
    put("opt/app/secret/key", Node::file("key\n", 0o600, u, g));
    put("opt/app/shared", Node::dir(0o1777, u, g));
    put("opt/app/data", Node::dir(0o755, u, g));
    put("opt/app/data/a.txt", Node::file("alpha\n", 0o644, u, g));
    put("opt/app/data/hard.txt", Node::file("alpha\n", 0o644, u, g));
    put("opt/app/link-rel", Node::symlink("data/a.txt", u, g));
    put("opt/app/link-abs", Node::symlink("/etc/motd", u, g));
    put("opt/app/dangling", Node::symlink("nowhere", u, g));
    let mut deep = String::from("opt/app/deep");
    put(&deep, Node::dir(0o755, u, g));
    for n in ["n1", "n2", "n3", "n4"] {
        deep = format!("{deep}/{n}");
        put(&deep, Node::dir(0o755, u, g));
    }
    put(
        &format!("{deep}/leaf.txt"),
        Node::file("leaf\n", 0o644, u, g),
    );
    put("opt/app/empty", Node::dir(0o755, u, g));
    put(&format!("opt/app/{LONG_DIR}"), Node::dir(0o755, u, g));
    put(
        &format!("opt/app/{LONG_DIR}/{LONG_FILE}"),
        Node::file("long\n", 0o644, u, g),
    );
    put(
        "opt/app/longlink",
        Node::symlink(&format!("{LONG_DIR}/{LONG_FILE}"), u, g),
    );

    put("home/dev", Node::dir(0o755, 1000, 1000));
    put(
        "home/dev/.profile",
        Node::file("export A=1\n", 0o600, 1000, 1000),
    );
    put("home/dev/.config", Node::dir(0o755, 1000, 1000));
    put(
        "home/dev/.config/app.toml",
        Node::file("x = 1\n", 0o644, 1000, 1000),
    );
    m
}

/// `umoci unpack`s `oci:DIR` by tag into `bundle` and snapshots its rootfs. As root, umoci
/// applies the owners from the layers; otherwise `--rootless` maps them all to the caller.
fn umoci_unpack(dir: &Path, tag: &str, bundle: &Path) -> Snapshot {
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !is_root() {
        cmd.arg("--rootless");
    }
    cmd.arg("--image")
        .arg(format!("{}:{tag}", dir.display()))
        .arg(bundle);
    run_ok(&mut cmd);
    snapshot(&bundle.join("rootfs"))
}

#[test]
fn umoci_unpack_gives_the_spec_trees() {
    if !require(&["umoci"]) {
        return;
    }
    let work = Work::new();
    let spec = write_rich_fixture(&work);
    work.write_spec(spec);
    let long = format!("/opt/app/{LONG_DIR}/{LONG_FILE}");
    assert!(
        long.len() > 100,
        "fixture path must exceed ustar's 100 bytes"
    );

    let oci = work.out("oci");
    let build = work.build(&format!("oci:{}", oci.display()), &[]);
    let snap = umoci_unpack(&oci, build.tag(), &work.out("bundle"));

    let mut expected = rich_expected();
    if !is_root() {
        // Rootless unpacking owns everything as the caller; owners cannot be checked.
        let (uid, gid) = (
            fs::metadata("/proc/self").unwrap().uid(),
            fs::metadata("/proc/self").unwrap().gid(),
        );
        for n in expected.values_mut() {
            n.uid = uid;
            n.gid = gid;
        }
        eprintln!("not root: owners are not checked");
    }
    assert_same_tree(&snap.nodes, &expected);

    assert_eq!(
        snap.inodes.get("opt/app/data/a.txt"),
        snap.inodes.get("opt/app/data/hard.txt"),
        "hard-linked files must share one inode in the unpacked rootfs"
    );
    assert_ne!(
        snap.inodes.get("opt/app/data/a.txt"),
        snap.inodes.get("opt/app/bin/tool"),
        "distinct files must not share an inode"
    );

    // File times are clamped to SOURCE_DATE_EPOCH (default 1).
    let bundle_root = work.out("bundle").join("rootfs");
    for (path, node) in &snap.nodes {
        if matches!(node.kind, Kind::File(_)) {
            let mtime = fs::symlink_metadata(bundle_root.join(path))
                .unwrap()
                .mtime();
            assert_eq!(
                mtime, 1,
                "/{path}: mtime not clamped to SOURCE_DATE_EPOCH=1"
            );
        }
    }

    // Squeezing the same spec into the fewest layers must not change the rootfs.
    let few = work.out("oci-few");
    let build_few = work.build(&format!("oci:{}", few.display()), &["--max-layers", "3"]);
    assert!(
        build_few.layers().len() <= 3,
        "--max-layers 3 gave {} layers",
        build_few.layers().len()
    );
    let snap_few = umoci_unpack(&few, build_few.tag(), &work.out("bundle-few"));
    assert_same_tree(&snap_few.nodes, &snap.nodes);
}

// ---------------------------------------------------------------------------------------------
// podman and docker run a program shipped in a tree

fn runnable_spec(work: &Work, name: &str) {
    add_busybox(work);
    work.dir("work", 0o755);
    work.write_spec(&format!(
        r#"
[image]
name = "{name}"

[base]
tree = [ {{ src = "bb/bin", dest = "/bin" }} ]

[user]
tree = [ {{ src = "work", dest = "/work", uid = 1000, gid = 1000 }} ]

[config]
cmd = ["/bin/sh", "-c", "echo $GREETING $(pwd) $(/bin/busybox id -u):$(/bin/busybox id -g)"]
env = {{ GREETING = "hello-from-strata" }}
workdir = "/work"
user = "1000:1000"
"#
    ));
}

#[test]
fn podman_loads_and_runs_docker_archive() {
    if !require(&["podman"]) {
        return;
    }
    let work = Work::new();
    runnable_spec(&work, &unique_name("podman-archive"));
    let archive = work.out("image.tar");
    let build = work.build(&format!("docker-archive:{}", archive.display()), &[]);
    assert_eq!(
        build.str("output"),
        format!("docker-archive:{}", archive.display()),
        "--json output names the archive"
    );

    let image = LoadedImage {
        tool: "podman",
        reference: format!("localhost/{}", build.reference()),
    };
    let load = podman_load(&archive);
    let loaded = format!("{}{}", stdout(&load), stderr(&load));
    assert!(
        loaded.contains(&build.reference()),
        "podman load should name {}: {loaded}",
        build.reference()
    );

    let hi = podman_run(&image.reference, &["/bin/busybox", "echo", "hi"]);
    assert_eq!(stdout(&hi), "hi\n", "busybox from the tree runs in podman");

    // The image config: cmd, env, workdir and user.
    let out = podman_run(&image.reference, &[]);
    assert_eq!(
        stdout(&out),
        "hello-from-strata /work 1000:1000\n",
        "the container runs with the spec's cmd, env, workdir and user"
    );
}

#[test]
fn podman_loads_stdout_stream() {
    if !require(&["podman"]) {
        return;
    }
    let work = Work::new();
    runnable_spec(&work, &unique_name("podman-stream"));

    let mut strata = work.strata();
    strata
        .arg("build")
        .arg(work.spec())
        .args(["--output", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = strata.spawn().expect("spawn strata");
    let pipe = child.stdout.take().expect("strata stdout");
    let store = podman_store_lock();
    let load = Command::new("podman")
        .arg("load")
        .stdin(Stdio::from(pipe))
        .output()
        .expect("run podman load");
    drop(store);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read strata stderr");
    let status = child.wait().expect("wait for strata");
    assert!(status.success(), "strata build --output - failed: {err}");
    // With --output -, the reference goes to stderr (stdout is the archive).
    let line = err
        .lines()
        .rev()
        .find(|l| l.contains('@'))
        .unwrap_or_else(|| panic!("no NAME:TAG@DIGEST on stderr: {err}"));
    let reference = line.split('@').next().expect("reference").trim().to_owned();
    let image = LoadedImage {
        tool: "podman",
        reference: format!("localhost/{reference}"),
    };
    assert!(
        load.status.success(),
        "podman load of the stream failed: {}{}",
        stdout(&load),
        stderr(&load)
    );
    let hi = podman_run(&image.reference, &["/bin/busybox", "echo", "hi"]);
    assert_eq!(
        stdout(&hi),
        "hi\n",
        "image streamed on stdout runs in podman"
    );
}

#[test]
fn docker_loads_and_runs_docker_archive_and_stream() {
    if !require(&["docker"]) {
        return;
    }
    let work = Work::new();
    runnable_spec(&work, &unique_name("docker"));
    let archive = work.out("image.tar");
    let build = work.build(&format!("docker-archive:{}", archive.display()), &[]);
    let reference = build.reference();

    for how in ["file", "stream"] {
        let image = LoadedImage {
            tool: "docker",
            reference: reference.clone(),
        };
        let load = if how == "file" {
            run_ok(Command::new("docker").arg("load").arg("-i").arg(&archive))
        } else {
            let script = "\"$1\" --store \"$2\" build \"$3\" --output - | docker load";
            run_ok(
                Command::new("bash")
                    .args(["-eo", "pipefail", "-c", script, "sh"])
                    .arg(strata_bin())
                    .arg(work.store())
                    .arg(work.spec()),
            )
        };
        assert!(
            stdout(&load).contains(&reference),
            "docker load ({how}) should name {reference}: {}",
            stdout(&load)
        );
        let hi = run_ok(Command::new("docker").args([
            "run",
            "--rm",
            "--network=none",
            &reference,
            "/bin/busybox",
            "echo",
            "hi",
        ]));
        assert_eq!(
            stdout(&hi),
            "hi\n",
            "busybox from the tree runs in docker ({how})"
        );
        let out =
            run_ok(Command::new("docker").args(["run", "--rm", "--network=none", &reference]));
        assert_eq!(
            stdout(&out),
            "hello-from-strata /work 1000:1000\n",
            "docker runs the spec's cmd, env, workdir and user ({how})"
        );
        drop(image);
    }
}

// ---------------------------------------------------------------------------------------------
// Reproducibility

/// A fixture with a multi-megabyte file, hard links, symlinks and nesting; `age` shifts every
/// host mtime, which must not matter.
fn write_repro_fixture(work: &Work, age: Duration) {
    work.file("big/blob.bin", noise(3 << 20, 7), 0o644);
    work.file("big/other.bin", noise(1 << 20, 8), 0o600);
    work.hardlink("big/blob-link.bin", "big/blob.bin");
    work.symlink("big/latest", "blob.bin");
    work.file("etc/conf/a.conf", "a = 1\n", 0o644);
    work.file("etc/conf/b.conf", "b = 2\n", 0o640);
    work.file("user/.bashrc", "alias ll='ls -l'\n", 0o644);
    let when = SystemTime::now() - age;
    for rel in [
        "big/blob.bin",
        "big/other.bin",
        "etc/conf/a.conf",
        "user/.bashrc",
    ] {
        let f = fs::File::options()
            .write(true)
            .open(work.spec_dir().join(rel))
            .expect("open");
        f.set_modified(when).expect("set mtime");
    }
    work.write_spec(
        r#"
[image]
name = "strata-e2e/repro"

[base]
tree = [
  { src = "big", dest = "/data" },
  { src = "etc/conf", dest = "/etc/conf" },
]

[user]
tree = [ { src = "user", dest = "/home/u", uid = 1000, gid = 1000 } ]

[config]
env = { A = "1" }
"#,
    );
}

#[test]
fn builds_are_reproducible_across_stores_paths_threads_and_times() {
    let a = Work::new();
    let b = Work::new();
    write_repro_fixture(&a, Duration::ZERO);
    write_repro_fixture(&b, Duration::from_secs(10 * 365 * 86400));

    let mut digests = BTreeMap::new();
    let mut references = BTreeSet::new();
    for compression in COMPRESSIONS {
        let one = a.build(
            &format!("oci:{}", a.out(compression).display()),
            &["--compression", compression, "--threads", "1"],
        );
        let four = b.build(
            &format!("oci:{}", b.out(compression).display()),
            &["--compression", compression, "--threads", "4"],
        );
        assert_eq!(
            one.digest(),
            four.digest(),
            "--compression {compression}: same spec in another directory and store, with 1 vs 4 \
             threads, gave another manifest digest"
        );
        assert_eq!(one.reference(), four.reference());
        references.insert(one.reference());
        digests.insert(compression, one.digest().to_owned());
    }
    let distinct: BTreeSet<&String> = digests.values().collect();
    assert_eq!(
        distinct.len(),
        3,
        "each compression must give its own manifest digest: {digests:?}"
    );
    assert_eq!(
        references.len(),
        1,
        "compression must not change NAME:TAG: {references:?}"
    );

    // The docker-archive bytes are reproducible too.
    let ta = a.out("image.tar");
    let tb = b.out("image.tar");
    a.build(
        &format!("docker-archive:{}", ta.display()),
        &["--threads", "2"],
    );
    b.build(
        &format!("docker-archive:{}", tb.display()),
        &["--threads", "3"],
    );
    assert!(
        fs::read(&ta).unwrap() == fs::read(&tb).unwrap(),
        "two docker-archives of the same spec differ byte for byte"
    );
}

// ---------------------------------------------------------------------------------------------
// Name and tag

#[test]
fn name_follows_base_and_tag_follows_user() {
    let work = Work::new();
    work.file("base.txt", "base v1\n", 0o644);
    work.file("user.txt", "user v1\n", 0o644);
    let v1 = r#"
[image]
name = "strata-e2e/naming"

[base]
tree = [ { src = "base.txt", dest = "/etc/base.txt", mode = 0o644 } ]

[user]
tree = [ { src = "user.txt", dest = "/home/u/user.txt", uid = 1000 } ]
"#;
    // Same meaning: tables and keys reordered, comments, whitespace, another number syntax.
    let reordered = r#"
# A comment that changes nothing.
[user]
tree = [
  # the user's file
  { uid = 1000, dest = "/home/u/user.txt",    src = "user.txt" },
]

[base]
tree = [{ mode = "0644", dest = "/etc/base.txt", src = "base.txt" }]   # trailing comment

[image]
name = "strata-e2e/naming"
"#;
    let user_edited = v1.replace("uid = 1000", "uid = 1001");
    let write = |name: &str, text: &str| {
        let p = work.spec_dir().join(name);
        fs::write(&p, text).expect("write spec");
        p
    };
    let mut n = 0;
    let mut build = |spec: &Path| {
        n += 1;
        work.build_spec(
            spec,
            &format!("oci:{}", work.out(&format!("o{n}")).display()),
            &[],
        )
    };

    let b1 = build(&write("v1.toml", v1));
    assert!(
        b1.name().starts_with("strata-e2e/naming"),
        "image.name prefixes the name: {}",
        b1.name()
    );
    let b2 = build(&write("reordered.toml", reordered));
    assert_eq!(
        (b2.name(), b2.tag(), b2.digest()),
        (b1.name(), b1.tag(), b1.digest()),
        "reordering keys and adding comments must change neither name, tag nor image"
    );
    let b3 = build(&write("user.toml", &user_edited));
    assert_eq!(
        b3.name(),
        b1.name(),
        "editing only [user] must keep the name"
    );
    assert_ne!(b3.tag(), b1.tag(), "editing [user] must change the tag");

    // File contents count in the hash of the half they are in.
    fs::write(work.spec_dir().join("base.txt"), "base v2\n").unwrap();
    let b4 = build(&work.spec_dir().join("v1.toml"));
    assert_ne!(
        b4.name(),
        b1.name(),
        "changing a [base] file must change the name"
    );
    assert_eq!(
        b4.tag(),
        b1.tag(),
        "changing a [base] file must keep the tag"
    );

    fs::write(work.spec_dir().join("user.txt"), "user v2\n").unwrap();
    let b5 = build(&work.spec_dir().join("v1.toml"));
    assert_eq!(
        b5.name(),
        b4.name(),
        "changing a [user] file must keep the name"
    );
    assert_ne!(
        b5.tag(),
        b4.tag(),
        "changing a [user] file must change the tag"
    );
}

// ---------------------------------------------------------------------------------------------
// --json result

#[test]
fn json_result_matches_the_written_image() {
    if !require(&["zstd"]) {
        return;
    }
    let work = Work::new();
    work.file("a/one.txt", noise(200_000, 1), 0o644);
    work.file("b/two.txt", "two\n", 0o644);
    work.file("c/three.txt", "three\n", 0o644);
    work.write_spec(
        r#"
[image]
name = "strata-e2e/json"

[base]
tree = [
  { src = "a", dest = "/a" },
  { src = "b", dest = "/b" },
]

[user]
tree = [ { src = "c", dest = "/c" } ]
"#,
    );

    for (compression, decompress) in [("gzip", "gzip -dc"), ("zstd", "zstd -dc"), ("none", "cat")] {
        let dir = work.out(compression);
        let dest = format!("oci:{}", dir.display());
        let build = work.build(&dest, &["--compression", compression]);
        assert_eq!(build.str("output"), dest, "`output` echoes --output");
        assert!(
            build.name().starts_with("strata-e2e/json"),
            "name: {}",
            build.name()
        );
        assert!(!build.tag().is_empty(), "tag is empty");
        assert!(is_digest(build.digest()), "digest: {}", build.digest());

        let index: Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).expect("index.json"))
                .expect("index.json is JSON");
        let entry = &index["manifests"][0];
        assert_eq!(
            entry["digest"].as_str(),
            Some(build.digest()),
            "index names the manifest"
        );
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"].as_str(),
            Some(build.tag()),
            "the OCI layout's index names the image by its tag"
        );
        assert_eq!(
            sha256_file(&dir.join("blobs/sha256").join(&build.digest()[7..])),
            build.digest(),
            "manifest blob hashes to its digest"
        );

        let manifest = layout_json(&dir, build.digest());
        let config = layout_json(&dir, manifest["config"]["digest"].as_str().expect("config"));
        let m_layers = manifest["layers"].as_array().expect("manifest layers");
        let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
        assert_eq!(build.layers().len(), 3, "one layer per tree entry");
        assert_eq!(
            m_layers.len(),
            build.layers().len(),
            "manifest vs --json layer count"
        );
        assert_eq!(
            diff_ids.len(),
            build.layers().len(),
            "config vs --json layer count"
        );

        for (i, layer) in build.layers().iter().enumerate() {
            let digest = layer["digest"].as_str().expect("layer digest");
            let diff_id = layer["diff_id"].as_str().expect("layer diff_id");
            let size = layer["size"].as_u64().expect("layer size");
            assert!(
                is_digest(digest) && is_digest(diff_id),
                "layer {i}: {layer}"
            );
            assert_eq!(
                m_layers[i]["digest"].as_str(),
                Some(digest),
                "layer {i} digest"
            );
            assert_eq!(m_layers[i]["size"].as_u64(), Some(size), "layer {i} size");
            assert_eq!(diff_ids[i].as_str(), Some(diff_id), "layer {i} diff_id");
            let blob = dir.join("blobs/sha256").join(&digest[7..]);
            assert_eq!(
                fs::metadata(&blob).unwrap().len(),
                size,
                "layer {i} blob size"
            );
            assert_eq!(
                sha256_file(&blob),
                digest,
                "layer {i}: blob bytes vs digest"
            );
            assert_eq!(
                sha256_decompressed(decompress, &blob),
                diff_id,
                "layer {i}: `{decompress}` of the blob vs diff_id"
            );
            if compression == "none" {
                assert_eq!(digest, diff_id, "uncompressed layer: digest == diff_id");
            }
        }

        // Without --json, stdout is exactly NAME:TAG@DIGEST.
        let plain = run_ok(work.strata().arg("build").arg(work.spec()).args([
            "--compression",
            compression,
            "--output",
            &dest,
        ]));
        assert_eq!(
            stdout(&plain),
            format!("{}@{}\n", build.reference(), build.digest()),
            "plain build output"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Cache

#[test]
fn warm_rebuild_reuses_every_layer_and_notices_changes() {
    let work = Work::new();
    work.file("base/tool", "tool v1\n", 0o755);
    work.file("etc/x.conf", "x\n", 0o644);
    work.file("user/notes.txt", "notes v1\n", 0o644);
    work.write_spec(
        r#"
[image]
name = "strata-e2e/cache"

[base]
tree = [
  { src = "base", dest = "/opt/base" },
  { src = "etc", dest = "/etc/x" },
]

[user]
tree = [ { src = "user", dest = "/home/u" } ]
"#,
    );
    let cold = work.build(&format!("oci:{}", work.out("cold").display()), &[]);
    assert_eq!(
        all_cached(&cold),
        vec![false; 3],
        "a fresh store has nothing cached"
    );
    let warm = work.build(&format!("oci:{}", work.out("warm").display()), &[]);
    assert_eq!(
        all_cached(&warm),
        vec![true; 3],
        "rebuilding an unchanged spec must reuse every layer: {:#}",
        warm.json
    );
    assert_eq!(
        warm.digest(),
        cold.digest(),
        "warm rebuild gives the same image"
    );

    // Changing one file re-tars only its layer, and the image has the new content.
    fs::write(work.spec_dir().join("user/notes.txt"), "notes v2, longer\n").unwrap();
    let changed = work.build(&format!("oci:{}", work.out("changed").display()), &[]);
    assert_ne!(
        changed.digest(),
        cold.digest(),
        "a changed file must change the image"
    );
    for layer in changed.layers() {
        let objs = objects(layer);
        let cached = layer["cached"].as_bool().expect("cached");
        let is_user = objs.iter().any(|o| o.contains("/home/u"));
        assert_eq!(
            cached, !is_user,
            "only the layer with the changed file is rebuilt: {layer}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// 1-based line and column of the first `needle` in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let offset = text.find(needle).expect("needle in text");
    let line = text[..offset].matches('\n').count() + 1;
    let col = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

fn assert_fails_with(work: &Work, spec: &Path, dest: &str, needles: &[&str]) {
    let out = run(work
        .strata()
        .arg("build")
        .arg(spec)
        .args(["--output", dest]));
    let err = stderr(&out);
    assert!(!out.status.success(), "build should fail; stderr: {err}");
    assert!(
        out.stdout.is_empty(),
        "a failed build prints nothing on stdout, got: {}",
        stdout(&out)
    );
    for needle in needles {
        assert!(
            err.contains(needle),
            "stderr should contain `{needle}`:\n{err}"
        );
    }
}

#[test]
fn unknown_keys_and_wrong_types_are_located() {
    let work = Work::new();
    work.file("a", "a\n", 0o644);
    let nested = "[image]\nname = \"strata-e2e/errors\"\n\n[base]\ntree = [\n  { src = \"a\", dest = \"/a\", colour = \"red\" },\n]\n";
    let spec = work.write_spec(nested);
    let (line, col) = position(nested, "colour");
    let out = work.out("never");
    assert_fails_with(
        &work,
        &spec,
        &format!("oci:{}", out.display()),
        &[&format!("strata.toml:{line}:{col}"), "base.tree[0].colour"],
    );
    assert!(
        !out.exists(),
        "a rejected spec must not create the output dir"
    );

    let top = "[base]\ntree = []\n\n[user]\nflavour = \"x\"\n";
    let spec = work.write_spec(top);
    let (line, col) = position(top, "flavour");
    assert_fails_with(
        &work,
        &spec,
        &format!("oci:{}", out.display()),
        &[&format!("strata.toml:{line}:{col}"), "user.flavour"],
    );

    let typed = "[base]\ntree = [ { src = \"a\", dest = \"/a\", uid = \"root\" } ]\n";
    let spec = work.write_spec(typed);
    let (line, _) = position(typed, "uid");
    assert_fails_with(
        &work,
        &spec,
        &format!("oci:{}", out.display()),
        &[&format!("strata.toml:{line}:"), "base.tree[0].uid"],
    );
}

#[test]
fn missing_src_names_the_entry_and_leaves_no_output() {
    let work = Work::new();
    work.file("present.txt", "here\n", 0o644);
    let text = "[image]\nname = \"strata-e2e/missing\"\n\n[base]\ntree = [\n  { src = \"present.txt\", dest = \"/p\" },\n  { src = \"missing/file.txt\", dest = \"/m\" },\n]\n";
    let spec = work.write_spec(text);
    let (line, _) = position(text, "{ src = \"missing");
    let needles = [
        format!("strata.toml:{line}:"),
        "base.tree[1]".to_owned(),
        "missing/file.txt".to_owned(),
    ];
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();

    // oci:DIR that did not exist still does not.
    let oci = work.out("oci");
    assert_fails_with(&work, &spec, &format!("oci:{}", oci.display()), &needles);
    assert!(!oci.exists(), "failed build left {}", oci.display());

    // docker-archive:FILE: no file, and nothing else in its directory either.
    let archive = work.out("image.tar");
    assert_fails_with(
        &work,
        &spec,
        &format!("docker-archive:{}", archive.display()),
        &needles,
    );
    let left: Vec<_> = fs::read_dir(work.root().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "failed builds left files behind: {left:?}");

    // -: nothing on stdout (checked by assert_fails_with).
    assert_fails_with(&work, &spec, "-", &needles);

    // An earlier good image at the output path survives a failed build unchanged.
    let good_spec = work.spec_dir().join("good.toml");
    fs::write(
        &good_spec,
        "[base]\ntree = [ { src = \"present.txt\", dest = \"/p\" } ]\n",
    )
    .unwrap();
    let good = work.build_spec(&good_spec, &format!("oci:{}", oci.display()), &[]);
    let before = snapshot(&oci);
    assert_fails_with(&work, &spec, &format!("oci:{}", oci.display()), &needles);
    assert_same_tree(&snapshot(&oci).nodes, &before.nodes);
    assert!(
        fs::read_to_string(oci.join("index.json"))
            .unwrap()
            .contains(good.digest()),
        "the earlier image is still the one in the layout"
    );
}

#[test]
fn failed_write_leaves_no_temp_files() {
    let work = Work::new();
    work.file("f.txt", "f\n", 0o644);
    work.write_spec("[base]\ntree = [ { src = \"f.txt\", dest = \"/f\" } ]\n");
    // The archive path is an existing, non-empty directory: writing the file must fail.
    let taken = work.out("taken");
    fs::create_dir_all(&taken).unwrap();
    fs::write(taken.join("keep"), "keep\n").unwrap();
    let out = run(work
        .strata()
        .arg("build")
        .arg(work.spec())
        .arg("--output")
        .arg(format!("docker-archive:{}", taken.display())));
    assert!(
        !out.status.success(),
        "writing a docker-archive over a directory should fail"
    );
    let left: BTreeSet<String> = fs::read_dir(work.root().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        left,
        BTreeSet::from(["taken".to_owned()]),
        "a failed write left temp files next to the target"
    );
    assert_eq!(fs::read_to_string(taken.join("keep")).unwrap(), "keep\n");
}

// ---------------------------------------------------------------------------------------------
// Layering

fn layering_spec(work: &Work) -> Vec<String> {
    let mut base = String::new();
    let mut names = Vec::new();
    for i in 0..6 {
        work.file(&format!("b{i}/file{i}.txt"), format!("base {i}\n"), 0o644);
        base.push_str(&format!("  {{ src = \"b{i}\", dest = \"/opt/b{i}\" }},\n"));
        names.push(format!("tree:/opt/b{i}"));
    }
    let mut user = String::new();
    for i in 0..2 {
        work.file(&format!("u{i}/file{i}.txt"), format!("user {i}\n"), 0o644);
        user.push_str(&format!("  {{ src = \"u{i}\", dest = \"/home/u{i}\" }},\n"));
        names.push(format!("tree:/home/u{i}"));
    }
    work.write_spec(&format!(
        "[image]\nname = \"strata-e2e/layers\"\n\n[base]\ntree = [\n{base}]\n\n[user]\ntree = [\n{user}]\n"
    ));
    names.sort();
    names
}

#[test]
fn max_layers_bounds_the_layer_count_and_inspect_lists_objects() {
    let work = Work::new();
    let names = layering_spec(&work);

    let all = work.build(&format!("oci:{}", work.out("all").display()), &[]);
    assert_eq!(
        all.layers().len(),
        names.len(),
        "with room for all, every store object gets its own layer"
    );
    for layer in all.layers() {
        assert_eq!(objects(layer).len(), 1, "one object per layer: {layer}");
    }

    for max in [3usize, 4, 6] {
        let dir = work.out(&format!("max{max}"));
        let build = work.build(
            &format!("oci:{}", dir.display()),
            &["--max-layers", &max.to_string()],
        );
        let n = build.layers().len();
        assert!((2..=max).contains(&n), "--max-layers {max} gave {n} layers");

        // Base and user objects never share a layer.
        for layer in build.layers() {
            let objs = objects(layer);
            let user = objs.iter().filter(|o| o.starts_with("tree:/home/")).count();
            assert!(
                user == 0 || user == objs.len(),
                "--max-layers {max}: a layer mixes base and user objects: {objs:?}"
            );
        }

        for image in [
            format!("oci:{}", dir.display()),
            format!("oci:{}:{}", dir.display(), build.tag()),
        ] {
            let inspected = json_stdout(&run_ok(work.strata().args(["inspect", "--json", &image])));
            let layers = inspected["layers"].as_array().expect("inspect layers");
            assert_eq!(layers.len(), n, "inspect {image}: layer count");
            let mut seen: Vec<String> = layers.iter().flat_map(objects).collect();
            seen.sort();
            assert_eq!(
                seen, names,
                "inspect {image}: every store object exactly once across the layers"
            );
            for (l, b) in layers.iter().zip(build.layers()) {
                assert_eq!(l["digest"], b["digest"], "inspect vs build layer digest");
                assert_eq!(objects(l), objects(b), "inspect vs build objects per layer");
            }
        }
    }

    // Too small a budget is an error that says so, not a silently bigger image.
    let out = run(work.strata().arg("build").arg(work.spec()).args([
        "--max-layers",
        "2",
        "--output",
        &format!("oci:{}", work.out("max2").display()),
    ]));
    assert!(!out.status.success(), "--max-layers 2 should be rejected");
    assert!(
        stderr(&out).contains("--max-layers"),
        "the error names --max-layers: {}",
        stderr(&out)
    );
    assert!(
        !work.out("max2").exists(),
        "a rejected build wrote its output"
    );

    // inspect reads docker-archives too.
    let archive = work.out("image.tar");
    let build = work.build(
        &format!("docker-archive:{}", archive.display()),
        &["--max-layers", "3"],
    );
    let inspected = json_stdout(&run_ok(work.strata().args([
        "inspect",
        "--json",
        &format!("docker-archive:{}", archive.display()),
    ])));
    let layers = inspected["layers"].as_array().expect("inspect layers");
    let got: Vec<Vec<String>> = layers.iter().map(objects).collect();
    let want: Vec<Vec<String>> = build.layers().iter().map(objects).collect();
    assert_eq!(got, want, "inspect docker-archive: objects per layer");
}

#[test]
fn shared_objects_give_identical_layer_blobs() {
    let work = Work::new();
    work.file("shared/lib.txt", "shared\n", 0o644);
    work.file("only-a/a.txt", "a\n", 0o644);
    work.file("only-b/b.txt", "b\n", 0o644);
    let spec = |extra: &str, user: &str| {
        format!(
            "[base]\ntree = [\n  {{ src = \"shared\", dest = \"/opt/shared\" }},\n  {{ src = \"{extra}\", dest = \"/opt/{extra}\" }},\n]\n\n[user]\ntree = [ {{ src = \"{user}\", dest = \"/home/{user}\" }} ]\n"
        )
    };
    let pa = work.spec_dir().join("a.toml");
    let pb = work.spec_dir().join("b.toml");
    fs::write(&pa, spec("only-a", "only-b")).unwrap();
    fs::write(&pb, spec("only-b", "only-a")).unwrap();
    let a = work.build_spec(&pa, &format!("oci:{}", work.out("a").display()), &[]);
    let b = work.build_spec(&pb, &format!("oci:{}", work.out("b").display()), &[]);
    let layer_of = |build: &Build, object: &str| -> String {
        build
            .layers()
            .iter()
            .find(|l| objects(l).iter().any(|o| o == object))
            .unwrap_or_else(|| panic!("no layer holds {object}: {:#}", build.json))["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_ne!(a.name(), b.name(), "different bases, different names");
    assert_eq!(
        layer_of(&a, "tree:/opt/shared"),
        layer_of(&b, "tree:/opt/shared"),
        "an object shared by two specs must land in identical layer blobs"
    );
    assert_ne!(
        layer_of(&a, "tree:/opt/only-a"),
        layer_of(&b, "tree:/opt/only-b"),
        "different objects give different layers"
    );
}

// ---------------------------------------------------------------------------------------------
// gc

#[test]
fn gc_removes_blobs_no_recorded_image_uses() {
    let work = Work::new();
    work.file("a/a.txt", "a\n", 0o644);
    work.file("b/b.txt", "b\n", 0o644);
    work.write_spec(
        "[base]\ntree = [ { src = \"a\", dest = \"/a\" } ]\n[user]\ntree = [ { src = \"b\", dest = \"/b\" } ]\n",
    );
    let gc = || json_stdout(&run_ok(work.strata().args(["gc", "--json"])));

    let gzip = work.build(
        &format!("oci:{}", work.out("gz").display()),
        &["--compression", "gzip"],
    );
    let nothing = gc();
    assert_eq!(
        nothing["blobs_removed"].as_u64(),
        Some(0),
        "gc right after a build must keep every blob of the recorded image: {nothing}"
    );

    // The same NAME:TAG rebuilt with zstd replaces the record: the gzip blobs become garbage.
    let zstd = work.build(
        &format!("oci:{}", work.out("zs").display()),
        &["--compression", "zstd"],
    );
    assert_eq!(zstd.reference(), gzip.reference());
    let report = gc();
    let removed = report["blobs_removed"].as_u64().expect("blobs_removed");
    assert!(
        removed > gzip.layers().len() as u64,
        "gc should remove the gzip layers and manifest ({} blobs) at least, removed {removed}: {report}",
        gzip.layers().len() + 1
    );
    assert!(report["bytes_freed"].as_u64().expect("bytes_freed") > 0);

    let zstd_again = work.build(
        &format!("oci:{}", work.out("zs2").display()),
        &["--compression", "zstd"],
    );
    assert_eq!(
        all_cached(&zstd_again),
        vec![true; zstd.layers().len()],
        "gc must keep the layers of the recorded image"
    );
    let gzip_again = work.build(
        &format!("oci:{}", work.out("gz2").display()),
        &["--compression", "gzip"],
    );
    assert_eq!(
        all_cached(&gzip_again),
        vec![false; gzip.layers().len()],
        "gc removed the gzip layers, so they are built again"
    );
    assert_eq!(
        gzip_again.digest(),
        gzip.digest(),
        "rebuilt after gc, same image"
    );
}

#[test]
fn user_half_cannot_change_the_name_or_base_layers_under_a_tight_layer_budget() {
    // Six base objects and one or six user objects, with room for fewer layers than objects:
    // whatever the user half holds, the base half (and so the name and the base layer blobs
    // that images of one team share) must stay the same.
    let work = Work::new();
    let spec = |users: usize| {
        let mut s = String::from("[image]\nname = \"strata-e2e/budget\"\n\n[base]\ntree = [\n");
        for i in 0..6 {
            s.push_str(&format!("  {{ src = \"b{i}\", dest = \"/opt/b{i}\" }},\n"));
        }
        s.push_str("]\n\n[user]\ntree = [\n");
        for i in 0..users {
            s.push_str(&format!("  {{ src = \"u{i}\", dest = \"/home/u{i}\" }},\n"));
        }
        s.push_str("]\n");
        s
    };
    for i in 0..6 {
        work.file(&format!("b{i}/f"), format!("base {i}\n"), 0o644);
        work.file(&format!("u{i}/f"), format!("user {i}\n"), 0o644);
    }
    let one = work.spec_dir().join("one-user.toml");
    let six = work.spec_dir().join("six-users.toml");
    fs::write(&one, spec(1)).unwrap();
    fs::write(&six, spec(6)).unwrap();
    let base_layers = |b: &Build| -> Vec<(String, Vec<String>)> {
        b.layers()
            .iter()
            .filter(|l| l["part"] == "base")
            .map(|l| (l["digest"].as_str().unwrap().to_owned(), objects(l)))
            .collect()
    };
    for max in ["6", "10"] {
        let a = work.build_spec(
            &one,
            &format!("oci:{}", work.out(&format!("one-{max}")).display()),
            &["--max-layers", max],
        );
        let b = work.build_spec(
            &six,
            &format!("oci:{}", work.out(&format!("six-{max}")).display()),
            &["--max-layers", max],
        );
        assert_ne!(a.tag(), b.tag(), "different [user] halves, different tags");
        assert_eq!(
            base_layers(&a),
            base_layers(&b),
            "--max-layers {max}: adding [user] entries regrouped the base layers"
        );
        assert_eq!(
            a.name(),
            b.name(),
            "--max-layers {max}: editing only [user] changed the image name"
        );
    }
}
