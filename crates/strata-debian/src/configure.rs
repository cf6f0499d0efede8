//! The Debian *configure layers*: the packages' maintainer scripts run inside the image, one
//! half at a time.
//!
//! A configured image has a configure layer per half that has packages: the base half's sits
//! right above the base's layers and sees nothing of the user half, so its key (and blob) is
//! the same for every user of that base; the user half's sits right above the user's layers.
//! Each is made the same way: the layers below are unpacked (in memory when there is room,
//! else in the store, [`strata_sandbox::prepare_rootfs`]) with the half's dpkg database files
//! on top, and in a sandbox with no network the image's own `dpkg` configures the half's
//! packages as dpkg itself would install them: each package's `preinst install` runs in
//! dependency order, a package's `Pre-Depends` configured before it, then
//! `dpkg --configure -a` runs every `postinst` in dependency order and
//! `dpkg --triggers-only -a` the pending triggers, with `DEBIAN_FRONTEND=noninteractive`, a
//! `policy-rc.d` that forbids starting services and `SOURCE_DATE_EPOCH` set (Python then
//! writes hash-checked, reproducible bytecode).
//!
//! The base half starts from the declarative system files of its packages (dpkg's database
//! with every package `unpacked`, the accounts, `/bin/sh`, the CA bundle, the alternatives).
//! The user half starts from the configured base: its packages are added to the base's dpkg
//! status as `unpacked`, and only their scripts run; a trigger a user package activates on a
//! base package (a file under a base package's `interest` path, or an explicit `activate` of
//! a name a base package is interested in) marks that base package `triggers-pending`, so
//! its `postinst triggered` runs too.
//!
//! What the scripts created, changed or deleted (the overlay's upper directory), over the
//! starting files, becomes the layer, deletions as OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`).
//! Files that differ from run to run by nature (logs, `*-old` backups, ldconfig's aux cache,
//! the machine id) are left out; the layer writer clamps every mtime to `SOURCE_DATE_EPOCH`.
//!
//! A layer's key is the content below it (diff ids, never their compression), the starting
//! files and the script, so an unchanged half runs no script. Without a usable sandbox the
//! layer holds the declarative files alone and a note says so on stderr; for a foreign
//! architecture, or an image without dpkg, nothing is configured and the Debian source puts
//! its declarative files into the customisation layer.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_fstree::{Content, Entry, EntryKind, ImagePath};
use strata_oci::compress::Compression;
use strata_oci::whiteout;
use strata_sandbox::changes::{Change, scan_upper};
use strata_sandbox::{
    Command, IdMapping, LayerFile, Sandbox, SandboxError, Stdio, User, prepare_rootfs, remove_tree,
    unpack_rootfs,
};
use strata_source::{PostLayerStep, StepContext, StepError, StepLayer, StepPlace, hash_parts};
use strata_spec::Part;
use strata_store::Store;

use crate::Package;
use crate::Request;
use crate::source::SourceFailure;

/// Version of what the configure step does; bump it when the script, the environment or the
/// filtering changes so old configure layers are not reused.
const CONFIGURE_FORMAT: &str = "configure-v4";

/// The `part` of the base half's configure layer in reports and history.
pub const BASE_PART: &str = "base-configure";
/// The `part` of the user half's configure layer.
pub const USER_PART: &str = "user-configure";

/// Starts every run: services may not start.
const SCRIPT_HEAD: &str = r#"set -e
exec </dev/null
mkdir -p /usr/sbin
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
arch=$(dpkg --print-architecture)
preinst() {
    echo "strata: $1 preinst install"
    DPKG_MAINTSCRIPT_PACKAGE=${1%%:*} DPKG_MAINTSCRIPT_NAME=preinst \
        DPKG_MAINTSCRIPT_ARCH=$arch DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT=1 DPKG_ROOT= \
        "/var/lib/dpkg/info/$1.preinst" install
}
"#;

/// A base (first) run: the declarative status says `installed`; the scripts must see
/// `unpacked`. The declarative layer's certificate links go: update-ca-certificates makes them
/// afresh, with the hash links, as on a fresh system.
const SCRIPT_FIRST: &str = r#"sed -i 's/^Status: install ok installed$/Status: install ok unpacked/' /var/lib/dpkg/status
if [ -x /usr/sbin/update-ca-certificates ] && [ -d /etc/ssl/certs ]; then
    find /etc/ssl/certs -maxdepth 1 -type l -delete
fi
"#;

/// Ends every run: seed the spec's debconf answers ([`crate::system::DEBCONF_SELECTIONS`])
/// for the scripts to act on, configure what is left, process the triggers.
const SCRIPT_TAIL: &str = r#"if [ -s /var/lib/strata/debconf.selections ]; then
    debconf-set-selections /var/lib/strata/debconf.selections
fi
dpkg --configure -a
dpkg --triggers-only -a
rm -f /usr/sbin/policy-rc.d
"#;

/// Put before the script: the image is being built, not booted, and `ischroot` must say so,
/// as it does under debootstrap and mmdebstrap (libc6's postinst otherwise runs `telinit u`
/// and sleeps a second). The stub lives in the sandbox's own `/tmp`, which is not part of the
/// image.
///
/// Two more stubs there remove waste and change no file of the result:
/// - `py3compile` (dh-python's byte-compiler, which every Python package's `postinst` calls)
///   feeds its files to one `python3 -m py_compile -` worker; the stub runs the image's own
///   `/usr/bin/py3compile` with as many workers as the sandbox has CPUs, each file compiled
///   by one of them. With `SOURCE_DATE_EPOCH` set each `.pyc` is hash-checked and its bytes
///   depend only on its source, so they are the same for any number of workers. The script
///   waits for its workers as the real one does, so dpkg's order is kept. If the real
///   script's shape is not the one the stub knows, the real one runs as it is.
/// - `update-ca-certificates --hooksdir ""`, which ca-certificates' `postinst` runs right
///   before `dpkg-trigger update-ca-certificates` (whose processing runs
///   `update-ca-certificates` again, with hooks), returns at once when there are no hooks:
///   the triggered run makes the same links and bundle from the same files, so each is made
///   once.
/// - `update-initramfs -c -k VERSION [-b /boot]`, which a kernel package's `postinst` runs
///   (through `/etc/kernel/postinst.d/initramfs-tools`), is left to the `update-initramfs`
///   trigger when it can be activated: every package with initramfs hooks activates it, and
///   its processing (initramfs-tools' `postinst triggered`, always later in the same run)
///   runs `update-initramfs -u`, which makes the newest kernel's initramfs again from the same
///   files; so the kernel's initramfs is made once instead of twice. An empty
///   `/boot/initrd.img-VERSION` stands for it until then (`-u` picks the newest kernel that
///   has one, and replaces it). Only where nothing else could read it in between: no other
///   `/etc/kernel/postinst.d` hook, no `/etc/initramfs/post-update.d` hook, no initramfs yet.
/// - `sync` (update-initramfs and others run it) returns at once: the image is made from the
///   files, never from the disk, and a `sync` waits for every dirty page of the machine (the
///   unpacked image in the store among them) to reach the disk.
const IN_CHROOT: &str = r#"mkdir -p /tmp/.strata-bin
printf '#!/bin/sh\nexit 0\n' >/tmp/.strata-bin/ischroot
printf '#!/bin/sh\nexit 0\n' >/tmp/.strata-bin/sync
chmod 755 /tmp/.strata-bin/ischroot /tmp/.strata-bin/sync
cat >/tmp/.strata-bin/update-ca-certificates <<'STRATA'
#!/bin/sh
if [ "$#" = 2 ] && [ "$1" = --hooksdir ] && [ -z "$2" ] &&
    [ -z "$(ls -A /etc/ca-certificates/update.d 2>/dev/null)" ]; then
    exit 0
