//! Debian and Ubuntu packages as a strata content source.
//!
//! [`resolve`] fetches the signed `InRelease` files of the requested suites, verifies them
//! against a keyring (Debian's archive keys are built in), fetches the `Packages` indices they
//! list (checked against the Release's SHA256) and resolves the request the way
//! `apt-get install --no-install-recommends` does on an empty system, giving a [`Lock`].
//! [`fetch`] downloads the locked `.deb` files (checked against the locked size and SHA256) and
//! turns each into a [`Package`]: its files as a [`strata_fstree::Tree`] in the merged-/usr
//! layout, and its control files.
//!
//! # Trust chain
//!
//! `InRelease` (or `Release` + `Release.gpg`) must carry a good OpenPGP signature by a key of
//! the keyring that is valid now (self-signatures verified, expiry and revocation honoured;
//! signing subkeys need a valid binding and back-signature). The Release must name the
//! requested suite (`Suite` or `Codename`), must not be past its `Valid-Until` nor dated in the
//! future. Indices are fetched by hash when the Release says `Acquire-By-Hash: yes` and checked
//! against its SHA256 list (compressed and, when listed, decompressed); every `.deb` is checked
//! against the size and SHA256 of its `Packages` stanza. Only the signed text is parsed.
//!
//! # Resolution
//!
//! Like apt on an empty dpkg status: one candidate per package name (the highest version over
//! all sources); the requested packages (plus, with [`Request::essential`], every `Essential:
//! yes` package) are marked first, then each one's `Pre-Depends` and `Depends` (and
//! `Recommends` with [`Request::recommends`], as soft dependencies) are installed depth first,
//! dependencies without alternatives before or-groups. An or-group already satisfied by a
//! marked package needs nothing; otherwise the first alternative with an installable target
//! wins: the package of that name, else its providers ordered as apt orders them (essential,
//! then priority, then the order in which apt's cache generator met their names). Version
//! relations use dpkg's ordering ([`Version`]); versioned `Provides` satisfy versioned
//! dependencies; `:any` needs `Multi-Arch: allowed`; `Conflicts`/`Breaks` rule out targets.
//! The one intended difference from apt: `usr-is-merged` is preferred to `usrmerge` in an
//! or-group, since strata lays out merged /usr itself (as debootstrap does). The test
//! `tests/apt_parity.rs` compares the result with `apt-get -s` for several package sets.
//!
//! # Extraction
//!
//! `data.tar.{xz,zst,gz}` (or uncompressed) is read as a stream. Paths under `bin`, `sbin`,
//! `lib*` move under `usr/` (relative symlink targets are rewritten so they still reach the
//! same file; the old top-level directories get no entry: [`merged_usr_symlinks`] gives the
//! root symlinks). Entries with `..` are refused; symlinks that would climb above the root are
//! made absolute (clamped at the root); device nodes and FIFOs are skipped. Hard links become
//! [`strata_fstree::EntryKind::Hardlink`] to the group's first path in image order.
//!
//! # Cache layout
//!
//! Everything lives under `CACHE/debian-v1/`: `files/XX/SHA256` verified downloads (signed
//! Release files, indices, `.deb`s), re-hashed whenever they are used; `packs/XX/SHA256`
//! each package's uncompressed `data.tar`, named by its SHA256 (file entries point into it); `trees/DEB-SHA256.vN.json` the extraction of each
//! `.deb` (entries, control files, dpkg paths), so a warm [`fetch`] reads no archive. All
//! writes go to a temporary file in the same directory and are renamed into place.

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

mod cache;
pub mod configure;
mod deb;
pub mod deb822;
mod dns;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod preflight;
mod release;
mod resolve;
mod session;
pub mod source;
pub mod system;
pub mod trust;
pub mod version;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub use deb::{ControlFiles, MERGED_DIRS, merged_usr};
pub use session::Session;
pub use source::{DebianInput, DebianOptions, DebianSource, SpecLock};
pub use strata_source::{NoReporter, Reporter};
pub use trust::Keyring;
pub use version::{Version, VersionError, compare_versions};

