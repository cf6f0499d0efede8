//! The Nix source end to end: the real `nix` (Debian's `nix-bin`) builds a small closure from
//! `fixtures/nix/graph.nix` without downloads (the builder is a static busybox, and a store path
//! holds the host's glibc loader and libc), `strata build` makes an image of it, and skopeo,
//! umoci and podman check the result.
//!
//! Every test has a private chroot store (`NIX_REMOTE=<tmp>/nix`), so the files are read from a
//! non-default store directory and tests do not share Nix state. A missing `nix` fails the tests:
//! `scripts/test` installs it.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nix");
const PROFILE: &str = "run/current-system/sw";

/// The loader file name and the host's copies of the loader and libc, by architecture.
fn host_glibc() -> (&'static str, &'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => (
            "ld-linux-x86-64.so.2",
            "/lib64/ld-linux-x86-64.so.2",
            "/lib/x86_64-linux-gnu/libc.so.6",
        ),
        "aarch64" => (
            "ld-linux-aarch64.so.1",
            "/lib/ld-linux-aarch64.so.1",
            "/lib/aarch64-linux-gnu/libc.so.6",
        ),
        other => panic!("no glibc fixture for {other}"),
    }
}

/// The directory (relative to the image root) where strata puts the FHS loader.
fn loader_dir() -> &'static str {
    if std::env::consts::ARCH == "x86_64" {
        "lib64"
    } else {
        "lib"
    }
}

/// A test's work directory with the Nix fixtures and a private chroot store.
struct NixWork {
    work: Work,
}

/// The store paths of the fixture graph.
#[derive(Debug)]
struct Graph {
    app_a: String,
    app_b: String,
    app_c: String,
    shared: String,
    busybox: String,
    glibc: String,
}

impl Graph {
    fn all(&self) -> BTreeSet<String> {
        [
            &self.app_a,
            &self.app_b,
            &self.app_c,
            &self.shared,
            &self.busybox,
            &self.glibc,
        ]
        .into_iter()
        .cloned()
        .collect()
    }
}

impl NixWork {
    fn new() -> Self {
        need(&["nix", "nix-build", "nix-store"]);
        let work = Work::new();
        for name in ["graph.nix", "broken.nix"] {
            let text = fs::read(Path::new(FIXTURES).join(name)).expect("read fixture");
            work.file(name, text, 0o644);
        }
        let busybox = fs::read("/bin/busybox")
            .expect("/bin/busybox is missing; scripts/test installs busybox-static");
        work.file("busybox/bin/busybox", busybox, 0o555);
        work.symlink("busybox/bin/sh", "busybox");
        work.symlink("busybox/bin/env", "busybox");
        let (loader, host_loader, host_libc) = host_glibc();
        work.file(
            &format!("glibc/lib/{loader}"),
            fs::read(host_loader).expect("read the host's loader"),
            0o555,
        );
        work.file(
            "glibc/lib/libc.so.6",
            fs::read(host_libc).expect("read the host's libc"),
            0o555,
        );
        Self { work }
    }

    /// The chroot store: store paths `/nix/store/x` live at `<root>/nix/store/x`.
    fn nix_root(&self) -> PathBuf {
        self.work.root().join("nix")
    }

    /// Points a command at this test's store, without substituters or sandbox.
    fn nix_env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("NIX_REMOTE", self.nix_root()).env(
            "NIX_CONFIG",
            "substituters =\nsandbox = false\nbuild-users-group =\n",
        )
    }

    fn nix(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        self.nix_env(&mut cmd);
        cmd.current_dir(self.work.spec_dir());
        cmd
    }

    /// `nix-store --add` of a path under `spec/`; returns the store path.
    fn add(&self, rel: &str) -> String {
        let out = run_ok(self.nix("nix-store").arg("--add").arg(rel));
        stdout(&out).trim().to_owned()
    }

    /// Builds the fixture graph with nix itself (strata builds it again; Nix finds it done).
    fn graph(&self) -> Graph {
        let out = run_ok(self.nix("nix-build").args(["--no-out-link", "graph.nix"]));
        let outs: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
        assert_eq!(outs.len(), 3, "graph.nix has three apps: {outs:?}");
        let info = run_ok(
            self.nix("nix")
                .args([
                    "--extra-experimental-features",
                    "nix-command",
                    "path-info",
                    "--recursive",
                ])
                .args(&outs),
        );
        let all: Vec<String> = stdout(&info).lines().map(str::to_owned).collect();
        let find = |suffix: &str| {
            all.iter()
                .find(|p| p.ends_with(suffix))
                .unwrap_or_else(|| panic!("no store path ending in {suffix}: {all:?}"))
                .clone()
        };
        let graph = Graph {
            app_a: outs[0].clone(),
            app_b: outs[1].clone(),
            app_c: outs[2].clone(),
            shared: find("-shared"),
            busybox: find("-busybox"),
            glibc: find("-glibc-host"),
        };
        assert_eq!(all.len(), 6, "closure of the graph: {all:?}");
        assert_eq!(
            self.add("busybox"),
            graph.busybox,
            "same content, same path"
        );
        graph
    }

    fn strata(&self) -> Command {
        let mut cmd = self.work.strata();
        self.nix_env(&mut cmd);
        cmd
    }

    fn build(&self, dest: &str, args: &[&str]) -> Build {
        let out = run_ok(
            self.strata()
                .arg("build")
                .arg(self.work.spec())
                .arg("--output")
                .arg(dest)
                .arg("--json")
                .args(args),
        );
        Build {
            json: serde_json::from_slice(&out.stdout).expect("build --json"),
        }
    }

    fn inspect(&self, image: &str) -> Value {
        json_stdout(&run_ok(self.strata().args(["inspect", "--json", image])))
    }
}