fi
exec /usr/sbin/update-ca-certificates "$@"
STRATA
cat >/tmp/.strata-bin/py3compile <<'STRATA'
#!/usr/bin/python3
import os, sys
from subprocess import PIPE, Popen
REAL = "/usr/bin/py3compile"
if not os.path.exists(REAL):
    sys.exit(0)
try:
    env = {"__name__": "py3compile", "__file__": REAL}
    with open(REAL) as f:
        exec(compile(f.read(), REAL, "exec"), env)
    vrepr, main = env["vrepr"], env["main"]
    if not callable(env["py_compile"]) or not isinstance(env["WORKERS"], dict):
        raise LookupError("py3compile")
except Exception:
    os.execv(REAL, [REAL] + sys.argv[1:])

def py_compile(version, optimize, workers):
    if not isinstance(version, str):
        version = vrepr(version)
    cmd = ["/usr/bin/python" + version] + (["-O"] if optimize else []) + ["-m", "py_compile", "-"]
    n = max(1, len(os.sched_getaffinity(0)))
    procs = [Popen(cmd, bufsize=0, stdin=PIPE, close_fds=True) for _ in range(n)]
    for i, p in enumerate(procs):
        workers[(version, i)] = p
    i = 0
    while True:
        filename = (yield)
        procs[i % n].stdin.write(filename.encode("utf-8") + b"\n")
        i += 1

env["py_compile"] = py_compile
sys.argv[0] = REAL
main()
STRATA
cat >/tmp/.strata-bin/update-initramfs <<'STRATA'
#!/bin/sh
if [ -n "$DPKG_MAINTSCRIPT_PACKAGE" ] && [ "$1" = -c ] && [ "$2" = -k ] && [ -n "$3" ] &&
    { [ "$#" = 3 ] || { [ "$#" = 5 ] && [ "$4" = -b ] && [ "$5" = /boot ]; }; } &&
    [ "$3" = "${3#*/}" ] && [ ! -e "/boot/initrd.img-$3" ] &&
    [ "$(ls -A /etc/kernel/postinst.d 2>/dev/null)" = initramfs-tools ] &&
    [ -z "$(ls -A /etc/initramfs/post-update.d 2>/dev/null)" ] &&
    dpkg-trigger --no-await update-initramfs; then
    : >"/boot/initrd.img-$3"
    echo "update-initramfs: deferring /boot/initrd.img-$3 to the update-initramfs trigger"
    exit 0
fi
exec /usr/sbin/update-initramfs "$@"
STRATA
chmod 755 /tmp/.strata-bin/update-ca-certificates /tmp/.strata-bin/py3compile \
    /tmp/.strata-bin/update-initramfs
export PATH="/tmp/.strata-bin:$PATH"
"#;

