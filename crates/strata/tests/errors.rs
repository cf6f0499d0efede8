//! Error messages of the CLI: each names what failed and where, and never repeats its cause
//! (a library error whose message includes its `#[source]` shows the cause twice once the CLI
//! prints the chain).

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::*;

/// The single `error: ...` line a failed command printed.
fn error_line(work: &Work, args: &[&str]) -> String {
    let out = run(work.strata().args(args).current_dir(work.root()));
    assert!(!out.status.success(), "strata {args:?} succeeded");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{err}");
    lines[0].to_owned()
}

/// Panics when one `: `-separated part of `line` appears twice (a cause printed twice).
fn assert_no_repeated_part(line: &str) {
    let parts: Vec<&str> = line.split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part),
            "`{part}` appears twice in the error message:\n{line}"
        );
    }
}

#[test]
fn build_of_a_missing_spec_names_the_file_and_its_cause_once() {
    let work = Work::new();
    let line = error_line(&work, &["build", "missing.toml"]);
    assert_eq!(
        line,
        "error: missing.toml: cannot read the spec file: No such file or directory (os error 2)"
    );
}

#[test]
fn failures_print_each_cause_once() {
    let work = Work::new();
    let missing = work.root().join("nothing-here");
    let missing = missing.to_str().unwrap();
    let oci = format!("oci:{missing}");
    let archive = format!("docker-archive:{missing}.tar");
    let spec = format!("{missing}.toml");
    let cases: [&[&str]; 6] = [
        &["lock", &spec],
        &["inspect", &oci],
        &["inspect", &archive],
        &["check", &oci, "--coder"],
        &["run", &oci],
        &["coder", "template", &spec, "--kind", "docker"],
    ];
    for args in cases {
        let line = error_line(&work, args);
        assert!(
            line.contains(missing),
            "{args:?}: the message does not name the path: {line}"
        );
        assert_no_repeated_part(&line);
    }

    // A tree entry whose source is missing: the spec location, the path and the cause, once.
    work.write_spec(
        "[image]\nname = \"strata-e2e/errors\"\n\n[base]\ntree = [{ src = \"gone.txt\", dest = \"/g\" }]\n",
    );
    let out = work.out("oci");
    let line = error_line(
        &work,
        &[
            "build",
            work.spec().to_str().unwrap(),
            "--output",
            &format!("oci:{}", out.display()),
        ],
    );
    assert!(
        line.contains("strata.toml:5:") && line.contains("gone.txt"),
        "{line}"
    );
    assert_no_repeated_part(&line);
}
