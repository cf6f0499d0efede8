//! `strata serve` scaled out on Docker Engine, with images built by strata itself (nothing can
//! be pulled here): an image of strata (Debian's libc6, libgcc-s1, ca-certificates and the
//! strata binary as a tree) and one of the registry (Debian's `docker-registry`), loaded with
//! `docker load`. One registry and three replicas on a private Docker network: the same new
//! image pulled through two replicas at once is built once; the owner of a new image killed
//! mid-build does not fail the pull; after restarting every replica, pulls build nothing.
//! Every wait is bounded in count and time; containers, network and images are removed.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BUILD: Duration = Duration::from_secs(600);

/// Removes the test's containers, network and images when dropped.
struct Cleanup {
    containers: Vec<String>,
    network: String,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("docker")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        for c in &self.containers {
            quiet(&["rm", "-f", c]);
        }
        quiet(&["network", "rm", &self.network]);
        for i in &self.images {
            quiet(&["rmi", "-f", i]);
        }
    }
}

fn docker(args: &[&str]) -> String {
    stdout(&run_ok(
        Command::new("docker").args(args).stdin(Stdio::null()),
    ))
    .trim()
    .to_owned()
}

/// Builds `spec` into a docker-archive and loads it; returns the reference.
fn build_and_load(work: &Work, spec: &str) -> String {
    let archive = work.root().join("image.tar");
    let out = run_ok(
        work.strata_debian()
            .arg("build")
            .arg(work.spec_dir().join(spec))
            .arg("--output")
            .arg(format!("docker-archive:{}", archive.display()))
            .arg("--json"),
    );
    let reference = json_stdout(&out)["reference"].as_str().unwrap().to_owned();
    docker(&["load", "-i", archive.to_str().unwrap()]);
    std::fs::remove_file(&archive).unwrap();
    reference
}

fn stats(port: u16) -> serde_json::Value {
    http(port, "GET", "/_strata/stats", &[], Duration::from_secs(10)).json()
}

fn builds(ports: &[u16]) -> u64 {
    ports
        .iter()
        .map(|p| stats(*p)["builds"].as_u64().unwrap())
        .sum()
}

/// The host port Docker published for the container's 8080 (`docker port`).
fn host_port(container: &str) -> u16 {
    let line = docker(&["port", container, "8080/tcp"]);
    let first = line.lines().next().unwrap_or("");
    first.rsplit(':').next().unwrap().parse().unwrap()
}

