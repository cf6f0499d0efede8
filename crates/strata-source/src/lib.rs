//! Content sources and the store objects they produce.
//!
//! A *source* turns one part of a spec (`tree`, `debian`, `nix`, ...) into *store objects*:
//! named file trees with references to other objects, a DAG like Nix store paths. The layer
//! planner decides which objects share a layer; the OCI writer turns them into tars. Every
//! source implements [`Source`], so the build pipeline treats them all alike.
//!
//! Work a source needs done on the image after its layers are written (the Debian source
//! configures its packages with the image's own `dpkg`) is a [`PostLayerStep`] the source
//! returns in its [`Resolution`]; the pipeline only orders the steps and caches their layers.

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

mod step;
mod tree;

pub use step::{
    LayerBelow, LayerWritten, PostLayerStep, StepContext, StepError, StepLayer, StepPlace,
};
pub use tree::{TreeInput, TreeSource};

use std::any::{Any, TypeId};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use strata_fstree::Tree;

/// A named file tree with references to other objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreObject {
    /// Unique, stable name (`tree:/etc/motd`, `deb:bash_5.2.15-2+b7_amd64`, a Nix store path).
    pub id: String,
    /// The files it puts into the image.
    pub tree: Tree,
    /// Ids of the objects it needs.
    pub references: Vec<String>,
    /// Hash of everything that determines the tree's bytes: equal keys mean equal content, so a
    /// cache may reuse a layer built for the same key without reading the files again.
    pub cache_key: String,
}

impl StoreObject {
    /// Bytes of file content in the object.
    pub fn size(&self) -> u64 {
        self.tree.content_size()
    }
}

/// What a source made of its part of the spec.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// Every object, dependencies included.
    pub objects: Vec<StoreObject>,
    /// The objects the spec asked for directly (roots of the popularity contest).
    pub roots: Vec<String>,
    /// Small generated files that tie the objects together (profile links, `/bin/sh`,
    /// `/etc/passwd`, ...). They go into the image's last layer, the customisation layer.
    pub customisation: Vec<strata_fstree::Entry>,
    /// Environment the content needs (`PATH`, `SSL_CERT_FILE`); the spec's `[config] env`
    /// overrides it. A `PATH` from several sources is joined in order; an entry keyed
    /// [`PATH_BEFORE_SYSTEM`] adds directories to `PATH` ahead of the system's own.
    pub env: Vec<(String, String)>,
    /// Work to do on the image once its layers are written, each adding a layer (see
    /// [`PostLayerStep`]).
    pub steps: Vec<Arc<dyn PostLayerStep>>,
}

/// Key of a [`Resolution::env`] entry whose value (`:`-separated directories) goes into the
/// image's `PATH` ahead of the system directories (`/usr/local/bin`, `/usr/bin`, ...), which
/// otherwise come first when several sources contribute to `PATH`. A Python venv's `bin` uses
/// it, so that its `python3` is the one found by name. The key itself never reaches the image.
pub const PATH_BEFORE_SYSTEM: &str = "PATH (before system)";

/// Equal resolutions: the same objects, roots, generated files and environment, and steps of
/// the same names at the same places (a step's own state is the source's business).
impl PartialEq for Resolution {
    fn eq(&self, other: &Self) -> bool {
        let steps = |r: &Resolution| -> Vec<(&'static str, StepPlace)> {
            r.steps.iter().map(|s| (s.name(), s.place())).collect()
        };
        self.objects == other.objects
            && self.roots == other.roots
            && self.customisation == other.customisation
            && self.env == other.env
            && steps(self) == steps(other)
    }
}

impl Eq for Resolution {}

impl Resolution {
    /// Appends another resolution of the same half.
    pub fn extend(&mut self, other: Resolution) {
        self.objects.extend(other.objects);
        self.roots.extend(other.roots);
        self.customisation.extend(other.customisation);
        self.env.extend(other.env);
        self.steps.extend(other.steps);
    }
}

/// Where a source may keep downloads, what it builds for, what the rest of the image brings,
/// the build's session and where it reports progress. The pipeline fills it for each source;
/// new fields may be added, so sources read the ones they need and never build one themselves
/// outside tests.
pub struct SourceContext<'a> {
    /// A directory the source owns for its caches (inside the strata store).
    pub cache_dir: &'a Path,
    /// OCI architecture of the image (`amd64`, `arm64`).
    pub architecture: &'a str,
    /// Fail unless the source's lock file matches the spec (`--locked`): never resolve anew.
    pub locked: bool,
    /// Use no network (`--offline`): everything must be locked and in the cache.
    pub offline: bool,
    /// Whether another source of the image brings a base system (its own `/bin/sh`,
    /// `/etc/passwd`, loader; see [`Source::provides_system`]); a source that could generate
    /// such files then leaves them to it.
    pub system_provided: bool,
    /// Image paths other sources put there explicitly (see [`Source::provided_paths`]);
    /// nothing should be generated at or beneath them.
    pub provided: &'a BTreeSet<strata_fstree::ImagePath>,
    /// State shared by the sources of one build (memo tables), dropped with the build.
    pub session: &'a Session,
    /// Where the source reports what it is doing.
    pub reporter: &'a dyn Reporter,
}

