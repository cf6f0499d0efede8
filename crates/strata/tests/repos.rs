//! A vendor apt repository next to the Debian archive, end to end (issue 13): a signed
//! archive made by the test (its own `gpg` key, a package built with `dpkg-deb`), served on
//! 127.0.0.1, added to `[user]` of a spec whose `[base]` is Debian from the real mirror. The
//! vendor package depends on a Debian package, is locked with its repository, configured by
//! the image's dpkg (its postinst runs), and apt inside the image (under podman) reads both
//! archives with their keys.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Serves `root` over HTTP on an ephemeral port of 127.0.0.1 until the process ends.
fn serve(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                }
                let head = line.starts_with("HEAD ");
                let rel = line.split_whitespace().nth(1).unwrap_or("/");
                let rel = rel.trim_start_matches('/');
                let resp = match std::fs::read(root.join(rel)) {
                    Ok(body) if !rel.split('/').any(|c| c == "..") => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        if !head {
                            r.extend(body);
                        }
                        r
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = stream.write_all(&resp);
            });
        }
    });
    format!("http://{addr}")
}

fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home).args([
        "--batch",
        "--quiet",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]);
    c
}

/// Publishes suite `stable` with `vendor-tool` (Depends: jq, from Debian; its postinst
/// records jq's version) signed by a new key; the binary keyring goes to `keyring`.
fn vendor_archive(dir: &Path, keyring: &Path) -> String {
    let home = dir.join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let uid = "vendor archive <vendor@strata.test>";
    run_ok(gpg(&home).args(["--quick-gen-key", uid, "ed25519", "sign", "never"]));
    let key = run_ok(gpg(&home).args(["--export", uid])).stdout;
    std::fs::write(keyring, key).unwrap();

    let www = dir.join("www");
    let root = dir.join("build");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/vendor-tool")).unwrap();
    std::fs::write(root.join("usr/share/vendor-tool/README"), "vendor\n").unwrap();
    let control = "Package: vendor-tool\nVersion: 3.1\nArchitecture: all\nMaintainer: t <t@t>\nDepends: jq\nDescription: a vendor's tool\n";
    std::fs::write(root.join("DEBIAN/control"), control).unwrap();
    let postinst = root.join("DEBIAN/postinst");
    std::fs::write(
        &postinst,
        "#!/bin/sh\nset -e\njq --version > /var/lib/vendor-tool.configured\n",
    )
    .unwrap();
    std::fs::set_permissions(&postinst, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(www.join("pool/main")).unwrap();
    let deb = www.join("pool/main/vendor-tool_3.1_all.deb");
    run_ok(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&root)
            .arg(&deb),
    );
    let size = std::fs::metadata(&deb).unwrap().len();
    let sha = sha256_file(&deb);
    let sha = sha.trim_start_matches("sha256:");
    let index = format!(
        "{control}Filename: pool/main/vendor-tool_3.1_all.deb\nSize: {size}\nSHA256: {sha}\n\n"
    );
    let dists = www.join("dists/stable");
    std::fs::create_dir_all(dists.join("main/binary-amd64")).unwrap();
    let index_path = dists.join("main/binary-amd64/Packages");
    std::fs::write(&index_path, &index).unwrap();
    let index_sha = sha256_file(&index_path);
    let release = format!(
        "Origin: vendor\nLabel: vendor\nSuite: stable\nCodename: stable\nDate: Sat, 01 Jan 2022 00:00:00 UTC\nArchitectures: amd64\nComponents: main\nSHA256:\n {} {} main/binary-amd64/Packages\n",
        index_sha.trim_start_matches("sha256:"),
        index.len()
    );
    std::fs::write(dists.join("Release"), release).unwrap();
    run_ok(
        gpg(&home)
            .args([
                "--digest-algo",
                "SHA256",
                "--local-user",
                uid,
                "--clearsign",
                "--output",
            ])
            .arg(dists.join("InRelease"))
            .arg(dists.join("Release")),
    );
    serve(www)
}

