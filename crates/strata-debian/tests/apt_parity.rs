//! Parity with apt itself: for several package sets, strata's resolution against the real
//! bookworm mirror must pick exactly the packages (and versions) that
//! `apt-get -s install --no-install-recommends` (or `--install-recommends`) picks on an empty
//! system with the same sources.
//!
//! Intended differences, accounted for here:
//! - apt on an empty dpkg status installs no essential packages unless asked: the essential
//!   set strata adds is passed to apt explicitly.
//! - strata lays out merged /usr itself, so `usr-is-merged` satisfies `usrmerge |
//!   usr-is-merged`; apt would take `usrmerge` (and perl). `usr-is-merged` is passed to apt
//!   explicitly when strata picked it, which makes apt's or-group already satisfied.
//!
//! Skipped (with a message) when `apt-get` is not installed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use strata_debian::{NoReporter, Request, resolve};

/// Whether deb.debian.org answers; live tests are skipped (loudly) when it does not.
fn mirror_reachable() -> bool {
    use std::net::ToSocketAddrs;
    let ok = ("deb.debian.org", 80)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(10)).is_ok()
        });
    strata_test_support::require_that(
        ok,
        "deb.debian.org is not reachable (these tests use the real Debian mirror)",
    )
}

fn cache_dir() -> PathBuf {
    let d = std::env::temp_dir().join("strata-debian-test-cache");
    std::fs::create_dir_all(&d).expect("cache dir");
    d
}

