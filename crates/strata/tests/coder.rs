//! Coder workspaces end to end: the workspace account in built images, `strata check --coder`
//! on OCI layouts, docker-archives and specs, the build gate, the agent bootstrap run for real
//! under podman the way Coder's docker template runs a workspace, and the generated templates
//! parsed by a real HCL parser (python-hcl2).

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The repository's `examples/coder` directory.
fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/coder")
}

/// `examples/coder/strata.toml` written into the work directory under another image name, its
/// relative sources made absolute.
fn coder_example(work: &Work, name: &str) -> PathBuf {
    let text = fs::read_to_string(example_dir().join("strata.toml")).expect("read the example");
    let files = example_dir()
        .join("files")
        .canonicalize()
        .expect("example files");
    let text = text
        .replace(
            "name = \"strata-examples/coder\"",
            &format!("name = \"{name}\""),
        )
        .replace("\"files/", &format!("\"{}/", files.display()));
    work.write_spec(&text)
}

/// `strata check IMAGE --coder --json`: the parsed report and whether it exited 0.
fn check_json(work: &Work, image: &str) -> (Value, bool) {
    let out = run(work.strata().args(["check", image, "--coder", "--json"]));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json printed invalid JSON ({e}):\n{}\n{}",
            stdout(&out),
            stderr(&out)
        )
    });
    (json, out.status.success())
}

fn item<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no item {id} in {report:#}"))
}

#[test]
fn coder_example_passes_the_check_as_layout_archive_and_spec() {
    let work = Work::new();
    let spec = coder_example(&work, "strata-e2e/coder-check");
    let oci = work.out("oci");
    let build = work.build(&format!("oci:{}", oci.display()), &[]);
    let archive = work.out("image.tar");
    work.build(&format!("docker-archive:{}", archive.display()), &[]);

    for image in [
        format!("oci:{}", oci.display()),
        format!("oci:{}:{}", oci.display(), build.tag()),
        format!("docker-archive:{}", archive.display()),
        spec.display().to_string(),
    ] {
        let (report, ok) = check_json(&work, &image);
        assert!(ok, "{image} should pass: {report:#}");
        assert_eq!(report["passed"], true);
        assert!(
            item(&report, "sh")["reason"]
                .as_str()
                .unwrap()
                .contains("/bin/sh -> /bin/busybox"),
            "{report:#}"
        );
        assert!(
            item(&report, "downloader")["reason"]
                .as_str()
                .unwrap()
                .contains("busybox")
        );
        assert!(
            item(&report, "account")["reason"]
                .as_str()
                .unwrap()
                .contains("`coder` (uid 1000), home /home/coder owned by it")
        );
        assert_eq!(item(&report, "git")["passed"], false);
        assert_eq!(item(&report, "git")["required"], false);
    }

    // The text checklist, with pass and warn marks.
    let out = run_ok(
        work.strata()
            .args(["check", &format!("oci:{}", oci.display()), "--coder"]),
    );
    let text = stdout(&out);
    assert!(
        text.contains("[pass] POSIX shell: sh is /bin/sh -> /bin/busybox"),
        "{text}"
    );
    assert!(text.contains("[warn] bash (recommended)"), "{text}");
}

