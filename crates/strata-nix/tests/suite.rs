//! The Nix source passes the shared source suite (`strata_test_support::source_suite`), with
//! the real `nix` commands on a private chroot store (no substituters, no sandbox).

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::process::Command;

use strata_fstree::ImagePath;
use strata_nix::{NixInput, NixSource};
use strata_source::{Source, SourceContext};
use strata_test_support::require;
use strata_test_support::source_suite::{check_source, check_source_error};

const NIX_CONFIG: &str = "substituters =\nsandbox = false\nbuild-users-group =\n";

/// `nix-store --add PATH` into the chroot store at `store`; returns the store path.
fn add(store: &Path, path: &Path) -> String {
    let out = Command::new("nix-store")
        .arg("--store")
        .arg(store)
        .arg("--add")
        .arg(path)
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix-store --add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn input(dir: &Path, store: &Path, paths: Vec<String>) -> NixInput {
    let mut input = NixInput::new(
        Vec::new(),
        paths,
        ImagePath::new("nix/var/nix/profiles/default").unwrap(),
        dir.to_owned(),
        "strata.toml:9:1: user.nix".to_owned(),
    );
    input.store = Some(store.display().to_string());
    input
}

#[test]
fn nix_source_passes_the_source_suite() {
    if !require(&["nix", "nix-store"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let tool = dir.path().join("tool");
    std::fs::create_dir_all(tool.join("bin")).unwrap();
    std::fs::write(tool.join("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::write(dir.path().join("data.txt"), "data\n").unwrap();
    let tool_path = add(&store, &tool);
    let data_path = add(&store, &dir.path().join("data.txt"));
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let session = strata_source::Session::new();
    let ctx = SourceContext::new(&cache, "amd64", &session);

    let (d, s) = (dir.path().to_owned(), store.clone());
    let paths = vec![tool_path.clone(), data_path];
    let make =
        move || -> Box<dyn Source> { Box::new(NixSource::new(input(&d, &s, paths.clone()))) };
    let resolution = check_source(&make, &ctx);
    assert!(
        resolution.objects.iter().any(|o| o.id == tool_path),
        "{:?}",
        resolution.roots
    );

    let missing = format!("{}-missing", &tool_path[..tool_path.len() - "-tool".len()]);
    let broken = NixSource::new(input(dir.path(), &store, vec![missing]));
    check_source_error(&broken, &ctx, "strata.toml:9:1: user.nix", &[]);
}