fn objects(layer: &Value) -> Vec<String> {
    layer["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("layer without objects: {layer}"))
        .iter()
        .map(|o| o.as_str().expect("object id").to_owned())
        .collect()
}

fn env_of(config: &Value) -> Vec<String> {
    config["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Podman with the settings this machine needs (global flags, so `create`, `cp` and `start`
/// agree).
fn podman() -> Command {
    strata_test_support::podman()
}

/// Removes a podman container when dropped.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn foreign_glibc_program_runs_as_init_in_a_mixed_tree_and_nix_image() {
    if !require(&["podman", "tini"]) {
        return;
    }
    let tini = fs::read("/usr/bin/tini").expect("/usr/bin/tini (Debian package tini)");
    let ldd = run(Command::new("ldd").arg("/usr/bin/tini"));
    assert!(
        stdout(&ldd).contains("libc.so"),
        "the test needs the dynamically linked tini: {}",
        stdout(&ldd)
    );

    let nw = NixWork::new();
    let graph = nw.graph();
    nw.work.file("motd", "from the base tree\n", 0o644);
    nw.work
        .file("passwd", "root:x:0:0:base:/root:/bin/sh\n", 0o644);
    let name = unique_name("nix-tini");
    nw.work.write_spec(&format!(
        r#"
[image]
name = "{name}"

[base]
tree = [
  {{ src = "motd", dest = "/etc/motd" }},
  {{ src = "passwd", dest = "/etc/passwd" }},
]

[user]
nix = {{ installables = ["./graph.nix"], paths = ["{busybox}"] }}
"#,
        busybox = graph.busybox
    ));
    let archive = nw.work.out("image.tar");
    let build = nw.build(&format!("docker-archive:{}", archive.display()), &[]);

    // The base half holds only the tree, the user half only store paths.
    for layer in build.layers() {
        let objs = objects(layer);
        match layer["part"].as_str() {
            Some("base") => assert!(objs.iter().all(|o| o.starts_with("tree:")), "{objs:?}"),
            Some("user") => assert!(objs.iter().all(|o| graph.all().contains(o)), "{objs:?}"),
            _ => assert_eq!(objs, ["customisation"]),
        }
    }

    let image = LoadedImage {
        tool: "podman",
        reference: format!("localhost/{}", build.reference()),
    };
    podman_load(&archive);

    // Coder's way: copy its glibc-linked init into the running image and make it pid 1.
    let created = run_ok(podman().args([
        "create",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=20000:20000",
        "--network=none",
        &image.reference,
        "/var/tmp/coder/init",
        "--",
        "sh",
        "-c",
        "echo ok; app-a; app-c; cat /etc/motd /etc/passwd; env",
    ]));
    let container = Container(stdout(&created).trim().to_owned());
    let staging = nw.work.root().join("coder-staging");
    fs::create_dir_all(staging.join("coder")).expect("mkdir");
    fs::write(staging.join("coder/init"), tini).expect("write init");
    set_mode(&staging.join("coder/init"), 0o755);
    run_ok(
        podman()
            .arg("cp")
            .arg(staging.join("coder"))
            .arg(format!("{}:/var/tmp/", container.0)),
    );
    let started = run_ok(podman().args(["start", "--attach", &container.0]));
    let out = stdout(&started);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("ok"),
        "tini runs sh: {out}\n{}",
        stderr(&started)
    );
    assert_eq!(lines.next(), Some("app-a shared-data"), "{out}");
    assert_eq!(
        lines.next(),
        Some(format!("app-c {}", graph.glibc).as_str()),
        "{out}"
    );
    assert_eq!(lines.next(), Some("from the base tree"), "{out}");
    assert_eq!(
        lines.next(),
        Some("root:x:0:0:base:/root:/bin/sh"),
        "a tree's /etc/passwd wins over the generated one: {out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("PATH=/{PROFILE}/bin:"))),
        "PATH starts with the profile's bin: {out}"
    );
}

#[test]
fn nix_image_checks_out_with_skopeo_and_umoci() {
    if !require(&["skopeo", "umoci"]) {
        return;
    }
    let nw = NixWork::new();
    let graph = nw.graph();
    nw.work.file(
        "cacert/etc/ssl/certs/ca-bundle.crt",
        "-----BEGIN CERTIFICATE-----\n",
        0o444,
    );
    let cacert = nw.add("cacert");
    nw.work.write_spec(&format!(
        r#"
[image]
name = "strata-e2e/nix-umoci"

[base]
nix = {{ installables = ["./graph.nix"], paths = ["{busybox}", "{cacert}"] }}
"#,
        busybox = graph.busybox
    ));
    let dir = nw.work.out("oci");
    let build = nw.build(&format!("oci:{}", dir.display()), &[]);
    let image = format!("oci:{}:{}", dir.display(), build.tag());

    let inspected = json_stdout(&run_ok(Command::new("skopeo").args(["inspect", &image])));
    assert_eq!(
        inspected["Layers"].as_array().map(Vec::len),
        Some(8),
        "six store paths of the graph, the CA path and the customisation layer: {inspected:#}"
    );
    let config = json_stdout(&run_ok(
        Command::new("skopeo").args(["inspect", "--config", &image]),
    ));
    let env = env_of(&config["config"]);
    assert!(
        env.contains(&format!("PATH=/{PROFILE}/bin:/usr/local/bin:/usr/bin:/bin")),
        "{env:?}"
    );
    assert!(
        env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".to_owned()),
        "{env:?}"
    );

    let bundle = nw.work.out("bundle");
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !is_root() {
        cmd.arg("--rootless");
    }
    let umoci_image = format!("{}:{}", dir.display(), build.tag());
    run_ok(cmd.arg("--image").arg(&umoci_image).arg(&bundle));
    let snap = snapshot(&bundle.join("rootfs"));
    let node = |path: &str| {
        snap.nodes
            .get(path)
            .unwrap_or_else(|| panic!("no /{path} in the image"))
            .clone()
    };
    let link = |path: &str| match node(path).kind {
        Kind::Symlink(t) => t,
        other => panic!("/{path} is not a symlink: {other:?}"),
    };
    let rel = |p: &str| p.trim_start_matches('/').to_owned();

    // Store paths carry their files, read from the chroot store.
    assert_eq!(
        node(&format!("{}/bin/busybox", rel(&graph.busybox))).kind,
        Kind::File(fs::read("/bin/busybox").expect("busybox"))
    );
    assert_eq!(
        node(&format!("{}/lib/data", rel(&graph.shared))).kind,
        Kind::File(b"shared-data\n".to_vec())
    );
    assert!(
        snap.nodes
            .keys()
            .filter(|k| k.starts_with("nix/store/") && k.matches('/').count() == 2)
            .count()
            == 7,
        "exactly the closure is in /nix/store"
    );

    // The profile: a symlink forest of the requested outputs.
    assert_eq!(
        link(&format!("{PROFILE}/bin/app-a")),
        format!("{}/bin/app-a", graph.app_a)
    );
    assert_eq!(
        link(&format!("{PROFILE}/bin/sh")),
        format!("{}/bin/sh", graph.busybox)
    );
    assert_eq!(link(&format!("{PROFILE}/etc")), format!("{cacert}/etc"));

    // Global paths.
    assert_eq!(link("bin/sh"), format!("{}/bin/sh", graph.busybox));
    assert_eq!(link("usr/bin/env"), format!("{}/bin/env", graph.busybox));
    let (loader, _, _) = host_glibc();
    assert_eq!(
        link(&format!("{}/{loader}", loader_dir())),
        format!("{}/lib/{loader}", graph.glibc)
    );
    let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
    assert_eq!(
        link(&format!("lib/{triplet}/libc.so.6")),
        format!("{}/lib/libc.so.6", graph.glibc)
    );
    assert_eq!(
        link("etc/ssl/certs/ca-certificates.crt"),
        format!("{cacert}/etc/ssl/certs/ca-bundle.crt")
    );
    for tmp in ["tmp", "var/tmp"] {
        assert_eq!(node(tmp), Node::dir(0o1777, 0, 0), "/{tmp}");
    }
    for file in ["etc/passwd", "etc/group", "etc/shadow", "etc/nsswitch.conf"] {
        assert!(matches!(node(file).kind, Kind::File(_)), "/{file}");
    }
    let Kind::File(passwd) = node("etc/passwd").kind else {
        unreachable!()
    };
    assert!(
        String::from_utf8_lossy(&passwd).starts_with("root:x:0:0:"),
        "{}",
        String::from_utf8_lossy(&passwd)
    );
    assert_eq!(node("etc/shadow").mode, Some(0o640));
}

#[test]
fn most_popular_store_path_gets_its_own_layer_and_images_share_it() {
    let nw = NixWork::new();
    let graph = nw.graph();
    let spec = |name: &str, installables: &str| {
        format!(
            "[image]\nname = \"strata-e2e/{name}\"\n\n[user]\nnix = {{ installables = [{installables}] }}\n"
        )
    };
    nw.work.write_spec(&spec("nix-layers", "\"./graph.nix\""));

    // With room for all, each store path is a layer of its own.
    let all_dir = nw.work.out("all");
    let all = nw.build(&format!("oci:{}", all_dir.display()), &[]);
    let layers = all.layers();
    assert_eq!(layers.len(), 7, "{layers:#?}");
    let mut seen = BTreeSet::new();
    for layer in &layers[..6] {
        let objs = objects(layer);
        assert_eq!(objs.len(), 1, "{layer}");
        seen.insert(objs[0].clone());
    }
    assert_eq!(seen, graph.all());
    assert_eq!(objects(&layers[6]), ["customisation"]);

    // Two store layers: busybox, referenced by every app, alone; the rest together.
    let tight_dir = nw.work.out("tight");
    let tight = nw.build(
        &format!("oci:{}", tight_dir.display()),
        &["--max-layers", "3"],
    );
    let inspected = nw.inspect(&format!("oci:{}:{}", tight_dir.display(), tight.tag()));
    let layers = inspected["layers"].as_array().expect("inspect layers");
    let got: Vec<Vec<String>> = layers.iter().map(objects).collect();
    assert_eq!(got.len(), 3, "{got:#?}");
    assert_eq!(
        got[0],
        std::slice::from_ref(&graph.busybox),
        "most popular first"
    );
    assert_eq!(
        got[1][0], graph.shared,
        "the next most popular leads the rest: {got:?}"
    );
    let rest: BTreeSet<String> = got[1].iter().cloned().collect();
    let want: BTreeSet<String> = graph
        .all()
        .into_iter()
        .filter(|p| *p != graph.busybox)
        .collect();
    assert_eq!(rest, want);
    assert_eq!(got[2], ["customisation"]);

    // Another image sharing store paths shares their layer blobs.
    let other = nw.work.spec_dir().join("other.toml");
    fs::write(&other, spec("nix-layers-other", "\"./graph.nix\"")).expect("write spec");
    let other_dir = nw.work.out("other");
    let out = run_ok(
        nw.strata()
            .arg("build")
            .arg(&other)
            .arg("--output")
            .arg(format!("oci:{}", other_dir.display()))
            .arg("--json"),
    );
    let other_build = json_stdout(&out);
    let digest_of = |layers: &[Value], id: &str| {
        layers
            .iter()
            .find(|l| objects(l) == [id])
            .map(|l| l["digest"].clone())
            .unwrap_or_else(|| panic!("no layer of {id}"))
    };
    let other_layers = other_build["layers"].as_array().expect("layers");
    for id in graph.all() {
        assert_eq!(
            digest_of(all.layers(), &id),
            digest_of(other_layers, &id),
            "{id}"
        );
    }
}

#[test]
fn missing_or_failing_nix_is_a_clear_error() {
    let nw = NixWork::new();
    nw.work.write_spec(
        "[image]\nname = \"strata-e2e/nix-errors\"\n\n[user]\nnix = { installables = [\"./broken.nix\"] }\n",
    );
    let build = |cmd: &mut Command| {
        cmd.arg("build")
            .arg(nw.work.spec())
            .arg("--output")
            .arg(format!("oci:{}", nw.work.out("oci").display()));
        let out = run(cmd);
        assert!(!out.status.success(), "the build must fail");
        stderr(&out)
    };

    // Nix's own message, with where the section is.
    let err = build(&mut nw.strata());
    assert!(
        err.contains("strata.toml:5:7: user.nix: Nix failed"),
        "{err}"
    );
    assert!(err.contains("nix-build"), "{err}");
    assert!(err.contains("syntax error"), "Nix's message: {err}");

    // No Nix at all.
    let empty = nw.work.root().join("empty-bin");
    fs::create_dir_all(&empty).expect("mkdir");
    let err = build(nw.strata().env("PATH", &empty));
    assert!(err.contains("user.nix"), "{err}");
    assert!(err.contains("apt-get install nix-bin"), "{err}");

    // A store path that is not there.
    nw.work.write_spec(
        "[image]\nname = \"strata-e2e/nix-errors\"\n\n[user]\nnix = { paths = [\"/nix/store/00000000000000000000000000000000-nope\"] }\n",
    );
    let err = build(&mut nw.strata());
    assert!(
        err.contains("00000000000000000000000000000000-nope"),
        "{err}"
    );

    // A store whose files are not on this machine.
    let err = build(nw.strata().env("NIX_REMOTE", "ssh://nowhere.invalid"));
    assert!(err.contains("ssh://nowhere.invalid"), "{err}");
    assert!(err.contains("not supported"), "{err}");
}

/// The nix inside the image: Debian's `nix-bin` in the base half, the fixture closure with
/// `database = true` in the user half, run by the workspace account. In podman the account's
/// nix finds the store valid, installs a path of it into its profile, builds a derivation
/// whose builder is the closure's busybox, and garbage collection keeps the closure (the
/// default profile, `/run/current-system/sw`, is outside `/nix/var/nix/profiles`, so only the
/// GC roots strata writes keep it).
#[test]
fn nix_inside_a_mixed_image_uses_the_registered_store() {
    if !require(&["podman"]) {
        return;
    }
    let nw = NixWork::new();
    let graph = nw.graph();
    let name = unique_name("nix-inside");
    nw.work.write_spec(&format!(
        r#"
[image]
name = "{name}"

[base]
debian = {{ packages = ["nix-bin"] }}

[user]
nix = {{ installables = ["./graph.nix"], database = true }}

[account]
name = "dev"
"#
    ));
    let build = |dest: &Path| {
        let out = run_ok(
            nw.nix_env(&mut nw.work.strata_debian())
                .arg("build")
                .arg(nw.work.spec())
                .arg("--output")
                .arg(format!("docker-archive:{}", dest.display()))
                .arg("--json"),
        );
        Build {
            json: serde_json::from_slice(&out.stdout).expect("build --json"),
        }
    };
    let archive = nw.work.out("image.tar");
    let first = build(&archive);
    let second = build(&nw.work.out("again.tar"));
    assert_eq!(
        first.digest(),
        second.digest(),
        "the database is reproducible"
    );

    podman_load(&archive);
    let image = LoadedImage {
        tool: "podman",
        reference: format!("localhost/{}", first.reference()),
    };
    let script = format!(
        r#"set -e
id -un
command -v app-a
nix-store --verify --check-contents
nix-store --query --requisites {app_c} | sort
nix-env -i {app_b}
"$HOME/.nix-profile/bin/app-b"
cat > /tmp/inside.nix <<'NIX'
derivation {{
  name = "inside";
  system = builtins.currentSystem;
  builder = "${{builtins.storePath {busybox}}}/bin/sh";
  args = [ "-c" "echo built inside > $out" ];
}}
NIX
cd /tmp
built=$(nix-build --option substituters '' /tmp/inside.nix)
cat "$built"
nix-store --gc >/dev/null 2>&1
for p in {all}; do test -e "$p" || echo "collected: $p"; done
nix-store --verify --check-contents
echo done
"#,
        app_c = graph.app_c,
        app_b = graph.app_b,
        busybox = graph.busybox,
        all = graph.all().into_iter().collect::<Vec<_>>().join(" "),
    );
    let out = run(podman_run()
        .arg("--network=none")
        .arg(&image.reference)
        .args(["sh", "-c", &script]));
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("dev"), "runs as the account: {text}");
    assert_eq!(
        lines.next(),
        Some("/run/current-system/sw/bin/app-a"),
        "the default profile is on PATH: {text}"
    );
    let requisites: Vec<&str> = lines.by_ref().take(3).collect();
    let mut want = vec![
        graph.app_c.as_str(),
        graph.busybox.as_str(),
        graph.glibc.as_str(),
    ];
    want.sort();
    assert_eq!(requisites, want, "the references are registered: {text}");
    assert_eq!(lines.next(), Some("app-b shared-data"), "{text}");
    assert_eq!(lines.next(), Some("built inside"), "{text}");
    assert_eq!(lines.next(), Some("done"), "nothing collected: {text}");
}

