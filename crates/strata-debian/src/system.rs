//! The generated files that make extracted packages a Debian system tools recognise, without
//! running maintainer scripts: dpkg's database (`/var/lib/dpkg/status`, `info/PKG.list`,
//! `.md5sums`, `.conffiles`), the account files from base-passwd's master files, `/bin/sh`,
//! the CA bundle (as `update-ca-certificates` makes it), the `update-alternatives` links the
//! packages' `postinst` scripts declare, apt's sources, `/etc/machine-id` and `/tmp`.
//!
//! Paths are written in the merged-/usr layout (`usr/bin/sh`, not `bin/sh`).

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use strata_fstree::{Entry, EntryKind, ImagePath};

use crate::source::SourceFailure;
use crate::{Package, Request, merged_usr};

/// Where base-passwd keeps the files `/etc/passwd` and `/etc/group` start from.
const PASSWD_MASTER: &str = "usr/share/base-passwd/passwd.master";
const GROUP_MASTER: &str = "usr/share/base-passwd/group.master";
/// Certificates `update-ca-certificates` bundles.
const CA_DIR: &str = "usr/share/ca-certificates/";
/// The CA bundle.
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
/// The control members dpkg keeps in `/var/lib/dpkg/info/PKG.MEMBER` (the maintainer
/// scripts among them, which a configure step runs and `apt-get remove` needs).
const INFO_MEMBERS: [&str; 11] = [
    "md5sums",
    "conffiles",
    "preinst",
    "postinst",
    "prerm",
    "postrm",
    "config",
    "templates",
    "triggers",
    "shlibs",
    "symbols",
];
/// The executable ones among [`INFO_MEMBERS`].
const SCRIPTS: [&str; 5] = ["preinst", "postinst", "prerm", "postrm", "config"];
/// Group id of `shadow` in base-passwd.
const SHADOW_GID: u32 = 42;

/// Accounts when base-passwd is not installed.
const FALLBACK_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                               nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const FALLBACK_GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// Every path of the packages' trees (merged-/usr, no leading `/`), the last package wins.
struct Files<'a> {
    by_path: BTreeMap<&'a str, (&'a Package, &'a Entry)>,
}

impl<'a> Files<'a> {
    fn new(packages: &[&'a Package]) -> Self {
        let mut by_path = BTreeMap::new();
        for p in packages {
            for e in p.tree.entries() {
                by_path.insert(e.path.as_str(), (*p, e));
            }
        }
        Self { by_path }
    }

    /// Whether an absolute or relative image path exists (after the merged-/usr mapping).
    fn exists(&self, path: &str) -> bool {
        self.by_path
            .contains_key(merged_usr(path.trim_start_matches('/')).as_str())
    }

    /// The bytes of a regular file (hard links followed), or `None` when there is none.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, SourceFailure> {
        let key = merged_usr(path.trim_start_matches('/'));
        let Some((pkg, entry)) = self.by_path.get(key.as_str()) else {
            return Ok(None);
        };
        let mut entry: &Entry = entry;
        if let EntryKind::Hardlink { target } = &entry.kind {
            match pkg.tree.entries().iter().find(|e| e.path == *target) {
                Some(t) => entry = t,
                None => return Ok(None),
            }
        }
        match &entry.kind {
            EntryKind::File { content, size } => {
                content
                    .read(*size)
                    .map(Some)
                    .map_err(|e| SourceFailure::System {
                        file: format!("/{key} of {}", pkg.locked.name),
                        message: format!("cannot read its bytes: {e}"),
                    })
            }
            _ => Ok(None),
        }
    }
}

fn image_path(p: &str) -> Result<ImagePath, SourceFailure> {
    ImagePath::new(p.trim_start_matches('/')).map_err(|e| SourceFailure::System {
        file: p.to_owned(),
        message: e.to_string(),
    })
}

fn file(path: &str, mode: u32, bytes: impl Into<Vec<u8>>) -> Result<Entry, SourceFailure> {
    Ok(Entry::inline_file(image_path(path)?, mode, bytes.into()))
}