struct Apt {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Apt {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let lists = cache_dir().join("apt-lists");
        for d in ["empty", "cache", "state", "etc"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::create_dir_all(lists.join("partial")).expect("mkdir lists");
        std::fs::write(root.join("state/status"), "").expect("status");
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        std::fs::write(
            root.join("etc/sources.list"),
            format!(
                "deb [signed-by={keyring}] http://deb.debian.org/debian bookworm main\n\
                 deb [signed-by={keyring}] http://deb.debian.org/debian bookworm-updates main\n\
                 deb [signed-by={keyring}] http://deb.debian.org/debian-security bookworm-security main\n"
            ),
        )
        .expect("sources");
        let r = |p: &str| root.join(p).display().to_string();
        let config = root.join("apt.conf");
        std::fs::write(
            &config,
            format!(
                "Dir::Etc::Parts \"{empty}\";\n\
                 Dir::Etc::Main \"/dev/null\";\n\
                 Dir::Etc::SourceList \"{sources}\";\n\
                 Dir::Etc::SourceParts \"{empty}\";\n\
                 Dir::Etc::Preferences \"/dev/null\";\n\
                 Dir::Etc::PreferencesParts \"{empty}\";\n\
                 Dir::Etc::TrustedParts \"{empty}\";\n\
                 Dir::State \"{state}\";\n\
                 Dir::State::status \"{status}\";\n\
                 Dir::State::Lists \"{lists}\";\n\
                 Dir::Cache \"{cache}\";\n\
                 APT::Architecture \"amd64\";\n\
                 APT::Architectures {{ \"amd64\"; }};\n\
                 Acquire::Languages \"none\";\n\
                 Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled \"false\";\n\
                 Debug::NoLocking \"true\";\n\
                 APT::Install-Recommends \"false\";\n",
                empty = r("empty"),
                sources = r("etc/sources.list"),
                state = r("state"),
                status = r("state/status"),
                lists = lists.display(),
                cache = r("cache"),
            ),
        )
        .expect("apt.conf");
        Self { dir, config }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("apt-get")
            .env("APT_CONFIG", &self.config)
            .args(args)
            .output()
            .expect("run apt-get");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "apt-get {args:?} failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// `Inst` lines of a simulated install: name → version.
    fn simulate(&self, pkgs: &[String], recommends: bool) -> BTreeMap<String, String> {
        let flag = if recommends {
            "--install-recommends"
        } else {
            "--no-install-recommends"
        };
        let mut args = vec!["-s", "-q", "install", flag];
        args.extend(pkgs.iter().map(String::as_str));
        let out = self.run(&args);
        let _ = std::fs::write(
            self.root().join("last-simulation.txt"),
            format!("{args:?}\n{out}"),
        );
        out.lines()
            .filter_map(|l| l.strip_prefix("Inst "))
            .filter_map(|l| {
                let (name, rest) = l.split_once(' ')?;
                let version = rest.strip_prefix('(')?.split_whitespace().next()?;
                let name = name.split(':').next()?;
                Some((name.to_owned(), version.to_owned()))
            })
            .collect()
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }
}

fn apt_available() -> bool {
    strata_test_support::require(&["apt-get"])
}

#[test]
fn parity_with_apt() {
    if !mirror_reachable() {
        return;
    }
    if !apt_available() {
        return;
    }
    let apt = Apt::new();
    let t = Instant::now();
    apt.run(&["-q", "update"]);
    eprintln!(
        "apt-get update in {:?} ({})",
        t.elapsed(),
        apt.root().display()
    );
    // (set, with the essential set, with Recommends)
    let sets: &[(&[&str], bool, bool)] = &[
        (&["bash", "coreutils"], true, false),
        (
            &["git", "curl", "ca-certificates", "sudo", "python3"],
            true,
            false,
        ),
        (&["build-essential"], true, false),
        (&["openssh-server"], true, false),
        (
            &["git", "curl", "ca-certificates", "sudo", "python3"],
            false,
            false,
        ),
        (
            &["openssh-server", "vim", "locales", "man-db"],
            false,
            false,
        ),
        // Recommends, including a virtual package with many equal providers.
        (&["git", "curl"], true, true),
        (&["texlive-base"], true, true),
        // Equal providers of a virtual package in Depends.
        (&["kde-telepathy-minimal"], false, false),
    ];
    let mut failures = Vec::new();
    for (set, essential, recommends) in sets {
        let req = Request {
            packages: set.iter().map(|s| s.to_string()).collect(),
            essential: *essential,
            recommends: *recommends,
            ..Request::default()
        };
        let t = Instant::now();
        let lock = resolve(&req, &cache_dir(), &NoReporter).expect("strata resolve");
        let took = t.elapsed();
        let ours: BTreeMap<String, String> = lock
            .packages
            .iter()
            .map(|p| (p.name.clone(), p.version.clone()))
            .collect();
        let mut apt_req: Vec<String> = req.packages.clone();
        let mut ess: Vec<String> = lock
            .packages
            .iter()
            .filter(|p| req.essential && p.essential)
            .map(|p| p.name.clone())
            .collect();
        ess.sort();
        for e in ess {
            if !apt_req.contains(&e) {
                apt_req.push(e);
            }
        }
        if ours.contains_key("usr-is-merged") {
            apt_req.push("usr-is-merged".into());
        }
        let theirs = apt.simulate(&apt_req, req.recommends);
        let only_ours: Vec<_> = ours
            .iter()
            .filter(|(k, v)| theirs.get(*k) != Some(v))
            .collect();
        let only_theirs: Vec<_> = theirs
            .iter()
            .filter(|(k, v)| ours.get(*k) != Some(v))
            .collect();
        eprintln!(
            "{set:?} essential={} recommends={}: strata {} packages in {took:?}, apt {} packages; only strata: {only_ours:?}; only apt: {only_theirs:?}",
            req.essential,
            req.recommends,
            ours.len(),
            theirs.len()
        );
        if !only_ours.is_empty() || !only_theirs.is_empty() {
            eprintln!(
                "apt output: {}",
                apt.root().join("last-simulation.txt").display()
            );
            let _ = std::fs::copy(
                apt.root().join("last-simulation.txt"),
                std::env::temp_dir().join("strata-apt-mismatch.txt"),
            );
            failures.push(format!(
                "{set:?}: only strata: {only_ours:?}; only apt: {only_theirs:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
