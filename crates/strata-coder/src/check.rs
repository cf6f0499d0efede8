//! Coder's workspace-image minimums, checked on an image's files.
//!
//! Coder starts a workspace by running the agent's init script with `sh -c` as the image's
//! user: the script (`#!/usr/bin/env sh`) needs a POSIX shell, `/usr/bin/env`, `mktemp`,
//! `chmod` and `sleep`, a way to download the agent (curl, wget or busybox wget), a
//! writable temporary directory, and the agent then needs a home directory and CA certificates
//! to reach the deployment over TLS. Binaries downloaded later (IDE servers, extensions) expect
//! the glibc loader at its standard path on glibc systems.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::busybox;
use crate::image::ImageFiles;
use crate::index::{FileIndex, NodeKind, Resolved};
use crate::passwd;

/// `PATH` assumed when the image configuration sets none (what Docker and podman use).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Certificate bundles where TLS libraries look by default (Debian/Alpine, Fedora/RHEL,
/// OpenSUSE, the BSD-style name, Nix's profiles: strata's default and the older one).
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/run/current-system/sw/etc/ssl/certs/ca-bundle.crt",
    "/nix/var/nix/profiles/default/etc/ssl/certs/ca-bundle.crt",
];

/// One item of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckItem {
    /// Stable identifier (`sh`, `env`, `mktemp`, `chmod`, `sleep`, `downloader`, `tmp`,
    /// `account`, `ca-certificates`, `loader`, `git`, `bash`, `sudo`).
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

/// Where the agent bootstrap's commands come from: the image's `PATH` and, when `sh` is a
/// busybox, that busybox's own applets (its shell runs them without a link, as Debian's
/// `busybox-static` does).
struct Commands<'a> {
    files: &'a FileIndex,
    path_env: &'a str,
    path_note: &'static str,
    applets: RefCell<BTreeMap<String, Option<BTreeSet<String>>>>,
}

impl Commands<'_> {
    /// The applets of the busybox at `path` (an absolute, resolved path), when the file is a
    /// busybox whose content the index kept.
    fn applets_of(&self, path: &str) -> Option<BTreeSet<String>> {
        if path.rsplit('/').next() != Some("busybox") {
            return None;
        }
        self.applets
            .borrow_mut()
            .entry(path.to_owned())
            .or_insert_with(|| {
                let bytes = self.files.read(path).ok().flatten()?;
                busybox::applets(&bytes)
            })
            .clone()
    }

    /// The shell `sh` resolves to on `PATH`, when it is a busybox providing `sh`.
    fn busybox_shell(&self) -> Option<(String, BTreeSet<String>)> {
        let (_, r) = self.files.which("sh", self.path_env)?;
        let applets = self.applets_of(&r.path)?;
        (applets.contains("sh") || applets.contains("ash")).then_some((r.path, applets))
    }

    /// How the image's `sh` finds `name`: `Ok` with what it runs, `Err` with why it cannot.
    fn find(&self, name: &str) -> Result<String, String> {
        if name != "sh"
            && let Some((shell, applets)) = self.busybox_shell()
            && applets.contains(name)
        {
            return Ok(format!("an applet of the shell ({shell})"));
        }
        let Some((found, r)) = self.files.which(name, self.path_env) else {
            return Err(format!(
                "no `{name}` on {} ({})",
                self.path_note, self.path_env
            ));
        };
        self.runs(name, &found, &r)
    }

    /// Whether `found` (a path `name` was found at, resolved to `r`) runs `name`: a link to a
    /// busybox does only when that busybox has the applet.
    fn runs(&self, name: &str, found: &str, r: &Resolved) -> Result<String, String> {
        let shown = if found == r.path {
            found.to_owned()
        } else {
            format!("{found} -> {}", r.path)
        };
        if name == "busybox" {
            return Ok(shown);
        }
        match self.applets_of(&r.path) {
            Some(applets) if applets.contains(name) => Ok(shown),
            Some(_) => Err(format!(
                "{shown} is a busybox without the `{name}` applet (`{name}: applet not found`)"
            )),
            None => Ok(shown),
        }
    }

    /// The file at the absolute `path` (links followed) as a program named after its last
    /// component.
    fn absolute(&self, path: &str) -> Result<String, String> {
        let name = path.rsplit('/').next().unwrap_or(path);
        match self.files.resolve(path) {
            Some(r) if r.node.is_file() && r.node.mode & 0o111 != 0 => self.runs(name, path, &r),
            Some(r) => Err(format!("{path} -> {} is not an executable file", r.path)),
            None => Err(format!("the image has no {path}")),
        }
    }
}

