//! The Debian source end to end, live against the real Debian mirror: `strata lock`, `strata
//! build` (with and without the lock, `--locked`, `--offline`), and the images run with podman.
//!
//! Every test has its own store, but all share one download cache (`STRATA_DEBIAN_CACHE`,
//! under Cargo's target tmp dir), so each `.deb` is downloaded once per machine. A missing
//! podman fails the tests.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// `strata build SPEC --output docker-archive:OUT --json ARGS`; returns the result.
fn build(work: &Work, out: &Path, args: &[&str]) -> Build {
    let o = run_ok(
        work.strata_debian()
            .arg("build")
            .arg(work.spec())
            .arg("--output")
            .arg(format!("docker-archive:{}", out.display()))
            .arg("--json")
            .args(args),
    );
    Build {
        json: serde_json::from_slice(&o.stdout).expect("build --json output"),
    }
}

/// `strata lock SPEC`; returns the lock file's text.
fn lock(work: &Work) -> String {
    let o = run_ok(work.strata_debian().arg("lock").arg(work.spec()));
    assert!(stdout(&o).contains("strata.lock"), "{}", stdout(&o));
    std::fs::read_to_string(work.spec_dir().join("strata.lock")).expect("strata.lock")
}

/// Number of packages of one half in a lock file's text.
fn locked_count(lock: &str, half: &str) -> usize {
    lock.matches(&format!("[[{half}.lock.packages]]")).count()
}

/// Loads the archive into podman (removed again when dropped).
fn load(archive: &Path, b: &Build) -> LoadedImage {
    podman_load(archive);
    LoadedImage {
        tool: "podman",
        reference: format!("localhost/{}", b.reference()),
    }
}

/// Runs `sh -c SCRIPT`-style arguments in the image; returns stdout, panics on failure.
fn podman_run(image: &LoadedImage, args: &[&str]) -> String {
    let o = run_ok(
        strata_test_support::podman_run()
            .arg("--network=none")
            .arg(&image.reference)
            .args(args),
    );
    stdout(&o)
}