/// A locked Nix half: `strata lock` records every requested output with its NAR hash;
/// `--locked` builds while the installables evaluate to the locked paths and refuses, naming
/// the paths, once they do not; `--offline` takes the locked paths from the local store
/// without evaluating, so it gives the locked image even after the expression changed.
#[test]
fn locked_nix_half_refuses_other_paths_and_offline_uses_the_local_store() {
    let nw = NixWork::new();
    let graph = nw.graph();
    nw.work.write_spec(&format!(
        "[image]\nname = \"strata-e2e/nix-lock\"\n\n[user]\nnix = {{ installables = \
         [\"./graph.nix\"], paths = [\"{}\"] }}\n",
        graph.busybox
    ));
    let out = run_ok(nw.strata().arg("lock").arg(nw.work.spec()));
    assert!(stdout(&out).contains("4 Nix outputs"), "{}", stdout(&out));
    let lock_path = nw.work.spec_dir().join("strata.lock");
    let lock: toml::Value = toml::from_str(&fs::read_to_string(&lock_path).unwrap()).unwrap();
    let outputs = lock["nix"]["user"]["outputs"].as_array().expect("outputs");
    let locked: Vec<(&str, &str)> = outputs
        .iter()
        .map(|o| {
            (
                o["installable"].as_str().unwrap(),
                o["path"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        locked,
        [
            ("./graph.nix", graph.app_a.as_str()),
            ("./graph.nix", graph.app_b.as_str()),
            ("./graph.nix", graph.app_c.as_str()),
            (graph.busybox.as_str(), graph.busybox.as_str()),
        ]
    );
    // The NAR hash is the one nix reports.
    let info = stdout(&run_ok(nw.nix("nix").args([
        "--extra-experimental-features",
        "nix-command",
        "path-info",
        "--json",
        &graph.app_a,
    ])));
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(outputs[0]["nar_hash"].as_str(), info[0]["narHash"].as_str());

    let oci = |n: &str| format!("oci:{}", nw.work.out(n).display());
    let first = nw.build(&oci("locked"), &["--locked"]);

    // The expression changes: app-a and app-b (through `shared`) get other store paths.
    let graph_nix = nw.work.spec_dir().join("graph.nix");
    let text = fs::read_to_string(&graph_nix).unwrap();
    fs::write(
        &graph_nix,
        text.replace("echo shared-data", "echo shared-data-2"),
    )
    .unwrap();
    let out = run(nw
        .strata()
        .arg("build")
        .arg(nw.work.spec())
        .arg("--output")
        .arg(oci("refused"))
        .arg("--locked"));
    assert!(!out.status.success(), "--locked must refuse other paths");
    let err = stderr(&out);
    for want in [
        "--locked",
        "user.nix",
        &format!("./graph.nix: locked {}", graph.app_a),
        &format!("./graph.nix: locked {}", graph.app_b),
        "strata lock",
    ] {
        assert!(err.contains(want), "{want} missing: {err}");
    }
    assert!(
        !err.contains(&format!("locked {}", graph.app_c)),
        "app-c did not change: {err}"
    );

    // Offline, the locked paths come from the local store: the locked image again.
    let offline = nw.build(&oci("offline"), &["--offline"]);
    assert_eq!(offline.digest(), first.digest());

    // A locked path the store does not have is named.
    let gone = format!("/nix/store/{}-app-c", "0".repeat(32));
    fs::write(
        &lock_path,
        fs::read_to_string(&lock_path)
            .unwrap()
            .replace(&graph.app_c, &gone),
    )
    .unwrap();
    let out = run(nw
        .strata()
        .arg("build")
        .arg(nw.work.spec())
        .arg("--output")
        .arg(oci("missing"))
        .arg("--offline"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&gone), "{}", stderr(&out));
}

/// Parallel builds share one Nix store and one strata store: four `strata build` processes
/// of two Nix specs, started at once against a fresh chroot store (so the nix builds race too),
/// give the digests that serial builds in another fresh pair of stores give.
#[test]
fn parallel_builds_sharing_one_nix_store_match_serial_builds() {
    let specs = [
        "[image]\nname = \"strata-e2e/nix-par-a\"\n\n[user]\nnix = { installables = [\"./graph.nix\"] }\n",
        "[image]\nname = \"strata-e2e/nix-par-b\"\n\n[base]\nnix = { installables = [\"./graph.nix\"], database = true }\n",
    ];
    let write_specs = |nw: &NixWork| -> Vec<PathBuf> {
        specs
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let path = nw.work.spec_dir().join(format!("s{i}.toml"));
                fs::write(&path, text).expect("write spec");
                path
            })
            .collect()
    };
    let command = |nw: &NixWork, spec: &Path, out: &str| {
        let mut cmd = nw.strata();
        cmd.arg("build")
            .arg(spec)
            .arg("--json")
            .arg("--output")
            .arg(format!("oci:{}", nw.work.out(out).display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let digest = |out: std::process::Output| -> String {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).expect("build --json");
        json["digest"].as_str().expect("digest").to_owned()
    };

    let parallel = NixWork::new();
    let paths = write_specs(&parallel);
    let children: Vec<_> = (0..4)
        .map(|i| {
            command(&parallel, &paths[i % 2], &format!("p{i}"))
                .spawn()
                .expect("spawn strata")
        })
        .collect();
    let got: Vec<String> = children
        .into_iter()
        .map(|c| digest(c.wait_with_output().expect("wait")))
        .collect();

    let serial = NixWork::new();
    let paths = write_specs(&serial);
    let want: Vec<String> = (0..2)
        .map(|i| {
            digest(
                command(&serial, &paths[i], &format!("s{i}"))
                    .output()
                    .expect("run"),
            )
        })
        .collect();
    assert_eq!(got, [&*want[0], &*want[1], &*want[0], &*want[1]]);
    assert_ne!(want[0], want[1]);
}

/// Removes a podman container when dropped.
struct Running(String);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.0]).output();
    }
}

