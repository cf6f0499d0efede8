//! Golden digests: `examples/hello` and `examples/layered` (no network needed) build to the
//! manifest and config digests pinned in `tests/golden/*.digests`, so a code or dependency
//! change that alters image bytes (tar headers, gzip/zstd output, JSON layout, annotations)
//! fails here instead of silently changing every user's image digests.
//!
//! The examples copy the host's `/bin/busybox`, whose bytes depend on the installed
//! busybox-static, and keep the host's permission bits (which depend on the checkout's umask).
//! To pin strata's bytes and nothing else, each example is copied into a temp dir with the modes
//! git records (0755 for directories and executables, 0644 otherwise), `/bin/busybox` replaced
//! by the committed stand-in `tests/golden/busybox-stand-in`, and `architecture = "amd64"` set.
//!
//! To update the pins deliberately (after checking that the change of bytes is intended, and
//! saying so in the commit message):
//!
//! ```sh
//! STRATA_UPDATE_GOLDEN=1 cargo test -p strata --test golden
//! ```

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const COMPRESSIONS: [&str; 3] = ["gzip", "zstd", "none"];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Copies `src` to `dest` recursively with git's modes: directories 0755, files 0755 when any
/// execute bit is set and 0644 otherwise; symlinks as they are.
fn copy_normalised(src: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    set_mode(dest, 0o755);
    let mut entries: Vec<_> = fs::read_dir(src).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).unwrap();
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from).unwrap(), &to).unwrap();
        } else if meta.is_dir() {
            copy_normalised(&from, &to);
        } else {
            fs::copy(&from, &to).unwrap();
            let exec = meta.permissions().mode() & 0o111 != 0;
            set_mode(&to, if exec { 0o755 } else { 0o644 });
        }
    }
}

/// The example's spec in `work`, made independent of the host (see the module comment).
fn prepare(work: &Work, example: &str) -> PathBuf {
    let root = work.root().join("examples");
    for dir in ["hello", "layered"] {
        copy_normalised(&examples_dir().join(dir), &root.join(dir));
    }
    let dir = root.join(example);
    fs::copy(
        golden_dir().join("busybox-stand-in"),
        dir.join("busybox-stand-in"),
    )
    .unwrap();
    set_mode(&dir.join("busybox-stand-in"), 0o755);
    let spec = dir.join("strata.toml");
    let text = fs::read_to_string(&spec).unwrap();
    assert!(
        text.contains("src = \"/bin/busybox\"") && text.contains("[image]\n"),
        "examples/{example}/strata.toml no longer copies /bin/busybox; update tests/golden.rs"
    );
    let text = text
        .replace("src = \"/bin/busybox\"", "src = \"busybox-stand-in\"")
        .replacen("[image]\n", "[image]\narchitecture = \"amd64\"\n", 1);
    fs::write(&spec, text).unwrap();
    spec
}

/// The manifest and config digests of the one image in an OCI layout.
fn layout_digests(layout: &Path) -> (String, String) {
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let hex = manifest.strip_prefix("sha256:").unwrap();
    let path = layout.join("blobs/sha256").join(hex);
    assert_eq!(
        sha256_file(&path),
        manifest,
        "manifest blob {hex} is corrupt"
    );
    let body: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let config = body["config"]["digest"].as_str().unwrap().to_owned();
    (manifest, config)
}

/// Builds `example` with every compression (each with 1 and 2 threads, which must agree) and
/// compares the digests with `tests/golden/{example}.digests`.
fn check_golden(example: &str) {
    let work = Work::new();
    let spec = prepare(&work, example);
    let mut actual = format!(
        "# examples/{example}, built by crates/strata/tests/golden.rs (see there how to update).\n\
         # COMPRESSION MANIFEST-DIGEST CONFIG-DIGEST\n"
    );
    for compression in COMPRESSIONS {
        let mut seen = None;
        for threads in ["1", "2"] {
            let out = work.out(&format!("{compression}-{threads}"));
            let dest = format!("oci:{}", out.display());
            let build = work.build_spec(
                &spec,
                &dest,
                &["--compression", compression, "--threads", threads],
            );
            let (manifest, config) = layout_digests(&out);
            assert_eq!(
                build.digest(),
                manifest,
                "--json digest vs the layout's index"
            );
            if let Some(first) = &seen {
                assert_eq!(
                    first,
                    &(manifest.clone(), config.clone()),
                    "{example} ({compression}) differs between 1 and 2 threads"
                );
            }
            seen = Some((manifest, config));
        }
        let (manifest, config) = seen.unwrap();
        writeln!(actual, "{compression} {manifest} {config}").unwrap();
    }
    let golden = golden_dir().join(format!("{example}.digests"));
    if std::env::var_os("STRATA_UPDATE_GOLDEN").is_some() {
        fs::write(&golden, &actual).unwrap();
        eprintln!("golden: wrote {}", golden.display());
        return;
    }
    let expected = fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nTo create it: STRATA_UPDATE_GOLDEN=1 cargo test -p strata --test golden",
            golden.display()
        )
    });
    assert!(
        expected == actual,
        "examples/{example} no longer builds to the pinned digests in {}.\n\
         --- pinned\n{expected}--- now\n{actual}\
         If the change of image bytes is intended (a format fix, a deliberate dependency \
         update), update the pins with\n    STRATA_UPDATE_GOLDEN=1 cargo test -p strata --test golden\n\
         and say in the commit message why every image digest changes.",
        golden.display()
    );
}

#[test]
fn hello_digests_are_pinned() {
    check_golden("hello");
}

#[test]
fn layered_digests_are_pinned() {
    check_golden("layered");
}
