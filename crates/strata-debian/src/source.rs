//! The Debian source of the build pipeline: a spec half's `debian` section as store objects.
//!
//! [`request_for`] turns a half's effective settings into a [`Request`]. [`SpecLock`] is the
//! spec's lock file (`strata.lock` beside `strata.toml`, see [`lock_path`]) with one resolved
//! [`Lock`] per half; [`resolve_spec`] makes one. `[user].debian` is resolved against the base's
//! selection ([`resolve_user`]): every package of the base lock is taken as installed, and the
//! user lock holds only what the user half adds.
//!
//! [`DebianSource`] implements [`strata_source::Source`]: one [`StoreObject`] per package (id
//! `deb:NAME_VERSION_ARCH`, references = its resolved dependencies plus [`MERGED_USR_ID`], the
//! object holding the merged-/usr root symlinks), and the generated system files of
//! [`crate::system`] as customisation entries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use strata_fstree::{Content, EntryKind, Tree};
use strata_source::{Resolution, Source, SourceContext, SourceError, StoreObject, hash_parts};
use strata_spec::{Part, Spec};

use crate::session::{self, Session};
use crate::{DebianError, Lock, LockedPackage, Package, Reporter, Request};

/// Environment variable naming a download/extraction cache directory for the Debian source
/// that replaces the store's own (`STORE/sources/debian`), so several stores share downloads.
pub const DEBIAN_CACHE_ENV: &str = "STRATA_DEBIAN_CACHE";

/// Id of the store object holding the merged-/usr root symlinks (`bin -> usr/bin`, ...), which
/// every package object references.
pub const MERGED_USR_ID: &str = "deb:merged-usr";

/// Version of the spec lock file format.
pub const SPEC_LOCK_VERSION: u32 = 1;

/// The default `PATH` of a Debian image (Debian's `/etc/profile` for root, as Docker's images).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A failure of the Debian source beyond what [`DebianError`] covers.
#[derive(Debug, thiserror::Error)]
pub enum SourceFailure {
    /// Resolving, downloading, verifying or extracting failed.
    #[error(transparent)]
    Debian(#[from] DebianError),
    /// The lock file cannot be read or parsed.
    #[error("lock file {}: {message}", path.display())]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `--locked` and the lock does not match the spec.
    #[error("--locked: {0}")]
    Locked(String),
    /// `--offline` without a lock that matches the spec (resolving needs the network).
    #[error("--offline: {0}; run `strata lock` first")]
    OfflineUnlocked(String),
    /// A debconf answer for a question no installed package has.
    #[error(
        "debconf answer `{line}`: no installed package has the question `{question}` \
         (packages with questions: {owners})"
    )]
    Debconf {
        /// The answer as written.
        line: String,
        /// Its question.
        question: String,
        /// The installed packages that have debconf templates.
        owners: String,
    },
    /// A generated system file could not be made.
    #[error("{file}: {message}")]
    System {
        /// The image file, or the package file it is made from.
        file: String,
        /// What went wrong.
        message: String,
    },
}

impl SourceFailure {
    /// A short phrase for what strata was doing.
    pub fn stage(&self) -> &'static str {
        match self {
            SourceFailure::Debian(DebianError::Offline { .. }) => "cannot build offline",
            SourceFailure::Debian(DebianError::Unsatisfiable { .. })
            | SourceFailure::Debian(DebianError::UnknownPackage { .. }) => {
                "cannot resolve the packages"
            }
            SourceFailure::Debian(_) => "cannot install the Debian packages",
            SourceFailure::LockFile { .. } => "cannot use the lock file",
            SourceFailure::Locked(_) => "the lock file does not match the spec",
            SourceFailure::OfflineUnlocked(_) => "cannot build offline",
            SourceFailure::System { .. } => "cannot generate the Debian system files",
            SourceFailure::Debconf { .. } => "a debconf answer has no question",
        }
    }
}

/// The dpkg architecture for an OCI architecture (`386` → `i386`, `arm` → `armhf`, ...).
pub fn dpkg_architecture(oci: &str) -> String {
    match oci {
        "386" => "i386",
        "arm" => "armhf",
        "ppc64le" => "ppc64el",
        "mips64le" => "mips64el",
        "mipsle" => "mipsel",
        other => other,
    }
    .to_owned()
}