/// A configure step failure.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// The sandbox failed in a way that is not "unavailable".
    #[error("configuring the Debian packages: {context}")]
    Sandbox {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: SandboxError,
    },
    /// The scripts failed.
    #[error(
        "configuring the Debian packages: `dpkg --configure -a` in the image exited with status \
         {status}; the end of its output:\n{tail}"
    )]
    Scripts {
        /// The exit status.
        status: i32,
        /// The last lines of the output.
        tail: String,
    },
    /// A host file operation failed.
    #[error("configuring the Debian packages: cannot {action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The store failed.
    #[error("configuring the Debian packages")]
    Store(#[source] strata_store::StoreError),
    /// The starting files could not be written.
    #[error("configuring the Debian packages: writing dpkg's database files")]
    Files(#[source] strata_oci::layer::LayerError),
    /// A changed path is not a valid image path.
    #[error("configuring the Debian packages: `{path}` is not a valid image path: {message}")]
    Path {
        /// The path.
        path: String,
        /// Why.
        message: String,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ConfigureError {
    let path = path.to_owned();
    move |source| ConfigureError::Io {
        action,
        path,
        source,
    }
}

/// The OCI architecture of this machine (the one mapping, in strata-spec).
fn host_architecture() -> &'static str {
    strata_spec::host_architecture()
}

/// What [`half_system`] needs of one Debian half.
pub(crate) struct Half<'a> {
    /// The half.
    pub part: Part,
    /// The base half's packages.
    pub base: &'a [Package],
    /// The user half's packages (those the base does not have).
    pub user: &'a [Package],
    /// `[base].debian`'s request.
    pub base_request: Option<&'a Request>,
    /// `[user].debian`'s request.
    pub user_request: Option<&'a Request>,
    /// No Debian section says `configure = false`.
    pub configure: bool,
    /// The image's architecture.
    pub architecture: &'a str,
    /// The base half's debconf answers.
    pub debconf_base: &'a [String],
    /// The debconf answers of both halves, base first.
    pub debconf: &'a [String],
}

/// A half's post-layer steps.
type Steps = Vec<Arc<dyn PostLayerStep>>;

/// The half's system files for the customisation layer, and its configure step: a
/// configured half's system files go into its configure layer instead.
pub(crate) fn half_system(half: &Half<'_>) -> Result<(Vec<Entry>, Steps), SourceFailure> {
    let all: Vec<&Package> = half.base.iter().chain(half.user.iter()).collect();
    let base_pkgs: Vec<&Package> = half.base.iter().collect();
    // The user half's request holds the base's repositories and its own; the base half's
    // files (its configure layer) must not depend on `[user]`.
    let request = half.user_request.or(half.base_request);
    let base_request = half.base_request.or(half.user_request);
    // The spec's debconf answers go with the files the configure step starts from, so the
    // packages' own scripts act on them; each is checked against the installed templates.
    let answers_all = || crate::system::debconf_selections(&all, half.debconf);
    // The system files describe every package of the image; when the user half has its own
    // packages, it writes them (they win over the base's in the customisation layer). That
    // half also says why nothing is configured.
    let writes_system = half.part == Part::User || half.user_request.is_none();
    let declarative = || -> Result<_, SourceFailure> {
        let files = if writes_system {
            let mut files = crate::system::generate(&all, request)?;
            files.extend(answers_all()?);
            files
        } else {
            Vec::new()
        };
        Ok((files, Vec::new()))
    };
    if !half.configure {
        return declarative();
    }
    let host = host_architecture();
    if half.architecture != host {
        if writes_system {
            eprintln!(
                "strata: note: the Debian maintainer scripts are not run for a {} image on a \
                 {host} machine; the image holds the declarative system files instead",
                half.architecture
            );
        }
        return declarative();
    }
    // dpkg and a shell must come with the first half that has packages.
    let first: Vec<&Package> = if half.base.is_empty() {
        half.user.iter().collect()
    } else {
        half.base.iter().collect()
    };
    let has = |path: &str| {
        first
            .iter()
            .any(|p| p.tree.entries().iter().any(|e| e.path.as_str() == path))
    };
    let shell = has("usr/bin/sh")
        || first
            .iter()
            .any(|p| matches!(p.locked.name.as_str(), "dash" | "bash"));
    if !has("usr/bin/dpkg") || !shell {
        if writes_system {
            eprintln!(
                "strata: note: the image has no dpkg or /bin/sh (`essential = false`?), so the \
                 Debian maintainer scripts are not run; the image holds the declarative system \
                 files instead"
            );
        }
        return declarative();
    }
    let step = match half.part {
        Part::Base if !half.base.is_empty() => ConfigureStep {
            place: StepPlace::Base,
            packages: half.base.iter().map(step_package).collect(),
            files: {
                let mut files = crate::system::generate(&base_pkgs, base_request)?;
                files.extend(crate::system::debconf_selections(
                    &base_pkgs,
                    half.debconf_base,
                )?);
                leave_to_scripts(&mut files, &base_pkgs);
                files
            },
            start: Start::Declarative,
        },
        Part::User if !half.user.is_empty() && half.base.is_empty() => ConfigureStep {
            place: StepPlace::User,
            packages: half.user.iter().map(step_package).collect(),
            files: {
                let user: Vec<&Package> = half.user.iter().collect();
                let mut files = crate::system::generate(&user, request)?;
                files.extend(answers_all()?);
                leave_to_scripts(&mut files, &user);
                files
            },
            start: Start::Declarative,
        },
        Part::User if !half.user.is_empty() => {
            let user: Vec<&Package> = half.user.iter().collect();
            let mut files = Vec::new();
            let mut stanzas = String::new();
            for e in crate::system::dpkg_files(&user)? {
                match e.path.as_str() {
                    "var/lib/dpkg/status" => {
                        if let EntryKind::File {
                            content: Content::Inline(b),
                            ..
                        } = &e.kind
                        {
                            stanzas = String::from_utf8_lossy(b).replace(
                                "\nStatus: install ok installed\n",
                                "\nStatus: install ok unpacked\n",
                            );
                        }
                    }
                    "var/lib/dpkg/available" | "var/lib/dpkg/info/format" => {}
                    // dpkg's trigger interests are the whole image's, base and user.
                    p if p.starts_with("var/lib/dpkg/triggers/") => {}
                    _ => files.push(e),
                }
            }
            crate::system::trigger_interests(&all, &mut files)?;
            // Repositories `[user]` adds, for apt in the image; and the debconf answers.
            if let Some(req) = half.user_request {
                crate::system::repo_sources(req, &mut files)?;
            }
            files.extend(answers_all()?);
            ConfigureStep {
                place: StepPlace::User,
                packages: half.user.iter().map(step_package).collect(),
                files,
                start: Start::OverConfigured {
                    stanzas,
                    pending: pending_triggers(half.base, half.user),
                    fallback: crate::system::generate(&all, request)?,
                },
            }
        }
        _ => return Ok((Vec::new(), Vec::new())),
    };
    Ok((Vec::new(), vec![Arc::new(step)]))
}

/// Drops the declarative files that the half's own scripts write anyway, where starting from
/// them costs time. `/etc/ca-certificates.conf`: ca-certificates' `postinst` writes it in one
/// pipeline when it is missing, but when it exists rewrites it line by line, with a `grep`
/// and `sed` per certificate and line (some 1,500 programs; the content is the same).
fn leave_to_scripts(files: &mut Vec<Entry>, packages: &[&Package]) {
    if packages
        .iter()
        .any(|p| p.locked.name == "ca-certificates" && p.control.get("postinst").is_some())
    {
        files.retain(|e| e.path.as_str() != "etc/ca-certificates.conf");
    }
}

/// The names (every alternative) of a control field's relations.
fn relation_names(control: &str, field: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = control.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if !k.eq_ignore_ascii_case(field) {
            continue;
        }
        let mut value = v.to_owned();
        while let Some(next) = lines.peek() {
            if next.starts_with(' ') || next.starts_with('\t') {
                value.push_str(next);
                lines.next();
            } else {
                break;
            }
        }
        for alt in value.split([',', '|']) {
            let name = alt.trim().split([' ', '(', ':', '[']).next().unwrap_or("");
            if !name.is_empty() {
                out.push(name.to_owned());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What the script needs of a package.
fn step_package(p: &Package) -> StepPackage {
    let control = p.control.control().unwrap_or("");
    let multi_arch_same = control
        .lines()
        .any(|l| l.eq_ignore_ascii_case("Multi-Arch: same"));
    let pre_depends = relation_names(control, "Pre-Depends");
    let mut depends = relation_names(control, "Depends");
    depends.extend(pre_depends.iter().cloned());
    depends.sort();
    depends.dedup();
    StepPackage {
        name: p.locked.name.clone(),
        info: if multi_arch_same {
            format!("{}:{}", p.locked.name, p.locked.architecture)
        } else {
            p.locked.name.clone()
        },
        preinst: p.control.get("preinst").is_some(),
        pre_depends,
        depends,
    }
}

/// A package's `.triggers` directives: (directive, trigger name) pairs.
fn trigger_lines(p: &Package) -> Vec<(String, String)> {
    let text = p
        .control
        .get("triggers")
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_owned(), it.next()?.to_owned()))
        })
        .collect()
}