/// `strata check docker://REF --coder` reads the image straight from a real registry (no
/// `strata pull` by hand): every blob is fetched, the checklist is the one of the local copy,
/// and the temporary copy is gone afterwards.
#[test]
fn check_reads_a_registry_image_without_a_pull_by_hand() {
    let reg = Registry::start(Auth::None);
    let work = Work::new();
    coder_example(&work, "strata-e2e/coder-registry");
    let oci = work.out("oci");
    work.build(&format!("oci:{}", oci.display()), &[]);
    run_ok(work.strata().args([
        "push",
        &format!("oci:{}", oci.display()),
        &reg.docker("ws:v1"),
    ]));

    let mark = reg.mark();
    let (remote, ok) = check_json(&work, &reg.docker("ws:v1"));
    assert!(ok, "{remote:#}");
    let (local, _) = check_json(&work, &format!("oci:{}", oci.display()));
    assert_eq!(
        remote["items"], local["items"],
        "the same checklist as the local copy"
    );
    let requests = reg.requests_since(mark);
    assert!(
        requests
            .iter()
            .any(|r| r.contains("GET /v2/ws/manifests/v1")),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.contains("GET /v2/ws/blobs/sha256:")),
        "the layers come from the registry: {requests:#?}"
    );
    let tmp = work.store().join("v1/tmp");
    let left: Vec<_> = fs::read_dir(&tmp)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the pulled copy is removed: {left:?}");

    let out = run(work
        .strata()
        .args(["check", &reg.docker("ws:missing"), "--coder"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ws:missing"), "{}", stderr(&out));
}

#[test]
fn check_fails_with_reasons_and_a_nonzero_status() {
    let work = Work::new();
    let bb = fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    work.file("bin/busybox", bb, 0o755);
    work.symlink("bin/sh", "busybox");
    work.dir("tmp", 0o755);
    work.write_spec(
        "[base]\ntree = [\n  { src = \"bin\", dest = \"/bin\" },\n  { src = \"tmp\", dest = \"/tmp\" },\n]\n[config]\nuser = \"root\"\n",
    );
    let oci = work.out("oci");
    work.build(&format!("oci:{}", oci.display()), &[]);
    let (report, ok) = check_json(&work, &format!("oci:{}", oci.display()));
    assert!(!ok, "a failing image exits non-zero");
    assert_eq!(report["passed"], false);
    assert_eq!(item(&report, "sh")["passed"], true);
    let tmp = item(&report, "tmp");
    assert_eq!(tmp["passed"], false);
    assert!(
        tmp["reason"].as_str().unwrap().contains("mode 0755"),
        "{tmp}"
    );
    let account = item(&report, "account");
    assert!(
        account["reason"].as_str().unwrap().contains("root"),
        "{account}"
    );
    assert_eq!(item(&report, "ca-certificates")["passed"], false);

    let out = run(work
        .strata()
        .args(["check", &format!("oci:{}", oci.display()), "--coder"]));
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("[FAIL] writable temporary directory"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out)
            .contains("fails Coder's workspace requirements: env, tmp, account, ca-certificates"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn build_refuses_a_failing_coder_image_unless_no_check() {
    let work = Work::new();
    let bb = fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    work.file("bin/busybox", bb, 0o755);
    work.symlink("bin/sh", "busybox");
    // No CA bundle: the agent could not verify the deployment.
    work.write_spec("[base]\ntree = [{ src = \"bin\", dest = \"/bin\" }]\n[coder]\n");
    let oci = work.out("oci");
    let out = run(work
        .strata()
        .args(["build", work.spec().to_str().unwrap(), "--output"])
        .arg(format!("oci:{}", oci.display())));
    assert!(!out.status.success(), "the build must fail");
    let err = stderr(&out);
    assert!(err.contains("[FAIL] CA certificate bundle"), "{err}");
    assert!(err.contains("--no-check"), "{err}");
    assert!(!oci.exists(), "nothing is written");

    work.build(&format!("oci:{}", oci.display()), &["--no-check"]);
    assert!(oci.join("index.json").is_file());
}

/// Reads one file from an unpacked rootfs snapshot.
fn node<'a>(snap: &'a Snapshot, path: &str) -> &'a Node {
    snap.nodes
        .get(path)
        .unwrap_or_else(|| panic!("no {path} in the image"))
}

fn text_of(snap: &Snapshot, path: &str) -> String {
    match &node(snap, path).kind {
        Kind::File(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        other => panic!("{path} is {other:?}"),
    }
}

#[test]
fn account_merges_with_the_images_own_databases() {
    if !require(&["umoci"]) {
        return;
    }
    let work = Work::new();
    work.file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
        0o644,
    );
    work.file("etc/group", "root:x:0:\ndaemon:x:1:\nsudo:x:27:\n", 0o644);
    work.file("etc/skel/.profile", "# profile\n", 0o644);
    work.file("etc/skel/.config/app.conf", "x=1\n", 0o600);
    work.file("usr/bin/sudo", "not really sudo", 0o755);
    work.write_spec(
        "[base]\ntree = [{ src = \"etc\", dest = \"/etc\" }, { src = \"usr\", dest = \"/usr\" }]\n\
         [account]\nname = \"dev\"\nuid = 1500\ngroups = [\"sudo\"]\n",
    );
    let oci = work.out("oci");
    let build = work.build(&format!("oci:{}", oci.display()), &[]);
    let bundle = work.out("bundle");
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !is_root() {
        cmd.arg("--rootless");
    }
    cmd.arg("--image")
        .arg(format!("{}:{}", oci.display(), build.tag()))
        .arg(&bundle);
    run_ok(&mut cmd);
    let snap = snapshot(&bundle.join("rootfs"));

    assert_eq!(
        text_of(&snap, "etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
         dev:x:1500:1000::/home/dev:/bin/sh\n"
    );
    assert_eq!(
        text_of(&snap, "etc/group"),
        "root:x:0:\ndaemon:x:1:\nsudo:x:27:dev\ndev:x:1000:\n"
    );
    assert!(text_of(&snap, "etc/shadow").contains("dev:*::0:99999:7:::"));
    assert_eq!(
        text_of(&snap, "etc/sudoers.d/strata-dev"),
        "# The workspace account, written by strata.\ndev ALL=(ALL:ALL) NOPASSWD:ALL\n"
    );
    if is_root() {
        let home = node(&snap, "home/dev");
        assert_eq!((home.uid, home.gid), (1500, 1000), "{home:?}");
        let profile = node(&snap, "home/dev/.profile");
        assert_eq!((profile.uid, profile.mode), (1500, Some(0o644)));
        let conf = node(&snap, "home/dev/.config/app.conf");
        assert_eq!((conf.uid, conf.mode), (1500, Some(0o600)));
        assert_eq!(node(&snap, "etc/sudoers.d/strata-dev").mode, Some(0o440));
    }
    let config: Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["process"]["user"]["uid"], 1500);
    assert_eq!(config["process"]["cwd"], "/home/dev");
    let env = config["process"]["env"].to_string();
    assert!(env.contains("LANG=C.UTF-8"), "{env}");
}

#[test]
fn a_clash_with_a_system_account_names_both() {
    let work = Work::new();
    work.file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\ndebian:x:1000:1000::/home/debian:/bin/sh\n",
        0o644,
    );
    work.write_spec("[base]\ntree = [{ src = \"etc\", dest = \"/etc\" }]\n[coder]\n");
    let out = run(work
        .strata()
        .args(["build", work.spec().to_str().unwrap(), "--output"])
        .arg(format!("oci:{}", work.out("oci").display())));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("`coder` (uid 1000)") && err.contains("`debian` (uid 1000)"),
        "{err}"
    );
    assert!(
        err.contains("strata.toml"),
        "the error points at the spec: {err}"
    );
}