fn spec(name: &str, base: &[&str], user: &[&str]) -> String {
    let list = |p: &[&str]| {
        p.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!(
        "[image]\nname = \"{name}\"\n\n[base]\ndebian = {{ packages = [{}] }}\n",
        list(base)
    );
    if !user.is_empty() {
        s.push_str(&format!(
            "\n[user]\ndebian = {{ packages = [{}] }}\n",
            list(user)
        ));
    }
    s
}

#[test]
fn bash_coreutils_image_runs_and_dpkg_lists_every_locked_package() {
    if !require(&["podman"]) {
        return;
    }
    let work = Work::new();
    work.write_spec(&spec(&unique_name("deb-bash"), &["bash", "coreutils"], &[]));
    let lock = lock(&work);
    let count = locked_count(&lock, "base");
    assert!(count > 50, "the essential set is locked too: {count}");
    let archive = work.out("bash.tar");
    let b = build(&work, &archive, &["--locked"]);
    let image = load(&archive, &b);
    assert_eq!(podman_run(&image, &["bash", "-c", "echo ok"]), "ok\n");
    let listed = podman_run(&image, &["sh", "-c", "dpkg -l | grep -c ^ii"]);
    assert_eq!(listed.trim(), count.to_string());
    let audit = podman_run(&image, &["dpkg", "--audit"]);
    assert_eq!(audit.trim(), "", "dpkg --audit finds a consistent database");
    let root = podman_run(
        &image,
        &["sh", "-c", "readlink /bin /lib; id -un; echo $PATH"],
    );
    assert_eq!(
        root,
        "usr/bin\nusr/lib\nroot\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );
    // The merged-/usr links are one small object of their own, below the packages.
    let objects: Vec<String> = b
        .layers()
        .iter()
        .flat_map(|l| l["objects"].as_array().unwrap().clone())
        .map(|o| o.as_str().unwrap().to_owned())
        .collect();
    assert!(objects.iter().any(|o| o == "deb:merged-usr"));
    assert!(objects.iter().any(|o| o.starts_with("deb:libc6_")));
}

#[test]
fn dev_set_runs_git_python_curl_awk_with_a_user_half_on_top() {
    if !require(&["podman"]) {
        return;
    }
    let work = Work::new();
    work.write_spec(&spec(
        &unique_name("deb-dev"),
        &["git", "curl", "ca-certificates", "sudo", "python3"],
        &["jq"],
    ));
    let lock = lock(&work);
    let (base, user) = (locked_count(&lock, "base"), locked_count(&lock, "user"));
    assert!(
        (1..=5).contains(&user),
        "the user half holds only what the base lacks: {user}"
    );
    let archive = work.out("dev.tar");
    let b = build(&work, &archive, &[]);
    let user_objects: Vec<String> = b
        .layers()
        .iter()
        .filter(|l| l["part"] == "user")
        .flat_map(|l| l["objects"].as_array().unwrap().clone())
        .map(|o| o.as_str().unwrap().to_owned())
        .collect();
    assert!(user_objects.iter().any(|o| o.starts_with("deb:jq_")));
    assert!(
        !user_objects.iter().any(|o| o.starts_with("deb:libc6_")),
        "base packages stay in base layers: {user_objects:?}"
    );
    let image = load(&archive, &b);
    assert_eq!(podman_run(&image, &["bash", "-c", "echo ok"]), "ok\n");
    assert!(podman_run(&image, &["git", "--version"]).starts_with("git version 2."));
    let py =
        "import ssl, json, sqlite3; print(len(ssl.create_default_context().get_ca_certs()) > 100)";
    assert_eq!(podman_run(&image, &["python3", "-c", py]), "True\n");
    assert!(podman_run(&image, &["curl", "--version"]).starts_with("curl "));
    assert_eq!(podman_run(&image, &["awk", "BEGIN{print 1}"]), "1\n");
    assert!(podman_run(&image, &["jq", "--version"]).starts_with("jq-"));
    let listed = podman_run(&image, &["sh", "-c", "dpkg -l | grep -c ^ii"]);
    assert_eq!(listed.trim(), (base + user).to_string());
    let which = podman_run(
        &image,
        &[
            "sh",
            "-c",
            "which which; readlink /usr/bin/sh; sudo -n id -u",
        ],
    );
    assert!(which.starts_with("/usr/bin/which\ndash\n0\n"), "{which}");
}

#[test]
fn lock_makes_builds_reproducible_and_locked_reports_the_difference() {
    let work = Work::new();
    let name = unique_name("deb-lock");
    work.write_spec(&spec(&name, &["bash"], &["less"]));

    // No lock: resolved in memory, and said so; no lock file is written.
    let o = run_ok(
        work.strata_debian()
            .arg("build")
            .arg(work.spec())
            .arg("--output")
            .arg(format!("oci:{}", work.out("nolock").display())),
    );
    assert!(
        stderr(&o).contains("resolving [base].debian in memory"),
        "{}",
        stderr(&o)
    );
    assert!(!work.spec_dir().join("strata.lock").exists());
    let o = run(work
        .strata_debian()
        .arg("build")
        .arg(work.spec())
        .arg("--locked"));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--locked: no lock file"),
        "{}",
        stderr(&o)
    );

    lock(&work);
    let first = build(&work, &work.out("a.tar"), &["--locked"]);
    let second = build(&work, &work.out("b.tar"), &["--locked"]);
    assert_eq!(first.digest(), second.digest());
    assert!(
        second.layers().iter().all(|l| l["cached"] == true),
        "the second build reuses every layer"
    );
    assert_eq!(
        sha256_file(&work.out("a.tar")),
        sha256_file(&work.out("b.tar"))
    );
    // Another store (another day, another machine): the same lock gives the same image.
    let other = Work::new();
    std::fs::copy(work.spec(), other.spec()).unwrap();
    std::fs::copy(
        work.spec_dir().join("strata.lock"),
        other.spec_dir().join("strata.lock"),
    )
    .unwrap();
    let third = build(&other, &other.out("c.tar"), &["--locked"]);
    assert_eq!(first.reference(), third.reference());
    assert_eq!(first.digest(), third.digest());

    // A spec change the lock does not cover: --locked names the half and the difference.
    work.write_spec(&spec(&name, &["bash"], &["less", "jq"]));
    let o = run(work
        .strata_debian()
        .arg("build")
        .arg(work.spec())
        .arg("--locked"));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("[user].debian") && err.contains("packages: +jq"),
        "{err}"
    );
    assert!(
        !err.contains("[base].debian"),
        "the base still matches: {err}"
    );
    // Without --locked the base keeps its locked packages (same name), the user half resolves.
    let o = run_ok(
        work.strata_debian()
            .arg("build")
            .arg(work.spec())
            .arg("--json")
            .arg("--output")
            .arg(format!("oci:{}", work.out("changed").display())),
    );
    assert!(stderr(&o).contains("resolving [user].debian in memory"));
    let changed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(changed["name"], first.name());
    assert_ne!(changed["tag"], first.tag());
}

