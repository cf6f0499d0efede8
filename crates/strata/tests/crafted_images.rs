//! Images crafted to break their readers: digests that climb out of the layout, digests that
//! are not ASCII, docker-archive members outside the archive. Every command that reads an
//! image (inspect, run, push, check) must refuse them with an error naming the bad digest,
//! never open a file outside the image, and never panic. (Issue 11, point 3.)

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const TRAVERSAL: &str = "sha256:../../../../etc/passwd";

/// Builds a one-file image into an OCI layout and returns the layout's directory.
fn layout(work: &Work) -> PathBuf {
    work.file("t/hello.txt", "hello\n", 0o644);
    work.write_spec(
        r#"
[image]
name = "crafted"

[base]
tree = [ { src = "t", dest = "/opt" } ]
"#,
    );
    let dir = work.out("oci");
    work.build(&format!("oci:{}", dir.display()), &[]);
    dir
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Replaces the manifest digest in `index.json`.
fn set_index_digest(dir: &Path, digest: &str) {
    let path = dir.join("index.json");
    let mut index = read_json(&path);
    index["manifests"][0]["digest"] = digest.into();
    fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Rewrites the manifest with `edit` applied, stores it under its real digest, and points
/// `index.json` at it (so the manifest itself passes its digest check).
fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let index = read_json(&dir.join("index.json"));
    let old = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.strip_prefix("sha256:").unwrap())
    };
    let mut manifest = read_json(&blob(old));
    edit(&mut manifest);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    fs::write(blob(&digest), &bytes).unwrap();
    set_index_digest(dir, &digest);
}

fn inspect(work: &Work, image: &str) -> Output {
    run(work.strata().args(["inspect", image]))
}

/// The command failed cleanly: a non-zero status, an `error:` line naming `needle`, no
/// panic, and nothing of /etc/passwd printed.
fn assert_refused(out: &Output, needle: &str) {
    let (stdout, stderr) = (stdout(out), stderr(out));
    assert!(!out.status.success(), "accepted:\n{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(
        stderr.contains(needle),
        "the error does not name {needle:?}:\n{stderr}"
    );
    assert!(!stdout.contains("root:"), "printed /etc/passwd:\n{stdout}");
}

fn not_a_digest(digest: &str) -> String {
    format!("{digest:?} is not a valid digest")
}

#[test]
fn inspect_refuses_index_digest_sha256_dotdot_etc_passwd() {
    let work = Work::new();
    let dir = layout(&work);
    set_index_digest(&dir, TRAVERSAL);
    let out = inspect(&work, &format!("oci:{}", dir.display()));
    assert_refused(&out, &not_a_digest(TRAVERSAL));
    assert!(stderr(&out).contains("index.json"), "{}", stderr(&out));
}

#[test]
fn run_refuses_index_digest_sha256_dotdot_etc_passwd() {
    let work = Work::new();
    let dir = layout(&work);
    set_index_digest(&dir, TRAVERSAL);
    let out =
        run(work
            .strata()
            .args(["run", &format!("oci:{}", dir.display()), "--", "/bin/true"]));
    assert_refused(&out, &not_a_digest(TRAVERSAL));
    assert_eq!(out.status.code(), Some(125), "the sandbox never started");
}

#[test]
fn push_refuses_index_digest_sha256_dotdot_etc_passwd() {
    let work = Work::new();
    let dir = layout(&work);
    set_index_digest(&dir, TRAVERSAL);
    // Nothing listens on port 1: the image is refused before any registry is contacted.
    let out = run(work.strata().args([
        "push",
        &format!("oci:{}", dir.display()),
        "docker://127.0.0.1:1/crafted:v1",
    ]));
    assert_refused(&out, &not_a_digest(TRAVERSAL));
}

#[test]
fn check_refuses_index_digest_sha256_dotdot_etc_passwd() {
    let work = Work::new();
    let dir = layout(&work);
    set_index_digest(&dir, TRAVERSAL);
    let out = run(work
        .strata()
        .args(["check", &format!("oci:{}", dir.display()), "--coder"]));
    assert_refused(&out, &not_a_digest(TRAVERSAL));
}

#[test]
fn layer_and_config_digests_sha256_dotdot_are_refused_too() {
    let work = Work::new();
    let dir = layout(&work);
    edit_manifest(&dir, |m| m["layers"][0]["digest"] = TRAVERSAL.into());
    let image = format!("oci:{}", dir.display());
    assert_refused(&inspect(&work, &image), &not_a_digest(TRAVERSAL));
    let check = run(work.strata().args(["check", &image, "--coder"]));
    assert_refused(&check, &not_a_digest(TRAVERSAL));

    let dir = work.out("oci");
    edit_manifest(&dir, |m| {
        m["layers"][0]["digest"] = format!("sha256:{}", "0".repeat(64)).into();
        m["config"]["digest"] = TRAVERSAL.into();
    });
    assert_refused(&inspect(&work, &image), &not_a_digest(TRAVERSAL));
}

#[test]
fn non_ascii_digest_is_an_error_not_a_panic() {
    let work = Work::new();
    let dir = layout(&work);
    // Two-byte characters: slicing the first 19 bytes for the layer table fell inside one.
    let digest = format!("sha256:{}", "é".repeat(32));
    edit_manifest(&dir, |m| m["layers"][0]["digest"] = digest.clone().into());
    let image = format!("oci:{}", dir.display());
    assert_refused(&inspect(&work, &image), "is not a valid digest");
    assert_refused(
        &run(work.strata().args(["inspect", &image, "--json"])),
        "is not a valid digest",
    );
    set_index_digest(&dir, &digest);
    assert_refused(&inspect(&work, &image), "is not a valid digest");
}

#[test]
fn a_manifest_that_does_not_match_its_digest_is_refused() {
    let work = Work::new();
    let dir = layout(&work);
    let index = read_json(&dir.join("index.json"));
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let path = dir
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    let mut bytes = fs::read(&path).unwrap();
    bytes.push(b' ');
    fs::write(&path, bytes).unwrap();
    let out = inspect(&work, &format!("oci:{}", dir.display()));
    assert_refused(&out, &format!("should have digest {digest}"));
}

/// A docker-archive whose manifest.json names its config `../../../../etc/passwd`.
#[test]
fn docker_archive_config_dotdot_etc_passwd_is_refused() {
    let work = Work::new();
    layout(&work);
    let archive = work.out("image.tar");
    work.build(&format!("docker-archive:{}", archive.display()), &[]);
    let manifest = serde_json::json!([{
        "Config": "../../../../etc/passwd",
        "RepoTags": ["crafted:latest"],
        "Layers": [],
    }]);
    let crafted = work.out("crafted.tar");
    {
        let mut b = tar::Builder::new(fs::File::create(&crafted).unwrap());
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "manifest.json", &bytes[..]).unwrap();
        b.finish().unwrap();
    }
    let image = format!("docker-archive:{}", crafted.display());
    for args in [
        vec!["inspect", &image],
        vec!["check", &image, "--coder"],
        vec!["push", &image, "docker://127.0.0.1:1/crafted:v1"],
    ] {
        let out = run(work.strata().args(&args));
        assert_refused(&out, "names a member outside the archive");
    }
}
