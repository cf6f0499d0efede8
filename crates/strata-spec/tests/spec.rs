//! Tests of parsing, validation messages, inheritance and canonical forms.

use std::path::{Path, PathBuf};

use strata_spec::{Part, Spec, SpecError, host_architecture, sha256_hex};

const FILE: &str = "examples/x/strata.toml";

fn parse(text: &str) -> Spec {
    match Spec::parse(text, Path::new(FILE)) {
        Ok(spec) => spec,
        Err(e) => panic!("spec should parse, got:\n{e}"),
    }
}

/// The rendered error for an invalid spec.
fn error(text: &str) -> String {
    match Spec::parse(text, Path::new(FILE)) {
        Ok(_) => panic!("spec should be rejected:\n{text}"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors: one test per kind, asserting the full rendered message.

#[test]
fn unknown_key_in_tree_entry() {
    let text = "[base]\ntree = [\n  { src = \"a\", dest = \"/a\" },\n  { src = \"b\", dest = \"/b\", modee = 1 },\n]\n";
    assert_eq!(
        error(text),
        "examples/x/strata.toml:4:29: base.tree[1].modee: unknown key (expected one of: src, dest, mode, uid, gid)"
    );
}

#[test]
fn unknown_keys_at_every_level() {
    let text = "imagee = 1\n[base]\napt = {}\n[config]\nenvv = {}\n";
    assert_eq!(
        error(text),
        "examples/x/strata.toml:1:1: imagee: unknown key (expected one of: image, base, user, config, account, coder, services, boot)\n\
         examples/x/strata.toml:3:1: base.apt: unknown key (expected one of: tree, debian, nix, fetch, python, links)\n\
         examples/x/strata.toml:5:1: config.envv: unknown key (expected one of: env, entrypoint, cmd, workdir, user, labels, exposed_ports)"
    );
    assert_eq!(
        error("[base.debian]\npackage = [\"bash\"]\n"),
        "examples/x/strata.toml:2:1: base.debian.package: unknown key (expected one of: packages, suite, mirror, security_mirror, updates, components, keyring, recommends, essential, configure, repos, debconf)"
    );
    assert_eq!(
        error("[user]\nnix = { installable = [] }\n"),
        "examples/x/strata.toml:2:9: user.nix.installable: unknown key (expected one of: installables, paths, profile, database)"
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        error("[base]\ntree = [{ src = 1, dest = \"/a\" }]\n"),
        "examples/x/strata.toml:2:17: base.tree[0].src: expected a string like \"files/hello.sh\", found an integer"
    );
    assert_eq!(
        error("[config]\ncmd = \"bash\"\n"),
        "examples/x/strata.toml:2:7: config.cmd: expected an array of strings like [\"/bin/bash\"], found a string"
    );
    assert_eq!(
        error("[base]\ndebian = { updates = \"yes\" }\n"),
        "examples/x/strata.toml:2:22: base.debian.updates: expected a boolean (true or false), found a string"
    );
    assert_eq!(
        error("image = 3\n"),
        "examples/x/strata.toml:1:9: image: expected a table like [image], found an integer"
    );
    assert_eq!(
        error("[base]\ntree = [{ src = \"a\", dest = \"/a\", mode = true }]\n"),
        "examples/x/strata.toml:2:42: base.tree[0].mode: expected an octal integer like 0o755 or a string of octal digits like \"0755\", found a boolean"
    );
}

#[test]
fn missing_keys() {
    assert_eq!(
        error("[base]\ntree = [{ dest = \"/a\" }]\n"),
        "examples/x/strata.toml:2:9: base.tree[0].src: missing required key (add src = \"...\": the host file or directory to copy, relative to the spec file's directory)"
    );
    assert_eq!(
        error("[[user.tree]]\nsrc = \"a\"\n"),
        "examples/x/strata.toml:1:1: user.tree[0].dest: missing required key (add dest = \"/...\": the absolute path in the image to copy src to)"
    );
}

#[test]
fn mode_out_of_range() {
    let hint = "(write permission bits only, as an octal literal such as 0o755 or a string such as \"0755\")";
    assert_eq!(
        error("[base]\ntree = [{ src = \"a\", dest = \"/a\", mode = 0o10000 }]\n"),
        format!(
            "examples/x/strata.toml:2:42: base.tree[0].mode: mode 0o10000 is larger than 0o7777 {hint}"
        )
    );
    assert_eq!(
        error("[base]\ntree = [{ src = \"a\", dest = \"/a\", mode = \"17777\" }]\n"),
        "examples/x/strata.toml:2:42: base.tree[0].mode: mode `17777` is larger than 0o7777 (write octal digits such as \"0755\", or an octal literal such as 0o755)"
    );
    assert_eq!(
        error("[base]\ntree = [{ src = \"a\", dest = \"/a\", mode = \"0758\" }]\n"),
        "examples/x/strata.toml:2:42: base.tree[0].mode: `0758` is not an octal permission mode (write octal digits such as \"0755\", or an octal literal such as 0o755)"
    );
}

#[test]
fn relative_dest() {
    assert_eq!(
        error("[base]\ntree = [{ src = \"a\", dest = \"usr/bin/a\" }]\n"),
        "examples/x/strata.toml:2:29: base.tree[0].dest: `usr/bin/a` is not an absolute path (write the full path in the image, starting with `/`, e.g. \"/usr/local/bin/hello\")"
    );
}

#[test]
fn escaping_dest() {
    assert_eq!(
        error("[base]\ntree = [{ src = \"a\", dest = \"/usr/../../etc\" }]\n"),
        "examples/x/strata.toml:2:29: base.tree[0].dest: `/usr/../../etc` climbs above the image root with `..` (remove the `..` components)"
    );
}

#[test]
fn dest_root_copies_a_whole_root_file_system() {
    let spec = Spec::parse(
        "[base]\ntree = [{ src = \"rootfs\", dest = \"/\" }]\n",
        Path::new("examples/x/strata.toml"),
    )
    .expect("dest = \"/\" is accepted");
    assert_eq!(spec.base.tree[0].dest, strata_fstree::Dest::Root);
    assert_eq!(spec.base.tree[0].dest.absolute(), "/");
}

#[test]
fn absolute_src_is_allowed_and_normalised() {
    let spec = Spec::parse(
        "[base]\ntree = [{ src = \"/usr//bin/../bin/busybox\", dest = \"/bin/busybox\" }]\n",
        Path::new("examples/x/strata.toml"),
    )
    .expect("absolute src parses");
    assert!(spec.source_path(&spec.base.tree[0]).is_absolute());
    assert!(spec.canonical(Part::Base).contains("\"/usr/bin/busybox\""));
}

#[test]
fn empty_package_name() {
    assert_eq!(
        error("[base]\ndebian = { packages = [\"bash\", \"\"] }\n"),
        "examples/x/strata.toml:2:32: base.debian.packages[1]: the package name is empty (remove the empty string or write a package name such as \"bash\")"
    );
    assert_eq!(
        error("[user.debian]\npackages = [\"vim=2:9.0\"]\n"),
        "examples/x/strata.toml:2:13: user.debian.packages[0]: `vim=2:9.0` is not a plain package name (write only the name, e.g. \"bash\": versions are pinned by the lock file and the architecture comes from image.architecture)"
    );
}

#[test]
fn bad_debian_settings() {
    assert_eq!(
        error("[base.debian]\nmirror = \"deb.debian.org\"\n"),
        "examples/x/strata.toml:2:10: base.debian.mirror: `deb.debian.org` is not a mirror URL (write an http://, https:// or file:// URL such as \"http://deb.debian.org/debian\")"
    );
    assert_eq!(
        error("[base.debian]\ncomponents = []\n"),
        "examples/x/strata.toml:2:14: base.debian.components: the component list is empty (list at least one component, e.g. [\"main\"], or remove the key)"
    );
}

#[test]
fn bad_nix_settings() {
    assert_eq!(
        error("[base.nix]\npaths = [\"/nix/store/hello\"]\n"),
        "examples/x/strata.toml:2:10: base.nix.paths[0]: `/nix/store/hello` is not a Nix store path (write a store path such as \"/nix/store/<32-character hash>-hello-2.12.1\")"
    );
    assert_eq!(
        error("[base.nix]\ninstallables = [\"\"]\n"),
        "examples/x/strata.toml:2:17: base.nix.installables[0]: the installable is empty (write a flake reference such as \".#hello\" or \"nixpkgs#hello\", or a path such as \"./default.nix\")"
    );
}

#[test]
fn bad_port() {
    let hint = "(write a port from 1 to 65535 with an optional protocol: \"8080\", \"8080/tcp\", \"53/udp\" or \"9/sctp\")";
    assert_eq!(
        error("[config]\nexposed_ports = [\"8080\", \"70000\", \"80/http\"]\n"),
        format!(
            "examples/x/strata.toml:2:26: config.exposed_ports[1]: port `70000` is out of range {hint}\n\
             examples/x/strata.toml:2:35: config.exposed_ports[2]: `80/http` has an unknown protocol {hint}"
        )
    );
}

#[test]
fn bad_repository_name() {
    assert_eq!(
        error("[image]\nname = \"My/Workspace\"\n"),
        "examples/x/strata.toml:2:8: image.name: `My/Workspace` is not a valid repository name: it contains uppercase letters (use lowercase letters, digits and single `.`, `_`, `__` or `-` separators between `/`-separated components, e.g. \"strata\" or \"ghcr.io/acme/workspaces\")"
    );
    assert_eq!(
        error("[image]\nname = \"a--b/-c\"\n"),
        "examples/x/strata.toml:2:8: image.name: `a--b/-c` is not a valid repository name: bad component `-c` (use lowercase letters, digits and single `.`, `_`, `__` or `-` separators between `/`-separated components, e.g. \"strata\" or \"ghcr.io/acme/workspaces\")"
    );
}

#[test]
fn bad_architecture() {
    assert_eq!(
        error("[image]\narchitecture = \"aarch64\"\n"),
        "examples/x/strata.toml:2:16: image.architecture: `aarch64` is not an OCI architecture (OCI calls this architecture `arm64`; write architecture = \"arm64\")"
    );
    let msg = error("[image]\narchitecture = \"vax\"\n");
    assert!(
        msg.starts_with("examples/x/strata.toml:2:16: image.architecture: `vax` is not an OCI architecture (use one of: 386, amd64, arm, arm64,"),
        "{msg}"
    );
}

#[test]
fn bad_config_values() {
    assert_eq!(
        error("[config]\nworkdir = \"home/dev\"\nuser = \"dev user\"\nenv = { \"A=B\" = \"x\" }\n"),
        "examples/x/strata.toml:2:11: config.workdir: `home/dev` is not an absolute path (write the full path in the image, starting with `/`, e.g. \"/home/dev\")\n\
         examples/x/strata.toml:3:8: config.user: `dev user` is not a user specification (write a user name or id, optionally with a group: \"dev\", \"1000\", \"dev:dev\" or \"1000:1000\")\n\
         examples/x/strata.toml:4:9: config.env.\"A=B\": `A=B` is not a usable environment variable name (use a non-empty name without `=`, such as PATH)"
    );
}

#[test]
fn bad_ids() {
    assert_eq!(
        error("[base]\ntree = [{ src = \"a\", dest = \"/a\", uid = -1, gid = 4294967296 }]\n"),
        "examples/x/strata.toml:2:41: base.tree[0].uid: -1 is not a valid id (use a number from 0 to 4294967295)\n\
         examples/x/strata.toml:2:51: base.tree[0].gid: 4294967296 is not a valid id (use a number from 0 to 4294967295)"
    );
}

#[test]
fn syntax_error() {
    assert_eq!(
        error("[base]\ntree = [\n"),
        "examples/x/strata.toml:2:9: invalid TOML: unclosed array, expected `]` (fix the syntax; see https://toml.io)"
    );
}

#[test]
fn read_error() {
    let err = Spec::load(Path::new("/nonexistent/strata.toml")).expect_err("no such file");
    assert!(matches!(err, SpecError::Read { .. }));
    // The message names the file; the I/O error is the source, not repeated in the message.
    assert_eq!(
        err.to_string(),
        "/nonexistent/strata.toml: cannot read the spec file"
    );
    let source = std::error::Error::source(&err).expect("the I/O error is the source");
    assert!(source.to_string().contains("No such file"), "{source}");
}

#[test]
fn all_errors_are_collected_in_file_order() {
    let text = "[config]\nuser = \"\"\n[base]\ntree = [{ src = \"\", dest = \"x\", mode = 0o77777 }]\n[image]\nname = \"UP\"\n";
    let err = Spec::parse(text, Path::new(FILE)).expect_err("invalid");
    let keys: Vec<(usize, &str)> = err
        .diagnostics()
        .iter()
        .map(|d| (d.location.line, d.key.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            (2, "config.user"),
            (4, "base.tree[0].src"),
            (4, "base.tree[0].dest"),
            (4, "base.tree[0].mode"),
            (6, "image.name"),
        ]
    );
    assert_eq!(err.to_string().lines().count(), 5);
}

#[test]
fn columns_count_characters() {
    // "é" and "É" are two bytes each but one column.
    assert_eq!(
        error("[image]\ntitle = \"é\"; name = \"X\"\n")
            .split(": ")
            .next()
            .map(str::to_owned),
        Some("examples/x/strata.toml:2:12".to_owned())
    );
    assert_eq!(
        error("[config]\nenv = { \"É\" = \"é\", B = 1 }\n"),
        "examples/x/strata.toml:2:24: config.env.B: expected a string, found an integer"
    );
}

// ---------------------------------------------------------------------------------------------
// Successful parses.

#[test]
fn defaults() {
    let spec = Spec::parse("", Path::new("strata.toml")).expect("empty spec is valid");
    assert_eq!(spec.dir, PathBuf::from("."));
    assert_eq!(spec.image.name, "strata");
    assert_eq!(spec.image.architecture, host_architecture());
    assert!(spec.base.tree.is_empty() && spec.user.debian.is_none());
    assert_eq!(spec.config, Default::default());
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(host_architecture(), "amd64");
    }
    if std::env::consts::ARCH == "aarch64" {
        assert_eq!(host_architecture(), "arm64");
    }
}

#[test]
fn full_spec() {
    let text = r#"
[image]
name = "ghcr.io/acme/ws"
architecture = "arm64"
title = "Workspace"
revision = "abc123"

[base]
tree = [
  { src = "./files/hello.sh", dest = "/usr/local/bin//hello", mode = 0o755, uid = 1000, gid = 100 },
]
debian = { packages = ["git", "bash"] }
nix = { installables = [".#hello"], paths = ["/nix/store/0c0i1ynqbbwdjiqkml2dvdqi5vmc8qxp-hello-2.12.1"] }

[[user.tree]]
src = "dotfiles"
dest = "/home/dev"
mode = "0700"

[config]
env = { PATH = "/usr/bin:/bin" }
entrypoint = ["/bin/bash"]
cmd = []
workdir = "/home/dev/"
user = "1000:1000"
labels = { "org.example.team" = "infra" }
exposed_ports = ["8080", 53, "53/UDP"]
"#;
    let spec = parse(text);
    assert_eq!(spec.dir, PathBuf::from("examples/x"));
    assert_eq!(spec.image.name, "ghcr.io/acme/ws");
    assert_eq!(spec.image.architecture, "arm64");
    assert_eq!(
        spec.image
            .annotations
            .get("org.opencontainers.image.title")
            .map(String::as_str),
        Some("Workspace")
    );
    assert_eq!(spec.image.annotations.len(), 2);

    let e = &spec.base.tree[0];
    assert_eq!(e.src, PathBuf::from("./files/hello.sh"));
    assert_eq!(e.dest.as_str(), "usr/local/bin/hello");
    assert_eq!((e.mode, e.uid, e.gid), (Some(0o755), Some(1000), Some(100)));
    assert_eq!(e.key, "base.tree[0]");
    assert_eq!(e.location.to_string(), "examples/x/strata.toml:10:3");
    assert_eq!(
        spec.source_path(e),
        PathBuf::from("examples/x/./files/hello.sh")
    );

    let u = &spec.user.tree[0];
    assert_eq!(u.mode, Some(0o700));
    assert_eq!((u.uid, u.gid), (None, None));
    assert_eq!(u.key, "user.tree[0]");
    assert_eq!((u.location.line, u.location.column), (15, 1));

    let nix = spec.base.nix.as_ref().expect("nix");
    assert_eq!(nix.installables, [".#hello"]);
    assert_eq!(nix.effective_profile().absolute(), "/run/current-system/sw");
    assert_eq!(nix.key, "base.nix");

    let c = &spec.config;
    assert_eq!(c.workdir.as_deref(), Some("/home/dev"));
    assert_eq!(c.cmd.as_deref(), Some(&[][..]));
    assert_eq!(
        c.exposed_ports
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["53/tcp", "53/udp", "8080/tcp"]
    );
    assert_eq!(spec.half(Part::User).tree.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Debian inheritance.

#[test]
fn user_debian_inherits_repository_settings() {
    let text = r#"
[base.debian]
packages = ["bash"]
suite = "trixie"
mirror = "https://mirror.example/debian/"
updates = false
components = ["main", "contrib"]
keyring = "./keys/../keys/archive.gpg"
recommends = true
essential = false

[user.debian]
packages = ["vim", "git", "vim"]
components = ["main"]
"#;
    let spec = parse(text);
    let base = spec.debian_settings(Part::Base).expect("base debian");
    assert_eq!(base.suite, "trixie");
    assert_eq!(base.mirror, "https://mirror.example/debian");
    assert_eq!(
        base.security_mirror,
        "http://deb.debian.org/debian-security"
    );
    assert_eq!(base.components, ["contrib", "main"]);
    assert_eq!(base.keyring, Some(PathBuf::from("keys/archive.gpg")));
    assert!(base.recommends && !base.essential && !base.updates && base.configure);

    let user = spec.debian_settings(Part::User).expect("user debian");
    assert_eq!(user.packages, ["git", "vim"]);
    assert_eq!(user.suite, "trixie", "inherited");
    assert_eq!(user.mirror, "https://mirror.example/debian", "inherited");
    assert!(!user.updates, "inherited");
    assert_eq!(
        user.keyring,
        Some(PathBuf::from("keys/archive.gpg")),
        "inherited"
    );
    assert_eq!(user.components, ["main"], "own setting wins");
    assert!(
        !user.recommends && user.essential,
        "install options are not inherited"
    );

    // Without a base section, the defaults apply.
    let spec = parse("[user]\ndebian = { packages = [\"vim\"] }\n");
    assert!(spec.debian_settings(Part::Base).is_none());
    let user = spec.debian_settings(Part::User).expect("user debian");
    assert_eq!(user.suite, "bookworm");
    assert_eq!(user.mirror, "http://deb.debian.org/debian");
    assert_eq!(user.components, ["main"]);
    assert!(user.updates && user.essential && user.configure && !user.recommends);
    assert_eq!(user.keyring, None);
}

// ---------------------------------------------------------------------------------------------
// Canonical forms.

const PLAIN: &str = r#"
[image]
title = "ws"

[base]
tree = [
  { src = "files/hello.sh", dest = "/usr/local/bin/hello", mode = 0o755 },
  { src = "files/etc", dest = "/etc/app" },
]
debian = { packages = ["bash", "git"] }
nix = { installables = [".#hello"] }

[user]
tree = [{ src = "dotfiles", dest = "/home/dev", uid = 1000, gid = 1000 }]
debian = { packages = ["vim"] }

[config]
env = { A = "1", B = "2" }
entrypoint = ["/bin/bash"]
exposed_ports = ["8080"]
"#;

fn forms(spec: &Spec) -> [String; 3] {
    [
        spec.canonical(Part::Base),
        spec.canonical(Part::User),
        spec.canonical_image(),
    ]
}

#[test]
fn canonical_ignores_formatting_and_explicit_defaults() {
    let arch = host_architecture();
    let noisy = format!(
        r#"
# Same spec, written differently.
[config]
exposed_ports = [8080, "8080/tcp"]     # duplicates collapse
entrypoint = [ "/bin/bash" ]
env.B = "2"
env.A = "1"

[user]
debian = {{ packages = ["vim"], suite = "bookworm" }}

[[user.tree]]
gid = 1000
uid = 1000
dest = "/home/dev/"
src = "./dotfiles"

[base]
nix = {{ profile = "/run/current-system/sw", installables = [".#hello"] }}

[[base.tree]]
src = "files/./hello.sh"
dest = "/usr//local/bin/hello"
mode = "0755"
uid = 0

[[base.tree]]
src = "files/x/../etc"
dest = "/etc/app"
gid = 0

[base.debian]
packages = ["git", "bash", "git"]
suite = "bookworm"
mirror = "http://deb.debian.org/debian/"
security_mirror = "http://deb.debian.org/debian-security"
updates = true
components = ["main"]
recommends = false
essential = true
configure = true

[image]
architecture = "{arch}"
name = "strata"
title = "ws"
"#
    );
    let a = parse(PLAIN);
    let b = parse(&noisy);
    assert_eq!(forms(&a), forms(&b));
    // The same spec at another path hashes the same.
    let c = Spec::parse(PLAIN, Path::new("/elsewhere/strata.toml")).expect("valid");
    assert_eq!(forms(&a), forms(&c));
}

#[test]
fn canonical_is_compact_sorted_json() {
    let spec = parse(PLAIN);
    for text in forms(&spec) {
        assert!(!text.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert!(value.is_object());
        assert_eq!(serde_json::to_string(&value).expect("serialise"), text);
    }
    assert_eq!(
        spec.canonical(Part::User),
        r#"{"debian":{"components":["main"],"configure":true,"essential":true,"keyring":null,"mirror":"http://deb.debian.org/debian","packages":["vim"],"recommends":false,"security_mirror":"http://deb.debian.org/debian-security","suite":"bookworm","updates":true},"format":1,"nix":null,"part":"user","tree":[{"dest":"/home/dev","gid":1000,"mode":null,"src":"dotfiles","uid":1000}]}"#
    );
}

/// Applies `edit` to [`PLAIN`] and reports which canonical forms changed.
fn changed(from: &str, to: &str) -> [bool; 3] {
    assert!(PLAIN.contains(from), "{from}");
    let before = forms(&parse(PLAIN));
    let after = forms(&parse(&PLAIN.replacen(from, to, 1)));
    [0, 1, 2].map(|i| before[i] != after[i])
}

#[test]
fn canonical_sees_every_semantic_change() {
    const BASE: [bool; 3] = [true, false, false];
    const USER: [bool; 3] = [false, true, false];
    const IMAGE: [bool; 3] = [false, false, true];
    let cases: &[(&str, &str, [bool; 3])] = &[
        ("mode = 0o755", "mode = 0o750", BASE),
        ("mode = 0o755", "mode = 0o755, uid = 1", BASE),
        ("\"files/hello.sh\"", "\"files/hello2.sh\"", BASE),
        ("\"/usr/local/bin/hello\"", "\"/usr/bin/hello\"", BASE),
        (
            "packages = [\"bash\", \"git\"]",
            "packages = [\"bash\"]",
            BASE,
        ),
        (
            "packages = [\"bash\", \"git\"]",
            "packages = [\"bash\", \"git\"], recommends = true",
            BASE,
        ),
        (
            "installables = [\".#hello\"]",
            "installables = [\".#hello\", \".#git\"]",
            BASE,
        ),
        (
            "installables = [\".#hello\"]",
            "installables = [\".#hello\"], profile = \"/p\"",
            BASE,
        ),
        (
            "installables = [\".#hello\"]",
            "installables = [\".#hello\"], database = true",
            BASE,
        ),
        // Tree order decides which entry wins on overlap.
        (
            "  { src = \"files/hello.sh\", dest = \"/usr/local/bin/hello\", mode = 0o755 },\n  { src = \"files/etc\", dest = \"/etc/app\" },",
            "  { src = \"files/etc\", dest = \"/etc/app\" },\n  { src = \"files/hello.sh\", dest = \"/usr/local/bin/hello\", mode = 0o755 },",
            BASE,
        ),
        ("uid = 1000, gid = 1000", "uid = 1000, gid = 1001", USER),
        ("dest = \"/home/dev\"", "dest = \"/home/dev2\"", USER),
        (
            "packages = [\"vim\"]",
            "packages = [\"vim\", \"git\"]",
            USER,
        ),
        (
            "packages = [\"vim\"]",
            "packages = [\"vim\"], suite = \"trixie\"",
            USER,
        ),
        ("title = \"ws\"", "title = \"ws2\"", IMAGE),
        ("title = \"ws\"", "title = \"ws\"\nname = \"other\"", IMAGE),
        (
            "title = \"ws\"",
            "title = \"ws\"\narchitecture = \"s390x\"",
            IMAGE,
        ),
        ("A = \"1\"", "A = \"0\"", IMAGE),
        (
            "entrypoint = [\"/bin/bash\"]",
            "entrypoint = [\"/bin/sh\"]",
            IMAGE,
        ),
        (
            "entrypoint = [\"/bin/bash\"]",
            "entrypoint = [\"/bin/bash\"]\ncmd = []",
            IMAGE,
        ),
        (
            "exposed_ports = [\"8080\"]",
            "exposed_ports = [\"8080/udp\"]",
            IMAGE,
        ),
        (
            "exposed_ports = [\"8080\"]",
            "exposed_ports = [\"8080\"]\nworkdir = \"/w\"",
            IMAGE,
        ),
    ];
    for (from, to, expected) in cases {
        assert_eq!(changed(from, to), *expected, "{from} -> {to}");
    }
    // A base repository setting reaches the user half through inheritance.
    assert_eq!(
        changed(
            "packages = [\"bash\", \"git\"]",
            "packages = [\"bash\", \"git\"], suite = \"trixie\""
        ),
        [true, true, false]
    );
}

#[test]
fn sha256() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(sha256_hex(b"abc").len(), 64);
}

// ---------------------------------------------------------------------------------------------
// The shipped examples.

fn example(name: &str) -> Spec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .join("strata.toml");
    match Spec::load(&path) {
        Ok(spec) => spec,
        Err(e) => panic!("example {name} should load:\n{e}"),
    }
}

fn assert_sources_exist(spec: &Spec) {
    for part in [Part::Base, Part::User] {
        for entry in &spec.half(part).tree {
            let path = spec.source_path(entry);
            assert!(path.exists(), "{}: {} missing", entry.key, path.display());
        }
    }
}

#[test]
fn hello_example_loads() {
    let spec = example("hello");
    assert_eq!(spec.image.name, "strata-examples/hello");
    assert_eq!(spec.base.tree.len(), 4);
    assert!(spec.user.tree.is_empty());
    assert_eq!(spec.base.tree[2].mode, Some(0o755));
    assert_eq!(spec.base.tree[3].mode, Some(0o644));
    assert_sources_exist(&spec);
}

#[test]
fn layered_example_loads() {
    let spec = example("layered");
    assert_eq!(spec.base.tree.len(), 5);
    assert_eq!(spec.user.tree.len(), 2);
    assert!(spec.user.tree.iter().all(|e| e.uid == Some(1000)));
    assert_eq!(spec.config.user.as_deref(), Some("1000:1000"));
    assert_ne!(spec.canonical(Part::Base), spec.canonical(Part::User));
    assert_sources_exist(&spec);
}

// ---------------------------------------------------------------------------------------------
// [account] and [coder].

#[test]
fn coder_alone_implies_the_default_account() {
    let spec = parse("[coder]\n");
    let a = spec.account().expect("an account");
    assert_eq!(
        (a.name.as_str(), a.uid, a.gid, a.home.as_str()),
        ("coder", 1000, 1000, "/home/coder")
    );
    assert_eq!((a.shell, a.sudo), (None, None));
    assert!(parse("").account().is_none());
}

#[test]
fn account_keys_and_defaults() {
    let spec = parse(
        "[account]\nname = \"dev\"\nuid = 1001\ngroups = [\"sudo\", \"docker\", \"sudo\"]\nshell = \"/usr/bin//fish\"\nsudo = false\ngecos = \"Dev\"\n",
    );
    let a = spec.account().expect("account");
    assert_eq!(a.name, "dev");
    assert_eq!((a.uid, a.gid), (1001, 1000));
    assert_eq!(a.home, "/home/dev");
    assert_eq!(a.shell.as_deref(), Some("/usr/bin/fish"));
    assert_eq!(a.sudo, Some(false));
    assert_eq!(a.groups, ["docker", "sudo"]);
    assert_eq!(a.gecos, "Dev");
}

#[test]
fn account_errors_are_located() {
    assert_eq!(
        error("[account]\nuid = 0\n"),
        "examples/x/strata.toml:2:7: account.uid: uid 0 is root (the workspace account must not be root; use an id such as 1000)"
    );
    assert_eq!(
        error("[account]\nname = \"Coder\"\n"),
        "examples/x/strata.toml:2:8: account.name: `Coder` is not a valid account name (start with a lowercase letter, then use lowercase letters, digits, `_` and `-`, at most 32 characters, e.g. \"coder\")"
    );
    assert_eq!(
        error("[account]\nhome = \"home\"\n"),
        "examples/x/strata.toml:2:8: account.home: `home` is not an absolute path (write the full path in the image, starting with `/`, e.g. \"/home/coder\")"
    );
    assert_eq!(
        error("[account]\ngecos = \"a:b\"\n"),
        "examples/x/strata.toml:2:9: account.gecos: the comment contains `:` or a control character (remove them: /etc/passwd separates its fields with `:`)"
    );
    assert_eq!(
        error("[coder]\ncode-server = true\n"),
        "examples/x/strata.toml:2:1: coder.code-server: unknown key (expected one of: code_server, startup_script)"
    );
}

#[test]
fn account_and_coder_only_change_the_image_form_when_present() {
    let plain = parse("[config]\nuser = \"1000\"\n");
    let with_coder = parse("[config]\nuser = \"1000\"\n[coder]\n");
    assert!(!plain.canonical_image().contains("account"));
    assert_ne!(plain.canonical_image(), with_coder.canonical_image());
    // Writing the defaults out gives the same form as leaving them implicit.
    let explicit = parse(
        "[config]\nuser = \"1000\"\n[coder]\ncode_server = false\n[account]\nname = \"coder\"\nuid = 1000\ngid = 1000\nhome = \"/home/coder/\"\n",
    );
    assert_eq!(with_coder.canonical_image(), explicit.canonical_image());
    let other = parse("[config]\nuser = \"1000\"\n[coder]\n[account]\nuid = 1001\n");
    assert_ne!(with_coder.canonical_image(), other.canonical_image());
    // The halves never change.
    assert_eq!(
        plain.canonical(Part::Base),
        with_coder.canonical(Part::Base)
    );
    assert_eq!(
        plain.canonical(Part::User),
        with_coder.canonical(Part::User)
    );
}

// ---------------------------------------------------------------------------------------------
// Several repositories per half (issue 13).

const REPOS: &str = r#"[base]
debian.packages = ["bash"]

[[base.debian.repos]]
uri = "https://download.docker.com/linux/debian/"
suites = ["bookworm"]
components = ["stable"]
keyring = "keys/docker.asc"
priority = 990
architectures = ["amd64", "arm64"]

[user]
debian.packages = ["fish"]

[[user.debian.repos]]
ppa = "fish-shell/release-3"
keyring = "keys/fish.gpg"
"#;

#[test]
fn repositories_parse_and_the_user_half_inherits_the_bases() {
    let spec = parse(REPOS);
    let base = spec.debian_settings(Part::Base).expect("base");
    assert_eq!(base.repos.len(), 1);
    let docker = &base.repos[0];
    assert_eq!(docker.name, "download-docker-com-linux-debian");
    assert_eq!(docker.uri, "https://download.docker.com/linux/debian");
    assert_eq!(docker.suites.as_deref(), Some(&["bookworm".to_owned()][..]));
    assert_eq!(docker.components, ["stable"]);
    assert_eq!(docker.keyring, PathBuf::from("keys/docker.asc"));
    assert_eq!(docker.priority, 990);
    assert_eq!(docker.architectures, ["amd64", "arm64"]);
    assert_eq!(docker.key, "base.debian.repos[0]");

    let user = spec.debian_settings(Part::User).expect("user");
    let names: Vec<&str> = user.repos.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "download-docker-com-linux-debian",
            "ppa-fish-shell-release-3"
        ]
    );
    let ppa = &user.repos[1];
    assert_eq!(
        ppa.uri,
        "https://ppa.launchpadcontent.net/fish-shell/release-3/ubuntu"
    );
    // A repository without suites has its half's suite; the default priority is apt's.
    assert_eq!(ppa.suites.as_deref(), Some(&["bookworm".to_owned()][..]));
    assert_eq!(
        (ppa.priority, ppa.components.as_slice()),
        (500, &["main".to_owned()][..])
    );

    // The repositories change the half's hash; a spec without any keeps its hash.
    let without = parse("[base]\ndebian.packages = [\"bash\"]\n");
    assert_ne!(spec.canonical(Part::Base), without.canonical(Part::Base));
    assert!(!without.canonical(Part::Base).contains("repos"));
}

#[test]
fn repository_errors_name_the_file_line_and_key() {
    let missing_key =
        "[base]\ndebian.packages = []\n[[base.debian.repos]]\nuri = \"http://x.test/a\"\n";
    assert_eq!(
        error(missing_key),
        "examples/x/strata.toml:3:1: base.debian.repos[0].keyring: missing required key (every added repository is verified with its own key: the path of its armored or binary OpenPGP keyring, relative to the spec)"
    );
    let both = "[base]\ndebian.packages = []\n[[base.debian.repos]]\nuri = \"http://x.test/a\"\nppa = \"a/b\"\nkeyring = \"k\"\n";
    assert!(
        error(both).starts_with("examples/x/strata.toml:4:7: base.debian.repos[0].uri: a repository has both `uri` and `ppa`"),
        "{}",
        error(both)
    );
    let bad_ppa =
        "[base]\ndebian.packages = []\n[[base.debian.repos]]\nppa = \"nope\"\nkeyring = \"k\"\n";
    assert!(
        error(bad_ppa).contains("4:7: base.debian.repos[0].ppa: `nope` is not a PPA"),
        "{}",
        error(bad_ppa)
    );
    let dup = "[base]\ndebian.packages = []\n[[base.debian.repos]]\nname = \"v\"\nuri = \"http://x.test/a\"\nkeyring = \"k\"\n[user]\ndebian.packages = []\n[[user.debian.repos]]\nname = \"v\"\nuri = \"http://y.test/b\"\nkeyring = \"k\"\n";
    assert!(
        error(dup).contains(
            "user.debian.repos[0]: repository name `v` is already used by base.debian.repos[0]"
        ),
        "{}",
        error(dup)
    );
    let prio = "[base]\ndebian.packages = []\n[[base.debian.repos]]\nuri = \"http://x.test/a\"\nkeyring = \"k\"\npriority = 99999\n";
    assert!(
        error(prio).contains("6:12: base.debian.repos[0].priority: 99999 is out of range"),
        "{}",
        error(prio)
    );
    let unknown = "[base]\ndebian.packages = []\n[[base.debian.repos]]\nuri = \"http://x.test/a\"\nkeyring = \"k\"\nsuite = \"x\"\n";
    assert!(
        error(unknown).contains(
            "6:1: base.debian.repos[0].suite: unknown key (expected one of: name, uri, ppa, suites"
        ),
        "{}",
        error(unknown)
    );
}

#[test]
fn an_ubuntu_suite_needs_a_keyring_and_defaults_to_ubuntus_archives() {
    let e = error("[base]\ndebian = { packages = [\"bash\"], suite = \"jammy\" }\n");
    assert!(
        e.starts_with("examples/x/strata.toml:2:10: base.debian.keyring: missing required key (suite `jammy` is Ubuntu's, and Debian ships no Ubuntu keyring"),
        "{e}"
    );
    assert!(
        e.contains("/usr/share/keyrings/ubuntu-archive-keyring.gpg"),
        "{e}"
    );
    let spec = parse(
        "[image]\narchitecture = \"amd64\"\n[base]\ndebian = { packages = [\"bash\"], suite = \"jammy\", components = [\"main\", \"universe\"], keyring = \"ubuntu.gpg\" }\n",
    );
    let s = spec.debian_settings(Part::Base).expect("base");
    assert_eq!(s.mirror, "http://archive.ubuntu.com/ubuntu");
    assert_eq!(s.security_mirror, "http://security.ubuntu.com/ubuntu");
    let arm = parse(
        "[image]\narchitecture = \"arm64\"\n[base]\ndebian = { packages = [\"bash\"], suite = \"noble\", keyring = \"ubuntu.gpg\" }\n",
    );
    let s = arm.debian_settings(Part::Base).expect("base");
    assert_eq!(s.mirror, "http://ports.ubuntu.com/ubuntu-ports");
    assert_eq!(s.security_mirror, "http://ports.ubuntu.com/ubuntu-ports");
    // A mirror written in the spec wins.
    let own = parse(
        "[base]\ndebian = { packages = [\"bash\"], suite = \"jammy\", mirror = \"file:///srv/ubuntu\", keyring = \"u.gpg\" }\n",
    );
    assert_eq!(
        own.debian_settings(Part::Base).expect("base").mirror,
        "file:///srv/ubuntu"
    );
}

#[test]
fn debconf_answers_and_links_parse_and_change_the_hash() {
    let text = "[base.debian]\npackages = [\"locales\"]\ndebconf = [\"tzdata  tzdata/Areas\tselect Europe\", \"locales locales/locales_to_be_generated multiselect en_US.UTF-8 UTF-8\"]\n[base.links]\n\"/usr/bin/bat\" = \"batcat\"\n";
    let spec = parse(text);
    let d = spec.base.debian.as_ref().expect("debian");
    assert_eq!(
        d.debconf,
        [
            "tzdata tzdata/Areas select Europe",
            "locales locales/locales_to_be_generated multiselect en_US.UTF-8 UTF-8"
        ]
    );
    assert_eq!(spec.base.links.len(), 1);
    assert_eq!(spec.base.links[0].0.absolute(), "/usr/bin/bat");
    assert_eq!(spec.base.links[0].1, "batcat");
    let plain = parse("[base.debian]\npackages = [\"locales\"]\n");
    assert_ne!(spec.canonical(Part::Base), plain.canonical(Part::Base));
    assert!(!plain.canonical(Part::Base).contains("links"));

    let e = error("[base.debian]\npackages = []\ndebconf = [\"tzdata Europe\"]\n");
    assert!(
        e.starts_with("examples/x/strata.toml:3:12: base.debian.debconf[0]: `tzdata Europe` is not a debconf answer"),
        "{e}"
    );
    let e = error("[base.links]\n\"usr/bin/bat\" = \"batcat\"\n");
    assert!(
        e.contains("base.links.\"usr/bin/bat\": `usr/bin/bat` is not an absolute path"),
        "{e}"
    );
}

#[test]
fn services_parse_and_only_change_the_hash_when_present() {
    let spec = parse("[services]\nenable = [\"docker\", \"ssh.socket\"]\ndisable = [\"cron\"]\n");
    let sv = spec.services.as_ref().expect("services");
    assert_eq!(sv.enable, ["docker", "ssh.socket"]);
    assert_eq!(sv.disable, ["cron"]);
    let plain = parse("");
    assert_ne!(spec.canonical_image(), plain.canonical_image());
    assert!(!plain.canonical_image().contains("services"));
    let e = error("[services]\nenable = [\"bad name\"]\n");
    assert!(
        e.starts_with(
            "examples/x/strata.toml:2:11: services.enable[0]: `bad name` is not a systemd unit name"
        ),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// [boot]

#[test]
fn boot_defaults_and_the_packages_it_adds() {
    let spec = parse(
        "[image]\nname = \"ws\"\narchitecture = \"amd64\"\n[base]\ndebian = { packages = [\"bash\"] }\n[boot]\n",
    );
    let boot = spec.boot.as_ref().expect("[boot]");
    assert_eq!(boot.kernel, "linux-image-cloud-amd64");
    assert_eq!(boot.init, "systemd");
    assert_eq!(boot.free_space, 256 << 20);
    assert_eq!(boot.root_size, None);
    assert!(!boot.cloud_init);
    let packages = spec
        .debian_settings(Part::Base)
        .expect("base debian")
        .packages;
    for p in [
        "bash",
        "linux-image-cloud-amd64",
        "systemd-sysv",
        "udev",
        "initramfs-tools",
        "systemd-boot-efi",
    ] {
        assert!(
            packages.contains(&p.to_owned()),
            "{p} missing from {packages:?}"
        );
    }
    assert!(!packages.contains(&"cloud-init".to_owned()));
    // The user half is not touched; the base half's hash is (the image is another).
    let plain = parse(
        "[image]\nname = \"ws\"\narchitecture = \"amd64\"\n[base]\ndebian = { packages = [\"bash\"] }\n",
    );
    assert_ne!(spec.canonical(Part::Base), plain.canonical(Part::Base));
    assert_eq!(spec.canonical(Part::User), plain.canonical(Part::User));
}

#[test]
fn boot_keys_are_parsed() {
    let spec = parse(
        r#"[base]
debian = { packages = [] }
[boot]
kernel = "linux-image-amd64"
cmdline = ["quiet", "net.ifnames=0"]
root_size = "4G"
free_space = 1048576
hostname = "ws-1"
cloud_init = true
volume_id = "CODER_BOX"
label = "Workspace 1.2 (r42)"
installer = true
"#,
    );
    let boot = spec.boot.as_ref().expect("[boot]");
    assert_eq!(boot.kernel, "linux-image-amd64");
    assert_eq!(boot.cmdline, ["quiet", "net.ifnames=0"]);
    assert_eq!(boot.root_size, Some(4 << 30));
    assert_eq!(boot.free_space, 1 << 20);
    assert_eq!(boot.hostname.as_deref(), Some("ws-1"));
    assert!(boot.cloud_init);
    assert_eq!(boot.volume_id.as_deref(), Some("CODER_BOX"));
    assert!(boot.installer);
    let packages = spec
        .debian_settings(Part::Base)
        .expect("base debian")
        .packages;
    assert!(packages.contains(&"cloud-init".to_owned()));
    assert!(!packages.contains(&"linux-image-cloud-amd64".to_owned()));
}

#[test]
fn boot_errors_name_the_key() {
    let e = error("[boot]\nhostname = \"ws\"\n");
    assert!(
        e.contains("boot: [boot] installs the kernel and systemd through [base].debian"),
        "{e}"
    );
    let e = error("[base]\ndebian = { packages = [] }\n[boot]\nfree_space = \"lots\"\n");
    assert!(e.contains("boot.free_space: `lots` is not a size"), "{e}");
    let e = error("[base]\ndebian = { packages = [] }\n[boot]\ninit = \"sysvinit\"\n");
    assert!(
        e.contains("boot.init: init `sysvinit` is not supported"),
        "{e}"
    );
    let e = error("[base]\ndebian = { packages = [] }\n[boot]\ncmdline = [\"a b\"]\n");
    assert!(
        e.contains("boot.cmdline[0]: `a b` is not one kernel command line argument"),
        "{e}"
    );
    let e = error("[base]\ndebian = { packages = [] }\n[boot]\nvolume_id = \"lower\"\n");
    assert!(
        e.contains("boot.volume_id: `lower` is not a volume ID"),
        "{e}"
    );
    let e = error("[base]\ndebian = { packages = [] }\n[boot]\nhostnam = \"x\"\n");
    assert!(e.contains("boot.hostnam: unknown key"), "{e}");
}

/// The default profile moved from `/nix/var/nix/profiles/default` to `/run/current-system/sw`
/// (issue 15); a spec that writes the old location keeps its canonical form, so its name and
/// tag, byte for byte; one that relies on the default gets the new location.
#[test]
fn explicit_profile_keeps_its_hash_across_the_new_default() {
    let old = Spec::parse(
        "[base]\nnix = { installables = [\"./tools.nix\"], profile = \"/nix/var/nix/profiles/default\" }\n",
        Path::new("strata.toml"),
    )
    .expect("parse");
    assert_eq!(
        old.canonical(Part::Base),
        r#"{"debian":null,"format":1,"nix":{"installables":["./tools.nix"],"paths":[],"profile":"/nix/var/nix/profiles/default"},"part":"base","tree":[]}"#
    );
    let default = Spec::parse(
        "[base]\nnix = { installables = [\"./tools.nix\"] }\n",
        Path::new("strata.toml"),
    )
    .expect("parse");
    let nix = default.base.nix.as_ref().expect("nix");
    assert_eq!(nix.effective_profile().absolute(), "/run/current-system/sw");
    assert!(!nix.database);
    assert_ne!(old.canonical(Part::Base), default.canonical(Part::Base));

    let registered = Spec::parse(
        "[base]\nnix = { installables = [\"./tools.nix\"], database = true }\n",
        Path::new("strata.toml"),
    )
    .expect("parse");
    assert!(registered.base.nix.as_ref().expect("nix").database);
    let err = Spec::parse(
        "[base]\nnix = { database = \"yes\" }\n",
        Path::new("strata.toml"),
    )
    .expect_err("not a boolean")
    .to_string();
    assert!(
        err.contains("base.nix.database") && err.contains("boolean"),
        "{err}"
    );
}