#[test]
fn a_vendor_repository_in_user_is_locked_configured_and_seen_by_apt_in_the_image() {
    if !require(&["gpg", "dpkg-deb", "podman"]) {
        return;
    }
    let work = Work::new();
    let keyring = work.spec_dir().join("vendor.gpg");
    let url = vendor_archive(&work.root().join("vendor"), &keyring);
    let name = unique_name("deb-repos");
    work.write_spec(&format!(
        r#"[image]
name = "{name}"

[base]
debian = {{ packages = ["apt"] }}

[user.debian]
packages = ["vendor-tool"]

[[user.debian.repos]]
name = "vendor"
uri = "{url}"
suites = ["stable"]
keyring = "vendor.gpg"
"#
    ));

    // The lock pins every package's repository.
    run_ok(work.strata_debian().arg("lock").arg(work.spec()));
    let lock = std::fs::read_to_string(work.spec().with_extension("lock")).unwrap();
    let entry = lock
        .split("[[user.lock.packages]]")
        .find(|e| e.contains("name = \"vendor-tool\""))
        .unwrap_or_else(|| panic!("vendor-tool in the user lock:\n{lock}"));
    assert!(entry.contains("repo = \"vendor\""), "{entry}");
    assert!(entry.contains(&format!("mirror = \"{url}\"")), "{entry}");
    let jq = lock
        .split("[[user.lock.packages]]")
        .find(|e| e.contains("name = \"jq\""))
        .expect("jq, from Debian, in the user lock");
    assert!(jq.contains("repo = \"main\""), "{jq}");

    let out = work.out("image.tar");
    let o = run_ok(
        work.strata_debian()
            .arg("build")
            .arg(work.spec())
            .arg("--locked")
            .arg("--output")
            .arg(format!("docker-archive:{}", out.display()))
            .arg("--json"),
    );
    let build = Build {
        json: serde_json::from_slice(&o.stdout).unwrap(),
    };
    assert!(
        build.layers().iter().any(|l| l["part"] == "user-configure"),
        "the user half's packages are configured in the user configure layer"
    );
    podman_load(&out);
    let image = LoadedImage {
        tool: "podman",
        reference: format!("localhost/{}", build.reference()),
    };
    // --network=host: apt in the container reaches the test's archive on 127.0.0.1.
    let sh = |script: &str| {
        stdout(&run_ok(
            podman_run()
                .args(["--network=host", "--user", "root"])
                .arg(&image.reference)
                .args(["sh", "-c", script]),
        ))
    };
    // The vendor package's postinst ran, with its Debian dependency configured.
    let configured =
        sh("cat /var/lib/vendor-tool.configured; dpkg-query -W -f '${Status}' vendor-tool");
    assert!(configured.starts_with("jq-1."), "{configured}");
    assert!(configured.ends_with("install ok installed"), "{configured}");
    let sources = sh("cat /etc/apt/sources.list.d/vendor.sources");
    assert!(
        sources.contains("Signed-By: /etc/apt/keyrings/vendor.gpg"),
        "{sources}"
    );
    assert_eq!(
        sh("sha256sum < /etc/apt/keyrings/vendor.gpg")
            .split_whitespace()
            .next(),
        Some(sha256_file(&keyring).trim_start_matches("sha256:"))
    );
    // apt in the image verifies and reads both archives: both packages are installable
    // from their own repository.
    let plan = sh(
        "apt-get update -qq >/dev/null && apt-get install --reinstall --simulate -q vendor-tool jq",
    );
    assert!(
        plan.contains("Inst vendor-tool [3.1] (3.1 vendor:stable"),
        "{plan}"
    );
    // jq comes from the Debian archive (bookworm or its security pocket).
    assert!(
        plan.lines()
            .any(|l| l.starts_with("Inst jq [") && l.contains("(1.") && l.contains(":12")),
        "{plan}"
    );
}