/// The generated entries for an image holding `packages` (both halves). `request` gives the
/// repositories written to apt's sources.
pub fn generate(
    packages: &[&Package],
    request: Option<&Request>,
) -> Result<Vec<Entry>, SourceFailure> {
    let mut sorted: Vec<&Package> = packages.to_vec();
    sorted.sort_by(|a, b| a.locked.name.cmp(&b.locked.name));
    let files = Files::new(&sorted);
    let installed = |name: &str| sorted.iter().any(|p| p.locked.name == name);
    let mut out = Vec::new();

    dpkg_database(&sorted, &files, &mut out)?;
    accounts(&files, &mut out)?;

    // /bin/sh: dash, as dash's maintainer scripts arrange (else bash).
    if !files.exists("usr/bin/sh") {
        for shell in ["dash", "bash"] {
            if installed(shell) && files.exists(&format!("usr/bin/{shell}")) {
                out.push(Entry::symlink(image_path("usr/bin/sh")?, shell));
                break;
            }
        }
    }

    if installed("ca-certificates") {
        ca_bundle(&files, &mut out)?;
    }
    alternatives(&sorted, &files, &mut out)?;
    if installed("apt")
        && let Some(req) = request
        && !files.exists("etc/apt/sources.list.d/debian.sources")
        && !files.exists("etc/apt/sources.list")
    {
        let keyring = main_keyring(req, &mut out)?;
        out.push(file(
            "etc/apt/sources.list.d/debian.sources",
            0o644,
            apt_sources(req, &files, keyring.as_deref()),
        )?);
    }
    if installed("apt")
        && let Some(req) = request
    {
        repo_sources(req, &mut out)?;
    }

    if installed("libpam-runtime") {
        pam_common(&files, &mut out)?;
    }

    out.push(file("etc/machine-id", 0o444, Vec::new())?);
    for tmp in ["tmp", "var/tmp"] {
        out.push(Entry::directory(image_path(tmp)?, 0o1777));
    }
    Ok(out)
}

/// dpkg's trigger interests of `packages`, as dpkg records them when it unpacks a package
/// with a `.triggers` file: `/var/lib/dpkg/triggers/File` (one `PATH PKG[/noawait]` line per
/// file trigger) and `/var/lib/dpkg/triggers/NAME` (one `PKG[/noawait]` line per package
/// interested in the named trigger), plus an empty `Unincorp`. Without them dpkg in the
/// image would never activate a trigger, so a later `apt-get install` of a package with a man
/// page would not reach man-db, nor a library reach ldconfig.
pub(crate) fn trigger_interests(
    packages: &[&Package],
    out: &mut Vec<Entry>,
) -> Result<(), SourceFailure> {
    let mut sorted: Vec<&Package> = packages.to_vec();
    sorted.sort_by(|a, b| a.locked.name.cmp(&b.locked.name));
    let mut file_interests = String::new();
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    for p in sorted {
        let Some(bytes) = p.control.get("triggers") else {
            continue;
        };
        let control = p.control.control().unwrap_or("");
        let who = if control
            .lines()
            .any(|l| l.eq_ignore_ascii_case("Multi-Arch: same"))
        {
            format!("{}:{}", p.locked.name, p.locked.architecture)
        } else {
            p.locked.name.clone()
        };
        for line in String::from_utf8_lossy(bytes).lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let (Some(directive), Some(name)) = (words.next(), words.next()) else {
                continue;
            };
            let suffix = match directive {
                "interest" | "interest-await" => "",
                "interest-noawait" => "/noawait",
                _ => continue,
            };
            if name.starts_with('/') {
                file_interests.push_str(&format!("{name} {who}{suffix}\n"));
            } else if !name.contains('/') && name != "File" && name != "Unincorp" && name != "Lock"
            {
                named
                    .entry(name.to_owned())
                    .or_default()
                    .push_str(&format!("{who}{suffix}\n"));
            }
        }
    }
    if !file_interests.is_empty() {
        out.push(file("var/lib/dpkg/triggers/File", 0o644, file_interests)?);
    }
    for (name, who) in named {
        out.push(file(&format!("var/lib/dpkg/triggers/{name}"), 0o644, who)?);
    }
    out.push(file("var/lib/dpkg/triggers/Unincorp", 0o644, Vec::new())?);
    Ok(())
}