/// Checks an image against what Coder's Linux agent bootstrap runs and the workspace-image
/// minimums.
///
/// The bootstrap (coder/coder `provisionersdk/scripts/bootstrap_linux.sh`) is a
/// `#!/usr/bin/env sh` script that makes its directory with `mktemp -d -t`, downloads the agent
/// with the first of curl, wget or `busybox wget` that `command -v` finds, retries with
/// `sleep`, and marks the agent executable with `chmod`. Each command is looked up the way the
/// image's `sh` would: a busybox shell's own applets first, then `PATH` with every link
/// followed inside the image; a link to busybox counts only when busybox has that applet.
pub fn check_coder(image: &ImageFiles) -> CheckReport {
    let files = &image.files;
    let run = &image.config.config;
    let image_path = env_value(&run.env, "PATH");
    let cmds = Commands {
        files,
        path_env: image_path.unwrap_or(DEFAULT_PATH),
        path_note: if image_path.is_some() {
            "the image's PATH"
        } else {
            "the default PATH (the image sets none)"
        },
        applets: RefCell::new(BTreeMap::new()),
    };
    let mut items = Vec::new();

    items.push(match cmds.find("sh") {
        Ok(p) => pass("sh", "POSIX shell", true, format!("sh is {p}")),
        Err(why) => fail(
            "sh",
            "POSIX shell",
            true,
            format!("{why}; the agent's init script runs with sh"),
        ),
    });
    items.push(match cmds.absolute("/usr/bin/env") {
        Ok(p) => pass("env", ENV_TITLE, true, p),
        Err(why) => fail(
            "env",
            ENV_TITLE,
            true,
            format!("{why}; the bootstrap script starts with #!/usr/bin/env sh"),
        ),
    });
    for (name, title, why) in BOOTSTRAP_COMMANDS {
        items.push(match cmds.find(name) {
            Ok(p) => pass(name, title, true, format!("{name} is {p}")),
            Err(e) => fail(
                name,
                title,
                true,
                format!("{e}; the bootstrap script runs {why} ({name}: command not found)"),
            ),
        });
    }
    items.push(check_downloader(&cmds));

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
        items.push(match cmds.find(tool) {
            Ok(p) => pass(id, tool_title(id), false, format!("{tool} is {p}")),
            Err(e) => fail(id, tool_title(id), false, format!("{e}; it {why}")),
        });
    }
    CheckReport { items }
}

const ENV_TITLE: &str = "/usr/bin/env for the script's #!/usr/bin/env sh";

/// The commands of the bootstrap script besides the shell and the downloader: id (and name),
/// title, what the script does with it.
const BOOTSTRAP_COMMANDS: [(&str, &str, &str); 3] = [
    (
        "mktemp",
        "mktemp (the agent's temporary directory)",
        "`mktemp -d -t coder.XXXXXX` to make the agent's directory",
    ),
    (
        "chmod",
        "chmod (marks the agent executable)",
        "`chmod +x coder` on the downloaded agent",
    ),
    (
        "sleep",
        "sleep (the download retry loop)",
        "`sleep 30` between download attempts",
    ),
];