/// The request of one half's `debian` section (settings inherited and defaulted, the keyring
/// resolved against the spec's directory, the architecture from `[image]`), or `None` when
/// the half has no `debian` key.
pub fn request_for(spec: &Spec, part: Part) -> Option<Request> {
    let s = spec.debian_settings(part)?;
    Some(Request {
        packages: s.packages,
        suite: s.suite,
        mirror: s.mirror,
        security_mirror: s.updates.then_some(s.security_mirror),
        updates: s.updates,
        components: s.components,
        architecture: dpkg_architecture(&spec.image.architecture),
        keyring: s.keyring.map(|k| spec.dir.join(k)),
        recommends: s.recommends,
        essential: s.essential,
        repos: s
            .repos
            .iter()
            .map(|r| crate::Repo {
                name: r.name.clone(),
                uri: r.uri.clone(),
                suites: r.suites.clone().unwrap_or_default(),
                components: r.components.clone(),
                keyring: Some(spec.dir.join(&r.keyring)),
                priority: r.priority,
                architectures: r.architectures.clone(),
            })
            .collect(),
    })
}

/// The lock file of a spec: the spec's path with the extension `.lock` (`strata.toml` →
/// `strata.lock`).
pub fn lock_path(spec_path: &Path) -> PathBuf {
    spec_path.with_extension("lock")
}

/// One half of a [`SpecLock`]: the request it was made for and its resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HalfLock {
    /// The request (without the keyring path, which does not change the resolution).
    pub request: Request,
    /// The resolved packages. For `[user]`, only the packages the base does not have.
    pub lock: Lock,
}

/// A spec's lock file: the locked packages of both halves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecLock {
    /// Format version ([`SPEC_LOCK_VERSION`]).
    pub version: u32,
    /// `[base].debian`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<HalfLock>,
    /// `[user].debian`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<HalfLock>,
}

impl SpecLock {
    /// The lock as TOML text (deterministic).
    pub fn to_toml(&self) -> Result<String, SourceFailure> {
        let header = "# Written by `strata lock`: the exact Debian packages of each half, and the\n\
                      # downloads, Python distributions and Nix outputs below them.\n\
                      # `strata build` installs these; run `strata lock` again to update them.\n";
        let body = toml::to_string(self).map_err(|e| SourceFailure::LockFile {
            path: PathBuf::from("(lock)"),
            message: e.to_string(),
        })?;
        Ok(format!("{header}{body}"))
    }

    /// Parses a lock file's text; `path` is for messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, SourceFailure> {
        let bad = |message: String| SourceFailure::LockFile {
            path: path.to_owned(),
            message,
        };
        let lock: SpecLock = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if lock.version != SPEC_LOCK_VERSION {
            return Err(bad(format!("unsupported lock version {}", lock.version)));
        }
        for half in [&lock.base, &lock.user].into_iter().flatten() {
            if half.lock.version != 1 {
                return Err(bad(format!(
                    "unsupported package lock version {}",
                    half.lock.version
                )));
            }
        }
        Ok(lock)
    }

    /// Reads the lock file at `path`; `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, SourceFailure> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_toml(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SourceFailure::LockFile {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    /// Number of packages of both halves.
    pub fn package_count(&self) -> usize {
        [&self.base, &self.user]
            .into_iter()
            .flatten()
            .map(|h| h.lock.packages.len())
            .sum()
    }
}

/// Whether a lock half can be used for a half's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HalfState {
    /// The lock matches the request.
    Fresh,
    /// The spec's half has no `debian` section, and the lock none either.
    Absent,
    /// No lock for this half (no lock file, or a half the lock does not have).
    Missing,
    /// The lock was made for another request; the text says what differs.
    Stale(String),
}