/// `examples/nix-builder`: Debian's openssh-server and nix-bin with the test's key authorized.
/// The image has no SSH host key (the container makes its own at first start); under podman,
/// with its SSH port on 127.0.0.1, it is the remote builder of the host's `nix-build
/// --max-jobs 0 --builders ssh://…`, which then holds the output the container built.
#[test]
fn nix_builder_example_builds_for_the_hosts_nix_over_ssh() {
    if !require(&["podman", "ssh", "ssh-keygen"]) {
        return;
    }
    let nw = NixWork::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/nix-builder");
    let text = fs::read_to_string(example.join("strata.toml")).expect("read the example");
    fs::copy(
        example.join("nix.conf"),
        nw.work.spec_dir().join("nix.conf"),
    )
    .unwrap();
    let key = nw.work.root().join("builder-key");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "strata-test", "-f"])
            .arg(&key),
    );
    fs::copy(
        key.with_extension("pub"),
        nw.work.spec_dir().join("authorized_keys"),
    )
    .unwrap();
    nw.work.write_spec(&text.replace(
        "name = \"strata-examples/nix-builder\"",
        &format!("name = \"{}\"", unique_name("nix-builder")),
    ));
    let archive = nw.work.out("builder.tar");
    let out = run_ok(
        nw.work
            .strata_debian()
            .arg("build")
            .arg(nw.work.spec())
            .arg("--json")
            .arg("--output")
            .arg(format!("docker-archive:{}", archive.display())),
    );
    let build = Build {
        json: serde_json::from_slice(&out.stdout).expect("build --json"),
    };
    podman_load(&archive);
    let image = LoadedImage {
        tool: "podman",
        reference: format!("localhost/{}", build.reference()),
    };
    let listing = stdout(&run_ok(
        podman_run()
            .args(["--network=none", "--entrypoint", "ls"])
            .arg(&image.reference)
            .arg("/etc/ssh"),
    ));
    assert!(listing.contains("sshd_config"), "{listing}");
    assert!(
        !listing.contains("ssh_host_"),
        "host keys are baked in: {listing}"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = run_ok(
        podman()
            .args(["run", "-d"])
            .args(PODMAN_RUN_FLAGS.iter().skip(2))
            .arg("-p")
            .arg(format!("127.0.0.1:{port}:22"))
            .arg(&image.reference),
    );
    let container = Running(stdout(&started).trim().to_owned());
    let ssh_opts = format!(
        "-p {port} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
         -o ConnectTimeout=5 -o LogLevel=ERROR"
    );
    let ssh = |command: &str| {
        Command::new("ssh")
            .args(ssh_opts.split(' '))
            .arg("-i")
            .arg(&key)
            .arg("root@127.0.0.1")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    // sshd is up once the host keys are made: at most 60 tries, one a second.
    let mut hostname = None;
    for _ in 0..60 {
        let out = ssh("cat /proc/sys/kernel/hostname; nix-store --version");
        if out.status.success() {
            hostname = Some(stdout(&out));
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let logs = || stderr(&run(podman().args(["logs", &container.0])));
    let hello = hostname.unwrap_or_else(|| panic!("no SSH login: {}", logs()));
    let mut lines = hello.lines();
    let remote_host = lines.next().unwrap().to_owned();
    assert_eq!(lines.next(), Some("nix-store (Nix) 2.8.0"), "{hello}");
    let keys = stdout(&ssh("ls /etc/ssh"));
    assert!(
        keys.contains("ssh_host_ed25519_key.pub"),
        "made at start: {keys}"
    );

    let system = format!("{}-linux", std::env::consts::ARCH);
    nw.work.file(
        "remote.nix",
        format!(
            r#"let busybox = builtins.path {{ path = ./busybox; name = "busybox"; }};
in derivation {{
  name = "built-remotely";
  system = "{system}";
  builder = "${{busybox}}/bin/sh";
  args = [ "-c" "${{busybox}}/bin/busybox cat /proc/sys/kernel/hostname > $out" ];
}}
"#
        ),
        0o644,
    );
    let builders = format!("ssh://root@127.0.0.1 {system} {} 1", key.display());
    let out = run(nw
        .nix("nix-build")
        .env("NIX_SSHOPTS", &ssh_opts)
        .args(["--no-out-link", "--max-jobs", "0", "--builders", &builders])
        .arg("remote.nix"));
    assert!(
        out.status.success(),
        "{}\n--- builder\n{}",
        stderr(&out),
        logs()
    );
    let built = stdout(&out).trim().to_owned();
    let result = fs::read_to_string(nw.nix_root().join(built.trim_start_matches('/'))).unwrap();
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(
        host.trim(),
        remote_host,
        "the container has a hostname of its own"
    );
    assert_eq!(
        result.trim(),
        remote_host,
        "built in the container, not on the host"
    );
    let in_builder = ssh(&format!("cat {built}"));
    assert_eq!(
        stdout(&in_builder).trim(),
        remote_host,
        "the builder's store has it too"
    );
}

/// Locking a flake installable records where its outputs came from: the flake's locked URL and
/// the locked revision (for a path input, its NAR hash) of every input, as the real nix
/// reports them, besides the outputs and their NAR hashes; `--locked` then builds.
#[test]
fn flake_installables_lock_their_url_and_inputs() {
    let nw = NixWork::new();
    let system = format!("{}-linux", std::env::consts::ARCH);
    nw.work.file(
        "dep/flake.nix",
        "{ outputs = { self }: { word = \"dep\"; }; }\n",
        0o644,
    );
    let busybox = fs::read("/bin/busybox").expect("busybox-static");
    nw.work.file("app/busybox", busybox, 0o555);
    let dep = nw.work.spec_dir().join("dep");
    nw.work.file(
        "app/flake.nix",
        format!(
            r#"{{
  inputs.dep.url = "path:{dep}";
  outputs = {{ self, dep }}: {{
    packages.{system}.default = derivation {{
      name = "flake-app";
      system = "{system}";
      builder = "${{self}}/busybox";
      args = [ "sh" "-c" "echo ${{dep.word}} > $out" ];
    }};
  }};
}}
"#,
            dep = dep.display()
        ),
        0o644,
    );
    nw.work.write_spec(
        "[image]\nname = \"strata-e2e/nix-flake-lock\"\n\n[user]\nnix = { installables = [\"./app#default\"] }\n",
    );
    run_ok(nw.strata().arg("lock").arg(nw.work.spec()));
    let text = fs::read_to_string(nw.work.spec_dir().join("strata.lock")).unwrap();
    let lock: toml::Value = toml::from_str(&text).unwrap();
    let half = &lock["nix"]["user"];
    let out = &half["outputs"][0];
    assert_eq!(out["installable"].as_str(), Some("./app#default"), "{text}");
    let path = out["path"].as_str().unwrap();
    assert!(path.ends_with("-flake-app"), "{text}");
    assert_eq!(
        fs::read_to_string(nw.nix_root().join(path.trim_start_matches('/'))).unwrap(),
        "dep\n"
    );
    let flake = &half["flakes"][0];
    assert_eq!(flake["flake"].as_str(), Some("./app"), "{text}");
    let url = flake["url"].as_str().unwrap();
    assert!(
        url.starts_with("path:") && url.contains("narHash=sha256-"),
        "{text}"
    );
    let hash = stdout(&run_ok(
        nw.nix("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "hash",
                "path",
            ])
            .arg(&dep),
    ));
    assert_eq!(
        flake["inputs"]["dep"].as_str(),
        Some(hash.trim()),
        "the input's locked NAR hash: {text}"
    );
    nw.build(
        &format!("oci:{}", nw.work.out("oci").display()),
        &["--locked"],
    );
}