/// The downloader the script picks: the first of curl, wget and busybox that `command -v`
/// finds; the script does not fall back when the one it picked cannot work.
fn check_downloader(cmds: &Commands<'_>) -> CheckItem {
    const TITLE: &str = "curl, wget or busybox wget";
    let on_path = |name: &str| -> Option<Result<String, String>> {
        if let Some((shell, applets)) = cmds.busybox_shell()
            && applets.contains(name)
        {
            return Some(Ok(format!("an applet of the shell ({shell})")));
        }
        let (found, r) = cmds.files.which(name, cmds.path_env)?;
        Some(cmds.runs(name, &found, &r))
    };
    for tool in ["curl", "wget"] {
        match on_path(tool) {
            Some(Ok(p)) => return pass("downloader", TITLE, true, format!("{tool} is {p}")),
            Some(Err(e)) => {
                return fail(
                    "downloader",
                    TITLE,
                    true,
                    format!("the bootstrap script downloads the agent with {tool}, but {e}"),
                );
            }
            None => {}
        }
    }
    let Some((found, r)) = cmds.files.which("busybox", cmds.path_env) else {
        return fail(
            "downloader",
            TITLE,
            true,
            format!(
                "none of curl, wget, busybox on {} ({}); the bootstrap script needs one to download the agent",
                cmds.path_note, cmds.path_env
            ),
        );
    };
    let shown = if found == r.path {
        found
    } else {
        format!("{found} -> {}", r.path)
    };
    match cmds.applets_of(&r.path) {
        Some(applets) if !applets.contains("wget") => fail(
            "downloader",
            TITLE,
            true,
            format!(
                "busybox is {shown}, which has no wget applet; the bootstrap script runs `busybox wget` to download the agent"
            ),
        ),
        _ => pass("downloader", TITLE, true, format!("busybox wget ({shown})")),
    }
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

#[cfg(test)]
mod tests {
    use strata_fstree::Content;

    use super::*;
    use crate::index::Node;

    fn node(kind: NodeKind, mode: u32) -> Node {
        Node {
            kind,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    fn program(bytes: &[u8]) -> Node {
        node(
            NodeKind::File {
                size: bytes.len() as u64,
                data: Some(Content::Inline(bytes.into())),
            },
            0o755,
        )
    }

    fn link(target: &str) -> Node {
        node(NodeKind::Symlink(target.to_owned()), 0o777)
    }

    /// A busybox binary's bytes with these applets.
    fn busybox(applets: &[&str]) -> Node {
        let mut sorted = applets.to_vec();
        sorted.extend(["cat", "echo", "ls"]);
        sorted.sort_unstable();
        let mut bytes = b"\x7fELF\0BusyBox v1.35\0".to_vec();
        for a in ["[", "[["].iter().chain(&sorted) {
            bytes.extend_from_slice(a.as_bytes());
            bytes.push(0);
        }
        program(&bytes)
    }

    fn image(files: FileIndex) -> ImageFiles {
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "User": "coder", "Env": ["PATH=/usr/bin:/bin"] },
            "rootfs": { "type": "layers", "diff_ids": [] },
        });
        ImageFiles {
            config: serde_json::from_value(config).expect("config"),
            files,
        }
    }

    fn item<'a>(report: &'a CheckReport, id: &str) -> &'a CheckItem {
        report
            .items
            .iter()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("no {id}"))
    }

    #[test]
    fn a_busybox_shell_runs_its_own_applets_without_links() {
        let mut files = FileIndex::new();
        files.insert(
            "bin/busybox",
            busybox(&["sh", "env", "mktemp", "chmod", "sleep", "wget"]),
        );
        files.insert("bin/sh", link("busybox"));
        files.insert("usr/bin/env", link("../../bin/busybox"));
        let report = check_coder(&image(files));
        for id in ["sh", "env", "mktemp", "chmod", "sleep", "downloader"] {
            assert!(item(&report, id).passed, "{id}: {}", report.render());
        }
        assert_eq!(
            item(&report, "mktemp").reason,
            "mktemp is an applet of the shell (/bin/busybox)"
        );
        assert_eq!(item(&report, "env").reason, "/usr/bin/env -> /bin/busybox");
        assert!(
            item(&report, "downloader")
                .reason
                .starts_with("wget is an applet")
        );
    }

    /// A Nix image with a shell and curl but no coreutils passed the old check and then failed
    /// in Coder with `mktemp: command not found`.
    #[test]
    fn a_shell_without_coreutils_fails_naming_each_missing_command() {
        let mut files = FileIndex::new();
        files.insert("nix/store/aaa-dash/bin/dash", program(b"\x7fELF dash"));
        files.insert("nix/store/bbb-curl/bin/curl", program(b"\x7fELF curl"));
        files.insert("bin/sh", link("/nix/store/aaa-dash/bin/dash"));
        files.insert("usr/bin/curl", link("/nix/store/bbb-curl/bin/curl"));
        let report = check_coder(&image(files));
        assert!(item(&report, "sh").passed);
        assert!(item(&report, "downloader").passed);
        for id in ["mktemp", "chmod", "sleep"] {
            let i = item(&report, id);
            assert!(!i.passed && i.required, "{id}");
            assert!(
                i.reason
                    .starts_with(&format!("no `{id}` on the image's PATH (/usr/bin:/bin)")),
                "{}",
                i.reason
            );
            assert!(i.reason.contains(&format!("{id}: command not found")));
        }
        let env = item(&report, "env");
        assert!(!env.passed);
        assert!(
            env.reason.starts_with("the image has no /usr/bin/env"),
            "{}",
            env.reason
        );
        let failed: Vec<&str> = report.failures().map(|i| i.id).collect();
        assert!(
            failed.starts_with(&["env", "mktemp", "chmod", "sleep"]),
            "{failed:?}"
        );
    }

    #[test]
    fn a_link_to_a_busybox_without_the_applet_does_not_count() {
        let mut files = FileIndex::new();
        // A shell that is not busybox, so only links and PATH count.
        files.insert("bin/sh", program(b"\x7fELF dash"));
        files.insert(
            "bin/busybox",
            busybox(&["sh", "env", "mktemp", "chmod", "sleep"]),
        );
        for name in ["mktemp", "chmod", "sleep", "wget"] {
            files.insert(&format!("bin/{name}"), link("busybox"));
        }
        files.insert("usr/bin/env", link("/bin/busybox"));
        let report = check_coder(&image(files.clone()));
        for id in ["sh", "env", "mktemp", "chmod", "sleep"] {
            assert!(item(&report, id).passed, "{id}: {}", report.render());
        }
        let dl = item(&report, "downloader");
        assert!(!dl.passed);
        assert_eq!(
            dl.reason,
            "the bootstrap script downloads the agent with wget, but /bin/wget -> /bin/busybox is a busybox without the `wget` applet (`wget: applet not found`)"
        );

        // No wget link: `busybox wget` needs the applet just the same.
        files.remove("bin/wget");
        let report = check_coder(&image(files));
        let dl = item(&report, "downloader");
        assert!(!dl.passed);
        assert!(
            dl.reason.contains("which has no wget applet"),
            "{}",
            dl.reason
        );
    }
}
