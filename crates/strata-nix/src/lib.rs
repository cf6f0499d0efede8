//! The Nix source: layered images from Nix store closures.
//!
//! [`NixSource`] drives the real `nix` command line: it builds the spec's installables
//! (`nix-build --no-out-link` for expression files, `nix build --no-link --json` for flake
//! references and the like), adds the given store paths as they are, and asks
//! `nix path-info --json --recursive` for the closure with references and NAR hashes. Every
//! store path becomes one [`StoreObject`] whose id is the store path, so the layer planner sees
//! Nix's own dependency graph and two images sharing store paths share layer blobs.
//!
//! Files are read straight from the store directory, wherever the configured store keeps them
//! (see [`StoreLocation`]). The customisation entries make the closure a usable container: a
//! profile (a symlink forest of the requested outputs) with `PATH` set to its `bin`, `/bin/sh`
//! and `/usr/bin/env` into the closure, `/tmp` and `/var/tmp`, minimal account files, the CA
//! bundle with `SSL_CERT_FILE`, and, when the closure has a glibc, the FHS dynamic loader plus
//! links to its libraries, so programs copied in from other distributions run.

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

mod cli;
mod custom;
pub mod db;
mod location;
mod lock;

pub use cli::PathInfo;
pub use custom::CA_BUNDLE;
pub use location::StoreLocation;
pub use lock::{HalfLock, LockedFlake, LockedOutput, NixLock};

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;

use rayon::prelude::*;
use strata_fstree::{ImagePath, WalkError, WalkOptions, walk};
use strata_source::{Resolution, Source, SourceContext, SourceError, StoreObject, hash_parts};

use cli::{Installable, Nix};

/// A failure of the `nix` commands or of reading the store.
#[derive(Debug, thiserror::Error)]
pub enum NixError {
    /// The program is not installed.
    #[error(
        "cannot run `{program}`: Nix is not installed or not on PATH (on Debian: apt-get install nix-bin)"
    )]
    NotInstalled {
        /// `nix` or `nix-build`.
        program: String,
        /// The failure to start it.
        #[source]
        source: io::Error,
    },
    /// The program could not be started for another reason.
    #[error("cannot run `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A command failed; `stderr` is Nix's own message.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A command printed something strata does not understand.
    #[error("unexpected output from `{command}`: {message}")]
    Output {
        /// The command line.
        command: String,
        /// What is wrong with it.
        message: String,
    },
    /// A store path is not in the store.
    #[error("`{0}` is not a valid path in the Nix store")]
    NotInStore(String),
    /// The store is not one whose files strata can read.
    #[error("Nix store `{uri}` is not supported: {why}")]
    UnsupportedStore {
        /// The store URI.
        uri: String,
        /// Why.
        why: String,
    },
    /// A path Nix reported is not a store path strata can place in an image.
    #[error("`{0}` is not an absolute store path")]
    BadPath(String),
    /// A NAR hash is in no form strata knows.
    #[error("store path `{0}` has a NAR hash strata cannot read: `{1}`")]
    BadHash(String, String),
    /// A path refers to one that is not in the closure (Nix's closure is always complete, so
    /// the store changed while strata read it).
    #[error("store path `{path}` refers to `{reference}`, which is not in the closure")]
    NotInClosure {
        /// The referrer.
        path: String,
        /// The missing reference.
        reference: String,
    },
    /// Writing the image's Nix database failed.
    #[error("cannot write the Nix database `{}`", path.display())]
    Database {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The lock file cannot be read or parsed.
    #[error("lock file {}: {message}", path.display())]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `--locked`: the installables no longer resolve to what the lock file records, or the
    /// lock file has nothing for this half.
    #[error("{0}")]
    Locked(String),
    /// Reading a store path's files failed.
    #[error("cannot read store path `{path}` at `{}`", physical.display())]
    Read {
        /// The store path.
        path: String,
        /// Where its files were expected.
        physical: PathBuf,
        /// The cause.
        #[source]
        source: WalkError,
    },
}