// ---------------------------------------------------------------------------------------------
// The agent bootstrap, for real.

/// What Coder's Linux bootstrap script does, written for this test: a temporary directory,
/// the agent downloaded with curl, else wget, else busybox wget (retrying), then exec'd with
/// the agent's auth settings.
fn init_script(access_url: &str, arch: &str) -> String {
    format!(
        r#"set -eux
ACCESS_URL='{access_url}'
ARCH='{arch}'
BINARY_DIR=$(mktemp -d -t coder.XXXXXX)
BINARY_NAME=coder
BINARY_URL="${{ACCESS_URL}}bin/coder-linux-${{ARCH}}"
cd "$BINARY_DIR"
tries=0
while :; do
  status=0
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --compressed "$BINARY_URL" -o "$BINARY_NAME" || status=$?
  elif command -v wget >/dev/null 2>&1; then
    wget -q "$BINARY_URL" -O "$BINARY_NAME" || status=$?
  elif command -v busybox >/dev/null 2>&1; then
    busybox wget -q "$BINARY_URL" -O "$BINARY_NAME" || status=$?
  else
    echo "error: no download tool found, install curl, wget or busybox wget"
    exit 127
  fi
  [ "$status" -eq 0 ] && break
  tries=$((tries + 1))
  if [ "$tries" -ge 5 ]; then
    echo "error: could not download the agent from $BINARY_URL"
    exit 1
  fi
  echo "download failed ($status), retrying in 1s"
  sleep 1
done
chmod +x "$BINARY_NAME"
export CODER_AGENT_AUTH="token"
export CODER_AGENT_URL="$ACCESS_URL"
exec ./$BINARY_NAME agent
"#
    )
}

/// The stand-in agent: a script run by the image's own sh that records who runs it and how.
const FAKE_AGENT: &str = r#"#!/bin/sh
out=/agent-out
id -u > "$out/uid"
id -g > "$out/gid"
for a in "$0" "$@"; do echo "$a"; done > "$out/argv"
env > "$out/env"
pwd > "$out/pwd"
echo ok > "$out/done"
"#;