/// The base packages whose triggers the user packages activate, with the trigger names: a
/// file trigger (`interest /PATH`) when a user package has a file at or below the path, a
/// named one when a user package's `.triggers` says `activate NAME`.
fn pending_triggers(base: &[Package], user: &[Package]) -> BTreeMap<String, Vec<String>> {
    let activated: std::collections::BTreeSet<String> = user
        .iter()
        .flat_map(trigger_lines)
        .filter(|(d, _)| d.starts_with("activate"))
        .map(|(_, n)| n)
        .collect();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for b in base {
        for (directive, name) in trigger_lines(b) {
            if !directive.starts_with("interest") {
                continue;
            }
            let hit = if let Some(path) = name.strip_prefix('/') {
                let path = crate::merged_usr(path.trim_end_matches('/'));
                user.iter().any(|u| {
                    u.tree.entries().iter().any(|e| {
                        let p = e.path.as_str();
                        p == path
                            || p.strip_prefix(path.as_str())
                                .is_some_and(|r| r.starts_with('/'))
                    })
                })
            } else {
                activated.contains(&name)
            };
            if hit {
                let names = out.entry(b.locked.name.clone()).or_default();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    out
}

/// One package the step configures, as the script needs it.
#[derive(Debug, Clone)]
pub struct StepPackage {
    /// Package name.
    pub name: String,
    /// Its `/var/lib/dpkg/info` name (`NAME`, or `NAME:ARCH` for `Multi-Arch: same`).
    pub info: String,
    /// Whether it has a `preinst`.
    pub preinst: bool,
    /// Names it `Pre-Depends` on (every alternative).
    pub pre_depends: Vec<String>,
    /// Names it `Depends` or `Pre-Depends` on (every alternative).
    pub depends: Vec<String>,
}

/// How a run starts.
#[derive(Debug, Clone)]
pub enum Start {
    /// From the declarative system files of the half's packages (the base half, or a user
    /// half over a base without Debian packages).
    Declarative,
    /// Over a configured base: the half's stanzas (`Status: install ok unpacked`) are added
    /// to the base's dpkg status, and `pending` (base package → trigger names) marks the base
    /// packages whose triggers the half activates.
    OverConfigured {
        /// The half's status stanzas.
        stanzas: String,
        /// Base package name → the trigger names it must process.
        pending: BTreeMap<String, Vec<String>>,
        /// What the layer holds when the sandbox cannot run: the declarative files of both
        /// halves (the highest layer's win).
        fallback: Vec<Entry>,
    },
}

/// The configure step of one half's Debian packages (see the module documentation).
#[derive(Debug, Clone)]
pub struct ConfigureStep {
    /// The half whose packages it configures.
    pub place: StepPlace,
    /// The packages, in no particular order.
    pub packages: Vec<StepPackage>,
    /// The files the run starts from (dpkg's database for the half's packages, and for a
    /// declarative start every other system file).
    pub files: Vec<Entry>,
    /// How the run starts.
    pub start: Start,
}

impl ConfigureStep {
    /// The shell script that configures the packages.
    fn script(&self) -> String {
        let mut s = String::from(SCRIPT_HEAD);
        if matches!(self.start, Start::Declarative) {
            s.push_str(SCRIPT_FIRST);
        }
        for line in install_order(&self.packages) {
            s.push_str(&line);
            s.push('\n');
        }
        s.push_str(SCRIPT_TAIL);
        s
    }
}

/// The lines that run the packages' `preinst` scripts in dependency order, each package's
/// `Pre-Depends` (with what they depend on, in this run) configured before its `preinst`,
/// as dpkg unpacks and configures.
fn install_order(packages: &[StepPackage]) -> Vec<String> {
    let by_name: BTreeMap<&str, &StepPackage> =
        packages.iter().map(|p| (p.name.as_str(), p)).collect();
    // Dependencies first, depth first in name order; a cycle is broken where it closes.
    fn visit<'a>(
        name: &'a str,
        by_name: &BTreeMap<&'a str, &'a StepPackage>,
        seen: &mut std::collections::BTreeSet<&'a str>,
        order: &mut Vec<&'a str>,
    ) {
        if !seen.insert(name) {
            return;
        }
        if let Some(p) = by_name.get(name) {
            for d in &p.depends {
                if by_name.contains_key(d.as_str()) {
                    visit(d, by_name, seen, order);
                }
            }
            order.push(name);
        }
    }
    let mut order = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for name in by_name.keys() {
        visit(name, &by_name, &mut seen, &mut order);
    }
    let mut lines = Vec::new();
    let mut preinst_done = std::collections::BTreeSet::new();
    let mut configured = std::collections::BTreeSet::new();
    for name in order.iter().copied() {
        let p = by_name[name];
        // What must be configured first: the Pre-Depends and everything they depend on in
        // this run that is not configured yet.
        let mut closure = std::collections::BTreeSet::new();
        let mut todo: Vec<&str> = p
            .pre_depends
            .iter()
            .map(String::as_str)
            .filter(|d| *d != name && by_name.contains_key(d))
            .collect();
        while let Some(d) = todo.pop() {
            if configured.contains(d) || !closure.insert(d) {
                continue;
            }
            todo.extend(
                by_name[d]
                    .depends
                    .iter()
                    .map(String::as_str)
                    .filter(|x| by_name.contains_key(x)),
            );
        }
        closure.remove(name);
        if !closure.is_empty() {
            // Their own preinst first (dependency order puts them earlier; a cycle may not).
            for d in order.iter().copied().filter(|d| closure.contains(d)) {
                if preinst_done.insert(d) && by_name[d].preinst {
                    lines.push(format!("preinst {}", by_name[d].info));
                }
            }
            let names: Vec<&str> = order
                .iter()
                .copied()
                .filter(|d| closure.contains(d))
                .map(|d| by_name[d].info.as_str())
                .collect();
            lines.push(format!("dpkg --configure {}", names.join(" ")));
            configured.extend(closure);
        }
        if preinst_done.insert(name) && p.preinst {
            lines.push(format!("preinst {}", p.info));
        }
    }
    lines
}

impl PostLayerStep for ConfigureStep {
    fn name(&self) -> &'static str {
        match self.place {
            StepPlace::Base => BASE_PART,
            _ => USER_PART,
        }
    }

    fn place(&self) -> StepPlace {
        self.place
    }

    fn reserves_layer(&self) -> bool {
        true
    }

    fn phase(&self) -> &'static str {
        match self.place {
            StepPlace::Base => "configuring the base half's Debian packages",
            _ => "configuring the user half's Debian packages",
        }
    }

    fn key(&self, ctx: &StepContext<'_>) -> Option<String> {
        let sde = ctx.source_date_epoch.to_string();
        let files = format!(
            "{:?}",
            strata_fstree::Tree::from_entries(self.files.clone())
        );
        let start = match &self.start {
            Start::Declarative => String::new(),
            Start::OverConfigured {
                stanzas, pending, ..
            } => format!("{stanzas}\n{pending:?}"),
        };
        Some(hash_parts(
            [
                CONFIGURE_FORMAT.as_bytes(),
                IN_CHROOT.as_bytes(),
                sde.as_bytes(),
                ctx.architecture.as_bytes(),
                self.script().as_bytes(),
                files.as_bytes(),
                start.as_bytes(),
            ]
            .into_iter()
            .chain(ctx.below.iter().map(|l| l.diff_id.as_bytes())),
        ))
    }

    fn run(&self, ctx: &StepContext<'_>, key: &str) -> Result<Option<StepLayer>, StepError> {
        configure(self, ctx, key).map_err(|e| StepError(Box::new(e)))
    }
}

/// Where a run keeps the unpacked image and the scripts' changes; removed when dropped.
struct Scratch {
    ids: IdMapping,
    /// The root file system the scripts run in (the top of it, when `lower` is set).
    rootfs: PathBuf,
    /// A kept, read-only unpacked image below `rootfs` (never removed here).
    lower: Option<PathBuf>,
    work: PathBuf,
    /// `rootfs` is in [`strata_sandbox::rootfs_build_dir`]: it becomes the kept configured
    /// base once the layer is written (the base half's run).
    keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = remove_tree(&self.ids, &self.work);
        let _ = remove_tree(&self.ids, &self.rootfs);
    }
}

/// Writes the starting files as an uncompressed layer blob in the store (so unpacking gives
/// them their owners, as it does the image's layers).
fn files_blob(store: &Store, files: &[Entry], sde: i64) -> Result<LayerFile, ConfigureError> {
    let tree = strata_fstree::Tree::from_entries(files.to_vec());
    let entries: Vec<&Entry> = tree.entries().iter().collect();
    let temp = store.temp_file().map_err(ConfigureError::Store)?;
    let digests = {
        let out = io::BufWriter::new(temp.as_file());
        let opts = strata_oci::layer::LayerOptions {
            compression: Compression::None,
            threads: 1,
            source_date_epoch: sde,
        };
        strata_oci::layer::write_layer(&entries, &opts, out).map_err(ConfigureError::Files)?
    };
    store
        .commit_blob(temp, &digests.digest)
        .map_err(ConfigureError::Store)?;
    Ok(LayerFile {
        path: store
            .blob_path(&digests.digest)
            .map_err(ConfigureError::Store)?,
        compression: Compression::None,
    })
}