/// Compares a spec's requests with a lock file, half by half (`[base]`, then `[user]`).
/// The user half is stale whenever the base half is, since it was resolved against it.
pub fn check_lock(
    lock: Option<&SpecLock>,
    base: Option<&Request>,
    user: Option<&Request>,
) -> [HalfState; 2] {
    let one = |held: Option<&HalfLock>, want: Option<&Request>| -> HalfState {
        match (held, want) {
            (None, None) => HalfState::Absent,
            (Some(_), None) => {
                HalfState::Stale("the lock has packages but the spec has no `debian` key".into())
            }
            (None, Some(_)) => HalfState::Missing,
            (Some(h), Some(r)) => {
                if h.lock.matches(r) {
                    HalfState::Fresh
                } else {
                    HalfState::Stale(describe_difference(&h.request, r))
                }
            }
        }
    };
    let Some(lock) = lock else {
        return [
            if base.is_some() {
                HalfState::Missing
            } else {
                HalfState::Absent
            },
            if user.is_some() {
                HalfState::Missing
            } else {
                HalfState::Absent
            },
        ];
    };
    let b = one(lock.base.as_ref(), base);
    let mut u = one(lock.user.as_ref(), user);
    if u == HalfState::Fresh && !matches!(b, HalfState::Fresh | HalfState::Absent) {
        u = HalfState::Stale("it was resolved against a base that changed".into());
    }
    [b, u]
}