/// A minimal HTTP server on 127.0.0.1 that serves `body` at `path` and 404 elsewhere; the
/// request paths it saw are recorded.
fn serve(path: String, body: &'static [u8]) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line == "\r\n" || line == "\n" => break,
                    Ok(_) => {}
                }
            }
            let target = request.split_whitespace().nth(1).unwrap_or("").to_owned();
            log.lock().unwrap().push(target.clone());
            let response = if target == path {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(body);
                r
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            };
            let _ = stream.write_all(&response);
        }
    });
    (url, seen)
}

/// What one workspace start did: the logs, what the agent recorded, what was downloaded.
struct Bootstrap {
    logs: String,
    stderr: String,
    out_dir: PathBuf,
    seen: Vec<String>,
    url: String,
    arch: &'static str,
    token: &'static str,
}

impl Bootstrap {
    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.out_dir.join(name))
            .unwrap_or_else(|e| panic!("the agent did not write {name} ({e}): {}", self.logs))
    }
}

/// Loads a built docker-archive into podman and starts it the way Coder's docker template
/// starts a workspace: the image's own user, the agent token in the environment, the init
/// script as the entrypoint, the access URL served by this test.
fn start_workspace(work: &Work, build: &Build, archive: &Path) -> Bootstrap {
    let image = LoadedImage {
        tool: "podman",
        reference: format!("localhost/{}", build.reference()),
    };
    podman_load(archive);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let (url, seen) = serve(format!("/bin/coder-linux-{arch}"), FAKE_AGENT.as_bytes());
    let out_dir = work.out("agent-out");
    fs::create_dir_all(&out_dir).unwrap();
    set_mode(&out_dir, 0o777);
    let token = "strata-test-token-0123456789";
    let entrypoint = serde_json::to_string(&["sh", "-c", &init_script(&url, arch)]).unwrap();
    let run_out = run(podman_run()
        .args(["--network=host", "-e"])
        .arg(format!("CODER_AGENT_TOKEN={token}"))
        .arg("-v")
        .arg(format!("{}:/agent-out", out_dir.display()))
        .arg(format!("--entrypoint={entrypoint}"))
        .arg(&image.reference));
    let logs = format!(
        "--- stdout\n{}\n--- stderr\n{}",
        stdout(&run_out),
        stderr(&run_out)
    );
    assert!(run_out.status.success(), "the workspace failed: {logs}");
    let seen = seen.lock().unwrap().clone();
    Bootstrap {
        stderr: stderr(&run_out),
        logs,
        out_dir,
        seen,
        url,
        arch,
        token,
    }
}

/// The agent ran once, as the account, with the token and the bootstrap's environment.
fn assert_agent_ran_as_the_account(b: &Bootstrap) {
    assert_eq!(
        b.seen,
        [format!("/bin/coder-linux-{}", b.arch)],
        "the agent was downloaded once"
    );
    assert_eq!(b.read("done"), "ok\n");
    assert_eq!(b.read("uid"), "1000\n", "the agent runs as the account");
    assert_eq!(b.read("gid"), "1000\n");
    assert_eq!(b.read("argv"), "./coder\nagent\n");
    let env = b.read("env");
    for expected in [
        format!("CODER_AGENT_TOKEN={}", b.token),
        "CODER_AGENT_AUTH=token".to_owned(),
        format!("CODER_AGENT_URL={}", b.url),
        "HOME=/home/coder".to_owned(),
        "LANG=C.UTF-8".to_owned(),
    ] {
        assert!(
            env.lines().any(|l| l == expected),
            "{expected} missing from the agent's environment:\n{env}"
        );
    }
    assert!(
        b.read("pwd").starts_with("/tmp/coder."),
        "{}",
        b.read("pwd")
    );
}

#[test]
fn agent_bootstrap_starts_the_agent_as_the_account_under_podman() {
    if !require(&["podman"]) {
        return;
    }
    let work = Work::new();
    coder_example(&work, &unique_name("coder-agent"));
    let archive = work.out("image.tar");
    let build = work.build(&format!("docker-archive:{}", archive.display()), &[]);
    let b = start_workspace(&work, &build, &archive);
    // No curl in the image: busybox's wget fetched the agent (busybox sh finds its own
    // applets, so `command -v wget` already answers).
    assert!(
        b.stderr.contains("wget -q http://127.0.0.1:"),
        "the init script downloads with busybox wget: {}",
        b.logs
    );
    assert_agent_ran_as_the_account(&b);
}