/// `/var/lib/dpkg/status` and the `info` files of every package.
/// dpkg's database for `packages` alone (`status`, `info/PKG.*`), every package `installed`.
pub fn dpkg_files(packages: &[&Package]) -> Result<Vec<Entry>, SourceFailure> {
    let mut sorted: Vec<&Package> = packages.to_vec();
    sorted.sort_by(|a, b| a.locked.name.cmp(&b.locked.name));
    let files = Files::new(&sorted);
    let mut out = Vec::new();
    dpkg_database(&sorted, &files, &mut out)?;
    Ok(out)
}

fn dpkg_database(
    packages: &[&Package],
    files: &Files<'_>,
    out: &mut Vec<Entry>,
) -> Result<(), SourceFailure> {
    for dir in ["info", "updates", "triggers", "alternatives", "parts"] {
        out.push(Entry::directory(
            image_path(&format!("var/lib/dpkg/{dir}"))?,
            0o755,
        ));
    }
    let mut status = String::new();
    for p in packages {
        let name = &p.locked.name;
        let control = p.control.control().ok_or_else(|| SourceFailure::System {
            file: format!("{name} {}", p.locked.version),
            message: "the package has no readable control file".into(),
        })?;
        let mut lines = control.trim_end().lines();
        let mut multi_arch_same = false;
        if let Some(first) = lines.next() {
            status.push_str(first);
            status.push_str("\nStatus: install ok installed\n");
        }
        for line in lines {
            if line.trim().is_empty() {
                continue;
            }
            if line.eq_ignore_ascii_case("Multi-Arch: same") {
                multi_arch_same = true;
            }
            status.push_str(line);
            status.push('\n');
        }
        let conffiles = p.control.conffiles();
        if !conffiles.is_empty() {
            status.push_str("Conffiles:\n");
            for c in &conffiles {
                // `remove-on-upgrade` and other flags follow the path.
                let path = c.split_whitespace().next().unwrap_or(c);
                let hash = match files.read(path)? {
                    Some(bytes) => hex::encode(Md5::digest(&bytes)),
                    None => "newconffile".to_owned(),
                };
                status.push_str(&format!(" {path} {hash}\n"));
            }
        }
        status.push('\n');

        let base = if multi_arch_same {
            format!("{name}:{}", p.locked.architecture)
        } else {
            name.clone()
        };
        let mut list = p.paths.join("\n");
        list.push('\n');
        out.push(file(
            &format!("var/lib/dpkg/info/{base}.list"),
            0o644,
            list,
        )?);
        for member in INFO_MEMBERS {
            if let Some(bytes) = p.control.get(member) {
                let mode = if SCRIPTS.contains(&member) {
                    0o755
                } else {
                    0o644
                };
                out.push(file(
                    &format!("var/lib/dpkg/info/{base}.{member}"),
                    mode,
                    bytes.to_vec(),
                )?);
            }
        }
    }
    trigger_interests(packages, out)?;
    // The multiarch layout of `info` (`PKG:ARCH.list` for `Multi-Arch: same` packages).
    out.push(file("var/lib/dpkg/info/format", 0o644, "1\n")?);
    out.push(file("var/lib/dpkg/status", 0o644, status)?);
    out.push(file("var/lib/dpkg/available", 0o644, Vec::new())?);
    Ok(())
}