/// Everything that can go wrong while resolving or fetching packages.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    /// A network request failed.
    #[error("downloading {url}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The server has no such file.
    #[error("{url}: not found on the server")]
    NotFound {
        /// The URL.
        url: String,
    },
    /// A local file operation failed (the message names the file; the I/O error is the source).
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A keyring could not be read.
    #[error("keyring {origin}: {message}")]
    Keyring {
        /// The keyring file or description.
        origin: String,
        /// What went wrong.
        message: String,
    },
    /// A Release file is not signed by a trusted, valid key.
    #[error("{file}: signature verification failed: {reason}")]
    Signature {
        /// The Release file's URL.
        file: String,
        /// Why.
        reason: String,
    },
    /// An added repository's Release is not signed by the repository's keyring.
    #[error("repository `{repo}` ({uri}) is not signed by its keyring (key {keys})")]
    Untrusted {
        /// The repository's name.
        repo: String,
        /// Its URI.
        uri: String,
        /// Fingerprints of the keyring's keys.
        keys: String,
        /// The signature failure.
        #[source]
        source: Box<DebianError>,
    },
    /// Two repositories of equal pin priority offer the same version of a package with
    /// different contents.
    #[error(
        "package `{name}` {version} is in both repository `{first}` and `{second}` with different \
         contents; give one of them a higher `priority`"
    )]
    Ambiguous {
        /// The package.
        name: String,
        /// The version both offer.
        version: String,
        /// One repository.
        first: String,
        /// The other.
        second: String,
    },
    /// A Release file is past its `Valid-Until` (or dated in the future).
    #[error("{file}: refusing an expired Release: {detail}")]
    Expired {
        /// The Release file's URL.
        file: String,
        /// Which date is wrong.
        detail: String,
    },
    /// A file's SHA256 differs from the one its signed parent lists.
    #[error("{file}: SHA256 mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// The file.
        file: String,
        /// The hash the Release or Packages index lists.
        expected: String,
        /// The hash of the bytes received.
        actual: String,
    },
    /// A file's size differs from the one its signed parent lists.
    #[error("{file}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The file.
        file: String,
        /// The listed size.
        expected: u64,
        /// The size received.
        actual: u64,
    },
    /// A Release lists no index for a component / architecture.
    #[error("{release}: no Packages index for {component}/binary-{architecture}")]
    MissingIndex {
        /// The Release URL.
        release: String,
        /// The component.
        component: String,
        /// The architecture.
        architecture: String,
    },
    /// A control file or index could not be parsed.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A requested package does not exist in the indices.
    #[error("no package named `{name}` in the configured repositories")]
    UnknownPackage {
        /// The requested name.
        name: String,
    },
    /// The request cannot be satisfied.
    #[error("cannot resolve {}: {message}", chain.join(" → "))]
    Unsatisfiable {
        /// The packages leading to the failure, from the requested one.
        chain: Vec<String>,
        /// What cannot be satisfied.
        message: String,
    },
    /// A `.deb` is malformed.
    #[error("{file}: {message}")]
    BadArchive {
        /// The package file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A `.deb` entry would escape the image root.
    #[error("{package}: refusing entry `{path}`, which leaves the root")]
    UnsafePath {
        /// The package file.
        package: String,
        /// The entry path.
        path: String,
    },
    /// A lock file cannot be read or written.
    #[error("lock file: {0}")]
    Lock(String),
    /// An offline fetch lacks packages that are not in the cache.
    #[error("offline: not in the cache: {}", missing.join(", "))]
    Offline {
        /// `name version` of each missing package.
        missing: Vec<String>,
    },
}

/// What to install and from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Package names to install (a name may carry a constraint: `bash (>= 5)`).
    pub packages: Vec<String>,
    /// Suite or codename, e.g. `bookworm`.
    pub suite: String,
    /// Main mirror, e.g. `http://deb.debian.org/debian`.
    pub mirror: String,
    /// Security mirror, used with suite `<suite>-security`.
    pub security_mirror: Option<String>,
    /// Also use `<suite>-updates` from the main mirror.
    pub updates: bool,
    /// Components, e.g. `main`.
    pub components: Vec<String>,
    /// dpkg architecture, e.g. `amd64`.
    pub architecture: String,
    /// Keyring file or directory overriding the built-in Debian keys.
    pub keyring: Option<PathBuf>,
    /// Also install `Recommends`.
    pub recommends: bool,
    /// Also install every `Essential: yes` package.
    pub essential: bool,
    /// Further repositories (vendor archives, PPAs), each with its own key; packages of every
    /// repository may depend on each other's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<Repo>,
}

