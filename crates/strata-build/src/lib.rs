//! The build pipeline.
//!
//! A spec goes through five stages, each in its own module:
//!
//! 1. [`resolve`](mod@resolve): each half's sources resolve into store objects, the
//!    customisation entries and environment that tie them together, and the post-layer steps
//!    they need;
//! 2. [`plan`]: the planner groups objects into layers (base half below the user half), the
//!    customisation layer (the sources' generated files, the workspace account) goes on top;
//! 3. [`layers`]: each layer is written once into the store, indexed by the hash of its
//!    inputs so an unchanged layer is never written again;
//! 4. [`steps`]: the sources' post-layer steps (Debian's configure) run over the layers below
//!    them, in the order of their places, each adding a cached layer;
//! 5. [`assemble`]: the image configuration and manifest follow, and the image is recorded in
//!    the store.
//!
//! The pipeline knows no source by itself beyond building them from the spec
//! (`resolve::sources_for`): what is source-specific lives with the source. Writing the image
//! somewhere (OCI layout, docker-archive, registry) is the caller's choice.

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

mod assemble;
mod layers;
mod plan;
mod reporter;
mod resolve;
mod steps;

pub use assemble::name_and_tag;
pub use reporter::{NoReporter, Reporter};
pub use resolve::nix_input;

use serde::{Deserialize, Serialize};
use strata_oci::Digest;
use strata_oci::compress::Compression;
use strata_oci::layer::LayerDigests;
use strata_oci::output::BuiltImage;
use strata_source::StepPlace;
use strata_spec::Spec;
use strata_store::{BlobRef, ImageRecord, Store};

/// Version of the layer bytes strata writes; bump it when the tar or compression output changes
/// so old cache records are not reused for new bytes.
const LAYER_FORMAT: &str = "layer-v1";

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Layer compression.
    pub compression: Compression,
    /// Most layers the image may have, the customisation layer included.
    pub max_layers: usize,
    /// Worker threads (layers in parallel, and compression inside a layer).
    pub threads: usize,
    /// Clamp for every mtime, and the image's creation time.
    pub source_date_epoch: i64,
    /// Sources must not resolve anew: their lock files must match the spec (`--locked`).
    pub locked: bool,
    /// Sources use no network (`--offline`).
    pub offline: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Gzip,
            max_layers: 100,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            source_date_epoch: 1,
            locked: false,
            offline: false,
        }
    }
}

/// A build failure.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A source (or one of its post-layer steps) failed.
    #[error(transparent)]
    Source(#[from] strata_source::SourceError),
    /// Writing a layer failed.
    #[error("writing layer {index} ({objects})")]
    Layer {
        /// Position of the layer, from 1.
        index: usize,
        /// The objects in it.
        objects: String,
        /// The cause.
        #[source]
        source: strata_oci::layer::LayerError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] strata_store::StoreError),
    /// `max_layers` leaves no room.
    #[error(
        "--max-layers must be at least 3 (a base layer, a user layer and the customisation layer), got {0}"
    )]
    TooFewLayers(usize),
}

/// What the store remembers about a built layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digests and sizes.
    pub digests: LayerDigests,
    /// Compression of the blob.
    pub compression: String,
}

impl BlobRef for LayerRecord {
    fn blob_digest(&self) -> &str {
        &self.digests.digest
    }
}

/// One layer of a finished build.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Digest of the blob.
    pub digest: Digest,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Blob size.
    pub size: u64,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// `base`, `user`, `customisation`, or the name of a post-layer step (`configure`).
    pub part: &'static str,
    /// The store objects in it.
    pub objects: Vec<String>,
    /// Whether the store already had it.
    pub cached: bool,
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The image, its blobs in the store.
    pub image: BuiltImage,
    /// Per-layer details.
    pub layers: Vec<LayerReport>,
}

/// Builds the image of `spec` into `store`.
pub fn build(
    spec: &Spec,
    store: &Store,
    opts: &BuildOptions,
    reporter: &dyn Reporter,
) -> Result<BuildOutcome, BuildError> {
    if opts.max_layers < 3 {
        return Err(BuildError::TooFewLayers(opts.max_layers));
    }
    let _shared = store.lock_store(false)?;

    reporter.phase("resolving sources");
    let resolved = resolve::resolve(spec, store, opts, reporter)?;

    reporter.phase("planning layers");
    let mut plan = plan::plan(resolved, opts);
    reporter.layers_planned(plan.layers.len() + 1, plan.content_bytes());

    let written = layers::write(&plan.layers, store, opts, reporter)?;
    let mut stack = steps::Stack::new(written);
    let places = [StepPlace::Base, StepPlace::User];
    steps::run(spec, &plan, &places, &mut stack, store, opts, reporter)?;
    if let Some(custom) = plan::customisation_layer(spec, &mut plan, &stack.step_files)? {
        let index = stack.layers.len() + 1;
        let (record, cached) = layers::build_layer(index, &custom, store, opts, reporter)?;
        stack.layers.push((
            steps::section_of_part(custom.part),
            layers::report(&custom, &record, cached),
        ));
        plan.layers.push(custom);
    }
    steps::run(
        spec,
        &plan,
        &[StepPlace::Top],
        &mut stack,
        store,
        opts,
        reporter,
    )?;
    let kept = std::mem::take(&mut stack.kept_blobs);
    let layers = stack.into_layers();

    reporter.phase("writing image configuration");
    let image = assemble::assemble(spec, store, opts, &layers, &plan.env, plan.account.as_ref())?;
    store.record_image(&ImageRecord {
        reference: image.reference(),
        manifest: image.manifest_digest.to_string(),
        blobs: [&image.manifest_digest, &image.config_digest]
            .into_iter()
            .chain(layers.iter().map(|l| &l.digest))
            .chain(kept.iter())
            .map(Digest::to_string)
            .collect(),
    })?;
    Ok(BuildOutcome { image, layers })
}
