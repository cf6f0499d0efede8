//! The database strata writes is a store the real nix accepts: a closure built by nix in one
//! chroot store, copied file by file into a second one with only strata's database, verifies
//! with `nix-store --verify --check-contents`, and `nix path-info --json` reports there what it
//! reported in the original store. The schema is the one nix itself creates.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::process::Command;

use strata_fstree::ImagePath;
use strata_fstree::{Content, EntryKind};
use strata_nix::{NixInput, NixSource, db};
use strata_source::{Session, Source, SourceContext};
use strata_test_support::require;

const NIX_CONFIG: &str = "substituters =\nsandbox = false\nbuild-users-group =\n\
                          experimental-features = nix-command\n";

fn nix(program: &str, store: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("--store").arg(store).env("NIX_CONFIG", NIX_CONFIG);
    cmd
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `nix path-info --json --recursive`, without the registration time (the one field strata
/// sets on purpose), sorted by path.
fn path_info(store: &Path, roots: &[String]) -> Vec<serde_json::Value> {
    let out = ok(nix("nix", store)
        .args(["path-info", "--json", "--recursive"])
        .args(roots));
    let mut infos: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    for info in &mut infos {
        info.as_object_mut().unwrap().remove("registrationTime");
    }
    infos.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    infos
}

fn schema(db: &Path) -> Vec<(String, String, Option<String>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("select type, name, sql from sqlite_master order by type, name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn registered_closure_is_a_valid_store_to_nix() {
    if !require(&["nix", "nix-store", "nix-build"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let busybox = std::fs::read("/bin/busybox").expect("scripts/test installs busybox-static");
    std::fs::create_dir_all(d.join("busybox/bin")).unwrap();
    std::fs::write(d.join("busybox/bin/busybox"), busybox).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        d.join("busybox/bin/busybox"),
        std::fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    std::os::unix::fs::symlink("busybox", d.join("busybox/bin/sh")).unwrap();
    // A built path (deriver, `ultimate`, references, a self-reference) over an added one
    // (content address).
    std::fs::write(
        d.join("app.nix"),
        r##"let busybox = builtins.path { path = ./busybox; name = "busybox"; };
in derivation {
  name = "app";
  system = builtins.currentSystem;
  builder = "${busybox}/bin/sh";
  args = [ "-c" "${busybox}/bin/busybox mkdir -p $out/bin; echo \"#!${busybox}/bin/sh\necho $out\" > $out/bin/app" ];
}
"##,
    )
    .unwrap();
    let store = d.join("store");
    let app = ok(nix("nix-build", &store)
        .args(["--no-out-link", "app.nix"])
        .current_dir(d))
    .trim()
    .to_owned();

    let mut input = NixInput::new(
        Vec::new(),
        vec![app.clone()],
        ImagePath::new("nix/var/nix/profiles/default").unwrap(),
        d.to_owned(),
        "strata.toml:1:1: user.nix".to_owned(),
    );
    input.store = Some(store.display().to_string());
    let source = NixSource::new(input);
    let roots = source.realise().unwrap();
    let infos = source.closure(&roots).unwrap();
    assert_eq!(infos.len(), 2, "{infos:?}");
    let built = infos.iter().find(|i| i.path == app).unwrap();
    assert!(built.deriver.is_some() && built.ultimate, "{built:?}");
    assert!(built.references.contains(&app), "self-reference: {built:?}");

    // A second store holding the closure's files and strata's database, nothing else.
    let copy = d.join("copy");
    let state = copy.join("nix/var/nix/db");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(copy.join("nix/store")).unwrap();
    for info in &infos {
        let rel = info.path.trim_start_matches('/');
        ok(Command::new("cp")
            .arg("-a")
            .arg(store.join(rel))
            .arg(copy.join(rel)));
    }
    let (s1, s2) = (d.join("scratch1"), d.join("scratch2"));
    std::fs::create_dir_all(&s1).unwrap();
    std::fs::create_dir_all(&s2).unwrap();
    let bytes = db::database(&infos, &s1).unwrap();
    let mut reversed = infos.clone();
    reversed.reverse();
    assert_eq!(
        bytes,
        db::database(&reversed, &s2).unwrap(),
        "the same closure gives the same bytes"
    );
    std::fs::write(state.join("db.sqlite"), &bytes).unwrap();
    std::fs::write(state.join("schema"), db::SCHEMA_VERSION).unwrap();
    assert_eq!(
        std::fs::read_to_string(store.join("nix/var/nix/db/schema")).unwrap(),
        db::SCHEMA_VERSION,
        "the host's nix uses the same schema version"
    );
    assert_eq!(
        schema(&state.join("db.sqlite")),
        schema(&store.join("nix/var/nix/db/db.sqlite")),
        "tables, indexes and trigger as nix creates them"
    );

    ok(nix("nix-store", &copy).args(["--verify", "--check-contents"]));
    assert_eq!(path_info(&copy, &roots), path_info(&store, &roots));
    let refs = ok(nix("nix-store", &copy).args(["--query", "--requisites", &app]));
    assert_eq!(refs.lines().count(), 2, "{refs}");

    // Two Nix halves of one build: the user half's database registers the base half's
    // closure too.
    std::fs::write(d.join("base.txt"), "base\n").unwrap();
    let base_path = ok(nix("nix-store", &store)
        .arg("--add")
        .arg(d.join("base.txt")))
    .trim()
    .to_owned();
    let half = |paths: Vec<String>, database: bool| {
        let mut input = NixInput::new(
            Vec::new(),
            paths,
            ImagePath::new("run/current-system/sw").unwrap(),
            d.to_owned(),
            "strata.toml:1:1: base.nix".to_owned(),
        );
        input.store = Some(store.display().to_string());
        input.database = database;
        NixSource::new(input)
    };
    let cache = d.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let session = Session::new();
    let ctx = SourceContext::new(&cache, "amd64", &session);
    let base = half(vec![base_path.clone()], false).resolve(&ctx).unwrap();
    assert!(
        base.customisation
            .iter()
            .all(|e| !e.path.as_str().contains("db.sqlite"))
    );
    let user = half(vec![app.clone()], true).resolve(&ctx).unwrap();
    let db_entry = user
        .customisation
        .iter()
        .find(|e| e.path.as_str() == "nix/var/nix/db/db.sqlite")
        .expect("the user half writes the database");
    let EntryKind::File {
        content: Content::Inline(bytes),
        ..
    } = &db_entry.kind
    else {
        panic!("{db_entry:?}")
    };
    let both = d.join("both.sqlite");
    std::fs::write(&both, bytes).unwrap();
    let conn = rusqlite::Connection::open(&both).unwrap();
    let mut stmt = conn
        .prepare("select path from ValidPaths order by path")
        .unwrap();
    let registered: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut want: Vec<String> = infos.iter().map(|i| i.path.clone()).collect();
    want.push(base_path.clone());
    want.sort();
    assert_eq!(registered, want);
    let roots: Vec<String> = user
        .customisation
        .iter()
        .filter(|e| e.path.as_str().starts_with("nix/var/nix/gcroots/strata/"))
        .map(|e| e.path.file_name().to_owned())
        .collect();
    assert_eq!(
        roots.len(),
        2,
        "a GC root per requested output of both halves: {roots:?}"
    );

    // A damaged file is caught, so the verification above checked the registered hashes.
    let script = copy.join(app.trim_start_matches('/')).join("bin/app");
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&script, perms).unwrap();
    std::fs::write(&script, "changed\n").unwrap();
    let out = nix("nix-store", &copy)
        .args(["--verify", "--check-contents"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was modified") && err.contains(&app), "{err}");
}
