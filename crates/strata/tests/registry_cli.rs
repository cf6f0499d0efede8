//! End-to-end tests of strata's registry commands through the real binary: `build --output
//! docker://`, `push`, `pull`, `copy` and `login`, against a real `docker-registry` (CNCF
//! distribution) started by each test on its own 127.0.0.1 port, storage and access log.
//!
//! What the registry received is read from its access log and storage, and what strata pushed
//! is checked by tools no one here wrote: skopeo and podman. Tests fail (never skip) when a
//! tool is missing: `scripts/test` installs them.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// helpers

/// Copies the host's static busybox into `spec/bb/bin/busybox` with an `sh -> busybox` link.
fn add_busybox(work: &Work) {
    let host = Path::new("/bin/busybox");
    assert!(
        host.is_file(),
        "/bin/busybox is missing; scripts/test installs busybox-static"
    );
    work.file("bb/bin/busybox", fs::read(host).unwrap(), 0o755);
    work.symlink("bb/bin/sh", "busybox");
}

/// A spec with busybox as the base half and `user/note.txt` (holding `note`) as the user
/// half, written to `spec/{file}`.
fn busybox_spec(work: &Work, file: &str, note: &str) -> std::path::PathBuf {
    if !work.spec_dir().join("bb/bin/busybox").exists() {
        add_busybox(work);
    }
    let user_dir = format!("user-{}", file.trim_end_matches(".toml"));
    work.file(&format!("{user_dir}/note.txt"), note, 0o644);
    let spec = work.spec_dir().join(file);
    fs::write(
        &spec,
        format!(
            r#"
[image]
name = "strata-e2e/registry"

[base]
tree = [ {{ src = "bb/bin", dest = "/bin" }} ]

[user]
tree = [ {{ src = "{user_dir}", dest = "/home/note" }} ]

[config]
cmd = ["/bin/busybox", "cat", "/home/note/note.txt"]
"#
        ),
    )
    .unwrap();
    spec
}

/// `strata ARGS` in the test's store; panics unless it succeeds.
fn strata_ok(work: &Work, args: &[&str]) -> Output {
    run_ok(work.strata().args(args))
}

