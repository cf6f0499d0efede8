//! Coder's workspace-image minimums, checked on an image's files.
//!
//! Coder starts a workspace by running the agent's init script with `sh -c` as the image's
//! user: the script needs a POSIX shell, a way to download the agent (curl, wget or busybox), a
//! writable temporary directory, and the agent then needs a home directory and CA certificates
//! to reach the deployment over TLS. Binaries downloaded later (IDE servers, extensions) expect
//! the glibc loader at its standard path on glibc systems.

use serde::Serialize;

use crate::image::ImageFiles;
use crate::index::{FileIndex, NodeKind};
use crate::passwd;

/// `PATH` assumed when the image configuration sets none (what Docker and podman use).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Certificate bundles where TLS libraries look by default (Debian/Alpine, Fedora/RHEL,
/// OpenSUSE, the BSD-style name, Nix's profile).
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/nix/var/nix/profiles/default/etc/ssl/certs/ca-bundle.crt",
];

/// One item of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckItem {
    /// Stable identifier (`sh`, `downloader`, `tmp`, `account`, `ca-certificates`, `loader`,
    /// `git`, `bash`, `sudo`).
    pub id: &'static str,
    /// What is checked.
    pub title: &'static str,
    /// Whether a workspace cannot start without it (the others are recommendations).
    pub required: bool,
    /// Whether the image satisfies it.
    pub passed: bool,
    /// Why it passed or failed.
    pub reason: String,
}

/// The result of checking one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Every item, required ones first.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    /// Whether every required item passed.
    pub fn passed(&self) -> bool {
        self.items.iter().all(|i| i.passed || !i.required)
    }

    /// The required items that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckItem> {
        self.items.iter().filter(|i| i.required && !i.passed)
    }

    /// The checklist as text, one line per item: `[pass]`, `[FAIL]` (required) or `[warn]`
    /// (recommended), the title and the reason; then a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for i in &self.items {
            let mark = match (i.passed, i.required) {
                (true, _) => "[pass]",
                (false, true) => "[FAIL]",
                (false, false) => "[warn]",
            };
            out.push_str(&format!("{mark} {}: {}\n", i.title, i.reason));
        }
        let failed = self.failures().count();
        if failed == 0 {
            out.push_str("the image meets Coder's workspace requirements\n");
        } else {
            out.push_str(&format!(
                "{failed} required item(s) failed: Coder cannot start a workspace from this image\n"
            ));
        }
        out
    }
}

/// The value of `key` in a `KEY=VALUE` environment list.
pub fn env_value<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Checks an image against Coder's workspace-image minimums.
pub fn check_coder(image: &ImageFiles) -> CheckReport {
    let files = &image.files;
    let run = &image.config.config;
    let path_env = env_value(&run.env, "PATH").unwrap_or(DEFAULT_PATH);
    let path_note = if env_value(&run.env, "PATH").is_some() {
        "the image's PATH"
    } else {
        "the default PATH (the image sets none)"
    };
    let on_path = |name: &str| -> Option<String> {
        files.which(name, path_env).map(|(found, r)| {
            if found == r.path {
                found
            } else {
                format!("{found} -> {}", r.path)
            }
        })
    };
    let mut items = Vec::new();

    items.push(match on_path("sh") {
        Some(p) => pass("sh", "POSIX shell", true, format!("sh is {p}")),
        None => fail(
            "sh",
            "POSIX shell",
            true,
            format!("no executable `sh` on {path_note} ({path_env}); the agent's init script runs with sh -c"),
        ),
    });

    let downloader = ["curl", "wget", "busybox"]
        .iter()
        .find_map(|tool| on_path(tool).map(|p| format!("{tool} is {p}")));
    items.push(match downloader {
        Some(found) => pass("downloader", "curl, wget or busybox", true, found),
        None => fail(
            "downloader",
            "curl, wget or busybox",
            true,
            format!(
                "none of curl, wget, busybox on {path_note}; the init script needs one to download the agent"
            ),
        ),
    });

    items.push(check_tmp(files));
    items.push(check_account(image));
    items.push(check_ca(files, &run.env));
    items.push(check_loader(files, &image.config.architecture));

    for (tool, id, why) in [
        ("git", "git", "clones repositories and dotfiles"),
        (
            "bash",
            "bash",
            "the shell most workspace scripts and IDEs expect",
        ),
        ("sudo", "sudo", "lets the workspace user install more tools"),
    ] {
        items.push(match on_path(tool) {
            Some(p) => pass(id, tool_title(id), false, format!("{tool} is {p}")),
            None => fail(
                id,
                tool_title(id),
                false,
                format!("no `{tool}` on {path_note}; it {why}"),
            ),
        });
    }
    CheckReport { items }
}