/// `strata lock` reads `file://` repositories (it failed with `http: invalid format`).
#[test]
fn strata_lock_reads_a_file_mirror() {
    if !require(&["gpg", "dpkg-deb"]) {
        return;
    }
    let work = Work::new();
    let keyring = work.spec_dir().join("vendor.gpg");
    let dir = work.root().join("vendor");
    vendor_archive(&dir, &keyring);
    let uri = format!("file://{}", dir.join("www").display());
    work.write_spec(&format!(
        r#"[base.debian]
packages = ["vendor-tool"]
essential = false

[[base.debian.repos]]
name = "vendor"
uri = "{uri}"
suites = ["stable"]
keyring = "vendor.gpg"
"#
    ));
    let o = run_ok(work.strata_debian().arg("lock").arg(work.spec()));
    assert!(stdout(&o).starts_with("wrote "), "{}", stdout(&o));
    let lock = std::fs::read_to_string(work.spec().with_extension("lock")).unwrap();
    let entry = lock
        .split("[[base.lock.packages]]")
        .find(|e| e.contains("name = \"vendor-tool\""))
        .unwrap_or_else(|| panic!("{lock}"));
    assert!(entry.contains(&format!("mirror = \"{uri}\"")), "{entry}");
    assert!(
        lock.contains("name = \"jq\""),
        "its Debian dependency: {lock}"
    );
}

/// `examples/team`: a Debian base with a vendor repository (the one `vendor_archive` serves,
/// swapped in for the example's placeholder address), debconf answers, a link, an enabled
/// service and an account in the docker and sudo groups. Built from the example file itself,
/// so the example cannot rot; run under podman as the account.
#[test]
fn the_team_example_builds_and_its_recipe_takes_effect() {
    if !require(&["gpg", "dpkg-deb", "podman"]) {
        return;
    }
    let work = Work::new();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/team/strata.toml"),
    )
    .unwrap();
    let keyring = work.spec_dir().join("vendor.gpg");
    let url = vendor_archive(&work.root().join("vendor"), &keyring);
    let placeholder = "uri = \"http://127.0.0.1:9/vendor\"";
    assert!(example.contains(placeholder), "the example's vendor uri");
    let spec = example
        .replace(placeholder, &format!("uri = \"{url}\""))
        .replace(
            "name = \"strata-examples/team\"",
            &format!("name = \"{}\"", unique_name("team")),
        );
    work.write_spec(&spec);
    run_ok(work.strata_debian().arg("lock").arg(work.spec()));
    let out = work.out("team.tar");
    let o = run_ok(
        work.strata_debian()
            .arg("build")
            .arg(work.spec())
            .arg("--locked")
            .arg("--output")
            .arg(format!("docker-archive:{}", out.display()))
            .arg("--json"),
    );
    let build = Build {
        json: serde_json::from_slice(&o.stdout).unwrap(),
    };
    podman_load(&out);
    let image = LoadedImage {
        tool: "podman",
        reference: format!("localhost/{}", build.reference()),
    };
    let script = "id -un; id -Gn; locale -a; \
        test -L /etc/systemd/system/multi-user.target.wants/cron.service && echo cron-enabled; \
        /usr/local/bin/fd --version; cat /var/lib/vendor-tool.configured; sudo -n true && echo sudo-ok";
    let got = stdout(&run_ok(
        strata_test_support::podman_run()
            .arg(&image.reference)
            .args(["sh", "-c", script]),
    ));
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.first(), Some(&"dev"), "{got}");
    let groups: Vec<&str> = lines.get(1).unwrap_or(&"").split_whitespace().collect();
    assert!(
        groups.contains(&"docker") && groups.contains(&"sudo"),
        "{got}"
    );
    assert!(
        lines.contains(&"en_US.utf8"),
        "locale generated from debconf: {got}"
    );
    assert!(lines.contains(&"cron-enabled"), "{got}");
    assert!(lines.iter().any(|l| l.starts_with("fdfind ")), "{got}");
    assert!(
        lines.iter().any(|l| l.starts_with("jq-1.")),
        "vendor postinst: {got}"
    );
    assert!(lines.contains(&"sudo-ok"), "{got}");
}
