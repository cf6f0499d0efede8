//! The tree source passes the shared source suite (`strata_test_support::source_suite`).

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;

use strata_fstree::Dest;
use strata_source::{Source, SourceContext, TreeInput, TreeSource};
use strata_test_support::source_suite::{check_source, check_source_error};

fn input(src: &Path, dest: &str, context: &str) -> TreeInput {
    TreeInput {
        src: src.to_owned(),
        dest: Dest::new(dest).unwrap(),
        mode: None,
        uid: Some(1000),
        gid: None,
        context: context.to_owned(),
    }
}

#[test]
fn tree_source_passes_the_source_suite() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("files");
    std::fs::create_dir_all(root.join("etc/app")).unwrap();
    std::fs::write(root.join("etc/app/conf"), "key = 1\n").unwrap();
    std::fs::write(root.join("etc/motd"), "hello\n").unwrap();
    std::os::unix::fs::symlink("conf", root.join("etc/app/link")).unwrap();
    std::fs::write(dir.path().join("single"), "one file\n").unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let session = strata_source::Session::new();
    let ctx = SourceContext::new(&cache, "amd64", &session);

    let (root2, single) = (root.clone(), dir.path().join("single"));
    let make = move || -> Box<dyn Source> {
        Box::new(TreeSource::new(vec![
            input(&root2, "/srv", "strata.toml:5:3: base.tree[0]"),
            input(
                &single,
                "/usr/share/single",
                "strata.toml:6:3: base.tree[1]",
            ),
        ]))
    };
    let resolution = check_source(&make, &ctx);
    assert_eq!(resolution.objects.len(), 2);

    let broken = TreeSource::new(vec![
        input(&root, "/srv", "strata.toml:5:3: base.tree[0]"),
        input(
            &dir.path().join("gone"),
            "/gone",
            "strata.toml:6:3: base.tree[1]",
        ),
    ]);
    check_source_error(&broken, &ctx, "strata.toml:6:3: base.tree[1]", &["gone"]);
}
