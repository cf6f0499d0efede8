//! Stage 4: the sources' post-layer steps, each over the layers below its place, each adding
//! one layer (see [`strata_source::PostLayerStep`]).
//!
//! Places stack in this order: the base half's layers, the steps placed after the base, the
//! user half's layers, the steps placed after the user half, the customisation layer, the
//! steps placed on top.
//!
//! A step's layer is keyed by the step's own key (the content below it, never its
//! compression) and kept uncompressed in the store; the blob of the build's compression is
//! made from that tar and cached by its diff id. So building the same image to an OCI layout
//! (gzip), a docker-archive (uncompressed) or with zstd runs a step once. The step's files
//! under `/etc` are recorded with it, so the customisation layer (the workspace account's
//! `/etc/passwd`, ...) is made over what the step left there, even when the step did not run.

use std::collections::HashSet;
use std::io::BufWriter;

use serde::{Deserialize, Serialize};
use strata_fstree::{Entry, EntryKind, ImagePath, Tree};
use strata_oci::compress::Compression;
use strata_oci::layer::{LayerDigests, LayerOptions, compress_tar};
use strata_source::{LayerBelow, StepContext, StepPlace, StoreObject, hash_parts};
use strata_spec::Spec;
use strata_store::Store;

use crate::layers::build_layer;
use crate::plan::{Plan, PlannedLayer};
use crate::{BuildError, BuildOptions, LAYER_FORMAT, LayerRecord, LayerReport, Reporter};

/// Version of how step layers are keyed and recorded.
const STEP_FORMAT: &str = "step-v2";

/// Largest file under `/etc` a step record keeps.
const KEPT_FILE_SIZE: u64 = 256 << 10;

/// Where a layer stands in the image, lowest first.
pub(crate) fn section_of_part(part: &str) -> u8 {
    match part {
        crate::plan::BASE => 0,
        crate::plan::USER => 2,
        crate::plan::USER_CONTENT => 4,
        _ => 5,
    }
}

fn section_of_place(place: StepPlace) -> u8 {
    match place {
        StepPlace::Base => 1,
        StepPlace::User => 3,
        StepPlace::Top => 6,
    }
}

/// What the store remembers about a step's layer: its uncompressed tar (a blob named by the
/// diff id) and its small files under `/etc`. It reads as a [`LayerRecord`] of the
/// uncompressed blob too, so `gc` keeps it as long as that blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StepRecord {
    digests: LayerDigests,
    compression: String,
    etc: Vec<KeptFile>,
}

/// A file or symlink under `/etc` of a step's layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeptFile {
    path: String,
    mode: u32,
    uid: u32,
    gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<String>,
}

impl KeptFile {
    fn of(e: &Entry) -> Option<Self> {
        if !e.path.as_str().starts_with("etc/") {
            return None;
        }
        let (data, link) = match &e.kind {
            EntryKind::File { content, size } if *size <= KEPT_FILE_SIZE => {
                (Some(content.read(*size).ok()?), None)
            }
            EntryKind::Symlink { target } => (None, Some(target.clone())),
            _ => return None,
        };
        Some(Self {
            path: e.path.as_str().to_owned(),
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            data,
            link,
        })
    }

    fn entry(&self) -> Option<Entry> {
        let path = ImagePath::new(&self.path).ok()?;
        let mut e = match (&self.data, &self.link) {
            (Some(d), _) => Entry::inline_file(path, self.mode, d.clone()),
            (None, Some(l)) => Entry::symlink(path, l),
            (None, None) => return None,
        };
        e.uid = self.uid;
        e.gid = self.gid;
        Some(e)
    }
}

/// The image's layers so far, each with its section.
pub(crate) struct Stack {
    /// Layers, lowest first.
    pub layers: Vec<(u8, LayerReport)>,
    /// Small `/etc` files of the steps' layers, lowest first.
    pub step_files: Vec<Entry>,
    /// Uncompressed step blobs the image record keeps from gc.
    pub kept_blobs: Vec<strata_oci::Digest>,
}

impl Stack {
    /// A stack of the written layers.
    pub fn new(written: Vec<LayerReport>) -> Self {
        Self {
            layers: written
                .into_iter()
                .map(|l| (section_of_part(l.part), l))
                .collect(),
            step_files: Vec::new(),
            kept_blobs: Vec::new(),
        }
    }

    /// The layers, lowest first.
    pub fn into_layers(self) -> Vec<LayerReport> {
        self.layers.into_iter().map(|(_, l)| l).collect()
    }
}