/// The name the main archive of a request has in locks and in the image's apt sources.
pub const MAIN_REPO: &str = "main";

/// The apt pin priority of a repository that names none (apt's default, 500).
pub const DEFAULT_PRIORITY: i32 = 500;

/// A further apt repository of a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repo {
    /// Short name (`docker`, `ppa-git-core-ppa`): the lock's `repo` of its packages and the
    /// name of its files in the image (`/etc/apt/sources.list.d/NAME.sources`,
    /// `/etc/apt/keyrings/NAME.gpg`).
    pub name: String,
    /// Base URI (`https://download.docker.com/linux/debian`, or `file:///srv/mirror`).
    pub uri: String,
    /// Suites or codenames (`bookworm`, `jammy-updates`).
    pub suites: Vec<String>,
    /// Components (`main`, `stable`).
    pub components: Vec<String>,
    /// The keyring its Releases must be signed with (armored or binary OpenPGP).
    #[serde(skip)]
    pub keyring: Option<PathBuf>,
    /// apt pin priority: the candidate of a package is its version from the repository with
    /// the highest priority, then the highest version.
    pub priority: i32,
    /// Architectures it serves, when not every architecture of the image (`amd64`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
}

/// One Release a request reads: a repository's suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSuite {
    /// The repository's name ([`MAIN_REPO`] for the main archive).
    pub repo: String,
    /// Base URI, without a trailing slash.
    pub uri: String,
    /// Suite.
    pub suite: String,
    /// Components.
    pub components: Vec<String>,
    /// apt pin priority.
    pub priority: i32,
    /// The repository's keyring (`None`: the request's keyring or the built-in Debian keys).
    pub keyring: Option<PathBuf>,
}

impl Default for Request {
    /// Debian bookworm on amd64 with Debian's default sources (`-updates`, `-security`),
    /// component `main`, the essential set, no recommends, no packages.
    fn default() -> Self {
        Self {
            packages: Vec::new(),
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            security_mirror: Some("http://deb.debian.org/debian-security".into()),
            updates: true,
            components: vec!["main".into()],
            architecture: "amd64".into(),
            keyring: None,
            recommends: false,
            essential: true,
            repos: Vec::new(),
        }
    }
}

impl Request {
    /// The (mirror, suite) pairs this request reads, in priority order for equal versions.
    pub fn sources(&self) -> Vec<(String, String)> {
        let mirror = self.mirror.trim_end_matches('/').to_owned();
        let mut v = vec![(mirror.clone(), self.suite.clone())];
        if self.updates {
            v.push((mirror, format!("{}-updates", self.suite)));
        }
        if let Some(sec) = &self.security_mirror {
            v.push((
                sec.trim_end_matches('/').to_owned(),
                format!("{}-security", self.suite),
            ));
        }
        v
    }

    /// Every Release the request reads: the main archive's suites, then each repository's,
    /// in priority order for equal versions and pins.
    pub fn suites(&self) -> Vec<SourceSuite> {
        let mut out: Vec<SourceSuite> = self
            .sources()
            .into_iter()
            .map(|(uri, suite)| SourceSuite {
                repo: MAIN_REPO.into(),
                uri,
                suite,
                components: self.components.clone(),
                priority: DEFAULT_PRIORITY,
                keyring: self.keyring.clone(),
            })
            .collect();
        let serves =
            |r: &Repo| r.architectures.is_empty() || r.architectures.contains(&self.architecture);
        for r in self.repos.iter().filter(|r| serves(r)) {
            for suite in &r.suites {
                out.push(SourceSuite {
                    repo: r.name.clone(),
                    uri: r.uri.trim_end_matches('/').to_owned(),
                    suite: suite.clone(),
                    components: r.components.clone(),
                    priority: r.priority,
                    keyring: r.keyring.clone(),
                });
            }
        }
        out
    }