/// `/etc/passwd`, `/etc/group`, `/etc/shadow` and `/etc/gshadow` from base-passwd's master
/// files, as its postinst and `shadowconfig on` make them.
fn accounts(files: &Files<'_>, out: &mut Vec<Entry>) -> Result<(), SourceFailure> {
    let text = |path: &str, fallback: &str| -> Result<String, SourceFailure> {
        Ok(files
            .read(path)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|| fallback.to_owned()))
    };
    let passwd = text(PASSWD_MASTER, FALLBACK_PASSWD)?;
    let group = text(GROUP_MASTER, FALLBACK_GROUP)?;
    let names = |t: &str| -> Vec<String> {
        t.lines()
            .filter_map(|l| l.split(':').next())
            .filter(|n| !n.is_empty() && !n.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let shadow: String = names(&passwd)
        .iter()
        .map(|n| format!("{n}:*::0:99999:7:::\n"))
        .collect();
    let gshadow: String = names(&group).iter().map(|n| format!("{n}:*::\n")).collect();
    // Master files mark unset passwords with `*`; /etc/passwd points to the shadow file.
    let passwd: String = passwd
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(':').collect();
            if f.len() > 1 && f[1] == "*" {
                f[1] = "x";
            }
            format!("{}\n", f.join(":"))
        })
        .collect();
    let group: String = group
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(':').collect();
            if f.len() > 1 && f[1] == "*" {
                f[1] = "x";
            }
            format!("{}\n", f.join(":"))
        })
        .collect();
    out.push(file("etc/passwd", 0o644, passwd)?);
    out.push(file("etc/group", 0o644, group.clone())?);
    let shadow_gid = if group.lines().any(|l| l.starts_with("shadow:")) {
        SHADOW_GID
    } else {
        0
    };
    for (path, body) in [("etc/shadow", shadow), ("etc/gshadow", gshadow)] {
        let mut e = file(path, 0o640, body)?;
        e.gid = shadow_gid;
        out.push(e);
    }
    Ok(())
}

/// The CA bundle of every packaged certificate, in `ca-certificates.conf` order, plus the
/// `.pem` links `update-ca-certificates` makes.
fn ca_bundle(files: &Files<'_>, out: &mut Vec<Entry>) -> Result<(), SourceFailure> {
    let certs: Vec<&str> = files
        .by_path
        .iter()
        .filter(|(p, (_, e))| {
            p.starts_with(CA_DIR)
                && p.ends_with(".crt")
                && matches!(e.kind, EntryKind::File { .. } | EntryKind::Hardlink { .. })
        })
        .map(|(p, _)| *p)
        .collect();
    let mut bundle = Vec::new();
    let mut conf = String::from(
        "# Generated by strata from the packaged certificates (as update-ca-certificates).\n",
    );
    for cert in &certs {
        if let Some(bytes) = files.read(cert)? {
            bundle.extend_from_slice(&bytes);
            if !bytes.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
        let rel = &cert[CA_DIR.len()..];
        conf.push_str(rel);
        conf.push('\n');
        let pem = rel
            .rsplit('/')
            .next()
            .unwrap_or(rel)
            .replace(".crt", ".pem");
        let link = format!("etc/ssl/certs/{pem}");
        if !files.exists(&link) {
            out.push(Entry::symlink(image_path(&link)?, format!("/{cert}")));
        }
    }
    out.push(file(CA_BUNDLE, 0o644, bundle)?);
    if !files.exists("etc/ca-certificates.conf") {
        out.push(file("etc/ca-certificates.conf", 0o644, conf)?);
    }
    Ok(())
}

/// One `update-alternatives --install` of a postinst.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Alternative {
    link: String,
    name: String,
    path: String,
    priority: i64,
    /// (link, name, path) of each `--slave`.
    slaves: Vec<(String, String, String)>,
}