#[test]
fn agent_bootstrap_in_the_debian_example_downloads_with_curl() {
    if !require(&["podman"]) {
        return;
    }
    let work = Work::new();
    let text = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/coder-debian/strata.toml"),
    )
    .expect("read the Debian coder example");
    work.write_spec(&text.replace(
        "name = \"strata-examples/coder-debian\"",
        &format!("name = \"{}\"", unique_name("coder-debian")),
    ));
    let archive = work.out("image.tar");
    // The Debian tests' shared download cache keeps the suite from fetching twice.
    let mut cmd = work.strata_debian();
    cmd.arg("build")
        .arg(work.spec())
        .arg("--json")
        .arg("--output")
        .arg(format!("docker-archive:{}", archive.display()));
    let build = Build {
        json: serde_json::from_slice(&run_ok(&mut cmd).stdout).expect("build --json"),
    };
    let b = start_workspace(&work, &build, &archive);
    assert!(
        b.stderr.contains("curl -fsSL --compressed"),
        "a Debian image with curl downloads the agent with curl: {}",
        b.logs
    );
    assert_agent_ran_as_the_account(&b);
}

/// `examples/coder-nix`: its local derivations, built by the host's nix into a private store
/// with nothing downloaded, make a workspace that passes `strata check --coder` (the archive
/// and the spec) and whose agent bootstrap, run under podman, downloads the agent with the
/// closure's wget and starts it as the account.
#[test]
fn agent_bootstrap_in_the_nix_example_downloads_with_the_closures_wget() {
    if !require(&["nix-build", "podman"]) {
        return;
    }
    let work = Work::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/coder-nix");
    let text = fs::read_to_string(example.join("strata.toml")).expect("read the Nix example");
    fs::copy(
        example.join("default.nix"),
        work.spec_dir().join("default.nix"),
    )
    .expect("copy default.nix");
    work.write_spec(&text.replace(
        "name = \"strata-examples/coder-nix\"",
        &format!("name = \"{}\"", unique_name("coder-nix")),
    ));
    let nix_env = |cmd: &mut Command| {
        cmd.env("NIX_REMOTE", work.root().join("nix")).env(
            "NIX_CONFIG",
            "substituters =\nsandbox = false\nbuild-users-group =\n",
        );
    };
    let archive = work.out("image.tar");
    let mut cmd = work.strata();
    nix_env(&mut cmd);
    cmd.arg("build")
        .arg(work.spec())
        .arg("--json")
        .arg("--output")
        .arg(format!("docker-archive:{}", archive.display()));
    let build = Build {
        json: serde_json::from_slice(&run_ok(&mut cmd).stdout).expect("build --json"),
    };
    let store_layers = build
        .layers()
        .iter()
        .filter(|l| {
            l["objects"].as_array().is_some_and(|o| {
                o.iter()
                    .all(|x| x.as_str().is_some_and(|x| x.starts_with("/nix/store/")))
            })
        })
        .count();
    assert_eq!(
        store_layers,
        2,
        "busybox and the CA bundle: {:#?}",
        build.layers()
    );

    let (report, ok) = check_json(&work, &format!("docker-archive:{}", archive.display()));
    assert!(ok, "the Nix example passes: {report:#}");
    for id in [
        "sh",
        "env",
        "mktemp",
        "downloader",
        "ca-certificates",
        "account",
    ] {
        assert_eq!(item(&report, id)["passed"], true, "{id}: {report:#}");
    }
    assert!(
        item(&report, "sh")["reason"]
            .as_str()
            .unwrap()
            .contains("busybox-static/bin/busybox"),
        "{report:#}"
    );

    let b = start_workspace(&work, &build, &archive);
    assert!(
        b.stderr.contains("wget -q http://127.0.0.1:"),
        "the init script downloads with the profile's wget: {}",
        b.logs
    );
    assert_agent_ran_as_the_account(&b);
}

// ---------------------------------------------------------------------------------------------
// Templates.