    /// A SHA256 over everything in the request that affects the resolution (not the keyring
    /// path), so a lock can be checked against its spec.
    pub fn digest(&self) -> String {
        let mut pkgs = self.packages.clone();
        pkgs.sort();
        pkgs.dedup();
        let mut canon = serde_json::json!({
            "packages": pkgs,
            "sources": self.sources(),
            "components": self.components,
            "architecture": self.architecture,
            "recommends": self.recommends,
            "essential": self.essential,
        });
        // Absent when there are none, so the locks of single-archive specs stay valid.
        if !self.repos.is_empty() {
            canon["repos"] = serde_json::to_value(&self.repos).unwrap_or_default();
        }
        cache::sha256_hex(canon.to_string().as_bytes())
    }
}

/// A Release a lock was resolved against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedRelease {
    /// Repository base URI.
    pub uri: String,
    /// Suite.
    pub suite: String,
    /// The Release's `Date` field.
    pub date: String,
    /// SHA256 of the signed `InRelease` (or `Release`) file.
    pub sha256: String,
}

/// One package of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedPackage {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture (`amd64`, `all`).
    pub architecture: String,
    /// Path in the repository (`pool/main/b/bash/bash_5.2.15-2+b7_amd64.deb`).
    pub filename: String,
    /// Repository base URI the file is downloaded from.
    pub mirror: String,
    /// Suite of the Release (in [`Lock::releases`]) whose index listed it.
    #[serde(default)]
    pub suite: String,
    /// The repository it comes from ([`Repo::name`], or [`MAIN_REPO`]); empty in locks
    /// written before repositories could be added (the main archive).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repo: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA256 of the `.deb`.
    pub sha256: String,
    /// Names of the locked packages satisfying its `Pre-Depends` and `Depends` (and
    /// `Recommends` when requested), sorted.
    #[serde(default)]
    pub depends: Vec<String>,
    /// Whether it is `Essential: yes`.
    #[serde(default)]
    pub essential: bool,
}

impl LockedPackage {
    /// The download URL.
    pub fn url(&self) -> String {
        format!("{}/{}", self.mirror.trim_end_matches('/'), self.filename)
    }
}

/// A resolved request: the exact packages to install. Serialised as TOML with
/// [`Lock::to_toml`]; releases and packages are kept sorted so the text is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Lock format version (currently 1).
    pub version: u32,
    /// [`Request::digest`] of the request this lock resolves.
    pub request: String,
    /// The Releases the packages came from.
    pub releases: Vec<LockedRelease>,
    /// The packages, sorted by name.
    pub packages: Vec<LockedPackage>,
}

impl Lock {
    /// The lock as TOML text.
    pub fn to_toml(&self) -> Result<String, DebianError> {
        let mut sorted = self.clone();
        sorted.sort();
        toml::to_string(&sorted).map_err(|e| DebianError::Lock(e.to_string()))
    }

    /// Parses a lock from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, DebianError> {
        let lock: Lock = toml::from_str(text).map_err(|e| DebianError::Lock(e.to_string()))?;
        if lock.version != 1 {
            return Err(DebianError::Lock(format!(
                "unsupported lock version {}",
                lock.version
            )));
        }
        Ok(lock)
    }

    /// Whether this lock was made for `req`.
    pub fn matches(&self, req: &Request) -> bool {
        self.request == req.digest()
    }

    fn sort(&mut self) {
        self.releases
            .sort_by(|a, b| (&a.uri, &a.suite).cmp(&(&b.uri, &b.suite)));
        self.packages.sort_by(|a, b| a.name.cmp(&b.name));
        for p in &mut self.packages {
            p.depends.sort();
            p.depends.dedup();
        }
    }
}

/// A fetched and extracted package.
#[derive(Debug, Clone)]
pub struct Package {
    /// The lock entry it was fetched for.
    pub locked: LockedPackage,
    /// Its files (`data.tar`), merged-/usr applied; file bytes live in the cache's content
    /// store and are referenced with [`strata_fstree::Content::Host`].
    pub tree: strata_fstree::Tree,
    /// Its control archive (`control`, `md5sums`, `conffiles`, maintainer scripts).
    pub control: ControlFiles,
    /// The paths as dpkg would list them in `/var/lib/dpkg/info/PKG.list` (original,
    /// pre-merge paths, `/.` first, in archive order).
    pub paths: Vec<String>,
}