#[test]
fn offline_builds_from_the_store_or_names_the_missing_packages() {
    let work = Work::new();
    work.write_spec(&spec(
        &unique_name("deb-offline"),
        &["bash", "coreutils"],
        &[],
    ));
    // Offline without a lock: resolving needs the network.
    let o = run(work
        .strata_debian()
        .arg("build")
        .arg(work.spec())
        .arg("--offline"));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--offline: no lock file"),
        "{}",
        stderr(&o)
    );

    lock(&work);
    // An empty store and download cache: every package is missing, and named.
    let empty = work.root().join("empty-cache");
    let o = run(work
        .strata()
        .env("STRATA_DEBIAN_CACHE", &empty)
        .arg("build")
        .arg(work.spec())
        .arg("--offline"));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("not in the cache") && err.contains("bash ") && err.contains("libc6 "),
        "{err}"
    );
    // With the packages in the store, offline works.
    build(&work, &work.out("online.tar"), &[]);
    let b = build(&work, &work.out("offline.tar"), &["--offline"]);
    assert!(is_digest(b.digest()));
}

/// A test work dir with a private Nix store holding one path, `bin/nixhello` (a shell script
/// that prints "hello from nix"), for the mixed Debian + Nix images.
fn work_with_a_nix_hello() -> (Work, String) {
    need(&["podman", "nix-store"]);
    let work = Work::new();
    work.file(
        "hello/bin/nixhello",
        "#!/bin/sh\necho hello from nix\n",
        0o755,
    );
    let mut add = Command::new("nix-store");
    add.arg("--add").arg(work.spec_dir().join("hello"));
    nix_env(&work, &mut add);
    let path = stdout(&run_ok(&mut add)).trim().to_owned();
    (work, path)
}

/// Builds the work dir's spec into `mixed.tar` with its private Nix store.
fn build_mixed(work: &Work) -> (Build, std::path::PathBuf) {
    let archive = work.out("mixed.tar");
    let mut cmd = work.strata_debian();
    cmd.arg("build")
        .arg(work.spec())
        .arg("--json")
        .arg("--output")
        .arg(format!("docker-archive:{}", archive.display()));
    nix_env(work, &mut cmd);
    let b = Build {
        json: serde_json::from_slice(&run_ok(&mut cmd).stdout).unwrap(),
    };
    (b, archive)
}

/// Points a command at the work dir's private Nix store, with no substituters and no sandbox.
fn nix_env(work: &Work, cmd: &mut Command) {
    cmd.env("NIX_REMOTE", work.root().join("nix")).env(
        "NIX_CONFIG",
        "substituters =\nsandbox = false\nbuild-users-group =\n",
    );
}

#[test]
fn debian_base_with_a_nix_user_half_puts_the_profile_after_the_system_path() {
    let (work, path) = work_with_a_nix_hello();
    work.write_spec(&format!(
        "[image]\nname = \"{}\"\n\n[base]\ndebian = {{ packages = [\"bash\"] }}\n\n\
         [user]\nnix = {{ paths = [\"{path}\"] }}\n",
        unique_name("deb-nix")
    ));
    let (b, archive) = build_mixed(&work);
    let image = load(&archive, &b);
    let out = podman_run(
        &image,
        &[
            "bash",
            "-c",
            "echo $PATH; nixhello; readlink /usr/bin/sh; id -un",
        ],
    );
    assert_eq!(
        out,
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:\
         /run/current-system/sw/bin\nhello from nix\ndash\nroot\n"
    );
}

#[test]
fn nix_base_with_a_debian_user_half_is_a_debian_system_with_the_profile_after_the_system_path() {
    // The reverse of the test above: the Nix closure is the shared base, Debian packages the
    // per-user half.
    let (work, path) = work_with_a_nix_hello();
    work.write_spec(&format!(
        "[image]\nname = \"{}\"\n\n[base]\nnix = {{ paths = [\"{path}\"] }}\n\n\
         [user]\ndebian = {{ packages = [\"bash\"] }}\n",
        unique_name("nix-deb")
    ));
    let (b, archive) = build_mixed(&work);
    let parts: Vec<(&str, String)> = b
        .layers()
        .iter()
        .map(|l| {
            let objects = l["objects"].as_array().map(|a| a.len()).unwrap_or(0);
            (l["part"].as_str().unwrap_or(""), format!("{objects}"))
        })
        .collect();
    assert!(
        b.layers().iter().any(|l| l["part"] == "base"
            && l["objects"]
                .as_array()
                .is_some_and(|o| o.iter().any(|x| x.as_str() == Some(path.as_str())))),
        "the store path is in a base layer: {parts:?}"
    );
    let image = load(&archive, &b);
    let out = podman_run(
        &image,
        &[
            "bash",
            "-c",
            "echo $PATH; nixhello; readlink /usr/bin/sh; dpkg -l bash | grep -c ^ii",
        ],
    );
    assert_eq!(
        out,
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:\
         /run/current-system/sw/bin\nhello from nix\ndash\n1\n"
    );
}
