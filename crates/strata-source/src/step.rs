//! Post-layer steps: work a source does on the image once the layers below are written.
//!
//! The Debian source configures its packages this way (the image's own `dpkg` runs their
//! maintainer scripts in a sandbox). A step sees the layers below it and returns the entries of
//! one new layer; the pipeline decides where steps go ([`StepPlace`]), keys their layers by
//! [`PostLayerStep::key`] so an unchanged image runs nothing, and writes the layers.

use std::any::Any;
use std::fmt;
use std::path::PathBuf;

use strata_fstree::Entry;
use strata_oci::compress::Compression;
use strata_store::Store;

/// Where a step's layer goes in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPlace {
    /// Right above the base half's layers: it sees only the base.
    Base,
    /// Right above the user half's layers (and the base's steps).
    User,
    /// Above everything, the customisation layer included.
    Top,
}

/// A layer below a step, as the pipeline wrote it into the store.
#[derive(Debug, Clone)]
pub struct LayerBelow {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: strata_oci::Digest,
    /// The blob file in the store.
    pub blob: PathBuf,
    /// How the blob is compressed.
    pub compression: Compression,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// Whether a post-layer step made it (a configure layer, say) rather than a source.
    pub from_step: bool,
}

/// What a step sees of the build.
pub struct StepContext<'a> {
    /// The store the image is built into (scratch space, unpacked root file systems).
    pub store: &'a Store,
    /// OCI architecture of the image.
    pub architecture: &'a str,
    /// Clamp for file times, and the `SOURCE_DATE_EPOCH` scripts see.
    pub source_date_epoch: i64,
    /// The image's layers below the step, lowest first.
    pub below: &'a [LayerBelow],
    /// Whether the layers below hold an image path (`usr/bin/dpkg`, no leading `/`).
    pub holds: &'a (dyn Fn(&str) -> bool + Sync),
    /// Where the step reports its progress (e.g. the packages it has configured).
    pub reporter: &'a dyn crate::Reporter,
}

/// The entries of a step's layer. Entries may refer to host files under the step's scratch
/// directories; `scratch` keeps them alive and removes them when dropped, after the pipeline
/// has written the layer.
pub struct StepLayer {
    /// The layer's entries (OCI whiteouts for deletions), in any order.
    pub entries: Vec<Entry>,
    /// Owner of the host files the entries refer to.
    pub scratch: Box<dyn Any + Send>,
    /// Called once the layer is written, before `scratch` is dropped, with its uncompressed
    /// blob and diff id (the Debian step keeps its configured root file system this way).
    pub written: Option<LayerWritten>,
    /// Whether the layer may be kept for the step's key. A step that fell back to a lesser
    /// result on this machine (it could not run its tools) says no, so a later build on a
    /// machine that can run them does the real work.
    pub cache: bool,
}

/// What a step does with its layer once the pipeline has written it: the uncompressed blob in
/// the store and its diff id. Best effort: it reports nothing and must leave no half state.
pub type LayerWritten = Box<dyn FnOnce(&std::path::Path, &strata_oci::Digest) + Send>;

/// Work a source does on the image after the layers below are written, adding one layer.
pub trait PostLayerStep: fmt::Debug + Send + Sync {
    /// The layer's `part` in build reports and history (`configure`).
    fn name(&self) -> &'static str;

    /// Where the layer goes.
    fn place(&self) -> StepPlace;

    /// Whether the plan should keep a layer free for this step (it will most likely add one).
    fn reserves_layer(&self) -> bool;

    /// The cache key of the layer this step adds over `ctx.below`, or `None` when the step
    /// does not apply to this image (it says why on stderr). Equal keys must mean equal
    /// layer content, so the key depends on the content below (diff ids), never on how the
    /// layers are compressed.
    fn key(&self, ctx: &StepContext<'_>) -> Option<String>;

    /// What a progress display shows while the step runs (`configuring Debian packages`).
    fn phase(&self) -> &'static str;

    /// Runs the step. `Ok(None)`: the image goes without its layer.
    fn run(&self, ctx: &StepContext<'_>, key: &str) -> Result<Option<StepLayer>, StepError>;
}

/// A post-layer step's failure: the step's own error, shown as it is.
pub struct StepError(pub Box<dyn std::error::Error + Send + Sync>);

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for StepError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