/// The `update-alternatives --install LINK NAME PATH PRIORITY [--slave LINK NAME PATH]...`
/// calls of a maintainer script (continuation lines joined; calls using shell variables are
/// skipped, as their values are unknown).
fn parse_alternatives(script: &str) -> Vec<Alternative> {
    let joined = script.replace("\\\n", " ");
    let mut found = Vec::new();
    for line in joined.lines() {
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '"' || c == '\''))
            .map(str::to_owned)
            .collect();
        let mut i = 0;
        while i < words.len() {
            if !words[i].ends_with("update-alternatives") {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < words.len() && words[j].starts_with("--") && words[j] != "--install" {
                j += 1;
            }
            if words.get(j).map(String::as_str) != Some("--install") || j + 4 >= words.len() {
                i = j.max(i + 1);
                continue;
            }
            let (link, name, path, prio) =
                (&words[j + 1], &words[j + 2], &words[j + 3], &words[j + 4]);
            let mut k = j + 5;
            let mut slaves = Vec::new();
            while words.get(k).map(String::as_str) == Some("--slave") && k + 3 < words.len() {
                let s = (&words[k + 1], &words[k + 2], &words[k + 3]);
                if ![s.0, s.1, s.2].iter().any(|w| w.contains('$')) {
                    slaves.push((s.0.clone(), s.1.clone(), s.2.clone()));
                }
                k += 4;
            }
            let usable = [link, name, path, prio].iter().all(|w| !w.contains('$'))
                && link.starts_with('/')
                && path.starts_with('/');
            if let (true, Ok(priority)) = (usable, prio.parse::<i64>()) {
                found.push(Alternative {
                    link: link.clone(),
                    name: name.clone(),
                    path: path.clone(),
                    priority,
                    slaves,
                });
            }
            i = k;
        }
    }
    found
}

/// The links of the best (highest priority) alternative of every name, `/etc/alternatives`
/// and update-alternatives' own records in `/var/lib/dpkg/alternatives`.
fn alternatives(
    packages: &[&Package],
    files: &Files<'_>,
    out: &mut Vec<Entry>,
) -> Result<(), SourceFailure> {
    let mut by_name: BTreeMap<String, Vec<Alternative>> = BTreeMap::new();
    for p in packages {
        let Some(script) = p.control.get("postinst") else {
            continue;
        };
        for alt in parse_alternatives(&String::from_utf8_lossy(script)) {
            if files.exists(&alt.path) {
                by_name.entry(alt.name.clone()).or_default().push(alt);
            }
        }
    }
    if by_name.is_empty() {
        return Ok(());
    }
    out.push(Entry::directory(image_path("etc/alternatives")?, 0o755));
    for (name, mut alts) in by_name {
        // Highest priority first; ties keep package order.
        alts.sort_by_key(|a| std::cmp::Reverse(a.priority));
        let best = &alts[0];
        // A real file at the link is left alone, as update-alternatives does.
        if files.exists(&best.link) {
            continue;
        }
        out.push(Entry::symlink(
            image_path(&merged_usr(best.link.trim_start_matches('/')))?,
            format!("/etc/alternatives/{name}"),
        ));
        out.push(Entry::symlink(
            image_path(&format!("etc/alternatives/{name}"))?,
            best.path.clone(),
        ));
        for (link, sname, spath) in &best.slaves {
            if files.exists(spath) && !files.exists(link) {
                out.push(Entry::symlink(
                    image_path(&merged_usr(link.trim_start_matches('/')))?,
                    format!("/etc/alternatives/{sname}"),
                ));
                out.push(Entry::symlink(
                    image_path(&format!("etc/alternatives/{sname}"))?,
                    spath.clone(),
                ));
            }
        }
        // update-alternatives' record: mode, link, slaves, then each alternative.
        let mut rec = format!("auto\n{}\n", best.link);
        for (link, sname, _) in &best.slaves {
            rec.push_str(&format!("{sname}\n{link}\n"));
        }
        rec.push('\n');
        for a in &alts {
            rec.push_str(&format!("{}\n{}\n", a.path, a.priority));
            for (_, sname, _) in &best.slaves {
                let sp = a
                    .slaves
                    .iter()
                    .find(|s| s.1 == *sname)
                    .map(|s| s.2.as_str())
                    .unwrap_or("");
                rec.push_str(sp);
                rec.push('\n');
            }
        }
        rec.push('\n');
        out.push(file(
            &format!("var/lib/dpkg/alternatives/{name}"),
            0o644,
            rec,
        )?);
    }
    Ok(())
}

