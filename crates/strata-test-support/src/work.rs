//! A per-test work directory holding a spec, its files and a private store; running the real
//! `strata` binary and external tools.

#![allow(missing_docs)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tempfile::TempDir;

/// The profile directory of the running test binary (`target/debug` for
/// `target/debug/deps/e2e-HASH`), where Cargo puts the `strata` binary it built for the tests.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("the test binary's directory");
    deps.parent()
        .expect("the target profile directory")
        .to_owned()
}

/// The Debian download cache the tests share (`target/tmp/strata-debian-cache`, where
/// `CARGO_TARGET_TMPDIR` points).
pub fn shared_debian_cache() -> PathBuf {
    profile_dir()
        .parent()
        .expect("the target directory")
        .join("tmp/strata-debian-cache")
}

/// The `strata` binary under test: `CARGO_BIN_EXE_strata` when set, else the one Cargo built
/// next to the test binary (integration tests of the `strata` crate always build it).
pub fn strata_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CARGO_BIN_EXE_strata") {
        return PathBuf::from(bin);
    }
    let bin = profile_dir().join("strata");
    assert!(
        bin.is_file(),
        "{} is missing: the strata binary is built for the strata crate's integration tests",
        bin.display()
    );
    bin
}

/// One test's private directory: `spec/` (the spec and its files), `store/` and `out/`.
pub struct Work {
    pub tmp: TempDir,
}

impl Default for Work {
    fn default() -> Self {
        Self::new()
    }
}

impl Work {
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("strata-e2e-")
            .tempdir()
            .expect("create a temp dir");
        fs::create_dir_all(tmp.path().join("spec")).expect("create spec dir");
        fs::create_dir_all(tmp.path().join("out")).expect("create out dir");
        Self { tmp }
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// The spec directory; tree `src` paths are relative to it.
    pub fn spec_dir(&self) -> PathBuf {
        self.root().join("spec")
    }

    /// The spec file, `spec/strata.toml`.
    pub fn spec(&self) -> PathBuf {
        self.spec_dir().join("strata.toml")
    }

    /// This test's store.
    pub fn store(&self) -> PathBuf {
        self.root().join("store")
    }

    /// A path under `out/` (which exists; the path itself does not).
    pub fn out(&self, name: &str) -> PathBuf {
        self.root().join("out").join(name)
    }

    /// Writes `spec/strata.toml`.
    pub fn write_spec(&self, toml: &str) -> PathBuf {
        fs::write(self.spec(), toml).expect("write strata.toml");
        self.spec()
    }

    /// Writes a file under `spec/` with the given mode, creating parent directories.
    pub fn file(&self, rel: &str, contents: impl AsRef<[u8]>, mode: u32) -> PathBuf {
        let path = self.spec_dir().join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("create parent dirs");
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        set_mode(&path, mode);
        path
    }

    /// Creates a directory under `spec/` with the given mode.
    pub fn dir(&self, rel: &str, mode: u32) -> PathBuf {
        let path = self.spec_dir().join(rel);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        set_mode(&path, mode);
        path
    }

    /// Creates a symlink under `spec/` pointing at `target`.
    pub fn symlink(&self, rel: &str, target: &str) -> PathBuf {
        let path = self.spec_dir().join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("create parent dirs");
        std::os::unix::fs::symlink(target, &path)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", path.display()));
        path
    }

    /// Creates a hard link `rel` to the existing `existing` (both under `spec/`).
    pub fn hardlink(&self, rel: &str, existing: &str) -> PathBuf {
        let path = self.spec_dir().join(rel);
        fs::hard_link(self.spec_dir().join(existing), &path)
            .unwrap_or_else(|e| panic!("hard link {}: {e}", path.display()));
        path
    }

    /// A `strata` command using this test's store.
    pub fn strata(&self) -> Command {
        let mut cmd = Command::new(strata_bin());
        cmd.arg("--store").arg(self.store());
        cmd.env_remove("SOURCE_DATE_EPOCH")
            .env_remove("STRATA_STORE");
        cmd.stdin(Stdio::null());
        cmd
    }

    /// A `strata` command using this test's store and the Debian download cache every test
    /// shares ([`shared_debian_cache`]), so each `.deb` is downloaded once per machine.
    pub fn strata_debian(&self) -> Command {
        let mut cmd = self.strata();
        cmd.env("STRATA_DEBIAN_CACHE", shared_debian_cache());
        cmd
    }

    /// `strata build SPEC --output DEST --json ARGS...` in this test's store; panics unless it
    /// succeeds, and returns the parsed result.
    pub fn build(&self, dest: &str, args: &[&str]) -> Build {
        self.build_spec(&self.spec(), dest, args)
    }

    /// Like [`Work::build`] with another spec file.
    pub fn build_spec(&self, spec: &Path, dest: &str, args: &[&str]) -> Build {
        let mut cmd = self.strata();
        cmd.arg("build")
            .arg(spec)
            .arg("--output")
            .arg(dest)
            .arg("--json")
            .args(args);
        let out = run_ok(&mut cmd);
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "strata build --json printed invalid JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        Build { json }
    }
}

/// The `--json` result of one build.
#[derive(Debug, Clone)]
pub struct Build {
    pub json: Value,
}

impl Build {
    pub fn str(&self, key: &str) -> &str {
        self.json[key]
            .as_str()
            .unwrap_or_else(|| panic!("build result has no string `{key}`: {:#}", self.json))
    }
    pub fn name(&self) -> &str {
        self.str("name")
    }
    pub fn tag(&self) -> &str {
        self.str("tag")
    }
    pub fn digest(&self) -> &str {
        self.str("digest")
    }
    /// `NAME:TAG`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name(), self.tag())
    }
    pub fn layers(&self) -> &Vec<Value> {
        self.json["layers"]
            .as_array()
            .unwrap_or_else(|| panic!("build result has no `layers` array: {:#}", self.json))
    }
}

/// Runs a command, capturing its output; panics if it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and panics (showing its output) unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Stdout as a string.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr as a string.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether the tests run as root (the owner of `/proc/self` is the effective user).
pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A repository name no other test (or run) uses, for images loaded into podman or docker.
pub fn unique_name(test: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "strata-e2e/{test}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes an image from podman or docker when dropped, so failed tests clean up too.
pub struct LoadedImage {
    pub tool: &'static str,
    pub reference: String,
}

impl Drop for LoadedImage {
    fn drop(&mut self) {
        let _store = (self.tool == "podman").then(crate::podman::podman_store_lock);
        let _ = Command::new(self.tool)
            .args(["rmi", "-f", &self.reference])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The SHA-256 of a file as `sha256:<hex>`, computed by coreutils' `sha256sum` (not by strata).
pub fn sha256_file(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    let text = stdout(&out);
    format!(
        "sha256:{}",
        text.split_whitespace().next().expect("sha256sum output")
    )
}

/// The SHA-256 of what a decompressor prints for `path`, as `sha256:<hex>`.
pub fn sha256_decompressed(decompress: &str, path: &Path) -> String {
    let script = format!("{decompress} < \"$1\" | sha256sum");
    let out = run_ok(Command::new("sh").args(["-ec", &script, "sh"]).arg(path));
    format!(
        "sha256:{}",
        stdout(&out)
            .split_whitespace()
            .next()
            .expect("sha256sum output")
    )
}

pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The OCI architecture name of this machine (computed independently of strata's own
/// mapping, so a wrong mapping there fails the tests).
pub fn host_oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Whether `s` is `sha256:` and 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Parses the JSON a command printed on stdout.
pub fn json_stdout(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "expected JSON on stdout ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
