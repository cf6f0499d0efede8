//! End-to-end tests of the download source: the real `strata` binary locks and builds a spec
//! whose files come from an HTTP server on 127.0.0.1, and podman runs what was downloaded.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;

/// Serves `routes` (path → bytes, or `Err(location)` for a 302) and counts requests.
fn serve(routes: BTreeMap<String, Result<Vec<u8>, String>>) -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(Mutex::new(0usize));
    let h = hits.clone();
    let routes = Arc::new(routes);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (routes, h) = (routes.clone(), h.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut stream = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    loop {
                        let mut hdr = String::new();
                        if reader.read_line(&mut hdr).unwrap_or(0) == 0 || hdr.trim().is_empty() {
                            break;
                        }
                    }
                    *h.lock().unwrap() += 1;
                    let _ = match routes.get(&path) {
                        Some(Ok(body)) => stream
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .and_then(|()| stream.write_all(body)),
                        Some(Err(to)) => stream.write_all(
                            format!(
                                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n"
                            )
                            .as_bytes(),
                        ),
                        None => {
                            stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                        }
                    };
                }
            });
        }
    });
    (base, hits)
}

fn podman(args: &[&str]) -> std::process::Output {
    run_ok(Command::new("podman").args(args))
}

fn podman_run(image: &str, args: &[&str]) -> String {
    let mut all = vec![
        "run",
        "--rm",
        "--cgroup-manager=cgroupfs",
        "--runtime=runc",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=20000:20000",
        "--network=none",
        image,
    ];
    all.extend_from_slice(args);
    stdout(&podman(&all))
}

