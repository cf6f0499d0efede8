//! The Debian configure layer end to end, live against the real Debian mirror: the packages'
//! maintainer scripts run in the sandbox, their effects become one cached, reproducible layer,
//! and the images run with podman.
//!
//! Every test has its own store; all share the download cache of the Debian tests
//! (`STRATA_DEBIAN_CACHE`, under Cargo's target tmp dir). A missing podman fails the tests.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// `strata build SPEC --output docker-archive:OUT --json`; the result and strata's stderr.
fn build(work: &Work, out: &Path) -> (Build, String) {
    build_on(work, out, false)
}

/// [`build`]; with `one_cpu`, with `--threads 1` on the first CPU alone (`taskset -c 0`), so
/// the maintainer scripts see one CPU too (Python byte-compiles with one worker).
fn build_on(work: &Work, out: &Path, one_cpu: bool) -> (Build, String) {
    let mut cmd = work.strata_debian();
    cmd.arg("build")
        .arg(work.spec())
        .arg("--output")
        .arg(format!("docker-archive:{}", out.display()))
        .arg("--json");
    if one_cpu {
        cmd.args(["--threads", "1"]);
        let mut pinned = Command::new("taskset");
        pinned
            .args(["-c", "0"])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => pinned.env(k, v),
                None => pinned.env_remove(k),
            };
        }
        cmd = pinned;
    }
    let o = run_ok(&mut cmd);
    (
        Build {
            json: serde_json::from_slice(&o.stdout).expect("build --json output"),
        },
        stderr(&o),
    )
}

/// The (base half's) configure layer of a build, if it has one.
fn configure_layer(b: &Build) -> Option<&serde_json::Value> {
    b.layers().iter().find(|l| l["part"] == "base-configure")
}

/// Loads the archive into podman (removed again when dropped).
fn load(archive: &Path, b: &Build) -> LoadedImage {
    podman_load(archive);
    LoadedImage {
        tool: "podman",
        reference: format!("localhost/{}", b.reference()),
    }
}

/// Runs `sh -c SCRIPT` in the image as root; returns stdout, panics on failure.
fn sh(image: &LoadedImage, script: &str) -> String {
    let o = run_ok(
        podman_run()
            .args(["--network=none", "--user", "root"])
            .arg(&image.reference)
            .args(["sh", "-c", script]),
    );
    stdout(&o)
}

fn dev_spec(name: &str, configure: Option<bool>) -> String {
    let configure = configure
        .map(|c| format!(", configure = {c}"))
        .unwrap_or_default();
    format!(
        "[image]\nname = \"{name}\"\n\n[base]\ndebian = {{ packages = [\"git\", \"curl\", \
         \"ca-certificates\", \"sudo\", \"python3\"]{configure} }}\n\n[coder]\n"
    )
}

#[test]
fn configured_dev_image_is_a_consistent_debian_system_built_once_and_reproducibly() {
    if !require(&["podman"]) {
        return;
    }
    let work = Work::new();
    let name = unique_name("deb-configure");
    work.write_spec(&dev_spec(&name, None));
    let (first, _) = build(&work, &work.out("a.tar"));
    let layer = configure_layer(&first).expect("a configure layer");
    assert_eq!(layer["cached"], false, "the first build runs the scripts");
    let parts: Vec<&str> = first
        .layers()
        .iter()
        .map(|l| l["part"].as_str().unwrap())
        .collect();
    let base = parts.iter().filter(|p| **p == "base").count();
    assert_eq!(
        parts[base..],
        ["base-configure", "customisation"],
        "the configure layer sits on the base layers, the customisation layer on top"
    );

    let image = load(&work.out("a.tar"), &first);
    let awk = sh(&image, "update-alternatives --display awk");
    assert!(
        awk.contains("link currently points to /usr/bin/mawk"),
        "{awk}"
    );
    let hashes: usize = sh(&image, "ls /etc/ssl/certs | grep -c '\\.0$'")
        .trim()
        .parse()
        .unwrap();
    assert!(hashes > 100, "{hashes} hash links in /etc/ssl/certs");
    assert_eq!(
        sh(
            &image,
            "python3 -c 'import ssl; ssl.create_default_context(); print(\"ok\")'"
        ),
        "ok\n"
    );
    let id = sh(&image, "sudo -u coder id");
    assert!(id.starts_with("uid=1000(coder)"), "{id}");
    assert_eq!(
        sh(&image, "dpkg --audit"),
        "",
        "dpkg's database is consistent"
    );
    assert_eq!(
        sh(
            &image,
            "dpkg-query -W -f '${db:Status-Abbrev}\\n' | sort -u"
        ),
        "ii \n",
        "every package is configured"
    );
    // Run-to-run noise is not in the image.
    assert_eq!(
        sh(
            &image,
            "wc -c </etc/machine-id; ls /var/log/dpkg.log /var/lib/dpkg/status-old 2>&1 | grep -c 'No such'"
        ),
        "0\n2\n"
    );
    // Python bytecode is hash-checked (flags 3), so it does not depend on the build's time.
    assert_eq!(
        sh(
            &image,
            "od -A n -t u4 -j 4 -N 4 /usr/lib/python3.11/__pycache__/os.cpython-311.pyc | tr -d ' '"
        ),
        "3\n"
    );

    // The same store: no script runs, the layer comes from the store.
    let (again, _) = build(&work, &work.out("b.tar"));
    assert_eq!(configure_layer(&again).unwrap()["cached"], true);
    assert_eq!(first.digest(), again.digest());

    // Another store, one thread and one CPU: the scripts run again and give the same bytes.
    let other = Work::new();
    std::fs::copy(work.spec(), other.spec()).unwrap();
    let (fresh, _) = build_on(&other, &other.out("c.tar"), true);
    assert_eq!(configure_layer(&fresh).unwrap()["cached"], false);
    assert_eq!(
        configure_layer(&fresh).unwrap()["digest"],
        layer["digest"],
        "the configure layer is reproducible"
    );
    assert_eq!(first.digest(), fresh.digest(), "two builds, one digest");
}

