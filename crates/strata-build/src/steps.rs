//! Stage 4: the sources' post-layer steps, each over the layers below its place, each adding
//! one layer cached in the store by the step's key (see [`strata_source::PostLayerStep`]).
//!
//! Places stack in this order: the base half's layers, the steps placed after the base, the
//! user half's layers, the steps placed after the user half, the customisation layer, the
//! steps placed on top.

use std::collections::HashSet;

use strata_fstree::Tree;
use strata_source::{LayerBelow, StepContext, StepPlace, StoreObject, hash_parts};
use strata_spec::Spec;
use strata_store::Store;

use crate::layers::{build_layer, report};
use crate::plan::{Plan, PlannedLayer};
use crate::{BuildError, BuildOptions, LAYER_FORMAT, LayerRecord, LayerReport, Reporter};

/// Version of how step layers are keyed and recorded.
const STEP_FORMAT: &str = "step-v1";

/// Where a layer stands in the image, lowest first.
fn section_of_part(part: &str) -> u8 {
    match part {
        "base" => 0,
        "user" => 2,
        _ => 4,
    }
}

fn section_of_place(place: StepPlace) -> u8 {
    match place {
        StepPlace::Base => 1,
        StepPlace::User => 3,
        StepPlace::Top => 5,
    }
}

/// Runs the plan's steps over the written layers (`written`, in plan order) and returns the
/// image's layers with the steps' layers in their places.
pub(crate) fn run(
    spec: &Spec,
    plan: &Plan,
    written: Vec<LayerReport>,
    store: &Store,
    opts: &BuildOptions,
    reporter: &dyn Reporter,
) -> Result<Vec<LayerReport>, BuildError> {
    let mut layers: Vec<(u8, LayerReport)> = written
        .into_iter()
        .map(|l| (section_of_part(l.part), l))
        .collect();
    for step in &plan.steps {
        let section = section_of_place(step.place());
        let at = layers.iter().take_while(|(s, _)| *s <= section).count();
        let below: Vec<LayerBelow> = layers[..at]
            .iter()
            .map(|(_, l)| {
                Ok(LayerBelow {
                    diff_id: l.diff_id.clone(),
                    blob: store.blob_path(&l.digest)?,
                    compression: opts.compression,
                    uncompressed_size: l.uncompressed_size,
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
            opts.compression.as_str().as_bytes(),
            sde.as_bytes(),
        ]);
        let index = layers.len() + 1;
        let lookup = |store: &Store| -> Result<Option<LayerRecord>, BuildError> {
            match store.layer_record::<LayerRecord>(&key)? {
                Some(rec) if store.has_blob(&rec.digests.digest)? => Ok(Some(rec)),
                _ => Ok(None),
            }
        };
        let layer = PlannedLayer {
            part: step.name(),
            objects: Vec::new(),
            parents: Vec::new(),
        };
        let found = match lookup(store)? {
            Some(rec) => Some((rec, true)),
            None => {
                // Another process may be running the same step: wait for it, look again.
                let _lock = store.lock_key(&format!("step-{key}"))?;
                match lookup(store)? {
                    Some(rec) => Some((rec, true)),
                    None => {
                        reporter.phase(step.phase());
                        match step
                            .run(&ctx, &step_key)
                            .map_err(strata_source::SourceError::from)?
                        {
                            None => None,
                            Some(out) => {
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
                                let (record, _) =
                                    build_layer(index, &planned, store, opts, reporter)?;
                                drop(out.scratch);
                                store.put_layer_record(&key, &record)?;
                                Some((record, false))
                            }
                        }
                    }
                }
            }
        };
        let Some((record, cached)) = found else {
            continue;
        };
        if cached {
            reporter.layer_done(index, 0, true);
        }
        let mut rep = report(&layer, &record, cached);
        rep.objects = vec![step.name().to_owned()];
        layers.insert(at, (section, rep));
    }
    Ok(layers.into_iter().map(|(_, l)| l).collect())
}