fn tool_title(id: &str) -> &'static str {
    match id {
        "git" => "git (recommended)",
        "bash" => "bash (recommended)",
        _ => "sudo (recommended)",
    }
}

fn pass(id: &'static str, title: &'static str, required: bool, reason: String) -> CheckItem {
    CheckItem {
        id,
        title,
        required,
        passed: true,
        reason,
    }
}

fn fail(id: &'static str, title: &'static str, required: bool, reason: String) -> CheckItem {
    CheckItem {
        id,
        title,
        required,
        passed: false,
        reason,
    }
}

fn check_tmp(files: &FileIndex) -> CheckItem {
    const TITLE: &str = "writable temporary directory";
    match files.resolve("/tmp") {
        Some(r) if r.node.is_dir() && r.node.mode & 0o1777 == 0o1777 => pass(
            "tmp",
            TITLE,
            true,
            format!("{} is a directory with mode {:04o}", r.path, r.node.mode),
        ),
        Some(r) if r.node.is_dir() => fail(
            "tmp",
            TITLE,
            true,
            format!(
                "{} has mode {:04o}; it must be 1777 (world-writable, sticky) so the account can run mktemp",
                r.path, r.node.mode
            ),
        ),
        Some(r) => fail("tmp", TITLE, true, format!("{} is not a directory", r.path)),
        None => fail(
            "tmp",
            TITLE,
            true,
            "the image has no /tmp; the init script makes its temporary directory there".into(),
        ),
    }
}

fn check_account(image: &ImageFiles) -> CheckItem {
    const TITLE: &str = "non-root account with a home";
    let files = &image.files;
    let user = image.config.config.user.clone().unwrap_or_default();
    let who = user.split(':').next().unwrap_or_default().to_owned();
    if who.is_empty() || who == "root" || who == "0" {
        let shown = if user.is_empty() {
            "unset (root)"
        } else {
            &user
        };
        return fail(
            "account",
            TITLE,
            true,
            format!("the image's User is {shown}; Coder workspaces run as a non-root account"),
        );
    }
    let passwd = match files.read("/etc/passwd") {
        Ok(Some(bytes)) => passwd::parse_passwd(&String::from_utf8_lossy(&bytes)),
        _ => {
            return fail(
                "account",
                TITLE,
                true,
                format!("the image's User is {user} but the image has no readable /etc/passwd"),
            );
        }
    };
    let entry = passwd
        .iter()
        .find(|p| p.name == who || p.uid.to_string() == who);
    let Some(entry) = entry else {
        return fail(
            "account",
            TITLE,
            true,
            format!("the image's User is {user} but /etc/passwd has no such account"),
        );
    };
    if entry.uid == 0 {
        return fail(
            "account",
            TITLE,
            true,
            format!("the image's User {user} is `{}`, uid 0 (root)", entry.name),
        );
    }
    match files.resolve(&entry.home) {
        Some(r) if r.node.is_dir() && r.node.uid == entry.uid => pass(
            "account",
            TITLE,
            true,
            format!(
                "User {user} is `{}` (uid {}), home {} owned by it",
                entry.name, entry.uid, entry.home
            ),
        ),
        Some(r) if r.node.is_dir() && r.node.mode & 0o002 != 0 => pass(
            "account",
            TITLE,
            true,
            format!(
                "User {user} is `{}` (uid {}), home {} is world-writable",
                entry.name, entry.uid, entry.home
            ),
        ),
        Some(r) if r.node.is_dir() => fail(
            "account",
            TITLE,
            true,
            format!(
                "home {} of `{}` is owned by uid {}, not by the account (uid {})",
                entry.home, entry.name, r.node.uid, entry.uid
            ),
        ),
        _ => fail(
            "account",
            TITLE,
            true,
            format!(
                "`{}` (uid {}) has home {}, which is not a directory in the image",
                entry.name, entry.uid, entry.home
            ),
        ),
    }
}