/// Fetches and verifies the indices of `req`'s sources and resolves the request, in a
/// session of its own.
pub fn resolve(req: &Request, cache: &Path, reporter: &dyn Reporter) -> Result<Lock, DebianError> {
    resolve_in(&Session::new(), req, cache, reporter)
}

/// [`resolve`] in `session`: Releases and indices it already verified and parsed are reused.
pub fn resolve_in(
    session: &Session,
    req: &Request,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<Lock, DebianError> {
    let keyring = match &req.keyring {
        Some(p) => Keyring::load(p)?,
        None => Keyring::debian()?,
    };
    resolve_with_keyring_in(session, req, cache, &keyring, reporter)
}

/// The Release of `uri`/`suite` verified with `keyring` in this session, or `fetch`ed.
fn release_memo(
    session: &Session,
    uri: &str,
    suite: &str,
    keyring: &Keyring,
    fetch: impl FnOnce() -> Result<release::Release, DebianError>,
) -> Result<release::Release, DebianError> {
    let key = format!("{uri}|{suite}|{:?}", keyring.fingerprints());
    if let Some(rel) = session::lock(&session.releases).get(&key) {
        return Ok(rel.clone());
    }
    let rel = fetch()?;
    session::lock(&session.releases).insert(key, rel.clone());
    Ok(rel)
}

/// [`resolve`] with an explicit keyring (whatever `req.keyring` says), in a session of its own.
pub fn resolve_with_keyring(
    req: &Request,
    cache: &Path,
    keyring: &Keyring,
    reporter: &dyn Reporter,
) -> Result<Lock, DebianError> {
    resolve_with_keyring_in(&Session::new(), req, cache, keyring, reporter)
}

/// [`resolve_with_keyring`] in `session`.
pub fn resolve_with_keyring_in(
    session: &Session,
    req: &Request,
    cache: &Path,
    keyring: &Keyring,
    reporter: &dyn Reporter,
) -> Result<Lock, DebianError> {
    let c = cache::Cache::new(cache, &session.dns)?;
    let now = release::now_secs();
    let sources = req.suites();
    // Every repository is verified with its own keyring, loaded once.
    let mut keyrings: BTreeMap<String, Keyring> = BTreeMap::new();
    for src in sources.iter().filter(|s| s.repo != MAIN_REPO) {
        if keyrings.contains_key(&src.repo) {
            continue;
        }
        let path = src.keyring.as_ref().ok_or_else(|| DebianError::Keyring {
            origin: format!("of repository `{}`", src.repo),
            message: "none given: every added repository needs `keyring =`".into(),
        })?;
        keyrings.insert(src.repo.clone(), Keyring::load(path)?);
    }
    let keyring_of = |src: &SourceSuite| keyrings.get(&src.repo).unwrap_or(keyring);
    // Each source (Release, its indices, parsing) is handled on its own thread.
    type SourceResult = Result<(release::Release, Vec<resolve::PkgVer>, Vec<String>), DebianError>;
    let results: Vec<SourceResult> = std::thread::scope(|s| {
        let handles: Vec<_> = sources
            .iter()
            .enumerate()
            .map(|(i, src)| {
                let c = &c;
                let keyring = keyring_of(src);
                let (uri, suite) = (&src.uri, &src.suite);
                s.spawn(move || -> SourceResult {
                    let rel = release_memo(session, uri, suite, keyring, || {
                        release::fetch_release(c, keyring, uri, suite, now, reporter)
                    })
                    .map_err(|e| untrusted(src, keyring, e))?;
                    let mut versions = Vec::new();
                    let mut texts = Vec::new();
                    for comp in &src.components {
                        let mut archs = vec![req.architecture.as_str()];
                        if !rel.no_all_packages && rel.architectures.iter().any(|a| a == "all") {
                            archs.push("all");
                        }
                        let mut found = false;
                        for arch in archs {
                            // The index is identified by the verified Release it came from.
                            let memo_key = format!(
                                "{}|{comp}|{arch}|{i}|{}",
                                rel.inrelease_sha256, req.architecture
                            );
                            let hit = session::lock(&session.indices).get(&memo_key).cloned();
                            if let Some(hit) = hit {
                                versions.extend(hit.0.iter().cloned());
                                texts.push(hit.1.clone());
                                found = true;
                                continue;
                            }
                            if let Some(text) = rel.packages_index(c, comp, arch, reporter)? {
                                let name =
                                    format!("{uri}/dists/{suite}/{comp}/binary-{arch}/Packages");
                                reporter.message(&format!("parsing {name}"));
                                let parsed =
                                    resolve::parse_index(&name, &text, i, &req.architecture)?;
                                versions.extend(parsed.iter().cloned());
                                session::lock(&session.indices)
                                    .insert(memo_key, std::sync::Arc::new((parsed, text.clone())));
                                texts.push(text);
                                found = true;
                            }
                        }
                        if !found {
                            return Err(DebianError::MissingIndex {
                                release: format!("{uri}/dists/{suite}"),
                                component: comp.clone(),
                                architecture: req.architecture.clone(),
                            });
                        }
                    }
                    Ok((rel, versions, texts))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(DebianError::Lock("an index worker panicked".into())))
            })
            .collect()
    });
    let mut universe = resolve::Universe::default();
    universe.set_sources(
        sources
            .iter()
            .map(|s| (s.repo.clone(), s.priority))
            .collect(),
    );
    let mut releases = Vec::new();
    let mut mirrors = Vec::new();
    for (r, src) in results.into_iter().zip(&sources) {
        let (rel, versions, texts) = r?;
        universe.add(versions);
        for t in texts {
            universe.add_text(t);
        }
        mirrors.push((rel.uri.clone(), rel.suite.clone(), src.repo.clone()));
        releases.push(LockedRelease {
            uri: rel.uri,
            suite: rel.suite,
            date: rel.date,
            sha256: rel.inrelease_sha256,
        });
    }
    universe.finish();
    reporter.message(&format!(
        "resolving {} packages against {} candidates",
        req.packages.len(),
        universe.candidate_count()
    ));
    let res = resolve::resolve(
        &universe,
        &resolve::Goal {
            packages: &req.packages,
            recommends: req.recommends,
            essential: req.essential,
            native: &req.architecture,
        },
    )?;
    let packages = resolve::locked_packages(&universe, &res, &mirrors)?;
    let mut lock = Lock {
        version: 1,
        request: req.digest(),
        releases,
        packages,
    };
    lock.sort();
    Ok(lock)
}

/// A Release of an added repository that its keyring does not verify: the error names the
/// repository and the keyring's keys.
fn untrusted(src: &SourceSuite, keyring: &Keyring, e: DebianError) -> DebianError {
    match e {
        DebianError::Signature { .. } if src.repo != MAIN_REPO => DebianError::Untrusted {
            repo: src.repo.clone(),
            uri: src.uri.clone(),
            keys: keyring.fingerprints().join(", "),
            source: Box::new(e),
        },
        e => e,
    }
}

/// Number of parallel downloads / extractions in [`fetch`].
const PARALLEL: usize = 8;

/// Downloads (verified against the lock's size and SHA256) and extracts every locked
/// package. Already-extracted packages are read back from the cache. The result is in the
/// lock's order.
pub fn fetch(
    lock: &Lock,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<Vec<Package>, DebianError> {
    fetch_with(&Session::new(), lock, cache, reporter, false)
}

/// [`fetch`] without network access: builds from the cache alone, or fails with
/// [`DebianError::Offline`] naming every package that is not cached.
pub fn fetch_offline(
    lock: &Lock,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<Vec<Package>, DebianError> {
    let missing = missing(lock, cache)?;
    if !missing.is_empty() {
        return Err(DebianError::Offline {
            missing: missing
                .iter()
                .map(|p| format!("{} {}", p.name, p.version))
                .collect(),
        });
    }
    fetch_with(&Session::new(), lock, cache, reporter, true)
}

/// The locked packages that are in the cache neither extracted nor as a downloaded `.deb`
/// (the packages an offline build lacks).
pub fn missing(lock: &Lock, cache: &Path) -> Result<Vec<LockedPackage>, DebianError> {
    let c = cache::Cache::new(cache, &Default::default())?;
    Ok(lock
        .packages
        .iter()
        .filter(|p| {
            let sha = p.sha256.to_ascii_lowercase();
            if sha.len() != 64 {
                return true;
            }
            let extracted = std::fs::read(c.tree_path(&sha))
                .ok()
                .and_then(|b| serde_json::from_slice::<deb::Extracted>(&b).ok())
                .is_some_and(|ex| ex.content_present(&c));
            let downloaded = std::fs::metadata(c.file_path(&sha)).is_ok_and(|m| m.len() == p.size);
            !extracted && !downloaded
        })
        .cloned()
        .collect())
}

/// [`fetch`] (or with `offline`, [`fetch_offline`]'s downloads part) in `session`; every
/// package done is reported with [`Reporter::item_done`].
pub(crate) fn fetch_with(
    session: &Session,
    lock: &Lock,
    cache: &Path,
    reporter: &dyn Reporter,
    offline: bool,
) -> Result<Vec<Package>, DebianError> {
    let c = cache::Cache::new(cache, &session.dns)?;
    let next = Mutex::new(0usize);
    let results: Mutex<BTreeMap<usize, Result<Package, DebianError>>> = Mutex::new(BTreeMap::new());
    let workers = PARALLEL.min(lock.packages.len()).max(1);
    // Largest first, so the last downloads to finish are small ones and no worker is left
    // fetching a big package alone at the end.
    let mut order: Vec<usize> = (0..lock.packages.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lock.packages[i].size));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = {
                        let Ok(mut n) = next.lock() else { return };
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(p) = order.get(i).and_then(|&i| lock.packages.get(i)) else {
                        return;
                    };
                    let r = fetch_one(&c, p, reporter, offline);
                    let failed = r.is_err();
                    if !failed {
                        reporter.item_done(&p.name);
                    }
                    if let Ok(mut m) = results.lock() {
                        m.insert(order[i], r);
                    }
                    if failed {
                        // Stop handing out work after the first failure.
                        if let Ok(mut n) = next.lock() {
                            *n = usize::MAX / 2;
                        }
                        return;
                    }
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| DebianError::Lock("a download worker panicked".into()))?;
    let mut out = Vec::with_capacity(lock.packages.len());
    for (_, r) in results {
        out.push(r?);
    }
    if out.len() != lock.packages.len() {
        return Err(DebianError::Lock("not every package was fetched".into()));
    }
    Ok(out)
}

fn fetch_one(
    c: &cache::Cache,
    p: &LockedPackage,
    reporter: &dyn Reporter,
    offline: bool,
) -> Result<Package, DebianError> {
    let sha = p.sha256.to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DebianError::Lock(format!(
            "package {}: invalid SHA256 `{}`",
            p.name, p.sha256
        )));
    }
    let name = p.url();
    let manifest = c.tree_path(&sha);
    if let Ok(bytes) = std::fs::read(&manifest)
        && let Ok(ex) = serde_json::from_slice::<deb::Extracted>(&bytes)
        && ex.content_present(c)
    {
        return Ok(Package {
            locked: p.clone(),
            tree: ex.tree(c, &name)?,
            control: ex.control,
            paths: ex.paths,
        });
    }
    let path = if offline {
        c.cached_verified(&name, Some(p.size), &sha)?
            .ok_or_else(|| DebianError::Offline {
                missing: vec![format!("{} {}", p.name, p.version)],
            })?
    } else {
        reporter.message(&format!("fetching {} {}", p.name, p.version));
        c.fetch_verified(&name, &name, Some(p.size), &sha, reporter)?
    };
    let mut warn = |m: String| reporter.message(&m);
    let ex = deb::extract(c, &path, &sha, true, &name, &mut warn)?;
    let json = serde_json::to_vec(&ex).map_err(|e| DebianError::Lock(e.to_string()))?;
    cache::write_atomic(&manifest, &json)?;
    Ok(Package {
        locked: p.clone(),
        tree: ex.tree(c, &name)?,
        control: ex.control,
        paths: ex.paths,
    })
}

/// The merged-/usr symlinks at the image root (`bin -> usr/bin`, `lib64 -> usr/lib64`, ...):
/// `bin`, `sbin` and `lib` always, the other [`MERGED_DIRS`] when some tree has `usr/DIR`.
pub fn merged_usr_symlinks<'a>(
    trees: impl IntoIterator<Item = &'a strata_fstree::Tree>,
) -> Vec<strata_fstree::Entry> {
    let mut used: std::collections::BTreeSet<&str> = ["bin", "sbin", "lib"].into();
    for t in trees {
        for e in t.entries() {
            let mut parts = e.path.as_str().split('/');
            if parts.next() == Some("usr")
                && let Some(d) = parts.next()
                && let Some(m) = MERGED_DIRS.iter().find(|m| **m == d)
            {
                used.insert(m);
            }
        }
    }
    used.into_iter()
        .filter_map(|d| {
            strata_fstree::ImagePath::new(d)
                .ok()
                .map(|p| strata_fstree::Entry::symlink(p, format!("usr/{d}")))
        })
        .collect()
}

