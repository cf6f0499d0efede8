//! End-to-end tests of the Python source against the live PyPI and Debian mirror: the real
//! `uv` resolves, the real `strata` installs into a venv, podman runs the result.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Command;

use common::*;

fn podman_run(reference: &str, args: &[&str]) -> String {
    let o = run_ok(
        strata_test_support::podman_run()
            .args(["--network=none"])
            .arg(reference)
            .args(args),
    );
    stdout(&o)
}

fn spec(name: &str, user_python: &str) -> String {
    format!(
        "[image]\nname = \"{name}\"\n\n[base]\ndebian = {{ packages = [\"python3\"] }}\n\n[user]\npython = {user_python}\n"
    )
}

#[test]
fn rich_and_requests_in_a_debian_python_run_under_podman_reproducibly_and_offline() {
    if !require(&["podman", "uv"]) {
        return;
    }
    let work = Work::new();
    work.write_spec(&spec(
        &unique_name("py"),
        "{ packages = [\"rich\", \"requests\"] }",
    ));
    // --locked without a lock names the section.
    let out = run(work
        .strata_debian()
        .arg("build")
        .arg(work.spec())
        .arg("--locked")
        .arg("--output")
        .arg(format!("oci:{}", work.out("x").display())));
    assert!(!out.status.success());

    let o = run_ok(work.strata_debian().arg("lock").arg(work.spec()));
    let lock = std::fs::read_to_string(work.spec().with_extension("lock")).unwrap();
    assert!(
        stdout(&o).contains("Python distributions"),
        "{}",
        stdout(&o)
    );
    for dist in ["rich", "requests", "urllib3", "pygments", "certifi"] {
        assert!(
            lock.contains(&format!("name = \"{dist}\"")),
            "{dist} locked:\n{lock}"
        );
    }
    assert!(lock.contains("[python.user.request.target]"), "{lock}");
    assert!(
        lock.contains("python = \"3.11\""),
        "bookworm's python3 detected:\n{lock}"
    );
    let py_part = &lock[lock.find("[python.user").unwrap()..];
    let dists = py_part.matches("[[python.user.dists]]").count();
    assert!(dists >= 5, "{py_part}");
    assert_eq!(
        py_part.matches("sha256 = \"").count(),
        dists,
        "every distribution has a hash"
    );

    let archive = work.out("py.tar");
    let b = work.build(
        &format!("docker-archive:{}", archive.display()),
        &["--locked"],
    );
    let user_objects: Vec<String> = b
        .layers()
        .iter()
        // A configured image keeps the user half's Python content above its configure layer.
        .filter(|l| l["part"] == "user-content")
        .flat_map(|l| l["objects"].as_array().unwrap().clone())
        .map(|o| o.as_str().unwrap().to_owned())
        .collect();
    assert!(
        user_objects.iter().any(|o| o.starts_with("py:rich==")),
        "{user_objects:?}"
    );

    podman_load(&archive);
    let image = format!("localhost/{}", b.reference());
    // A bare `python3` is the venv's (its `bin` leads PATH, before the system directories
    // that strata-build otherwise puts first when Debian and Python both set PATH).
    let check = "import rich, requests, sys; print(sys.prefix, requests.__name__, rich.__name__)";
    assert_eq!(
        podman_run(&image, &["python3", "-c", check]),
        "/opt/venv requests rich\n",
        "a bare python3 is the venv's and imports both"
    );
    let path = podman_run(&image, &["sh", "-c", "echo $PATH"]);
    assert!(path.starts_with("/opt/venv/bin:/usr/local/sbin:"), "{path}");
    // Debian's own interpreter is still there, without the venv's packages.
    let sys = "import sys; print(sys.prefix)";
    assert_eq!(
        podman_run(&image, &["/usr/bin/python3", "-c", sys]),
        "/usr\n"
    );
    let v = podman_run(&image, &["pygmentize", "-V"]);
    assert!(
        v.contains("Pygments version"),
        "the console script runs: {v}"
    );
    let _ = run(Command::new("podman").args(["rmi", "-f", &image]));

    // Offline from the cache gives the same image; another store gives the same image too.
    let again = work.build(
        &format!("docker-archive:{}", work.out("again.tar").display()),
        &["--offline"],
    );
    assert_eq!(again.digest(), b.digest());
    let other = Work::new();
    std::fs::copy(work.spec(), other.spec()).unwrap();
    std::fs::copy(
        work.spec().with_extension("lock"),
        other.spec().with_extension("lock"),
    )
    .unwrap();
    let second = other.build(
        &format!("docker-archive:{}", other.out("py.tar").display()),
        &["--locked"],
    );
    assert_eq!(
        second.digest(),
        b.digest(),
        "reproducible across two stores"
    );
}

/// `strata lock` on a spec whose user half is `python`; returns stderr, asserting failure.
fn lock_fails(user_python: &str) -> String {
    let work = Work::new();
    work.write_spec(&spec(&unique_name("py-err"), user_python));
    let o = run(work.strata_debian().arg("lock").arg(work.spec()));
    assert!(!o.status.success(), "lock should fail for {user_python}");
    stderr(&o)
}

#[test]
fn unknown_package_conflict_and_sdist_only_are_clear_errors() {
    if !require(&["uv"]) {
        return;
    }
    let unknown = lock_fails("{ packages = [\"strata-no-such-package-x7q\"] }");
    assert!(
        unknown.contains("user.python") && unknown.contains("strata-no-such-package-x7q"),
        "{unknown}"
    );
    let conflict = lock_fails("{ packages = [\"requests==2.31.0\", \"urllib3<1.21\"] }");
    assert!(
        conflict.contains("urllib3") && conflict.contains("requests"),
        "the chain of requirements: {conflict}"
    );
    // docopt 0.6.2 was only ever published as an sdist.
    let sdist = lock_fails("{ packages = [\"docopt==0.6.2\"] }");
    assert!(sdist.contains("docopt"), "{sdist}");
    assert!(
        sdist.contains("docopt==0.6.2 has no usable wheels")
            && sdist.contains("strata installs wheels only"),
        "says why: {sdist}"
    );
}

#[test]
fn the_user_half_does_not_install_what_the_base_half_has() {
    if !require(&["uv"]) {
        return;
    }
    let work = Work::new();
    work.write_spec(&format!(
        "[image]\nname = \"{}\"\n\n[base]\ndebian = {{ packages = [\"python3\"] }}\npython = {{ packages = [\"requests\"] }}\n\n[user]\npython = {{ packages = [\"rich\", \"requests\"] }}\n",
        unique_name("py-halves")
    ));
    run_ok(work.strata_debian().arg("lock").arg(work.spec()));
    let lock = std::fs::read_to_string(work.spec().with_extension("lock")).unwrap();
    let base = &lock[lock.find("[python.base").unwrap()..lock.find("[python.user").unwrap()];
    let user = &lock[lock.find("[python.user").unwrap()..];
    for dist in ["requests", "urllib3", "certifi"] {
        assert!(
            base.contains(&format!("name = \"{dist}\"")),
            "{dist} in base:\n{base}"
        );
        assert!(
            !user.contains(&format!("name = \"{dist}\"")),
            "{dist} not again in user:\n{user}"
        );
    }
    assert!(user.contains("name = \"rich\""), "{user}");
    assert!(
        user.contains("installed = ["),
        "the user request records the base's: {user}"
    );
}