/// `strata ARGS` in the test's store; panics if it succeeds.
fn strata_fails(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed\n--- stdout\n{}\n--- stderr\n{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// `skopeo inspect --tls-verify=false docker://…` (plus `extra` flags) as JSON.
fn skopeo_inspect(image: &str, extra: &[&str]) -> Value {
    need(&["skopeo"]);
    let out = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .args(extra)
            .arg(image),
    );
    json_stdout(&out)
}

/// The `METHOD PATH` lines a registry may see for an image it already has: the version
/// check, HEADs on blobs, and the manifest PUT.
fn assert_only_heads_and_manifest_put(requests: &[String], repo: &str, tag: &str) {
    let unexpected: Vec<&String> = requests
        .iter()
        .filter(|r| {
            !(r.as_str() == "GET /v2/"
                || r.starts_with(&format!("HEAD /v2/{repo}/blobs/sha256:"))
                || r.as_str() == format!("PUT /v2/{repo}/manifests/{tag}"))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "pushing an image the registry has should send only HEADs and the manifest PUT; also \
         saw {unexpected:#?}\nall requests: {requests:#?}"
    );
    let puts = requests
        .iter()
        .filter(|r| r.starts_with("PUT /v2/"))
        .count();
    assert_eq!(puts, 1, "exactly one manifest PUT expected: {requests:#?}");
}

/// Digests of every layer of a `strata build --json` result.
fn layer_digests(build: &Build) -> Vec<String> {
    build
        .layers()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// The manifest descriptor of a single-image OCI layout: (digest, ref.name).
fn layout_manifest(dir: &Path) -> (String, Option<String>) {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(
        manifests.len(),
        1,
        "{} should hold one image: {index:#}",
        dir.display()
    );
    (
        manifests[0]["digest"].as_str().unwrap().to_owned(),
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .map(str::to_owned),
    )
}

fn blob(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// Every blob of `dir`'s image (manifest, config, layers), as digests.
fn layout_blobs(dir: &Path) -> BTreeSet<String> {
    let (digest, _) = layout_manifest(dir);
    let manifest: Value = serde_json::from_slice(&fs::read(blob(dir, &digest)).unwrap()).unwrap();
    let mut all = BTreeSet::from([
        digest,
        manifest["config"]["digest"].as_str().unwrap().into(),
    ]);
    for l in manifest["layers"].as_array().unwrap() {
        all.insert(l["digest"].as_str().unwrap().to_owned());
    }
    all
}

fn podman_run_hi(image: &str) {
    // The ulimits the e2e tests use on this machine.
    need(&["podman"]);
    let out = run_ok(podman_run().args(["--network=none", image, "/bin/busybox", "echo", "hi"]));
    assert_eq!(
        stdout(&out),
        "hi\n",
        "busybox from the pushed image runs in podman ({image})"
    );
}

/// Splits what `strata build` prints, `NAME:TAG@sha256:DIGEST`, into (tag, digest).
fn tag_and_digest(line: &str) -> (String, String) {
    let line = line.trim();
    let (name_tag, digest) = line
        .split_once('@')
        .unwrap_or_else(|| panic!("expected NAME:TAG@DIGEST, got {line:?}"));
    let (_, tag) = name_tag
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("expected NAME:TAG@DIGEST, got {line:?}"));
    assert!(is_digest(digest), "not a digest in {line:?}");
    (tag.to_owned(), digest.to_owned())
}

// ---------------------------------------------------------------------------------------------
// build --output docker://

#[test]
fn build_to_registry_is_accepted_by_skopeo_and_runs_in_podman() {
    let reg = Registry::start(Auth::None);
    let work = Work::new();
    let spec = busybox_spec(&work, "strata.toml", "pushed by build\n");
    let dest = reg.docker("ws");
    let out = strata_ok(&work, &["build", spec.to_str().unwrap(), "--output", &dest]);
    let (tag, digest) = tag_and_digest(&stdout(&out));
    // What strata prints is where the image now is: HOST/REPO:TAG@DIGEST.
    let image = format!("{}/ws:{tag}", reg.host());
    assert_eq!(stdout(&out).trim(), format!("{image}@{digest}"));

    // The registry has the content-addressed tag strata printed, with strata's digest.
    let inspected = skopeo_inspect(&format!("docker://{image}"), &[]);
    assert_eq!(
        inspected["Digest"].as_str(),
        Some(digest.as_str()),
        "skopeo sees the manifest digest strata printed: {inspected:#}"
    );
    assert_eq!(
        inspected["RepoTags"],
        serde_json::json!([tag]),
        "the only tag is the content-addressed one"
    );
    assert_eq!(
        inspected["Layers"].as_array().map(Vec::len),
        Some(2),
        "one base and one user layer: {inspected:#}"
    );
    assert_eq!(inspected["Os"].as_str(), Some("linux"));
    assert_eq!(inspected["Architecture"].as_str(), Some(host_oci_arch()));
    assert_eq!(
        reg.status("HEAD", &format!("ws/manifests/{digest}")),
        200,
        "the manifest is there by digest too"
    );

    // podman pulls it over plain HTTP and runs busybox from it.
    let _cleanup = LoadedImage {
        tool: "podman",
        reference: image.clone(),
    };
    podman_pull(&image);
    podman_run_hi(&image);
}

#[test]
fn unchanged_rebuild_to_registry_uploads_no_blob() {
    let reg = Registry::start(Auth::None);
    let work = Work::new();
    let spec = busybox_spec(&work, "strata.toml", "unchanged\n");
    let dest = reg.docker("ws");
    let first = work.build_spec(&spec, &dest, &[]);
    // --json names the pushed reference too.
    let pushed = format!("{}/ws:{}", reg.host(), first.tag());
    assert_eq!(first.str("reference"), pushed, "{:#}", first.json);
    assert_eq!(
        first.str("image"),
        format!("{pushed}@{}", first.digest()),
        "{:#}",
        first.json
    );
    let first_uploads = committed_digests(&reg.requests_since(0));
    let mut expected: BTreeSet<String> = layer_digests(&first).into_iter().collect();
    expected.insert(first.str("config_digest").to_owned());
    assert_eq!(
        first_uploads.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "the first build uploads every layer and the config"
    );

    let mark = reg.mark();
    let started = Instant::now();
    let second = work.build_spec(&spec, &dest, &[]);
    let elapsed = started.elapsed();
    eprintln!("unchanged build --output docker:// took {elapsed:?}");
    assert_eq!(second.digest(), first.digest(), "same spec, same manifest");
    assert_eq!(second.tag(), first.tag(), "same spec, same tag");
    let requests = reg.requests_since(mark);
    assert!(
        upload_requests(&requests).is_empty(),
        "an unchanged rebuild must upload no blob: {requests:#?}"
    );
    assert_only_heads_and_manifest_put(&requests, "ws", first.tag());
    let heads = requests.iter().filter(|r| r.starts_with("HEAD ")).count();
    assert_eq!(
        heads,
        first.layers().len() + 1,
        "one HEAD per layer and one for the config: {requests:#?}"
    );
    // strata's own report agrees: every blob of the rebuild was skipped, none of the first
    // build's was.
    let outcomes = |b: &common::Build| -> Vec<String> {
        b.json["pushed"]
            .as_array()
            .unwrap_or_else(|| panic!("build --json to docker:// lists `pushed`: {:#}", b.json))
            .iter()
            .map(|x| x["outcome"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(outcomes(&first).len(), first.layers().len() + 1);
    assert!(
        outcomes(&first).iter().all(|o| o == "uploaded"),
        "{:#}",
        first.json
    );
    assert!(
        outcomes(&second).iter().all(|o| o == "skipped"),
        "{:#}",
        second.json
    );

    // The same image written as a layout and pushed: strata's own report agrees with the log.
    let layout = work.out("layout");
    let built = work.build_spec(&spec, &format!("oci:{}", layout.display()), &[]);
    assert_eq!(built.digest(), first.digest());
    let mark = reg.mark();
    let out = strata_ok(
        &work,
        &[
            "push",
            &format!("oci:{}", layout.display()),
            &dest,
            "--json",
        ],
    );
    let pushed = json_stdout(&out);
    assert_eq!(pushed["digest"].as_str(), Some(first.digest()));
    let blobs = pushed["blobs"].as_array().expect("push --json lists blobs");
    assert_eq!(blobs.len(), first.layers().len() + 1, "{pushed:#}");
    for b in blobs {
        assert_eq!(
            b["outcome"], "skipped",
            "every blob is already there: {pushed:#}"
        );
    }
    let requests = reg.requests_since(mark);
    assert_only_heads_and_manifest_put(&requests, "ws", first.tag());
}

#[test]
fn image_sharing_base_layers_uploads_only_the_new_layers() {
    let reg = Registry::start(Auth::None);
    let work = Work::new();
    let dest = reg.docker("ws");
    let spec_a = busybox_spec(&work, "a.toml", "first user\n");
    let spec_b = busybox_spec(&work, "b.toml", "second user, other content\n");
    let a = work.build_spec(&spec_a, &dest, &[]);

    let mark = reg.mark();
    let b = work.build_spec(&spec_b, &dest, &[]);
    let (a_layers, b_layers) = (layer_digests(&a), layer_digests(&b));
    assert_eq!(a_layers.len(), 2, "{:#}", a.json);
    assert_eq!(b_layers.len(), 2, "{:#}", b.json);
    assert_eq!(a_layers[0], b_layers[0], "the base layer is shared");
    assert_ne!(a_layers[1], b_layers[1], "the user layers differ");
    assert_eq!(a.name(), b.name(), "same base half, same name");
    assert_ne!(a.tag(), b.tag(), "other user half, other tag");

    let requests = reg.requests_since(mark);
    let committed: BTreeSet<String> = committed_digests(&requests).into_iter().collect();
    assert_eq!(
        committed,
        BTreeSet::from([b_layers[1].clone(), b.str("config_digest").to_owned()]),
        "only the new user layer and the new config are uploaded: {requests:#?}"
    );
    let shared = &b_layers[0];
    assert!(
        !upload_requests(&requests)
            .iter()
            .any(|r| r.contains(shared.as_str()) || r.contains(&shared.replace(':', "%3A"))),
        "the shared base layer {shared} must not be uploaded: {requests:#?}"
    );
    assert!(
        requests.contains(&format!("HEAD /v2/ws/blobs/{shared}")),
        "strata asks whether the registry has the base layer: {requests:#?}"
    );
    let posts = requests.iter().filter(|r| r.starts_with("POST ")).count();
    assert_eq!(posts, 2, "two upload sessions: {requests:#?}");

    // Both tags resolve, with strata's digests.
    for build in [&a, &b] {
        let inspected = skopeo_inspect(&format!("{dest}:{}", build.tag()), &[]);
        assert_eq!(inspected["Digest"].as_str(), Some(build.digest()));
    }
}

// ---------------------------------------------------------------------------------------------
// push, pull, copy

#[test]
fn push_and_pull_round_trip_oci_layouts() {
    let reg = Registry::start(Auth::None);
    let work = Work::new();
    let spec = busybox_spec(&work, "strata.toml", "round trip\n");
    let src = work.out("src");
    let built = work.build_spec(&spec, &format!("oci:{}", src.display()), &[]);

    let out = strata_ok(
        &work,
        &[
            "push",
            &format!("oci:{}", src.display()),
            &reg.docker("round/trip:v1"),
            "--json",
        ],
    );
    let pushed = json_stdout(&out);
    assert_eq!(
        pushed["digest"].as_str(),
        Some(built.digest()),
        "the registry's digest is the layout's: {pushed:#}"
    );
    let outcomes: Vec<&str> = pushed["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["uploaded"; 3], "{pushed:#}");
    let mut expected = layout_blobs(&src);
    expected.remove(built.digest());
    assert_eq!(
        committed_digests(&reg.requests_since(0))
            .into_iter()
            .collect::<BTreeSet<_>>(),
        expected,
        "the registry received the config and every layer"
    );

    let dst = work.out("dst");
    let out = strata_ok(
        &work,
        &[
            "pull",
            &reg.docker("round/trip:v1"),
            "--output",
            &format!("oci:{}", dst.display()),
            "--json",
        ],
    );
    assert_eq!(json_stdout(&out)["digest"].as_str(), Some(built.digest()));
    let (src_digest, _) = layout_manifest(&src);
    let (dst_digest, dst_tag) = layout_manifest(&dst);
    assert_eq!(dst_digest, src_digest, "identical manifest digests");
    assert_eq!(dst_tag.as_deref(), Some("v1"), "the layout is tagged v1");
    assert_eq!(layout_blobs(&dst), layout_blobs(&src));
    for digest in layout_blobs(&src) {
        assert_eq!(
            sha256_file(&blob(&dst, &digest)),
            digest,
            "pulled blob {digest} has its digest (checked by sha256sum)"
        );
    }
    let inspected = json_stdout(&run_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:v1", dst.display())),
    ));
    assert_eq!(inspected["Digest"].as_str(), Some(built.digest()));

    // By digest as well.
    let by_digest = work.out("by-digest");
    strata_ok(
        &work,
        &[
            "pull",
            &format!("{}@{}", reg.docker("round/trip"), built.digest()),
            "--output",
            &format!("oci:{}", by_digest.display()),
        ],
    );
    assert_eq!(layout_manifest(&by_digest).0, src_digest);

    // An image skopeo pushed with Docker v2 schema 2 media types pulls, and pushes back
    // unchanged to another repository.
    if !require(&["skopeo"]) {
        return;
    }
    run_ok(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &format!("oci:{}", src.display()),
        &reg.docker("round/docker:v2s2"),
    ]));
    let docker_digest = skopeo_inspect(&reg.docker("round/docker:v2s2"), &[])["Digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(
        docker_digest,
        built.digest(),
        "skopeo converted the manifest"
    );
    let from_docker = work.out("from-docker");
    strata_ok(
        &work,
        &[
            "pull",
            &reg.docker("round/docker:v2s2"),
            "--output",
            &format!("oci:{}", from_docker.display()),
        ],
    );
    assert_eq!(layout_manifest(&from_docker).0, docker_digest);
    let inspected = json_stdout(&run_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}", from_docker.display())),
    ));
    assert_eq!(inspected["Digest"].as_str(), Some(docker_digest.as_str()));
    let out = strata_ok(
        &work,
        &[
            "push",
            &format!("oci:{}", from_docker.display()),
            &reg.docker("round/again:1"),
            "--json",
        ],
    );
    assert_eq!(
        json_stdout(&out)["digest"].as_str(),
        Some(docker_digest.as_str()),
        "the Docker manifest is pushed byte for byte"
    );
}

#[test]
fn copy_from_registry_to_docker_archive_loads_in_podman() {
    let reg = Registry::start(Auth::None);
    let work = Work::new();
    let spec = busybox_spec(&work, "strata.toml", "copied\n");
    let built = work.build_spec(&spec, &reg.docker("ws"), &[]);
    let source = format!("{}:{}", reg.docker("ws"), built.tag());

    // Registry to registry, another repository of the same registry: the registry mounts
    // every blob from the source repository; no blob data is sent.
    let mark = reg.mark();
    let out = strata_ok(
        &work,
        &[
            "--tls-verify=false",
            "copy",
            &source,
            &reg.docker("mirror/ws:copied"),
            "--json",
        ],
    );
    let copied = json_stdout(&out);
    assert_eq!(copied["digest"].as_str(), Some(built.digest()));
    let blobs = copied["blobs"].as_array().unwrap();
    assert_eq!(blobs.len(), built.layers().len() + 1, "{copied:#}");
    for b in blobs {
        assert_eq!(b["outcome"], "mounted", "{copied:#}");
    }
    let requests = reg.requests_since(mark);
    let uploads = upload_requests(&requests);
    assert_eq!(
        uploads.len(),
        blobs.len(),
        "one mount per blob: {requests:#?}"
    );
    assert!(
        uploads
            .iter()
            .all(|u| u.starts_with("POST /v2/mirror/ws/blobs/uploads/?")
                && u.contains("mount=")
                && u.contains("from=ws")),
        "blobs are mounted from ws, not uploaded: {requests:#?}"
    );
    assert_eq!(
        skopeo_inspect(&reg.docker("mirror/ws:copied"), &[])["Digest"].as_str(),
        Some(built.digest()),
        "the copy has the source's manifest digest"
    );

    // To another registry: uploaded, same digest.
    let other = Registry::start(Auth::None);
    let out = strata_ok(
        &work,
        &["copy", &source, &other.docker("ws:copied"), "--json"],
    );
    let copied = json_stdout(&out);
    assert_eq!(copied["digest"].as_str(), Some(built.digest()));
    for b in copied["blobs"].as_array().unwrap() {
        assert_eq!(b["outcome"], "uploaded", "{copied:#}");
    }
    assert_eq!(
        skopeo_inspect(&other.docker("ws:copied"), &[])["Digest"].as_str(),
        Some(built.digest())
    );

    // Registry to docker-archive, loaded and run by podman.
    let archive = work.out("ws.tar");
    let out = strata_ok(
        &work,
        &[
            "--tls-verify=false",
            "copy",
            &source,
            &format!("docker-archive:{}", archive.display()),
        ],
    );
    let (_, digest) = tag_and_digest(&stdout(&out));
    assert_eq!(digest, built.digest());
    assert!(archive.is_file(), "copy wrote {}", archive.display());
    let load = podman_load(&archive);
    let loaded = format!("{}{}", stdout(&load), stderr(&load));
    let reference = loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|| panic!("podman load named no image: {loaded}"));
    let _cleanup = LoadedImage {
        tool: "podman",
        reference: reference.clone(),
    };
    assert!(
        reference.ends_with(&format!("ws:{}", built.tag())),
        "the archive is tagged with the source's repository and tag: {reference}"
    );
    podman_run_hi(&reference);
}

#[test]
fn concurrent_pushes_from_one_store_do_not_clobber_each_other() {
    let reg = Registry::start(Auth::None);
    let work = Work::new();
    let mut layouts = Vec::new();
    for name in ["one", "two"] {
        let spec = busybox_spec(&work, &format!("{name}.toml"), &format!("{name}\n"));
        let layout = work.out(name);
        let built = work.build_spec(&spec, &format!("oci:{}", layout.display()), &[]);
        layouts.push((
            format!("oci:{}", layout.display()),
            built.digest().to_owned(),
        ));
    }
    // Fresh repositories each round, so every push uploads its config from the store's
    // scratch directory while the other push does the same.
    for round in 0..8 {
        let children: Vec<_> = layouts
            .iter()
            .enumerate()
            .map(|(i, (layout, _))| {
                let mut cmd = work.strata();
                cmd.args(["push", layout, &reg.docker(&format!("r{round}/img{i}:t"))])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect();
        for (child, (layout, digest)) in children.into_iter().zip(&layouts) {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: pushing {layout} while another push ran from the same store \
                 failed: {}",
                stderr(&out)
            );
            assert!(stdout(&out).contains(digest.as_str()), "{}", stdout(&out));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// basic auth

const USER: &str = "alice";
const PASSWORD: &str = "Correct-Horse-9417-battery";
const WRONG: &str = "wrong-Staple-5521-xyzzy";

/// base64 of `s` (standard alphabet, padded), to make sure credentials do not leak encoded.
fn base64(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Panics if `out` (stdout and stderr) shows `secret`, plainly or base64-encoded.
fn assert_no_secret(out: &Output, secret: &str, what: &str) {
    let text = format!("{}{}", stdout(out), stderr(out));
    for needle in [
        secret.to_owned(),
        base64(secret),
        base64(&format!("{USER}:{secret}")),
    ] {
        assert!(
            !text.contains(&needle),
            "{what}: the output shows the password ({needle}):\n{text}"
        );
    }
}

/// A strata command that sees no credentials but the ones the test gives: HOME is a fresh
/// directory and the auth-file variables are unset.
fn isolated(work: &Work, home: &Path) -> Command {
    let mut cmd = work.strata();
    cmd.env("HOME", home)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_RUNTIME_DIR");
    cmd
}

/// `strata login HOST --username alice --password-stdin`, the password written on stdin.
fn login(work: &Work, home: &Path, host: &str, password: &str, authfile: Option<&Path>) -> Output {
    let mut cmd = isolated(work, home);
    if let Some(f) = authfile {
        cmd.arg("--authfile").arg(f);
    }
    cmd.args(["login", host, "--username", USER, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn basic_auth_creds_login_authfile_and_wrong_password() {
    let secrets = tempfile::tempdir().unwrap();
    let htpasswd = secrets.path().join("htpasswd");
    fs::write(&htpasswd, htpasswd_line(USER, PASSWORD)).unwrap();
    let reg = Registry::start(Auth::Htpasswd(htpasswd));
    let work = Work::new();
    let home = work.root().join("home");
    fs::create_dir_all(&home).unwrap();
    let spec = busybox_spec(&work, "strata.toml", "private\n");
    let layout = work.out("layout");
    let layout_arg = format!("oci:{}", layout.display());
    let built = work.build_spec(&spec, &layout_arg, &[]);

    // No credentials anywhere: refused, and said so.
    let out = strata_fails(isolated(&work, &home).args([
        "push",
        &layout_arg,
        &reg.docker("private/ws:v1"),
    ]));
    assert!(
        stderr(&out).contains("401") || stderr(&out).to_lowercase().contains("credentials"),
        "an anonymous push names the authentication failure: {}",
        stderr(&out)
    );

    // A wrong password: refused, and neither stderr nor --json output shows it.
    let wrong_creds = format!("{USER}:{WRONG}");
    for json in [false, true] {
        let mut cmd = isolated(&work, &home);
        cmd.args(["--creds", &wrong_creds, "push", &layout_arg])
            .arg(reg.docker("private/ws:v1"));
        if json {
            cmd.arg("--json");
        }
        let out = strata_fails(&mut cmd);
        assert_no_secret(&out, WRONG, "push with a wrong password");
        let err = stderr(&out);
        eprintln!("wrong password (--json: {json}): {err}");
        assert!(
            err.contains("401")
                || err.to_lowercase().contains("password")
                || err.to_lowercase().contains("unauthorized"),
            "the error says the credentials were refused: {err}"
        );
    }
    let out = strata_fails(isolated(&work, &home).args([
        "--creds",
        &wrong_creds,
        "build",
        spec.to_str().unwrap(),
        "--output",
        &reg.docker("private/ws"),
        "--json",
    ]));
    assert_no_secret(
        &out,
        WRONG,
        "build --output docker:// with a wrong password",
    );
    let out = login(&work, &home, &reg.host(), WRONG, None);
    assert!(
        !out.status.success(),
        "login with a wrong password must fail"
    );
    assert_no_secret(&out, WRONG, "login with a wrong password");
    assert!(
        !home.join(".docker/config.json").exists(),
        "a refused login stores nothing"
    );
    assert_eq!(
        reg.status("HEAD", "private/ws/manifests/v1"),
        401,
        "the registry requires authentication for reads too"
    );

    // --creds with the right password.
    let good_creds = format!("{USER}:{PASSWORD}");
    let out = run_ok(isolated(&work, &home).args([
        "--creds",
        &good_creds,
        "push",
        &layout_arg,
        &reg.docker("private/ws:v1"),
        "--json",
    ]));
    assert_no_secret(&out, PASSWORD, "push with --creds");
    assert_eq!(json_stdout(&out)["digest"].as_str(), Some(built.digest()));
    let inspected = skopeo_inspect(&reg.docker("private/ws:v1"), &["--creds", &good_creds]);
    assert_eq!(inspected["Digest"].as_str(), Some(built.digest()));

    // `strata login --authfile FILE`, then a push that reads FILE.
    let authfile = secrets.path().join("auth/auth.json");
    let out = login(&work, &home, &reg.host(), PASSWORD, Some(&authfile));
    assert!(
        out.status.success(),
        "login failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_no_secret(&out, PASSWORD, "login");
    let stored: Value = serde_json::from_slice(&fs::read(&authfile).unwrap()).unwrap();
    let mode = fs::metadata(&authfile).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the auth file must be private to its owner, like docker's: {mode:o}"
    );
    assert!(
        stored["auths"][reg.host()]["auth"].is_string(),
        "login stores docker-style `auths` for {}: {stored:#}",
        reg.host()
    );
    assert!(
        !home.join(".docker/config.json").exists(),
        "--authfile is used instead of ~/.docker/config.json"
    );
    let authfile_arg = authfile.to_str().unwrap();
    let out = run_ok(isolated(&work, &home).args([
        "--authfile",
        authfile_arg,
        "push",
        &layout_arg,
        &reg.docker("private/ws:from-authfile"),
        "--json",
    ]));
    assert_no_secret(&out, PASSWORD, "push after login");
    assert_eq!(json_stdout(&out)["digest"].as_str(), Some(built.digest()));
    let out = run_ok(isolated(&work, &home).args([
        "--authfile",
        authfile_arg,
        "build",
        spec.to_str().unwrap(),
        "--output",
        &reg.docker("private/ws"),
        "--json",
    ]));
    assert_no_secret(&out, PASSWORD, "build after login");
    assert_eq!(json_stdout(&out)["digest"].as_str(), Some(built.digest()));
    // skopeo reads the file strata wrote.
    let inspected = skopeo_inspect(
        &format!("{}:{}", reg.docker("private/ws"), built.tag()),
        &["--authfile", authfile_arg],
    );
    assert_eq!(inspected["Digest"].as_str(), Some(built.digest()));

    // Without --authfile, login writes ~/.docker/config.json and push finds it there.
    let out = login(&work, &home, &reg.host(), PASSWORD, None);
    assert!(out.status.success(), "login failed: {}", stderr(&out));
    assert!(home.join(".docker/config.json").is_file());
    run_ok(isolated(&work, &home).args(["push", &layout_arg, &reg.docker("private/ws:v2")]));
}

// ---------------------------------------------------------------------------------------------
// a registry killed mid-push

#[test]
fn registry_killed_mid_push_leaves_no_tag_and_retried_push_completes() {
    const MIB: u64 = 1 << 20;
    let mut reg = Registry::start(Auth::None);
    let work = Work::new();
    work.dir("big", 0o755);
    for i in 0..4 {
        write_noise(
            &work.spec_dir().join(format!("big/noise-{i}.bin")),
            50 * MIB,
            i + 1,
        );
    }
    work.file("small/hello.txt", "hello\n", 0o644);
    work.write_spec(
        r#"
[image]
name = "strata-e2e/killed"

[base]
tree = [ { src = "big", dest = "/big" } ]

[user]
tree = [ { src = "small", dest = "/small" } ]
"#,
    );
    let layout = work.out("layout");
    let layout_arg = format!("oci:{}", layout.display());
    let built = work.build(&layout_arg, &["--compression", "none"]);
    let big = built.layers()[0]["size"].as_u64().unwrap();
    assert!(
        big >= 200 * MIB,
        "the base layer holds the 200 MiB tree: {big}"
    );

    let dest = reg.docker("crash/ws");
    let manifest_path = format!("crash/ws/manifests/{}", built.tag());
    let log = work.root().join("push-1.log");
    let mut push = work
        .strata()
        .args(["push", &layout_arg, &dest])
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(work.root().join("push-1.err")).unwrap())
        .spawn()
        .unwrap();

    // Kill the registry once it holds a good part, but not all, of the big blob.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = 0;
    loop {
        seen = seen.max(reg.upload_bytes("crash/ws"));
        if seen >= 24 * MIB {
            reg.kill();
            break;
        }
        if let Some(status) = push.try_wait().unwrap() {
            panic!(
                "the push ended ({status}) before the registry could be killed; it had received \
                 {seen} bytes of the big layer; stderr: {}",
                fs::read_to_string(work.root().join("push-1.err")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the big upload never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        seen < big,
        "the registry was killed before it received the whole blob ({seen} of {big})"
    );

    // strata gives up (after its retries) with an error and prints no reference.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = push.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = push.kill();
            panic!("strata push did not give up within 300 s of the registry dying");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = fs::read_to_string(work.root().join("push-1.err")).unwrap();
    eprintln!("killed after {seen} of {big} bytes; strata said: {err}");
    assert!(
        !status.success(),
        "the push cannot succeed with the registry dead; stderr: {err}"
    );
    assert!(err.contains("error"), "strata reports the failure: {err}");
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "",
        "a failed push prints no reference"
    );

    // Restarted on the same storage: no tag, and skopeo agrees.
    reg.restart();
    assert_eq!(
        reg.status("HEAD", &manifest_path),
        404,
        "a tag survived the crash"
    );
    assert_eq!(
        reg.status("HEAD", &format!("crash/ws/manifests/{}", built.digest())),
        404,
        "the manifest survived the crash"
    );
    let out = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("{dest}:{}", built.tag()),
    ]));
    assert!(
        !out.status.success(),
        "skopeo must not find the tag after the crash: {}",
        stdout(&out)
    );

    // The retried push completes, and the registry now serves the image.
    let mark = reg.mark();
    let out = strata_ok(&work, &["push", &layout_arg, &dest, "--json"]);
    let pushed = json_stdout(&out);
    assert_eq!(pushed["digest"].as_str(), Some(built.digest()));
    let big_digest = built.layers()[0]["digest"].as_str().unwrap();
    let big_outcome = pushed["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["digest"] == big_digest)
        .map(|b| b["outcome"].clone());
    assert_eq!(
        big_outcome,
        Some(Value::from("uploaded")),
        "the big layer is uploaded again: {pushed:#}"
    );
    assert!(
        committed_digests(&reg.requests_since(mark)).contains(&big_digest.to_owned()),
        "the registry committed the big layer on the retry"
    );
    assert_eq!(reg.status("HEAD", &manifest_path), 200);
    let inspected = skopeo_inspect(&format!("{dest}:{}", built.tag()), &[]);
    assert_eq!(inspected["Digest"].as_str(), Some(built.digest()));
    assert_eq!(
        reg.status("HEAD", &format!("crash/ws/blobs/{big_digest}")),
        200,
        "the big blob is there"
    );
}