#[test]
fn templates_parse_as_hcl_and_run_the_image_by_digest() {
    let work = Work::new();
    coder_example(&work, "strata-e2e/coder-template");
    let digest = work
        .build(&format!("oci:{}", work.out("oci").display()), &[])
        .digest()
        .to_owned();

    for kind in ["docker", "kubernetes"] {
        let dir = work.out(&format!("template-{kind}"));
        run_ok(
            work.strata()
                .args([
                    "coder",
                    "template",
                    work.spec().to_str().unwrap(),
                    "--kind",
                    kind,
                    "--out",
                ])
                .arg(&dir),
        );
        let readme = fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.contains(&digest), "{readme}");
        let hcl = parse_hcl_file(&dir.join("main.tf"));

        let providers = &hcl["terraform"][0]["required_providers"][0];
        assert_eq!(providers["coder"]["source"], "coder/coder");
        let image = hcl["locals"][0]["image"].as_str().unwrap();
        assert!(
            image.starts_with("strata-e2e/coder-template/")
                && image.ends_with(&format!("@{digest}")),
            "the image is pinned by digest: {image}"
        );
        for data in [
            "coder_provisioner",
            "coder_workspace",
            "coder_workspace_owner",
        ] {
            hcl_block(&hcl, "data", &[data, "me"]);
        }
        let agent = hcl_block(&hcl, "resource", &["coder_agent", "main"]);
        assert_eq!(agent["os"], "linux");
        assert_eq!(agent["arch"], strata_arch());
        assert!(
            agent["startup_script"]
                .as_str()
                .unwrap()
                .contains("code-server")
        );
        let app = hcl_block(&hcl, "resource", &["coder_app", "code-server"]);
        assert_eq!(app["count"], "${var.code_server ? 1 : 0}");
        assert_eq!(hcl["locals"][0]["uid"], 1000);
        assert_eq!(hcl["locals"][0]["home"], "/home/coder");

        match kind {
            "docker" => {
                assert_eq!(providers["docker"]["source"], "kreuzwerker/docker");
                hcl_block(&hcl, "resource", &["docker_volume", "home_volume"]);
                let c = hcl_block(&hcl, "resource", &["docker_container", "workspace"]);
                let entry = c["entrypoint"].to_string();
                assert!(entry.contains("coder_agent.main.init_script"), "{entry}");
                assert!(
                    entry.contains("\"sh\"") && entry.contains("\"-c\""),
                    "{entry}"
                );
                assert!(
                    c["env"]
                        .to_string()
                        .contains("CODER_AGENT_TOKEN=${coder_agent.main.token}")
                );
                assert_eq!(c["user"], "${local.uid}");
                assert_eq!(c["volumes"][0]["container_path"], "${local.home}");
            }
            _ => {
                assert_eq!(providers["kubernetes"]["source"], "hashicorp/kubernetes");
                hcl_block(
                    &hcl,
                    "resource",
                    &["kubernetes_persistent_volume_claim", "home"],
                );
                let d = hcl_block(&hcl, "resource", &["kubernetes_deployment", "main"]);
                let pod = &d["spec"][0]["template"][0]["spec"][0];
                assert_eq!(pod["security_context"][0]["run_as_user"], "${local.uid}");
                assert_eq!(pod["security_context"][0]["run_as_non_root"], true);
                let container = &pod["container"][0];
                assert_eq!(container["image"], "${local.image}");
                assert!(
                    container["command"]
                        .to_string()
                        .contains("coder_agent.main.init_script")
                );
                assert_eq!(container["env"][0]["name"], "CODER_AGENT_TOKEN");
                assert_eq!(container["volume_mount"][0]["mount_path"], "${local.home}");
            }
        }
    }
}

fn strata_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armv7",
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// A Nix image: the account merges with the Nix source's own /etc/passwd.