#[test]
fn downloaded_executables_run_in_podman_locked_offline_and_reproducible() {
    if !require(&["podman", "tar"]) {
        return;
    }
    let work = Work::new();
    let busybox =
        fs::read("/bin/busybox").expect("/bin/busybox (scripts/test installs busybox-static)");

    // A release tarball with one top directory, made by the real tar.
    let src = work.root().join("tarball/hello-1.0/bin");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("hello"),
        "#!/bin/busybox sh\necho hello from a tarball\n",
    )
    .unwrap();
    set_mode(&src.join("hello"), 0o755);
    let tgz = work.root().join("hello-1.0.tar.gz");
    run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(&tgz)
            .arg("-C")
            .arg(work.root().join("tarball"))
            .arg("hello-1.0"),
    );
    let tgz_bytes = fs::read(&tgz).unwrap();

    let mut routes = BTreeMap::new();
    routes.insert("/busybox".to_owned(), Ok(busybox.clone()));
    routes.insert("/dl/hello-1.0.tar.gz".to_owned(), Ok(tgz_bytes.clone()));
    let (base, hits) = serve(routes.clone());
    let mut with_redirect = routes;
    with_redirect.insert("/latest".into(), Err(format!("{base}/dl/hello-1.0.tar.gz")));
    // The redirect needs the server's own address: start a second server that knows it.
    let (base2, hits2) = serve(with_redirect);

    let name = unique_name("fetch");
    work.write_spec(&format!(
        r#"
[image]
name = "{name}"

[base]
fetch = [ {{ url = "{base}/busybox", sha256 = "sha256:{}", dest = "/bin/busybox", mode = "0755" }} ]

[user]
fetch = [ {{ url = "{base2}/latest", dest = "/opt/hello", unpack = "tar.gz", strip_components = 1 }} ]
"#,
        sha256_bytes(&busybox)
    ));

    // --locked without a lock refuses the unpinned URL.
    let out = run(work
        .strata()
        .arg("build")
        .arg(work.spec())
        .arg("--locked")
        .arg("--output")
        .arg(format!("oci:{}", work.out("nolock").display())));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--locked") && err.contains("/latest") && err.contains("strata lock"),
        "{err}"
    );

    // strata lock records hash, size and the final URL after the redirect.
    run_ok(work.strata().arg("lock").arg(work.spec()));
    let lock = fs::read_to_string(work.spec().with_extension("lock")).unwrap();
    assert!(lock.contains("[[fetch]]"), "{lock}");
    assert!(lock.contains(&sha256_bytes(&tgz_bytes)), "{lock}");
    assert!(
        lock.contains(&format!("final_url = \"{base}/dl/hello-1.0.tar.gz\"")),
        "{lock}"
    );
    assert!(
        lock.contains(&format!("size = {}", tgz_bytes.len())),
        "{lock}"
    );

    let archive = work.out("image.tar");
    let build = work.build(
        &format!("docker-archive:{}", archive.display()),
        &["--locked"],
    );
    let hits_after_first = *hits.lock().unwrap() + *hits2.lock().unwrap();

    podman(&["load", "-i", archive.to_str().unwrap()]);
    let image = format!("localhost/{}", build.reference());
    assert_eq!(podman_run(&image, &["/bin/busybox", "echo", "hi"]), "hi\n");
    assert_eq!(
        podman_run(&image, &["/opt/hello/bin/hello"]),
        "hello from a tarball\n",
        "the unpacked tarball's script runs"
    );
    let _ = run(Command::new("podman").args(["rmi", "-f", &image]));

    // Offline from the cache: nothing downloaded, same image.
    let offline = work.out("offline.tar");
    let again = work.build(
        &format!("docker-archive:{}", offline.display()),
        &["--offline"],
    );
    assert_eq!(again.digest(), build.digest());
    let oci = work.build(
        &format!("oci:{}", work.out("oci").display()),
        &["--offline"],
    );
    assert_eq!(
        *hits.lock().unwrap() + *hits2.lock().unwrap(),
        hits_after_first
    );

    // Another store: --offline fails (empty cache, named URL); online gives the same digest.
    let other = Work::new();
    fs::copy(work.spec(), other.spec()).unwrap();
    fs::copy(
        work.spec().with_extension("lock"),
        other.spec().with_extension("lock"),
    )
    .unwrap();
    let out = run(other
        .strata()
        .arg("build")
        .arg(other.spec())
        .arg("--offline")
        .arg("--output")
        .arg(format!("oci:{}", other.out("x").display())));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--offline") && err.contains("not in the download cache"),
        "{err}"
    );
    let second = other.build(
        &format!("oci:{}", other.out("img").display()),
        &["--locked"],
    );
    assert_eq!(
        second.digest(),
        oci.digest(),
        "same spec and lock, same image in another store"
    );
}

#[test]
fn a_hash_mismatch_fails_the_build_and_names_both_hashes() {
    let work = Work::new();
    let mut routes = BTreeMap::new();
    routes.insert("/tool".to_owned(), Ok(b"changed upstream".to_vec()));
    let (base, _) = serve(routes);
    let pinned = "ab".repeat(32);
    work.write_spec(&format!(
        "[base]\nfetch = [ {{ url = \"{base}/tool\", sha256 = \"{pinned}\", dest = \"/usr/local/bin/tool\" }} ]\n"
    ));
    let out = run(work
        .strata()
        .arg("build")
        .arg(work.spec())
        .arg("--output")
        .arg(format!("oci:{}", work.out("img").display())));
    assert!(!out.status.success());
    let err = stderr(&out);
    let actual = sha256_bytes(b"changed upstream");
    assert!(
        err.contains(&format!("expected {pinned}, got {actual}"))
            && err.contains(&format!("{base}/tool")),
        "{err}"
    );
    assert!(
        err.contains("strata.toml:2:"),
        "names the spec entry: {err}"
    );
    assert!(
        !work.out("img").join("index.json").exists(),
        "no image written"
    );
}

fn sha256_bytes(b: &[u8]) -> String {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), b).unwrap();
    sha256_file(tmp.path())
        .trim_start_matches("sha256:")
        .to_owned()
}