#[test]
fn configure_false_keeps_the_declarative_image() {
    if !require(&["podman"]) {
        return;
    }
    let work = Work::new();
    let name = unique_name("deb-declarative");
    work.write_spec(&dev_spec(&name, Some(false)));
    let (b, _) = build(&work, &work.out("a.tar"));
    assert!(configure_layer(&b).is_none(), "no configure layer");
    assert_eq!(b.layers().last().unwrap()["part"], "customisation");
    let image = load(&work.out("a.tar"), &b);
    assert_eq!(sh(&image, "dpkg --audit"), "");
    let id = sh(&image, "sudo -u coder id");
    assert!(id.starts_with("uid=1000(coder)"), "{id}");
    // The maintainer scripts are in dpkg's database (for `apt-get remove`), not run.
    assert_eq!(
        sh(
            &image,
            "test -x /var/lib/dpkg/info/ca-certificates.postinst && echo yes"
        ),
        "yes\n"
    );
}

#[test]
fn an_image_without_dpkg_stays_declarative_and_says_so() {
    let work = Work::new();
    let name = unique_name("deb-nodpkg");
    work.write_spec(&format!(
        "[image]\nname = \"{name}\"\n\n[base]\ndebian = {{ packages = [\"hello\"], essential = false }}\n"
    ));
    let (b, err) = build(&work, &work.out("a.tar"));
    assert!(configure_layer(&b).is_none(), "no configure layer");
    assert!(
        err.contains("the Debian maintainer scripts are not run"),
        "{err}"
    );
}

/// The ordinary user the rootless test builds as (the one `strata run`'s tests use).
const TEST_USER: &str = "strata-run-test";

/// As root: the same configured image built by an ordinary user (the sandbox in an
/// unprivileged user namespace, files owned through the subordinate id range) has the same
/// digest. Not root: the other tests already build rootless.
#[test]
fn rootless_configure_gives_the_root_build_digest() {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        eprintln!(
            "rootless_configure_gives_the_root_build_digest: not root, the other tests are rootless"
        );
        return;
    }
    if run(Command::new("id").arg(TEST_USER)).status.code() != Some(0) {
        let out = run(Command::new("useradd").args(["--create-home", TEST_USER]));
        assert!(
            out.status.success() || stderr(&out).contains("already exists"),
            "useradd: {}",
            stderr(&out)
        );
    }
    let probe =
        run(Command::new("runuser").args(["-u", TEST_USER, "--", "unshare", "-Ur", "true"]));
    assert!(
        probe.status.success(),
        "{TEST_USER} cannot create a user namespace: {}",
        stderr(&probe)
    );
    let work = Work::new();
    let name = unique_name("deb-configure-rootless");
    work.write_spec(&dev_spec(&name, None));
    let (root_build, _) = build(&work, &work.out("root.tar"));

    // The user's own store, download cache (a copy of the shared one) and binary.
    let cache = work.out("user-cache");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(shared_debian_cache())
            .arg(&cache),
    );
    let store = work.out("user-store");
    std::fs::create_dir_all(&store).unwrap();
    let user_out = work.out("user-out");
    std::fs::create_dir_all(&user_out).unwrap();
    let oci = user_out.join("oci");
    let binary = work.out("strata");
    std::fs::copy(strata_bin(), &binary).unwrap();
    for dir in [work.root().to_path_buf(), work.spec_dir(), work.out("")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    run_ok(
        Command::new("chown")
            .args(["-R", TEST_USER])
            .arg(&cache)
            .arg(&store)
            .arg(&user_out),
    );
    let out = run_ok(
        Command::new("runuser")
            .args(["-u", TEST_USER, "--"])
            .arg(&binary)
            .arg("--store")
            .arg(&store)
            .arg("build")
            .arg(work.spec())
            .arg("--output")
            .arg(format!("oci:{}", oci.display()))
            .arg("--json")
            .env("STRATA_DEBIAN_CACHE", &cache)
            .env_remove("STRATA_STORE"),
    );
    let user_build = Build {
        json: serde_json::from_slice(&out.stdout).expect("build --json output"),
    };
    assert!(
        !stderr(&out).contains("maintainer scripts were not run"),
        "{}",
        stderr(&out)
    );
    assert_eq!(configure_layer(&user_build).unwrap()["cached"], false);
    // The root build wrote a docker-archive (uncompressed layers), this one an OCI layout
    // (gzip): the config, which lists every layer's uncompressed digest, must be the same.
    assert_eq!(
        user_build.json["config_digest"], root_build.json["config_digest"],
        "the rootless build's layers differ from the root build's"
    );
}