#[test]
fn nix_image_gets_the_account_merged_and_passes_the_check() {
    if !require(&["nix-store", "umoci"]) {
        return;
    }
    let work = Work::new();
    let bb = fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    work.file("busybox/bin/busybox", bb, 0o555);
    work.symlink("busybox/bin/sh", "busybox");
    // The Nix source links /usr/bin/env to the closure's bin/env.
    work.symlink("busybox/bin/env", "busybox");
    work.file(
        "cacert/etc/ssl/certs/ca-bundle.crt",
        "-----BEGIN CERTIFICATE-----\n",
        0o444,
    );
    let nix_root = work.root().join("nix");
    let nix_env = |cmd: &mut Command| {
        cmd.env("NIX_REMOTE", &nix_root).env(
            "NIX_CONFIG",
            "substituters =\nsandbox = false\nbuild-users-group =\n",
        );
    };
    let add = |rel: &str| {
        let mut cmd = Command::new("nix-store");
        nix_env(&mut cmd);
        cmd.current_dir(work.spec_dir()).arg("--add").arg(rel);
        stdout(&run_ok(&mut cmd)).trim().to_owned()
    };
    let (busybox, cacert) = (add("busybox"), add("cacert"));
    work.write_spec(&format!(
        "[image]\nname = \"strata-e2e/coder-nix\"\n\n[base]\nnix = {{ paths = [\"{busybox}\", \"{cacert}\"] }}\n\n[coder]\n"
    ));
    let oci = work.out("oci");
    let mut cmd = work.strata();
    nix_env(&mut cmd);
    let out = run_ok(
        cmd.args(["build", work.spec().to_str().unwrap(), "--json", "--output"])
            .arg(format!("oci:{}", oci.display())),
    );
    let build: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tag = build["tag"].as_str().unwrap();

    let (report, ok) = check_json(&work, &format!("oci:{}", oci.display()));
    assert!(ok, "the Nix image passes: {report:#}");

    let bundle = work.out("bundle");
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !is_root() {
        cmd.arg("--rootless");
    }
    run_ok(
        cmd.arg("--image")
            .arg(format!("{}:{tag}", oci.display()))
            .arg(&bundle),
    );
    let snap = snapshot(&bundle.join("rootfs"));
    let passwd = text_of(&snap, "etc/passwd");
    let lines: Vec<&str> = passwd.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("root:x:0:0:")),
        "{passwd}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("nobody:")),
        "the Nix source's accounts stay: {passwd}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("coder:x:1000:1000::/home/coder:/bin/sh"),
        "{passwd}"
    );
    assert!(text_of(&snap, "etc/shadow").contains("coder:*::0:99999:7:::"));
}

/// The host's glibc loader (its path and file name) and libc, by architecture.
fn host_glibc() -> (&'static str, &'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => (
            "/lib64/ld-linux-x86-64.so.2",
            "ld-linux-x86-64.so.2",
            "/lib/x86_64-linux-gnu/libc.so.6",
        ),
        "aarch64" => (
            "/lib/ld-linux-aarch64.so.1",
            "ld-linux-aarch64.so.1",
            "/lib/aarch64-linux-gnu/libc.so.6",
        ),
        other => panic!("no glibc fixture for {other}"),
    }
}