impl NixError {
    /// What strata was doing when this happened, as a short phrase for messages.
    pub fn stage(&self) -> &'static str {
        match self {
            NixError::NotInstalled { .. } | NixError::Spawn { .. } => "cannot run Nix",
            NixError::Failed { .. } | NixError::Output { .. } => "Nix failed",
            NixError::NotInStore(_) | NixError::BadPath(_) | NixError::BadHash(..) => {
                "cannot use a store path"
            }
            NixError::LockFile { .. } | NixError::Locked(_) => "the Nix lock does not hold",
            NixError::NotInClosure { .. } | NixError::Database { .. } => {
                "cannot register the closure in the image's Nix database"
            }
            NixError::UnsupportedStore { .. } | NixError::Read { .. } => {
                "cannot read the Nix store"
            }
        }
    }
}

/// The Nix part of one half of a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixInput {
    /// Installables as the `nix` command takes them, in order.
    pub installables: Vec<String>,
    /// Store paths taken as they are, in order.
    pub paths: Vec<String>,
    /// Where the profile (the symlink forest of the requested outputs) goes in the image.
    pub profile: ImagePath,
    /// Directory that relative installables are relative to (the spec's directory); the `nix`
    /// commands run in it.
    pub dir: PathBuf,
    /// A store URI passed to every command as `--store`; `None` uses Nix's configured store
    /// (`NIX_REMOTE`, `NIX_CONFIG`, `nix.conf`).
    pub store: Option<String>,
    /// Whether to generate the global files: `/bin/sh`, `/usr/bin/env`, `/etc/passwd`,
    /// `/etc/group`, `/etc/shadow`, `/etc/nsswitch.conf`, the CA bundle link and the FHS
    /// loader. An image whose other half is a distribution that has them turns this off.
    pub system_files: bool,
    /// Image paths other content provides; nothing is generated at or beneath them.
    pub provided: BTreeSet<ImagePath>,
    /// Whether to register the closure in the image's Nix database (`/nix/var/nix/db`), so
    /// the nix inside the image can use the store.
    pub database: bool,
    /// Owner (`uid`, `gid`) of the store directory and Nix's state when `database` is set:
    /// the account that runs Nix in the image.
    pub owner: (u32, u32),
    /// The spec's lock file (`strata.lock`), which need not exist; `None` locks nothing.
    pub lock_file: Option<PathBuf>,
    /// The half (`base` or `user`) whose lock applies.
    pub half: String,
    /// Where the section is in the spec, for messages (`strata.toml:9:1: user.nix`).
    pub context: String,
}

impl NixInput {
    /// An input with the defaults: Nix's configured store, global files generated, nothing
    /// provided by other content.
    pub fn new(
        installables: Vec<String>,
        paths: Vec<String>,
        profile: ImagePath,
        dir: PathBuf,
        context: String,
    ) -> Self {
        Self {
            installables,
            paths,
            profile,
            dir,
            store: None,
            system_files: true,
            provided: BTreeSet::new(),
            database: false,
            owner: (0, 0),
            lock_file: None,
            half: "user".to_owned(),
            context,
        }
    }
}

/// The Nix source.
#[derive(Debug, Clone)]
pub struct NixSource {
    input: NixInput,
}

impl NixSource {
    /// A source for one spec half's `nix` section.
    pub fn new(mut input: NixInput) -> Self {
        // The commands run in `dir`, so paths handed to them must not be relative to it again.
        if let Ok(abs) = std::path::absolute(&input.dir) {
            input.dir = abs;
        }
        Self { input }
    }

