//! `strata serve` end to end: the real binary in front of a real `docker-registry` backend on
//! 127.0.0.1, images of the real Debian mirror and of a team spec, pulled with clients no one
//! here wrote (skopeo, podman, docker) and run. Every wait is bounded in count and time.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
/// Long enough for a cold build of a small Debian image on a busy 2-core machine.
const BUILD: Duration = Duration::from_secs(600);

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

/// A server in front of `registry` (repository `cache`), with its own store and the tests'
/// shared Debian download cache.
fn server(work: &Work, registry: &Registry, extra: &[&str]) -> Server {
    let mut args = vec![
        "--backend".to_owned(),
        registry.docker("cache"),
        "--threads".to_owned(),
        "2".to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let cache = shared_debian_cache();
    Server::start(
        work.root().join("store"),
        work.root().join("serve.log"),
        &args,
        &[("STRATA_DEBIAN_CACHE", cache.to_str().unwrap())],
    )
}

/// `DIR/hello/strata.toml`: busybox and a script, all inside the spec's directory.
fn hello_spec(work: &Work, greeting: &str) -> PathBuf {
    let host = Path::new("/bin/busybox");
    assert!(
        host.is_file(),
        "/bin/busybox is missing; scripts/test installs busybox-static"
    );
    work.file(
        "specs/hello/bin/busybox",
        std::fs::read(host).unwrap(),
        0o755,
    );
    work.file(
        "specs/hello/hello.sh",
        format!("#!/bin/busybox sh\necho {greeting}\n"),
        0o755,
    );
    work.file(
        "specs/hello/strata.toml",
        "[image]\nname = \"team/hello\"\n\n[base]\ntree = [\n  { src = \"bin\", dest = \"/bin\" },\n  \
         { src = \"hello.sh\", dest = \"/usr/local/bin/hello\", mode = 0o755 },\n]\n\n\
         [config]\ncmd = [\"/usr/local/bin/hello\"]\n",
        0o644,
    );
    work.root().join("spec/specs")
}

fn get(s: &Server, path: &str) -> Answer {
    http(s.port, "GET", path, &[], BUILD)
}

fn error_code(a: &Answer) -> String {
    a.json()["errors"][0]["code"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn error_message(a: &Answer) -> String {
    a.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Backend manifest uploads for `key` in the registry's access log.
fn manifest_puts(registry: &Registry, key: &str) -> usize {
    registry
        .requests_since(0)
        .iter()
        .filter(|l| l.contains(&format!("PUT /v2/cache/manifests/{key}")))
        .count()
}

#[test]
fn distribution_api_for_a_team_spec_is_served_from_the_backend() {
    if !require(&["skopeo", "podman"]) {
        return;
    }
    let work = Work::new();
    let mut registry = Registry::start(Auth::None);
    let specs = hello_spec(&work, "hello-from-the-team");
    // --resolve-ttl 0: every pull of `latest` looks at the spec directory again.
    let mut srv = server(
        &work,
        &registry,
        &["--specs", specs.to_str().unwrap(), "--resolve-ttl", "0"],
    );

    let ping = get(&srv, "/v2/");
    assert_eq!(ping.status, 200);
    assert_eq!(
        ping.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    // HEAD by tag does the work of a GET: digest, type and length, as containerd needs.
    let head = http(
        srv.port,
        "HEAD",
        "/v2/spec/hello/manifests/latest",
        &[],
        BUILD,
    );
    assert_eq!(head.status, 200, "{}", srv.log_text());
    let digest = head.header("docker-content-digest").unwrap().to_owned();
    let key = head.header("strata-cache-key").unwrap().to_owned();
    assert_eq!(
        head.header("content-type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert!(head.body.is_empty());
    let man = get(&srv, "/v2/spec/hello/manifests/latest");
    assert_eq!(man.status, 200);
    assert_eq!(format!("sha256:{}", sha256_hex(&man.body)), digest);
    assert_eq!(
        head.header("content-length").unwrap(),
        man.body.len().to_string()
    );
    let doc = man.json();
    assert_eq!(doc["annotations"]["dev.strata.serve.key"], key.as_str());
    assert_eq!(doc["annotations"]["dev.strata.serve.name"], "spec/hello");

    // Storage is the backend: the image is there under its key, byte for byte.
    let on_backend = http(
        registry.port,
        "GET",
        &format!("/v2/cache/manifests/{key}"),
        &[],
        T,
    );
    assert_eq!(on_backend.status, 200);
    assert_eq!(on_backend.body, man.body);

    // By digest, and by the key tag.
    for r in [digest.as_str(), key.as_str()] {
        let a = get(&srv, &format!("/v2/spec/hello/manifests/{r}"));
        assert_eq!(a.status, 200, "{r}: {}", a.text());
        assert_eq!(a.body, man.body);
    }

    // Blobs: HEAD, GET, and a range, as the backend has them.
    let layer = &doc["layers"][0];
    let (ld, size) = (
        layer["digest"].as_str().unwrap(),
        layer["size"].as_u64().unwrap(),
    );
    let bpath = format!("/v2/spec/hello/blobs/{ld}");
    let bhead = http(srv.port, "HEAD", &bpath, &[], T);
    assert_eq!(bhead.status, 200);
    assert_eq!(
        bhead.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert_eq!(bhead.header("docker-content-digest"), Some(ld));
    let full = get(&srv, &bpath);
    assert_eq!(format!("sha256:{}", sha256_hex(&full.body)), ld);
    let part = http(srv.port, "GET", &bpath, &[("Range", "bytes=10-109")], T);
    assert_eq!(part.status, 206, "{:?}", part.headers);
    assert_eq!(part.body, full.body[10..110]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 10-109/{size}").as_str())
    );

    let tags = get(&srv, "/v2/spec/hello/tags/list").json();
    assert_eq!(tags["tags"], serde_json::json!(["latest"]));

    // OCI errors with JSON bodies.
    for (path, status, code) in [
        ("/v2/spec/Hello/manifests/latest", 400, "NAME_INVALID"),
        (
            "/v2/debian/bookworm/g++/manifests/latest",
            400,
            "NAME_INVALID",
        ),
        ("/v2/library/alpine/manifests/latest", 404, "NAME_UNKNOWN"),
        ("/v2/spec/nosuch/manifests/latest", 404, "MANIFEST_UNKNOWN"),
        ("/v2/spec/hello/manifests/V1", 404, "MANIFEST_UNKNOWN"),
        ("/v2/spec/hello/blobs/sha256:zz", 400, "DIGEST_INVALID"),
        (
            "/v2/spec/hello/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
            404,
            "BLOB_UNKNOWN",
        ),
    ] {
        let a = get(&srv, path);
        assert_eq!(a.status, status, "{path}: {}", a.text());
        assert_eq!(error_code(&a), code, "{path}");
    }
    assert!(error_message(&get(&srv, "/v2/spec/nosuch/manifests/latest")).contains("nosuch"));
    // An archive that cannot be reached is the server's trouble, not the name's: a retryable
    // 503, not remembered (the next pull resolves again).
    work.file(
        "specs/offline/strata.toml",
        "[base]\ndebian = { mirror = \"http://127.0.0.1:9/debian\", updates = false, packages = \
         [\"hello\"] }\n",
        0o644,
    );
    let resolves = srv.stat("resolves");
    for _ in 0..2 {
        let a = get(&srv, "/v2/spec/offline/manifests/latest");
        assert_eq!(a.status, 503, "{}", a.text());
        assert!(a.header("retry-after").is_some());
    }
    assert_eq!(srv.stat("resolves"), resolves + 2);

    // A failed build: 404 MANIFEST_UNKNOWN with its cause on one line, remembered (the next
    // pull does not build again).
    work.file(
        "specs/broken/strata.toml",
        "[base]\ntree = [ { src = \"missing-dir\", dest = \"/opt\" } ]\n",
        0o644,
    );
    let builds = srv.stat("builds");
    for _ in 0..2 {
        let a = get(&srv, "/v2/spec/broken/manifests/latest");
        assert_eq!(
            (a.status, error_code(&a).as_str()),
            (404, "MANIFEST_UNKNOWN")
        );
        let m = error_message(&a);
        assert!(
            m.contains("build failed") && m.contains("missing-dir"),
            "{m}"
        );
        assert!(!m.contains('\n'));
    }
    assert_eq!(srv.stat("builds"), builds + 1);
    assert_eq!(srv.stat("build_failures"), 1);
    // spec/hello was built once for all the requests above.
    assert_eq!(builds, 1);
    let before_alice = srv.stat("builds");

    // A tag naming a user half: DIR/hello/users/alice.toml is the spec's [user].
    work.file("specs/hello/users/alice/note.txt", "alice's note\n", 0o644);
    work.file(
        "specs/hello/users/alice.toml",
        "tree = [ { src = \"users/alice\", dest = \"/home/alice\" } ]\n",
        0o644,
    );
    let alice = get(&srv, "/v2/spec/hello/manifests/alice");
    assert_eq!(alice.status, 200, "{}", alice.text());
    assert_eq!(srv.stat("builds"), before_alice + 1);
    let adoc = alice.json();
    assert_eq!(
        adoc["annotations"]["dev.strata.serve.name"],
        "spec/hello:alice"
    );
    assert_eq!(
        adoc["layers"].as_array().unwrap().len(),
        doc["layers"].as_array().unwrap().len() + 1
    );
    assert_eq!(adoc["layers"][0], doc["layers"][0]);
    // Adding a user half changes no other image: `latest` keeps its key (users/ is hashed
    // only for the user it names).
    let still = http(
        srv.port,
        "HEAD",
        "/v2/spec/hello/manifests/latest",
        &[],
        BUILD,
    );
    assert_eq!(still.header("strata-cache-key"), Some(key.as_str()));
    let nobody = get(&srv, "/v2/spec/hello/manifests/bob");
    assert_eq!(
        (nobody.status, error_code(&nobody).as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
    assert!(error_message(&nobody).contains("users/bob.toml"));

    // Clients no one here wrote.
    let reference = format!("{}/spec/hello:latest", srv.host());
    let inspect = run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    assert_eq!(json_stdout(&inspect)["Digest"], digest.as_str());
    let oci = work.root().join("copied");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("oci:{}:latest", oci.display()),
    ]));
    assert!(oci.join("index.json").is_file());
    podman_pull(&reference);
    let out = run_ok(podman_run().arg("--network=none").arg(&reference));
    assert_eq!(stdout(&out).trim(), "hello-from-the-team");
    drop(LoadedImage {
        tool: "podman",
        reference: reference.clone(),
    });

    // A Coder template can name the served image: it is pinned to the digest served.
    let coder_spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/coder/strata.toml");
    let tf = work.root().join("template");
    run_ok(work.strata().args([
        "coder",
        "template",
        coder_spec.to_str().unwrap(),
        "--kind",
        "docker",
        "--image",
        &format!("docker://{reference}"),
        "--out",
        tf.to_str().unwrap(),
    ]));
    let main = std::fs::read_to_string(tf.join("main.tf")).unwrap();
    assert!(main.contains(&format!("{reference}@{digest}")), "{main}");

    // A restart loses nothing: the image is found on the backend, nothing is built.
    srv.restart();
    let again = http(
        srv.port,
        "HEAD",
        "/v2/spec/hello/manifests/latest",
        &[],
        BUILD,
    );
    assert_eq!(again.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(srv.stat("builds"), 0);

    // A changed spec directory is a new key and a new build.
    hello_spec(&work, "changed");
    let changed = http(
        srv.port,
        "HEAD",
        "/v2/spec/hello/manifests/latest",
        &[],
        BUILD,
    );
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("strata-cache-key"), Some(key.as_str()));
    assert_eq!(srv.stat("builds"), 1);

    // --redirect-blobs: blob GETs are 307s to the backend, and clients follow them.
    let mut redirecting = server(
        &work,
        &registry,
        &["--specs", specs.to_str().unwrap(), "--redirect-blobs"],
    );
    let r = get(&redirecting, &bpath);
    assert_eq!(r.status, 307);
    assert_eq!(
        r.header("location"),
        Some(format!("http://{}/v2/cache/blobs/{ld}", registry.host()).as_str())
    );
    let via = work.root().join("via-redirect");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/spec/hello:latest", redirecting.host()),
        &format!("dir:{}", via.display()),
    ]));
    assert!(via.join(ld.trim_start_matches("sha256:")).is_file());
    redirecting.kill();

    // The backend down is a 503, and the server recovers when it returns.
    registry.kill();
    let down = http(srv.port, "GET", &bpath, &[], T);
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(down.header("retry-after").is_some());
    registry.restart();
    let back = get(&srv, &bpath);
    assert_eq!(back.status, 200);
    assert_eq!(back.body, full.body);
}

#[test]
fn twenty_parallel_pulls_of_a_new_debian_image_build_it_once() {
    if !require(&["podman", "docker"]) {
        return;
    }
    let work = Work::new();
    let registry = Registry::start(Auth::None);
    let srv = server(&work, &registry, &[]);
    // A new image: in canonical order `debian/shell/bookworm/hello` (bash and coreutils added).
    let name = "debian/shell/bookworm/hello";
    let port = srv.port;
    let pulls: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                http(
                    port,
                    "GET",
                    &format!("/v2/{name}/manifests/latest"),
                    &[],
                    BUILD,
                )
            })
        })
        .collect();
    let answers: Vec<Answer> = pulls.into_iter().map(|t| t.join().unwrap()).collect();
    for a in &answers {
        assert_eq!(a.status, 200, "{}\n{}", a.text(), srv.log_text());
        assert_eq!(a.body, answers[0].body);
    }
    let key = answers[0].header("strata-cache-key").unwrap().to_owned();
    assert_eq!(srv.stat("builds"), 1, "{}", srv.log_text());
    assert_eq!(srv.stat("resolves"), 1);
    assert_eq!(manifest_puts(&registry, &key), 1);
    // The answer says which Releases it was built from.
    let releases = answers[0].json()["annotations"]["dev.strata.serve.releases"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        releases.contains("http://deb.debian.org/debian bookworm "),
        "{releases}"
    );
    // Any order of the same packages is the same image.
    let other = get(
        &srv,
        "/v2/debian/shell/bookworm/hello/bash/manifests/latest",
    );
    assert_eq!(other.status, 200);
    assert_eq!(other.body, answers[0].body);

    let reference = format!("{}/{name}:latest", srv.host());
    podman_pull(&reference);
    let out = run_ok(
        podman_run()
            .arg("--network=none")
            .arg(&reference)
            .arg("hello"),
    );
    assert_eq!(stdout(&out).trim(), "Hello, world!");
    drop(LoadedImage {
        tool: "podman",
        reference: reference.clone(),
    });
    // docker treats 127.0.0.0/8 registries as insecure: plain HTTP.
    run_ok(Command::new("docker").args(["pull", &reference]));
    let out =
        run_ok(Command::new("docker").args(["run", "--rm", "--network=none", &reference, "hello"]));
    assert_eq!(stdout(&out).trim(), "Hello, world!");
    let _ = Command::new("docker")
        .args(["rmi", "-f", &reference])
        .status();
    assert_eq!(srv.stat("builds"), 1);

    // An unknown package: 404 MANIFEST_UNKNOWN whose one-line cause the clients print.
    let bad = format!(
        "{}/debian/bookworm/hello/no-such-package-zz:latest",
        srv.host()
    );
    let p = run(podman().args(["pull", "--tls-verify=false", &bad]));
    assert!(!p.status.success());
    assert!(
        stderr(&p).contains("no package named `no-such-package-zz`"),
        "{}",
        stderr(&p)
    );
    let d = run(Command::new("docker").args(["pull", &bad]));
    assert!(!d.status.success());
    assert!(
        stderr(&d).contains("no package named `no-such-package-zz`"),
        "{}",
        stderr(&d)
    );
    // Remembered: the pulls after the first did not resolve again.
    let resolves = srv.stat("resolves");
    let a = get(
        &srv,
        "/v2/debian/bookworm/hello/no-such-package-zz/manifests/latest",
    );
    assert_eq!(
        (a.status, error_code(&a).as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
    assert_eq!(srv.stat("resolves"), resolves);
    assert_eq!(resolves, 2, "{}", srv.log_text());
}

#[test]
fn a_build_outlives_its_requester_and_a_long_one_answers_retryable() {
    let work = Work::new();
    let registry = Registry::start(Auth::None);
    let srv = server(&work, &registry, &["--build-wait", "1"]);
    let path = "/v2/debian/bookworm/tree/manifests/latest";
    // A requester that goes away right after asking.
    {
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    // The build outlasts the wait: a clear retryable answer, not a hang.
    let a = get(&srv, path);
    assert_eq!(a.status, 429, "{}", a.text());
    assert_eq!(error_code(&a), "TOOMANYREQUESTS");
    assert!(
        error_message(&a).contains("still being built"),
        "{}",
        a.text()
    );
    assert!(a.header("retry-after").is_some());
    // Retrying (bounded: 120 tries, 10 minutes) ends with the image the first requester's
    // build made; nothing else was built.
    let deadline = Instant::now() + BUILD;
    let mut tries = 0;
    let done = loop {
        tries += 1;
        let a = get(&srv, path);
        if a.status == 200 {
            break a;
        }
        assert_eq!(a.status, 429, "{}", a.text());
        assert!(
            tries < 120 && Instant::now() < deadline,
            "{}",
            srv.log_text()
        );
        std::thread::sleep(Duration::from_secs(5));
    };
    let v: Value = done.json();
    assert!(v["layers"].as_array().unwrap().len() > 3);
    assert_eq!(srv.stat("builds"), 1);
}

#[test]
fn replicas_build_each_new_image_once_on_its_owner_and_survive_its_death() {
    let work = Work::new();
    let registry = Registry::start(Auth::None);
    let specs = hello_spec(&work, "from-a-replica");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let cache = shared_debian_cache();
    let mut replicas: Vec<Server> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Server::start_on(
                *p,
                work.root().join(format!("store-{i}")),
                work.root().join(format!("serve-{i}.log")),
                &[
                    "--backend".into(),
                    registry.docker("cache"),
                    "--specs".into(),
                    specs.to_str().unwrap().into(),
                    "--peers".into(),
                    peers.clone(),
                    "--advertise".into(),
                    format!("http://127.0.0.1:{p}"),
                    "--threads".into(),
                    "2".into(),
                ],
                &[("STRATA_DEBIAN_CACHE", cache.to_str().unwrap())],
            )
        })
        .collect();
    // The same new image through two replicas at once: one build, on one replica.
    let name = "debian/bookworm/hello";
    let (p0, p1) = (replicas[0].port, replicas[1].port);
    let a = std::thread::spawn(move || {
        http(
            p0,
            "GET",
            &format!("/v2/{name}/manifests/latest"),
            &[],
            BUILD,
        )
    });
    let b = std::thread::spawn(move || {
        http(
            p1,
            "GET",
            &format!("/v2/{name}/manifests/latest"),
            &[],
            BUILD,
        )
    });
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(
        (a.status, b.status),
        (200, 200),
        "{}\n{}",
        a.text(),
        b.text()
    );
    assert_eq!(a.body, b.body);
    let builds: Vec<u64> = replicas.iter().map(|r| r.stat("builds")).collect();
    assert_eq!(builds.iter().sum::<u64>(), 1, "{builds:?}");

    // The owner of a new image killed mid-build, the pull going through another replica:
    // the pull still succeeds (the next replica in the key's order builds it).
    let next = "debian/bookworm/tree";
    let plan = get(&replicas[0], &format!("/_strata/resolve/{next}")).json();
    let owners: Vec<String> = plan["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_owned())
        .collect();
    let index_of = |url: &str| {
        ports
            .iter()
            .position(|p| url.ends_with(&format!(":{p}")))
            .unwrap()
    };
    let owner = index_of(&owners[0]);
    let entry = index_of(&owners[2]);
    let before_second = replicas[index_of(&owners[1])].stat("builds");
    let port = replicas[entry].port;
    let pull = std::thread::spawn(move || {
        http(
            port,
            "GET",
            &format!("/v2/{next}/manifests/latest"),
            &[],
            BUILD,
        )
    });
    // Wait until the owner is building (bounded: 600 polls, 2 minutes), then kill it.
    let mut building = false;
    for _ in 0..600 {
        if replicas[owner].stat("builds") == 1 {
            building = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(building, "{}", replicas[owner].log_text());
    replicas[owner].kill();
    let answer = pull.join().unwrap();
    assert_eq!(
        answer.status,
        200,
        "{}\n{}",
        answer.text(),
        replicas[entry].log_text()
    );
    assert_eq!(
        answer.json()["annotations"]["dev.strata.serve.key"],
        plan["key"]
    );
    let second = index_of(&owners[1]);
    assert_eq!(
        replicas[second].stat("builds"),
        before_second + 1,
        "{}",
        replicas[second].log_text()
    );

    // Restarting every replica: a pull builds nothing.
    for r in replicas.iter_mut() {
        r.restart();
    }
    for r in &replicas {
        let a = http(
            r.port,
            "HEAD",
            &format!("/v2/{next}/manifests/latest"),
            &[],
            BUILD,
        );
        assert_eq!(a.status, 200);
        let a = http(
            r.port,
            "HEAD",
            &format!("/v2/{name}/manifests/latest"),
            &[],
            BUILD,
        );
        assert_eq!(a.status, 200);
    }
    let total: u64 = replicas.iter().map(|r| r.stat("builds")).sum();
    assert_eq!(total, 0);
}

/// `nix/ATTR...` names: attributes of the `nixpkgs` flake as the server's nix resolves it (here
/// a flake registry pointing `nixpkgs` at a local flake built from the host's static busybox,
/// since no binary cache or nixpkgs is reachable), in a chroot store. The image runs under
/// podman; the answer names the outputs; a moved `nixpkgs` is a new key; an unknown attribute is
/// a 404 with nix's reason.
#[test]
fn nix_names_serve_attributes_of_the_servers_nixpkgs() {
    if !require(&["podman", "nix"]) {
        return;
    }
    let work = Work::new();
    let registry = Registry::start(Auth::None);
    let system = format!("{}-linux", std::env::consts::ARCH);
    work.file(
        "nixpkgs/busybox",
        std::fs::read("/bin/busybox").unwrap(),
        0o555,
    );
    let flake = |greeting: &str| {
        work.file(
            "nixpkgs/flake.nix",
            format!(
                r#"{{
  outputs = {{ self }}: {{
    packages.{system}.hello = derivation {{
      name = "hello";
      system = "{system}";
      builder = "${{self}}/busybox";
      args = [ "sh" "-c" "${{self}}/busybox mkdir -p $out/bin && echo '#!${{self}}/busybox sh' > $out/bin/hello && echo 'echo {greeting}' >> $out/bin/hello && ${{self}}/busybox chmod 555 $out/bin/hello" ];
    }};
  }};
}}
"#
            ),
            0o644,
        )
    };
    flake("hello from nix");
    let nixpkgs = work.spec_dir().join("nixpkgs");
    let registry_file = work.file(
        "registry.json",
        format!(
            r#"{{"version":2,"flakes":[{{"from":{{"type":"indirect","id":"nixpkgs"}},"to":{{"type":"path","path":"{}"}}}}]}}"#,
            nixpkgs.display()
        ),
        0o644,
    );
    let nix_root = work.root().join("nix");
    let nix_config = format!(
        "substituters =\nsandbox = false\nbuild-users-group =\n\
         experimental-features = nix-command flakes\nflake-registry = {}\n",
        registry_file.display()
    );
    let cache = shared_debian_cache();
    let srv = Server::start(
        work.root().join("store"),
        work.root().join("serve.log"),
        &[
            "--backend".to_owned(),
            registry.docker("cache"),
            "--resolve-ttl".to_owned(),
            "0".to_owned(),
        ],
        &[
            ("STRATA_DEBIAN_CACHE", cache.to_str().unwrap()),
            ("NIX_REMOTE", nix_root.to_str().unwrap()),
            ("NIX_CONFIG", &nix_config),
        ],
    );
    let a = get(&srv, "/v2/nix/hello/manifests/latest");
    assert_eq!(a.status, 200, "{}\n{}", a.text(), srv.log_text());
    let key = a.header("strata-cache-key").unwrap().to_owned();
    let outputs = a.json()["annotations"]["dev.strata.serve.nix"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        outputs.starts_with("nixpkgs#hello /nix/store/") && outputs.contains("-hello sha256"),
        "{outputs}"
    );
    let reference = format!("{}/nix/hello:latest", srv.host());
    podman_pull(&reference);
    let out = run_ok(
        podman_run()
            .arg("--network=none")
            .arg(&reference)
            .arg("/run/current-system/sw/bin/hello"),
    );
    assert_eq!(stdout(&out).trim(), "hello from nix");
    drop(LoadedImage {
        tool: "podman",
        reference: reference.clone(),
    });

    // The same name again: nothing built; nixpkgs moved: another key, another image.
    let again = get(&srv, "/v2/nix/hello/manifests/latest");
    assert_eq!(again.header("strata-cache-key"), Some(key.as_str()));
    assert_eq!(srv.stat("builds"), 1, "{}", srv.log_text());
    flake("hello again");
    let moved = get(&srv, "/v2/nix/hello/manifests/latest");
    assert_eq!(moved.status, 200, "{}\n{}", moved.text(), srv.log_text());
    assert_ne!(moved.header("strata-cache-key"), Some(key.as_str()));
    assert_eq!(srv.stat("builds"), 2);

    // An attribute nixpkgs lacks: 404 MANIFEST_UNKNOWN naming it.
    let bad = get(&srv, "/v2/nix/nosuchattr/manifests/latest");
    assert_eq!(
        (bad.status, error_code(&bad).as_str()),
        (404, "MANIFEST_UNKNOWN"),
        "{}",
        bad.text()
    );
    assert!(error_message(&bad).contains("nosuchattr"), "{}", bad.text());
}
