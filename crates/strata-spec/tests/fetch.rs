//! The `fetch` entries of a half: parsing, validation messages and the canonical form.

use std::path::Path;

use strata_spec::{Part, Spec};

const FILE: &str = "examples/x/strata.toml";

fn parse(text: &str) -> Spec {
    Spec::parse(text, Path::new(FILE)).unwrap_or_else(|e| panic!("should parse:\n{e}"))
}

fn error(text: &str) -> String {
    match Spec::parse(text, Path::new(FILE)) {
        Ok(_) => panic!("spec should be rejected:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

#[test]
fn entries_parse_with_defaults_and_normalisation() {
    let spec = parse(&format!(
        "[base]\nfetch = [\n  {{ url = \"https://example.org/dc\", sha256 = \"{}\", dest = \"/usr/local/bin/dc\", mode = \"0755\" }},\n  {{ url = \"https://example.org/go.tgz\", dest = \"/usr/local/go/\", unpack = \"tgz\", strip_components = 1, uid = 1000 }},\n]\n",
        SHA.to_uppercase()
    ));
    let f = &spec.base.fetch;
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].sha256.as_deref(), Some(SHA), "hashes are lowercased");
    assert_eq!(f[0].mode, Some(0o755));
    assert_eq!(f[0].dest.absolute(), "/usr/local/bin/dc");
    assert_eq!(f[0].key, "base.fetch[0]");
    assert_eq!((f[0].location.line, f[0].location.column), (3, 3));
    assert_eq!(f[1].sha256, None);
    assert_eq!(f[1].unpack.as_deref(), Some("tar.gz"));
    assert_eq!(f[1].strip_components, Some(1));
    assert_eq!(f[1].uid, Some(1000));
    assert!(spec.user.fetch.is_empty());
    assert!(spec.canonical(Part::Base).contains("\"fetch\":["));
    assert!(
        !spec.canonical(Part::User).contains("fetch"),
        "absent when unused"
    );
}

#[test]
fn bad_entries_are_reported_with_file_line_column_and_key() {
    let text = "[user]\nfetch = [\n  { url = \"ftp://x/y\", dest = \"rel\", sha256 = \"abc\" },\n  { url = \"https://x/y\", dest = \"/y\", unpack = \"rar\" },\n  { url = \"https://x/y\", dest = \"/z\", strip_components = 1 },\n  { dest = \"/w\", colour = 1 },\n]\n";
    let msg = error(text);
    let want = [
        "examples/x/strata.toml:3:11: user.fetch[0].url: `ftp://x/y` is not a download URL",
        "examples/x/strata.toml:3:31: user.fetch[0].dest:",
        "examples/x/strata.toml:3:47: user.fetch[0].sha256: `abc` is not a SHA-256 (64 hex digits)",
        "examples/x/strata.toml:4:48: user.fetch[1].unpack: `rar` is not an archive format strata unpacks",
        "write one of tar.gz, tgz, tar.xz, tar.zst, tar.bz2, tar, zip",
        "examples/x/strata.toml:5:58: user.fetch[2].strip_components: strip_components needs unpack",
        "user.fetch[3].url: missing",
        "examples/x/strata.toml:6:18: user.fetch[3].colour: unknown key (expected one of: url, sha256, dest, mode, uid, gid, unpack, strip_components)",
    ];
    for w in want {
        assert!(msg.contains(w), "missing {w:?} in:\n{msg}");
    }
}

#[test]
fn credentials_are_not_shown_nor_hashed() {
    let msg = error("[base]\nfetch = [{ url = \"https://bob:s3cret@ x\", dest = \"/x\" }]\n");
    assert!(
        msg.contains("https://x") || msg.contains("not a download URL"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");
    let a = parse("[base]\nfetch = [{ url = \"https://bob:one@example.org/x\", dest = \"/x\" }]\n");
    let b = parse("[base]\nfetch = [{ url = \"https://bob:two@example.org/x\", dest = \"/x\" }]\n");
    assert_eq!(a.canonical(Part::Base), b.canonical(Part::Base));
    assert!(!a.canonical(Part::Base).contains("one@"));
}

#[test]
fn canonical_sees_every_fetch_change() {
    let base = format!(
        "[base]\nfetch = [{{ url = \"https://e.org/a\", sha256 = \"{SHA}\", dest = \"/a\" }}]\n"
    );
    let c = parse(&base).canonical(Part::Base);
    for edit in [
        base.replace("e.org/a", "e.org/b"),
        base.replace("dest = \"/a\"", "dest = \"/b\""),
        base.replace(SHA, &"1".repeat(64)),
        base.replace(" }]", ", mode = 0o755 }]"),
        base.replace(" }]", ", uid = 1 }]"),
        base.replace(" }]", ", unpack = \"zip\" }]"),
    ] {
        assert_ne!(parse(&edit).canonical(Part::Base), c, "{edit}");
    }
    let same = base.replace(" }]", ", uid = 0 }]");
    assert_eq!(
        parse(&same).canonical(Part::Base),
        c,
        "explicit defaults do not count"
    );
}

#[test]
fn python_sections_parse_validate_and_hash() {
    let spec = parse(
        "[user]\npython = { packages = [\"rich\", \"requests>=2.31\"], venv = \"/opt/tools/\" }\n",
    );
    let p = spec.user.python.as_ref().expect("python");
    assert_eq!(p.packages, ["rich", "requests>=2.31"]);
    assert_eq!(p.effective_venv().absolute(), "/opt/tools");
    assert_eq!(p.key, "user.python");
    let d = parse("[user]\npython = { packages = [\"rich\"] }\n");
    assert_eq!(
        d.user
            .python
            .as_ref()
            .map(|p| p.effective_venv().absolute())
            .as_deref(),
        Some("/opt/venv")
    );
    let explicit = parse("[user]\npython = { packages = [\"rich\"], venv = \"/opt/venv\" }\n");
    assert_eq!(d.canonical(Part::User), explicit.canonical(Part::User));
    let other = parse("[user]\npython = { packages = [\"rich>=13\"] }\n");
    assert_ne!(d.canonical(Part::User), other.canonical(Part::User));
    assert!(!d.canonical(Part::Base).contains("python"));

    let msg = error(
        "[user]\npython = { packages = [\"--index-url=x\", \"\"], venv = \"opt\", index = 1 }\n",
    );
    for w in [
        "user.python.packages[0]: `--index-url=x` is not a Python requirement",
        "user.python.packages[1]: `` is not a Python requirement",
        "user.python.venv: `opt` is not an absolute path",
        "user.python.index: unknown key (expected one of: packages, venv, index_url)",
    ] {
        assert!(msg.contains(w), "missing {w:?} in:\n{msg}");
    }
}

#[test]
fn the_tools_example_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tools/strata.toml");
    let spec = Spec::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.base.fetch.len(), 2);
    assert_eq!(spec.base.fetch[0].unpack.as_deref(), Some("tar.gz"));
    assert!(spec.user.python.is_some());
}