    /// Builds the installables and returns the requested output paths (installables' outputs,
    /// then the given paths), in order and without repeats.
    pub fn realise(&self) -> Result<Vec<String>, NixError> {
        Ok(self
            .realise_named(false)?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// Like [`NixSource::realise`], each output with the installable (or given path) it
    /// comes from; `offline` keeps Nix from substituting.
    fn realise_named(&self, offline: bool) -> Result<Vec<(String, String)>, NixError> {
        let mut nix = self.nix();
        nix.offline = offline;
        let mut roots: Vec<(String, String)> = Vec::new();
        let mut cli_batch: Vec<String> = Vec::new();
        let mut raw_batch: Vec<String> = Vec::new();
        // Consecutive `nix build` installables go in one call; order is kept.
        let flush =
            |batch: &mut Vec<String>, raw: &mut Vec<String>, roots: &mut Vec<(String, String)>| {
                if batch.is_empty() {
                    return Ok(());
                }
                let per = nix.build(batch)?;
                // One result per installable, in order, when Nix gives them so; else the batch.
                let named = per.len() == raw.len();
                for (i, paths) in per.into_iter().enumerate() {
                    let name = if named { raw[i].clone() } else { raw.join(" ") };
                    roots.extend(paths.into_iter().map(|p| (name.clone(), p)));
                }
                batch.clear();
                raw.clear();
                Ok::<(), NixError>(())
            };
        for raw in &self.input.installables {
            match Installable::classify(raw, &self.input.dir) {
                Installable::Cli(s) => {
                    cli_batch.push(s);
                    raw_batch.push(raw.clone());
                }
                Installable::File(file) => {
                    flush(&mut cli_batch, &mut raw_batch, &mut roots)?;
                    roots.extend(nix.build_file(&file)?.into_iter().map(|p| (raw.clone(), p)));
                }
            }
        }
        flush(&mut cli_batch, &mut raw_batch, &mut roots)?;
        roots.extend(
            self.input
                .paths
                .iter()
                .map(|p| (p.clone(), p.trim_end_matches('/').to_owned())),
        );
        let mut seen = BTreeSet::new();
        roots.retain(|(_, r)| seen.insert(r.clone()));
        Ok(roots)
    }

    /// Builds the installables and locks what they resolved to: every requested output's
    /// store path and NAR hash.
    pub fn lock(&self) -> Result<HalfLock, NixError> {
        let named = self.realise_named(false)?;
        let roots: Vec<String> = named.iter().map(|(_, p)| p.clone()).collect();
        let infos = self.closure(&roots)?;
        let outputs = named
            .into_iter()
            .map(|(installable, path)| {
                let info = infos
                    .iter()
                    .find(|i| i.path == path)
                    .ok_or_else(|| NixError::NotInStore(path.clone()))?;
                Ok(LockedOutput {
                    installable,
                    nar_hash: info.nar_hash.clone(),
                    path,
                })
            })
            .collect::<Result<_, NixError>>()?;
        let mut flakes: Vec<LockedFlake> = Vec::new();
        for raw in &self.input.installables {
            let Installable::Cli(reference) = Installable::classify(raw, &self.input.dir) else {
                continue;
            };
            if reference.starts_with("/nix/store/") {
                continue;
            }
            let flake = reference
                .split_once('#')
                .map_or(reference.as_str(), |(f, _)| f);
            let flake = if flake.is_empty() { "." } else { flake };
            if flakes.iter().any(|f| f.flake == flake) {
                continue;
            }
            flakes.push(self.nix().flake_lock(flake)?);
        }
        Ok(HalfLock {
            installables: self.input.installables.clone(),
            paths: self.input.paths.clone(),
            outputs,
            flakes,
        })
    }

    /// This half's lock from the lock file, when there is one made for this request.
    fn locked_half(&self) -> Result<Option<HalfLock>, NixError> {
        let Some(file) = &self.input.lock_file else {
            return Ok(None);
        };
        let Some(lock) = NixLock::read(file)? else {
            return Ok(None);
        };
        Ok(lock
            .half(&self.input.half)
            .filter(|h| h.matches(&self.input.installables, &self.input.paths))
            .cloned())
    }

    /// The requested outputs, as the flags want them: `--offline` with a lock takes the
    /// locked paths without evaluating anything; `--locked` evaluates and refuses paths that
    /// differ from the lock, naming them.
    fn roots_for(
        &self,
        locked: bool,
        offline: bool,
    ) -> Result<(Vec<String>, Option<HalfLock>), NixError> {
        let lock = if locked || offline {
            self.locked_half()?
        } else {
            None
        };
        let file = || {
            self.input
                .lock_file
                .as_deref()
                .map_or_else(|| "the lock file".to_owned(), |p| p.display().to_string())
        };
        if offline && let Some(lock) = &lock {
            let mut seen = BTreeSet::new();
            let roots = lock
                .outputs
                .iter()
                .map(|o| o.path.clone())
                .filter(|p| seen.insert(p.clone()))
                .collect();
            return Ok((roots, Some(lock.clone())));
        }
        if locked && lock.is_none() {
            return Err(NixError::Locked(format!(
                "--locked: {} has no Nix lock for [{}].nix matching its installables and paths; \
                 run `strata lock`",
                file(),
                self.input.half
            )));
        }
        let named = self.realise_named(offline)?;
        if let Some(lock) = &lock {
            let now: Vec<(&str, &str)> = named
                .iter()
                .map(|(i, p)| (i.as_str(), p.as_str()))
                .collect();
            let then: Vec<(&str, &str)> = lock
                .outputs
                .iter()
                .map(|o| (o.installable.as_str(), o.path.as_str()))
                .collect();
            if now != then {
                let mut lines = Vec::new();
                for (i, p) in &now {
                    if !then.contains(&(i, p)) {
                        lines.push(format!("  {i}: now {p}"));
                    }
                }
                for (i, p) in &then {
                    if !now.contains(&(i, p)) {
                        lines.push(format!("  {i}: locked {p}"));
                    }
                }
                return Err(NixError::Locked(format!(
                    "--locked: [{}].nix now evaluates to other store paths than {} records:\n{}\n\
                     run `strata lock` to accept them",
                    self.input.half,
                    file(),
                    lines.join("\n")
                )));
            }
        }
        Ok((named.into_iter().map(|(_, p)| p).collect(), lock))
    }

    /// Where the store keeps its files.
    pub fn location(&self) -> Result<StoreLocation, NixError> {
        let uri = match &self.input.store {
            Some(uri) => uri.clone(),
            None => self.nix().configured_store()?,
        };
        StoreLocation::from_uri(&uri, &self.input.dir)
    }

    /// The closure of `roots`, one store object per store path, sorted by path.
    pub fn objects(
        &self,
        roots: &[String],
        location: &StoreLocation,
    ) -> Result<Vec<StoreObject>, NixError> {
        if roots.is_empty() {
            return Ok(Vec::new());
        }
        let infos = self.nix().closure(roots)?;
        objects_of(&infos, location)
    }

    /// What `nix path-info` says of the closure of `roots`, sorted by path.
    pub fn closure(&self, roots: &[String]) -> Result<Vec<PathInfo>, NixError> {
        if roots.is_empty() {
            return Ok(Vec::new());
        }
        self.nix().closure(roots)
    }

    fn nix(&self) -> Nix<'_> {
        Nix {
            store: self.input.store.as_deref(),
            dir: &self.input.dir,
            offline: false,
        }
    }

    fn resolve_inner(&self, ctx: &SourceContext<'_>) -> Result<Resolution, NixError> {
        // The store first: a store strata cannot read fails before anything is built.
        let location = self.location()?;
        let (roots, lock) = self.roots_for(ctx.locked, ctx.offline)?;
        let infos = self.closure(&roots)?;
        // A locked output whose NAR hash changed is not what was locked either.
        if let Some(lock) = &lock {
            for o in &lock.outputs {
                let now = infos.iter().find(|i| i.path == o.path);
                if let Some(info) = now
                    && db::base16_hash(&info.nar_hash) != db::base16_hash(&o.nar_hash)
                {
                    return Err(NixError::Locked(format!(
                        "[{}].nix: {} has NAR hash {} in the store, {} in the lock file",
                        self.input.half, o.path, info.nar_hash, o.nar_hash
                    )));
                }
            }
        }
        let objects = objects_of(&infos, &location)?;
        // Every Nix half of the build so far: a database registers them all, so one in the
        // user half makes the base half's closure valid too.
        let registry = ctx.session.state::<Registry>();
        let (all_infos, all_roots) = {
            let mut seen = registry.lock();
            seen.infos
                .extend(infos.iter().map(|i| (i.path.clone(), i.clone())));
            seen.roots.extend(roots.iter().cloned());
            (
                seen.infos.values().cloned().collect::<Vec<_>>(),
                seen.roots.clone(),
            )
        };
        // What other sources bring wins: their paths, and a distribution's system files.
        let provided: BTreeSet<ImagePath> =
            self.input.provided.union(ctx.provided).cloned().collect();
        let (customisation, env) = custom::generate(&custom::Inputs {
            objects: &objects,
            roots: &roots,
            profile: &self.input.profile,
            architecture: ctx.architecture,
            system_files: self.input.system_files && !ctx.system_provided,
            provided: &provided,
        });
        let mut customisation = customisation;
        if self.input.database {
            let scratch =
                tempfile::tempdir_in(ctx.cache_dir).map_err(|source| NixError::Database {
                    path: ctx.cache_dir.to_owned(),
                    source: Box::new(source),
                })?;
            let mut registered =
                db::entries(&all_infos, &all_roots, self.input.owner, scratch.path())?;
            registered.retain(|e| !provided.iter().any(|p| e.path.starts_with(p)));
            customisation.extend(registered);
        }
        Ok(Resolution {
            objects,
            roots,
            customisation,
            env,
            steps: Vec::new(),
        })
    }
}

/// The closures of the build's Nix halves resolved so far (kept in the build's session).
#[derive(Default)]
struct Registry(std::sync::Mutex<Registered>);

#[derive(Default)]
struct Registered {
    infos: std::collections::BTreeMap<String, PathInfo>,
    roots: Vec<String>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registered> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn objects_of(infos: &[PathInfo], location: &StoreLocation) -> Result<Vec<StoreObject>, NixError> {
    infos
        .par_iter()
        .map(|info| store_object(info, location))
        .collect()
}

/// One store path as a store object: its files read from where the store keeps them.
fn store_object(info: &PathInfo, location: &StoreLocation) -> Result<StoreObject, NixError> {
    let dest = ImagePath::new(&info.path)
        .ok()
        .filter(|_| info.path.starts_with('/'))
        .ok_or_else(|| NixError::BadPath(info.path.clone()))?;
    let physical = location.physical(&info.path);
    let (tree, _fingerprint) =
        walk(&physical, &dest.into(), &WalkOptions::default()).map_err(|source| {
            NixError::Read {
                path: info.path.clone(),
                physical: physical.clone(),
                source,
            }
        })?;
    let mut references: Vec<String> = info
        .references
        .iter()
        .filter(|r| **r != info.path)
        .cloned()
        .collect();
    references.sort();
    references.dedup();
    // Store paths are immutable: the path and its NAR hash determine every byte.
    let cache_key = hash_parts([
        b"nix-v1".as_slice(),
        info.path.as_bytes(),
        info.nar_hash.as_bytes(),
    ]);
    Ok(StoreObject {
        id: info.path.clone(),
        tree,
        references,
        cache_key,
    })
}

impl Source for NixSource {
    fn kind(&self) -> &'static str {
        "nix"
    }

    fn resolve(&self, ctx: &SourceContext<'_>) -> Result<Resolution, SourceError> {
        // The error's own text follows the message when the chain is printed.
        self.resolve_inner(ctx).map_err(|e| SourceError::Entry {
            context: self.input.context.clone(),
            message: e.stage().to_owned(),
            source: Some(Box::new(e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_spec_directory_is_made_absolute() {
        let profile = ImagePath::new("/p").expect("path");
        let input = NixInput::new(vec![], vec![], profile, PathBuf::from("spec"), "x".into());
        let source = NixSource::new(input);
        assert!(source.input.dir.is_absolute());
        assert!(source.input.dir.ends_with("spec"));
        assert_eq!(
            source.realise().expect("nothing to build"),
            Vec::<String>::new()
        );
    }
}
