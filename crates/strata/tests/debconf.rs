//! Debconf answers and `links` (issue 13.4), live against the real Debian mirror: the answers
//! are seeded before the configure step, so locales' own postinst generates the locale
//! (`locale -a` lists it), a half's `links` become symbolic links in the image, and
//! `[services] disable` removes the link cron's postinst made.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::*;

fn spec(name: &str, extra_answer: &str) -> String {
    format!(
        r#"[image]
name = "{name}"

[base.debian]
packages = ["locales", "bat", "cron"]
debconf = [
  "locales locales/locales_to_be_generated multiselect en_US.UTF-8 UTF-8",
  "locales locales/default_environment_locale select en_US.UTF-8",{extra_answer}
]

[base.links]
"/usr/bin/bat" = "batcat"

[services]
disable = ["cron"]
"#
    )
}

#[test]
fn debconf_answers_reach_the_scripts_links_are_made_and_a_service_is_disabled() {
    if !require(&["podman"]) {
        return;
    }
    let work = Work::new();
    let name = unique_name("debconf");
    work.write_spec(&spec(&name, ""));
    let out = work.out("image.tar");
    let o = run_ok(
        work.strata_debian()
            .arg("build")
            .arg(work.spec())
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
    let sh = |script: &str| {
        stdout(&run_ok(
            podman_run()
                .args(["--network=none", "--user", "root"])
                .arg(&image.reference)
                .args(["sh", "-c", script]),
        ))
    };
    let locales = sh("locale -a");
    assert!(locales.lines().any(|l| l == "en_US.utf8"), "{locales}");
    assert_eq!(
        sh("grep -v '^#' /etc/default/locale | grep LANG"),
        "LANG=en_US.UTF-8\n"
    );
    assert_eq!(sh("readlink /usr/bin/bat"), "batcat\n");
    assert!(
        sh("bat --version").starts_with("bat "),
        "the link runs batcat"
    );

    // An answer to a question no installed package has is refused, naming it.
    let bad = Work::new();
    bad.write_spec(&spec(
        &unique_name("debconf-bad"),
        "\n  \"locales locales/no_such_question string x\",",
    ));
    let o = run(bad
        .strata_debian()
        .arg("build")
        .arg(bad.spec())
        .arg("--output")
        .arg(format!("oci:{}", bad.out("oci").display())));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("locales/no_such_question"), "{err}");
    assert!(err.contains("strata.toml:4:1: base.debian"), "{err}");
}