/// The empty set [`SourceContext::new`] starts from.
static NOTHING_PROVIDED: BTreeSet<strata_fstree::ImagePath> = BTreeSet::new();

impl<'a> SourceContext<'a> {
    /// A context with the defaults: may resolve and use the network, no other source in the
    /// image, no progress shown. The pipeline sets the rest field by field.
    pub fn new(cache_dir: &'a Path, architecture: &'a str, session: &'a Session) -> Self {
        Self {
            cache_dir,
            architecture,
            locked: false,
            offline: false,
            system_provided: false,
            provided: &NOTHING_PROVIDED,
            session,
            reporter: &NoReporter,
        }
    }
}

/// Progress of a source, for a UI to show. Library crates never draw anything themselves;
/// every method has an empty default.
pub trait Reporter: Send + Sync {
    /// A human-readable progress message (`fetching bash 5.2`).
    fn message(&self, _msg: &str) {}
    /// `bytes` of `total` (0 when unknown) of file `name` have been downloaded.
    fn download(&self, _name: &str, _bytes: u64, _total: u64) {}
    /// A counted step starts: `total` items (`what` says of what: `packages fetched`,
    /// `scripts run`).
    fn items_started(&self, _what: &str, _total: u64) {}
    /// One item of the current counted step is done (`item` names it).
    fn item_done(&self, _item: &str) {}
}

/// A [`Reporter`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReporter;

impl Reporter for NoReporter {}

/// State the sources of one build share, such as memo tables of verified downloads, so that
/// the second half of a spec does not fetch again what the first fetched. Each source keeps
/// its own type in it ([`Session::state`]); everything is dropped with the session, so two
/// builds (or two tests) never see each other's state and a long-running process does not
/// accumulate it.
#[derive(Default)]
pub struct Session {
    states: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.states.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Session").field("states", &n).finish()
    }
}

impl Session {
    /// An empty session.
    pub fn new() -> Self {
        Self::default()
    }

    /// The session's value of type `T`, made with `T::default()` on first use.
    pub fn state<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        let mut map = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let slot = map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()) as Arc<dyn Any + Send + Sync>)
            .clone();
        drop(map);
        // The entry under `TypeId::of::<T>()` is only ever made from a `T`.
        slot.downcast::<T>()
            .unwrap_or_else(|_| Arc::new(T::default()))
    }
}

/// A source that could not produce its objects.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A spec entry could not be read; `context` says which entry (file, line, key).
    #[error("{context}: {message}")]
    Entry {
        /// Where the entry is, e.g. `strata.toml:7:3: base.tree[0]`.
        context: String,
        /// What is wrong.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Any other failure of a source.
    #[error("{source_kind} source: {message}")]
    Other {
        /// The source (`tree`, `debian`, `nix`).
        source_kind: &'static str,
        /// What went wrong.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A post-layer step failed; its error says which and why.
    #[error(transparent)]
    Step(#[from] StepError),
}

/// A content source.
pub trait Source {
    /// The spec key this source reads (`tree`, `debian`, `nix`).
    fn kind(&self) -> &'static str;

    /// Produces the store objects for its part of the spec.
    fn resolve(&self, ctx: &SourceContext<'_>) -> Result<Resolution, SourceError>;

    /// Whether this source brings a base system of its own (a distribution's `/bin/sh`,
    /// account files and loader), known before anything is resolved.
    fn provides_system(&self) -> bool {
        false
    }

    /// Image paths this source puts there explicitly, known before anything is resolved
    /// (a `tree` entry's `dest`); generated files of other sources stay out of them.
    fn provided_paths(&self) -> Vec<strata_fstree::ImagePath> {
        Vec::new()
    }
}

/// Hashes a sequence of byte strings unambiguously (each is length-prefixed).
pub fn hash_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counter(AtomicUsize);

    #[test]
    fn session_state_is_shared_within_a_session_only() {
        let a = Session::new();
        a.state::<Counter>().0.fetch_add(1, Ordering::SeqCst);
        assert_eq!(a.state::<Counter>().0.load(Ordering::SeqCst), 1);
        let b = Session::new();
        assert_eq!(b.state::<Counter>().0.load(Ordering::SeqCst), 0);
    }
}