fn check_ca(files: &FileIndex, env: &[String]) -> CheckItem {
    const TITLE: &str = "CA certificate bundle";
    let from_env = ["SSL_CERT_FILE", "NIX_SSL_CERT_FILE", "CURL_CA_BUNDLE"]
        .iter()
        .filter_map(|k| env_value(env, k).map(|v| (*k, v)));
    for (key, value) in from_env {
        if let Some(r) = files.resolve(value)
            && non_empty_file(&r.node.kind)
        {
            return pass("ca-certificates", TITLE, true, format!("{key}={value}"));
        }
    }
    for bundle in CA_BUNDLES {
        if let Some(r) = files.resolve(bundle)
            && non_empty_file(&r.node.kind)
        {
            let shown = if r.path == *bundle {
                (*bundle).to_owned()
            } else {
                format!("{bundle} -> {}", r.path)
            };
            return pass("ca-certificates", TITLE, true, shown);
        }
    }
    fail(
        "ca-certificates",
        TITLE,
        true,
        format!(
            "no certificate bundle at {} and no SSL_CERT_FILE; the agent cannot verify the deployment's TLS certificate (install ca-certificates)",
            CA_BUNDLES[0]
        ),
    )
}

fn non_empty_file(kind: &NodeKind) -> bool {
    matches!(kind, NodeKind::File { size, .. } if *size > 0)
}

/// The FHS path of the glibc dynamic loader for an OCI architecture.
pub fn glibc_loader(architecture: &str) -> Option<&'static str> {
    Some(match architecture {
        "amd64" => "/lib64/ld-linux-x86-64.so.2",
        "arm64" => "/lib/ld-linux-aarch64.so.1",
        "386" => "/lib/ld-linux.so.2",
        "arm" => "/lib/ld-linux-armhf.so.3",
        "ppc64le" => "/lib64/ld64.so.2",
        "s390x" => "/lib/ld64.so.1",
        "riscv64" => "/lib/ld-linux-riscv64-lp64d.so.1",
        "loong64" => "/lib64/ld-linux-loongarch-lp64d.so.1",
        _ => return None,
    })
}

fn check_loader(files: &FileIndex, architecture: &str) -> CheckItem {
    const TITLE: &str = "glibc loader at its FHS path";
    let libc = files
        .iter()
        .find(|(p, _)| *p == "libc.so.6" || p.ends_with("/libc.so.6"))
        .map(|(p, _)| format!("/{p}"));
    let Some(libc) = libc else {
        return pass(
            "loader",
            TITLE,
            true,
            "not a glibc image (no libc.so.6), nothing to check".into(),
        );
    };
    let Some(loader) = glibc_loader(architecture) else {
        return pass(
            "loader",
            TITLE,
            true,
            format!(
                "glibc found ({libc}), but no standard loader path is known for {architecture}"
            ),
        );
    };
    match files.resolve(loader) {
        Some(r) if r.node.is_file() => pass(
            "loader",
            TITLE,
            true,
            if r.path == loader {
                loader.to_owned()
            } else {
                format!("{loader} -> {}", r.path)
            },
        ),
        _ => fail(
            "loader",
            TITLE,
            true,
            format!(
                "the image has glibc ({libc}) but no {loader}; binaries downloaded into the workspace (IDE servers) cannot start"
            ),
        ),
    }
}
