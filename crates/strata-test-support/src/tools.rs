//! What a test needs from the machine. `scripts/test` installs every tool in its REQUIREMENTS
//! list, so under `CI=true` a missing tool is a broken environment and the test fails, naming
//! the Debian package to install. Locally the test is skipped, and says so on stderr.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `scripts/test`, whose REQUIREMENTS list maps each tool to its Debian package.
const SCRIPTS_TEST: &str = include_str!("../../../scripts/test");

/// Whether the tests run under CI (`CI` set to anything but empty, `0` or `false`), where
/// nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// The Debian package that provides `check` (a command name, an absolute path or
/// `static:PATH`), from the REQUIREMENTS list of `scripts/test`.
pub fn debian_package(check: &str) -> Option<&'static str> {
    let list = SCRIPTS_TEST
        .split("REQUIREMENTS='")
        .nth(1)?
        .split('\'')
        .next()?;
    list.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == check).then(|| words.next()).flatten()
    })
}

/// How to install `check`: `apt-get install PACKAGE` from the REQUIREMENTS list, or for a tool
/// `scripts/test` installs with pip at a pinned version (`uv`: `UV_VERSION=...`), the pip
/// command. Panics for a tool `scripts/test` does not install, so CI's fresh machine has it.
pub fn install_hint(check: &str) -> String {
    if let Some(package) = debian_package(check) {
        return format!("apt-get install {package}");
    }
    let pinned = format!("{}_VERSION=", check.to_ascii_uppercase().replace('-', "_"));
    if let Some(version) = SCRIPTS_TEST
        .lines()
        .find_map(|l| l.trim().strip_prefix(pinned.as_str()))
    {
        let version = version.trim_matches(|c| c == '"' || c == '\'');
        return format!("python3 -m pip install {check}=={version}");
    }
    panic!(
        "`{check}` is not installed by scripts/test; add a line `{check} DEBIAN-PACKAGE` to its \
         REQUIREMENTS (or a pinned pip install) so CI has it"
    )
}

/// Whether `check` is present, with the meaning `scripts/test` gives it: a command on PATH,
/// an absolute path that exists, or `static:PATH`, a statically linked executable.
pub fn present(check: &str) -> bool {
    if let Some(path) = check.strip_prefix("static:") {
        return is_executable(Path::new(path)) && is_static(Path::new(path));
    }
    if check.starts_with('/') {
        return Path::new(check).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| is_executable(&d.join(check))))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// No `PT_INTERP` program header: an ELF file the kernel runs without a dynamic loader.
fn is_static(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    // 64-bit little-endian ELF only (what the tests run on); anything else counts as dynamic.
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}

/// The name of the running test (the test harness names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned()
}

/// Whether the tools in `checks` (see [`present`]) are all there. When one is missing: under
/// CI, panics naming the Debian package to install; locally, prints why the test is skipped
/// and returns `false` (the test then returns). Every check must be listed in the
/// REQUIREMENTS of `scripts/test`, so CI's fresh machine gets it.
///
/// ```ignore
/// if !require(&["gpg", "dpkg-deb"]) {
///     return;
/// }
/// ```
pub fn require(checks: &[&str]) -> bool {
    for check in checks {
        let hint = install_hint(check);
        if !present(check) {
            return skip(&format!(
                "`{check}` is missing (run ./scripts/test, or {hint})"
            ));
        }
    }
    true
}

/// For helpers that cannot return early (they build what the test uses): panics, locally too,
/// unless every check is present, naming the Debian package to install. Prefer [`require`] at
/// the top of the test, which lets a local run skip.
pub fn need(checks: &[&str]) {
    for check in checks {
        let hint = install_hint(check);
        assert!(
            present(check),
            "{}: `{check}` is missing (run ./scripts/test, or {hint})",
            test_name()
        );
    }
}

/// Like [`require`] for a condition that is not a tool (the network, user namespaces): when
/// `ok` is false, panics with `why` under CI and skips locally. Returns `ok`.
pub fn require_that(ok: bool, why: &str) -> bool {
    ok || skip(why)
}

/// Fails under CI, or prints `SKIPPED` with the reason and returns `false`.
fn skip(why: &str) -> bool {
    let test = test_name();
    assert!(
        !under_ci(),
        "{test}: {why}; CI=true, so this fails instead of skipping"
    );
    eprintln!("SKIPPED {test}: {why}");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_come_from_scripts_test() {
        assert_eq!(debian_package("gpg"), Some("gpg"));
        assert_eq!(debian_package("dpkg-deb"), Some("dpkg"));
        assert_eq!(
            debian_package("static:/bin/busybox"),
            Some("busybox-static")
        );
        assert_eq!(debian_package("no-such-tool"), None);
        assert!(install_hint("uv").starts_with("python3 -m pip install uv=="));
    }

    /// Run by [`missing_tools_fail_under_ci_and_skip_locally`] with an empty PATH.
    #[test]
    #[ignore = "a probe run by missing_tools_fail_under_ci_and_skip_locally"]
    fn probe_missing_gpg() {
        assert!(!require(&["gpg"]), "gpg found with an empty PATH");
    }

    #[test]
    fn missing_tools_fail_under_ci_and_skip_locally() {
        let probe = |ci: Option<&str>| {
            let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
            cmd.args(["--exact", "tools::tests::probe_missing_gpg", "--ignored"])
                .args(["--nocapture", "--test-threads=1"])
                .env("PATH", "")
                .env_remove("CI");
            if let Some(ci) = ci {
                cmd.env("CI", ci);
            }
            let out = cmd.output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.success(), text)
        };
        let (ok, text) = probe(Some("true"));
        assert!(!ok, "CI=true: a missing tool must fail the test:\n{text}");
        assert!(text.contains("apt-get install gpg"), "{text}");
        let (ok, text) = probe(None);
        assert!(ok, "locally a missing tool skips:\n{text}");
        assert!(
            text.contains("SKIPPED tools::tests::probe_missing_gpg: `gpg` is missing"),
            "{text}"
        );
    }

    #[test]
    fn presence_follows_scripts_test() {
        assert!(present("sh"));
        assert!(present("/"));
        assert!(!present("strata-no-such-tool"));
        assert!(!present("static:/nonexistent"));
    }
}