/// Unpacks the image below with the starting files, runs the scripts and collects their
/// changes over the starting files.
fn configure(
    step: &ConfigureStep,
    ctx: &StepContext<'_>,
    key: &str,
) -> Result<Option<StepLayer>, ConfigureError> {
    let store = ctx.store;
    let ids = IdMapping::detect();
    let mut blobs: Vec<LayerFile> = ctx
        .below
        .iter()
        .map(|l| LayerFile {
            path: l.blob.clone(),
            compression: l.compression,
        })
        .collect();
    let files = files_blob(store, &step.files, ctx.source_date_epoch)?;
    let pid = std::process::id();
    let scratch = match over_configured_base(step, ctx, key, &blobs, &files, &ids)? {
        Some(scratch) => scratch,
        None => {
            blobs.push(files);
            // The base half's run leaves the configured base for the user half's runs.
            let keep = step.place == StepPlace::Base && !unpack_all_forced();
            unpack_all(ctx, key, &blobs, &ids, pid, keep)?
        }
    };
    if let Start::OverConfigured {
        stanzas, pending, ..
    } = &step.start
    {
        let status = scratch.rootfs.join("var/lib/dpkg/status");
        let from = match &scratch.lower {
            Some(lower) if fs::symlink_metadata(&status).is_err() => {
                lower.join("var/lib/dpkg/status")
            }
            _ => status.clone(),
        };
        let old = fs::read_to_string(&from).map_err(io_err("read", &from))?;
        // A new file (never one shared with the kept base below).
        let _ = fs::remove_file(&status);
        fs::write(&status, merged_status(&old, stanzas, pending))
            .map_err(io_err("write", &status))?;
    }
    let script = step.script();
    let progress = Progress {
        reporter: ctx.reporter,
        packages: step.packages.len() as u64,
    };
    match run_scripts(store, ctx.source_date_epoch, &scratch, &script, &progress)? {
        Some(changes) => {
            let entries = over_files(&step.files, changes);
            let written = scratch
                .keep
                .then(|| keep_configured_base(ctx, &scratch, &ids));
            Ok(Some(StepLayer {
                entries,
                scratch: Box::new(scratch),
                written,
                cache: true,
            }))
        }
        None => {
            let entries = match &step.start {
                Start::Declarative => step.files.clone(),
                Start::OverConfigured { fallback, .. } => fallback.clone(),
            };
            Ok(Some(StepLayer {
                entries,
                scratch: Box::new(()),
                written: None,
                cache: false,
            }))
        }
    }
}

/// Whether `STRATA_CONFIGURE_UNPACK_ALL=1` asks for the old way: every run unpacks the whole
/// image below into scratch space, no configured base is kept (for comparing; the layers are
/// the same).
fn unpack_all_forced() -> bool {
    std::env::var_os("STRATA_CONFIGURE_UNPACK_ALL").is_some_and(|v| v == "1")
}

/// The key of the configured base kept in the store: the diff ids of its layers, the base
/// configure layer last.
fn configured_base_key<'a>(diff_ids: impl Iterator<Item = &'a strata_oci::Digest>) -> String {
    // The sandbox's name for those layers: an image above them (a VM disk, `strata run`)
    // starts from the kept base too.
    strata_sandbox::layers_key(diff_ids.map(|d| d.as_str()))
}

/// What the base half's run does once its layer is written: the layer is unpacked over the
/// run's root file system, which is then kept as the configured base (renamed, not copied), so
/// the first user half over this base unpacks only its own packages. Best effort: on failure
/// the user half unpacks the base itself.
fn keep_configured_base(
    ctx: &StepContext<'_>,
    scratch: &Scratch,
    ids: &IdMapping,
) -> strata_source::LayerWritten {
    let below: Vec<strata_oci::Digest> = ctx.below.iter().map(|l| l.diff_id.clone()).collect();
    let (store, built, ids) = (ctx.store.clone(), scratch.rootfs.clone(), ids.clone());
    Box::new(move |blob: &Path, diff_id: &strata_oci::Digest| {
        let key = configured_base_key(below.iter().chain([diff_id]));
        let layer = LayerFile {
            path: blob.to_owned(),
            compression: Compression::None,
        };
        if let Err(e) = strata_sandbox::keep_rootfs(&store, &key, &built, &[layer], &ids) {
            eprintln!(
                "strata: note: the configured base was not kept ({}); the first user half \
                 over it unpacks it",
                error_chain(&e)
            );
        }
    })
}

/// Unpacks the whole image below and the starting files into one scratch root file system:
/// in memory when there is room, else in the store. With `keep`, the root file system goes
/// beside the kept ones in the store (only the scripts' changes to memory), to be kept.
fn unpack_all(
    ctx: &StepContext<'_>,
    key: &str,
    blobs: &[LayerFile],
    ids: &IdMapping,
    pid: u32,
    keep: bool,
) -> Result<Scratch, ConfigureError> {
    let store = ctx.store;
    let image_bytes: u64 = ctx.below.iter().map(|l| l.uncompressed_size).sum();
    if keep {
        let rootfs = strata_sandbox::rootfs_build_dir(store, &format!("{pid}-{}", &key[..16]))
            .map_err(|e| sandbox_err("unpacking the image", e))?;
        if fs::symlink_metadata(&rootfs).is_ok() {
            remove_tree(ids, &rootfs).map_err(|e| sandbox_err("clearing an old run", e))?;
        }
        // The scripts' changes (and dpkg's fsyncs) in memory when there is room.
        let work = match strata_sandbox::memory_scratch(ids, image_bytes / 2 + (512 << 20)) {
            Some(mem) => mem.join(format!("{pid}-configure-{}", &key[..16])),
            None => store
                .root()
                .join("tmp")
                .join(format!("configure-{pid}-{}", &key[..16])),
        };
        let scratch = Scratch {
            ids: ids.clone(),
            rootfs,
            lower: None,
            work,
            keep: true,
        };
        unpack_rootfs(&scratch.rootfs, blobs, ids)
            .map_err(|source| sandbox_err("unpacking the image", source))?;
        return Ok(scratch);
    }
    // The unpacked image and the scripts' changes are thrown away after this step: they go
    // to memory when there is room, where file creation and dpkg's fsyncs cost next to nothing.
    Ok(
        match strata_sandbox::memory_scratch(ids, image_bytes * 2 + (512 << 20)) {
            Some(mem) => {
                let rootfs = mem.join(format!("{pid}-rootfs-{}", &key[..16]));
                if fs::symlink_metadata(&rootfs).is_ok() {
                    remove_tree(ids, &rootfs).map_err(|e| sandbox_err("clearing an old run", e))?;
                }
                let work = mem.join(format!("{pid}-configure-{}", &key[..16]));
                let scratch = Scratch {
                    ids: ids.clone(),
                    rootfs,
                    lower: None,
                    work,
                    keep: false,
                };
                unpack_rootfs(&scratch.rootfs, blobs, ids)
                    .map_err(|source| sandbox_err("unpacking the image", source))?;
                scratch
            }
            None => {
                let rootfs_key = format!("configure-{}", &key[..32]);
                let rootfs = prepare_rootfs(store, &rootfs_key, blobs, ids)
                    .map_err(|source| sandbox_err("unpacking the image", source))?;
                let work = store
                    .root()
                    .join("tmp")
                    .join(format!("configure-{pid}-{}", &key[..16]));
                Scratch {
                    ids: ids.clone(),
                    rootfs,
                    lower: None,
                    work,
                    keep: false,
                }
            }
        },
    )
}