/// Extracts a local `.deb` file (no verification) into a [`Package`]-like triple: tree,
/// control files and dpkg paths. File bytes are stored under `cache`.
pub fn extract_deb(
    deb: &Path,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<(strata_fstree::Tree, ControlFiles, Vec<String>), DebianError> {
    let c = cache::Cache::new(cache, &Default::default())?;
    let name = deb.display().to_string();
    let mut warn = |m: String| reporter.message(&m);
    // A local file is not in any index: its own SHA256 names what is kept of it.
    let (_, sha) = cache::hash_file(deb).map_err(|e| DebianError::Io {
        path: deb.to_owned(),
        source: e,
    })?;
    let ex = deb::extract(&c, deb, &sha, false, &name, &mut warn)?;
    Ok((ex.tree(&c, &name)?, ex.control, ex.paths))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        let pkg = |name: &str, deps: &[&str]| LockedPackage {
            name: name.into(),
            version: "1.0-1".into(),
            architecture: "amd64".into(),
            filename: format!("pool/main/{name}.deb"),
            mirror: "http://deb.debian.org/debian".into(),
            suite: "bookworm".into(),
            repo: String::new(),
            size: 1234,
            sha256: "ab".repeat(32),
            depends: deps.iter().map(|s| s.to_string()).collect(),
            essential: name == "base",
        };
        Lock {
            version: 1,
            request: Request::default().digest(),
            releases: vec![
                LockedRelease {
                    uri: "http://deb.debian.org/debian-security".into(),
                    suite: "bookworm-security".into(),
                    date: "Mon, 23 Nov 2026 11:22:37 UTC".into(),
                    sha256: "cd".repeat(32),
                },
                LockedRelease {
                    uri: "http://deb.debian.org/debian".into(),
                    suite: "bookworm".into(),
                    date: "Sat, 11 Jul 2026 10:16:37 UTC".into(),
                    sha256: "ef".repeat(32),
                },
            ],
            packages: vec![
                pkg("zsh", &["libc6", "base"]),
                pkg("base", &[]),
                pkg("libc6", &[]),
            ],
        }
    }

    #[test]
    fn lock_round_trip_is_deterministic() {
        let lock = sample();
        let text = lock.to_toml().expect("toml");
        let back = Lock::from_toml(&text).expect("parse");
        // Parsing gives the sorted lock, and writing it again gives the same text.
        assert_eq!(back.packages[0].name, "base");
        assert_eq!(back.packages[2].depends, ["base", "libc6"]);
        assert_eq!(back.releases[0].suite, "bookworm");
        assert_eq!(back.to_toml().expect("toml"), text);
        let mut shuffled = lock.clone();
        shuffled.packages.reverse();
        shuffled.releases.reverse();
        assert_eq!(shuffled.to_toml().expect("toml"), text);
        assert!(back.matches(&Request::default()));
        let other = Request {
            packages: vec!["git".into()],
            ..Request::default()
        };
        assert!(!back.matches(&other));
        assert!(
            Lock::from_toml("version = 2\nrequest = \"\"\nreleases = []\npackages = []\n").is_err()
        );
        assert!(Lock::from_toml("not toml").is_err());
    }

    #[test]
    fn request_digest_ignores_order() {
        let a = Request {
            packages: vec!["git".into(), "curl".into()],
            ..Request::default()
        };
        let b = Request {
            packages: vec!["curl".into(), "git".into(), "git".into()],
            ..Request::default()
        };
        assert_eq!(a.digest(), b.digest());
        let c = Request {
            essential: false,
            ..a.clone()
        };
        assert_ne!(a.digest(), c.digest());
    }
}