/// A Nix image with a shell, `env` and a downloader but no coreutils passed the old check and
/// then failed in Coder with `mktemp: command not found`. The check now fails it naming the
/// missing commands, the build gate refuses it, and the real bootstrap run under podman fails
/// the same way, so the check and Coder agree.
#[test]
fn nix_image_without_coreutils_fails_the_check_naming_mktemp() {
    if !require(&["nix-store", "podman", "/usr/bin/dash"]) {
        return;
    }
    let work = Work::new();
    // dash as sh, GNU env, and busybox only as `busybox wget` (no applet links).
    let read = |p: &str| fs::read(p).unwrap_or_else(|e| panic!("{p} ({e})"));
    work.file("dash/bin/sh", read("/usr/bin/dash"), 0o555);
    work.file("dash/bin/env", read("/usr/bin/env"), 0o555);
    work.file("busybox/bin/busybox", read("/bin/busybox"), 0o555);
    let (loader, loader_name, libc) = host_glibc();
    work.file(&format!("glibc/lib/{loader_name}"), read(loader), 0o555);
    work.file("glibc/lib/libc.so.6", read(libc), 0o555);
    work.file(
        "cacert/etc/ssl/certs/ca-bundle.crt",
        "-----BEGIN CERTIFICATE-----\n",
        0o444,
    );
    let nix_root = work.root().join("nix");
    let nix_env = |cmd: &mut Command| {
        cmd.env("NIX_REMOTE", &nix_root).env(
            "NIX_CONFIG",
            "substituters =\nsandbox = false\nbuild-users-group =\n",
        );
    };
    let add = |rel: &str| {
        let mut cmd = Command::new("nix-store");
        nix_env(&mut cmd);
        cmd.current_dir(work.spec_dir()).arg("--add").arg(rel);
        stdout(&run_ok(&mut cmd)).trim().to_owned()
    };
    let paths: Vec<String> = ["dash", "busybox", "glibc", "cacert"]
        .iter()
        .map(|p| format!("\"{}\"", add(p)))
        .collect();
    let name = unique_name("coder-nix-no-coreutils");
    work.write_spec(&format!(
        "[image]\nname = \"{name}\"\n\n[base]\nnix = {{ paths = [{}] }}\n\n[coder]\n",
        paths.join(", ")
    ));

    // The build gate refuses it, naming the commands.
    let archive = work.out("image.tar");
    let mut cmd = work.strata();
    nix_env(&mut cmd);
    let out = run(cmd
        .args(["build", work.spec().to_str().unwrap(), "--output"])
        .arg(format!("docker-archive:{}", archive.display())));
    assert!(!out.status.success(), "the build must refuse the image");
    let err = stderr(&out);
    assert!(
        err.contains(
            "[FAIL] mktemp (the agent's temporary directory): no `mktemp` on the image's PATH"
        ),
        "{err}"
    );
    assert!(
        err.contains("fails Coder's workspace requirements: mktemp, chmod, sleep"),
        "{err}"
    );
    assert!(!archive.exists(), "nothing is written");

    let mut cmd = work.strata();
    nix_env(&mut cmd);
    let out = run_ok(
        cmd.args([
            "build",
            work.spec().to_str().unwrap(),
            "--no-check",
            "--json",
        ])
        .arg("--output")
        .arg(format!("docker-archive:{}", archive.display())),
    );
    let build: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (report, ok) = check_json(&work, &format!("docker-archive:{}", archive.display()));
    assert!(!ok, "{report:#}");
    for id in [
        "sh",
        "env",
        "downloader",
        "tmp",
        "account",
        "ca-certificates",
        "loader",
    ] {
        assert_eq!(item(&report, id)["passed"], true, "{id}: {report:#}");
    }
    assert!(
        item(&report, "downloader")["reason"]
            .as_str()
            .unwrap()
            .starts_with("busybox wget (")
    );
    for id in ["mktemp", "chmod", "sleep"] {
        let i = item(&report, id);
        assert_eq!(i["passed"], false, "{id}: {report:#}");
        assert!(
            i["reason"]
                .as_str()
                .unwrap()
                .contains(&format!("{id}: command not found")),
            "{i}"
        );
    }

    // What Coder would see: the bootstrap stops at mktemp.
    let image = LoadedImage {
        tool: "podman",
        reference: format!(
            "localhost/{}:{}",
            build["name"].as_str().unwrap(),
            build["tag"].as_str().unwrap()
        ),
    };
    podman_load(&archive);
    let entrypoint = serde_json::to_string(&[
        "sh",
        "-c",
        &init_script("http://127.0.0.1:9/", strata_arch()),
    ])
    .unwrap();
    let out = run(podman_run()
        .args(["--network=none"])
        .arg(format!("--entrypoint={entrypoint}"))
        .arg(&image.reference));
    assert!(!out.status.success(), "the bootstrap cannot succeed");
    assert!(
        stderr(&out).contains("mktemp: not found"),
        "the bootstrap fails at mktemp: {}",
        stderr(&out)
    );
}

/// `--image docker://HOST/REPO:TAG`: the template pins the image where it was pushed, with the
/// digest the registry serves for the tag (here a zstd build, whose digest is not the gzip
/// build's), so a workspace pulls exactly that image. (Issue 11, point 9.)
#[test]
fn template_image_from_the_registry_pins_the_pushed_digest() {
    let reg = Registry::start(Auth::None);
    let work = Work::new();
    coder_example(&work, "strata-e2e/coder-pushed");
    let pushed = work.build(&reg.docker("team/ws:v1"), &["--compression", "zstd"]);
    let gzip = work.build(&format!("oci:{}", work.out("oci").display()), &[]);
    assert_ne!(
        pushed.digest(),
        gzip.digest(),
        "compression changes the digest"
    );

    let dir = work.out("template-pushed");
    run_ok(
        work.strata()
            .args(["coder", "template", work.spec().to_str().unwrap()])
            .args(["--kind", "docker", "--image", &reg.docker("team/ws:v1")])
            .arg("--out")
            .arg(&dir),
    );
    let hcl = parse_hcl_file(&dir.join("main.tf"));
    let image = hcl["locals"][0]["image"].as_str().unwrap();
    assert_eq!(
        image,
        format!("{}/team/ws:v1@{}", reg.host(), pushed.digest()),
        "the template pins the pushed image"
    );
    assert_eq!(
        reg.status("HEAD", &format!("team/ws/manifests/{}", pushed.digest())),
        200,
        "the pinned digest exists in the registry"
    );

    // A tag the registry does not have is an error that says to push first.
    let out = run(work.strata().args([
        "coder",
        "template",
        work.spec().to_str().unwrap(),
        "--kind",
        "docker",
        "--image",
        &reg.docker("team/ws:missing"),
        "--out",
        work.out("template-missing").to_str().unwrap(),
    ]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("push it first"), "{}", stderr(&out));
}