/// For the user half over a configured base: the base (every layer up to the base configure
/// layer) unpacked once and kept in the store, keyed by its diff ids, and only the user
/// half's package layers and starting files unpacked for this run, stacked above it. So a
/// per-user change unpacks a few packages, not the whole image. `None` when the step is not
/// over a configured base or the user layers cannot be stacked (see
/// [`strata_sandbox::unpack_over`]); the caller unpacks everything then.
fn over_configured_base(
    step: &ConfigureStep,
    ctx: &StepContext<'_>,
    key: &str,
    blobs: &[LayerFile],
    files: &LayerFile,
    ids: &IdMapping,
) -> Result<Option<Scratch>, ConfigureError> {
    // STRATA_CONFIGURE_UNPACK_ALL=1 unpacks the whole image instead (for comparing the two
    // ways; they give the same layer).
    if !matches!(step.start, Start::OverConfigured { .. }) || unpack_all_forced() {
        return Ok(None);
    }
    let Some(split) = ctx.below.iter().rposition(|l| l.from_step).map(|i| i + 1) else {
        return Ok(None);
    };
    let store = ctx.store;
    let base_key = configured_base_key(ctx.below[..split].iter().map(|l| &l.diff_id));
    let base = prepare_rootfs(store, &base_key, &blobs[..split], ids)
        .map_err(|source| sandbox_err("unpacking the configured base", source))?;
    let mut top_blobs = blobs[split..].to_vec();
    top_blobs.push(files.clone());
    let top_bytes: u64 = ctx.below[split..].iter().map(|l| l.uncompressed_size).sum();
    let pid = std::process::id();
    let (rootfs, work) = match strata_sandbox::memory_scratch(ids, top_bytes * 2 + (512 << 20)) {
        Some(mem) => (
            mem.join(format!("{pid}-top-{}", &key[..16])),
            mem.join(format!("{pid}-configure-{}", &key[..16])),
        ),
        None => {
            let tmp = store.root().join("tmp");
            (
                tmp.join(format!("top-{pid}-{}", &key[..16])),
                tmp.join(format!("configure-{pid}-{}", &key[..16])),
            )
        }
    };
    if fs::symlink_metadata(&rootfs).is_ok() {
        remove_tree(ids, &rootfs).map_err(|e| sandbox_err("clearing an old run", e))?;
    }
    match strata_sandbox::unpack_over(&rootfs, &base, &top_blobs, ids) {
        Ok(true) => Ok(Some(Scratch {
            ids: ids.clone(),
            rootfs,
            lower: Some(base),
            work,
            keep: false,
        })),
        // Not stackable, or it failed: the whole unpack says why if it fails too.
        Ok(false) | Err(_) => Ok(None),
    }
}

/// The base's dpkg status with the half's stanzas added and the base packages whose
/// triggers the half activates marked `triggers-pending`.
fn merged_status(old: &str, stanzas: &str, pending: &BTreeMap<String, Vec<String>>) -> String {
    let mut out = String::new();
    for stanza in old.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let name = stanza
            .lines()
            .find_map(|l| l.strip_prefix("Package:"))
            .map(str::trim);
        let installed = stanza.lines().any(|l| l == "Status: install ok installed");
        match name.and_then(|n| pending.get(n)) {
            Some(triggers) if installed => {
                for line in stanza.lines() {
                    if line == "Status: install ok installed" {
                        out.push_str("Status: install ok triggers-pending\n");
                    } else {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
                out.push_str(&format!("Triggers-Pending: {}\n", triggers.join(" ")));
            }
            _ => {
                out.push_str(stanza.trim_end_matches('\n'));
                out.push('\n');
            }
        }
        out.push('\n');
    }
    out.push_str(stanzas);
    out
}

/// The starting files with the run's changes applied: changed and new files replace them,
/// deletions drop them (and hide what lies below), opaque directories drop what they held.
fn over_files(files: &[Entry], changes: Vec<Entry>) -> Vec<Entry> {
    let mut by_path: BTreeMap<String, Entry> = files
        .iter()
        .map(|e| (e.path.as_str().to_owned(), e.clone()))
        .collect();
    let under = |p: &str, dir: &str| {
        dir.is_empty() || p.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
    };
    // What the run removed from the starting files first, then everything it left.
    for e in &changes {
        let name = e.path.file_name();
        let parent = e
            .path
            .parent()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        match whiteout::parse(name) {
            Some(whiteout::Whiteout::Opaque) => by_path.retain(|p, _| !under(p, &parent)),
            Some(whiteout::Whiteout::Remove(gone)) => {
                let target = if parent.is_empty() {
                    gone.to_owned()
                } else {
                    format!("{parent}/{gone}")
                };
                by_path.retain(|p, _| p != &target && !under(p, &target));
            }
            None => {}
        }
    }
    for e in changes {
        by_path.insert(e.path.as_str().to_owned(), e);
    }
    by_path.into_values().collect()
}

fn sandbox_err(context: &str, source: SandboxError) -> ConfigureError {
    ConfigureError::Sandbox {
        context: context.to_owned(),
        source,
    }
}

/// Runs `script` over the scratch root file system (changes kept in its work directory)
/// and returns the layer's entries. `Ok(None)` when the sandbox is not usable on this machine.
fn run_scripts(
    store: &Store,
    source_date_epoch: i64,
    scratch: &Scratch,
    script: &str,
    progress: &Progress<'_>,
) -> Result<Option<Vec<Entry>>, ConfigureError> {
    let (ids, rootfs, work) = (&scratch.ids, &scratch.rootfs, &scratch.work);
    if fs::symlink_metadata(work).is_ok() {
        remove_tree(ids, work).map_err(|e| sandbox_err("clearing an old run", e))?;
    }
    fs::create_dir_all(work).map_err(io_err("create", work))?;
    let tmp = store.root().join("tmp");
    let mut lowers = vec![rootfs.to_owned()];
    lowers.extend(scratch.lower.clone());
    let mut sandbox = Sandbox::new(lowers, tmp);
    sandbox.ids = ids.clone();
    sandbox.keep_changes = Some(work.to_owned());
    let log_path = work.join("configure.log");
    let log = fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&log_path)
        .map_err(io_err("create", &log_path))?;
    let dup = log.try_clone().map_err(io_err("open", &log_path))?;
    let err = log.try_clone().map_err(io_err("open", &log_path))?;
    let watched = fs::File::open(&log_path).map_err(io_err("open", &log_path))?;
    let done = std::sync::atomic::AtomicBool::new(false);
    let status = std::thread::scope(|scope| {
        scope.spawn(|| progress.follow(watched, &done));
        let status = sandbox.run(Command {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("{IN_CHROOT}{script}"),
            ],
            env: script_env(source_date_epoch),
            user: User::root(),
            workdir: "/".into(),
            tty: false,
            stdin: Stdio::Null,
            stdout: Stdio::Fd(dup.into()),
            stderr: Stdio::Fd(err.into()),
        });
        done.store(true, std::sync::atomic::Ordering::Release);
        status
    });
    let status = match status {
        Ok(s) => s,
        Err(
            e @ (SandboxError::NoUserNamespaces(_)
            | SandboxError::Setup(_)
            | SandboxError::Sys { .. }
            | SandboxError::IdMap(_)),
        ) => {
            eprintln!(
                "strata: note: the Debian maintainer scripts were not run ({}); the image holds \
                 the declarative system files instead",
                error_chain(&e)
            );
            return Ok(None);
        }
        Err(e) => return Err(sandbox_err("running dpkg in the image", e)),
    };
    if status.code() != 0 {
        return Err(ConfigureError::Scripts {
            status: status.code(),
            tail: tail(log, 40),
        });
    }
    let upper = work.join("upper");
    let changes = scan_upper(&upper).map_err(|e| sandbox_err("reading the changes", e))?;
    layer_entries(&upper, &changes, ids).map(Some)
}