/// Runs the plan's steps placed at one of `places` over the stack, inserting their layers.
pub(crate) fn run(
    spec: &Spec,
    plan: &Plan,
    places: &[StepPlace],
    stack: &mut Stack,
    store: &Store,
    opts: &BuildOptions,
    reporter: &dyn Reporter,
) -> Result<(), BuildError> {
    for step in plan.steps.iter().filter(|s| places.contains(&s.place())) {
        let section = section_of_place(step.place());
        let at = stack
            .layers
            .iter()
            .take_while(|(s, _)| *s <= section)
            .count();
        let below: Vec<LayerBelow> = stack.layers[..at]
            .iter()
            .map(|(s, l)| {
                Ok(LayerBelow {
                    diff_id: l.diff_id.clone(),
                    blob: store.blob_path(&l.digest)?,
                    compression: opts.compression,
                    uncompressed_size: l.uncompressed_size,
                    from_step: [StepPlace::Base, StepPlace::User, StepPlace::Top]
                        .iter()
                        .any(|p| section_of_place(*p) == *s),
                })
            })
            .collect::<Result<_, BuildError>>()?;
        // The paths of the planned layers below (a step's own layer is not looked into).
        let paths: HashSet<&str> = plan
            .layers
            .iter()
            .filter(|l| section_of_part(l.part) < section)
            .flat_map(|l| &l.objects)
            .flat_map(|o| o.tree.entries())
            .map(|e| e.path.as_str())
            .collect();
        let holds = |p: &str| paths.contains(p);
        let ctx = StepContext {
            store,
            architecture: &spec.image.architecture,
            source_date_epoch: opts.source_date_epoch,
            below: &below,
            holds: &holds,
            reporter,
        };
        let Some(step_key) = step.key(&ctx) else {
            continue;
        };
        let sde = opts.source_date_epoch.to_string();
        let key = hash_parts([
            STEP_FORMAT.as_bytes(),
            step.name().as_bytes(),
            step_key.as_bytes(),
            LAYER_FORMAT.as_bytes(),
            sde.as_bytes(),
        ]);
        let index = stack.layers.len() + 1;
        let lookup = |store: &Store| -> Result<Option<StepRecord>, BuildError> {
            match store.layer_record::<StepRecord>(&key)? {
                Some(rec) if store.has_blob(&rec.digests.diff_id)? => Ok(Some(rec)),
                _ => Ok(None),
            }
        };
        let mut found = lookup(store)?.map(|r| (r, true));
        if found.is_none() {
            // Another process may be running the same step: wait for it, look again.
            let _lock = store.lock_key(&format!("step-{key}"))?;
            found = lookup(store)?.map(|r| (r, true));
            if found.is_none() {
                reporter.phase(step.phase());
                let out = step
                    .run(&ctx, &step_key)
                    .map_err(strata_source::SourceError::from)?;
                if let Some(out) = out {
                    let etc: Vec<KeptFile> = out.entries.iter().filter_map(KeptFile::of).collect();
                    let planned = PlannedLayer {
                        part: step.name(),
                        objects: vec![StoreObject {
                            id: step.name().into(),
                            tree: Tree::from_entries(out.entries),
                            references: Vec::new(),
                            cache_key: key.clone(),
                        }],
                        parents: Vec::new(),
                    };
                    let plain = BuildOptions {
                        compression: Compression::None,
                        ..opts.clone()
                    };
                    let (record, _) = build_layer(index, &planned, store, &plain, reporter)?;
                    if let Some(written) = out.written {
                        let blob = store.blob_path(&record.digests.digest)?;
                        written(&blob, &record.digests.diff_id);
                    }
                    drop(out.scratch);
                    let rec = StepRecord {
                        digests: record.digests,
                        compression: record.compression,
                        etc,
                    };
                    if out.cache {
                        store.put_layer_record(&key, &rec)?;
                    }
                    found = Some((rec, false));
                }
            }
        }
        let Some((rec, cached)) = found else {
            continue;
        };
        let digests = blob_in(store, &rec, opts)?;
        if cached {
            reporter.layer_done(index, 0, true);
        }
        stack.kept_blobs.push(rec.digests.diff_id.clone());
        stack
            .step_files
            .extend(rec.etc.iter().filter_map(KeptFile::entry));
        let report = LayerReport {
            digest: digests.digest,
            diff_id: digests.diff_id,
            size: digests.size,
            uncompressed_size: digests.uncompressed_size,
            part: step.name(),
            objects: vec![step.name().to_owned()],
            cached,
        };
        stack.layers.insert(at, (section, report));
    }
    Ok(())
}

/// The step layer's blob in the build's compression, made from its kept tar once.
fn blob_in(
    store: &Store,
    rec: &StepRecord,
    opts: &BuildOptions,
) -> Result<LayerDigests, BuildError> {
    if opts.compression == Compression::None {
        return Ok(rec.digests.clone());
    }
    let key = hash_parts([
        b"step-blob-v1".as_slice(),
        rec.digests.diff_id.as_bytes(),
        opts.compression.as_str().as_bytes(),
    ]);
    let lookup = |store: &Store| -> Result<Option<LayerRecord>, BuildError> {
        match store.layer_record::<LayerRecord>(&key)? {
            Some(r) if store.has_blob(&r.digests.digest)? => Ok(Some(r)),
            _ => Ok(None),
        }
    };
    if let Some(r) = lookup(store)? {
        return Ok(r.digests);
    }
    let _lock = store.lock_key(&key)?;
    if let Some(r) = lookup(store)? {
        return Ok(r.digests);
    }
    let path = store.blob_path(&rec.digests.diff_id)?;
    let tar = std::fs::File::open(&path).map_err(|source| {
        BuildError::Store(strata_store::StoreError::Io {
            action: "open",
            path: path.clone(),
            source,
        })
    })?;
    let temp = store.temp_file()?;
    let digests = {
        let out = BufWriter::with_capacity(1 << 20, temp.as_file());
        let lopts = LayerOptions {
            compression: opts.compression,
            threads: opts.threads.max(1),
            source_date_epoch: opts.source_date_epoch,
        };
        compress_tar(std::io::BufReader::new(tar), &lopts, out).map_err(|source| {
            BuildError::Layer {
                index: 0,
                objects: format!("the kept layer {}", rec.digests.diff_id),
                source,
            }
        })?
    };
    store.commit_blob(temp, &digests.digest)?;
    store.put_layer_record(
        &key,
        &LayerRecord {
            digests: digests.clone(),
            compression: opts.compression.as_str().to_owned(),
        },
    )?;
    Ok(digests)
}