/// The `/etc/pam.d/common-*` files `pam-auth-update` writes from libpam-runtime's defaults
/// (only `pam_unix`), without which sudo and su abort.
fn pam_common(files: &Files<'_>, out: &mut Vec<Entry>) -> Result<(), SourceFailure> {
    let session = "session\t[default=1]\t\t\tpam_permit.so\n\
                   session\trequisite\t\t\tpam_deny.so\n\
                   session\trequired\t\t\tpam_permit.so\n\
                   session\trequired\tpam_unix.so\n";
    let common = [
        (
            "auth",
            "auth\t[success=1 default=ignore]\tpam_unix.so nullok\n\
             auth\trequisite\t\t\tpam_deny.so\n\
             auth\trequired\t\t\tpam_permit.so\n",
        ),
        (
            "account",
            "account\t[success=1 new_authtok_reqd=done default=ignore]\tpam_unix.so\n\
             account\trequisite\t\t\tpam_deny.so\n\
             account\trequired\t\t\tpam_permit.so\n",
        ),
        (
            "password",
            "password\t[success=1 default=ignore]\tpam_unix.so obscure yescrypt\n\
             password\trequisite\t\t\tpam_deny.so\n\
             password\trequired\t\t\tpam_permit.so\n",
        ),
        ("session", session),
        ("session-noninteractive", session),
    ];
    for (name, body) in common {
        let path = format!("etc/pam.d/common-{name}");
        if !files.exists(&path) {
            let text =
                format!("# Written by strata as pam-auth-update writes it (pam_unix).\n{body}");
            out.push(file(&path, 0o644, text)?);
        }
    }
    Ok(())
}

/// Where the debconf answers of the spec are put for the configure step, which seeds them
/// with `debconf-set-selections` before the maintainer scripts run.
pub const DEBCONF_SELECTIONS: &str = "var/lib/strata/debconf.selections";

/// The file [`DEBCONF_SELECTIONS`] with `answers` (none when there are none), after checking
/// that each answers a question of an installed package's debconf templates.
pub fn debconf_selections(
    packages: &[&Package],
    answers: &[String],
) -> Result<Vec<Entry>, SourceFailure> {
    if answers.is_empty() {
        return Ok(Vec::new());
    }
    let mut questions = std::collections::BTreeSet::new();
    let mut owners = std::collections::BTreeSet::new();
    for p in packages {
        let Some(t) = p.control.get("templates") else {
            continue;
        };
        owners.insert(p.locked.name.as_str());
        for line in String::from_utf8_lossy(t).lines() {
            if let Some(q) = line.strip_prefix("Template:") {
                questions.insert(q.trim().to_owned());
            }
        }
    }
    for line in answers {
        let question = line.split_whitespace().nth(1).unwrap_or_default();
        if !questions.contains(question) {
            return Err(SourceFailure::Debconf {
                line: line.clone(),
                question: question.to_owned(),
                owners: if owners.is_empty() {
                    "none".to_owned()
                } else {
                    owners.into_iter().collect::<Vec<_>>().join(", ")
                },
            });
        }
    }
    let mut text = answers.join("\n");
    text.push('\n');
    Ok(vec![file(DEBCONF_SELECTIONS, 0o644, text)?])
}