/// Progress of a configure run: a package counts once dpkg prints `Setting up NAME`.
struct Progress<'a> {
    reporter: &'a dyn strata_source::Reporter,
    packages: u64,
}

impl Progress<'_> {
    /// Reads the run's log as it grows until `done`, reporting each package set up.
    fn follow(&self, mut log: fs::File, done: &std::sync::atomic::AtomicBool) {
        self.reporter
            .items_started("packages configured", self.packages);
        let mut pending = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            // Read what is there before looking at `done`, so the last lines count too.
            let finished = done.load(std::sync::atomic::Ordering::Acquire);
            match log.read(&mut buf) {
                Ok(n) if n > 0 => {
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        let line = String::from_utf8_lossy(&line);
                        if let Some(rest) = line.strip_prefix("Setting up ") {
                            let name = rest.split([' ', ':']).next().unwrap_or_default();
                            self.reporter.item_done(name);
                        }
                    }
                }
                _ if finished => return,
                _ => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    }
}

/// The environment of the scripts.
fn script_env(source_date_epoch: i64) -> Vec<String> {
    vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "HOME=/root".into(),
        "LC_ALL=C.UTF-8".into(),
        "DEBIAN_FRONTEND=noninteractive".into(),
        "DEBCONF_NONINTERACTIVE_SEEN=true".into(),
        format!("SOURCE_DATE_EPOCH={source_date_epoch}"),
    ]
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The last `n` lines of the log.
fn tail(mut log: fs::File, n: usize) -> String {
    let mut text = String::new();
    let _ = log.seek(SeekFrom::Start(0));
    let _ = log.read_to_string(&mut text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether a changed path differs from run to run by nature (or is the step's own), so it is
/// left out of the layer.
fn is_noise(path: &str) -> bool {
    const EXACT: [&str; 8] = [
        "etc/machine-id",
        "var/lib/dbus/machine-id",
        "usr/sbin/policy-rc.d",
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/cache/ldconfig/aux-cache",
        "var/lib/dpkg/triggers/Lock",
        "var/lib/dpkg/lock-frontend",
    ];
    if EXACT.contains(&path) {
        return true;
    }
    let under = |dir: &str| path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
    if under("var/log/apt") || under("tmp") || under("var/tmp") || under("run") {
        return true;
    }
    // SSH host keys (openssh-server's postinst runs `ssh-keygen -A`) are random and secret:
    // every container generates its own at first start, never one baked into the image.
    if let Some(name) = path.strip_prefix("etc/ssh/")
        && name.starts_with("ssh_host_")
        && (name.ends_with("_key") || name.ends_with("_key.pub"))
    {
        return true;
    }
    (path.starts_with("var/cache/debconf/") || path.starts_with("var/lib/dpkg/"))
        && path.ends_with("-old")
}

/// Maps an id of the host (as the upper directory's files are owned) back to the image's.
fn inside_id(ranges: &[strata_sandbox::IdRange], id: u32) -> u32 {
    ranges
        .iter()
        .find(|r| id >= r.outside && id - r.outside < r.count)
        .map_or(id, |r| r.inside + (id - r.outside))
}

fn image_path(rel: &Path) -> Result<ImagePath, ConfigureError> {
    let s = rel.to_string_lossy();
    ImagePath::new(&s).map_err(|e| ConfigureError::Path {
        path: s.into_owned(),
        message: e.to_string(),
    })
}

/// The layer's entries for the run's changes.
fn layer_entries(
    upper: &Path,
    changes: &[Change],
    ids: &IdMapping,
) -> Result<Vec<Entry>, ConfigureError> {
    let mut out = Vec::new();
    for change in changes {
        match change {
            Change::Upsert(rel) => {
                let rel_str = rel.to_string_lossy();
                if is_noise(&rel_str) {
                    continue;
                }
                let host = upper.join(rel);
                let meta = fs::symlink_metadata(&host).map_err(io_err("stat", &host))?;
                let ft = meta.file_type();
                let kind = if ft.is_dir() {
                    EntryKind::Directory
                } else if ft.is_symlink() {
                    let target = fs::read_link(&host).map_err(io_err("read", &host))?;
                    EntryKind::Symlink {
                        target: target.to_string_lossy().into_owned(),
                    }
                } else if ft.is_file() {
                    EntryKind::File {
                        content: Content::Host(host.clone()),
                        size: meta.len(),
                    }
                } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                    continue; // devices come from the runtime
                } else {
                    continue; // sockets
                };
                let mut xattrs = BTreeMap::new();
                if let Ok(Some(cap)) = xattr::get(&host, "security.capability") {
                    xattrs.insert("security.capability".to_owned(), cap);
                }
                out.push(Entry {
                    path: image_path(rel)?,
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: inside_id(&ids.uids, meta.uid()),
                    gid: inside_id(&ids.gids, meta.gid()),
                    mtime: meta.mtime(),
                    xattrs,
                });
            }
            Change::Delete(rel) => {
                if is_noise(&rel.to_string_lossy()) {
                    continue;
                }
                let name = rel.file_name().map(|n| n.to_string_lossy().into_owned());
                let Some(name) = name else { continue };
                let wh = rel.with_file_name(whiteout::name_for(&name));
                out.push(Entry::inline_file(image_path(&wh)?, 0o644, Vec::new()));
            }
            Change::Opaque(rel) => {
                out.push(Entry::inline_file(
                    image_path(&rel.join(whiteout::OPAQUE))?,
                    0o644,
                    Vec::new(),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Seen {
        started: std::sync::Mutex<Vec<(String, u64)>>,
        done: std::sync::Mutex<Vec<String>>,
    }

    impl strata_source::Reporter for Seen {
        fn items_started(&self, what: &str, total: u64) {
            self.started
                .lock()
                .expect("lock")
                .push((what.to_owned(), total));
        }
        fn item_done(&self, item: &str) {
            self.done.lock().expect("lock").push(item.to_owned());
        }
    }

    #[test]
    fn configure_progress_counts_each_package_dpkg_sets_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("configure.log");
        fs::write(
            &path,
            "strata: base-files preinst install\nSetting up base-files (12.4) ...\n\
             noise\nSetting up libc6:amd64 (2.36-9) ...\nSetting up tail-without-newline",
        )
        .expect("write log");
        let seen = Seen::default();
        let progress = Progress {
            reporter: &seen,
            packages: 2,
        };
        let done = std::sync::atomic::AtomicBool::new(true);
        progress.follow(fs::File::open(&path).expect("open"), &done);
        assert_eq!(
            *seen.started.lock().expect("lock"),
            [("packages configured".to_owned(), 2)]
        );
        assert_eq!(*seen.done.lock().expect("lock"), ["base-files", "libc6"]);
    }

    /// The scripts see `ischroot` succeed (a chroot), whatever the sandbox's PID 1 is.
    #[test]
    fn scripts_are_told_they_run_in_a_chroot() {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "{IN_CHROOT}command -v ischroot; ischroot; echo rc=$?; command -v sync; \
                 rm -r /tmp/.strata-bin"
            ))
            .output()
            .expect("run sh");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/tmp/.strata-bin/ischroot\nrc=0\n/tmp/.strata-bin/sync\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pkg(name: &str, pre: &[&str], deps: &[&str], preinst: bool) -> StepPackage {
        let mut depends: Vec<String> = deps.iter().chain(pre).map(|s| s.to_string()).collect();
        depends.sort();
        StepPackage {
            name: name.into(),
            info: name.into(),
            preinst,
            pre_depends: pre.iter().map(|s| s.to_string()).collect(),
            depends,
        }
    }

    /// Dependencies' preinst first; a Pre-Depends (and what it depends on) is configured before
    /// the preinst of the package that pre-depends on it, not alphabetically.
    #[test]
    fn preinst_runs_in_dependency_order_after_its_pre_depends_are_configured() {
        let lines = install_order(&[
            pkg("a", &["b"], &[], true),
            pkg("b", &[], &["c"], true),
            pkg("c", &[], &["b"], false),
            pkg("d", &[], &["a"], true),
        ]);
        assert_eq!(
            lines,
            [
                "preinst b",
                "dpkg --configure c b",
                "preinst a",
                "preinst d"
            ]
        );
    }

    #[test]
    fn relations_keep_every_alternative_without_versions() {
        let control = "Package: x\nPre-Depends: libc6 (>= 2.36), dpkg:any\nDepends: a | b (<< 2),\n c [amd64]\nDescription: d\n";
        assert_eq!(relation_names(control, "Pre-Depends"), ["dpkg", "libc6"]);
        assert_eq!(relation_names(control, "Depends"), ["a", "b", "c"]);
    }

    #[test]
    fn the_user_half_joins_the_configured_status_and_marks_pending_triggers() {
        let old = "Package: man-db\nStatus: install ok installed\nVersion: 1\n\nPackage: bash\nStatus: install ok installed\n\n";
        let pending: BTreeMap<String, Vec<String>> =
            [("man-db".to_owned(), vec!["/usr/share/man".to_owned()])].into();
        let merged = merged_status(
            old,
            "Package: jq\nStatus: install ok unpacked\n\n",
            &pending,
        );
        assert_eq!(
            merged,
            "Package: man-db\nStatus: install ok triggers-pending\nVersion: 1\n\
             Triggers-Pending: /usr/share/man\n\nPackage: bash\nStatus: install ok installed\n\n\
             Package: jq\nStatus: install ok unpacked\n\n"
        );
    }

    #[test]
    fn changes_replace_and_remove_starting_files() {
        let p = |s: &str| ImagePath::new(s).expect("path");
        let files = vec![
            Entry::inline_file(p("etc/a"), 0o644, b"a".to_vec()),
            Entry::inline_file(p("etc/b"), 0o644, b"b".to_vec()),
            Entry::directory(p("etc/d"), 0o755),
            Entry::inline_file(p("etc/d/x"), 0o644, b"x".to_vec()),
        ];
        let changes = vec![
            Entry::inline_file(p("etc/a"), 0o644, b"A".to_vec()),
            Entry::inline_file(p("etc/.wh.b"), 0o644, Vec::new()),
            Entry::directory(p("etc/d"), 0o700),
            Entry::inline_file(p("etc/d/y"), 0o644, b"y".to_vec()),
            Entry::inline_file(p("etc/d/.wh..wh..opq"), 0o644, Vec::new()),
        ];
        let out = over_files(&files, changes);
        let paths: Vec<&str> = out.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "etc/.wh.b",
                "etc/a",
                "etc/d",
                "etc/d/.wh..wh..opq",
                "etc/d/y"
            ]
        );
        assert!(
            matches!(&out[1].kind, EntryKind::File { content: Content::Inline(b), .. } if &b[..] == b"A")
        );
    }

    #[test]
    fn noise_is_left_out() {
        for p in [
            "var/log/dpkg.log",
            "var/log/apt/history.log",
            "var/cache/debconf/config.dat-old",
            "var/lib/dpkg/status-old",
            "etc/machine-id",
            "usr/sbin/policy-rc.d",
            "var/cache/ldconfig/aux-cache",
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_rsa_key.pub",
        ] {
            assert!(is_noise(p), "{p}");
        }
        for p in [
            "etc/ssh/sshd_config",
            "etc/ssh/ssh_host_keys_readme",
            "var/log",
            "var/lib/dpkg/status",
            "etc/alternatives/awk",
            "etc/ld.so.cache",
            "var/cache/debconf/config.dat",
        ] {
            assert!(!is_noise(p), "{p}");
        }
    }

    #[test]
    fn whiteouts_and_opaque_directories_become_oci_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let up = dir.path();
        fs::create_dir_all(up.join("etc/alternatives")).expect("mkdir");
        fs::write(up.join("etc/alternatives/awk"), "x").expect("write");
        fs::write(up.join("etc/.wh.gone"), "").expect("write");
        fs::create_dir_all(up.join("var/log")).expect("mkdir");
        fs::write(up.join("var/log/dpkg.log"), "noise").expect("write");
        let changes = scan_upper(up).expect("scan");
        let ids = IdMapping::plan(0, 0, None, None, None);
        let entries = layer_entries(up, &changes, &ids).expect("entries");
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"etc/alternatives/awk"), "{paths:?}");
        assert!(paths.contains(&"etc/.wh.gone"), "{paths:?}");
        assert!(!paths.contains(&"var/log/dpkg.log"), "{paths:?}");
        assert!(paths.contains(&"var/log"), "{paths:?}");
    }

    #[test]
    fn ids_map_back_into_the_image() {
        let ranges = [
            strata_sandbox::IdRange {
                inside: 0,
                outside: 1000,
                count: 1,
            },
            strata_sandbox::IdRange {
                inside: 1,
                outside: 100_000,
                count: 65_536,
            },
        ];
        assert_eq!(inside_id(&ranges, 1000), 0);
        assert_eq!(inside_id(&ranges, 100_000 + 41), 42);
    }
}