/// What differs between the request a lock was made for and the spec's, e.g.
/// `packages: +jq -vim; suite: bookworm -> trixie`.
pub fn describe_difference(locked: &Request, wanted: &Request) -> String {
    let mut parts = Vec::new();
    let set = |v: &[String]| -> BTreeSet<String> { v.iter().cloned().collect() };
    let (old, new) = (set(&locked.packages), set(&wanted.packages));
    let added: Vec<String> = new.difference(&old).map(|p| format!("+{p}")).collect();
    let removed: Vec<String> = old.difference(&new).map(|p| format!("-{p}")).collect();
    if !added.is_empty() || !removed.is_empty() {
        parts.push(format!(
            "packages: {}",
            added
                .into_iter()
                .chain(removed)
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            parts.push(format!("{name}: {a} -> {b}"));
        }
    };
    field("suite", locked.suite.clone(), wanted.suite.clone());
    field("mirror", locked.mirror.clone(), wanted.mirror.clone());
    field(
        "security_mirror",
        format!("{:?}", locked.security_mirror),
        format!("{:?}", wanted.security_mirror),
    );
    field(
        "updates",
        locked.updates.to_string(),
        wanted.updates.to_string(),
    );
    field(
        "components",
        locked.components.join(","),
        wanted.components.join(","),
    );
    field(
        "architecture",
        locked.architecture.clone(),
        wanted.architecture.clone(),
    );
    field(
        "recommends",
        locked.recommends.to_string(),
        wanted.recommends.to_string(),
    );
    field(
        "essential",
        locked.essential.to_string(),
        wanted.essential.to_string(),
    );
    if parts.is_empty() {
        "the lock's request digest does not match (edited lock file?)".into()
    } else {
        parts.join("; ")
    }
}

fn without_keyring(req: &Request) -> Request {
    Request {
        keyring: None,
        ..req.clone()
    }
}

/// Resolves both halves (the user half against the base's selection) into a [`SpecLock`],
/// in one session (each Release and index is fetched and parsed once).
pub fn resolve_spec(
    base: Option<&Request>,
    user: Option<&Request>,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<SpecLock, DebianError> {
    let session = Session::new();
    let base_lock = base
        .map(|r| crate::resolve_in(&session, r, cache, reporter))
        .transpose()?;
    let user_lock = user
        .map(|r| resolve_user_in(&session, base_lock.as_ref(), r, cache, reporter))
        .transpose()?;
    Ok(SpecLock {
        version: SPEC_LOCK_VERSION,
        base: base.zip(base_lock).map(|(r, lock)| HalfLock {
            request: without_keyring(r),
            lock,
        }),
        user: user.zip(user_lock).map(|(r, lock)| HalfLock {
            request: without_keyring(r),
            lock,
        }),
    })
}

/// Resolves the user half against the base's selection: the request plus every package of
/// `base` is resolved as one, and the packages `base` already has are left out, so the user
/// lock holds only the additions (their dependencies on base packages are by name).
pub fn resolve_user(
    base: Option<&Lock>,
    user: &Request,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<Lock, DebianError> {
    resolve_user_in(&Session::new(), base, user, cache, reporter)
}

/// [`resolve_user`] in `session`.
pub fn resolve_user_in(
    session: &Session,
    base: Option<&Lock>,
    user: &Request,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<Lock, DebianError> {
    let Some(base) = base else {
        return crate::resolve_in(session, user, cache, reporter);
    };
    let in_base: BTreeSet<&str> = base.packages.iter().map(|p| p.name.as_str()).collect();
    let mut union = user.clone();
    union
        .packages
        .extend(base.packages.iter().map(|p| p.name.clone()));
    union.packages.sort();
    union.packages.dedup();
    let mut lock = crate::resolve_in(session, &union, cache, reporter)?;
    lock.packages.retain(|p| !in_base.contains(p.name.as_str()));
    lock.request = user.digest();
    Ok(lock)
}

/// How the Debian source treats the lock file and the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DebianOptions {
    /// Fail unless the lock file matches the spec (never resolve).
    pub locked: bool,
    /// Use no network: the lock must match and every package must be in the cache.
    pub offline: bool,
}

/// Everything [`DebianSource`] needs from the spec.
#[derive(Debug, Clone)]
pub struct DebianInput {
    /// The half this source produces.
    pub part: Part,
    /// `[base].debian`'s request, if any.
    pub base: Option<Request>,
    /// `[user].debian`'s request, if any.
    pub user: Option<Request>,
    /// The spec's lock file (it need not exist).
    pub lock_file: PathBuf,
    /// Whether the packages are configured after their layers are written: no Debian
    /// section of the spec says `configure = false`.
    pub configure: bool,
    /// Where the section is in the spec, for messages (`strata.toml:4:1: base.debian`).
    pub context: String,
    /// The debconf answers of both halves (`debconf-set-selections` lines), base first.
    pub debconf: Vec<String>,
    /// The base half's debconf answers alone: the base configure layer must not depend on
    /// `[user]`.
    pub debconf_base: Vec<String>,
}

impl DebianInput {
    /// The input for one half of `spec`, or `None` when that half has no `debian` key.
    pub fn from_spec(spec: &Spec, part: Part) -> Option<Self> {
        let section = spec.half(part).debian.as_ref()?;
        let configure = [Part::Base, Part::User]
            .into_iter()
            .filter_map(|p| spec.half(p).debian.as_ref())
            .all(|d| d.configure.unwrap_or(true));
        Some(Self {
            part,
            base: request_for(spec, Part::Base),
            user: request_for(spec, Part::User),
            lock_file: lock_path(&spec.path),
            configure,
            context: format!("{}: {}", section.location, section.key),
            debconf: [&spec.base, &spec.user]
                .iter()
                .filter_map(|h| h.debian.as_ref())
                .flat_map(|d| d.debconf.iter().cloned())
                .collect(),
            debconf_base: spec
                .base
                .debian
                .as_ref()
                .map(|d| d.debconf.clone())
                .unwrap_or_default(),
        })
    }
}

/// The Debian source of one spec half.
#[derive(Debug, Clone)]
pub struct DebianSource {
    input: DebianInput,
}

impl DebianSource {
    /// A source for one half.
    pub fn new(input: DebianInput) -> Self {
        Self { input }
    }

    /// The locks of both halves, from the lock file where it matches, else resolved (unless
    /// `--locked` or `--offline` forbid it).
    fn locks(
        &self,
        session: &Session,
        cache: &Path,
        options: DebianOptions,
        reporter: &dyn Reporter,
    ) -> Result<(Option<Lock>, Option<Lock>), SourceFailure> {
        let file = SpecLock::read(&self.input.lock_file)?;
        let (base_req, user_req) = (self.input.base.as_ref(), self.input.user.as_ref());
        let [bs, us] = check_lock(file.as_ref(), base_req, user_req);
        let lock_name = self.input.lock_file.display().to_string();
        let refuse = |half: &str, state: &HalfState| -> Option<SourceFailure> {
            let why = match state {
                HalfState::Fresh | HalfState::Absent => return None,
                HalfState::Missing => format!("{lock_name} has no lock for [{half}].debian"),
                HalfState::Stale(d) => format!("{lock_name} does not match [{half}].debian: {d}"),
            };
            if options.locked {
                Some(SourceFailure::Locked(why))
            } else if options.offline {
                Some(SourceFailure::OfflineUnlocked(why))
            } else {
                None
            }
        };
        let need_user = self.input.part == Part::User;
        for (half, state, needed) in [("base", &bs, true), ("user", &us, need_user)] {
            if needed && let Some(e) = refuse(half, state) {
                return Err(e);
            }
        }
        let held = |h: Option<&HalfLock>| h.map(|h| h.lock.clone());
        let base = match (&bs, base_req) {
            (HalfState::Fresh, _) => held(file.as_ref().and_then(|f| f.base.as_ref())),
            (_, Some(r)) => Some(memo_resolve(session, None, r, cache, reporter)?),
            (_, None) => None,
        };
        if !need_user {
            return Ok((base, None));
        }
        let user = match (&us, user_req) {
            (HalfState::Fresh, _) => held(file.as_ref().and_then(|f| f.user.as_ref())),
            (_, Some(r)) => Some(memo_resolve(session, base.as_ref(), r, cache, reporter)?),
            (_, None) => None,
        };
        Ok((base, user))
    }

    fn resolve_inner(&self, ctx: &SourceContext<'_>) -> Result<Resolution, SourceFailure> {
        let cache = std::env::var_os(DEBIAN_CACHE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| ctx.cache_dir.to_owned());
        let options = DebianOptions {
            locked: ctx.locked,
            offline: ctx.offline,
        };
        let session = ctx.session.state::<Session>();
        let reporter = ctx.reporter;
        let (base_lock, user_lock) = self.locks(&session, &cache, options, reporter)?;
        let offline = options.offline;
        let count = |l: &Option<Lock>| l.as_ref().map_or(0, |l| l.packages.len() as u64);
        reporter.items_started(
            "Debian packages fetched",
            count(&base_lock) + count(&user_lock),
        );
        let base_pkgs = match &base_lock {
            Some(l) => memo_fetch(&session, l, &cache, offline, reporter)?,
            None => Vec::new(),
        };
        let user_pkgs = match &user_lock {
            Some(l) => memo_fetch(&session, l, &cache, offline, reporter)?,
            None => Vec::new(),
        };
        let (own, own_req) = match self.input.part {
            Part::Base => (&base_pkgs, self.input.base.as_ref()),
            Part::User => (&user_pkgs, self.input.user.as_ref()),
        };
        // Ids of every package by name; a user package's base dependency is the base's object.
        let ids: BTreeMap<&str, String> = base_pkgs
            .iter()
            .chain(user_pkgs.iter())
            .map(|p| (p.locked.name.as_str(), package_id(&p.locked)))
            .collect();
        let mut objects = Vec::with_capacity(own.len() + 1);
        let owns_merged = self.input.part == Part::Base || base_lock.is_none();
        if owns_merged {
            let entries = crate::merged_usr_symlinks(own.iter().map(|p| &p.tree));
            let tree = Tree::from_entries(entries);
            let key = hash_parts([
                b"deb-merged-usr-v1".as_slice(),
                fingerprint(&tree).as_bytes(),
            ]);
            objects.push(StoreObject {
                id: MERGED_USR_ID.into(),
                tree,
                references: Vec::new(),
                cache_key: key,
            });
        }
        for p in own.iter() {
            let mut references: Vec<String> = p
                .locked
                .depends
                .iter()
                .filter(|d| **d != p.locked.name)
                .filter_map(|d| ids.get(d.as_str()).cloned())
                .collect();
            references.push(MERGED_USR_ID.into());
            references.sort();
            references.dedup();
            objects.push(StoreObject {
                id: package_id(&p.locked),
                tree: p.tree.clone(),
                references,
                cache_key: hash_parts([
                    b"deb-v1".as_slice(),
                    p.locked.sha256.to_ascii_lowercase().as_bytes(),
                    fingerprint(&p.tree).as_bytes(),
                ]),
            });
        }
        let mut roots: Vec<String> = Vec::new();
        if let Some(req) = own_req {
            for name in &req.packages {
                let bare = name
                    .split([' ', '=', '(', ':'])
                    .next()
                    .unwrap_or(name.as_str());
                if let Some(id) = ids.get(bare) {
                    roots.push(id.clone());
                }
            }
        }
        roots.extend(
            own.iter()
                .filter(|p| p.locked.essential)
                .map(|p| package_id(&p.locked)),
        );
        if owns_merged {
            roots.push(MERGED_USR_ID.into());
        }
        roots.sort();
        roots.dedup();

        let (customisation, steps) = crate::configure::half_system(&crate::configure::Half {
            part: self.input.part,
            base: &base_pkgs,
            user: &user_pkgs,
            base_request: self.input.base.as_ref(),
            user_request: self.input.user.as_ref(),
            configure: self.input.configure,
            architecture: ctx.architecture,
            debconf_base: &self.input.debconf_base,
            debconf: &self.input.debconf,
        })?;
        Ok(Resolution {
            objects,
            roots,
            customisation,
            env: vec![("PATH".into(), DEFAULT_PATH.into())],
            steps,
        })
    }
}

impl Source for DebianSource {
    fn kind(&self) -> &'static str {
        "debian"
    }

    fn provides_system(&self) -> bool {
        true
    }

    fn resolve(&self, ctx: &SourceContext<'_>) -> Result<Resolution, SourceError> {
        self.resolve_inner(ctx).map_err(|e| SourceError::Entry {
            context: self.input.context.clone(),
            message: e.stage().to_owned(),
            source: Some(Box::new(e)),
        })
    }
}

/// The store object id of a locked package: `deb:NAME_VERSION_ARCH`.
pub fn package_id(p: &LockedPackage) -> String {
    format!("deb:{}_{}_{}", p.name, p.version, p.architecture)
}

/// A hash of everything a tree's tar bytes depend on (file contents by their content-store
/// name, which is their SHA256).
fn fingerprint(tree: &Tree) -> String {
    let mut h = Sha256::new();
    for e in tree.entries() {
        h.update(e.path.as_str().as_bytes());
        h.update(format!("\0{:o}:{}:{}:{}\0", e.mode, e.uid, e.gid, e.mtime).as_bytes());
        match &e.kind {
            EntryKind::Directory => h.update(b"d"),
            EntryKind::File { content, size } => {
                h.update(format!("f{size}:").as_bytes());
                match content {
                    Content::Host(p) => {
                        h.update(p.file_name().map(|n| n.as_encoded_bytes()).unwrap_or(b""))
                    }
                    Content::Inline(b) => h.update(Sha256::digest(b)),
                    // The kept data.tar is named by its SHA256.
                    Content::HostAt { path, offset } => {
                        h.update(
                            path.file_name()
                                .map(|n| n.as_encoded_bytes())
                                .unwrap_or(b""),
                        );
                        h.update(format!("@{offset}").as_bytes());
                    }
                }
            }
            EntryKind::Symlink { target } => {
                h.update(b"l");
                h.update(target.as_bytes());
            }
            EntryKind::Hardlink { target } => {
                h.update(b"h");
                h.update(target.as_str().as_bytes());
            }
        }
        for (k, v) in &e.xattrs {
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(v);
        }
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The lock of `req` (against `base`) resolved in this session, so the user half does not
/// resolve the base again.
fn memo_resolve(
    session: &Session,
    base: Option<&Lock>,
    req: &Request,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<Lock, DebianError> {
    let base_key = base.map(|b| b.to_toml()).transpose()?.unwrap_or_default();
    let key = hash_parts([
        cache.as_os_str().as_encoded_bytes(),
        req.digest().as_bytes(),
        base_key.as_bytes(),
    ]);
    if let Some(l) = session::lock(&session.resolved).get(&key).cloned() {
        return Ok(l);
    }
    let lock = resolve_user_in(session, base, req, cache, reporter)?;
    session::lock(&session.resolved).insert(key, lock.clone());
    Ok(lock)
}

/// The packages of `lock`, those this session fetched already without reading them again.
fn memo_fetch(
    session: &Session,
    lock: &Lock,
    cache: &Path,
    offline: bool,
    reporter: &dyn Reporter,
) -> Result<Vec<Package>, DebianError> {
    let key = |p: &LockedPackage| format!("{}\0{}", cache.display(), p.sha256.to_ascii_lowercase());
    let known: HashMap<String, Arc<Package>> = {
        let m = session::lock(&session.fetched);
        lock.packages
            .iter()
            .filter_map(|p| m.get(&key(p)).map(|v| (key(p), v.clone())))
            .collect()
    };
    for p in lock.packages.iter().filter(|p| known.contains_key(&key(p))) {
        reporter.item_done(&p.name);
    }
    let todo = Lock {
        packages: lock
            .packages
            .iter()
            .filter(|p| !known.contains_key(&key(p)))
            .cloned()
            .collect(),
        ..lock.clone()
    };
    let fetched = if todo.packages.is_empty() {
        Vec::new()
    } else {
        if offline {
            let missing = crate::missing(&todo, cache)?;
            if !missing.is_empty() {
                return Err(DebianError::Offline {
                    missing: missing
                        .iter()
                        .map(|p| format!("{} {}", p.name, p.version))
                        .collect(),
                });
            }
        }
        crate::fetch_with(session, &todo, cache, reporter, offline)?
    };
    let mut by_key = known;
    for p in fetched {
        let k = key(&p.locked);
        let p = Arc::new(p);
        session::lock(&session.fetched).insert(k.clone(), p.clone());
        by_key.insert(k, p);
    }
    lock.packages
        .iter()
        .map(|lp| {
            by_key
                .get(&key(lp))
                .map(|p| Package {
                    locked: lp.clone(),
                    ..(**p).clone()
                })
                .ok_or_else(|| DebianError::Lock(format!("package {} was not fetched", lp.name)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pkgs: &[&str]) -> Request {
        Request {
            packages: pkgs.iter().map(|s| s.to_string()).collect(),
            ..Request::default()
        }
    }

    fn half(r: &Request) -> HalfLock {
        HalfLock {
            request: r.clone(),
            lock: Lock {
                version: 1,
                request: r.digest(),
                releases: Vec::new(),
                packages: vec![LockedPackage {
                    name: "bash".into(),
                    version: "5.2.15-2+b7".into(),
                    architecture: "amd64".into(),
                    filename: "pool/main/b/bash/bash.deb".into(),
                    mirror: "http://deb.debian.org/debian".into(),
                    suite: "bookworm".into(),
                    repo: String::new(),
                    size: 1,
                    sha256: "ab".repeat(32),
                    depends: vec!["libc6".into()],
                    essential: true,
                }],
            },
        }
    }

    #[test]
    fn spec_lock_round_trips_and_reports_what_differs() {
        let (b, u) = (req(&["bash"]), req(&["git"]));
        let lock = SpecLock {
            version: 1,
            base: Some(half(&b)),
            user: Some(half(&u)),
        };
        let text = lock.to_toml().expect("toml");
        let back = SpecLock::from_toml(&text, Path::new("strata.lock")).expect("parse");
        assert_eq!(back, lock);
        assert_eq!(back.package_count(), 2);
        assert_eq!(
            check_lock(Some(&back), Some(&b), Some(&u)),
            [HalfState::Fresh, HalfState::Fresh]
        );
        let u2 = req(&["git", "jq"]);
        assert_eq!(
            check_lock(Some(&back), Some(&b), Some(&u2)),
            [HalfState::Fresh, HalfState::Stale("packages: +jq".into())]
        );
        let b2 = Request {
            suite: "trixie".into(),
            ..b.clone()
        };
        let [bs, us] = check_lock(Some(&back), Some(&b2), Some(&u));
        assert_eq!(bs, HalfState::Stale("suite: bookworm -> trixie".into()));
        assert!(matches!(us, HalfState::Stale(_)));
        assert_eq!(
            check_lock(None, Some(&b), None),
            [HalfState::Missing, HalfState::Absent]
        );
        assert!(SpecLock::from_toml("version = 2\n", Path::new("x.lock")).is_err());
        assert_eq!(
            lock_path(Path::new("a/strata.toml")),
            Path::new("a/strata.lock")
        );
        assert_eq!(
            package_id(&half(&b).lock.packages[0]),
            "deb:bash_5.2.15-2+b7_amd64"
        );
    }
}