/// `/etc/apt/sources.list.d/NAME.sources` and `/etc/apt/keyrings/NAME.{asc,gpg}` of every
/// added repository, so apt in the image reads and verifies the same archives.
pub(crate) fn repo_sources(req: &Request, out: &mut Vec<Entry>) -> Result<(), SourceFailure> {
    for r in &req.repos {
        let Some(path) = &r.keyring else { continue };
        let key = std::fs::read(path).map_err(|e| SourceFailure::System {
            file: path.display().to_string(),
            message: format!("cannot read the keyring of repository `{}`: {e}", r.name),
        })?;
        let armored = key.starts_with(b"-----BEGIN PGP");
        let key_file = format!(
            "etc/apt/keyrings/{}.{}",
            r.name,
            if armored { "asc" } else { "gpg" }
        );
        let mut text = format!(
            "Types: deb\nURIs: {}\nSuites: {}\nComponents: {}\nSigned-By: /{key_file}\n",
            r.uri,
            r.suites.join(" "),
            r.components.join(" ")
        );
        if !r.architectures.is_empty() {
            text.push_str(&format!("Architectures: {}\n", r.architectures.join(" ")));
        }
        out.push(file(&key_file, 0o644, key)?);
        out.push(file(
            &format!("etc/apt/sources.list.d/{}.sources", r.name),
            0o644,
            text,
        )?);
        if r.priority != crate::DEFAULT_PRIORITY {
            let origin = r
                .uri
                .split_once("://")
                .map_or(r.uri.as_str(), |(_, rest)| rest)
                .split(['/', ':'])
                .next()
                .unwrap_or_default()
                .to_owned();
            out.push(file(
                &format!("etc/apt/preferences.d/{}.pref", r.name),
                0o644,
                format!(
                    "Package: *\nPin: origin \"{origin}\"\nPin-Priority: {}\n",
                    r.priority
                ),
            )?);
        }
    }
    Ok(())
}

/// The spec's keyring of the main archive as `/etc/apt/keyrings/main.{asc,gpg}`; its image
/// path, or `None` when the request has no keyring file (the built-in Debian keys).
fn main_keyring(req: &Request, out: &mut Vec<Entry>) -> Result<Option<String>, SourceFailure> {
    let Some(path) = req.keyring.as_ref().filter(|p| p.is_file()) else {
        return Ok(None);
    };
    let key = std::fs::read(path).map_err(|e| SourceFailure::System {
        file: path.display().to_string(),
        message: format!("cannot read the main archive's keyring: {e}"),
    })?;
    let ext = if key.starts_with(b"-----BEGIN PGP") {
        "asc"
    } else {
        "gpg"
    };
    let key_file = format!("etc/apt/keyrings/{}.{ext}", crate::MAIN_REPO);
    out.push(file(&key_file, 0o644, key)?);
    Ok(Some(format!("/{key_file}")))
}

/// apt's sources for the request's repositories (deb822 format).
fn apt_sources(req: &Request, files: &Files<'_>, keyring: Option<&str>) -> String {
    let signed_by = match keyring {
        Some(k) => format!("Signed-By: {k}\n"),
        None if req.keyring.is_none()
            && files.exists("usr/share/keyrings/debian-archive-keyring.gpg") =>
        {
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n".to_owned()
        }
        None => String::new(),
    };
    let components = req.components.join(" ");
    let mut by_uri: Vec<(String, Vec<String>)> = Vec::new();
    for (uri, suite) in req.sources() {
        match by_uri.iter_mut().find(|(u, _)| *u == uri) {
            Some((_, suites)) => suites.push(suite),
            None => by_uri.push((uri, vec![suite])),
        }
    }
    by_uri
        .into_iter()
        .map(|(uri, suites)| {
            format!(
                "Types: deb\nURIs: {uri}\nSuites: {}\nComponents: {components}\n{signed_by}",
                suites.join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postinst_alternatives_are_parsed() {
        let script = "#!/bin/sh\nset -e\n\
            update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\\n  \
            --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz \\\n  \
            --slave /usr/bin/nawk nawk /usr/bin/mawk\n\
            update-alternatives --quiet --install /usr/bin/pager pager /bin/more 50\n\
            update-alternatives --install \"$LINK\" x /usr/bin/x 1\n\
            update-alternatives --remove foo /usr/bin/foo\n";
        let alts = parse_alternatives(script);
        assert_eq!(alts.len(), 2, "{alts:?}");
        assert_eq!(alts[0].name, "awk");
        assert_eq!(alts[0].priority, 5);
        assert_eq!(alts[0].slaves.len(), 2);
        assert_eq!(alts[0].slaves[1].0, "/usr/bin/nawk");
        assert_eq!(alts[1].link, "/usr/bin/pager");
        assert_eq!(alts[1].path, "/bin/more");
    }
}