/// Waits (bounded: 150 tries, 30 s) until `/v2/` answers on `port`.
fn wait_ready(port: u16, container: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..150 {
        if try_http(port, "GET", "/v2/", &[], Duration::from_secs(5)).is_ok_and(|a| a.status == 200)
        {
            return;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "{container} did not answer: {}",
        docker(&["logs", container])
    );
}

#[test]
fn three_replicas_on_docker_build_once_survive_the_owner_and_restart_without_builds() {
    if !require(&["docker", "strip"]) {
        return;
    }
    let work = Work::new();
    let unique = format!("strata-serve-{}", std::process::id());
    let mut cleanup = Cleanup {
        containers: Vec::new(),
        network: unique.clone(),
        images: Vec::new(),
    };

    // The images, built by strata.
    let bin = work.spec_dir().join("strata/bin/strata");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    run_ok(Command::new("strip").arg("-o").arg(&bin).arg(strata_bin()));
    work.file(
        "strata/strata.toml",
        "[image]\nname = \"strata-serve-test/strata\"\n\n[base]\ndebian = { packages = \
         [\"libc6\", \"libgcc-s1\", \"ca-certificates\"] }\n\n[user]\ntree = [ { src = \
         \"bin/strata\", dest = \"/usr/local/bin/strata\", mode = 0o755 } ]\n\n[config]\n\
         entrypoint = [\"/usr/local/bin/strata\"]\n",
        0o644,
    );
    work.file(
        "registry/config.yml",
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/docker-registry\n\
         http:\n  addr: :5000\n",
        0o644,
    );
    work.file(
        "registry/strata.toml",
        "[image]\nname = \"strata-serve-test/registry\"\n\n[base]\ndebian = { packages = \
         [\"docker-registry\"] }\n\n[user]\ntree = [ { src = \"config.yml\", dest = \
         \"/etc/strata-registry.yml\", mode = 0o644 } ]\n\n[config]\nentrypoint = \
         [\"/usr/bin/docker-registry\", \"serve\", \"/etc/strata-registry.yml\"]\n",
        0o644,
    );
    let strata_image = build_and_load(&work, "strata/strata.toml");
    cleanup.images.push(strata_image.clone());
    let registry_image = build_and_load(&work, "registry/strata.toml");
    cleanup.images.push(registry_image.clone());

    docker(&["network", "create", &unique]);
    let reg = format!("{unique}-registry");
    cleanup.containers.push(reg.clone());
    docker(&[
        "run",
        "-d",
        "--network",
        &unique,
        "--name",
        &reg,
        &registry_image,
    ]);

    let names: Vec<String> = (0..3).map(|i| format!("{unique}-serve-{i}")).collect();
    let peers = names
        .iter()
        .map(|n| format!("http://{n}:8080"))
        .collect::<Vec<_>>()
        .join(",");
    for n in &names {
        cleanup.containers.push(n.clone());
        docker(&[
            "run",
            "-d",
            "--network",
            &unique,
            "--name",
            n,
            "-p",
            "127.0.0.1::8080",
            &strata_image,
            "--store",
            "/cache",
            "--tls-verify=false",
            "serve",
            "--listen",
            "0.0.0.0:8080",
            "--backend",
            &format!("docker://{reg}:5000/cache"),
            "--peers",
            &peers,
            "--advertise",
            &format!("http://{n}:8080"),
        ]);
    }
    let mut ports: Vec<u16> = names.iter().map(|n| host_port(n)).collect();
    for (p, n) in ports.iter().zip(&names) {
        wait_ready(*p, n);
    }

    // The same new image through two replicas at once: one build.
    let first = "debian/bookworm/hello";
    let path = format!("/v2/{first}/manifests/latest");
    let (p0, p1) = (ports[0], ports[1]);
    let (pa, pb) = (path.clone(), path.clone());
    let a = std::thread::spawn(move || http(p0, "GET", &pa, &[], BUILD));
    let b = std::thread::spawn(move || http(p1, "GET", &pb, &[], BUILD));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(
        (a.status, b.status),
        (200, 200),
        "{}\n{}",
        a.text(),
        b.text()
    );
    assert_eq!(a.body, b.body);
    assert_eq!(builds(&ports), 1);

    // Kill the owner of a new image mid-build; the pull goes through the last replica in the
    // key's order and still succeeds.
    let second = "debian/bookworm/tree";
    let plan = http(
        ports[0],
        "GET",
        &format!("/_strata/resolve/{second}"),
        &[],
        BUILD,
    )
    .json();
    let order: Vec<usize> = plan["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let o = o.as_str().unwrap();
            names.iter().position(|n| o.contains(n.as_str())).unwrap()
        })
        .collect();
    let (owner, entry) = (order[0], order[2]);
    let owner_builds = stats(ports[owner])["builds"].as_u64().unwrap();
    let entry_port = ports[entry];
    let p2 = format!("/v2/{second}/manifests/latest");
    let pull = std::thread::spawn(move || http(entry_port, "GET", &p2, &[], BUILD));
    let mut building = false;
    for _ in 0..600 {
        if stats(ports[owner])["builds"].as_u64().unwrap() > owner_builds {
            building = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(building, "{}", docker(&["logs", &names[owner]]));
    docker(&["kill", &names[owner]]);
    let answer = pull.join().unwrap();
    assert_eq!(
        answer.status,
        200,
        "{}\n{}",
        answer.text(),
        docker(&["logs", &names[entry]])
    );
    assert_eq!(
        answer.json()["annotations"]["dev.strata.serve.key"],
        plan["key"]
    );

    // Restart every replica (the killed one too): pulls build nothing.
    docker(&["start", &names[owner]]);
    for n in names.iter().filter(|n| **n != names[owner]) {
        docker(&["restart", n]);
    }
    ports = names.iter().map(|n| host_port(n)).collect();
    for (p, n) in ports.iter().zip(&names) {
        wait_ready(*p, n);
    }
    for p in &ports {
        for name in [first, second] {
            let a = http(
                *p,
                "HEAD",
                &format!("/v2/{name}/manifests/latest"),
                &[],
                BUILD,
            );
            assert_eq!(a.status, 200, "{name}");
        }
    }
    assert_eq!(builds(&ports), 0);
}
